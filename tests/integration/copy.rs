//! The shipped copy pipeline, run for real; reruns never duplicate; replace
//! mode; secrets never printed.

use crate::support::{assert_copied, etl_in, fingerprint, psql, repo, TestDb};

const ORDER: &str = "ship_id, created_time, data_channel_id";

#[test]
fn shipped_ships_copy_pipeline_copies_exactly_and_reruns_without_duplicates() {
    // Given the generated fleet data: 2 ships x 10 channels x 2 days
    let db = TestDb::new("copy_shipped");
    db.load_timeseries(2, 10, 2 * 1440);
    let pipeline = repo().join("pipelines/ships-copy.toml");
    let p = pipeline.to_str().unwrap();

    // When planned
    let plan = db.etl(&["plan", p]);
    // Then the plan lists four chunks with their counts and the DDL
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(plan.stdout.starts_with("Pipeline ships-copy: 4 chunks, 57,600 rows\nRange [2025-06-01 00:00:00, 2025-06-03 00:00:00), interval 86400 s\n"), "{plan:?}");
    assert!(
        plan.stdout.contains(
            "IMO9900002  2025-06-02 00:00:00         2025-06-03 00:00:00               14,400"
        ),
        "{plan:?}"
    );
    assert!(
        plan.stdout
            .contains("CREATE TABLE IF NOT EXISTS \"tenant\".\"tbl_data_timeseries\""),
        "{plan:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'tenant'"
        ),
        "0",
        "plan writes nothing"
    );

    // When run, run again (everything is done: skipped), and run with --restart
    let first = db.etl(&["run", p]);
    let second = db.etl(&["run", p]);
    let restart = db.etl(&["run", "--restart", p]);
    for out in [&first, &restart] {
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("4 done, 0 failed, of 4"), "{out:?}");
        assert!(out.stdout.contains("rows         57,600"), "{out:?}");
        assert!(out.stdout.contains("peak memory"), "{out:?}");
    }
    assert_eq!(second.code, 0, "{second:?}");
    assert!(
        second
            .stdout
            .contains("skipped      4 chunks done by an earlier run"),
        "{second:?}"
    );

    // Then the target equals the source, nothing duplicated
    let source = fingerprint(&db.src, "tenant.tbl_data_timeseries", ORDER);
    assert_eq!(
        fingerprint(&db.dst, "tenant.tbl_data_timeseries", ORDER),
        source
    );
}

#[test]
fn replace_mode_truncates_once_then_loads() {
    // Given a target holding rows that are not in the source
    let db = TestDb::new("copy_replace");
    db.load_timeseries(1, 3, 1440);
    psql(&db.dst, "CREATE SCHEMA tenant; CREATE TABLE tenant.tbl_data_timeseries AS SELECT 'stale'::text AS ship_id, 'x'::text AS data_channel_id, now() AS created_time, 'String'::text AS value_format, NULL::boolean AS bool_v, 'old'::text AS str_v, NULL::bigint AS long_v, NULL::float8 AS double_v");
    let text = std::fs::read_to_string(repo().join("pipelines/ships-copy.toml"))
        .unwrap()
        .replace("mode = \"append\"", "mode = \"replace\"");
    let p = db.pipeline("replace.toml", &text);

    // When run with mode replace
    let out = db.etl(&["run", p.to_str().unwrap()]);

    // Then only the source's rows are there
    assert_eq!(out.code, 0, "{out:?}");
    assert_copied(&db);
}

