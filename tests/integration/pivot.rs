//! The narrow-to-wide pivot: every wide table equals PostgreSQL's own
//! pivot query (EXCEPT ALL both ways is empty), whatever the input holds;
//! reruns change nothing; new channels widen tables; upsert merges.

use crate::support::{etl_in, hold_lock, psql, psql_file, repo, Output, TestDb};

/// Runs etl with the wide tables written into the source database, so the
/// in-database pivot and etl's can be compared with EXCEPT.
pub(crate) fn etl_same_db(db: &TestDb, args: &[&str]) -> Output {
    etl_in(
        db.dir.path(),
        args,
        &[("ETL_SRC_URL", &db.src), ("ETL_DST_URL", &db.src)],
    )
}

/// The in-database pivot of one ship: `max(value) FILTER (WHERE channel = ...)`
/// per channel, each value cast to the type of the channel's widest format
/// (`bool_or` for booleans; text in byte order, `COLLATE "C"`), or to text
/// for `column_types = "text"`; columns in channel order.
fn reference_query(db: &TestDb, narrow: &str, ship: &str, filter: &str, text: bool) -> String {
    let as_text = "format('max(CASE value_format WHEN ''Boolean'' THEN bool_v::text WHEN ''Integer'' THEN long_v::text WHEN ''Decimal'' THEN double_v::text WHEN ''String'' THEN str_v END COLLATE \"C\") FILTER (WHERE data_channel_id = %L)', ch)";
    let typed = format!(
        "CASE kind \
           WHEN 0 THEN format('bool_or(CASE value_format WHEN ''Boolean'' THEN bool_v END) FILTER (WHERE data_channel_id = %L)', ch) \
           WHEN 1 THEN format('max(CASE value_format WHEN ''Boolean'' THEN bool_v::int::bigint WHEN ''Integer'' THEN long_v END) FILTER (WHERE data_channel_id = %L)', ch) \
           WHEN 2 THEN format('max(CASE value_format WHEN ''Boolean'' THEN bool_v::int::float8 WHEN ''Integer'' THEN long_v::float8 WHEN ''Decimal'' THEN double_v END) FILTER (WHERE data_channel_id = %L)', ch) \
           ELSE {as_text} END"
    );
    let expression = if text { as_text.to_string() } else { typed };
    let quoted_filter = filter.replace('\'', "''");
    psql(
        &db.src,
        &format!(
            "WITH k AS ( \
               SELECT data_channel_id AS ch, max(CASE value_format WHEN 'Boolean' THEN 0 WHEN 'Integer' THEN 1 WHEN 'Decimal' THEN 2 WHEN 'String' THEN 3 END) AS kind \
               FROM {narrow} WHERE ship_id = '{ship}' AND data_channel_id IS NOT NULL \
                 AND value_format IN ('Boolean', 'Integer', 'Decimal', 'String') {filter} GROUP BY 1) \
             SELECT 'SELECT created_time' || coalesce(string_agg(', ' || {expression}, '' ORDER BY ch COLLATE \"C\"), '') \
               || ' FROM {narrow} WHERE ship_id = ''{ship}'' {quoted_filter} GROUP BY created_time' FROM k"
        ),
    )
}

/// etl's wide tables of one ship joined back into one row per time, the
/// columns in channel order as `etl.column_map` places them.
pub(crate) fn wide_query(db: &TestDb, base: &str) -> String {
    psql(
        &db.src,
        &format!(
            "WITH t AS (SELECT DISTINCT table_name FROM etl.column_map WHERE base_table = '{base}' UNION SELECT '{base}'), \
                  a AS (SELECT table_name, row_number() OVER (ORDER BY table_name) AS n FROM t) \
             SELECT 'SELECT created_time' \
               || coalesce((SELECT string_agg(', p' || a.n || '.' || quote_ident(m.column_name), '' ORDER BY m.channel COLLATE \"C\") \
                            FROM etl.column_map m JOIN a USING (table_name) WHERE m.base_table = '{base}'), '') \
               || ' FROM ' || (SELECT string_agg(CASE WHEN n = 1 THEN table_name || ' p1' ELSE ' FULL JOIN ' || table_name || ' p' || n || ' USING (created_time)' END, '' ORDER BY n) FROM a)"
        ),
    )
}

