//! etl built without SQL stages (`--no-default-features`: no DataFusion),
//! as scripts/demo.sh builds it for a quick first run. scripts/test.sh
//! builds it beside the whole etl and names it in ETL_WITHOUT_SQL_BIN.

use std::path::PathBuf;

use crate::pivot::{assert_equal_to_reference, etl_same_db};
use crate::support::{etl_built, fingerprint, psql, repo, Output, TestDb};

/// The build without SQL stages; its absence fails the test.
fn without_sql() -> PathBuf {
    let bin = std::env::var_os("ETL_WITHOUT_SQL_BIN").map(PathBuf::from).expect(
        "ETL_WITHOUT_SQL_BIN is not set: it names etl built with `cargo build --no-default-features --bin etl` (scripts/test.sh builds it)",
    );
    assert!(
        bin.is_file(),
        "ETL_WITHOUT_SQL_BIN: no file at {}",
        bin.display()
    );
    bin
}

fn run(db: &TestDb, args: &[&str], dst: &str) -> Output {
    etl_built(
        &without_sql(),
        db.dir.path(),
        args,
        &[("ETL_SRC_URL", &db.src), ("ETL_DST_URL", dst)],
        "",
    )
}

#[test]
fn the_demo_build_copies_and_pivots_and_refuses_sql_stages_saying_how_to_build_them() {
    // Given two ships of readings
    let db = TestDb::new("without_sql");
    db.load_timeseries(2, 20, 1500);
    let copy = repo().join("pipelines/ships-copy.toml");
    let pivot = repo().join("pipelines/ships-pivot.toml");
    let wide = repo().join("pipelines/ships-wide.toml");

    // When the demo's two pipelines run on the build without SQL stages
    let out = run(&db, &["run", copy.to_str().unwrap()], &db.dst);
    assert_eq!(out.code, 0, "{out:?}");
    let out = run(&db, &["run", pivot.to_str().unwrap()], &db.src);
    assert_eq!(out.code, 0, "{out:?}");

    // Then the copy equals the source and each ship's wide table equals
    // the in-database pivot
    let table = "tenant.tbl_data_timeseries";
    let order = "ship_id, created_time, data_channel_id";
    assert_eq!(
        fingerprint(&db.dst, table, order),
        fingerprint(&db.src, table, order)
    );
    assert!(
        out.stdout.contains("3,000 wide rows from 60,000 readings"),
        "{out:?}"
    );
    for ship in ["IMO9900001", "IMO9900002"] {
        let base = format!("\"wide\".\"tbl_data_timeseries_{ship}\"");
        assert_equal_to_reference(&db, table, &base, ship, "");
    }

    // And a pipeline with a SQL stage is refused before anything runs,
    // naming the stage and the command that builds the whole etl
    for command in ["validate", "run"] {
        let out = run(&db, &[command, wide.to_str().unwrap()], &db.src);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(
            out.stderr.contains(
                "transforms[0].query: needs SQL stages, which this etl was built without"
            ) && out.stderr.contains("cargo build --release --locked"),
            "{out:?}"
        );
    }
    assert_eq!(
        psql(
            &db.src,
            "SELECT count(*) FROM etl.chunk_ledger WHERE pipeline = 'ships-wide'"
        ),
        "0"
    );

    // While the whole etl validates it
    let out = etl_same_db(&db, &["validate", wide.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
}
