//! `etl verify`: per chunk, row counts and order-independent checksums of
//! source and targets; a changed value, a lost row or a swapped file is
//! named by its chunk, and the exit code says so.

use crate::support::{etl_in, psql, repo, TestDb};

#[test]
fn verify_finds_a_changed_value_and_a_missing_row() {
    // Given a completed copy of 2 ships x 3 days
    let db = TestDb::new("verify_pg");
    db.load_timeseries(2, 3, 3 * 1440);
    let p = repo().join("pipelines/ships-copy.toml");
    let p = p.to_str().unwrap();
    assert_eq!(db.etl(&["run", p]).code, 0);

    // When verified
    let ok = db.etl(&["verify", p]);
    // Then every chunk is equal
    assert_eq!(ok.code, 0, "{ok:?}");
    assert_eq!(
        ok.stdout,
        "Verified 6 chunks of pipeline ships-copy against 1 sink: 6 equal, 0 differ\n"
    );

    // And --quick, from the checksums recorded as the chunks committed
    // (the source's COPY data, row by row), agrees without the source
    let quick = db.etl(&["verify", "--quick", p]);
    assert_eq!(quick.code, 0, "{quick:?}");
    assert!(
        quick.stdout.starts_with(
            "Verified 6 chunks of pipeline ships-copy against 1 sink: 6 equal, 0 differ\nThe target's rows were compared with the checksums recorded"
        ),
        "{quick:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FILTER (WHERE checksum LIKE 'copy1 4320 %') FROM etl.chunk_ledger"
        ),
        "6"
    );

    // When one value changes in one chunk and a row disappears from another
    psql(&db.dst, "UPDATE tenant.tbl_data_timeseries SET str_v = 'tampered' WHERE ship_id = 'IMO9900001' AND created_time = '2025-06-02 10:00:00+00' AND data_channel_id = 'ch_0001'");
    psql(&db.dst, "DELETE FROM tenant.tbl_data_timeseries WHERE ship_id = 'IMO9900002' AND created_time = '2025-06-03 23:59:00+00' AND data_channel_id = 'ch_0003'");
    let bad = db.etl(&["verify", p]);

    // Then both chunks are listed, with what differs, and the exit code is 1
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stdout.starts_with(
            "Verified 6 chunks of pipeline ships-copy against 1 sink: 4 equal, 2 differ\n"
        ),
        "{bad:?}"
    );
    assert!(bad.stdout.contains("IMO9900001  2025-06-02 00:00:00         2025-06-03 00:00:00                4,320         4,320  differs "), "{bad:?}");
    assert!(bad.stdout.contains("IMO9900002  2025-06-03 00:00:00         2025-06-04 00:00:00                4,320         4,319  differs "), "{bad:?}");

    // And --quick finds the same two chunks, the source unread
    let quick = db.etl(&["verify", "--quick", p]);
    assert_eq!(quick.code, 1, "{quick:?}");
    assert!(quick.stdout.contains("4 equal, 2 differ"), "{quick:?}");
    assert!(quick.stdout.contains("IMO9900001  2025-06-02 00:00:00         2025-06-03 00:00:00                4,320         4,320  differs "), "{quick:?}");
    assert!(quick.stdout.contains("IMO9900002  2025-06-03 00:00:00         2025-06-04 00:00:00                4,320         4,319  differs "), "{quick:?}");

    // And with no index on the target (heap only), the table is read once
    // for all six chunks, in two ranges of its blocks (one per worker: the
    // table laid out as one ship's rows, 15 MB of deleted rows, the other
    // ship's), and both ways still name the same two chunks
    psql(
        &db.dst,
        "ALTER TABLE tenant.tbl_data_timeseries DROP CONSTRAINT tbl_data_timeseries_pkey",
    );
    psql(
        &db.dst,
        "CREATE TABLE keep AS SELECT * FROM tenant.tbl_data_timeseries; \
         TRUNCATE tenant.tbl_data_timeseries; \
         INSERT INTO tenant.tbl_data_timeseries SELECT * FROM keep WHERE ship_id = 'IMO9900001'; \
         INSERT INTO tenant.tbl_data_timeseries (ship_id, data_channel_id, created_time, value_format) \
           SELECT 'pad', 'pad', now(), 'pad' FROM generate_series(1, 150000); \
         INSERT INTO tenant.tbl_data_timeseries SELECT * FROM keep WHERE ship_id = 'IMO9900002'; \
         DELETE FROM tenant.tbl_data_timeseries WHERE ship_id = 'pad'; DROP TABLE keep",
    );
    assert_eq!(
        psql(&db.dst, "SELECT pg_relation_size('tenant.tbl_data_timeseries') > 1024 * 8192, count(DISTINCT (ctid::text::point)[0] > 1000) FROM tenant.tbl_data_timeseries"),
        "t|2"
    );
    for quick in [false, true] {
        let args: &[&str] = if quick {
            &["verify", "--quick", p]
        } else {
            &["verify", p]
        };
        let heap = etl_in(
            db.dir.path(),
            args,
            &[
                ("ETL_SRC_URL", db.src.as_str()),
                ("ETL_DST_URL", db.dst.as_str()),
                ("RUST_LOG", "etl_sink=debug"),
            ],
        );
        assert_eq!(heap.code, 1, "{heap:?}");
        assert!(heap.stdout.contains("4 equal, 2 differ"), "{heap:?}");
        assert!(heap.stdout.contains("IMO9900001  2025-06-02 00:00:00         2025-06-03 00:00:00                4,320         4,320  differs "), "{heap:?}");
        assert!(heap.stdout.contains("IMO9900002  2025-06-03 00:00:00         2025-06-04 00:00:00                4,320         4,319  differs "), "{heap:?}");
        assert_eq!(
            heap.stderr
                .matches("the table is read once for all of them")
                .count(),
            1,
            "{heap:?}"
        );
        assert!(heap.stderr.contains("parts=2"), "{heap:?}");
    }

    // And a chunk without a recorded checksum is said to be unverified
    psql(&db.dst, "UPDATE etl.chunk_ledger SET checksum = NULL WHERE chunk_key = 'IMO9900002' AND start_at = '2025-06-01 00:00:00+00'");
    let quick = db.etl(&["verify", "--quick", "--key", "IMO9900002", p]);
    assert_eq!(quick.code, 1, "{quick:?}");
    assert!(quick.stdout.contains("1 equal, 1 differ"), "{quick:?}");
    assert!(
        quick.stdout.contains("1 chunk recorded no checksum (not loaded yet, or loaded by an etl before checksums were recorded): run etl verify without --quick for it."),
        "{quick:?}"
    );

    // And a sample checks only that many chunks
    let sample = db.etl(&["verify", "--sample", "2", p]);
    assert!(
        sample.stdout.starts_with("Sampling 2 of 6 chunks (seed "),
        "{sample:?}"
    );
    assert!(
        sample
            .stdout
            .contains("Verified 2 chunks of pipeline ships-copy"),
        "{sample:?}"
    );
}

