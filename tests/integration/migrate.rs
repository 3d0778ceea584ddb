//! Whole databases and queries from ODBC sources into PostgreSQL: the
//! Access samples through MDBTools (counts against mdb-count, foreign keys
//! valid, AutoNumber sequences continuing), a SQLite database through
//! SQLite3 ODBC in foreign-key order with a cycle, a failed table rerun,
//! and CP949 text through psqlODBC into a table.

use std::path::Path;

use crate::odbc::{fixtures, psqlodbc_uhc};
use crate::support::{etl_in, psql, repo, sqlite, TestDb};

fn mdb(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("mdbtools is installed");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// An ODBC pipeline into `db.dst`: `source` is the lines after the
/// connection string, `table` the target.
fn odbc_pipeline(name: &str, connection: &str, source: &str, table: &str) -> String {
    format!(
        r#"name = "{name}"
[source]
type = "odbc"
connection_string = "{connection}"
{source}[[sinks]]
type = "postgres"
url = "${{ETL_DST_URL}}"
table = "{table}"
create_table = true
"#
    )
}

/// The shipped pipeline run on an Access file into `db.dst`.
fn access(db: &TestDb, file: &Path, args: &[&str]) -> crate::support::Output {
    let pipeline = repo().join("pipelines/access-migration.toml");
    let mut all = vec![args[0], pipeline.to_str().unwrap()];
    all.extend(&args[1..]);
    etl_in(
        db.dir.path(),
        &all,
        &[
            ("ETL_DST_URL", &db.dst),
            ("ETL_ACCESS_FILE", file.to_str().unwrap()),
        ],
    )
}

#[test]
fn access_samples_migrate_whole_with_mdb_counts_valid_keys_and_sequences() {
    let fixtures = fixtures();
    for (name, file, foreign_keys) in [
        ("access_nwind", "nwind.mdb", 7),
        ("access_asample", "ASampleDatabase.accdb", 0),
    ] {
        let file = fixtures.join("access").join(file);
        let db = TestDb::new(name);

        // When planned: every table in load order, the DDL, nothing written
        let plan = access(&db, &file, &["plan"]);
        assert_eq!(plan.code, 0, "{plan:?}");
        // The phases in their order
        let at = |heading: &str| {
            plan.stdout
                .find(heading)
                .unwrap_or_else(|| panic!("no {heading:?} in {plan:?}"))
        };
        let phases = [
            at("Phases: discover, create, data, constraints, sequences, verify"),
            at("\nDiscover: tables in load order (parents first)"),
            at("\nCreate (tables that do not exist yet):"),
            at("\nData: "),
            at("\nConstraints, once every chunk is done:"),
            at("\nSequences:"),
            at("\nVerify: "),
        ];
        assert!(phases.windows(2).all(|w| w[0] < w[1]), "{plan:?}");
        assert!(plan.stdout.ends_with("Nothing was written.\n"), "{plan:?}");
        assert_eq!(
            psql(
                &db.dst,
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            ),
            "0"
        );

        // When run
        let out = access(&db, &file, &["run"]);
        assert_eq!(out.code, 0, "{out:?}");

        // Then every table holds mdb-count's rows
        let tables: Vec<String> = mdb(&["mdb-tables", "-1", file.to_str().unwrap()])
            .lines()
            .map(str::to_string)
            .collect();
        assert!(!tables.is_empty());
        for t in &tables {
            let expected = mdb(&["mdb-count", file.to_str().unwrap(), t]);
            let got = psql(&db.dst, &format!("SELECT count(*) FROM public.\"{t}\""));
            assert_eq!(got, expected.trim(), "table {t}");
        }
        // And the foreign keys exist (validated when added) with no orphans
        assert_eq!(
            psql(
                &db.dst,
                "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated AND connamespace = 'public'::regnamespace"
            ),
            foreign_keys.to_string()
        );
        assert!(
            out.stdout.contains(&format!(
                "{n} of {n} tables have the source's row count; {foreign_keys} foreign keys, 0 orphan rows",
                n = tables.len()
            )),
            "{out:?}"
        );
        // And every table has its primary key
        assert_eq!(
            psql(
                &db.dst,
                "SELECT count(*) FROM pg_constraint WHERE contype = 'p' AND connamespace = 'public'::regnamespace"
            ),
            tables.len().to_string()
        );

        // And a second run finds every table done
        let again = access(&db, &file, &["run"]);
        assert_eq!(again.code, 0, "{again:?}");
        assert!(
            again
                .stdout
                .contains(&format!("0 loaded, {} skipped", tables.len())),
            "{again:?}"
        );
        // And verify agrees
        let verify = access(&db, &file, &["verify"]);
        assert_eq!(verify.code, 0, "{verify:?}");
    }

    // Values as Access holds them: Currency to the cent, Latin-1 text as UTF-8
    let db = TestDb::new("access_values");
    let file = fixtures.join("access/nwind.mdb");
    assert_eq!(access(&db, &file, &["run"]).code, 0);
    assert_eq!(
        psql(
            &db.dst,
            "SELECT \"Freight\" || ' ' || \"ShipAddress\" || ' ' || \"OrderDate\" FROM \"Orders\" WHERE \"OrderID\" = 10330"
        ),
        "12.7500 Carrera 52 con Ave. Bolívar #65-98 Llano Largo 1994-11-16 00:00:00"
    );
    assert_eq!(
        psql(&db.dst, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '\"Orders\"'::regclass AND attname = 'Freight'"),
        "numeric(19,4)"
    );
    // And the AutoNumber sequence continues after the loaded maximum
    assert_eq!(
        psql(&db.dst, "INSERT INTO \"Orders\" (\"CustomerID\") VALUES ('ALFKI') RETURNING \"OrderID\""),
        psql(&db.dst, "SELECT max(\"OrderID\") FROM \"Orders\" WHERE \"OrderID\" < (SELECT max(\"OrderID\") FROM \"Orders\")")
            .parse::<i64>()
            .map(|m| (m + 1).to_string())
            .unwrap()
    );
}

#[test]
fn a_sqlite_database_migrates_parents_first_with_a_cycle_and_sequences_continue() {
    // Given a SQLite file: a chain of foreign keys, a cycle, Korean text,
    // an auto-numbered key, and a table left out
    let db = TestDb::new("odbc_sqlite_migrate");
    let file = db.dir.path().join("shop.sqlite");
    sqlite(
        &file,
        "CREATE TABLE customer (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL);
         CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id INTEGER REFERENCES customer(id), placed TIMESTAMP, total NUMERIC(10,2));
         CREATE TABLE line (order_id INTEGER REFERENCES orders(id), n INTEGER, item TEXT, qty DOUBLE, PRIMARY KEY (order_id, n));
         CREATE TABLE a (id INTEGER PRIMARY KEY, b_id INTEGER REFERENCES b(id));
         CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a(id));
         CREATE TABLE scratch (x INTEGER);
         INSERT INTO customer (name) VALUES ('똠방각하'), ('펲'), ('plain');
         INSERT INTO orders (customer_id, placed, total) VALUES (1, '2025-06-01 10:00:00', 12.50), (1, '2025-06-02 11:30:00', 3.05), (3, NULL, NULL);
         INSERT INTO line VALUES (1, 1, '사과', 2.5), (1, 2, 'pear', 1), (2, 1, NULL, 0.25);
         INSERT INTO a VALUES (1, NULL), (2, 1); INSERT INTO b VALUES (1, 2); UPDATE a SET b_id = 1 WHERE id = 1;
         INSERT INTO scratch VALUES (1);",
    );
    let pipeline = db.pipeline(
        "shop.toml",
        &odbc_pipeline(
            "shop",
            &format!("Driver={{SQLite3}};Database={}", file.display()),
            "tables = [\"*\"]\nexclude = [\"scratch\"]\n",
            "shop.{table}",
        ),
    );

    // When planned
    let plan = db.etl(&["plan", pipeline.to_str().unwrap()]);
    assert_eq!(plan.code, 0, "{plan:?}");
    // Then parents come before children, the cycle last, scratch not at all
    let order: Vec<&str> = plan
        .stdout
        .lines()
        .filter_map(|l| {
            l.trim()
                .split_once(". ")
                .filter(|(n, _)| n.parse::<u32>().is_ok())
        })
        .map(|(_, rest)| rest.split(" -> ").next().unwrap())
        .collect();
    assert_eq!(order, ["customer", "orders", "line", "a", "b"], "{plan:?}");
    assert!(
        plan.stdout.contains("cycle among [\"a\", \"b\"]"),
        "{plan:?}"
    );

    // When run
    let out = db.etl(&["run", pipeline.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");

    // Then every row is there, text and numbers exact
    assert_eq!(
        psql(
            &db.dst,
            "SELECT string_agg(name, ',' ORDER BY id) FROM shop.customer"
        ),
        "똠방각하,펲,plain"
    );
    assert_eq!(
        psql(&db.dst, "SELECT string_agg(concat_ws('|', id, customer_id, placed, total), ',' ORDER BY id) FROM shop.orders"),
        // (SQLite3's driver describes NUMERIC(10,2) as DOUBLE: 12.5)
        "1|1|2025-06-01 10:00:00|12.5,2|1|2025-06-02 11:30:00|3.05,3|3"
    );
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM shop.line"), "3");
    assert_eq!(
        psql(&db.dst, "SELECT to_regclass('shop.scratch') IS NULL"),
        "t"
    );
    // And the keys came from SQLPrimaryKeys / SQLForeignKeys: 5 primary keys
    // and 4 foreign keys (the cycle's two included)
    assert_eq!(
        psql(&db.dst, "SELECT count(*) FILTER (WHERE contype = 'p') || ' ' || count(*) FILTER (WHERE contype = 'f') FROM pg_constraint WHERE connamespace = 'shop'::regnamespace"),
        "5 4"
    );
    assert!(
        out.stdout
            .contains("5 of 5 tables have the source's row count; 4 foreign keys, 0 orphan rows"),
        "{out:?}"
    );
    // And an insert without id continues after the loaded maximum
    assert_eq!(
        psql(
            &db.dst,
            "INSERT INTO shop.customer (name) VALUES ('new') RETURNING id"
        ),
        "4"
    );
    assert_eq!(
        psql(
            &db.dst,
            "INSERT INTO shop.orders (customer_id) VALUES (4) RETURNING id"
        ),
        "4"
    );

    // When run again with --restart: foreign keys are dropped, every table
    // reloaded (the rows added above go), keys added again
    let again = db.etl(&["run", pipeline.to_str().unwrap(), "--restart"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("5 loaded, 0 skipped"), "{again:?}");
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM shop.customer"), "3");
    assert_eq!(
        psql(&db.dst, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = 'shop'::regnamespace"),
        "4"
    );
}

#[test]
fn a_table_with_bad_text_fails_alone_and_rerun_completes_the_migration() {
    // Given a SQLite file whose second table holds bytes that are not CP949
    let db = TestDb::new("odbc_rerun");
    let file = db.dir.path().join("bad.sqlite");
    sqlite(
        &file,
        "CREATE TABLE good (id INTEGER PRIMARY KEY, s TEXT);
         CREATE TABLE bad (id INTEGER PRIMARY KEY, good_id INTEGER REFERENCES good(id), s TEXT);
         INSERT INTO good VALUES (1, CAST(X'B0A1' AS TEXT));
         INSERT INTO bad VALUES (1, 1, CAST(X'B0A1' AS TEXT)), (2, 1, CAST(X'B0A1FF41' AS TEXT));",
    );
    let text = |policy: &str| {
        odbc_pipeline(
            "rerun",
            &format!("Driver={{SQLite3}};Database={}", file.display()),
            &format!("tables = [\"*\"]\nencoding = \"cp949\"\non_invalid_text = \"{policy}\"\n"),
            "public.{table}",
        )
    };
    let pipeline = db.pipeline("p.toml", &text("error"));

    // When run
    let out = db.etl(&["run", pipeline.to_str().unwrap()]);
    // Then the bad table fails naming table, column, row and bytes; the good one loads
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("bad: source table \"bad\": column \"s\": row 2 holds bytes that are not valid EUC-KR (b0 a1 ff 41)"),
        "{out:?}"
    );
    assert!(out.stdout.contains("constraints  not added"), "{out:?}");
    assert_eq!(psql(&db.dst, "SELECT s FROM good"), "가");
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM bad"), "0");
    let csv = std::fs::read_to_string(db.dir.path().join("failed_chunks.csv")).unwrap();
    assert_eq!(csv, "bad,,\n", "a whole table's chunk has no bounds");

    // When the policy becomes replace and the CSV is rerun
    std::fs::write(&pipeline, text("replace")).unwrap();
    let rerun = db.etl(&["rerun", pipeline.to_str().unwrap(), "failed_chunks.csv"]);
    // Then the table loads with U+FFFD counted, and the keys follow
    assert_eq!(rerun.code, 0, "{rerun:?}");
    assert!(rerun.stdout.contains("1 loaded, 0 skipped"), "{rerun:?}");
    assert!(rerun.stdout.contains("replaced text bad.s 1"), "{rerun:?}");
    assert_eq!(
        psql(&db.dst, "SELECT string_agg(s, ',' ORDER BY id) FROM bad"),
        "가,가\u{FFFD}A"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
        ),
        "1"
    );
}

#[test]
fn values_over_max_text_bytes_fail_or_are_cut_on_a_character_and_counted() {
    // Given text and binary values longer than max_text_bytes = 10 (the
    // Korean one is 21 bytes of UTF-8, so byte 10 splits a character), and
    // a column declared VARCHAR(2) that holds 12 characters (SQLite does
    // not enforce declared lengths)
    let db = TestDb::new("odbc_long");
    let file = db.dir.path().join("long.sqlite");
    sqlite(
        &file,
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, pic BLOB);
         CREATE TABLE codes (id INTEGER PRIMARY KEY, code VARCHAR(2));
         INSERT INTO notes VALUES (1, 'short', X'0102'), (2, '가나다라마바사', X'00112233445566778899AABB'), (3, NULL, NULL), (4, '0123456789', X'00112233445566778899');
         INSERT INTO codes VALUES (1, 'ab'), (2, 'abcdefghijkl');",
    );
    let text = |extra: &str| {
        odbc_pipeline(
            "long",
            &format!("Driver={{SQLite3}};Database={}", file.display()),
            &format!("tables = [\"*\"]\nmax_text_bytes = 10\n{extra}\n"),
            "public.{table}",
        )
    };
    let pipeline = db.pipeline("p.toml", &text(""));

    // When run with the default (error)
    let out = db.etl(&["run", pipeline.to_str().unwrap()]);
    // Then both tables fail, naming column and row, and what to change
    assert_eq!(out.code, 1, "{out:?}");
    for expected in [
        "notes: source table \"notes\": column \"body\": row 2 holds a value longer than max_text_bytes = 10; raise max_text_bytes, or set on_long_value = \"truncate\"",
        "codes: source table \"codes\": column \"code\": a value in rows 1 to 2 is longer than the driver declared for the column (8 bytes); read the column as text (or binary) with [source.casts]",
    ] {
        assert!(out.stdout.contains(expected), "{expected}\n{out:?}");
    }
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM notes"), "0");

    // When values may be cut, and the short-declared column is read as text
    std::fs::write(
        &pipeline,
        text("on_long_value = \"truncate\"\n[source.casts]\n\"codes.code\" = \"text\""),
    )
    .unwrap();
    let rerun = db.etl(&["rerun", pipeline.to_str().unwrap(), "failed_chunks.csv"]);
    // Then every row lands, long values cut to 10 bytes on a whole
    // character, each counted with its first row
    assert_eq!(rerun.code, 0, "{rerun:?}");
    assert!(
        rerun.stdout.contains(
            "truncated    codes.code 1 (first at row 2), notes.body 1 (first at row 2), notes.pic 1 (first at row 2): values longer than max_text_bytes = 10 cut to it"
        ),
        "{rerun:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT string_agg(coalesce(body, '-') || ' ' || coalesce(encode(pic, 'hex'), '-'), ',' ORDER BY id) FROM notes"
        ),
        "short 0102,가나다 00112233445566778899,- -,0123456789 00112233445566778899"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT string_agg(code, ',' ORDER BY id) FROM codes"
        ),
        "ab,abcdefghij"
    );
}

