//! ODBC reading through real drivers (groundwork of the ODBC source):
//! CP949 text byte-exact through psqlODBC with a UHC client encoding,
//! invalid bytes under both policies, and SQLite3 types.

use std::path::PathBuf;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use etl::source::odbc::{open, OdbcOptions};

use crate::support::{psql, repo, TestDb};

/// The shared sample files (not ours to copy into the repo): `ETL_FIXTURES`, else `../shared/fixtures`
/// beside the clone. Missing, the test that needs them fails: it never
/// passes by skipping.
pub fn fixtures() -> PathBuf {
    let dir = match std::env::var_os("ETL_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => repo().join("../shared/fixtures"),
    };
    assert!(
        dir.join("access").is_dir(),
        "the shared sample files are not at {dir:?}: set ETL_FIXTURES to the folder holding access/ (scripts/fixtures.sh fetches it)"
    );
    dir
}

fn read_all(
    connection: &str,
    query: &str,
    options: OdbcOptions,
) -> Result<Vec<RecordBatch>, String> {
    let mut reader = open(connection, query, options).map_err(|e| e.to_string())?;
    let mut batches = Vec::new();
    while let Some(b) = reader.next_batch().map_err(|e| e.to_string())? {
        batches.push(b);
    }
    Ok(batches)
}

