//! Real databases on servers that allow few connections (issue 30): a
//! whole database of 1,000 tables (foreign-key chains, partitioned tables,
//! large objects) moved with four workers into a server started with
//! `max_connections = 30`, connections bounded by the workers, never by
//! the number of tables; two processes sharing one plan.

use crate::support::{psql, repo, spawn_etl, OwnServer, TestDb};

/// 1,000 tables of 20 rows, each row referencing a row of the table
/// before it; three partitioned tables of two partitions; three large
/// objects.
fn load_many_tables(db: &TestDb) {
    psql(
        &db.src,
        "DO $$ BEGIN \
           FOR i IN 1..1000 LOOP \
             EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, parent int %s, v text)', i, \
               CASE WHEN i > 1 THEN format('REFERENCES t%s (id)', i - 1) ELSE '' END); \
             EXECUTE format('INSERT INTO t%s SELECT g, %s, md5(g::text || %L) FROM generate_series(1, 20) g', i, \
               CASE WHEN i > 1 THEN 'g' ELSE 'NULL' END, i); \
           END LOOP; \
           FOR i IN 1..3 LOOP \
             EXECUTE format('CREATE TABLE p%s (at date NOT NULL, n int) PARTITION BY RANGE (at)', i); \
             EXECUTE format('CREATE TABLE p%s_2024 PARTITION OF p%s FOR VALUES FROM (''2024-01-01'') TO (''2025-01-01'')', i, i); \
             EXECUTE format('CREATE TABLE p%s_2025 PARTITION OF p%s FOR VALUES FROM (''2025-01-01'') TO (''2026-01-01'')', i, i); \
             EXECUTE format('INSERT INTO p%s SELECT date ''2024-06-01'' + g, g FROM generate_series(1, 400) g', i); \
           END LOOP; \
         END $$; \
         SELECT lo_from_bytea(91001, 'first object'), lo_from_bytea(91002, 'second'), lo_from_bytea(91003, decode('00ff10', 'hex'));",
    );
}

/// Count and md5 of every user table's rows, and of the large objects.
fn fingerprint(url: &str) -> String {
    psql(
        url,
        "SELECT string_agg(format('%s:%s', c.relname, \
            (xpath('/row/m/text()', query_to_xml(format('SELECT count(*) || md5(coalesce(string_agg(t::text, ''|'' ORDER BY t::text), '''')) AS m FROM ONLY %I t', c.relname), false, true, '')))[1]), \
            ',' ORDER BY c.relname) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname = 'public'",
    ) + &psql(
        url,
        "SELECT string_agg(loid || '=' || md5(lo_get(loid)), ',' ORDER BY loid) FROM (SELECT DISTINCT loid FROM pg_largeobject) l",
    )
}

fn pipeline(db: &TestDb, workers: usize) -> String {
    let text = std::fs::read_to_string(repo().join("pipelines/postgres-database.toml"))
        .unwrap()
        .replace("workers = 2", &format!("workers = {workers}"));
    db.pipeline("many.toml", &text)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_thousand_tables_move_through_a_server_of_thirty_connections() {
    // Given a server that allows 30 connections, holding both databases
    let server = OwnServer::start(&["max_connections=30"]);
    let db = server.test_db("many");
    load_many_tables(&db);
    let p = pipeline(&db, 4);

    // When the whole database is moved with four workers
    let out = db.etl(&["run", &p]);

    // Then it loads every table, holding at most 2 x 4 + 2 connections to
    // each database, and says so
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(fingerprint(&db.src), fingerprint(&db.dst));
    let peaks: Vec<usize> = out
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("connections "))
        .flat_map(|l| l.split(", "))
        .filter_map(|p| {
            let words: Vec<&str> = p.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "peak")?;
            words.get(at + 1)?.parse().ok()
        })
        .collect();
    assert!(
        !peaks.is_empty(),
        "no peak connections in the summary: {out:?}"
    );
    assert!(peaks.iter().all(|&p| p <= 10), "{peaks:?} {out:?}");
    // and etl status shows the run's peaks, from the ledger
    let status = db.etl(&["status", &p]);
    let line = status
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("connections  last run"))
        .unwrap_or_else(|| panic!("no connections line: {status:?}"));
    for db_name in ["many_src peak ", "many_dst peak "] {
        assert!(line.contains(db_name), "{line}");
    }
    assert!(line.contains(" of at most 10"), "{line}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
        ),
        "999"
    );
}

