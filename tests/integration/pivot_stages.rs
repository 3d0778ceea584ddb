//! Wide rows beyond the pivot itself: SQL stages after it, and a pivot's
//! Parquet staging folder loaded back into wide tables. Both run on the
//! odd readings (quotes, spaces, Korean, SQL keywords, empty and over-long
//! channel names, formats that change between days).

use crate::pivot::{channel_column as place, etl_same_db, odd_pipeline, table_fingerprint};
use crate::support::{psql, psql_file, repo, TestDb};

#[test]
fn a_sql_stage_after_the_pivot_derives_columns_from_wide_rows() {
    // Given the odd readings pivoted, then a SQL stage over the wide rows
    // deriving a column from two channels with odd names (a SQL keyword
    // and a quoted one) and keeping rows of the first two days
    let db = TestDb::new("pivot_sql_after");
    psql_file(&db.src, &repo().join("fixtures/sql/narrow_odd.sql"), &[]);
    let p = odd_pipeline(
        &db,
        "SELECT * FROM input WHERE data_channel_id IS DISTINCT FROM 'ch_debug'",
        6,
        "upsert",
    );
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "[[sinks]]",
        "[[transforms]]\ntype = \"sql\"\nquery = '''SELECT *, \"select\" * 2 + coalesce(\"a \"\"quoted\"\" name\", 0) AS \"derived 값\" \
         FROM input WHERE created_time < TIMESTAMP '2025-06-03 00:00:00Z' '''\n[[sinks]]",
    );
    std::fs::write(&p, text).unwrap();

    // When it runs
    let out = etl_same_db(&db, &["run", &p]);
    assert_eq!(out.code, 3, "{out:?}");

    // Then each ship's derived column equals the same expression computed in
    // PostgreSQL over the wide tables, row for row, and the filter kept
    // the rows of two days
    for ship in ["IMO1", "IMO2"] {
        let (ts, cs) = place(&db, ship, "select");
        let (tq, cq) = place(&db, ship, "a \"quoted\" name");
        let (td, cd) = place(&db, ship, "derived 값");
        let got = psql(
            &db.src,
            &format!(
                "SELECT count(*) || ' ' || count(d.{cd}) || ' ' || \
                        count(*) FILTER (WHERE d.{cd} IS DISTINCT FROM s.{cs} * 2 + coalesce(q.{cq}, 0)) \
                 FROM {td} d JOIN {ts} s USING (created_time) JOIN {tq} q USING (created_time)"
            ),
        );
        let (rows, derived, differ) = {
            let v: Vec<i64> = got.split(' ').map(|x| x.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        };
        let times = psql(
            &db.src,
            &format!(
                "SELECT count(DISTINCT created_time) FROM tenant.narrow WHERE ship_id = '{ship}' AND created_time < '2025-06-03'"
            ),
        );
        assert_eq!((rows.to_string(), differ), (times, 0), "{ship}: {got}");
        assert!(derived > 200, "{ship}: {got}");
        let days = psql(
            &db.src,
            &format!("SELECT count(*) FROM wide.\"t_{ship}\" WHERE created_time >= '2025-06-03'"),
        );
        assert_eq!(days, "0");
    }

    // And verify says plainly that stages around the pivot cannot be compared
    let verify = etl_same_db(&db, &["verify", &p]);
    assert_eq!(verify.code, 2, "{verify:?}");
    assert!(
        verify.stderr.contains("SQL stages around its pivot"),
        "{verify:?}"
    );
}

#[test]
fn a_stage_after_the_pivot_that_drops_the_index_fails_its_chunks_naming_the_stage() {
    // Given a SQL stage after the pivot that leaves out the index
    let db = TestDb::new("pivot_sql_no_index");
    psql_file(&db.src, &repo().join("fixtures/sql/narrow_odd.sql"), &[]);
    let p = odd_pipeline(&db, "SELECT * FROM input", 6, "upsert");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "[[sinks]]",
        "[[transforms]]\ntype = \"sql\"\nquery = 'SELECT \"select\" FROM input'\n[[sinks]]",
    );
    std::fs::write(&p, text).unwrap();

    // When it runs
    let out = etl_same_db(&db, &["run", &p]);

    // Then every chunk fails with what to change, and goes to the failed CSV
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "transforms[2]: wide rows lack the index column \"created_time\" (columns: \"select\"); a SQL stage after the pivot must keep created_time"
        ),
        "{out:?}"
    );
}