/// Rows in one and not the other, both ways, and the row counts.
fn compare(db: &TestDb, reference: &str, wide: &str) -> (i64, i64, i64, i64) {
    let got = psql(
        &db.src,
        &format!(
            "SELECT (SELECT count(*) FROM (({reference}) EXCEPT ALL ({wide})) x) || ' ' || \
                    (SELECT count(*) FROM (({wide}) EXCEPT ALL ({reference})) x) || ' ' || \
                    (SELECT count(*) FROM ({reference}) r) || ' ' || (SELECT count(*) FROM ({wide}) w)"
        ),
    );
    let n: Vec<i64> = got.split(' ').map(|v| v.parse().unwrap()).collect();
    (n[0], n[1], n[2], n[3])
}

pub(crate) fn assert_equal_to_reference(
    db: &TestDb,
    narrow: &str,
    base: &str,
    ship: &str,
    filter: &str,
) {
    let reference = reference_query(db, narrow, ship, filter, false);
    let wide = wide_query(db, base);
    let (missing, extra, rows, wide_rows) = compare(db, &reference, &wide);
    assert!(rows > 0, "no reference rows for {ship}");
    assert_eq!(
        (missing, extra, rows),
        (0, 0, wide_rows),
        "{ship}: {missing} reference rows missing, {extra} extra\nreference: {reference}\nwide: {wide}"
    );
}

/// Both ships of `narrow_odd.sql` equal the in-database pivot.
pub(crate) fn assert_fleet_equal(db: &TestDb, filter: &str) {
    for ship in ["IMO1", "IMO2"] {
        let base = format!("\"wide\".\"t_{ship}\"");
        assert_equal_to_reference(db, "tenant.narrow", &base, ship, filter);
    }
}

pub(crate) fn odd_pipeline(db: &TestDb, stage: &str, max_columns: usize, mode: &str) -> String {
    std::fs::write(
        db.dir.path().join("channels.csv"),
        "channel,group\neng_1,engine\neng_2,engine\n",
    )
    .unwrap();
    let text = format!(
        "name = \"odd\"\n[source]\ntype = \"postgres\"\nurl = \"${{ETL_SRC_URL}}\"\ntable = \"tenant.narrow\"\n\
         [chunks]\ntime_column = \"created_time\"\nkey_column = \"ship_id\"\nworkers = 2\nretries = 1\nretry_backoff_secs = 0.1\n\
         [[transforms]]\ntype = \"sql\"\nquery = \"{stage}\"\n\
         [[transforms]]\ntype = \"pivot\"\nindex = [\"created_time\"]\nname_column = \"data_channel_id\"\nformat_column = \"value_format\"\n\
         values = {{ Decimal = \"double_v\", Integer = \"long_v\", String = \"str_v\", Boolean = \"bool_v\" }}\n\
         max_columns = {max_columns}\ncolumn_groups = \"channels.csv\"\n\
         [[sinks]]\ntype = \"postgres\"\nurl = \"${{ETL_DST_URL}}\"\ntable = \"wide.t_{{key}}\"\nmode = \"{mode}\"\ncreate_table = true\n"
    );
    db.pipeline("odd.toml", &text).to_str().unwrap().to_string()
}

/// The stage that drops the debug channel and keeps NULL names (which
/// the pivot counts), as a reference filter.
const NO_DEBUG: &str = "AND data_channel_id IS DISTINCT FROM 'ch_debug'";

pub(crate) fn table_fingerprint(db: &TestDb, base: &str) -> String {
    let wide = wide_query(db, base);
    psql(
        &db.src,
        &format!("SELECT count(*) || ' ' || md5(string_agg(w::text, '|' ORDER BY created_time)) FROM ({wide}) w"),
    )
}

