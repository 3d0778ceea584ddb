//! SQL stages on DataFusion between source and sinks: the shipped example
//! runs; bad SQL is caught by `validate`, unknown columns before any chunk,
//! and a failing expression fails only its chunks; verify runs the stages
//! again and compares their rows with the target's.

use crate::support::{psql, repo, TestDb};

#[test]
fn the_shipped_sql_stage_filters_and_reshapes() {
    // Given fleet data
    let db = TestDb::new("transforms_decimals");
    db.load_timeseries(2, 20, 1440);
    let p = repo().join("pipelines/ships-decimals.toml");

    // When the pipeline with a SQL stage runs
    let out = db.etl(&["run", p.to_str().unwrap()]);

    // Then the target holds exactly the stage's rows, in a table made from its schema
    assert_eq!(out.code, 0, "{out:?}");
    let expected = psql(
        &db.src,
        "SELECT count(*) || ' ' || md5(string_agg(ship_id || data_channel_id || created_time || double_v, '|' ORDER BY ship_id, created_time, data_channel_id)) \
         FROM tenant.tbl_data_timeseries WHERE value_format = 'Decimal' AND data_channel_id <> 'ch_0001'",
    );
    let got = psql(
        &db.dst,
        "SELECT count(*) || ' ' || md5(string_agg(ship_id || data_channel_id || created_time || value, '|' ORDER BY ship_id, created_time, data_channel_id)) \
         FROM tenant.decimal_readings",
    );
    assert_eq!(got, expected);
    assert_eq!(
        psql(&db.dst, "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'tenant.decimal_readings'::regclass AND attnum > 0"),
        "ship_id text, data_channel_id text, created_time timestamp with time zone, value double precision"
    );
}

fn pipeline(db: &TestDb, query: &str) -> String {
    let text = format!(
        "name = \"t\"\n[source]\ntype = \"postgres\"\nurl = \"${{ETL_SRC_URL}}\"\ntable = \"tenant.tbl_data_timeseries\"\n\
         [chunks]\ntime_column = \"created_time\"\nkey_column = \"ship_id\"\nretries = 0\n\
         [[transforms]]\ntype = \"sql\"\nquery = \"{query}\"\n\
         [[sinks]]\ntype = \"postgres\"\nurl = \"${{ETL_DST_URL}}\"\ntable = \"tenant.out\"\ncreate_table = true\n"
    );
    db.pipeline("t.toml", &text).to_str().unwrap().to_string()
}

#[test]
fn bad_sql_is_caught_by_validate_with_its_line() {
    let db = TestDb::new("transforms_bad_sql");
    let p = pipeline(&db, "SELEC * FROM input");
    let out = db.etl(&["validate", &p]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("line 12, transforms[0].query: is not valid SQL: "),
        "{out:?}"
    );
}

#[test]
fn an_unknown_column_stops_the_run_before_any_chunk() {
    let db = TestDb::new("transforms_unknown_column");
    db.load_timeseries(1, 1, 60);
    let p = pipeline(
        &db,
        "SELECT ship_id, created_time, no_such_column FROM input",
    );
    let out = db.etl(&["run", &p]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.starts_with("etl: transforms[0]: "), "{out:?}");
    assert!(out.stderr.contains("no_such_column"), "{out:?}");
}

#[test]
fn an_expression_that_fails_fails_its_chunks_only() {
    // Given a stage that divides by zero for ship 2 only
    let db = TestDb::new("transforms_runtime_error");
    db.load_timeseries(2, 2, 1440);
    let p = pipeline(
        &db,
        "SELECT ship_id, created_time, 100 / (CASE WHEN ship_id = 'IMO9900002' THEN 0 ELSE 1 END) AS x FROM input",
    );

    // When run
    let out = db.etl(&["run", &p]);

    // Then ship 2's chunk fails with the stage's error, ship 1's lands
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("1 done, 1 failed, of 2"), "{out:?}");
    assert!(
        out.stdout
            .contains("IMO9900002 [2025-06-01 00:00:00, 2025-06-02 00:00:00): transforms[0]: "),
        "{out:?}"
    );
    assert!(
        out.stdout.to_lowercase().contains("divide by zero"),
        "{out:?}"
    );
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM tenant.out"), "2880");
}

#[test]
fn verify_runs_the_stages_again_and_compares_their_rows_by_value() {
    // Given the shipped SQL-stage pipeline run over two ships' day
    let db = TestDb::new("transforms_verify");
    db.load_timeseries(2, 20, 1440);
    let p = repo().join("pipelines/ships-decimals.toml");
    let p = p.to_str().unwrap();
    assert_eq!(db.etl(&["run", p]).code, 0);

    // When verified, each chunk's stage output equals the target's rows
    let out = db.etl(&["verify", p]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(
            "Verified 2 chunks of pipeline ships-decimals against 1 sink: 2 equal, 0 differ"
        ),
        "{out:?}"
    );

    // When one value changes in the target, its chunk differs, same count
    psql(
        &db.dst,
        "UPDATE tenant.decimal_readings SET value = value + 1 \
         WHERE (ship_id, created_time, data_channel_id) IN \
           (SELECT ship_id, created_time, data_channel_id FROM tenant.decimal_readings WHERE ship_id = 'IMO9900002' LIMIT 1)",
    );
    let out = db.etl(&["verify", p]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("1 equal, 1 differ"), "{out:?}");
    let row = out.line("IMO9900002");
    assert!(row.contains("differs"), "{row}");
    let counts: Vec<&str> = row
        .split_whitespace()
        .filter(|w| w.chars().all(|c| c.is_ascii_digit() || c == ','))
        .collect();
    assert_eq!(counts.len(), 2, "{row}");
    assert_eq!(counts[0], counts[1], "{row}");
}