#[test]
fn a_pivots_staging_folder_loads_back_equal_to_the_direct_pivot() {
    // Given the odd readings pivoted into PostgreSQL and staged as Parquet
    // at once (each chunk's file has its own channels, and a channel's
    // type differs between days)
    let db = TestDb::new("pivot_staging_back");
    psql_file(&db.src, &repo().join("fixtures/sql/narrow_odd.sql"), &[]);
    let p = odd_pipeline(
        &db,
        "SELECT * FROM input WHERE data_channel_id IS DISTINCT FROM 'ch_debug'",
        6,
        "upsert",
    );
    let text = std::fs::read_to_string(&p).unwrap()
        + "\n[[sinks]]\ntype = \"parquet\"\npath = \"staging/{key}/{start}.parquet\"\n";
    std::fs::write(&p, text).unwrap();
    let out = etl_same_db(&db, &["run", &p]);
    assert_eq!(out.code, 3, "{out:?}");

    // When the staging folder is loaded back by a Parquet source into
    // other wide tables
    let back = db.pipeline(
        "back.toml",
        "name = \"back\"\n[source]\ntype = \"parquet\"\npath = \"staging/**/*.parquet\"\n\
         [chunks]\ntime_column = \"created_time\"\nkey_column = \"ship_id\"\nworkers = 2\n\
         [[sinks]]\ntype = \"postgres\"\nurl = \"${ETL_DST_URL}\"\ntable = \"back.t_{key}\"\nmode = \"upsert\"\ncreate_table = true\n",
    );
    let plan = etl_same_db(&db, &["plan", back.to_str().unwrap()]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let loaded = etl_same_db(&db, &["run", back.to_str().unwrap()]);
    assert_eq!(loaded.code, 0, "{loaded:?}");

    // Then each ship's tables hold the same cells as the direct pivot's,
    // split the same way (max_columns, column groups), with the same types
    for ship in ["IMO1", "IMO2"] {
        assert_eq!(
            table_fingerprint(&db, &format!("\"back\".\"t_{ship}\"")),
            table_fingerprint(&db, &format!("\"wide\".\"t_{ship}\"")),
            "{ship}"
        );
        let layout = |schema: &str| {
            psql(
                &db.src,
                &format!(
                    "SELECT string_agg(replace(m.table_name, '{schema}', '') || ' ' || m.channel || ' ' || m.column_name || ' ' || format_type(a.atttypid, a.atttypmod), '; ' ORDER BY m.channel) \
                     FROM etl.column_map m JOIN pg_attribute a ON a.attrelid = m.table_name::regclass AND a.attname = m.column_name \
                     WHERE m.base_table = '\"{schema}\".\"t_{ship}\"'"
                ),
            )
        };
        assert_eq!(layout("back"), layout("wide"), "{ship}");
    }

    // And verify of the load-back says what to verify instead
    let verify = etl_same_db(&db, &["verify", back.to_str().unwrap()]);
    assert_eq!(verify.code, 2, "{verify:?}");
    assert!(
        verify
            .stderr
            .contains("verify the pipeline that pivoted them"),
        "{verify:?}"
    );
}

#[test]
fn repeated_readings_in_a_column_widened_to_text_keep_the_greatest_text() {
    // Given readings of one ship over two days, one chunk per day, where
    // - "mix" repeats a reading (9 and 10) on day 1 as integers and turns
    //   text on day 2 (the column is widened after day 1 was written),
    // - "late" is text on day 1 and repeats 9 and 10 as integers on day 2
    //   (its column is text before day 2 runs),
    // - "flag" has a boolean and an integer on day 1 and text on day 2,
    // - "num" repeats 9 and 10 and stays a number
    let db = TestDb::new("pivot_text_dups");
    psql(
        &db.src,
        "CREATE SCHEMA tenant; \
         CREATE TABLE tenant.dups (ship_id text, data_channel_id text, created_time timestamptz, \
           value_format text, bool_v boolean, str_v text, long_v bigint, double_v double precision); \
         INSERT INTO tenant.dups VALUES \
           ('S', 'mix', '2025-06-01 01:00+00', 'Integer', NULL, NULL, 9, NULL), \
           ('S', 'mix', '2025-06-01 01:00+00', 'Integer', NULL, NULL, 10, NULL), \
           ('S', 'mix', '2025-06-02 01:00+00', 'String', NULL, 'abc', NULL, NULL), \
           ('S', 'late', '2025-06-01 02:00+00', 'String', NULL, 'x', NULL, NULL), \
           ('S', 'late', '2025-06-02 02:00+00', 'Integer', NULL, NULL, 9, NULL), \
           ('S', 'late', '2025-06-02 02:00+00', 'Integer', NULL, NULL, 10, NULL), \
           ('S', 'flag', '2025-06-01 03:00+00', 'Boolean', true, NULL, NULL, NULL), \
           ('S', 'flag', '2025-06-01 04:00+00', 'Integer', NULL, NULL, 5, NULL), \
           ('S', 'flag', '2025-06-02 03:00+00', 'String', NULL, 'on', NULL, NULL), \
           ('S', 'num', '2025-06-01 01:00+00', 'Decimal', NULL, NULL, NULL, 9), \
           ('S', 'num', '2025-06-01 01:00+00', 'Decimal', NULL, NULL, NULL, 10)",
    );
    let p = db.pipeline(
        "dups.toml",
        "name = \"dups\"\n[source]\ntype = \"postgres\"\nurl = \"${ETL_SRC_URL}\"\ntable = \"tenant.dups\"\n\
         [chunks]\ntime_column = \"created_time\"\nkey_column = \"ship_id\"\nworkers = 1\n\
         [[transforms]]\ntype = \"pivot\"\nindex = [\"created_time\"]\nname_column = \"data_channel_id\"\nformat_column = \"value_format\"\n\
         values = { Decimal = \"double_v\", Integer = \"long_v\", String = \"str_v\", Boolean = \"bool_v\" }\n\
         [[sinks]]\ntype = \"postgres\"\nurl = \"${ETL_DST_URL}\"\ntable = \"wide.t_{key}\"\nmode = \"upsert\"\ncreate_table = true\n",
    );

    // When the pivot runs, day 1 first
    let out = etl_same_db(&db, &["run", p.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");

    // Then the text columns hold the greatest text of their readings, as
    // the in-database pivot over all days does ('9' of 9 and 10, 'true'
    // for the boolean), the number column the greatest number
    let cells = psql(
        &db.src,
        "SELECT string_agg(concat_ws(' ', to_char(created_time AT TIME ZONE 'UTC', 'DD HH24'), mix, late, flag, num), '; ' ORDER BY created_time) FROM wide.\"t_S\"",
    );
    assert_eq!(
        cells,
        "01 01 9 10; 01 02 x; 01 03 true; 01 04 5; 02 01 abc; 02 02 9; 02 03 on"
    );
    crate::pivot::assert_equal_to_reference(&db, "tenant.dups", "\"wide\".\"t_S\"", "S", "");
    // And day 1 ran again once its columns became text
    assert!(out.stderr.contains("run again, pivoted as text"), "{out:?}");

    // And verify, which compares in each column's type, finds both chunks equal
    let verify = etl_same_db(&db, &["verify", p.to_str().unwrap()]);
    assert_eq!(verify.code, 0, "{verify:?}");

    // And the number column's repeated reading stays recorded (should it
    // become text), until --recreate drops the tables with their records
    let pending =
        "SELECT string_agg(channel, ',') FROM etl.wide_text_pending WHERE pipeline = 'dups'";
    assert_eq!(psql(&db.src, pending), "num");
    let again = etl_same_db(&db, &["run", p.to_str().unwrap(), "--restart"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(psql(&db.src, pending), "num", "a rerun records it once");
    let recreate = etl_same_db(
        &db,
        &[
            "run",
            p.to_str().unwrap(),
            "--recreate",
            "--yes",
            "--ddl-only",
        ],
    );
    assert_eq!(recreate.code, 0, "{recreate:?}");
    assert_eq!(psql(&db.src, pending), "");
}