/// `etl.column_map`'s (table, quoted column) of a channel of a ship.
pub(crate) fn channel_column(db: &TestDb, ship: &str, channel: &str) -> (String, String) {
    let found = psql(
        &db.src,
        &format!(
            "SELECT table_name || ' ' || quote_ident(column_name) FROM etl.column_map \
             WHERE base_table = '\"wide\".\"t_{ship}\"' AND channel = '{}'",
            channel.replace('\'', "''")
        ),
    );
    let (t, c) = found
        .split_once(' ')
        .unwrap_or_else(|| panic!("no column for {channel:?} of {ship}"));
    (t.to_string(), c.to_string())
}

#[test]
fn odd_input_pivots_exactly_and_reruns_change_nothing() {
    // Given readings with odd names, NULLs, duplicates, unknown formats,
    // a late channel, format changes, and more channels than max_columns
    let db = TestDb::new("pivot_odd");
    psql_file(&db.src, &repo().join("fixtures/sql/narrow_odd.sql"), &[]);
    let p = odd_pipeline(
        &db,
        "SELECT * FROM input WHERE data_channel_id IS DISTINCT FROM 'ch_debug'",
        6,
        "upsert",
    );

    // When the pivot runs
    let out = etl_same_db(&db, &["run", &p]);

    // Then it finishes with exit 3 and counts what it left out and the duplicates
    assert_eq!(out.code, 3, "{out:?}");
    // 2 ships x 3 days x 144 times, and the NULL name's own time
    assert!(
        out.stdout.contains("  rows         865 wide rows from "),
        "{out:?}"
    );
    // 5 'Blob' rows per ship, 1 NULL name, 3 days x 24 NULL ch_a values per ship
    assert!(
        out.stdout.contains("  not pivoted  155 readings: 10 unknown format, 144 NULL value, 1 NULL name, 0 NULL index"),
        "{out:?}"
    );
    // ch_b doubled for hours 3 and 4, and the Korean channel for hour 5: 3 x 6 x 3 days x 2 ships
    assert!(
        out.stdout.contains("  duplicates   108 readings repeated"),
        "{out:?}"
    );
    assert!(out.stdout.contains("which is not in values"), "{out:?}");

    // And each ship's wide tables equal the in-database pivot, cell for cell
    assert_fleet_equal(&db, NO_DEBUG);

    // And every channel has its own column; long and clashing names are shortened
    let map = psql(
        &db.src,
        "SELECT count(*) || ' ' || count(DISTINCT (table_name, column_name)) || ' ' || max(octet_length(column_name)) \
         FROM etl.column_map WHERE base_table = '\"wide\".\"t_IMO1\"'",
    );
    // 14 channels + late_ch + 3 changing ones; ch_debug dropped by the stage, 'mystery' has no known format
    assert_eq!(map, "18 18 63");
    let renamed = psql(
        &db.src,
        "SELECT count(*) || ': ' || string_agg(channel || ' -> ' || column_name, '; ' ORDER BY channel) FROM etl.column_map \
         WHERE base_table = '\"wide\".\"t_IMO1\"' AND channel <> column_name",
    );
    // the empty name, the index column's name, the two long names
    assert!(renamed.starts_with("4:  -> _"), "{renamed}");
    assert!(
        renamed.contains("; created_time -> created_time_"),
        "{renamed}"
    );

    // And max_columns and column_groups split the tables: 16 ungrouped channels
    // at most 6 per table, the engine group in its own table
    let tables = psql(
        &db.src,
        "SELECT string_agg(table_name || ':' || n, ' ' ORDER BY table_name) FROM \
         (SELECT table_name, count(*) AS n FROM etl.column_map WHERE base_table = '\"wide\".\"t_IMO2\"' GROUP BY 1) x",
    );
    assert_eq!(
        tables,
        "\"wide\".\"t_IMO2\":6 \"wide\".\"t_IMO2_2\":6 \"wide\".\"t_IMO2_3\":4 \"wide\".\"t_IMO2_engine\":2"
    );

    // And channels whose format changed have the widest type
    let types = psql(
        &db.src,
        "SELECT string_agg(m.channel || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY m.channel) \
         FROM etl.column_map m JOIN pg_attribute a ON a.attrelid = m.table_name::regclass AND a.attname = m.column_name \
         WHERE m.base_table = '\"wide\".\"t_IMO1\"' AND m.channel IN ('shifty', 'flip', 'numtext', 'with space')",
    );
    assert_eq!(
        types,
        "flip text, numtext text, shifty double precision, with space boolean"
    );
    assert!(
        out.stderr
            .contains("Risky change: a channel's format changed, so its column is widened")
            && out.stderr.contains(
                "ALTER COLUMN \"shifty\" TYPE double precision USING \"shifty\"::double precision"
            ),
        "{out:?}"
    );

    // When the run is repeated whole
    let before: Vec<String> = ["IMO1", "IMO2"]
        .iter()
        .map(|s| table_fingerprint(&db, &format!("\"wide\".\"t_{s}\"")))
        .collect();
    let again = etl_same_db(&db, &["run", "--restart", &p]);

    // Then nothing changes
    assert_eq!(again.code, 3, "{again:?}");
    let after: Vec<String> = ["IMO1", "IMO2"]
        .iter()
        .map(|s| table_fingerprint(&db, &format!("\"wide\".\"t_{s}\"")))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn a_later_run_with_more_channels_widens_and_merges_partial_rows() {
    // Given a first run that leaves out two channels (as if they were new)
    let db = TestDb::new("pivot_merge");
    psql_file(&db.src, &repo().join("fixtures/sql/narrow_odd.sql"), &[]);
    let first = odd_pipeline(
        &db,
        "SELECT * FROM input WHERE data_channel_id NOT IN ('ch_debug', 'ch_c', 'select') AND value_format <> 'Blob'",
        1500,
        "upsert",
    );
    let out = etl_same_db(&db, &["run", &first]);
    assert_eq!(out.code, 3, "{out:?}"); // the NULL ch_a values
    assert_equal_to_reference(
        &db,
        "tenant.narrow",
        "\"wide\".\"t_IMO1\"",
        "IMO1",
        "AND data_channel_id NOT IN ('ch_debug', 'ch_c', 'select')",
    );
    let columns_before = psql(&db.src, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'wide.\"t_IMO1\"'::regclass AND attnum > 0");

    // When a run brings only those channels for times already present
    let second = odd_pipeline(
        &db,
        "SELECT * FROM input WHERE data_channel_id IN ('ch_c', 'select')",
        1500,
        "upsert",
    );
    let out = etl_same_db(&db, &["run", "--restart", &second]);

    // Then their columns are added, their values filled, and every value
    // the first run wrote is kept
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("Adding channel columns"), "{out:?}");
    let columns_after = psql(&db.src, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'wide.\"t_IMO1\"'::regclass AND attnum > 0");
    assert_eq!(
        columns_after.parse::<i64>().unwrap(),
        columns_before.parse::<i64>().unwrap() + 2
    );
    assert_fleet_equal(&db, "AND data_channel_id <> 'ch_debug'");
}

#[test]
fn append_mode_replaces_windows_and_text_mode_makes_every_column_text() {
    // Given the odd readings and a pivot into text columns, mode append
    let db = TestDb::new("pivot_text");
    psql_file(&db.src, &repo().join("fixtures/sql/narrow_odd.sql"), &[]);
    let p = odd_pipeline(
        &db,
        "SELECT * FROM input WHERE data_channel_id <> 'ch_debug'",
        1500,
        "append",
    );
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("max_columns", "column_types = \"text\"\nmax_columns");
    std::fs::write(&p, text).unwrap();

    // When it runs twice over the same windows
    let out = etl_same_db(&db, &["run", &p]);
    assert_eq!(out.code, 3, "{out:?}");
    let before = table_fingerprint(&db, "\"wide\".\"t_IMO1\"");
    let out = etl_same_db(&db, &["run", "--restart", &p]);
    assert_eq!(out.code, 3, "{out:?}");

    // Then every channel column is text, equal to the in-database pivot of
    // the values as text, and the second run left the table as it was
    let types = psql(
        &db.src,
        "SELECT string_agg(DISTINCT format_type(atttypid, atttypmod), ',') FROM pg_attribute \
         WHERE attrelid = 'wide.\"t_IMO1\"'::regclass AND attnum > 1 AND NOT attisdropped",
    );
    assert_eq!(types, "text");
    let reference = reference_query(
        &db,
        "tenant.narrow",
        "IMO1",
        "AND data_channel_id <> 'ch_debug'",
        true,
    );
    let wide = wide_query(&db, "\"wide\".\"t_IMO1\"");
    let (missing, extra, rows, wide_rows) = compare(&db, &reference, &wide);
    assert_eq!((missing, extra, rows), (0, 0, wide_rows), "{reference}");
    assert_eq!(table_fingerprint(&db, "\"wide\".\"t_IMO1\""), before);
}

#[test]
fn the_shipped_pivot_pipeline_builds_one_typed_table_per_ship() {
    // Given fleet data with a debug channel
    let db = TestDb::new("pivot_shipped");
    db.load_timeseries(2, 20, 2880);
    psql(&db.src, "UPDATE tenant.tbl_data_timeseries SET data_channel_id = 'ch_debug' WHERE data_channel_id = 'ch_0020'");
    let p = repo().join("pipelines/ships-wide.toml");

    // When the shipped pipeline runs (plan first)
    let plan = etl_same_db(&db, &["plan", p.to_str().unwrap()]);
    assert_eq!(plan.code, 0, "{plan:?}");
    // the plan lists each table's columns (read from the source, before the SQL stage)
    for expected in [
        "wide table \"wide\".\"tbl_data_timeseries_IMO9900001\": 20 channels in the source, 0 with columns already, mode upsert",
        "CREATE SCHEMA IF NOT EXISTS \"wide\"; CREATE TABLE IF NOT EXISTS \"wide\".\"tbl_data_timeseries_IMO9900002\" (\"created_time\" timestamp with time zone NOT NULL, PRIMARY KEY (\"created_time\"));",
        "ALTER TABLE \"wide\".\"tbl_data_timeseries_IMO9900001\" ADD COLUMN \"ch_0001\" double precision, ",
        "ADD COLUMN \"ch_0017\" boolean, ADD COLUMN \"ch_0018\" boolean, ADD COLUMN \"ch_0019\" text, ADD COLUMN \"ch_debug\" double precision;",
    ] {
        assert!(plan.stdout.contains(expected), "{expected}\n{plan:?}");
    }
    assert_eq!(
        psql(
            &db.src,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'wide'"
        ),
        "0",
        "plan wrote nothing"
    );
    let out = etl_same_db(&db, &["run", p.to_str().unwrap()]);

    // Then each ship has a typed wide table equal to the in-database pivot
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("  rows         5,760 wide rows from 109,440 readings"),
        "{out:?}"
    );
    for ship in ["IMO9900001", "IMO9900002"] {
        assert_equal_to_reference(
            &db,
            "tenant.tbl_data_timeseries",
            &format!("\"wide\".\"tbl_data_timeseries_{ship}\""),
            ship,
            "AND data_channel_id <> 'ch_debug'",
        );
    }
    let types = psql(
        &db.src,
        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute \
         WHERE attrelid = 'wide.\"tbl_data_timeseries_IMO9900001\"'::regclass AND attnum > 0 AND attname IN ('created_time', 'ch_0001', 'ch_0015', 'ch_0017', 'ch_0019')",
    );
    assert_eq!(
        types,
        "created_time timestamp with time zone, ch_0001 double precision, ch_0015 bigint, ch_0017 boolean, ch_0019 text"
    );
}

#[test]
fn verify_compares_every_cell_value_and_finds_changes() {
    // Given the odd readings pivoted by a pipeline without SQL stages
    let db = TestDb::new("pivot_verify");
    psql_file(&db.src, &repo().join("fixtures/sql/narrow_odd.sql"), &[]);
    let p = odd_pipeline(&db, "SELECT * FROM input", 6, "upsert");
    let text = std::fs::read_to_string(&p).unwrap();
    let start = text.find("[[transforms]]").unwrap();
    let end = text[start + 1..].find("[[transforms]]").unwrap() + start + 1;
    std::fs::write(&p, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let out = etl_same_db(&db, &["run", &p]);
    assert_eq!(out.code, 3, "{out:?}");

    // When verified
    let ok = etl_same_db(&db, &["verify", &p]);

    // Then every chunk's rows and cell values per channel match the source
    // (duplicates, widened formats, NaN, odd channel names included)
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(
        ok.stdout
            .contains("Verified 6 chunks of pipeline odd against 1 sink: 6 equal, 0 differ"),
        "{ok:?}"
    );

    // When a cell is lost in a spill table and a row in another ship's table
    let lost_cell = psql(
        &db.src,
        "SELECT table_name || ' ' || quote_ident(column_name) FROM etl.column_map WHERE base_table = '\"wide\".\"t_IMO1\"' AND channel = 'ch_d'",
    );
    let (table, column) = lost_cell.split_once(' ').unwrap();
    psql(
        &db.src,
        &format!(
            "UPDATE {table} SET {column} = NULL WHERE created_time = '2025-06-02 10:00:00+00'"
        ),
    );
    psql(
        &db.src,
        "DELETE FROM wide.\"t_IMO2\" WHERE created_time = '2025-06-03 10:00:00+00'",
    );
    let bad = etl_same_db(&db, &["verify", &p]);

    // Then exactly those two chunks differ, exit 1
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stdout
            .contains("6 chunks of pipeline odd against 1 sink: 4 equal, 2 differ"),
        "{bad:?}"
    );
    let table: String = bad.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        table.contains("IMO1 2025-06-02 00:00:00 2025-06-03 00:00:00 144 144 differs"),
        "{bad:?}"
    );
    assert!(
        table.contains("IMO2 2025-06-03 00:00:00 2025-06-04 00:00:00 144 143 differs"),
        "{bad:?}"
    );

    // When a value is changed in one chunk, and two channels' values are
    // swapped in one row of another (their counts stay as they were)
    let cell = |ship: &str, channel: &str| channel_column(&db, ship, channel);
    let at = "created_time = '2025-06-01 10:00:00+00'";
    let (t, c) = cell("IMO1", "ch_a");
    psql(&db.src, &format!("UPDATE {t} SET {c} = {c} + 1 WHERE {at}"));
    let (ta, ca) = cell("IMO2", "ch_a");
    let (tb, cb) = cell("IMO2", "eng_1");
    let a = psql(&db.src, &format!("SELECT {ca} FROM {ta} WHERE {at}"));
    let b = psql(&db.src, &format!("SELECT {cb} FROM {tb} WHERE {at}"));
    assert_ne!(a, b);
    psql(&db.src, &format!("UPDATE {ta} SET {ca} = '{b}' WHERE {at}"));
    psql(&db.src, &format!("UPDATE {tb} SET {cb} = '{a}' WHERE {at}"));
    let values = etl_same_db(&db, &["verify", &p]);

    // Then those two chunks differ too, with their rows and cells counted
    // equal: the values are compared
    assert_eq!(values.code, 1, "{values:?}");
    assert!(
        values
            .stdout
            .contains("6 chunks of pipeline odd against 1 sink: 2 equal, 4 differ"),
        "{values:?}"
    );
    let table: String = values
        .stdout
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for chunk in [
        "IMO1 2025-06-01 00:00:00 2025-06-02 00:00:00 145 145 differs",
        "IMO2 2025-06-01 00:00:00 2025-06-02 00:00:00 144 144 differs",
    ] {
        assert!(table.contains(chunk), "{chunk}: {values:?}");
    }
}

