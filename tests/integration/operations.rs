//! Running a long migration by hand: one key at a time on every command,
//! the cutoff set by hand, checks on the loaded data, ANALYZE after the
//! load.

use crate::support::{assert_copied, psql, repo, TestDb};

fn ships(db: &TestDb, table: &str) -> String {
    psql(
        &db.dst,
        &format!("SELECT string_agg(DISTINCT ship_id, ',' ORDER BY ship_id) FROM {table}"),
    )
}

#[test]
fn one_key_at_a_time_on_plan_run_verify_and_status() {
    // Given three ships over two days
    let db = TestDb::new("one_key");
    db.load_timeseries(3, 2, 2 * 1440);
    let p = repo().join("pipelines/ships-copy.toml");
    let p = p.to_str().unwrap();

    // When planned for one ship: only its chunks
    let plan = db.etl(&["plan", p, "--key", "IMO9900002"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout
            .starts_with("Pipeline ships-copy: 2 chunks, 5,760 rows\n"),
        "{plan:?}"
    );
    assert!(!plan.stdout.contains("IMO9900001"), "{plan:?}");

    // When two ships are run: only their rows land
    let run = db.etl(&["run", p, "--key", "IMO9900002", "--key", "IMO9900003"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        ships(&db, "tenant.tbl_data_timeseries"),
        "IMO9900002,IMO9900003"
    );

    // Then status for one ship shows that ship alone, done
    let status = db.etl(&["status", p, "--key", "IMO9900003"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("IMO9900003"), "{status:?}");
    assert!(!status.stdout.contains("IMO9900002"), "{status:?}");

    // And verify finds a loaded ship equal and the one not loaded missing
    let equal = db.etl(&["verify", p, "--key", "IMO9900002"]);
    assert_eq!(equal.code, 0, "{equal:?}");
    assert!(equal.stdout.contains("Verified 2 chunks"), "{equal:?}");
    let missing = db.etl(&["verify", p, "--key", "IMO9900001"]);
    assert_eq!(missing.code, 1, "{missing:?}");

    // When the whole pipeline runs: the loaded ships are skipped, the last
    // one lands, and the target equals the source
    let rest = db.etl(&["run", p]);
    assert_eq!(rest.code, 0, "{rest:?}");
    assert!(
        rest.stdout
            .contains("skipped      4 chunks done by an earlier run"),
        "{rest:?}"
    );
    assert_copied(&db);

    // And --key is refused where it cannot mean what it says
    let follow = db.etl(&["run", p, "--key", "IMO9900001", "--follow"]);
    assert_eq!(follow.code, 2, "{follow:?}");
    assert!(follow.stderr.contains("--key with --follow"), "{follow:?}");
    let text = std::fs::read_to_string(p)
        .unwrap()
        .replace("key_column = \"ship_id\"\n", "");
    let no_key = db.pipeline("no-key.toml", &text);
    let out = db.etl(&["plan", no_key.to_str().unwrap(), "--key", "IMO9900001"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("--key picks values of [chunks] key_column, and"),
        "{out:?}"
    );
}

/// Columns of a table in the target, by type: "name type, ...".
fn columns(db: &TestDb, schema: &str, table: &str) -> String {
    psql(
        &db.dst,
        &format!(
            "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) \
             FROM information_schema.columns WHERE table_schema = '{schema}' AND table_name = '{table}'"
        ),
    )
}

#[test]
fn ddl_only_creates_wide_tables_with_their_channel_columns_and_loads_nothing() {
    // Given two ships with five channels each
    let db = TestDb::new("ddl_only");
    db.load_timeseries(2, 5, 120);
    let p = repo().join("pipelines/ships-wide.toml");
    let p = p.to_str().unwrap();

    // When run with --ddl-only
    let out = db.etl(&["run", p, "--ddl-only"]);

    // Then each ship's wide table has its index and every channel's column, and no row
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("nothing loaded (--ddl-only)"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(
            "wide table \"wide\".\"tbl_data_timeseries_IMO9900002\": 5 channel columns in 1 table"
        ),
        "{out:?}"
    );
    let wanted = "created_time timestamp with time zone, ch_0001 double precision, ch_0002 double precision, \
                  ch_0003 double precision, ch_0004 double precision, ch_0005 double precision";
    for ship in ["IMO9900001", "IMO9900002"] {
        let table = format!("tbl_data_timeseries_{ship}");
        assert_eq!(columns(&db, "wide", &table), wanted);
        assert_eq!(
            psql(&db.dst, &format!("SELECT count(*) FROM wide.\"{table}\"")),
            "0"
        );
    }
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM etl.chunk_ledger WHERE status = 'done'"
        ),
        "0"
    );

    // When the pipeline then runs: the rows land in those columns, none added
    let run = db.etl(&["run", p]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        columns(&db, "wide", "tbl_data_timeseries_IMO9900001"),
        wanted
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM wide.\"tbl_data_timeseries_IMO9900001\""
        ),
        "120"
    );
}

#[test]
fn recreate_drops_only_what_the_pipeline_created_after_a_typed_confirmation() {
    // Given a loaded pivot, a value changed by hand, and a table made by hand beside it
    let db = TestDb::new("recreate");
    db.load_timeseries(2, 5, 120);
    let p = repo().join("pipelines/ships-wide.toml");
    let p = p.to_str().unwrap();
    assert_eq!(db.etl(&["run", p]).code, 0);
    psql(
        &db.dst,
        "UPDATE wide.\"tbl_data_timeseries_IMO9900001\" SET ch_0001 = -1; \
         CREATE TABLE wide.kept (id int); INSERT INTO wide.kept VALUES (1)",
    );
    let changed = || {
        psql(
            &db.dst,
            "SELECT count(*) FROM wide.\"tbl_data_timeseries_IMO9900001\" WHERE ch_0001 = -1",
        )
    };
    assert_eq!(changed(), "120");

    // When --recreate gets no answer, or the wrong name
    let silent = db.etl_typing(&["run", p, "--recreate"], "");
    let wrong = db.etl_typing(&["run", p, "--recreate"], "ships-copy\n");

    // Then it lists what it would drop, refuses, and nothing is dropped
    for refused in [&silent, &wrong] {
        assert_eq!(refused.code, 2, "{refused:?}");
        assert!(
            refused
                .stdout
                .contains("  \"wide\".\"tbl_data_timeseries_IMO9900002\" on "),
            "{refused:?}"
        );
        assert!(!refused.stdout.contains("kept"), "{refused:?}");
        assert!(
            refused.stderr.contains("--recreate was not confirmed"),
            "{refused:?}"
        );
    }
    assert_eq!(changed(), "120");

    // And with --key it is refused before asking
    let keyed = db.etl(&["run", p, "--recreate", "--yes", "--key", "IMO9900001"]);
    assert_eq!(keyed.code, 2, "{keyed:?}");

    // When the pipeline's name is typed
    let typed = db.etl_typing(&["run", p, "--recreate"], "ships-wide\n");

    // Then its tables were dropped and loaded again from the source, the
    // table made by hand is untouched, and the map and ledger start over
    assert_eq!(typed.code, 0, "{typed:?}");
    assert!(typed.stdout.contains("Dropped 2 tables on "), "{typed:?}");
    assert_eq!(changed(), "0");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM wide.\"tbl_data_timeseries_IMO9900001\""
        ),
        "120"
    );
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM wide.kept"), "1");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*), max(attempts) FROM etl.chunk_ledger WHERE pipeline = 'ships-wide'"
        ),
        "2|1"
    );
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM etl.column_map"), "10");

    // And --yes confirms without a prompt
    let yes = db.etl(&["run", p, "--recreate", "--yes"]);
    assert_eq!(yes.code, 0, "{yes:?}");
    assert!(yes.stdout.contains("Dropped 2 tables on "), "{yes:?}");
}

