//! Faults in every phase (issue 30). etl is parked as a phase takes a
//! session from its pool (`ETL_TEST_PAUSE_AT=session:1:PHASE`, a test
//! hook), the server ends every session etl has on both databases, and
//! etl goes on: the step that held the session is tried again on a new
//! one. Each run ends 0 and the target then equals the source by
//! checksums; a whole database also through a crash and restart of its
//! server in the data phase.

use crate::pg_database::{assert_equal, load, pipeline as database_pipeline};
use crate::support::{assert_copied, psql, repo, spawn_etl, wait_for_line, OwnServer, TestDb};

/// What a faulted run did: its exit code, stdout and stderr.
struct Faulted {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Faulted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs etl with `args`, parked at its first session of `phase`; while
/// parked, `fault` (which ends etl's sessions, or restarts the server)
/// runs; then etl goes on to its end.
fn faulted_in(db: &TestDb, args: &[&str], phase: &str, fault: impl FnOnce()) -> Faulted {
    let go = db.dir.path().join(format!("go-{phase}"));
    let pause = format!("session:1:{phase}");
    let (child, lines) = spawn_etl(
        db,
        args,
        &[
            ("ETL_TEST_PAUSE_AT", &pause),
            ("ETL_TEST_RESUME_FILE", go.to_str().unwrap()),
        ],
    );
    let mut seen = wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    assert!(
        seen.last()
            .unwrap()
            .ends_with(&format!("session in {phase}")),
        "{seen:?}"
    );
    fault();
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    seen.extend(lines.iter());
    Faulted {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: seen.join("\n"),
    }
}

/// Ends every session etl has on the test's two databases; how many.
fn end_etl_sessions(db: &TestDb) -> usize {
    let name = |url: &str| url.rsplit('/').next().unwrap().to_string();
    psql(
        &db.dst,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname IN ('{}', '{}') AND application_name LIKE 'etl %' AND pid <> pg_backend_pid()",
            name(&db.src),
            name(&db.dst)
        ),
    )
    .parse()
    .unwrap()
}

/// The run ended 0 after trying the faulted step again.
fn assert_retried_through(out: &Faulted, phase: &str) {
    assert_eq!(out.code, Some(0), "{phase}: {out:?}");
    assert!(
        out.stderr.contains("Transient failure;"),
        "{phase}: no step was tried again: {out:?}"
    );
}

/// The fleet pipeline, one worker, ANALYZE after the load, short waits
/// between tries.
fn fleet_pipeline(db: &TestDb) -> String {
    let text = std::fs::read_to_string(repo().join("pipelines/ships-copy.toml"))
        .unwrap()
        .replace("workers = 2\n", "workers = 2\nretry_backoff_secs = 0.2\n")
        .replace(
            "create_table = true\n",
            "create_table = true\nanalyze_after = true\n",
        );
    db.pipeline("fleet.toml", &text)
        .to_str()
        .unwrap()
        .to_string()
}

fn pipeline_run_survives_sessions_ended_in(phase: &str) {
    // Given the fleet's time series
    let db = TestDb::new(&format!("phase_run_{phase}"));
    db.load_timeseries(2, 10, 3 * 1440);
    let p = fleet_pipeline(&db);

    // When etl's sessions are ended as the run's phase takes one
    let out = faulted_in(&db, &["run", &p], phase, || {
        assert_ne!(end_etl_sessions(&db), 0, "{phase}: etl held no session");
    });

    // Then the step is tried again, the run ends 0, the target is exact
    assert_retried_through(&out, phase);
    assert_copied(&db);
}

#[test]
fn a_pipeline_run_survives_its_sessions_ended_while_planning() {
    pipeline_run_survives_sessions_ended_in("plan");
}

#[test]
fn a_pipeline_run_survives_its_sessions_ended_while_creating() {
    pipeline_run_survives_sessions_ended_in("create");
}

#[test]
fn a_pipeline_run_survives_its_sessions_ended_while_loading() {
    pipeline_run_survives_sessions_ended_in("data");
}

#[test]
fn a_pipeline_run_survives_its_sessions_ended_while_analyzing() {
    pipeline_run_survives_sessions_ended_in("analyze");
}

#[test]
fn a_pipeline_verify_survives_its_sessions_ended() {
    // Given the fleet loaded
    let db = TestDb::new("phase_run_verify");
    db.load_timeseries(2, 10, 3 * 1440);
    let p = fleet_pipeline(&db);
    assert_eq!(db.etl(&["run", &p]).code, 0);

    // When etl verify's sessions are ended as it compares
    let out = faulted_in(&db, &["verify", &p], "verify", || {
        assert_ne!(end_etl_sessions(&db), 0, "verify: etl held no session");
    });

    // Then the comparison is made again and every chunk is equal
    assert_retried_through(&out, "verify");
    assert!(out.stdout.contains(": 6 equal, 0 differ"), "{out:?}");
    assert_copied(&db);
}