#[test]
fn a_new_column_waits_under_lock_timeout_then_the_chunk_fails_naming_the_reader() {
    // Given wide tables loaded without one channel
    let db = TestDb::new("pivot_locked");
    psql_file(&db.src, &repo().join("fixtures/sql/narrow_odd.sql"), &[]);
    let timeouts = "[sinks.timeouts]\nlock_timeout_secs = 0.3\n";
    let p = odd_pipeline(
        &db,
        "SELECT * FROM input WHERE data_channel_id NOT IN ('ch_debug', 'select')",
        1500,
        "upsert",
    );
    std::fs::write(&p, std::fs::read_to_string(&p).unwrap() + timeouts).unwrap();
    assert_eq!(etl_same_db(&db, &["run", &p]).code, 3);

    // When that channel arrives while a long report reads ship IMO1's table
    let p = odd_pipeline(
        &db,
        "SELECT * FROM input WHERE data_channel_id = 'select'",
        1500,
        "upsert",
    );
    std::fs::write(&p, std::fs::read_to_string(&p).unwrap() + timeouts).unwrap();
    let mut reader = hold_lock(&db.src, "report-reader", "wide.\"t_IMO1\"", "ACCESS SHARE");
    let out = etl_same_db(&db, &["run", "--restart", &p]);
    reader.kill().unwrap();
    reader.wait().unwrap();

    // Then adding the column gives up after lock_timeout and a retry, naming
    // the reader; only IMO1's chunks fail, IMO2's table gets its column
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("is locked by pid "), "{out:?}");
    assert!(out.stdout.contains("(report-reader)"), "{out:?}");
    assert!(out.stdout.contains("failed after 2 attempts"), "{out:?}");
    let failed = std::fs::read_to_string(db.dir.path().join("failed_chunks.csv")).unwrap();
    assert_eq!(
        failed.lines().filter(|l| l.starts_with("IMO1,")).count(),
        3,
        "{failed}"
    );
    assert_eq!(
        failed.lines().filter(|l| l.starts_with("IMO2,")).count(),
        0,
        "{failed}"
    );

    // And once the reader is gone, rerunning the failed chunks completes the table
    let rerun = etl_same_db(
        &db,
        &["rerun", &p, "failed_chunks.csv", "--delay-secs", "0"],
    );
    assert_eq!(rerun.code, 0, "{rerun:?}");
    assert_fleet_equal(&db, "AND data_channel_id <> 'ch_debug'");
}

