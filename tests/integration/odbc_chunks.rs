//! ODBC sources through the chunk runner, like every other source: time
//! windows per key on a SQLite table through the SQLite3 ODBC driver, with
//! a SQL stage, an upsert into PostgreSQL and a Parquet sink in one
//! pipeline; a chunk failed by a CHECK constraint rerun from the CSV; a
//! run killed with SIGKILL resumed exactly; and a CP949 EAV table pivoted
//! into wide tables through psqlODBC with a UHC client encoding.

use std::path::Path;

use crate::odbc::psqlodbc_uhc;
use crate::support::{psql, spawn_etl, sqlite, wait_for_line, TestDb};

/// 3 ships x 3 days of readings every 20 minutes (a reading on each
/// midnight, where windows meet), values exact in binary, Korean notes.
fn readings(db: &TestDb) -> std::path::PathBuf {
    let file = db.dir.path().join("readings.sqlite");
    sqlite(
        &file,
        "CREATE TABLE readings (ship_id INTEGER NOT NULL, created_time TIMESTAMP NOT NULL, value REAL, note TEXT);
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 215)
         INSERT INTO readings
           SELECT s, datetime('2025-06-01 00:00:00', '+' || (i * 20) || ' minutes'), (i % 17) * 0.25 + s,
                  CASE WHEN i % 5 = 0 THEN '메모 ' || i ELSE NULL END
           FROM n, (SELECT 1 AS s UNION ALL SELECT 2 UNION ALL SELECT 3);",
    );
    file
}

fn sqlite_connection(file: &Path) -> String {
    format!("Driver={{SQLite3}};Database={};StepAPI=1", file.display())
}

/// The pipeline of the issue: windows of a day per ship, a SQL stage, an
/// upsert into PostgreSQL and a Parquet staging sink.
fn windowed_pipeline(db: &TestDb, file: &Path) -> String {
    let text = format!(
        r#"name = "odbc-windows"
[source]
type = "odbc"
connection_string = "{}"
tables = ["readings"]
batch_rows = 20

[chunks]
time_column = "created_time"
interval = "1d"
key_column = "ship_id"
workers = 2
retries = 0

[[transforms]]
type = "sql"
query = "SELECT ship_id, created_time, value * 2 AS doubled, note FROM input"

[[sinks]]
type = "postgres"
url = "${{ETL_DST_URL}}"
table = "public.{{table}}"
mode = "upsert"
primary_key = ["ship_id", "created_time"]
create_table = true

[[sinks]]
type = "parquet"
path = "staging/{{key}}/{{start}}.parquet"
"#,
        sqlite_connection(file)
    );
    db.pipeline("windows.toml", &text)
        .to_str()
        .unwrap()
        .to_string()
}

/// The source's rows as the stage makes them, one line each, in order.
fn expected_rows(file: &Path) -> String {
    sqlite(
        file,
        "SELECT ship_id || '|' || created_time || '|' || printf('%g', value * 2) || '|' || coalesce(note, '') \
         FROM readings ORDER BY ship_id, created_time",
    )
}

/// The same rows, or the first line where they part.
fn assert_same_rows(got: &str, want: &str) {
    let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
    if let Some(i) = (0..g.len().max(w.len())).find(|&i| g.get(i) != w.get(i)) {
        panic!(
            "{} target rows, {} source rows; first difference at line {}: target {:?}, source {:?}",
            g.len(),
            w.len(),
            i + 1,
            g.get(i),
            w.get(i)
        );
    }
}

fn target_rows(db: &TestDb) -> String {
    psql(
        &db.dst,
        "SELECT string_agg(ship_id || '|' || created_time || '|' || doubled || '|' || coalesce(note, ''), E'\\n' \
         ORDER BY ship_id, created_time) FROM readings",
    )
}