#[test]
fn access_memo_values_over_the_limit_are_cut_row_by_row_and_counted() {
    let fixtures = fixtures();
    // Given nwind's Employees (Notes is a Memo), loaded whole for reference
    let file = fixtures.join("access/nwind.mdb");
    let db = TestDb::new("access_long");
    let text = |schema: &str, extra: &str| {
        odbc_pipeline(
            schema,
            &format!("Driver={{MDBTools}};DBQ={}", file.display()),
            &format!("tables = [\"Employees\"]\n{extra}\n"),
            &format!("{schema}.{{table}}"),
        )
    };
    let whole = db.pipeline("whole.toml", &text("whole", ""));
    let out = db.etl(&["run", whole.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let long = psql(
        &db.dst,
        "SELECT count(*) FROM whole.\"Employees\" WHERE octet_length(\"Notes\") > 100",
    );
    assert_ne!(long, "0", "some notes are longer than 100 bytes");

    // When loaded again with max_text_bytes = 100 and truncate (MDBTools
    // is read row by row, each value through SQLGetData)
    let cut = db.pipeline(
        "cut.toml",
        &text("cut", "max_text_bytes = 100\non_long_value = \"truncate\""),
    );
    let out = db.etl(&["run", cut.to_str().unwrap()]);

    // Then the long notes are counted, cut to 100 bytes, and each is the
    // start of the whole note; the others are equal
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "truncated    Employees.Notes {long} (first at row "
        )),
        "{out:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FILTER (WHERE octet_length(c.\"Notes\") > 100), \
                    count(*) FILTER (WHERE NOT starts_with(w.\"Notes\", c.\"Notes\")), \
                    count(*) FILTER (WHERE octet_length(w.\"Notes\") <= 100 AND w.\"Notes\" <> c.\"Notes\"), \
                    count(*) FILTER (WHERE octet_length(w.\"Notes\") > 100 AND octet_length(c.\"Notes\") < 97) \
             FROM whole.\"Employees\" w JOIN cut.\"Employees\" c USING (\"EmployeeID\")"
        ),
        "0|0|0|0"
    );
}