#[test]
fn forget_removes_a_finished_pipelines_ledger_and_the_etl_schema_once_empty() {
    // Given two pipelines loaded into one target (a copy, and a pivot
    // whose wide tables keep their channel map in etl.column_map)
    let db = TestDb::new("forget");
    db.load_timeseries(2, 3, 60);
    let copy = repo().join("pipelines/ships-copy.toml");
    let copy = copy.to_str().unwrap();
    let wide = repo().join("pipelines/ships-wide.toml");
    let wide = wide.to_str().unwrap();
    assert_eq!(db.etl(&["run", copy]).code, 0);
    assert_eq!(db.etl(&["run", wide]).code, 0);
    let rows = |pipeline: &str| {
        psql(
            &db.dst,
            &format!(
                "SELECT (SELECT count(*) FROM etl.chunk_ledger WHERE pipeline = '{pipeline}') \
                 + (SELECT count(*) FROM etl.phase_log WHERE pipeline = '{pipeline}')"
            ),
        )
    };
    let schema = || psql(&db.dst, "SELECT to_regnamespace('etl') IS NOT NULL");

    // When forget gets no answer: nothing is deleted
    let silent = db.etl_typing(&["forget", copy], "");
    assert_eq!(silent.code, 2, "{silent:?}");
    assert!(
        silent.stderr.contains("etl forget was not confirmed"),
        "{silent:?}"
    );
    assert_ne!(rows("ships-copy"), "0");

    // When a run of the copy is parked inside a chunk: refused, naming it
    let go = db.dir.path().join("go");
    let (mut child, lines) = crate::support::spawn_etl(
        &db,
        &["run", "--restart", "--workers", "1", copy],
        &[
            ("ETL_TEST_PAUSE_AT", "write:1"),
            ("ETL_TEST_RESUME_FILE", go.to_str().unwrap()),
        ],
    );
    crate::support::wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    let busy = db.etl(&["forget", copy, "--yes"]);
    std::fs::write(&go, "").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(busy.code, 2, "{busy:?}");
    assert!(
        busy.stderr
            .contains("has chunks running in live etl processes"),
        "{busy:?}"
    );

    // When the copy is forgotten: its rows go, the pivot's stay, and so does the schema
    let first = db.etl(&["forget", copy, "--yes"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(
        first
            .stdout
            .contains("kept schema etl: etl.chunk_ledger holds rows"),
        "{first:?}"
    );
    assert_eq!(rows("ships-copy"), "0");
    assert_ne!(rows("ships-wide"), "0");
    assert_eq!(
        psql(&db.dst, "SELECT count(*) FROM tenant.tbl_data_timeseries"),
        "360",
        "the data stays"
    );

    // And the pivot forgotten too: its column map keeps the schema (its
    // wide tables need it); emptied, the schema goes
    let second = db.etl_typing(&["forget", wide], "ships-wide\n");
    assert_eq!(second.code, 0, "{second:?}");
    assert!(
        second
            .stdout
            .contains("kept schema etl: etl.column_map holds rows"),
        "{second:?}"
    );
    psql(&db.dst, "DELETE FROM etl.column_map");
    let empty = db.etl(&["forget", wide, "--yes"]);
    assert!(empty.stdout.contains("nothing to forget"), "{empty:?}");
    psql(
        &db.dst,
        "INSERT INTO etl.cutoff (pipeline, cutoff) VALUES ('ships-wide', now())",
    );
    let last = db.etl(&["forget", wide, "--yes"]);
    assert_eq!(last.code, 0, "{last:?}");
    assert!(
        last.stdout
            .contains("dropped schema etl: nothing else was in it"),
        "{last:?}"
    );
    assert_eq!(schema(), "f");
}

#[test]
fn plan_estimates_the_time_left_from_a_sample_then_from_the_ledger_and_progress_uses_it() {
    // Given three ships over two days, nothing loaded
    let db = TestDb::new("estimate");
    db.load_timeseries(3, 2, 2 * 1440);
    let p = repo().join("pipelines/ships-copy.toml");
    let p = p.to_str().unwrap();
    let estimate = |out: &crate::support::Output| -> String {
        out.stdout
            .lines()
            .find(|l| l.starts_with("Estimate: "))
            .unwrap_or_else(|| panic!("no estimate: {out:?}"))
            .to_string()
    };

    // When planned before any run: timed by a short read of the source
    let first = db.etl(&["plan", p]);
    assert_eq!(first.code, 0, "{first:?}");
    let line = estimate(&first);
    assert!(
        line.contains("for 6 chunks (17,280 rows) left on 2 workers; basis: a read of 2,880 rows of chunk IMO9900001 "),
        "{line}"
    );
    assert!(
        line.ends_with("writing not measured (no chunk of this plan done here yet)"),
        "{line}"
    );

    // When one ship is loaded and the plan asked again: timed by the
    // ledger's record of that ship's chunks, per ship left
    assert_eq!(db.etl(&["run", p, "--key", "IMO9900001"]).code, 0);
    let second = db.etl(&["plan", p]);
    let line = estimate(&second);
    assert!(
        line.contains("for 4 chunks (11,520 rows) left on 2 workers; basis: 2 chunks of this plan done before, "),
        "{line}"
    );
    for key in ["IMO9900002", "IMO9900003"] {
        assert!(
            second.stdout.contains(&format!("  {key}: ~")),
            "{key}: {second:?}"
        );
    }
    assert!(!second.stdout.contains("  IMO9900001: ~"), "{second:?}");

    // And the run's progress says the time left from the first line on
    let rest = crate::support::etl_in(
        db.dir.path(),
        &["run", p],
        &[
            ("ETL_DST_URL", &db.dst),
            ("ETL_SRC_URL", &db.src),
            ("ETL_PROGRESS_SECS", "0"),
        ],
    );
    assert_eq!(rest.code, 0, "{rest:?}");
    let first_progress = rest
        .stderr
        .lines()
        .find(|l| l.contains("Progress: "))
        .unwrap_or_else(|| panic!("no progress line: {rest:?}"));
    assert!(first_progress.contains(" left."), "{first_progress}");

    // And with every chunk done the plan says so
    let done = db.etl(&["plan", p]);
    assert!(
        estimate(&done)
            .starts_with("Estimate: nothing left, every chunk is done (--restart would take ~"),
        "{done:?}"
    );
}

#[test]
fn checks_report_each_failure_with_its_count_and_examples_after_run_and_on_verify() {
    // Given readings of one ship, one of them with an empty value_format
    let db = TestDb::new("checks");
    db.load_timeseries(1, 20, 60);
    psql(
        &db.src,
        "INSERT INTO tenant.tbl_data_timeseries VALUES ('IMO9900001', 'ch_blank', '2025-06-01 00:30+00', '', NULL, NULL, NULL, NULL)",
    );
    let copy = std::fs::read_to_string(repo().join("pipelines/ships-copy.toml")).unwrap();
    let p = db.pipeline(
        "checked.toml",
        &format!(
            "{copy}\n\
             [[checks]]\nnot_null = [\"value_format\", \"ship_id\"]\n\n\
             [[checks]]\nunique = [\"ship_id\", \"data_channel_id\"]\n\n\
             [[checks]]\nname = \"no negative readings\"\n\
             sql = \"SELECT ship_id, created_time FROM tenant.tbl_data_timeseries WHERE double_v < 0;\"\n\n\
             [[checks]]\nnot_null = [\"no_such_column\"]\n"
        ),
    );
    let p = p.to_str().unwrap();

    // When the pipeline runs
    let run = db.etl(&["run", p]);

    // Then every chunk loads, and the checks' failures are reported with
    // their counts and examples, exit 1
    assert_eq!(run.code, 1, "{run:?}");
    assert_copied(&db);
    for wanted in [
        "Checks: 2 passed, 3 failed",
        "FAILED  not_null value_format on \"tenant\".\"tbl_data_timeseries\": 1 rows",
        "e.g. (IMO9900001,ch_blank,\"2025-06-01 00:30:00+00\",\"\",,,,)",
        "ok      not_null ship_id on \"tenant\".\"tbl_data_timeseries\"",
        "FAILED  unique (ship_id, data_channel_id) on \"tenant\".\"tbl_data_timeseries\": 20 duplicated values in 1,200 rows",
        "e.g. (IMO9900001,ch_0001) ×60",
        "ok      no negative readings",
        "FAILED  not_null no_such_column on \"tenant\".\"tbl_data_timeseries\": could not run: ",
        "no_such_column",
    ] {
        assert!(run.stdout.contains(wanted), "{wanted:?} not in {run:?}");
    }

    // And etl verify reports them too: the chunks are equal, the checks are not
    let verify = db.etl(&["verify", p]);
    assert_eq!(verify.code, 1, "{verify:?}");
    assert!(verify.stdout.contains("0 differ"), "{verify:?}");
    assert!(
        verify.stdout.contains("Checks: 2 passed, 3 failed"),
        "{verify:?}"
    );

    // And a check with two rules is refused before anything runs, naming it
    let two = db.pipeline(
        "two.toml",
        &format!("{copy}\n[[checks]]\nnot_null = [\"ship_id\"]\nsql = \"SELECT 1\"\n"),
    );
    let refused = db.etl(&["validate", two.to_str().unwrap()]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("checks[0]: needs exactly one of not_null"),
        "{refused:?}"
    );
}

#[test]
fn analyze_after_analyzes_every_table_the_run_wrote() {
    // Given a pivot pipeline with analyze_after, and the same without
    let db = TestDb::new("analyze_after");
    db.load_timeseries(2, 3, 60);
    let wide = std::fs::read_to_string(repo().join("pipelines/ships-wide.toml")).unwrap();
    let with = db.pipeline("with.toml", &format!("{wide}analyze_after = true\n"));
    let without = db.pipeline(
        "without.toml",
        &wide
            .replace("name = \"ships-wide\"", "name = \"plain\"")
            .replace("wide.tbl_data_timeseries_{key}", "plain.t_{key}"),
    );
    let analyzed = |schema: &str| {
        psql(
            &db.dst,
            &format!(
                "SELECT string_agg(relname || ' ' || (last_analyze IS NOT NULL), ', ' ORDER BY relname) \
                 FROM pg_stat_user_tables WHERE schemaname = '{schema}'"
            ),
        )
    };

    // When both run
    assert_eq!(db.etl(&["run", with.to_str().unwrap()]).code, 0);
    assert_eq!(db.etl(&["run", without.to_str().unwrap()]).code, 0);

    // Then the tables of the one with analyze_after were analyzed, the others not
    assert_eq!(
        analyzed("wide"),
        "tbl_data_timeseries_IMO9900001 true, tbl_data_timeseries_IMO9900002 true"
    );
    assert_eq!(analyzed("plain"), "t_IMO9900001 false, t_IMO9900002 false");
}

#[test]
fn preflight_names_what_the_role_lacks_and_writes_nothing() {
    // Given a target reached as a role that may not create anything
    let db = TestDb::new("preflight");
    db.load_timeseries(1, 2, 60);
    psql(
        &db.dst,
        "DROP ROLE IF EXISTS etl_preflight; CREATE ROLE etl_preflight LOGIN",
    );
    let dst = db.dst.replace("://etl@", "://etl_preflight@");
    let p = repo().join("pipelines/ships-copy.toml");
    let p = p.to_str().unwrap();
    let preflight = || {
        crate::support::etl_in(
            db.dir.path(),
            &["preflight", p],
            &[("ETL_SRC_URL", &db.src), ("ETL_DST_URL", &dst)],
        )
    };

    // When preflight runs
    let out = preflight();

    // Then it fails, naming the role and the privilege, and wrote nothing
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("2 failed"), "{out:?}");
    assert!(
        out.stdout
            .contains("FAIL     CREATE in schema etl      sinks[0] postgresql://etl_preflight@"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("schema etl does not exist and role etl_preflight lacks CREATE on database preflight_dst to create it, needed for the ledger (etl.chunk_ledger); GRANT CREATE ON DATABASE \"preflight_dst\" TO \"etl_preflight\""),
        "{out:?}"
    );
    assert!(out.stdout.contains("pass     SELECT"), "{out:?}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM pg_namespace WHERE nspname IN ('etl', 'tenant')"
        ),
        "0"
    );

    // When the role may create schemas: every check passes
    psql(
        &db.dst,
        "GRANT CREATE ON DATABASE preflight_dst TO etl_preflight",
    );
    let granted = preflight();
    assert_eq!(granted.code, 0, "{granted:?}");
    assert!(granted.stdout.contains("0 failed"), "{granted:?}");

    // When the target table exists and the role may insert but not delete
    psql(
        &db.dst,
        "CREATE SCHEMA tenant; CREATE TABLE tenant.tbl_data_timeseries (LIKE pg_class); \
         GRANT USAGE ON SCHEMA tenant TO etl_preflight; \
         GRANT INSERT ON tenant.tbl_data_timeseries TO etl_preflight",
    );
    let no_delete = preflight();

    // Then the missing DELETE is named with the reason and the GRANT to run
    assert_eq!(no_delete.code, 1, "{no_delete:?}");
    assert!(
        no_delete.stdout.contains("pass     INSERT"),
        "{no_delete:?}"
    );
    assert!(
        no_delete.stdout.contains("role etl_preflight lacks DELETE on \"tenant\".\"tbl_data_timeseries\" (a chunk that runs again replaces its window); GRANT DELETE ON \"tenant\".\"tbl_data_timeseries\" TO \"etl_preflight\""),
        "{no_delete:?}"
    );
    psql(
        &db.dst,
        "DROP SCHEMA tenant CASCADE; REVOKE ALL ON DATABASE preflight_dst FROM etl_preflight",
    );
}

#[test]
fn log_files_rotate_by_size_keep_the_newest_and_write_json_while_the_terminal_stays_readable() {
    // Given a run of many small chunks, logging debug lines
    let db = TestDb::new("log_files");
    db.load_timeseries(2, 3, 2 * 1440);
    let copy = std::fs::read_to_string(repo().join("pipelines/ships-copy.toml")).unwrap();
    let p = db.pipeline(
        "hourly.toml",
        &copy.replace("interval = \"24h\"", "interval = \"1h\""),
    );
    let p = p.to_str().unwrap();

    // When it runs with a JSON log file of 2 kB, three kept
    let out = db.etl(&[
        "run",
        p,
        "-v",
        "--log-file",
        "logs/etl.log",
        "--log-max-size",
        "2kB",
        "--log-keep",
        "3",
        "--log-format",
        "json",
    ]);

    // Then the current file and three rotated ones are there, none bigger
    // than the limit, and older ones were deleted
    assert_eq!(out.code, 0, "{out:?}");
    let logs = db.dir.path().join("logs");
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["etl.log", "etl.log.1", "etl.log.2", "etl.log.3"]);
    let mut lines = Vec::new();
    for name in ["etl.log.3", "etl.log.2", "etl.log.1", "etl.log"] {
        let text = std::fs::read_to_string(logs.join(name)).unwrap();
        assert!(text.len() <= 2000, "{name} has {} bytes", text.len());
        lines.extend(text.lines().map(str::to_string));
    }
    // Every line is a JSON object with its level and message; the newest
    // file ends with the run's last line, and the chunks' lines name their key
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"message\":\"Chunk committed.\"")
                && l.contains("\"key\":\"IMO9900002\"")),
        "{lines:?}"
    );
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["fields"]["message"], "Run finished.", "{lines:?}");

    // And the terminal kept readable lines
    assert!(!out.stderr.starts_with('{'), "{out:?}");
    assert!(
        out.stderr
            .contains(" INFO Run started. pipeline=ships-copy chunks=96"),
        "{out:?}"
    );
}