/// Rows in the Parquet files, read back by pyarrow.
fn parquet_rows(dir: &Path) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, pyarrow.dataset as ds; t = ds.dataset(sys.argv[1], format='parquet').to_table(); \
             print(t.num_rows, round(sum(v for v in t.column('doubled').to_pylist()), 2), len(set(t.column('ship_id').to_pylist())))",
            dir.join("staging").to_str().unwrap(),
        ])
        .output()
        .expect("python3 with pyarrow");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn sqlite_windows_per_key_through_a_stage_into_upsert_and_parquet_and_a_failed_chunk_reruns() {
    // Given the readings, and a target whose CHECK refuses one value of
    // ship 2 on 2025-06-02 (so that chunk fails, and only it)
    let db = TestDb::new("odbc_windows");
    let file = readings(&db);
    sqlite(
        &file,
        "UPDATE readings SET value = 500 WHERE ship_id = 2 AND created_time = '2025-06-02 12:00:00'",
    );
    psql(
        &db.dst,
        "CREATE TABLE readings (ship_id bigint, created_time timestamp, doubled double precision, note text, \
         PRIMARY KEY (ship_id, created_time), CONSTRAINT small CHECK (doubled < 900))",
    );
    let p = windowed_pipeline(&db, &file);

    // When planned: 9 chunks (3 ships x 3 days), every row in one
    let plan = db.etl(&["plan", &p]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout
            .contains("Pipeline odbc-windows: 9 chunks, 648 rows"),
        "{plan:?}"
    );
    assert!(
        plan.stdout
            .contains("2    2025-06-02 00:00:00         2025-06-03 00:00:00                   72"),
        "{plan:?}"
    );

    // When run
    let out = db.etl(&["run", &p]);

    // Then that one chunk fails naming the constraint, goes to the CSV,
    // and every other chunk lands
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("8 done, 1 failed, of 9"), "{out:?}");
    assert!(out.stdout.contains("\"small\""), "{out:?}");
    let csv = std::fs::read_to_string(db.dir.path().join("failed_chunks.csv")).unwrap();
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        vec!["2,2025-06-02 00:00:00,2025-06-03 00:00:00"],
        "{csv}"
    );
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM readings"), "576");

    // When the constraint is fixed and the CSV rerun
    psql(&db.dst, "ALTER TABLE readings DROP CONSTRAINT small");
    let rerun = db.etl(&["rerun", &p, "failed_chunks.csv"]);
    assert_eq!(rerun.code, 0, "{rerun:?}");

    // Then the target equals the source through the stage, row for row
    // (Korean notes, the midnight readings, the 500 included), and the
    // Parquet files hold every row once
    assert_same_rows(&target_rows(&db), &expected_rows(&file));
    let doubled_sum = sqlite(&file, "SELECT round(sum(value * 2), 2) FROM readings");
    assert_eq!(parquet_rows(db.dir.path()), format!("648 {doubled_sum} 3"));

    // When the source changes a value and the run is restarted
    sqlite(
        &file,
        "UPDATE readings SET note = '바뀜' WHERE ship_id = 3 AND created_time = '2025-06-03 00:00:00'",
    );
    let again = db.etl(&["run", &p]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("0 done, 0 failed, of 0"), "{again:?}");
    let restart = db.etl(&["run", "--restart", &p]);
    assert_eq!(restart.code, 0, "{restart:?}");

    // Then upsert merged it: the rows equal the source's, no duplicates
    assert_same_rows(&target_rows(&db), &expected_rows(&file));
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM readings"), "648");
}

#[test]
fn a_killed_odbc_run_resumes_exactly() {
    // Given the readings, one chunk per ship and day
    let db = TestDb::new("odbc_windows_kill");
    let file = readings(&db);
    let p = windowed_pipeline(&db, &file);

    // When a run is killed with SIGKILL mid-chunk, after 3 chunks committed
    let (mut child, lines) = spawn_etl(
        &db,
        &["run", "--workers", "1", &p],
        &[("ETL_TEST_PAUSE_AT", "write:4")],
    );
    wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    child.kill().expect("SIGKILL etl");
    child.wait().unwrap();
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM etl.chunk_ledger WHERE status = 'done'"
        ),
        "3"
    );
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM readings"), "216");

    // When run again
    let out = db.etl(&["run", &p]);

    // Then it skips the committed chunks and the target equals the source
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("6 done, 0 failed, of 6"), "{out:?}");
    assert!(out.stdout.contains("skipped      3 chunks"), "{out:?}");
    assert_same_rows(&target_rows(&db), &expected_rows(&file));
}