#[test]
fn driver_types_map_guids_and_fractions_and_a_wide_decimal_needs_a_cast() {
    // Given a PostgreSQL source read through psqlODBC: a uuid (SQL_GUID,
    // as SQL Server's uniqueidentifier), a time with microseconds (the
    // ODBC TIME struct has none), and numeric(50,2), wider than Arrow's
    // Decimal128
    let db = TestDb::new("odbc_kinds");
    psql(
        &db.src,
        "CREATE TABLE kinds (id int PRIMARY KEY, u uuid, tm time(6), m money, big numeric(50,2)); \
         INSERT INTO kinds VALUES \
           (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '12:34:56.789012', 12.34, 123456789012345678901234567890123456789012345678.25), \
           (2, NULL, NULL, NULL, NULL)",
    );
    let text = |casts: &str| {
        odbc_pipeline(
            "kinds",
            &psqlodbc_uhc(&db.src),
            &format!("query = \"SELECT * FROM kinds\"\nencoding = \"cp949\"\n{casts}\n"),
            "public.kinds",
        )
    };
    let pipeline = db.pipeline("kinds.toml", &text(""));

    // When run, the wide decimal is refused before anything is written,
    // naming the column and the line that reads it anyway
    let out = db.etl(&["run", pipeline.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(
            "column \"big\" has ODBC type Numeric { precision: 50, scale: 2 }, which etl cannot map; read it as text or bytes with [source.casts] \"big\" = \"text\""
        ),
        "{out:?}"
    );

    // When the cast is added
    std::fs::write(&pipeline, text("[source.casts]\n\"big\" = \"text\"")).unwrap();
    let out = db.etl(&["run", pipeline.to_str().unwrap()]);

    // Then every value arrives equal: the GUID as a uuid, the time with its
    // microseconds, the wide decimal as its exact text
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT string_agg(format_type(atttypid, atttypmod), ',' ORDER BY attnum) FROM pg_attribute \
             WHERE attrelid = 'kinds'::regclass AND attnum > 0"
        ),
        "integer,uuid,time without time zone,double precision,text"
    );
    let row = "SELECT string_agg(concat_ws('|', id, u, tm, big), ',' ORDER BY id) FROM kinds";
    assert_eq!(psql(&db.dst, row), psql(&db.src, row));
    assert_eq!(psql(&db.dst, "SELECT m FROM kinds WHERE id = 1"), "12.34");
}

