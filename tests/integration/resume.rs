//! A run killed with SIGKILL at any moment resumes: the second `etl run`
//! skips the chunks the ledger says are committed, finishes the rest, and
//! the target equals the source exactly, with no duplicates.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{assert_copied, psql, repo, spawn_etl, wait_for_line, TestDb};

/// The shipped copy pipeline with small batches, so a chunk has many.
fn pipeline(db: &TestDb) -> String {
    let text = std::fs::read_to_string(repo().join("pipelines/ships-copy.toml"))
        .unwrap()
        .replace(
            "table = \"tenant.tbl_data_timeseries\"\n\n[chunks]",
            "table = \"tenant.tbl_data_timeseries\"\nbatch_rows = 1000\n\n[chunks]",
        );
    assert!(text.contains("batch_rows = 1000"));
    db.pipeline("resume.toml", &text)
        .to_str()
        .unwrap()
        .to_string()
}

/// Starts `etl run` with `ETL_TEST_PAUSE_AT=pause`, waits until it parks
/// there, and kills it with SIGKILL.
fn run_and_kill_at(db: &TestDb, p: &str, pause: &str) {
    let (mut child, lines) = spawn_etl(
        db,
        &["run", "--workers", "1", p],
        &[("ETL_TEST_PAUSE_AT", pause)],
    );
    wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    child.kill().expect("SIGKILL etl");
    child.wait().unwrap();
}

fn resume_after_kill_at(name: &str, pause: &str, committed_before: u64) {
    // Given 2 ships x 3 days (6 chunks of 28,800 rows, about 2 MiB each,
    // so a chunk reaches the server in more than one send)
    let db = TestDb::new(name);
    db.load_timeseries(2, 20, 3 * 1440);
    let p = pipeline(&db);

    // When a run is killed at the given moment
    run_and_kill_at(&db, &p, pause);

    // Then exactly the committed chunks are in the target, nothing half-done
    // (the ledger is created before the first chunk starts)
    let ledger: u64 = psql(
        &db.dst,
        "SELECT count(*) FROM etl.chunk_ledger WHERE status = 'done'",
    )
    .parse()
    .unwrap();
    assert_eq!(ledger, committed_before);
    let rows = psql(&db.dst, "SELECT count(*) FROM tenant.tbl_data_timeseries");
    assert_eq!(rows, (committed_before * 28_800).to_string());

    // When run again
    let out = db.etl(&["run", &p]);

    // Then it skips what was committed, finishes the rest, and the target equals the source
    assert_eq!(out.code, 0, "{out:?}");
    let remaining = 6 - committed_before;
    assert!(
        out.stdout
            .contains(&format!("{remaining} done, 0 failed, of {remaining}")),
        "{out:?}"
    );
    if committed_before > 0 {
        assert!(
            out.stdout.contains(&format!(
                "skipped      {committed_before} chunks done by an earlier run"
            )),
            "{out:?}"
        );
    }
    assert_copied(&db);
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM etl.chunk_ledger WHERE status = 'done'"
        ),
        "6"
    );
}

#[test]
fn killed_before_the_first_commit() {
    resume_after_kill_at("resume_before_first", "write:1", 0);
}

#[test]
fn killed_mid_chunk() {
    resume_after_kill_at("resume_mid_chunk", "write:3", 2);
}

#[test]
fn killed_between_chunks() {
    resume_after_kill_at("resume_between", "commit:4", 4);
}

#[test]
fn restart_redoes_every_chunk_without_duplicates() {
    // Given a completed run
    let db = TestDb::new("resume_restart");
    db.load_timeseries(2, 5, 2 * 1440);
    let p = pipeline(&db);
    assert_eq!(db.etl(&["run", &p]).code, 0);

    // When run again, plainly and with --restart
    let again = db.etl(&["run", &p]);
    let restart = db.etl(&["run", "--restart", &p]);

    // Then the plain run does nothing, the restart redoes all four, and nothing is doubled
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("0 done, 0 failed, of 0"), "{again:?}");
    assert!(again.stdout.contains("skipped      4 chunks"), "{again:?}");
    assert_eq!(restart.code, 0, "{restart:?}");
    assert!(
        restart.stdout.contains("4 done, 0 failed, of 4"),
        "{restart:?}"
    );
    assert_copied(&db);
}

