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