#[test]
fn fractions_below_a_microsecond_round_as_postgresql_rounds_them() {
    // Given timestamps with 100 ns digits (SQL Server's datetime2 has
    // them; SQLite's driver hands over all nine digits)
    let db = TestDb::new("odbc_fractions");
    let file = db.dir.path().join("t.sqlite");
    let values = [
        "2025-01-01 10:00:00.1234565",
        "2025-01-01 10:00:00.1234575",
        "2025-01-01 10:00:00.1234564",
        "2025-12-31 23:59:59.9999996",
    ];
    let inserts: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("({i}, '{v}')"))
        .collect();
    sqlite(
        &file,
        &format!(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, at TIMESTAMP); INSERT INTO t VALUES {};",
            inserts.join(", ")
        ),
    );
    let pipeline = db.pipeline(
        "t.toml",
        &odbc_pipeline(
            "t",
            &format!("Driver={{SQLite3}};Database={}", file.display()),
            "query = \"SELECT id, at FROM t\"\n",
            "public.t",
        ),
    );
    // When loaded
    let out = db.etl(&["run", pipeline.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    // Then each equals PostgreSQL's own reading of the same text (nearest
    // microsecond, ties to even; the last one is the next year)
    let expected: Vec<String> = values
        .iter()
        .map(|v| psql(&db.dst, &format!("SELECT '{v}'::timestamp")))
        .collect();
    assert_eq!(expected[3], "2026-01-01 00:00:00");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT string_agg(at::text, ',' ORDER BY id) FROM t"
        ),
        expected.join(",")
    );
}