#[test]
fn a_cp949_eav_table_pivots_into_wide_tables_through_psqlodbc() {
    // Given narrow readings with Korean channel names in a PostgreSQL
    // database, read through the ANSI driver as UHC (CP949 bytes)
    let db = TestDb::new("odbc_pivot");
    psql(
        &db.src,
        "CREATE TABLE narrow (ship_id text, data_channel_id text, created_time timestamp, value_format text, \
                              bool_v boolean, str_v text, long_v bigint, double_v double precision); \
         INSERT INTO narrow \
           SELECT s, c.name, t, c.fmt, \
                  CASE c.fmt WHEN 'Boolean' THEN n % 3 = 0 END, \
                  CASE c.fmt WHEN 'String' THEN '상태 ' || (n % 4) END, \
                  CASE c.fmt WHEN 'Integer' THEN n * 7 END, \
                  CASE c.fmt WHEN 'Decimal' THEN n / 4.0 END \
           FROM unnest(ARRAY['IMO1', 'IMO2']) AS s, \
                generate_series(0, 143) AS n, \
                LATERAL (SELECT timestamp '2025-06-01' + n * interval '30 minutes' AS t) x, \
                (VALUES ('엔진 회전수', 'Decimal'), ('똠양꿍 온도', 'Integer'), ('펌프', 'Boolean'), ('상태', 'String')) AS c(name, fmt);",
    );
    // BoolsAsChar=0: psqlODBC hands booleans over as text otherwise.
    let connection = format!("{};BoolsAsChar=0", psqlodbc_uhc(&db.src));
    let text = format!(
        r#"name = "odbc-pivot"
[source]
type = "odbc"
connection_string = "{connection}"
query = "SELECT * FROM narrow"
encoding = "cp949"

[chunks]
time_column = "created_time"
interval = "1d"
key_column = "ship_id"
workers = 2

[[transforms]]
type = "pivot"
index = ["created_time"]
name_column = "data_channel_id"
format_column = "value_format"
values = {{ Decimal = "double_v", Integer = "long_v", String = "str_v", Boolean = "bool_v" }}

[[sinks]]
type = "postgres"
url = "${{ETL_SRC_URL}}"
table = "wide.t_{{key}}"
create_table = true
"#
    );
    let p = db.pipeline("pivot.toml", &text);

    // When run
    let out = db.etl(&["run", p.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("6 done, 0 failed, of 6"), "{out:?}");

    // Then each ship's wide table equals the in-database pivot, cell for cell
    for ship in ["IMO1", "IMO2"] {
        let column = |channel: &str| {
            psql(
                &db.src,
                &format!(
                    "SELECT quote_ident(column_name) FROM etl.column_map WHERE base_table = '\"wide\".\"t_{ship}\"' AND channel = '{channel}'"
                ),
            )
        };
        let (rpm, temp, pump, state) = (
            column("엔진 회전수"),
            column("똠양꿍 온도"),
            column("펌프"),
            column("상태"),
        );
        assert!(!rpm.is_empty() && !temp.is_empty() && !pump.is_empty() && !state.is_empty());
        let reference = format!(
            "SELECT created_time, \
                    max(double_v) FILTER (WHERE data_channel_id = '엔진 회전수') AS a, \
                    max(long_v) FILTER (WHERE data_channel_id = '똠양꿍 온도') AS b, \
                    bool_or(bool_v) FILTER (WHERE data_channel_id = '펌프') AS c, \
                    max(str_v) FILTER (WHERE data_channel_id = '상태') AS d \
             FROM narrow WHERE ship_id = '{ship}' GROUP BY created_time"
        );
        let wide =
            format!("SELECT created_time, {rpm}, {temp}, {pump}, {state} FROM wide.\"t_{ship}\"");
        assert_eq!(
            psql(
                &db.src,
                &format!(
                    "SELECT (SELECT count(*) FROM (({reference}) EXCEPT ALL ({wide})) x) || ' ' || \
                            (SELECT count(*) FROM (({wide}) EXCEPT ALL ({reference})) x) || ' ' || \
                            (SELECT count(*) FROM ({wide}) w)"
                )
            ),
            "0 0 144",
            "{ship}"
        );
    }
}

#[test]
fn a_migration_killed_mid_table_resumes_with_the_ranges_not_done() {
    // Given a table of 40,000 rows keyed by an integer, migrated in ranges
    // of 10,000 rows, and a child table referencing it
    let db = TestDb::new("odbc_ranges_kill");
    let file = db.dir.path().join("big.sqlite");
    sqlite(
        &file,
        "CREATE TABLE big (id INTEGER PRIMARY KEY, s TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
         INSERT INTO big SELECT i, 'row ' || i FROM n;
         CREATE TABLE child (id INTEGER PRIMARY KEY, big_id INTEGER REFERENCES big(id));
         INSERT INTO child VALUES (1, 7), (2, 39999);",
    );
    let text = format!(
        r#"name = "ranges"
[source]
type = "odbc"
connection_string = "{}"
tables = ["*"]
batch_rows = 1000
[chunks]
range_rows = 10000
[[sinks]]
type = "postgres"
url = "${{ETL_DST_URL}}"
table = "public.{{table}}"
create_table = true
"#,
        sqlite_connection(&file)
    );
    let p = db.pipeline("ranges.toml", &text);
    let p = p.to_str().unwrap();

    // When a run on one worker is killed with SIGKILL in the middle of the
    // third range of the table, two ranges committed
    let (mut child, lines) = spawn_etl(
        &db,
        &["run", "--workers", "1", p],
        &[("ETL_TEST_PAUSE_AT", "write:3")],
    );
    wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    child.kill().expect("SIGKILL etl");
    child.wait().unwrap();
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM big"), "20000");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT string_agg(chunk_key || ' ' || (extract(epoch FROM start_at) * 1000000)::bigint || ' ' || status, ', ' ORDER BY start_at) \
             FROM etl.chunk_ledger WHERE status = 'done'"
        ),
        "big -200000000000000000 done, big 10001 done"
    );

    // When run again
    let out = db.etl(&["run", p]);

    // Then only the ranges not done run, the table is exact, and the
    // constraints follow
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("3 done, 0 failed, of 3"), "{out:?}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || sum(id) FROM big"
        ),
        "40000 40000 800020000"
    );
    assert!(
        out.stdout
            .contains("2 of 2 tables have the source's row count; 1 foreign keys, 0 orphan rows"),
        "{out:?}"
    );
    // And the phases after the data are recorded, as status shows
    let status = db.etl(&["status", p]);
    assert_eq!(status.code, 0, "{status:?}");
    for expected in ["constraints: 4 done, 0 failed", "verify: 3 done, 0 failed"] {
        assert!(status.stdout.contains(expected), "{expected}\n{status:?}");
    }

    // And etl verify checksums both tables value by value (the ranges'
    // rows, read again, summed beside the whole table), then finds one
    // value changed in the target
    let verify = db.etl(&["verify", p]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert_eq!(
        verify.stdout.matches("equal (checksum)").count(),
        2,
        "{verify:?}"
    );
    psql(&db.dst, "UPDATE big SET s = 'row x' WHERE id = 25000");
    let verify = db.etl(&["verify", p]);
    assert_eq!(verify.code, 1, "{verify:?}");
    let line = verify.line("big ");
    assert!(line.ends_with("differs (checksum)"), "{line}");
}

