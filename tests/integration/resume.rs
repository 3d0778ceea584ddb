//! A run killed with SIGKILL at any moment resumes: the second `etl run`
//! skips the chunks the ledger says are committed, finishes the rest, and
//! the target equals the source exactly, with no duplicates.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{fingerprint, psql, repo, TestDb};

const ORDER: &str = "ship_id, created_time, data_channel_id";

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
    let mut child = Command::new(env!("CARGO_BIN_EXE_etl"))
        .current_dir(db.dir.path())
        .args(["run", "--workers", "1", p])
        .env("ETL_SRC_URL", &db.src)
        .env("ETL_DST_URL", &db.dst)
        .env("ETL_TEST_PAUSE_AT", pause)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start etl");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("ETL_TEST_PAUSE_AT: paused") {
                let _ = tx.send(());
            }
        }
    });
    let paused = rx.recv_timeout(Duration::from_secs(120));
    child.kill().expect("SIGKILL etl");
    child.wait().unwrap();
    assert!(paused.is_ok(), "etl never reached {pause}");
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
    let ledger: u64 = psql(&db.dst, "SELECT count(*) FROM etl.chunk_ledger WHERE status = 'done'")
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
    assert_eq!(
        fingerprint(&db.dst, "tenant.tbl_data_timeseries", ORDER),
        fingerprint(&db.src, "tenant.tbl_data_timeseries", ORDER)
    );
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM etl.chunk_ledger WHERE status = 'done'"), "6");
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
    assert_eq!(
        fingerprint(&db.dst, "tenant.tbl_data_timeseries", ORDER),
        fingerprint(&db.src, "tenant.tbl_data_timeseries", ORDER)
    );
}
