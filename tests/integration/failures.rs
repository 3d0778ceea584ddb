//! A failed chunk never stops the run: it is rolled back, written to the
//! failed-chunk CSV, and `etl rerun` completes the table exactly.

use crate::support::{fingerprint, psql, TestDb};

const ORDER: &str = "ship_id, created_time, data_channel_id";

fn pipeline() -> String {
    r#"name = "fail"
[source]
type = "postgres"
url = "${ETL_SRC_URL}"
table = "tenant.tbl_data_timeseries"

[chunks]
time_column = "created_time"
key_column = "ship_id"
workers = 2
failed_csv = "out/failed_chunks.csv"

[[sinks]]
type = "postgres"
url = "${ETL_DST_URL}"
table = "tenant.tbl_data_timeseries"
"#
    .to_string()
}

#[test]
fn a_rejected_day_fails_alone_and_rerun_completes_the_table() {
    // Given 2 ships x 3 days, and a target whose CHECK constraint rejects 2025-06-02
    let db = TestDb::new("fail_rerun");
    db.load_timeseries(2, 5, 3 * 1440);
    psql(&db.dst, "CREATE SCHEMA tenant");
    psql(
        &db.dst,
        "CREATE TABLE tenant.tbl_data_timeseries (ship_id text NOT NULL, data_channel_id text NOT NULL, \
         created_time timestamptz NOT NULL, value_format text NOT NULL, bool_v boolean, str_v text, long_v bigint, \
         double_v double precision, PRIMARY KEY (ship_id, created_time, data_channel_id), \
         CONSTRAINT no_june_2 CHECK (created_time < '2025-06-02' OR created_time >= '2025-06-03'))",
    );
    let p = db.pipeline("fail.toml", &pipeline());

    // When the run meets it
    let out = db.etl(&["run", p.to_str().unwrap()]);

    // Then the run finishes with exit 1, the two chunks of that day failed and rolled back
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("4 done, 2 failed, of 6"), "{out:?}");
    assert!(
        out.stdout
            .contains("violates check constraint \"no_june_2\""),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("Fix the cause, then: etl rerun"),
        "{out:?}"
    );
    let csv = std::fs::read_to_string(db.dir.path().join("out/failed_chunks.csv")).unwrap();
    assert_eq!(
        csv,
        "IMO9900001,2025-06-02 00:00:00,2025-06-03 00:00:00\nIMO9900002,2025-06-02 00:00:00,2025-06-03 00:00:00\n"
    );
    assert_eq!(
        psql(&db.dst, "SELECT count(*) FROM tenant.tbl_data_timeseries"),
        (2 * 5 * 1440 * 2).to_string()
    );
    assert_eq!(
        psql(&db.dst, "SELECT count(*) FROM tenant.tbl_data_timeseries WHERE created_time >= '2025-06-02' AND created_time < '2025-06-03'"),
        "0"
    );

    // And status lists them with their errors
    let status = db.etl(&["status", p.to_str().unwrap()]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status
            .stdout
            .contains("IMO9900001        2        1        0        0"),
        "{status:?}"
    );
    assert!(status.stdout.contains("Failed chunks:\n    IMO9900001 [2025-06-02 00:00:00, 2025-06-03 00:00:00) after 1 attempt: "), "{status:?}");
    assert!(
        status
            .stdout
            .contains("violates check constraint \"no_june_2\""),
        "{status:?}"
    );

    // And a dry run lists exactly those chunks, filtered by key
    let dry = db.etl(&[
        "rerun",
        p.to_str().unwrap(),
        "out/failed_chunks.csv",
        "--dry-run",
        "--key",
        "IMO9900002",
    ]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert_eq!(dry.stdout, "Would rerun 1 chunk of pipeline fail:\n  IMO9900002 [2025-06-02 00:00:00, 2025-06-03 00:00:00)\n");

    // When the constraint is dropped and the failed chunks rerun
    psql(
        &db.dst,
        "ALTER TABLE tenant.tbl_data_timeseries DROP CONSTRAINT no_june_2",
    );
    let out = db.etl(&[
        "rerun",
        p.to_str().unwrap(),
        "out/failed_chunks.csv",
        "--delay-secs",
        "0.1",
    ]);

    // Then the target equals the source exactly
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("2 done, 0 failed, of 2"), "{out:?}");
    let source = fingerprint(&db.src, "tenant.tbl_data_timeseries", ORDER);
    assert!(source.starts_with("43200 "), "{source}");
    assert_eq!(
        fingerprint(&db.dst, "tenant.tbl_data_timeseries", ORDER),
        source
    );

    // And rerunning a completed chunk again does not duplicate it
    let again = db.etl(&["rerun", p.to_str().unwrap(), "out/failed_chunks.csv"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(
        fingerprint(&db.dst, "tenant.tbl_data_timeseries", ORDER),
        source
    );
}

#[test]
fn chunks_that_fail_again_go_to_a_new_csv() {
    // Given a user's CSV with a header, sub-second bounds, and a target that rejects everything
    let db = TestDb::new("fail_again");
    db.load_timeseries(1, 2, 1440);
    psql(&db.dst, "CREATE SCHEMA tenant");
    psql(
        &db.dst,
        "CREATE TABLE tenant.tbl_data_timeseries (ship_id text, data_channel_id text, created_time timestamptz, \
         value_format text, bool_v boolean, str_v text, long_v bigint, double_v double precision, CHECK (false))",
    );
    std::fs::write(
        db.dir.path().join("mine.csv"),
        "key,start,end\nIMO9900001,2025-06-01 14:40:40.388958,2025-06-01 20:40:40.388958\n",
    )
    .unwrap();
    let p = db.pipeline("fail.toml", &pipeline());

    // When rerun
    let out = db.etl(&["rerun", p.to_str().unwrap(), "mine.csv"]);

    // Then it fails again, and the new CSV's path is printed with the same chunk in it
    assert_eq!(out.code, 1, "{out:?}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Failed chunks (1), written to "))
        .expect("path printed");
    let path = line
        .trim_start_matches("Failed chunks (1), written to ")
        .trim_end_matches(':');
    assert!(path.contains("mine.rerun-"), "{path}");
    assert_eq!(
        std::fs::read_to_string(db.dir.path().join(path)).unwrap(),
        "IMO9900001,2025-06-01 14:40:40.388958,2025-06-01 20:40:40.388958\n"
    );
}