#[test]
fn missing_target_without_create_table_is_a_clear_error() {
    let db = TestDb::new("copy_no_target");
    db.load_timeseries(1, 1, 60);
    let text = std::fs::read_to_string(repo().join("pipelines/ships-copy.toml"))
        .unwrap()
        .replace("create_table = true", "create_table = false");
    let p = db.pipeline("p.toml", &text);
    let out = db.etl(&["plan", p.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("target table \"tenant\".\"tbl_data_timeseries\" does not exist on postgresql://etl@127.0.0.1:"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("create it, or set create_table = true in [[sinks]]"),
        "{out:?}"
    );
}

#[test]
fn passwords_never_appear_in_output() {
    // Given URLs carrying a password, one of them to a closed port
    let db = TestDb::new("copy_secrets");
    db.load_timeseries(1, 1, 60);
    let with_password = |url: &str| url.replacen("etl@", "etl:hunter2-secret@", 1);
    let p = repo().join("pipelines/ships-copy.toml");
    let p = p.to_str().unwrap();
    let src = with_password(&db.src);
    let dst = with_password(&db.dst);

    // When planned and run (trust auth accepts any password)
    let plan = etl_in(
        db.dir.path(),
        &["-v", "plan", p],
        &[("ETL_SRC_URL", &src), ("ETL_DST_URL", &dst)],
    );
    let run = etl_in(
        db.dir.path(),
        &["-vv", "run", p],
        &[("ETL_SRC_URL", &src), ("ETL_DST_URL", &dst)],
    );
    let closed = etl_in(
        db.dir.path(),
        &["plan", p],
        &[
            (
                "ETL_SRC_URL",
                "postgresql://etl:hunter2-secret@127.0.0.1:1/src",
            ),
            ("ETL_DST_URL", &dst),
        ],
    );

    // Then nothing printed holds the password, and the failed connection is named with it masked
    assert_eq!(plan.code, 0, "{plan:?}");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(closed.code, 2, "{closed:?}");
    assert!(
        closed
            .stderr
            .contains("cannot connect to postgresql://etl:***@127.0.0.1:1/src"),
        "{closed:?}"
    );
    for out in [&plan, &run, &closed] {
        assert!(
            !out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"),
            "{out:?}"
        );
    }
}

#[test]
fn a_target_that_does_not_fit_stops_the_run_before_any_chunk() {
    // Given a target without the time column that append mode replaces windows on
    let db = TestDb::new("copy_misfit");
    db.load_timeseries(1, 2, 120);
    psql(&db.dst, "CREATE SCHEMA tenant; CREATE TABLE tenant.tbl_data_timeseries (ship_id text, data_channel_id text, value_format text, bool_v boolean, str_v text, long_v bigint, double_v double precision, created_time_x timestamptz)");
    let p = repo().join("pipelines/ships-copy.toml");

    // When run
    let out = db.etl(&["run", p.to_str().unwrap()]);

    // Then it is a configuration error naming the table and the missing columns; no chunk ran
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("column \"created_time\" is in the source but not in target table \"tenant\".\"tbl_data_timeseries\""), "{out:?}");
    assert!(out.stderr.contains("mode append replaces a chunk's window when the chunk runs again, so target table \"tenant\".\"tbl_data_timeseries\" needs column \"created_time\""), "{out:?}");
    assert!(!db.dir.path().join("failed_chunks.csv").exists());
}

#[test]
fn a_query_returning_a_column_twice_is_refused() {
    let db = TestDb::new("copy_dup_columns");
    psql(
        &db.src,
        "CREATE TABLE a (id int, t timestamptz); CREATE TABLE b (id int)",
    );
    let p = db.pipeline(
        "p.toml",
        "name = \"d\"\n[source]\ntype = \"postgres\"\nurl = \"${ETL_SRC_URL}\"\nquery = \"SELECT a.id, a.t, b.id FROM a JOIN b USING (id)\"\n\
         [chunks]\ntime_column = \"t\"\n[[sinks]]\ntype = \"postgres\"\nurl = \"${ETL_DST_URL}\"\ntable = \"x\"\n",
    );
    let out = db.etl(&["plan", p.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("column \"id\" appears more than once; give each an alias in `query`"),
        "{out:?}"
    );
}

#[test]
fn a_keyed_csv_for_a_keyless_pipeline_is_refused() {
    let db = TestDb::new("copy_keyed_csv");
    std::fs::write(db.dir.path().join("f.csv"), "IMO1,2025-06-01,2025-06-02\n").unwrap();
    let text = std::fs::read_to_string(repo().join("pipelines/ships-copy.toml"))
        .unwrap()
        .replace("key_column = \"ship_id\"\n", "");
    let p = db.pipeline("p.toml", &text);
    let out = db.etl(&["rerun", p.to_str().unwrap(), "f.csv"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stderr,
        "etl: f.csv: chunk IMO1 [2025-06-01 00:00:00, 2025-06-02 00:00:00) has a key, but pipeline ships-copy has no [chunks] key_column; is this the CSV of another pipeline?\n"
    );
}

#[test]
fn an_indexed_table_is_planned_by_index_and_nothing_is_lost() {
    // Given fleet data with a missing day for one ship and a row at infinity
    let db = TestDb::new("copy_by_index");
    db.load_timeseries(2, 2, 3 * 1440);
    psql(&db.src, "DELETE FROM tenant.tbl_data_timeseries WHERE ship_id = 'IMO9900002' AND created_time >= '2025-06-02' AND created_time < '2025-06-03'");
    psql(&db.src, "INSERT INTO tenant.tbl_data_timeseries VALUES ('IMO9900001', 'ch_x', 'infinity', 'Integer', NULL, NULL, 1, NULL)");
    let p = repo().join("pipelines/ships-copy.toml");
    let p = p.to_str().unwrap();

    // When planned (counting) and run (by index)
    let plan = db.etl(&["plan", p]);
    let out = db.etl(&["run", p]);

    // Then the plan counts 5 windows with rows; the run covers 6 windows by
    // index, the empty one included, and reports the infinite row
    assert!(
        plan.stdout
            .starts_with("Pipeline ships-copy: 5 chunks, 14,400 rows\n"),
        "{plan:?}"
    );
    assert!(
        plan.stdout
            .contains("1 source rows have a NULL created_time or lie outside the range"),
        "{plan:?}"
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("Planned by index (rows are not counted first). chunks=6"),
        "{out:?}"
    );
    assert!(out.stdout.contains("6 done, 0 failed, of 6"), "{out:?}");
    assert!(out.stdout.contains("rows         14,400"), "{out:?}");
    assert!(
        out.stdout
            .contains("not loaded   1 rows outside the chunk range or with a NULL time"),
        "{out:?}"
    );
    assert_eq!(
        fingerprint(&db.dst, "tenant.tbl_data_timeseries", ORDER),
        psql(
            &db.src,
            "SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY ship_id, created_time, data_channel_id)) \
             FROM tenant.tbl_data_timeseries t WHERE isfinite(created_time)"
        )
    );
}

#[test]
fn passwords_come_from_password_env_pgpassword_or_pgpass() {
    // Given a role whose password the server checks (scripts/pg-tmp.sh makes
    // etl_password scram-only on loopback) and a tiny source
    let db = TestDb::new("copy_password_auth");
    db.load_timeseries(1, 1, 60);
    psql(&db.dst, "DO $$ BEGIN CREATE ROLE etl_password LOGIN PASSWORD 's3cret-pw'; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
    psql(&db.dst, "GRANT ALL ON DATABASE copy_password_auth_dst TO etl_password; GRANT ALL ON SCHEMA public TO etl_password");
    psql(
        &db.dst,
        "ALTER DATABASE copy_password_auth_dst OWNER TO etl_password",
    );
    let dst = db.dst.replacen("etl@", "etl_password@", 1);
    let base = std::fs::read_to_string(repo().join("pipelines/ships-copy.toml")).unwrap();
    let with_env = db.pipeline(
        "env.toml",
        &base.replace(
            "url = \"${ETL_DST_URL}\"",
            "url = \"${ETL_DST_URL}\"\npassword_env = \"DST_PW\"",
        ),
    );
    let plain = repo().join("pipelines/ships-copy.toml");
    let pgpass = db.dir.path().join("pgpass");
    let port = dst
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    std::fs::write(
        &pgpass,
        format!("127.0.0.1:{port}:copy_password_auth_dst:etl_password:s3cret-pw\n"),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let run = |p: &std::path::Path, extra: &[(&str, &str)]| {
        let mut env = vec![
            ("ETL_SRC_URL", db.src.as_str()),
            ("ETL_DST_URL", dst.as_str()),
            ("PGPASSFILE", "/nonexistent"),
        ];
        env.extend_from_slice(extra);
        etl_in(
            db.dir.path(),
            &["run", "--restart", p.to_str().unwrap()],
            &env,
        )
    };

    // When run with the password from password_env, PGPASSWORD, ~/.pgpass, and a wrong one
    let by_env = run(&with_env, &[("DST_PW", "s3cret-pw")]);
    let by_pgpassword = run(&plain, &[("PGPASSWORD", "s3cret-pw")]);
    let by_pgpass = run(&plain, &[("PGPASSFILE", pgpass.to_str().unwrap())]);
    let wrong = run(&with_env, &[("DST_PW", "not-it")]);
    let missing = run(&with_env, &[]);

    // Then the three sources of the password work, a wrong one fails, and no password is printed
    for out in [&by_env, &by_pgpassword, &by_pgpass] {
        assert_eq!(out.code, 0, "{out:?}");
    }
    assert_eq!(wrong.code, 2, "{wrong:?}");
    assert!(
        wrong
            .stderr
            .contains("password authentication failed for user \"etl_password\""),
        "{wrong:?}"
    );
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(
        missing.stderr.contains(
            "environment variable DST_PW (password_env for postgresql://etl_password@127.0.0.1:"
        ),
        "{missing:?}"
    );
    for out in [&by_env, &by_pgpassword, &by_pgpass, &wrong, &missing] {
        assert!(
            !out.stdout.contains("s3cret") && !out.stderr.contains("s3cret"),
            "{out:?}"
        );
    }
    assert_copied(&db);

    // When the password file can be read by others, it is ignored (as
    // libpq ignores it), with a warning naming why (it was read)
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let open = run(&plain, &[("PGPASSFILE", pgpass.to_str().unwrap())]);
    assert_eq!(open.code, 2, "{open:?}");
    assert!(
        open.stderr
            .contains("has group or world access and is ignored"),
        "{open:?}"
    );
}

#[test]
fn postgres_into_a_table_of_the_same_types_forwards_copy_data_else_batches() {
    // Given the fleet data, and a target made by etl (the source's types)
    let db = TestDb::new("copy_through");
    db.load_timeseries(2, 5, 1440);
    let p = repo().join("pipelines/ships-copy.toml");
    let p = p.to_str().unwrap();
    let debug = |args: &[&str]| {
        etl_in(
            db.dir.path(),
            args,
            &[
                ("ETL_SRC_URL", &db.src),
                ("ETL_DST_URL", &db.dst),
                ("RUST_LOG", "etl=debug"),
            ],
        )
    };

    // When copied
    let out = debug(&["run", p]);

    // Then every chunk's COPY data went through as it came, and the rows equal
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stderr.matches("goes through as it comes").count(),
        2,
        "{out:?}"
    );
    assert_copied(&db);

    // When the target's value column is of another type, the chunks go
    // through Arrow, with its casts and checks, and the rows still equal
    psql(
        &db.dst,
        "TRUNCATE tenant.tbl_data_timeseries; TRUNCATE etl.chunk_ledger; \
         ALTER TABLE tenant.tbl_data_timeseries ALTER COLUMN value_format TYPE varchar(20)",
    );
    let out = debug(&["run", p]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("goes through as it comes"), "{out:?}");
    assert_eq!(
        fingerprint(&db.dst, "tenant.tbl_data_timeseries", ORDER),
        fingerprint(&db.src, "tenant.tbl_data_timeseries", ORDER)
    );
}

#[test]
fn shipped_table_copy_pipeline_reads_ranges_of_blocks_and_resumes_after_a_kill() {
    // Given the fleet data (2 ships x 10 channels x 2 days) and the shipped
    // block-range pipeline, cut to ranges of 100 blocks
    let db = TestDb::new("copy_blocks");
    db.load_timeseries(2, 10, 2 * 1440);
    let blocks: u64 = psql(
        &db.src,
        "SELECT pg_relation_size('tenant.tbl_data_timeseries') / 8192",
    )
    .parse()
    .unwrap();
    let ranges = blocks.div_ceil(100);
    assert!(ranges >= 4, "{blocks} blocks");
    let text = std::fs::read_to_string(repo().join("pipelines/table-copy.toml"))
        .unwrap()
        .replace("range_width = 8192", "range_width = 100")
        .replace(
            "table = \"tenant.tbl_data_timeseries\"\n\n[chunks]",
            "table = \"tenant.tbl_data_timeseries\"\nbatch_rows = 1000\n\n[chunks]",
        );
    assert!(text.contains("range_width = 100") && text.contains("batch_rows = 1000"));
    let p = db.pipeline("blocks.toml", &text);
    let p = p.to_str().unwrap();

    // When planned
    let plan = db.etl(&["plan", p]);
    // Then it lists a range per 100 blocks, rows estimated from the
    // table's statistics and adding up to its rows, without a scan
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.starts_with(&format!(
            "Pipeline table-copy: {ranges} chunks, 57,600 rows\n"
        )),
        "{plan:?}"
    );
    assert!(plan.stdout.contains("\n     100 "), "{plan:?}");
    assert!(
        plan.stdout.contains(
            "\nRanges of the table's heap blocks, 100 blocks each, rows estimated from its statistics"
        ),
        "{plan:?}"
    );

    // When a run is killed after its second commit, and run again
    let (mut child, lines) = crate::support::spawn_etl(
        &db,
        &["run", "--workers", "1", p],
        &[("ETL_TEST_PAUSE_AT", "commit:2")],
    );
    crate::support::wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    child.kill().expect("SIGKILL etl");
    child.wait().unwrap();
    let done = psql(
        &db.dst,
        "SELECT count(*) FROM etl.chunk_ledger WHERE status = 'done'",
    );
    let resumed = db.etl(&["run", p]);

    // Then the second run loads the ranges the first did not commit, and
    // the target equals the source, nothing doubled
    assert_eq!(done, "2");
    assert_eq!(resumed.code, 0, "{resumed:?}");
    let left = ranges - 2;
    assert!(
        resumed
            .stdout
            .contains(&format!("{left} done, 0 failed, of {left}"))
            && resumed
                .stdout
                .contains("skipped      2 chunks done by an earlier run"),
        "{resumed:?}"
    );
    assert_copied(&db);

    // When verified, fully and against the recorded checksums
    let verify = db.etl(&["verify", p]);
    let quick = db.etl(&["verify", "--quick", p]);
    // Then both compare the table whole (its rows of a range cannot be
    // told apart) and find it equal
    for out in [&verify, &quick] {
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains(&format!(
                "Verified {ranges} chunks of pipeline table-copy against 1 sink: 1 equal, 0 differ"
            )),
            "{out:?}"
        );
    }

    // When one value changes in the target and verify runs again
    psql(
        &db.dst,
        "UPDATE tenant.tbl_data_timeseries SET double_v = double_v + 1 \
         WHERE ctid = (SELECT min(ctid) FROM tenant.tbl_data_timeseries WHERE double_v IS NOT NULL)",
    );
    let verify = db.etl(&["verify", p]);
    let quick = db.etl(&["verify", "--quick", p]);
    // Then both find the difference
    for out in [&verify, &quick] {
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stdout.contains("1 differ"), "{out:?}");
    }

    // When a loaded range is asked for again (--restart)
    let restart = db.etl(&["run", "--restart", p]);
    // Then it is refused before any chunk, saying why and what to do
    assert_eq!(restart.code, 2, "{restart:?}");
    assert!(
        restart
            .stderr
            .contains("ranges of the source table's blocks leave no column to find their rows by")
            && restart.stderr.contains("mode = \"replace\""),
        "{restart:?}"
    );
    assert_eq!(
        psql(&db.dst, "SELECT count(*) FROM tenant.tbl_data_timeseries"),
        "57600"
    );

    // When loaded ranges are asked for again by a rerun
    std::fs::write(db.dir.path().join("again.csv"), ",0,100\n,100,200\n").unwrap();
    let rerun = db.etl(&["rerun", p, "again.csv"]);
    // Then it is refused before any chunk, naming them, and their ledger
    // rows stay done
    assert_eq!(rerun.code, 2, "{rerun:?}");
    assert!(
        rerun
            .stderr
            .contains("again.csv: 2 of its 2 chunks were loaded by an earlier run ([0, 100); [100, 200)), and ranges of the source table's blocks leave no column to find their rows by")
            && rerun.stderr.contains("mode = \"replace\""),
        "{rerun:?}"
    );
    // (mode "replace" too: a rerun never empties the target)
    let replace = db.pipeline(
        "replace.toml",
        &text.replace("mode = \"append\"", "mode = \"replace\""),
    );
    let rerun = db.etl(&["rerun", replace.to_str().unwrap(), "again.csv"]);
    assert_eq!(rerun.code, 2, "{rerun:?}");
    assert!(
        rerun.stderr.contains("2 of its 2 chunks were loaded"),
        "{rerun:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FILTER (WHERE status = 'done') || ' of ' || count(*) FROM etl.chunk_ledger"
        ),
        format!("{ranges} of {ranges}")
    );
    assert_eq!(
        psql(&db.dst, "SELECT count(*) FROM tenant.tbl_data_timeseries"),
        "57600"
    );

    // And a view or a query has no blocks to cut: refused before any chunk
    psql(
        &db.src,
        "CREATE VIEW tenant.v AS SELECT * FROM tenant.tbl_data_timeseries",
    );
    let view = db.pipeline(
        "view.toml",
        &text.replacen(
            "table = \"tenant.tbl_data_timeseries\"",
            "table = \"tenant.v\"",
            1,
        ),
    );
    let refused = db.etl(&["plan", view.to_str().unwrap()]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("chunks.range_column \"ctid\" cuts a table into ranges of its heap blocks, which \"tenant\".\"v\" (a view or a foreign table) has not"),
        "{refused:?}"
    );
}