#[test]
fn a_big_table_is_cut_into_key_ranges_read_by_several_processes() {
    // Given 3,000 rows keyed 1..3000 (CP949 text; two rows, in the first
    // and the last third, hold bytes that are not CP949) and a small table
    let db = TestDb::new("odbc_readers");
    let file = db.dir.path().join("big.sqlite");
    sqlite(
        &file,
        "CREATE TABLE big (id INTEGER PRIMARY KEY, s TEXT, x DOUBLE);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO big SELECT i, CAST(X'B0A1' AS TEXT) || i, i * 0.5 FROM n;
         UPDATE big SET s = CAST(X'B0A1FF41' AS TEXT) WHERE id IN (700, 2900);
         CREATE TABLE small (id INTEGER PRIMARY KEY, big_id INTEGER REFERENCES big(id));
         INSERT INTO small VALUES (1, 700);",
    );
    let text = |policy: &str| {
        odbc_pipeline(
            "readers",
            &format!("Driver={{SQLite3}};Database={};StepAPI=1", file.display()),
            &format!(
                "tables = [\"*\"]\nencoding = \"cp949\"\non_invalid_text = \"{policy}\"\n\
                 batch_rows = 100\nreaders = 3\n"
            ),
            "public.{table}",
        )
    };
    let pipeline = db.pipeline("p.toml", &text("error"));

    // When planned, the big table is cut into three ranges of its key (one
    // per reader process), the small one is not
    let plan = db.etl(&["plan", pipeline.to_str().unwrap()]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.contains(
            "big -> \"public\".\"big\": 3,000 rows, 3 chunks by ranges of \"id\": [-infinity, 1001), [1001, 2001), [2001, infinity)\n"
        ),
        "{plan:?}"
    );
    assert!(
        plan.stdout
            .contains("small -> \"public\".\"small\": 1 rows\n"),
        "{plan:?}"
    );
    assert!(
        plan.stdout.contains("4 chunks, 3 at a time")
            && plan.stdout.contains("each read by a child process"),
        "{plan:?}"
    );

    // When run with invalid text an error: the two ranges holding it fail,
    // each naming its range, column, row (within the range) and bytes; the
    // middle range lands; constraints wait
    let out = db.etl(&["run", pipeline.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    for expected in [
        "big [-infinity, 1001): source table \"big\": column \"s\": row 700 holds bytes that are not valid EUC-KR (b0 a1 ff 41)",
        "big [2001, infinity): source table \"big\": column \"s\": row 900 holds bytes that are not valid EUC-KR (b0 a1 ff 41)",
        "constraints  not added",
    ] {
        assert!(out.stdout.contains(expected), "{expected}\n{out:?}");
    }
    assert_eq!(
        psql(
            &db.dst,
            "SELECT min(id) || ' ' || max(id) || ' ' || count(*) FROM big"
        ),
        "1001 2000 1000"
    );
    let csv = std::fs::read_to_string(db.dir.path().join("failed_chunks.csv")).unwrap();
    assert_eq!(csv, "big,-infinity,1001\nbig,2001,infinity\n");

    // When the failed ranges are rerun with replace
    std::fs::write(&pipeline, text("replace")).unwrap();
    let rerun = db.etl(&["rerun", pipeline.to_str().unwrap(), "failed_chunks.csv"]);
    // Then all rows land once, both replacements counted, the keys follow
    assert_eq!(rerun.code, 0, "{rerun:?}");
    assert!(rerun.stdout.contains("replaced text big.s 2"), "{rerun:?}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || min(id) || ' ' || max(id) || ' ' || sum(x) || ' ' || \
             count(*) FILTER (WHERE s = '가' || id) || ' ' || count(*) FILTER (WHERE s = '가\u{FFFD}A') FROM big"
        ),
        "3000 3000 1 3000 2250750 2998 2"
    );
    assert!(
        rerun
            .stdout
            .contains("2 of 2 tables have the source's row count"),
        "{rerun:?}"
    );
}

#[test]
fn an_access_97_file_is_read_in_the_code_page_named_by_encoding() {
    let fixtures = fixtures();
    // Given nwind.mdb (Access 97: text in a Windows code page) and a
    // pipeline that names that code page, as a user would
    let file = fixtures.join("access/nwind.mdb");
    let db = TestDb::new("access_code_page");
    let pipeline = db.pipeline(
        "p.toml",
        &odbc_pipeline(
            "nwind",
            &format!("Driver={{MDBTools}};DBQ={};", file.display()),
            "tables = [\"Customers\"]\nencoding = \"windows-1252\"\n",
            "public.{table}",
        ),
    );
    // When planned and run
    let plan = db.etl(&["plan", pipeline.to_str().unwrap()]);
    assert!(
        plan.stdout.contains(
            "MDBTools hands out UTF-8; it converts Access 97 text from windows-1252 (MDB_JET3_CHARSET)"
        ),
        "{plan:?}"
    );
    let out = db.etl(&["run", pipeline.to_str().unwrap()]);
    // Then the text is what Access shows (MDBTools converted it, etl
    // decoded UTF-8 rather than reading UTF-8 bytes as windows-1252)
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FILTER (WHERE \"City\" = 'México D.F.') || ' ' || count(*) FILTER (WHERE \"Address\" LIKE '%Bolívar%') || ' ' || count(*) FILTER (WHERE \"Address\" LIKE '%Ã%') FROM \"Customers\""
        ),
        "5 1 0"
    );
}