fn database_move_survives_sessions_ended_in(phase: &str) {
    // Given a source with every object kind
    let db = TestDb::new(&format!("phase_db_{}", phase.replace('-', "_")));
    load(&db, 3_000);

    // When etl's sessions on both servers are ended as the phase takes one
    let out = faulted_in(&db, &["run", &database_pipeline()], phase, || {
        assert_ne!(end_etl_sessions(&db), 0, "{phase}: etl held no session");
    });

    // Then the phase's step is tried again, the run ends 0, and every
    // table, the schema, the sequences and large objects equal the source's
    assert_retried_through(&out, phase);
    eprintln!("{out:?}");
    assert_equal(&db);
}

#[test]
fn a_database_move_survives_its_sessions_ended_in_pre_data() {
    database_move_survives_sessions_ended_in("pre-data");
}

#[test]
fn a_database_move_survives_its_sessions_ended_in_the_data() {
    database_move_survives_sessions_ended_in("data");
}

#[test]
fn a_database_move_survives_its_sessions_ended_in_post_data() {
    database_move_survives_sessions_ended_in("post-data");
}

#[test]
fn a_database_move_survives_its_sessions_ended_in_sequences() {
    database_move_survives_sessions_ended_in("sequences");
}

#[test]
fn a_database_move_survives_its_sessions_ended_in_verify() {
    database_move_survives_sessions_ended_in("verify");
}

#[test]
fn a_database_move_survives_a_server_crash_and_restart_in_the_data() {
    // Given a whole database on a server of the test's own
    // (committing as production servers do: a crash loses no commit)
    let server = OwnServer::start(&["synchronous_commit=on"]);
    let db = server.test_db("phase_restart");
    load(&db, 3_000);

    // When the server crashes and starts again as the data phase takes a
    // session
    let out = faulted_in(&db, &["run", &database_pipeline()], "data", || {
        server.restart()
    });

    // Then the chunks are tried again once it is back, and the target
    // equals the source
    assert_retried_through(&out, "data (restart)");
    eprintln!("{out:?}");
    assert_equal(&db);
}

#[test]
fn chunks_lost_from_the_ledger_are_loaded_not_skipped() {
    // Given a run whose chunks were registered in the ledger
    let db = TestDb::new("phase_lost_ledger");
    db.load_timeseries(2, 10, 3 * 1440);
    let p = fleet_pipeline(&db);

    // When their rows vanish before they are claimed (what a crash of a
    // target that commits asynchronously does)
    let out = faulted_in(&db, &["run", &p], "data", || {
        psql(&db.dst, "DELETE FROM etl.chunk_ledger");
    });

    // Then each is registered again and loaded: none is taken for another
    // process's
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("6 done, 0 failed, of 6"), "{out:?}");
    assert!(out.stderr.contains("registered again"), "{out:?}");
    assert_copied(&db);
}

#[test]
fn a_schema_apply_whose_session_is_lost_mid_statement_runs_it_once() {
    // Given two databases whose schemas differ
    let db = TestDb::new("phase_schema_apply");
    crate::schema::build(&db, 2_000);
    psql(&db.dst, "UPDATE big SET note = '' WHERE note IS NULL");
    let planned = crate::schema::statements(
        &db.etl(&["schema", "plan", &db.src, &db.dst, "--grants", "--policies"])
            .stdout,
    );
    assert!(planned.len() > 3, "{planned:?}");

    // When the session of the first transactional statement is ended
    // after the statement ran, before its COMMIT
    let apply = [
        "schema",
        "apply",
        &db.src,
        &db.dst,
        "--grants",
        "--policies",
        "--max-risk",
        "very-high",
        "--yes",
    ];
    let go = db.dir.path().join("go-schema");
    let (child, lines) = spawn_etl(
        &db,
        &apply,
        &[
            ("ETL_TEST_PAUSE_AT", "schema-commit:1"),
            ("ETL_TEST_RESUME_FILE", go.to_str().unwrap()),
        ],
    );
    let mut seen = wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    assert_ne!(end_etl_sessions(&db), 0, "etl held no session");
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    seen.extend(lines.iter());
    let stderr = seen.join("\n");

    // Then the statement is found not committed and run again on a new
    // session, the apply ends 0 with the target matching, and the history
    // holds each planned statement once
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("Transient failure; statement [") && stderr.contains("will be tried again"),
        "{stderr}"
    );
    assert_eq!(
        db.etl(&["schema", "diff", &db.src, &db.dst, "--grants", "--policies"])
            .code,
        0
    );
    let ran = crate::schema::statements(
        &std::fs::read_to_string(&crate::schema::history(&db, "migrate")[0]).unwrap(),
    );
    assert_eq!(ran, planned);
}
