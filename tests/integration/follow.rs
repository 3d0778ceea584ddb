//! Follow mode: after the backfill it keeps loading new rows, re-reads the
//! lag window so late rows land, moves the persisted cutoff, shares the
//! work with a concurrent backfill without writing any row twice, and stops
//! cleanly on Ctrl-C with exit code 0.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::support::{
    assert_copied, eventually, psql, repo, spawn_etl, stop, wait_for_line, TestDb,
};

fn spawn_follow(db: &TestDb, p: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
    spawn_etl(
        db,
        &[
            "run",
            "--follow",
            "--interval-secs",
            "1",
            "--lag-secs",
            "3600",
            p,
        ],
        &[],
    )
}

/// Waits until the target table exists and holds `rows` rows.
fn backfilled(db: &TestDb, rows: &str) {
    eventually("the backfill", || {
        psql(
            &db.dst,
            "SELECT to_regclass('tenant.tbl_data_timeseries') IS NOT NULL",
        ) == "t"
            && count(&db.dst) == rows
    });
}

fn count(url: &str) -> String {
    psql(url, "SELECT count(*) FROM tenant.tbl_data_timeseries")
}

#[test]
fn follow_loads_new_and_late_rows_and_stops_cleanly() {
    // Given historic rows, and a follow run that has finished its backfill
    let db = TestDb::new("follow_rows");
    db.load_timeseries(2, 3, 1440);
    let p = repo().join("pipelines/ships-copy.toml");
    let p = p.to_str().unwrap();
    let (mut child, _log) = spawn_follow(&db, p);
    backfilled(&db, "8640");

    // When new rows arrive, and then a late row for a minute already loaded
    psql(
        &db.src,
        "INSERT INTO tenant.tbl_data_timeseries VALUES \
         ('IMO9900001', 'ch_new', now() - interval '1 minute', 'Decimal', NULL, NULL, NULL, 1.5), \
         ('IMO9900003', 'ch_new', now() - interval '1 minute', 'String', NULL, 'fresh', NULL, NULL)",
    );
    eventually("the new rows", || count(&db.dst) == "8642");
    psql(
        &db.src,
        "INSERT INTO tenant.tbl_data_timeseries VALUES ('IMO9900001', 'ch_late', now() - interval '10 minutes', 'Integer', NULL, NULL, 7, NULL)",
    );
    eventually("the late row", || count(&db.dst) == "8643");

    // And Ctrl-C is pressed
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();

    // Then it stops with exit code 0, the target equals the source, and the cutoff is recent
    assert_eq!(status.code(), Some(0), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        stdout.contains("Follow stopped (Ctrl-C or SIGTERM); cutoff "),
        "{stdout}"
    );
    assert_copied(&db);
    assert_eq!(
        psql(
            &db.dst,
            "SELECT now() - cutoff < interval '1 minute' FROM etl.cutoff"
        ),
        "t"
    );
    let status = db.etl(&["status", p]);
    assert!(status.stdout.contains("cutoff 20"), "{status:?}");
}

#[test]
fn a_backfill_beside_follow_writes_no_row_twice() {
    // Given a follow run that is loading every second
    let db = TestDb::new("follow_beside");
    db.load_timeseries(2, 3, 1440);
    psql(
        &db.src,
        "INSERT INTO tenant.tbl_data_timeseries SELECT 'IMO9900001', 'ch_' || i, now() - i * interval '1 second', 'Decimal', NULL, NULL, NULL, i FROM generate_series(1, 500) i",
    );
    let p = repo().join("pipelines/ships-copy.toml");
    let p = p.to_str().unwrap();
    let (mut child, _log) = spawn_follow(&db, p);
    eventually("the first load", || {
        psql(
            &db.dst,
            "SELECT to_regclass('etl.chunk_ledger') IS NOT NULL",
        ) == "t"
            && psql(
                &db.dst,
                "SELECT count(*) FROM etl.chunk_ledger WHERE status = 'done'",
            ) != "0"
    });

    // When a backfill of the same pipeline runs at the same time, redoing everything
    for _ in 0..2 {
        let out = db.etl(&["run", "--restart", p]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    std::thread::sleep(Duration::from_secs(2));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // Then every row is there exactly once
    assert_copied(&db);
}

#[test]
fn a_cutoff_set_by_hand_splits_backfill_and_follow() {
    // Given a day of rows for two ships and no cutoff yet
    let db = TestDb::new("follow_cutoff");
    db.load_timeseries(2, 3, 1440);
    let p = repo().join("pipelines/ships-copy.toml");
    let p = p.to_str().unwrap();
    let show = db.etl(&["cutoff", "show", p]);
    assert_eq!(show.code, 0, "{show:?}");
    assert!(show.stdout.contains("has no cutoff"), "{show:?}");

    // When a cutoff in the future or before the data is asked for
    let future = db.etl(&["cutoff", "set", p, "2999-01-01 00:00:00"]);
    let before = db.etl(&["cutoff", "set", p, "2025-05-01 00:00:00"]);

    // Then each is refused with its reason, and nothing is set
    assert_eq!(future.code, 2, "{future:?}");
    assert!(future.stderr.contains("is in the future"), "{future:?}");
    assert_eq!(before.code, 2, "{before:?}");
    assert!(
        before
            .stderr
            .contains("is before the source's data (its first window starts 2025-06-01"),
        "{before:?}"
    );
    assert!(db
        .etl(&["cutoff", "show", p])
        .stdout
        .contains("has no cutoff"));

    // When the cutoff is set by hand at noon of that day, and a plain run follows
    let set = db.etl(&["cutoff", "set", p, "2025-06-01 12:00:00"]);
    assert_eq!(set.code, 0, "{set:?}");
    assert!(
        set.stdout
            .contains("set to 2025-06-01 12:00:00 UTC (was none)"),
        "{set:?}"
    );
    let show = db.etl(&["cutoff", "show", p]);
    assert!(show.stdout.contains("2025-06-01 12:00:00 UTC"), "{show:?}");
    let run = db.etl(&["run", p]);
    assert_eq!(run.code, 0, "{run:?}");

    // Then the backfill loaded only the rows below it
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*), max(created_time) < '2025-06-01 12:00+00' FROM tenant.tbl_data_timeseries"
        ),
        "4320|t"
    );

    // When run --follow starts from that cutoff (no lag)
    let (mut child, _log) = spawn_etl(
        &db,
        &[
            "run",
            "--follow",
            "--interval-secs",
            "1",
            "--lag-secs",
            "0",
            p,
        ],
        &[],
    );
    eventually("the follow load", || count(&db.dst) == "8640");
    let (code, stdout) = stop(&mut child);

    // Then follow loaded exactly the later rows, in windows from the cutoff on
    assert_eq!(code, Some(0), "{stdout}");
    assert_copied(&db);
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*), sum(rows), bool_and(start_at = '2025-06-01 12:00+00') FROM etl.chunk_ledger \
             WHERE status = 'done' AND end_at > '2025-06-01 12:00+00' AND rows > 0"
        ),
        "2|4320|t",
        "one follow window per ship, starting at the cutoff"
    );

    // And clear removes it
    let clear = db.etl(&["cutoff", "clear", p]);
    assert_eq!(clear.code, 0, "{clear:?}");
    assert!(clear.stdout.contains("cleared (was 20"), "{clear:?}");
    assert!(db
        .etl(&["cutoff", "show", p])
        .stdout
        .contains("has no cutoff"));
}