#[test]
fn a_reader_process_that_dies_fails_only_its_range_and_rerun_loads_it() {
    // Given a table big enough that its readers live a while
    let db = TestDb::new("odbc_reader_dies");
    let file = db.dir.path().join("big.sqlite");
    sqlite(
        &file,
        "CREATE TABLE big (id INTEGER PRIMARY KEY, s TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600000)
         INSERT INTO big SELECT i, 'row ' || i FROM n;",
    );
    let pipeline = db.pipeline(
        "p.toml",
        &odbc_pipeline(
            "dies",
            &format!("Driver={{SQLite3}};Database={};StepAPI=1", file.display()),
            "tables = [\"big\"]\nbatch_rows = 1000\nreaders = 2\n",
            "public.{table}",
        ),
    );
    let (mut child, _lines) =
        crate::support::spawn_etl(&db, &["run", pipeline.to_str().unwrap()], &[]);

    // When one reader process dies mid-table (as a crashing driver would)
    let pid = child.id().to_string();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let reader = loop {
        let out = std::process::Command::new("pgrep")
            .args(["-P", &pid])
            .output()
            .unwrap();
        if let Some(first) = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
        {
            break first.to_string();
        }
        assert!(
            std::time::Instant::now() < until,
            "no reader process started"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let killed = std::process::Command::new("kill")
        .args(["-9", &reader])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();

    // Then the run goes on and ends, that reader's range fails naming
    // why, nothing of it is committed, and the constraints wait
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("ended with signal: 9 (SIGKILL); a driver crash?"),
        "{stdout}"
    );
    assert!(stdout.contains("constraints  not added"), "{stdout}");
    let csv = std::fs::read_to_string(db.dir.path().join("failed_chunks.csv")).unwrap();
    assert!(
        csv == "big,-infinity,300001\n" || csv == "big,300001,infinity\n",
        "{csv}"
    );
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM big"), "300000");

    // When the failed range is rerun, the table is whole
    let rerun = db.etl(&["rerun", pipeline.to_str().unwrap(), "failed_chunks.csv"]);
    assert_eq!(rerun.code, 0, "{rerun:?}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || sum(id) FROM big"
        ),
        "600000 600000 180000300000"
    );
}

