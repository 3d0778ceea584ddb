//! Follow mode: after the backfill it keeps loading new rows, re-reads the
//! lag window so late rows land, moves the persisted cutoff, shares the
//! work with a concurrent backfill without writing any row twice, and stops
//! cleanly on Ctrl-C with exit code 0.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::support::{assert_copied, psql, repo, spawn_etl, TestDb};

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

/// Waits until `check` holds, or panics after a minute.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
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
    eventually("the backfill", || {
        psql(
            &db.dst,
            "SELECT to_regclass('tenant.tbl_data_timeseries') IS NOT NULL",
        ) == "t"
            && count(&db.dst) == "8640"
    });

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
        stdout.contains("Follow stopped by Ctrl-C; cutoff "),
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