#[test]
fn verify_compares_odbc_windows_value_by_value() {
    // Given the readings loaded in windows of a day per ship, no stage
    let db = TestDb::new("odbc_windows_verify");
    let file = readings(&db);
    let text = format!(
        r#"name = "odbc-verify"
[source]
type = "odbc"
connection_string = "{}"
query = "SELECT ship_id, created_time, value FROM readings"
[chunks]
time_column = "created_time"
interval = "1d"
key_column = "ship_id"
[[sinks]]
type = "postgres"
url = "${{ETL_DST_URL}}"
table = "public.readings"
create_table = true
"#,
        sqlite_connection(&file)
    );
    let p = db.pipeline("verify.toml", &text);
    let p = p.to_str().unwrap();
    let out = db.etl(&["run", p]);
    assert_eq!(out.code, 0, "{out:?}");

    // When verified, every chunk's rows are equal
    let verify = db.etl(&["verify", p]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert!(
        verify.stdout.contains(
            "Verified 9 chunks of pipeline odbc-verify against 1 sink: 9 equal, 0 differ"
        ),
        "{verify:?}"
    );

    // And the target, created without an index, is read once for all nine
    // chunks (not once per chunk), each row hashed into its chunk's sum
    let logged = crate::support::etl_in(
        db.dir.path(),
        &["verify", p],
        &[
            ("ETL_DST_URL", db.dst.as_str()),
            ("RUST_LOG", "etl_sink=debug"),
        ],
    );
    assert_eq!(logged.code, 0, "{logged:?}");
    assert!(logged.stdout.contains("9 equal, 0 differ"), "{logged:?}");
    assert_eq!(
        logged
            .stderr
            .matches("No index finds one chunk's rows: the table is read once for all of them.")
            .count(),
        1,
        "{logged:?}"
    );

    // And --quick agrees from the checksums the chunks recorded as they
    // committed (the batches as the table stores them)
    let quick = db.etl(&["verify", "--quick", p]);
    assert_eq!(quick.code, 0, "{quick:?}");
    assert!(quick.stdout.contains("9 equal, 0 differ"), "{quick:?}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FILTER (WHERE checksum LIKE 'rows1 72 %') FROM etl.chunk_ledger"
        ),
        "9"
    );

    // When one value changes in the target (the count stays), verify
    // names its chunk: the rows are compared by value, not counted
    psql(
        &db.dst,
        "UPDATE readings SET value = value + 0.001 WHERE ship_id = 2 AND created_time = '2025-06-01 05:00:00'",
    );
    for how in [&["verify", p][..], &["verify", "--quick", p]] {
        let verify = db.etl(how);
        assert_eq!(verify.code, 1, "{verify:?}");
        assert!(verify.stdout.contains("8 equal, 1 differ"), "{verify:?}");
        assert!(
            verify.stdout.contains("2    2025-06-01 00:00:00         2025-06-02 00:00:00                   72            72  differs"),
            "{verify:?}"
        );
    }

    // When a target row goes missing, verify names its chunk too
    psql(
        &db.dst,
        "DELETE FROM readings WHERE ship_id = 3 AND created_time = '2025-06-02 00:00:00'",
    );
    let verify = db.etl(&["verify", p]);
    assert_eq!(verify.code, 1, "{verify:?}");
    assert!(verify.stdout.contains("7 equal, 2 differ"), "{verify:?}");
    assert!(
        verify.stdout.contains("3    2025-06-02 00:00:00         2025-06-03 00:00:00                   72            71  differs"),
        "{verify:?}"
    );
}