#[test]
fn a_pivot_stages_each_chunk_to_parquet_with_its_own_columns() {
    // Given a pivot into PostgreSQL and Parquet at once
    let db = TestDb::new("pivot_parquet");
    db.load_timeseries(2, 20, 2880);
    let text = std::fs::read_to_string(repo().join("pipelines/ships-wide.toml")).unwrap()
        + "\n[[sinks]]\ntype = \"parquet\"\npath = \"staging/{key}/{start}.parquet\"\n";
    let p = db.pipeline("wide.toml", &text);

    // When it runs
    let out = etl_same_db(&db, &["run", p.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");

    // Then each chunk's file holds the chunk's wide rows, the index and one
    // column per channel, with the same non-NULL cells as the wide table
    let mut files: Vec<_> = glob_files(&db.dir.path().join("staging"));
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    let mut rows = 0;
    let mut cells = 0;
    for f in &files {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(f).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let schema = batch.schema();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(names.len(), 21, "{names:?}");
            assert_eq!(names[0], "created_time");
            assert_eq!(names[1], "ch_0001");
            assert_eq!(
                schema.field(17).data_type(),
                &arrow::datatypes::DataType::Boolean
            );
            rows += batch.num_rows();
            cells += (1..batch.num_columns())
                .map(|i| batch.num_rows() - batch.column(i).null_count())
                .sum::<usize>();
        }
    }
    assert_eq!(rows, 5760);
    let in_pg = psql(
        &db.src,
        "SELECT sum(n) FROM (SELECT count(*) FILTER (WHERE data_channel_id <> 'ch_debug') AS n FROM tenant.tbl_data_timeseries) x",
    );
    assert_eq!(cells.to_string(), in_pg);
}

pub(crate) fn glob_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(glob_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}

#[test]
fn two_processes_pivoting_one_fleet_agree_on_the_columns() {
    // Given the odd readings, whose channels spill over several tables
    let db = TestDb::new("pivot_two_processes");
    psql_file(&db.src, &repo().join("fixtures/sql/narrow_odd.sql"), &[]);
    let p = odd_pipeline(
        &db,
        "SELECT * FROM input WHERE data_channel_id <> 'ch_debug'",
        4,
        "upsert",
    );

    // When two processes run the same pivot at once (each adding columns as its chunks need them)
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_etl"))
            .current_dir(db.dir.path())
            .args(["run", "--workers", "2", &p])
            .env("ETL_SRC_URL", &db.src)
            .env("ETL_DST_URL", &db.src)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());

    // Then both finish (3: readings left out), every chunk is done once,
    // and each ship's tables equal the in-database pivot
    for out in [&a, &b] {
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        psql(
            &db.src,
            "SELECT count(*) || ' ' || sum(attempts) FROM etl.chunk_ledger WHERE status = 'done'"
        ),
        "6 6"
    );
    assert_fleet_equal(&db, "AND data_channel_id <> 'ch_debug'");
}