#[test]
fn two_processes_on_one_plan_empty_nothing_the_other_committed() {
    // Given a table cut into many ranges of its key
    let db = TestDb::new("two_processes");
    psql(
        &db.src,
        "CREATE TABLE big (id int8 PRIMARY KEY, v text); \
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 300007) g;",
    );
    let text = std::fs::read_to_string(repo().join("pipelines/postgres-database.toml"))
        .unwrap()
        .replace("range_rows = 1000000", "range_rows = 20000")
        .replace("workers = 2", "workers = 1");
    let p = db.pipeline("two.toml", &text);
    let p = p.to_str().unwrap();

    // When a first process has committed ranges and a second one starts
    // on the same plan while the first still loads
    let resume = db.dir.path().join("resume");
    let pause = [
        ("ETL_TEST_PAUSE_AT", "write:1"),
        ("ETL_TEST_RESUME_FILE", resume.to_str().unwrap()),
    ];
    let (first, first_lines) = spawn_etl(&db, &["run", p], &pause);
    crate::support::wait_for_line(&first_lines, "ETL_TEST_PAUSE_AT: paused");
    // (the first goes on once the second has ended: it holds its range
    // until then, so the second ends while the first still loads)
    let (second, _) = spawn_etl(&db, &["run", p], &[]);
    let second = second.wait_with_output().unwrap();
    std::fs::write(&resume, "").unwrap();
    let first = first.wait_with_output().unwrap();

    // Then both end cleanly and every row is there exactly once; the
    // second, done while the first still loaded, says so, and the first,
    // the last to load, adds the constraints and says done
    assert!(first.status.success(), "{first:?}");
    assert!(second.status.success(), "{second:?}");
    let said = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        said(&second).contains(
            "Migration postgres-database not done: this process loaded its chunks, another etl process still loads the others"
        ),
        "{second:?}"
    );
    assert!(
        said(&first).contains("Migration postgres-database done"),
        "{first:?}"
    );
    let sql = "SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || md5(string_agg(v, ',' ORDER BY id)) FROM big";
    assert_eq!(psql(&db.dst, sql), psql(&db.src, sql));
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FILTER (WHERE status = 'done') || ' of ' || count(*) FROM etl.chunk_ledger"
        ),
        "16 of 16"
    );
}

#[test]
fn rows_inserted_while_the_run_reads_land_in_the_ranges_not_read_yet() {
    // Given a table of even keys cut into ten ranges, one worker
    let db = TestDb::new("inserts_while_read");
    psql(
        &db.src,
        "CREATE TABLE big (id int8 PRIMARY KEY, v text); \
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(2, 200000, 2) g;",
    );
    let text = std::fs::read_to_string(repo().join("pipelines/postgres-database.toml"))
        .unwrap()
        .replace("range_rows = 1000000", "range_rows = 10000")
        .replace("workers = 2", "workers = 1");
    let p = db.pipeline("inserts.toml", &text);
    let p = p.to_str().unwrap();

    // When, as the first range is being written, the source gets rows in a
    // range not read yet and rows past the key's MAX at planning
    let resume = db.dir.path().join("resume");
    let (child, lines) = spawn_etl(
        &db,
        &["run", p],
        &[
            ("ETL_TEST_PAUSE_AT", "write:1"),
            ("ETL_TEST_RESUME_FILE", resume.to_str().unwrap()),
        ],
    );
    crate::support::wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    psql(
        &db.src,
        "INSERT INTO big SELECT g, 'added ' || g FROM generate_series(150001, 150999, 2) g; \
         INSERT INTO big SELECT g, 'past max ' || g FROM generate_series(200001, 201000) g;",
    );
    std::fs::write(&resume, "").unwrap();
    let out = child.wait_with_output().unwrap();

    // Then the run ends 0 and the target holds every row, the added ones
    // included, once
    assert!(out.status.success(), "{out:?}");
    let sql = "SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || md5(string_agg(v, ',' ORDER BY id)) FROM big";
    let source = psql(&db.src, sql);
    assert!(source.starts_with("101500 101500 "), "{source}");
    assert_eq!(psql(&db.dst, sql), source);
}