#[test]
fn long_text_values_grow_the_fetch_buffers_and_the_long_value_rules_hold() {
    // Given TEXT declared without a length: short values, and two long
    // ones (5,000 and 30,000 bytes, Korean) far into the table
    let db = TestDb::new("odbc_long_text");
    let file = db.dir.path().join("notes.sqlite");
    sqlite(
        &file,
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO notes SELECT i, 'short ' || i FROM n;
         UPDATE notes SET body = replace(hex(zeroblob(2500)), '00', 'ab') WHERE id = 1500;
         UPDATE notes SET body = replace(hex(zeroblob(5000)), '00', '가나') WHERE id = 2999;",
    );
    let text = |extra: &str| {
        format!(
            "name = \"long\"\n[source]\ntype = \"odbc\"\nconnection_string = \"{}\"\ntables = [\"notes\"]\nbatch_rows = 100\n{extra}\
             [chunks]\nretries = 0\n[[sinks]]\ntype = \"postgres\"\nurl = \"${{ETL_DST_URL}}\"\ntable = \"public.{{table}}\"\ncreate_table = true\n",
            sqlite_connection(&file)
        )
    };
    let p = db.pipeline("long.toml", &text(""));

    // When migrated with the default max_text_bytes
    let out = db.etl(&["run", "-v", p.to_str().unwrap()]);

    // Then the buffers start small, grow when the long values come, and
    // every value lands whole
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("is read again with larger buffers"),
        "{out:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) || ' ' || count(*) FILTER (WHERE body = 'short ' || id) || ' ' || \
             (SELECT octet_length(body) FROM notes WHERE id = 1500) || ' ' || \
             (SELECT octet_length(body) || ' ' || left(body, 4) FROM notes WHERE id = 2999) FROM notes"
        ),
        "3000 2998 5000 30000 가나가나"
    );

    // When a value is over max_text_bytes: an error naming the chunk (the
    // table is read in two ranges of its key), column and row within the
    // chunk, or with truncate, cut on a character and counted, as before
    std::fs::write(&p, text("max_text_bytes = 20000\n")).unwrap();
    let out = db.etl(&["run", "--restart", p.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("notes [1501, infinity): source table \"notes\": column \"body\": row 1499 holds a value longer than max_text_bytes = 20000"),
        "{out:?}"
    );
    std::fs::write(
        &p,
        text("max_text_bytes = 20000\non_long_value = \"truncate\"\n"),
    )
    .unwrap();
    let out = db.etl(&["run", "--restart", p.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("truncated    notes.body 1 (first at row 1499)"),
        "{out:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT octet_length(body) FROM notes WHERE id = 2999"
        ),
        "19998"
    );
}