#[test]
fn a_tampered_column_map_is_refused_and_nothing_else_happens() {
    // Given a pivot loaded once, and a column map changed by hand to
    // name a table with SQL in it, or a table written as etl never does
    let db = TestDb::new("pivot_tampered");
    psql_file(&db.src, &repo().join("fixtures/sql/narrow_odd.sql"), &[]);
    psql(&db.src, "CREATE TABLE victim (x int)");
    let p = odd_pipeline(&db, "SELECT * FROM input", 100, "upsert");
    let first = etl_same_db(&db, &["run", &p]);
    assert_ne!(first.code, 2, "{first:?}");
    let original = psql(
        &db.src,
        "SELECT table_name FROM etl.column_map WHERE base_table = '\"wide\".\"t_IMO1\"' AND channel = 'ch_b'",
    );
    for (tampered, expected) in [
        (
            "wide.t_IMO1; DROP TABLE victim; --",
            "etl.column_map names table \"wide.t_IMO1; DROP TABLE victim; --\"",
        ),
        (
            "wide.\"t_IMO1\"",
            "etl.column_map names table \"wide.\\\"t_IMO1\\\"\" for base_table = \"\\\"wide\\\".\\\"t_IMO1\\\"\", not a name as etl writes it",
        ),
    ] {
        psql(
            &db.src,
            &format!(
                "UPDATE etl.column_map SET table_name = '{}' WHERE base_table = '\"wide\".\"t_IMO1\"' AND channel = 'ch_b'",
                tampered.replace('\'', "''")
            ),
        );

        // When run again
        let out = etl_same_db(&db, &["run", "--restart", &p]);

        // Then the chunks of that table fail with a clear error, and
        // nothing else happens
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stdout.contains(expected), "{expected}\n{out:?}");
        assert_eq!(psql(&db.src, "SELECT to_regclass('victim') IS NOT NULL"), "t");
    }
    psql(
        &db.src,
        &format!(
            "UPDATE etl.column_map SET table_name = '{}' WHERE base_table = '\"wide\".\"t_IMO1\"' AND channel = 'ch_b'",
            original.replace('\'', "''")
        ),
    );
    let out = etl_same_db(&db, &["run", "--restart", &p]);
    assert_ne!(out.code, 1, "{out:?}");
}
