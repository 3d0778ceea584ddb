//! Busy and failing targets: a lock held by another session times out,
//! is retried, then fails only its chunks, naming the table and who holds
//! it; a connection killed mid-chunk is retried and the run completes.

use crate::support::{assert_copied, hold_lock, psql, repo, spawn_etl, wait_for_line, TestDb};

fn pipeline(db: &TestDb, extra_chunks: &str, extra_sink: &str) -> String {
    let text = std::fs::read_to_string(repo().join("pipelines/ships-copy.toml"))
        .unwrap()
        .replace(
            "workers = 2\n",
            &format!("workers = 1\nretry_backoff_secs = 0.1\n{extra_chunks}"),
        )
        .replace(
            "create_table = true\n",
            &format!("create_table = true\n{extra_sink}"),
        );
    db.pipeline("faults.toml", &text)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_locked_target_fails_its_chunks_naming_the_lock_holder() {
    // Given a target table that another session holds an exclusive lock on
    let db = TestDb::new("faults_locked");
    db.load_timeseries(1, 2, 1440);
    let p = pipeline(
        &db,
        "retries = 1\n",
        "[sinks.timeouts]\nlock_timeout_secs = 0.3\n",
    );
    // (create the table first, with a run that has nothing locked)
    assert_eq!(db.etl(&["run", &p]).code, 0);
    let mut holder = hold_lock(
        &db.dst,
        "lock-holder",
        "tenant.tbl_data_timeseries",
        "ACCESS EXCLUSIVE",
    );

    // When etl runs again, with --restart so the chunk has to write
    let out = db.etl(&["run", "--restart", &p]);
    holder.kill().unwrap();
    holder.wait().unwrap();

    // Then the chunk fails after its retry, naming the table, the holder, and the setting
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("failed after 2 attempts"), "{out:?}");
    assert!(
        out.stdout
            .contains("target table \"tenant\".\"tbl_data_timeseries\" is locked by pid "),
        "{out:?}"
    );
    assert!(out.stdout.contains("(lock-holder)"), "{out:?}");
    assert!(
        out.stdout
            .contains("gave up after lock_timeout_secs = 0.3 ([sinks.timeouts])"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("Transient failure; the chunk was rolled back and will be tried again."),
        "{out:?}"
    );
}

#[test]
fn a_connection_killed_mid_chunk_is_retried_and_the_run_completes() {
    // Given a run parked mid-COPY in its second chunk
    let db = TestDb::new("faults_terminated");
    db.load_timeseries(2, 20, 2 * 1440);
    let p = pipeline(&db, "", "");
    let go = db.dir.path().join("go");
    let (child, lines) = spawn_etl(
        &db,
        &["run", &p],
        &[
            ("ETL_TEST_PAUSE_AT", "write:2"),
            ("ETL_TEST_RESUME_FILE", go.to_str().unwrap()),
        ],
    );
    wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");

    // When the target's server terminates etl's sessions, and etl goes on
    let dbname = db.dst.rsplit('/').next().unwrap().to_string();
    let killed = psql(
        &db.dst,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = '{dbname}' AND application_name LIKE 'etl %' AND pid <> pg_backend_pid()"
        ),
    );
    assert_ne!(killed, "0", "etl's sink sessions were found");
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = lines.iter().collect::<Vec<_>>().join("\n");

    // Then the chunk is retried and the target equals the source
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("Transient failure; the chunk was rolled back and will be tried again."),
        "{stderr}"
    );
    assert_copied(&db);
}

#[test]
fn ddl_on_a_locked_table_names_the_holder() {
    // Given a replace-mode pipeline whose table another session has locked
    let db = TestDb::new("faults_locked_ddl");
    db.load_timeseries(1, 2, 1440);
    let p = pipeline(&db, "", "[sinks.timeouts]\nlock_timeout_secs = 0.3\n");
    assert_eq!(db.etl(&["run", &p]).code, 0);
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("mode = \"append\"", "mode = \"replace\"");
    std::fs::write(&p, text).unwrap();
    let mut holder = hold_lock(
        &db.dst,
        "report-job",
        "tenant.tbl_data_timeseries",
        "ACCESS SHARE",
    );

    // When the run starts and must truncate
    let out = db.etl(&["run", &p]);
    holder.kill().unwrap();
    holder.wait().unwrap();

    // Then it stops before any chunk, naming the table, the holder and the setting
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("target table \"tenant\".\"tbl_data_timeseries\" is locked by pid "),
        "{out:?}"
    );
    assert!(out.stderr.contains("(report-job)"), "{out:?}");
    assert!(out.stderr.contains("lock_timeout_secs = 0.3"), "{out:?}");
    assert!(
        out.stderr
            .contains("canceling statement due to lock timeout"),
        "{out:?}"
    );
}

#[test]
fn a_database_or_role_the_server_refuses_is_said_at_once_not_tried_again() {
    // Given a source URL naming a database that does not exist, and a
    // target URL naming a role that does not exist
    let db = TestDb::new("faults_refused");
    db.load_timeseries(1, 2, 60);
    let p = pipeline(&db, "retries = 3\n", "");
    let missing_db = format!("{}_gone", db.src);
    let missing_role = db.dst.replacen("etl@", "nobody_etl@", 1);
    assert_ne!(missing_role, db.dst, "the test server's URL names its role");

    for (src, dst, said) in [
        (
            &missing_db,
            &db.dst,
            "database \"faults_refused_src_gone\" does not exist (SQLSTATE 3D000)",
        ),
        (
            &db.src,
            &missing_role,
            "role \"nobody_etl\" does not exist (SQLSTATE 28000)",
        ),
    ] {
        // When etl runs
        let out = crate::support::etl_in(
            db.dir.path(),
            &["run", &p],
            &[("ETL_SRC_URL", src), ("ETL_DST_URL", dst)],
        );

        // Then it fails saying what the server refused, without waiting
        // to try again what cannot change by itself
        assert_ne!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains(said) || out.stderr.contains(said),
            "{out:?}"
        );
        assert!(!out.stderr.contains("Transient failure"), "{out:?}");
        assert!(!out.stdout.contains(" attempts"), "{out:?}");
        assert!(!out.stderr.contains(" attempts"), "{out:?}");
    }
}