#[test]
fn a_sqlite_table_without_an_integer_key_is_cut_by_its_rowid() {
    // Given a table keyed by text (TEXT declared without a length) and a
    // WITHOUT ROWID table
    let db = TestDb::new("odbc_rowid");
    let file = db.dir.path().join("codes.sqlite");
    sqlite(
        &file,
        "CREATE TABLE codes (code TEXT PRIMARY KEY, label TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO codes SELECT printf('C%05d', i), '이름 ' || i FROM n;
         CREATE TABLE tags (tag TEXT PRIMARY KEY, n INTEGER) WITHOUT ROWID;
         INSERT INTO tags VALUES ('a', 1), ('b', 2);",
    );
    let text = format!(
        "name = \"rowid\"\n[source]\ntype = \"odbc\"\nconnection_string = \"{}\"\ntables = [\"*\"]\nbatch_rows = 100\n\
         [chunks]\nrange_rows = 1000\n[[sinks]]\ntype = \"postgres\"\nurl = \"${{ETL_DST_URL}}\"\ntable = \"public.{{table}}\"\ncreate_table = true\n",
        sqlite_connection(&file)
    );
    let p = db.pipeline("rowid.toml", &text);
    let p = p.to_str().unwrap();

    // When planned: five ranges of the rowid; the other table whole
    let plan = db.etl(&["plan", p]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.contains(
            "codes -> \"public\".\"codes\": 5,000 rows, 5 chunks by ranges of \"rowid\": [-infinity, 1001), [1001, 2001)"
        ),
        "{plan:?}"
    );
    assert!(
        plan.stdout
            .contains("tags -> \"public\".\"tags\": 2 rows\n"),
        "{plan:?}"
    );

    // When run with --ddl-only: both tables are created, empty, without
    // their keys (those come after the data)
    let ddl = db.etl(&["run", p, "--ddl-only"]);
    assert_eq!(ddl.code, 0, "{ddl:?}");
    assert!(
        ddl.stdout
            .contains("2 tables created; nothing loaded (--ddl-only)"),
        "{ddl:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT (SELECT count(*) FROM codes) || ' ' || (SELECT count(*) FROM tags) || ' ' || \
             (SELECT count(*) FROM pg_constraint WHERE contype = 'p' AND conrelid IN ('codes'::regclass, 'tags'::regclass))"
        ),
        "0 0 0"
    );

    // When run, every row lands once, with its primary key after the data
    let out = db.etl(&["run", p]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("6 done, 0 failed, of 6"), "{out:?}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) || ' ' || count(DISTINCT code) || ' ' || min(code) || ' ' || max(label) FROM codes"
        ),
        "5000 5000 C00001 이름 999"
    );
    assert!(
        out.stdout
            .contains("2 of 2 tables have the source's row count"),
        "{out:?}"
    );

    // When run again with --restart, the tables load again, once: the
    // ranges of a rowid (no column to delete them by) start from an
    // emptied table, not from ranges still marked loaded
    let again = db.etl(&["run", p, "--restart"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) || ' ' || count(DISTINCT code) FROM codes"
        ),
        "5000 5000"
    );
}