#[test]
fn cp949_text_loads_byte_exact_from_psqlodbc_into_a_table() {
    // Given Korean text in a PostgreSQL source read through the ANSI
    // driver as UHC
    let utf8 = crate::support::korean_text();
    let db = TestDb::new("odbc_cp949_run");
    psql(
        &db.src,
        &format!(
            "CREATE TABLE korean (n int, line text); \
             INSERT INTO korean SELECT n, line FROM unnest(string_to_array($etl${utf8}$etl$, E'\\n')) WITH ORDINALITY AS u(line, n)"
        ),
    );
    let pipeline = db.pipeline(
        "k.toml",
        &odbc_pipeline(
            "korean",
            &psqlodbc_uhc(&db.src),
            "query = \"SELECT n, line FROM korean\"\nencoding = \"cp949\"\n",
            "public.korean",
        ),
    );
    // When run
    let out = db.etl(&["run", pipeline.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    // Then the target's text equals the UTF-8 text, line for line
    assert_eq!(
        psql(
            &db.dst,
            "SELECT string_agg(line, E'\\n' ORDER BY n) FROM korean"
        ),
        utf8.trim_end_matches('\n')
    );
    assert!(
        out.stdout
            .contains("1 of 1 tables have the source's row count"),
        "{out:?}"
    );
}

#[test]
fn korean_table_and_column_names_migrate_through_a_cp949_driver() {
    // Given a PostgreSQL source with Korean table and column names (똠 is
    // in CP949 only), read through the ANSI driver as UHC: names come as
    // CP949 bytes, and the SQL etl sends must be CP949 too
    let db = TestDb::new("odbc_korean_names");
    psql(
        &db.src,
        "CREATE TABLE \"주문\" (\"번호\" int PRIMARY KEY, \"품목\" text); \
         CREATE TABLE \"주문상세\" (\"번호\" int PRIMARY KEY, \"주문번호\" int REFERENCES \"주문\", \"똠양꿍\" numeric(10,2)); \
         INSERT INTO \"주문\" VALUES (1, '똠양꿍'), (2, '펲시'); \
         INSERT INTO \"주문상세\" VALUES (10, 1, 12.50), (11, 1, NULL), (12, 2, 3.25);",
    );
    let pipeline = db.pipeline(
        "names.toml",
        &odbc_pipeline(
            "names",
            &psqlodbc_uhc(&db.src),
            "tables = [\"*\"]\nencoding = \"cp949\"\n",
            "public.{table}",
        ),
    );

    // When the whole database is migrated
    let out = db.etl(&["run", pipeline.to_str().unwrap()]);

    // Then both tables arrive under their Korean names, parents first, with
    // their keys, and the counts (queried in CP949) match
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("2 of 2 tables have the source's row count"),
        "{out:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT string_agg(\"품목\", ',' ORDER BY \"번호\") FROM \"주문\""
        ),
        "똠양꿍,펲시"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT sum(\"똠양꿍\")::text || ' ' || count(*) FROM \"주문상세\""
        ),
        "15.75 3"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT string_agg(conname || ':' || contype::text, ',' ORDER BY conname) FROM pg_constraint \
             WHERE conrelid IN ('\"주문\"'::regclass, '\"주문상세\"'::regclass)"
        ),
        "주문_pkey:p,주문상세_pkey:p,주문상세_주문번호_fkey:f"
    );
}