#[test]
fn verify_reads_parquet_files_back() {
    // Given a staging run (PostgreSQL and Parquet)
    let db = TestDb::new("verify_parquet");
    db.load_timeseries(2, 3, 2 * 1440);
    let staging = db.dir.path().join("staging");
    let p = repo().join("pipelines/ships-staging.toml");
    let env = [
        ("ETL_SRC_URL", db.src.as_str()),
        ("ETL_DST_URL", db.dst.as_str()),
        ("ETL_STAGING", staging.to_str().unwrap()),
    ];
    let run = etl_in(db.dir.path(), &["run", p.to_str().unwrap()], &env);
    assert_eq!(run.code, 0, "{run:?}");

    // When verified as written, then with one file replaced by another chunk's and one removed
    let ok = etl_in(db.dir.path(), &["verify", p.to_str().unwrap()], &env);
    let dir = staging.join("ships-staging");
    std::fs::copy(
        dir.join("IMO9900001/20250601T000000Z.parquet"),
        dir.join("IMO9900001/20250602T000000Z.parquet"),
    )
    .unwrap();
    std::fs::remove_file(dir.join("IMO9900002/20250601T000000Z.parquet")).unwrap();
    let bad = etl_in(db.dir.path(), &["verify", p.to_str().unwrap()], &env);

    // Then the first is equal everywhere, the second names both files' chunks
    assert_eq!(ok.code, 0, "{ok:?}");
    assert_eq!(
        ok.stdout,
        "Verified 4 chunks of pipeline ships-staging against 2 sinks: 8 equal, 0 differ\n"
    );
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stdout.contains("6 equal, 2 differ"), "{bad:?}");
    assert!(bad.stdout.contains("IMO9900001  2025-06-02 00:00:00         2025-06-03 00:00:00                4,320         4,320  differs   parquet "), "{bad:?}");
    assert!(bad.stdout.contains("IMO9900002  2025-06-01 00:00:00         2025-06-02 00:00:00                4,320       missing  differs   parquet "), "{bad:?}");
}