#[test]
fn tables_keyed_by_text_dates_or_times_are_cut_into_ranges() {
    // Given a PostgreSQL source read through psqlODBC with tables keyed by
    // text (cases, signs and Korean: the source's collation orders them,
    // not etl), by date and by timestamp, 1,000 rows each
    let db = TestDb::new("odbc_key_kinds");
    psql(
        &db.src,
        "CREATE TABLE codes (code text PRIMARY KEY, n int); \
         INSERT INTO codes SELECT (ARRAY['a', 'B', '가', 'z', '_'])[1 + i % 5] || lpad(i::text, 4, '0'), i \
           FROM generate_series(1, 1000) i; \
         CREATE TABLE days (d date PRIMARY KEY, n int); \
         INSERT INTO days SELECT date '2024-01-01' + i, i FROM generate_series(0, 999) i; \
         CREATE TABLE stamps (at timestamp PRIMARY KEY, n int); \
         INSERT INTO stamps SELECT timestamp '2025-01-01' + i * interval '61.5 seconds', i FROM generate_series(0, 999) i;",
    );
    // and a target whose CHECK refuses one row of the text-keyed table
    psql(
        &db.dst,
        "CREATE TABLE codes (code text, n int, CONSTRAINT not_777 CHECK (n <> 777))",
    );
    let text = format!(
        "name = \"kinds\"\n[source]\ntype = \"odbc\"\nconnection_string = \"{}\"\ntables = [\"*\"]\nencoding = \"cp949\"\nbatch_rows = 100\n\
         [chunks]\nrange_rows = 250\n[[sinks]]\ntype = \"postgres\"\nurl = \"${{ETL_DST_URL}}\"\ntable = \"public.{{table}}\"\ncreate_table = true\n",
        psqlodbc_uhc(&db.src)
    );
    let p = db.pipeline("kinds.toml", &text);
    let p = p.to_str().unwrap();

    // When planned: four ranges each, dates in whole days, text cut at
    // values the driver's order gives
    let plan = db.etl(&["plan", p]);
    assert_eq!(plan.code, 0, "{plan:?}");
    for expected in [
        "days -> \"public\".\"days\": 1,000 rows, 4 chunks by ranges of \"d\": [-infinity, 2024-09-07), [2024-09-07, 2025-05-15), [2025-05-15, 2026-01-20), [2026-01-20, infinity)\n",
        "stamps -> \"public\".\"stamps\": 1,000 rows, 4 chunks by ranges of \"at\": [-infinity, 2025-01-01 05:00:00), [2025-01-01 05:00:00, 2025-01-01 10:00:00), [2025-01-01 10:00:00, 2025-01-01 15:00:00), [2025-01-01 15:00:00, infinity)\n",
        "codes -> \"public\".\"codes\": 1,000 rows, 4 chunks by ranges of \"code\": below \"",
    ] {
        assert!(plan.stdout.contains(expected), "{expected}\n{plan:?}");
    }

    // When run: the part holding n = 777 fails alone, named as a part
    let out = db.etl(&["run", p]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("11 done, 1 failed, of 12"), "{out:?}");
    let csv = std::fs::read_to_string(db.dir.path().join("failed_chunks.csv")).unwrap();
    assert!(
        csv.starts_with("codes,part ") && csv.lines().count() == 1,
        "{csv}"
    );

    // When the check is dropped and the part rerun from the CSV
    psql(&db.dst, "ALTER TABLE codes DROP CONSTRAINT not_777");
    let rerun = db.etl(&["rerun", p, "failed_chunks.csv"]);
    assert_eq!(rerun.code, 0, "{rerun:?}");

    // Then every table equals its source, row for row
    for (table, rows) in [
        ("codes", "string_agg(code || '=' || n, ',' ORDER BY code)"),
        ("days", "string_agg(d || '=' || n, ',' ORDER BY d)"),
        ("stamps", "string_agg(at || '=' || n, ',' ORDER BY at)"),
    ] {
        let sql = format!("SELECT count(*) || ' ' || md5({rows}) FROM {table}");
        assert_eq!(psql(&db.dst, &sql), psql(&db.src, &sql), "{table}");
    }
    assert!(
        rerun
            .stdout
            .contains("3 of 3 tables have the source's row count"),
        "{rerun:?}"
    );

    // And the cuts are kept in the target: a run reads them back (a
    // tampered record is refused, naming where it is and what to do)
    psql(
        &db.dst,
        "UPDATE etl.phase_log SET statement = 'x' WHERE phase = 'discover' AND item = 'cuts of codes'",
    );
    let tampered = db.etl(&["run", p]);
    assert_eq!(tampered.code, 2, "{tampered:?}");
    assert!(
        tampered.stderr.contains(
            "etl.phase_log holds the cuts of \"codes\" as something other than a JSON list of text"
        ),
        "{tampered:?}"
    );
}

#[test]
fn progress_counts_rows_inside_a_running_chunk() {
    // Given one table read as one chunk of 20,000 rows in batches of 1,000
    let db = TestDb::new("odbc_progress");
    let file = db.dir.path().join("p.sqlite");
    sqlite(
        &file,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO t SELECT i, 'row ' || i FROM n;",
    );
    let text = format!(
        "name = \"progress\"\n[source]\ntype = \"odbc\"\nconnection_string = \"{}\"\ntables = [\"t\"]\nbatch_rows = 1000\nreaders = 1\n\
         [chunks]\nworkers = 1\n[[sinks]]\ntype = \"postgres\"\nurl = \"${{ETL_DST_URL}}\"\ntable = \"public.{{table}}\"\ncreate_table = true\n",
        sqlite_connection(&file)
    );
    let p = db.pipeline("progress.toml", &text);
    // When run with progress logged at every change
    let out = crate::support::etl_in(
        db.dir.path(),
        &["run", p.to_str().unwrap()],
        &[("ETL_DST_URL", &db.dst), ("ETL_PROGRESS_SECS", "0")],
    );
    // Then the log counts rows before the chunk ends
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("Progress: 0/1 chunks, 10,000 rows"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("Progress: 1/1 chunks, 20,000 rows"),
        "{out:?}"
    );
}