#[test]
fn odbc_pipelines_name_what_windows_and_migrations_each_need() {
    let db = TestDb::new("odbc_config");
    // Time windows over a whole database: refused, with the way out
    let windows = db.pipeline(
        "windows.toml",
        r#"name = "bad"
[source]
type = "odbc"
connection_string = "Driver={SQLite3};Database=x.db"
tables = ["*"]
encoding = "klingon"
[chunks]
time_column = "t"
[[sinks]]
type = "postgres"
url = "${ETL_DST_URL}"
table = "public.t"
mode = "upsert"
"#,
    );
    let out = db.etl(&["validate", windows.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    for expected in [
        "line 5, source.tables: time windows ([chunks] time_column) read one query or one table",
        "line 6, source.encoding: encoding \"klingon\" is not a known label",
    ] {
        assert!(out.stderr.contains(expected), "{expected}\n{out:?}");
    }
    // A migration (no time column): a target without {table}, upsert, a
    // stage and a key column are each named
    let migration = db.pipeline(
        "migration.toml",
        r#"name = "bad"
[source]
type = "odbc"
connection_string = "Driver={SQLite3};Database=x.db"
tables = ["*"]
[chunks]
key_column = "k"
[[transforms]]
type = "sql"
query = "SELECT * FROM input"
[[sinks]]
type = "postgres"
url = "${ETL_DST_URL}"
table = "public.t"
mode = "upsert"
"#,
    );
    let out = db.etl(&["validate", migration.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    for expected in [
        "line 7, chunks.key_column: without [chunks] time_column an ODBC source runs one chunk per table",
        "line 8, transforms: transforms run on time-window chunks",
        "line 14, sinks[0].table: a whole-database source loads many tables; write the target as \"schema.{table}\"",
        "line 15, sinks[0].mode: upsert needs time-window chunks on an ODBC source",
    ] {
        assert!(out.stderr.contains(expected), "{expected}\n{out:?}");
    }
}
