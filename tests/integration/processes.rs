//! Several processes, one plan (issue 30): three `etl run` processes on
//! one whole-database pipeline, started at once and staggered, from a
//! PostgreSQL database, a SQLite file through ODBC and an Access file
//! read natively. Every chunk loads exactly once: the target equals what
//! one process alone loads (or the source), every process ends 0, and the
//! ones that end while another still loads say so.

use std::time::Duration;

use crate::odbc::fixtures;
use crate::pg_database::{assert_equal, load};
use crate::support::{psql, repo, spawn_etl, sqlite, TestDb};

/// How the three processes start.
#[derive(Clone, Copy, Debug)]
enum Start {
    AtOnce,
    /// 0.3 s apart.
    Staggered,
}

/// Runs `etl run pipeline` as three processes on `db`, started as `start`
/// says, with `env`; their exit codes and stdouts.
fn three_runs(
    db: &TestDb,
    pipeline: &str,
    env: &[(&str, &str)],
    start: Start,
) -> Vec<(Option<i32>, String)> {
    let mut children = Vec::new();
    for i in 0..3 {
        if matches!(start, Start::Staggered) && i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        children.push(spawn_etl(db, &["run", pipeline], env));
    }
    children
        .into_iter()
        .map(|(child, lines)| {
            let out = child.wait_with_output().unwrap();
            let stderr: Vec<String> = lines.iter().collect();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            (
                out.status.code(),
                format!("{stdout}\n--- stderr\n{}", stderr.join("\n")),
            )
        })
        .collect()
}

/// Every process ended 0; the last to load added the constraints and
/// said done, any that ended while another loaded said so.
fn assert_all_ended_well(runs: &[(Option<i32>, String)], name: &str, start: Start) {
    for (code, out) in runs {
        assert_eq!(*code, Some(0), "{start:?}: {out}");
        assert!(
            out.contains(&format!("Migration {name} done"))
                || out.contains(&format!(
                    "Migration {name} not done: this process loaded its chunks, another etl process still loads the others"
                )),
            "{start:?}: {out}"
        );
    }
    assert!(
        runs.iter()
            .any(|(_, out)| out.contains(&format!("Migration {name} done"))),
        "{start:?}: none added the constraints: {runs:?}"
    );
}

/// Each table of `schema` as `name count md5`, for exact comparisons.
fn tables(url: &str, schema: &str) -> String {
    psql(
        url,
        &format!(
            "SELECT string_agg(format('%s %s', c.relname, \
             (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) || '' '' || coalesce(md5(string_agg(t::text, ''|'' ORDER BY t::text)), '''') AS c FROM %I.%I t', '{schema}', c.relname), false, true, '')))[1]::text), E'\\n' ORDER BY c.relname) \
             FROM pg_class c WHERE c.relnamespace = '{schema}'::regnamespace AND c.relkind = 'r'"
        ),
    )
}

#[test]
fn three_processes_move_a_postgresql_database_once() {
    for start in [Start::AtOnce, Start::Staggered] {
        // Given a database whose big tables are cut into many ranges
        let db = TestDb::new(&format!("procs_pg_{start:?}").to_lowercase());
        load(&db, 30_000);
        let text = std::fs::read_to_string(repo().join("pipelines/postgres-database.toml"))
            .unwrap()
            .replace("range_rows = 1000000", "range_rows = 2000");
        let p = db.pipeline("three.toml", &text);

        // When three processes run it
        let runs = three_runs(&db, p.to_str().unwrap(), &[], start);

        // Then each ends well and the target equals the source, schema,
        // rows, sequences and large objects
        assert_all_ended_well(&runs, "postgres-database", start);
        assert_equal(&db);
    }
}

#[test]
fn three_processes_move_a_sqlite_database_once() {
    // Given a SQLite file: 30,000 rows cut into ranges of 1,000, and a
    // table referencing it
    let source = tempfile::tempdir().unwrap();
    let file = source.path().join("shop.sqlite");
    sqlite(
        &file,
        "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price DOUBLE);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000)
         INSERT INTO item SELECT i, 'item ' || i, i * 0.25 FROM n;
         CREATE TABLE stock (id INTEGER PRIMARY KEY, item_id INTEGER REFERENCES item(id), qty INTEGER);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO stock SELECT i, i * 6, i % 17 FROM n;",
    );
    let text = format!(
        r#"name = "shop"
[source]
type = "odbc"
connection_string = "Driver={{SQLite3}};Database={}"
tables = ["*"]
[chunks]
workers = 2
range_rows = 1000
[[sinks]]
type = "postgres"
url = "${{ETL_DST_URL}}"
table = "public.{{table}}"
create_table = true
"#,
        file.display()
    );
    // What one process alone loads.
    let alone = TestDb::new("procs_sqlite_alone");
    let p = alone.pipeline("shop.toml", &text);
    let out = alone.etl(&["run", p.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let want = tables(&alone.dst, "public");
    assert!(
        want.contains("item 30000 ") && want.contains("stock 5000 "),
        "{want}"
    );

    for start in [Start::AtOnce, Start::Staggered] {
        // When three processes run it
        let db = TestDb::new(&format!("procs_sqlite_{start:?}").to_lowercase());
        let p = db.pipeline("shop.toml", &text);
        let runs = three_runs(&db, p.to_str().unwrap(), &[], start);

        // Then each ends well and the target holds what one alone loads
        assert_all_ended_well(&runs, "shop", start);
        assert_eq!(tables(&db.dst, "public"), want, "{start:?}");
        assert_eq!(
            psql(
                &db.dst,
                "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
            ),
            "1"
        );
    }
}

#[test]
fn three_processes_move_an_access_database_once() {
    // Given Northwind 2007 and what one process alone loads from it
    let file = fixtures().join("access/Northwind.accdb");
    let file = file.to_str().unwrap();
    let pipeline = repo().join("pipelines/access-native.toml");
    let pipeline = pipeline.to_str().unwrap();
    let alone = TestDb::new("procs_access_alone");
    let env = [("ETL_ACCESS_FILE", file)];
    let (child, _) = spawn_etl(&alone, &["run", pipeline], &env);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let want = tables(&alone.dst, "public");
    assert!(want.lines().count() >= 20, "{want}");

    for start in [Start::AtOnce, Start::Staggered] {
        // When three processes run it
        let db = TestDb::new(&format!("procs_access_{start:?}").to_lowercase());
        let runs = three_runs(&db, pipeline, &env, start);

        // Then each ends well and the target holds what one alone loads
        assert_all_ended_well(&runs, "access-native", start);
        assert_eq!(tables(&db.dst, "public"), want, "{start:?}");
    }
}