#[test]
fn follow_keeps_loading_an_odbc_source_and_stops_on_ctrl_c() {
    // Given the readings behind a follow run of the issue's pipeline that
    // has finished its backfill
    let db = TestDb::new("odbc_follow");
    let file = readings(&db);
    let p = windowed_pipeline(&db, &file);
    let (mut child, _log) = spawn_etl(
        &db,
        &[
            "run",
            "--follow",
            "--interval-secs",
            "1",
            "--lag-secs",
            "3600",
            &p,
        ],
        &[],
    );
    let count = || match psql(&db.dst, "SELECT to_regclass('public.readings') IS NOT NULL").as_str()
    {
        "t" => psql(&db.dst, "SELECT count(*) FROM readings"),
        _ => "0".to_string(),
    };
    let eventually = |what: &str, rows: &str| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while count() != rows {
            assert!(
                std::time::Instant::now() < until,
                "timed out waiting for {what}: {} rows",
                count()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    eventually("the backfill", "648");

    // When new rows arrive (SQLite's clock is UTC, as etl's windows), then
    // a late row for a minute already loaded
    sqlite(
        &file,
        "INSERT INTO readings VALUES (1, datetime('now', '-1 minute'), 1.5, '새 값'), (4, datetime('now', '-1 minute'), 2.5, NULL);",
    );
    eventually("the new rows", "650");
    sqlite(
        &file,
        "INSERT INTO readings VALUES (1, datetime('now', '-10 minutes'), 7, NULL);",
    );
    eventually("the late row", "651");

    // And Ctrl-C is pressed
    let (code, stdout) = crate::support::stop(&mut child);

    // Then it stops with exit code 0 and the target equals the source
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("Follow stopped (Ctrl-C or SIGTERM); cutoff "),
        "{stdout}"
    );
    assert_same_rows(&target_rows(&db), &expected_rows(&file));
}

#[test]
fn key_ranges_that_do_not_divide_lose_no_row_and_take_rows_added_while_running() {
    // Given a SQLite table of 10,007 integer keys, cut into 11 ranges
    // (the width does not divide: the last rows were in no range, issue 30)
    let db = TestDb::new("odbc_ranges_all_rows");
    let file = db.dir.path().join("ids.sqlite");
    sqlite(
        &file,
        "CREATE TABLE ids (id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10007)
         INSERT INTO ids SELECT i, 'v' || i FROM n;",
    );
    let text = format!(
        "name = \"ids\"\n[source]\ntype = \"odbc\"\nconnection_string = \"{}\"\ntables = [\"ids\"]\nbatch_rows = 500\n\
         [chunks]\nrange_rows = 1000\nworkers = 1\n[[sinks]]\ntype = \"postgres\"\nurl = \"${{ETL_DST_URL}}\"\ntable = \"public.{{table}}\"\ncreate_table = true\n",
        sqlite_connection(&file)
    );
    let p = db.pipeline("ids.toml", &text);
    let p = p.to_str().unwrap();
    let plan = db.etl(&["plan", p]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout
            .contains("11 chunks by ranges of \"id\": [-infinity, 911), [911, 1821)"),
        "{plan:?}"
    );
    assert!(plan.stdout.contains("[9101, infinity)"), "{plan:?}");

    // When the run pauses after its first chunk and rows arrive above the
    // highest key the plan saw
    let resume = db.dir.path().join("resume");
    let (child, lines) = spawn_etl(
        &db,
        &["run", p],
        &[
            ("ETL_TEST_PAUSE_AT", "commit:1"),
            ("ETL_TEST_RESUME_FILE", resume.to_str().unwrap()),
        ],
    );
    wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    sqlite(
        &file,
        "WITH RECURSIVE n(i) AS (SELECT 20001 UNION ALL SELECT i + 1 FROM n WHERE i < 20010)
         INSERT INTO ids SELECT i, 'late ' || i FROM n;",
    );
    std::fs::write(&resume, "").unwrap();
    let out = child.wait_with_output().unwrap();

    // Then every row lands once, those added after the plan included
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let source = sqlite(
        &file,
        "SELECT group_concat(id || v, ',') FROM (SELECT id, v FROM ids ORDER BY id);",
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || min(id) || ' ' || max(id) || ' ' || \
             md5(string_agg(id || v, ',' ORDER BY id)) FROM ids"
        ),
        format!(
            "10017 10017 1 20010 {}",
            psql(&db.dst, &format!("SELECT md5($etl${}$etl$)", source.trim()))
        )
    );
}
