//! `etl copy FROM TO`: the common moves as one command, run as the
//! pipeline it stands for (same ledger, resume and summary as `etl run`).

use crate::support::{psql, sqlite, TestDb};

#[test]
fn a_whole_database_is_one_command_the_same_command_resumes_and_its_pipeline_is_printed() {
    // Given a source with every object kind
    let db = TestDb::new("copy_cmd_pg");
    crate::pg_database::load(&db, 3_000);

    // When its schema is copied first, then its data into those tables
    let schema = db.etl(&["copy", &db.src, &db.dst, "--schema-only"]);
    assert_eq!(schema.code, 0, "{schema:?}");
    assert_eq!(
        psql(&db.dst, "SELECT count(*) FROM sales.orders"),
        "0",
        "the tables are made, empty"
    );
    let data = db.etl(&["copy", &db.src, &db.dst, "--data-only", "--workers", "2"]);

    // Then the target equals the source, tables, schema and sequences
    assert_eq!(data.code, 0, "{data:?}");
    assert!(data.stdout.contains("Migration copy-"), "{data:?}");
    crate::pg_database::assert_equal(&db);

    // And the same command again has nothing left to do
    let again = db.etl(&["copy", &db.src, &db.dst, "--data-only"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.contains("0 loaded, 11 skipped (done before)"),
        "{again:?}"
    );

    // And --print-pipeline shows the file it ran, which etl run takes
    let printed = db.etl(&["copy", &db.src, &db.dst, "--data-only", "--print-pipeline"]);
    assert_eq!(printed.code, 0, "{printed:?}");
    let name = printed
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let file = db.dir.path().join(format!(".etl/copy/{name}.toml"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), printed.stdout);
    let status = db.etl(&["status", file.to_str().unwrap()]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status.stdout.contains(&format!("Pipeline {name}, ledger")),
        "{status:?}"
    );

    // And what it cannot do, it says before anything runs
    let refused = db.etl(&["copy", &db.src, "out/"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("TO must be a PostgreSQL URL"),
        "{refused:?}"
    );
    let secret = db.etl(&["copy", "postgresql://u:hunter2@127.0.0.1:1/x", &db.dst]);
    assert_eq!(secret.code, 2, "{secret:?}");
    assert!(
        secret.stderr.contains("holds a password") && !secret.stderr.contains("hunter2"),
        "{secret:?}"
    );
}

#[test]
fn sqlite_access_and_csv_files_are_one_command_each() {
    // Given a SQLite file, the Access sample and a folder of CSV files
    let db = TestDb::new("copy_cmd_files");
    let lite = db.dir.path().join("shop.sqlite");
    sqlite(
        &lite,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 250) \
         INSERT INTO items SELECT i, 'item ' || i, i * 0.5 FROM n;",
    );
    let csv = db.dir.path().join("exports");
    std::fs::create_dir_all(&csv).unwrap();
    std::fs::write(
        csv.join("cities.csv"),
        "id,name\n1,Seoul\n2,\"Busan, Korea\"\n",
    )
    .unwrap();
    std::fs::write(csv.join("ports.csv"), "code,depth\nKRPUS,17.5\nKRINC,14\n").unwrap();
    let nwind = crate::odbc::fixtures().join("access/nwind.mdb");

    // When each is copied with one command
    let runs = [
        lite.to_str().unwrap().to_string(),
        nwind.to_str().unwrap().to_string(),
        csv.to_str().unwrap().to_string(),
    ]
    .map(|from| db.etl(&["copy", &from, &db.dst]));

    // Then each table is in the target with every row
    for run in &runs {
        assert_eq!(run.code, 0, "{run:?}");
    }
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) || ' ' || sum(price) FROM public.items"
        ),
        "250 15687.5"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT (SELECT count(*) FROM public.\"Orders\") || ' ' || (SELECT count(*) FROM public.\"Order Details\")"
        ),
        "830 2155"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT string_agg(name, '|' ORDER BY id) || ' ' || (SELECT sum(depth) FROM public.ports) FROM public.cities"
        ),
        "Seoul|Busan, Korea 31.5"
    );
}