/// The rows a terminal shows after `output` (cursor up and down, clear
/// line, carriage return; colours ignored; no wrapping: the terminal is
/// wider than any line).
fn screen(output: &str) -> Vec<String> {
    let mut rows: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = output.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut arg = String::new();
                let mut cmd = ' ';
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        cmd = d;
                        break;
                    }
                    arg.push(d);
                }
                let n: usize = arg.parse().unwrap_or(1);
                match cmd {
                    'A' => row = row.saturating_sub(n),
                    'B' => row += n,
                    'K' => rows[row].clear(),
                    'm' => {}
                    other => panic!("escape {arg}{other} not emulated"),
                }
                while rows.len() <= row {
                    rows.push(Vec::new());
                }
            }
            '\r' => col = 0,
            '\n' => {
                row += 1;
                col = 0;
                if rows.len() <= row {
                    rows.push(Vec::new());
                }
            }
            c => {
                let line = &mut rows[row];
                if line.len() <= col {
                    line.resize(col, ' ');
                    line.push(c);
                } else {
                    line[col] = c;
                }
                col += 1;
            }
        }
    }
    rows.into_iter()
        .map(|r| r.into_iter().collect::<String>().trim_end().to_string())
        .collect()
}

#[test]
fn on_a_terminal_log_lines_are_whole_and_the_progress_bar_is_drawn_around_them() {
    // Given a run of many small chunks that logs a line per chunk
    let db = TestDb::new("log_terminal");
    db.load_timeseries(2, 3, 2 * 1440);
    let copy = std::fs::read_to_string(repo().join("pipelines/ships-copy.toml")).unwrap();
    let p = db.pipeline(
        "hourly.toml",
        &copy.replace("interval = \"24h\"", "interval = \"1h\""),
    );

    // When it runs on a terminal (script gives it a pseudo-terminal)
    let command = format!(
        "stty cols 300 rows 50; {} run {} -v",
        env!("CARGO_BIN_EXE_etl"),
        p.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(db.dir.path())
        .env("ETL_SRC_URL", &db.src)
        .env("ETL_DST_URL", &db.dst)
        .env_remove("RUST_LOG")
        .output()
        .expect("script (bsdutils) is installed");
    assert!(out.status.success(), "{out:?}");
    let raw = String::from_utf8_lossy(&out.stdout);

    // Then the bar was drawn, and every log line on the screen is whole:
    // it starts with its timestamp and holds no piece of the bar
    assert!(raw.contains("/96 chunks"), "no progress bar drawn: {raw:?}");
    let rows = screen(&raw);
    let logged: Vec<&String> = rows
        .iter()
        .filter(|r| r.contains(" INFO ") || r.contains(" DEBUG "))
        .collect();
    assert!(logged.len() >= 96, "{rows:#?}");
    for r in &logged {
        assert!(
            r.starts_with("20") && r.as_bytes()[10] == b'T',
            "cut line: {r:?}"
        );
        assert!(
            !r.contains(" chunks ") || r.contains("Progress") || r.contains("chunks="),
            "bar inside a log line: {r:?}"
        );
        assert!(!r.contains("(eta "), "bar inside a log line: {r:?}");
    }
    // And the finished bar was cleared: no bar is left on the screen
    assert!(!rows.iter().any(|r| r.contains("(eta ")), "{rows:#?}");
    assert_copied(&db);
}

#[test]
fn a_pivot_keeps_its_ledger_and_column_map_in_the_ledger_schema() {
    // Given the shipped pivot with ledger_schema = "etl_ops"
    let db = TestDb::new("ledger_schema_pivot");
    db.load_timeseries(2, 2, 60);
    let text = std::fs::read_to_string(repo().join("pipelines/ships-wide.toml")).unwrap()
        + "ledger_schema = \"etl_ops\"\n";
    let p = db.pipeline("wide.toml", &text);
    let p = p.to_str().unwrap();
    let namespaces = || {
        psql(
            &db.dst,
            "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace WHERE nspname LIKE 'etl%'",
        )
    };

    // When it runs, and runs again
    let out = db.etl(&["run", p]);
    assert_eq!(out.code, 0, "{out:?}");
    let again = db.etl(&["run", p]);
    assert_eq!(again.code, 0, "{again:?}");

    // Then etl's tables are in etl_ops, none in a schema etl, and the
    // second run skipped every chunk
    assert_eq!(namespaces(), "etl_ops");
    assert!(
        again
            .stdout
            .contains("skipped      2 chunks done by an earlier run"),
        "{again:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT (SELECT count(DISTINCT base_table) FROM etl_ops.column_map) || ' ' || \
             (SELECT count(*) FROM etl_ops.chunk_ledger WHERE status = 'done') || ' ' || \
             (SELECT count(*) FROM etl_ops.phase_log WHERE phase = 'create')"
        ),
        "2 2 2"
    );
    let status = db.etl(&["status", p]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("2 done"), "{status:?}");

    // And --recreate drops the tables it created and their rows in
    // etl_ops, then loads them again
    let recreate = db.etl(&["run", p, "--recreate", "--yes"]);
    assert_eq!(recreate.code, 0, "{recreate:?}");
    assert!(
        recreate.stdout.contains("Dropped 2 tables on "),
        "{recreate:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM etl_ops.chunk_ledger WHERE status = 'done'"
        ),
        "2"
    );

    // And a schema name that would need quoting is refused, naming the key
    let bad = db.pipeline("bad.toml", &text.replace("etl_ops", "Etl-Ops"));
    let bad = db.etl(&["validate", bad.to_str().unwrap()]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(
        bad.stderr.contains("sinks[0].ledger_schema")
            && bad.stderr.contains("use lower-case letters, digits and _"),
        "{bad:?}"
    );
}
