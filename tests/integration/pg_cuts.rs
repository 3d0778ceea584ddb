//! How a whole-database migration cuts its tables: from the source's
//! statistics, no table read to count it, and the cut a first run made
//! kept for the run that resumes it.

use crate::pg_database::{assert_equal, load, pipeline};
use crate::support::{psql, seq_scans, spawn_etl, wait_for_line, TestDb};

#[test]
fn a_migration_cuts_tables_from_statistics_and_a_resumed_run_keeps_the_first_cut() {
    // Given a source whose statistics are current (the fixture ends with
    // ANALYZE), and the shipped pipeline cutting ranges of 10,000 rows
    let db = TestDb::new("pgdb_cuts");
    load(&db, 30_000);
    let text = ranges_of_10000();
    let p = db.pipeline("whole.toml", &text);
    let p = p.to_str().unwrap();
    let big = ["sales.orders", "public.journal"];
    let before: Vec<i64> = big.iter().map(|t| seq_scans(&db.src, t)).collect();

    // When it is planned
    let plan = db.etl(&["plan", p]);

    // Then sales.orders is cut into three ranges of its key and
    // public.journal into two of its blocks, and neither was read to
    // count its rows
    assert_eq!(plan.code, 0, "{plan:?}");
    for want in [
        "sales.orders -> \"sales\".\"orders\": 28,500 rows, 3 chunks by ranges of \"id\"",
        "public.journal -> \"public\".\"journal\": 15,000 rows, 2 chunks by ranges of \"ctid\"",
        "Rows as the source's statistics estimate them",
    ] {
        assert!(plan.stdout.contains(want), "{want}: {plan:?}");
    }
    let after: Vec<i64> = big.iter().map(|t| seq_scans(&db.src, t)).collect();
    assert_eq!(after, before, "{plan:?}");
    // (a count is seen where there is one)
    psql(&db.src, "SELECT count(*) FROM ONLY public.journal");
    assert_eq!(seq_scans(&db.src, "public.journal"), before[1] + 1);

    // When a run is killed after its first chunk, and then the
    // statistics say sales.orders holds 5,000 rows
    killed_after_the_first_chunk(&db, p);
    psql(&db.src, FEWER_ROWS);
    // (which a new migration would read whole, one chunk)
    let fresh = db.pipeline(
        "fresh.toml",
        &text.replace("name = \"postgres-database\"", "name = \"fresh\""),
    );
    let fresh = db.etl(&["plan", fresh.to_str().unwrap()]);
    assert!(
        fresh
            .stdout
            .contains("sales.orders -> \"sales\".\"orders\": 5,000 rows, binary COPY"),
        "{fresh:?}"
    );

    // Then the plan and the resumed run cut it as the first run did:
    // three ranges, every row once
    let plan = db.etl(&["plan", p]);
    assert!(
        plan.stdout.contains(
            "sales.orders -> \"sales\".\"orders\": 28,500 rows, 3 chunks by ranges of \"id\""
        ),
        "{plan:?}"
    );
    resumed_in_three_ranges(&db, p);
}

#[test]
fn a_migration_begun_by_an_etl_that_kept_no_cut_resumes_cut_by_counting() {
    // Given a run killed after the first range of sales.orders, by an etl
    // that kept no cut (its phase log without them), and statistics that
    // then say sales.orders holds 5,000 rows
    let db = TestDb::new("pgdb_cuts_unkept");
    load(&db, 30_000);
    let p = db.pipeline("whole.toml", &ranges_of_10000());
    let p = p.to_str().unwrap();
    killed_after_the_first_chunk(&db, p);
    let loaded = "SELECT count(*) FROM etl.chunk_ledger WHERE chunk_key = 'sales.orders' AND status = 'done'";
    assert_eq!(psql(&db.dst, loaded), "1");
    psql(
        &db.dst,
        "DELETE FROM etl.phase_log WHERE phase = 'discover'",
    );
    psql(&db.src, FEWER_ROWS);

    // When it is resumed, then the rest of sales.orders is cut as the
    // range loaded was, by counting: three ranges, every row once
    resumed_in_three_ranges(&db, p);
}

/// The statistics of sales.orders saying it holds 5,000 rows (it holds
/// 28,500), as if it had changed since the first run.
const FEWER_ROWS: &str =
    "UPDATE pg_class SET reltuples = 5000 WHERE oid = 'sales.orders'::regclass";

/// The shipped pipeline, cutting ranges of 10,000 rows.
fn ranges_of_10000() -> String {
    let shipped = std::fs::read_to_string(pipeline()).unwrap();
    let text = shipped.replace("range_rows = 1000000", "range_rows = 10000");
    assert_ne!(text, shipped);
    text
}

/// Runs pipeline `p` on one worker and kills it once its first chunk
/// (a range of sales.orders, the biggest table) is committed.
fn killed_after_the_first_chunk(db: &TestDb, p: &str) {
    let (mut child, lines) = spawn_etl(
        db,
        &["run", "--workers", "1", p],
        &[("ETL_TEST_PAUSE_AT", "commit:1")],
    );
    wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    child.kill().expect("SIGKILL etl");
    child.wait().unwrap();
}

/// Runs `p` again: it completes, every table equals the source's, and
/// sales.orders was loaded in three ranges.
fn resumed_in_three_ranges(db: &TestDb, p: &str) {
    let out = db.etl(&["run", p]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_equal(db);
    let ranges = psql(
        &db.dst,
        "SELECT count(*) FROM etl.chunk_ledger WHERE target = '\"sales\".\"orders\"' AND status = 'done'",
    );
    assert_eq!(ranges, "3");
}
