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