#[test]
fn two_processes_share_one_plan_and_run_every_chunk_once() {
    // Given 2 ships x 4 days (8 chunks)
    let db = TestDb::new("resume_two_processes");
    db.load_timeseries(2, 20, 4 * 1440);
    let p = pipeline(&db);

    // When two etl processes run the same pipeline at the same time
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_etl"))
            .current_dir(db.dir.path())
            .args(["run", "--workers", "1", &p])
            .env("ETL_SRC_URL", &db.src)
            .env("ETL_DST_URL", &db.dst)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());

    // Then both succeed, together they did all 8 chunks, each exactly once
    let done = |out: &std::process::Output| -> usize {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with("chunks"))
            .unwrap()
            .to_string();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(done(&a) + done(&b), 8);
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM etl.chunk_ledger WHERE status = 'done' AND attempts = 1"
        ),
        "8"
    );
    assert_copied(&db);
}

#[test]
fn status_shows_running_then_pending_after_a_kill() {
    // Given a run parked mid-COPY in its third chunk (two committed)
    let db = TestDb::new("resume_status");
    db.load_timeseries(2, 20, 3 * 1440);
    let p = pipeline(&db);
    let (mut child, lines) = spawn_etl(
        &db,
        &["run", "--workers", "1", &p],
        &[("ETL_TEST_PAUSE_AT", "write:3")],
    );
    wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");

    // When status is asked while it runs, and after it is killed
    let running = db.etl(&["status", &p]);
    let json = db.etl(&["status", "--json", &p]);
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the server notices the closed session
    let after = db.etl(&["status", &p]);

    // Then the live claim shows as running, and a dead claim as pending
    assert_eq!(running.code, 0, "{running:?}");
    // (chunks run in time order: ship 1 day 1, ship 2 day 1, ship 1 day 2, ...)
    assert!(
        running
            .stdout
            .contains("IMO9900001        1        0        1        1          28,800"),
        "{running:?}"
    );
    assert!(
        running
            .stdout
            .contains("IMO9900002        1        0        2        0          28,800"),
        "{running:?}"
    );
    assert!(
        after
            .stdout
            .contains("IMO9900001        1        0        2        0          28,800"),
        "{after:?}"
    );
    let value: serde_json::Value =
        serde_json::from_str(&json.stdout).expect("status --json is JSON");
    assert_eq!(value["pipeline"], "ships-copy");
    assert_eq!(value["sinks"][0]["chunks"].as_array().unwrap().len(), 6);
    assert_eq!(value["sinks"][0]["keys"][0]["running"], 1);
}

#[test]
fn ctrl_c_finishes_the_chunk_in_flight_and_the_run_resumes() {
    stops_after_the_chunk_in_flight_and_resumes("INT", "resume_ctrl_c");
}

/// A service manager (systemd's `KillSignal`, `kill`) stops etl with
/// SIGTERM: the same as Ctrl-C.
#[test]
fn sigterm_finishes_the_chunk_in_flight_and_the_run_resumes() {
    stops_after_the_chunk_in_flight_and_resumes("TERM", "resume_sigterm");
}

fn stops_after_the_chunk_in_flight_and_resumes(signal: &str, name: &str) {
    // Given a run parked right after its first commit
    let db = TestDb::new(name);
    db.load_timeseries(2, 20, 3 * 1440);
    let p = pipeline(&db);
    let go = db.dir.path().join("go");
    let (child, lines) = spawn_etl(
        &db,
        &["run", "--workers", "1", &p],
        &[
            ("ETL_TEST_PAUSE_AT", "commit:1"),
            ("ETL_TEST_RESUME_FILE", go.to_str().unwrap()),
        ],
    );
    wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");

    // When the signal arrives, then the worker may go on
    Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    wait_for_line(&lines, "etl: stopping after the chunks in flight");
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);

    // Then it stops after that chunk with exit code 130 and says how to resume
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("1 done, 0 failed, of 6"), "{stdout}");
    assert!(
        stdout.contains(
            "Stopped (Ctrl-C or SIGTERM): 5 chunks not started; run the same command to resume."
        ),
        "{stdout}"
    );

    // And the same command finishes the rest exactly
    let again = db.etl(&["run", &p]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("5 done, 0 failed, of 5"), "{again:?}");
    assert_copied(&db);
}