#[test]
fn a_bad_csv_line_is_named() {
    let db = TestDb::new("fail_bad_csv");
    std::fs::write(
        db.dir.path().join("bad.csv"),
        "IMO1,2025-06-01,2025-06-02\nIMO1,2025-06-02\n",
    )
    .unwrap();
    let p = db.pipeline("fail.toml", &pipeline());
    let out = db.etl(&["rerun", p.to_str().unwrap(), "bad.csv", "--dry-run"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stderr,
        "etl: bad.csv, line 2: expected 3 fields (key,start,end), found 2\n"
    );
}

#[test]
fn any_key_is_safe_in_filters_table_names_csv_and_rerun() {
    // Given keys with quotes, a comma, a SQL fragment and unicode, one table per key
    let db = TestDb::new("fail_odd_keys");
    psql(
        &db.src,
        "CREATE TABLE s (k text, t timestamptz, v int); \
         INSERT INTO s SELECT k, '2025-06-01'::timestamptz + i * interval '1 hour', i \
         FROM unnest(ARRAY['O''Neil; DROP TABLE s; --', 'a,\"b\"', '선박 7', 'plain']) k, generate_series(0, 47) i",
    );
    // (the target for 'plain' rejects everything, so its chunks fail)
    psql(
        &db.dst,
        "CREATE SCHEMA w; CREATE TABLE w.\"t_plain\" (k text, t timestamptz, v int CHECK (v < 0))",
    );
    let p = db.pipeline(
        "keys.toml",
        "name = \"keys\"\n[source]\ntype = \"postgres\"\nurl = \"${ETL_SRC_URL}\"\ntable = \"s\"\n\
         [chunks]\ntime_column = \"t\"\nkey_column = \"k\"\nretries = 0\n\
         [[sinks]]\ntype = \"postgres\"\nurl = \"${ETL_DST_URL}\"\ntable = \"w.t_{key}\"\ncreate_table = true\n",
    );

    // When run
    let out = db.etl(&["run", p.to_str().unwrap()]);

    // Then each odd key has its own table with its 48 rows, and the failed key's chunks are in the CSV
    assert_eq!(out.code, 1, "{out:?}");
    for (table, key) in [
        ("t_O'Neil; DROP TABLE s; --", "O''Neil; DROP TABLE s; --"),
        ("t_a,\"b\"", "a,\"b\""),
        ("t_선박 7", "선박 7"),
    ] {
        let quoted = table.replace('"', "\"\"");
        assert_eq!(
            psql(
                &db.dst,
                &format!("SELECT count(*) FROM w.\"{quoted}\" WHERE k = '{key}'")
            ),
            "48",
            "{table}"
        );
    }
    assert_eq!(
        psql(&db.src, "SELECT count(*) FROM s"),
        "192",
        "the source is untouched"
    );
    let csv = std::fs::read_to_string(db.dir.path().join("failed_chunks.csv")).unwrap();
    assert_eq!(csv, "plain,2025-06-01 00:00:00,2025-06-02 00:00:00\nplain,2025-06-02 00:00:00,2025-06-03 00:00:00\n");

    // And a rerun of a CSV naming the odd keys reads them back exactly
    std::fs::write(
        db.dir.path().join("odd.csv"),
        "\"O'Neil; DROP TABLE s; --\",2025-06-01,2025-06-02\n\"a,\"\"b\"\"\",2025-06-01,2025-06-02\n",
    )
    .unwrap();
    let rerun = db.etl(&["rerun", p.to_str().unwrap(), "odd.csv"]);
    assert_eq!(rerun.code, 0, "{rerun:?}");
    assert!(rerun.stdout.contains("2 done, 0 failed, of 2"), "{rerun:?}");
    assert_eq!(
        psql(&db.dst, "SELECT count(*) FROM w.\"t_a,\"\"b\"\"\""),
        "48",
        "rerun replaced, not doubled"
    );
}