#[test]
fn follow_loads_new_rows_while_the_backfill_is_still_running() {
    // Given a day of history for two ships and fresh rows of a third
    let db = TestDb::new("follow_during");
    db.load_timeseries(2, 3, 1440);
    psql(
        &db.src,
        "INSERT INTO tenant.tbl_data_timeseries SELECT 'IMO9900009', 'ch_' || i, now() - i * interval '1 second', 'Decimal', NULL, NULL, NULL, i FROM generate_series(1, 50) i",
    );
    let p = repo().join("pipelines/ships-copy.toml");
    let p = p.to_str().unwrap();
    let resume = db.dir.path().join("resume");

    // When run --follow starts with one worker whose backfill parks after
    // its first chunk of the first ship
    let (mut child, log) = spawn_etl(
        &db,
        &[
            "run",
            "--follow",
            "--workers",
            "1",
            "--interval-secs",
            "1",
            "--lag-secs",
            "3600",
            p,
        ],
        &[
            ("ETL_TEST_PAUSE_AT", "commit:1:IMO9900001"),
            ("ETL_TEST_RESUME_FILE", resume.to_str().unwrap()),
        ],
    );
    wait_for_line(&log, "ETL_TEST_PAUSE_AT: paused");

    // Then the fresh rows land while the backfill is still parked
    let fresh = || {
        psql(
            &db.dst,
            "SELECT count(*) FROM tenant.tbl_data_timeseries WHERE ship_id = 'IMO9900009'",
        )
    };
    eventually("the fresh rows", || fresh() == "50");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM tenant.tbl_data_timeseries WHERE ship_id = 'IMO9900002'"
        ),
        "0",
        "the backfill is parked before the second ship"
    );

    // When the backfill goes on and the run is stopped
    std::fs::write(&resume, "").unwrap();
    eventually("the backfill", || count(&db.dst) == "8690");
    let (code, stdout) = stop(&mut child);

    // Then every row is there exactly once
    assert_eq!(code, Some(0), "{stdout}");
    assert_copied(&db);
}

/// The shipped systemd unit's command line follows, and its stop signal
/// ends the run cleanly with an exit status systemd counts as success.
#[test]
fn the_shipped_systemd_unit_follows_and_stops_on_its_kill_signal() {
    // Given the unit's ExecStart with the instance's pipeline, running
    let unit = std::fs::read_to_string(repo().join("docs/systemd/etl-follow@.service")).unwrap();
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("the unit has no {key}="))
            .to_string()
    };
    let exec = setting("ExecStart");
    let pipeline = repo().join("pipelines/ships-copy.toml");
    let args: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .map(|a| match a {
            "/etc/etl/%i.toml" => pipeline.to_str().unwrap().to_string(),
            _ => a.to_string(),
        })
        .collect();
    assert!(
        args.iter().any(|a| a.ends_with("ships-copy.toml")),
        "ExecStart names /etc/etl/%i.toml: {exec}"
    );
    let db = TestDb::new("follow_systemd");
    db.load_timeseries(2, 3, 1440);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut child, _log) = spawn_etl(&db, &args, &[]);
    backfilled(&db, "8640");

    // When systemctl stop sends the unit's KillSignal
    let signal = setting("KillSignal");
    let (code, stdout) = crate::support::stop_with(&mut child, signal.trim_start_matches("SIG"));

    // Then etl exits 0 with its summary, the rows all there
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("Follow stopped (Ctrl-C or SIGTERM); cutoff "),
        "{stdout}"
    );
    assert_copied(&db);
}