fn texts(batches: &[RecordBatch], column: usize) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            b.column(column)
                .as_string::<i32>()
                .iter()
                .map(|s| s.map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// psqlODBC's ANSI driver sending text in the client encoding UHC (CP949).
pub fn psqlodbc_uhc(url: &str) -> String {
    let rest = url.strip_prefix("postgresql://etl@").unwrap();
    let (host_port, database) = rest.split_once('/').unwrap();
    let (host, port) = host_port.split_once(':').unwrap();
    format!(
        "Driver={{PostgreSQL ANSI}};Servername={host};Port={port};Database={database};Username=etl;\
         ConnSettings=SET client_encoding TO 'UHC'"
    )
}

#[test]
fn cp949_text_round_trips_byte_exact_through_psqlodbc_with_uhc() {
    // Given Korean text (with 똠 and 펲, which EUC-KR lacks) in PostgreSQL,
    // whose CP949 bytes by Python's codec are those of etl's encoder
    let utf8 = crate::support::korean_text();
    assert!(utf8.contains('똠') && utf8.contains('펲'));
    let (encoded, _, _) = encoding_rs::EUC_KR.encode(utf8);
    assert_eq!(&encoded[..], &crate::support::cp949(utf8)[..]);
    let db = TestDb::new("odbc_cp949");
    psql(
        &db.src,
        &format!(
            "CREATE TABLE korean (n int, line text); \
             INSERT INTO korean SELECT n, line FROM unnest(string_to_array($etl${utf8}$etl$, E'\\n')) WITH ORDINALITY AS u(line, n)"
        ),
    );
    let connection = psqlodbc_uhc(&db.src);
    let query = "SELECT n, line FROM korean ORDER BY n";

    // When read through the ANSI driver as CP949
    let batches = read_all(&connection, query, OdbcOptions::new("cp949").unwrap()).unwrap();

    // Then every line equals the UTF-8 text, byte for byte
    let lines: Vec<Option<String>> = utf8.split('\n').map(|l| Some(l.to_string())).collect();
    assert_eq!(texts(&batches, 1), lines);

    // And the same bytes read as UTF-8 are refused, naming the column, row and bytes
    let e = read_all(&connection, query, OdbcOptions::new("utf-8").unwrap()).unwrap_err();
    assert!(
        e.starts_with(
            "column \"line\": row 1 holds bytes that are not valid UTF-8 (8c 63 b9 e6 b0 a2"
        ),
        "{e}"
    );
    assert!(e.contains("set on_invalid_text = \"replace\""), "{e}");
}

#[test]
fn invalid_cp949_bytes_fail_or_are_replaced_and_counted() {
    // Given a SQLite file whose text holds 가 (b0 a1) then a byte no code page knows (ff)
    let db = TestDb::new("odbc_invalid");
    let file = db.dir.path().join("bad.sqlite");
    let out = std::process::Command::new("sqlite3")
        .arg(&file)
        .arg("CREATE TABLE t (id INTEGER, s TEXT); INSERT INTO t VALUES (1, CAST(X'B0A1' AS TEXT)), (2, CAST(X'B0A1FF41' AS TEXT)), (3, NULL);")
        .output()
        .expect("sqlite3 is installed");
    assert!(out.status.success(), "{out:?}");
    let connection = format!("Driver={{SQLite3}};Database={}", file.display());
    let query = "SELECT id, s FROM t ORDER BY id";

    // When read with on_invalid_text = "error"
    let e = read_all(&connection, query, OdbcOptions::new("cp949").unwrap()).unwrap_err();
    // Then the error names the column, the row and the bytes
    assert_eq!(
        e,
        "column \"s\": row 2 holds bytes that are not valid EUC-KR (b0 a1 ff 41); set on_invalid_text = \"replace\" to load them as U+FFFD, or fix encoding"
    );

    // When read with "replace"
    let mut options = OdbcOptions::new("cp949").unwrap();
    options.replace_invalid = true;
    let mut reader = open(&connection, query, options).unwrap();
    let batch = reader.next_batch().unwrap().unwrap();
    // Then the bad value is kept with U+FFFD and counted per column
    assert_eq!(
        texts(&[batch], 1),
        [
            Some("가".to_string()),
            Some("가\u{FFFD}A".to_string()),
            None
        ]
    );
    assert_eq!(reader.replaced.get("s"), Some(&1));
}

#[test]
fn sqlite3_types_map_to_arrow() {
    // Given a SQLite file with integers, reals, Korean text, a blob and NULLs
    let db = TestDb::new("odbc_sqlite");
    let file = db.dir.path().join("m.sqlite");
    let out = std::process::Command::new("sqlite3")
        .arg(&file)
        .arg("CREATE TABLE m (id BIGINT, x DOUBLE, name VARCHAR(20), raw VARBINARY(10), small INTEGER); \
              INSERT INTO m VALUES (1, 1.5, '똠방각하', X'00FF', 1), (2, NULL, NULL, NULL, NULL), (9007199254740993, -0.25, 'plain', X'', NULL);")
        .output()
        .expect("sqlite3 is installed");
    assert!(out.status.success(), "{out:?}");
    let connection = format!("Driver={{SQLite3}};Database={}", file.display());

    // When read (SQLite keeps UTF-8)
    let batches = read_all(
        &connection,
        "SELECT id, x, name, small FROM m ORDER BY rowid",
        OdbcOptions::new("utf-8").unwrap(),
    )
    .unwrap();

    // Then each column has its type and values
    let b = &batches[0];
    assert_eq!(
        format!(
            "{:?}",
            b.schema()
                .fields()
                .iter()
                .map(|f| f.data_type().to_string())
                .collect::<Vec<_>>()
        ),
        "[\"Int64\", \"Float64\", \"Utf8\", \"Int32\"]"
    );
    assert_eq!(
        b.column(0).as_primitive::<Int64Type>().values(),
        &[1, 2, 9007199254740993]
    );
    assert_eq!(
        b.column(1)
            .as_primitive::<Float64Type>()
            .iter()
            .collect::<Vec<_>>(),
        [Some(1.5), None, Some(-0.25)]
    );
    assert_eq!(
        texts(&batches, 2),
        [Some("똠방각하".into()), None, Some("plain".into())]
    );
    assert_eq!(
        b.column(3)
            .as_primitive::<arrow::datatypes::Int32Type>()
            .iter()
            .collect::<Vec<_>>(),
        [Some(1), None, None]
    );
}

#[test]
fn a_value_wider_than_the_declared_integer_is_an_error_not_a_cut() {
    // Given SQLite's 64-bit value in a column declared INTEGER (which its
    // ODBC driver cuts to 32 bits when asked for them)
    let db = TestDb::new("odbc_wide_int");
    let file = db.dir.path().join("w.sqlite");
    let out = std::process::Command::new("sqlite3")
        .arg(&file)
        .arg("CREATE TABLE w (n INTEGER); INSERT INTO w VALUES (7), (9007199254740993);")
        .output()
        .expect("sqlite3 is installed");
    assert!(out.status.success(), "{out:?}");
    // When read
    let e = read_all(
        &format!("Driver={{SQLite3}};Database={}", file.display()),
        "SELECT n FROM w",
        OdbcOptions::new("utf-8").unwrap(),
    )
    .unwrap_err();
    // Then the row is named with the fix, instead of loading 1
    assert_eq!(e, "column \"n\": row 2 holds 9007199254740993, which does not fit the driver's declared type INTEGER; cast the column to BIGINT in the query");
}
