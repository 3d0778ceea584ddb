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

    // And into a folder, each table is CSV files
    let files = db.etl(&["copy", &db.src, "export", "--tables", "sales.*"]);
    assert_eq!(files.code, 0, "{files:?}");
    assert!(
        db.dir
            .path()
            .join("export/sales.customers/all.csv")
            .exists(),
        "{files:?}"
    );

    // And a CSV file into a folder is itself again, as UTF-8
    let csv = db.dir.path().join("some.csv");
    std::fs::write(&csv, "a,b\n1,\"x, y\"\n").unwrap();
    let again = db.etl(&["copy", csv.to_str().unwrap(), "again/"]);
    assert_eq!(again.code, 0, "{again:?}");
    let written: Vec<_> = std::fs::read_dir(db.dir.path().join("again/some"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(written, ["a,b\n1,\"x, y\"\n"]);

    // And what it cannot do, it says before anything runs
    let refused = db.etl(&["copy", &db.src, "out/", "--data-only"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("are for a PostgreSQL TO"),
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
    let korean = crate::support::cp949("code,name\nKRPUS,부산항\nKRINC,인천항\n");
    std::fs::write(csv.join("names.csv"), &korean).unwrap();
    let nwind = crate::odbc::fixtures().join("access/nwind.mdb");

    // When each is copied with one command (the CSV files in CP949)
    let runs = [
        db.etl(&["copy", lite.to_str().unwrap(), &db.dst]),
        db.etl(&["copy", nwind.to_str().unwrap(), &db.dst]),
        db.etl(&[
            "copy",
            csv.to_str().unwrap(),
            &db.dst,
            "--encoding",
            "cp949",
        ]),
    ];

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
    assert_eq!(
        psql(
            &db.dst,
            "SELECT string_agg(name, ',' ORDER BY code) FROM public.names"
        ),
        "인천항,부산항"
    );
}

/// The lines of a CSV file that are rows (a header first, no line
/// breaks inside values: these tables have none).
fn csv_rows(file: &std::path::Path) -> usize {
    std::fs::read_to_string(file).unwrap().lines().count() - 1
}

#[test]
fn a_whole_database_and_an_access_file_go_to_one_file_per_table() {
    // Given the Access sample, and a PostgreSQL database with a big table
    let db = TestDb::new("migrate_to_files");
    crate::pg_database::load(&db, 3_000);
    let nwind = crate::odbc::fixtures().join("access/nwind.mdb");
    let access = db.pipeline(
        "access.toml",
        &format!(
            "name = \"access-files\"\n[source]\ntype = \"access\"\npath = {:?}\ntables = [\"*\"]\n\
             [[sinks]]\ntype = \"csv\"\npath = \"out/{{table}}/{{start}}.csv\"\n",
            nwind.to_str().unwrap()
        ),
    );
    let database = db.pipeline(
        "database.toml",
        "name = \"database-files\"\n[source]\ntype = \"postgres\"\nurl = \"${ETL_SRC_URL}\"\ntables = [\"sales.*\"]\n\
         [chunks]\nrange_rows = 1000\nworkers = 2\n\
         [[sinks]]\ntype = \"csv\"\npath = \"pg/{table}/{start}.csv\"\n",
    );

    // When each is planned and run, and run again
    let plan = db.etl(&["plan", access.to_str().unwrap()]);
    let runs = [&access, &database].map(|p| db.etl(&["run", p.to_str().unwrap()]));
    let again = db.etl(&["run", access.to_str().unwrap()]);

    // Then every Access table is a file with every row (OLE pictures as
    // bytea hex), and the second run has nothing to do
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout
            .contains("Phases: discover, data (into files: no tables, keys or sequences to make)")
            && plan
                .stdout
                .contains("Order Details -> out/Order%20Details/all.csv: 2,155 rows"),
        "{plan:?}"
    );
    for run in &runs {
        assert_eq!(run.code, 0, "{run:?}");
        assert!(
            run.stdout.contains("done: every table in its files"),
            "{run:?}"
        );
    }
    let out = db.dir.path().join("out");
    assert_eq!(csv_rows(&out.join("Order%20Details/all.csv")), 2155);
    assert_eq!(csv_rows(&out.join("Shippers/all.csv")), 3);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 9);
    let categories = std::fs::read_to_string(out.join("Categories/all.csv")).unwrap();
    assert!(categories.contains(",\\x151c2f00"), "Picture as bytea hex");
    assert!(
        again.stdout.contains("0 loaded, 9 skipped (done before)"),
        "{again:?}"
    );
    // And they load back through etl copy
    let back = db.etl(&["copy", out.join("Categories").to_str().unwrap(), &db.dst]);
    assert_eq!(back.code, 0, "{back:?}");
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM public.\"all\""), "8");

    // And the database's big table is in ranges of its key, each a file,
    // together equal to the table (loaded back by \copy beside it)
    let orders = db.dir.path().join("pg/sales.orders");
    let mut files: Vec<_> = std::fs::read_dir(&orders)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    psql(
        &db.src,
        "CREATE TABLE sales.orders_back (LIKE sales.orders)",
    );
    for f in &files {
        psql(
            &db.src,
            &format!("\\copy sales.orders_back FROM '{}' CSV HEADER", f.display()),
        );
    }
    let fingerprint = |t: &str| {
        psql(
            &db.src,
            &format!("SELECT count(*) || ' ' || md5(string_agg(o::text, '|' ORDER BY o::text)) FROM {t} o"),
        )
    };
    assert_eq!(
        fingerprint("sales.orders_back"),
        fingerprint("sales.orders")
    );
    // A table with a range column read whole: the file is \copy's, byte
    // for byte
    let copied = db.dir.path().join("bookings.csv");
    psql(
        &db.src,
        &format!("\\copy sales.bookings TO '{}' CSV HEADER", copied.display()),
    );
    let bookings = std::fs::read(db.dir.path().join("pg/sales.bookings/all.csv")).unwrap();
    assert!(
        String::from_utf8_lossy(&bookings).contains(",\"[\""),
        "a range in the file"
    );
    assert_eq!(bookings, std::fs::read(&copied).unwrap());

    // And into Parquet the same way, read back by pyarrow
    let parquet = db.pipeline(
        "parquet.toml",
        &std::fs::read_to_string(&access).unwrap().replace(
            "type = \"csv\"\npath = \"out/{table}/{start}.csv\"",
            "type = \"parquet\"\npath = \"pq/{table}/{start}.parquet\"",
        ),
    );
    let run = db.etl(&["run", parquet.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let rows = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1]); print(t.num_rows, t.schema.field('Picture').type)",
            db.dir.path().join("pq/Categories/all.parquet").to_str().unwrap(),
        ])
        .output()
        .expect("python3 with pyarrow");
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout).trim(),
        "8 binary",
        "{rows:?}"
    );

    // And what a migration into files does not do, it says
    let verify = db.etl(&["verify", access.to_str().unwrap()]);
    assert_eq!(verify.code, 2, "{verify:?}");
    assert!(
        verify.stderr.contains("into files it has none yet"),
        "{verify:?}"
    );
    let no_start = db.pipeline(
        "no-start.toml",
        &std::fs::read_to_string(&access)
            .unwrap()
            .replace("out/{table}/{start}.csv", "out/{table}.csv"),
    );
    let refused = db.etl(&["validate", no_start.to_str().unwrap()]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("put {table} and {start} in the path"),
        "{refused:?}"
    );
    let database_parquet = db.pipeline(
        "database-parquet.toml",
        &std::fs::read_to_string(&database).unwrap().replace(
            "type = \"csv\"\npath = \"pg/{table}/{start}.csv\"",
            "type = \"parquet\"\npath = \"pq/{table}/{start}.parquet\"",
        ),
    );
    let refused = db.etl(&["validate", database_parquet.to_str().unwrap()]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("into Parquet not yet"),
        "{refused:?}"
    );
}
