//! Every supported type survives source -> Arrow -> target exactly: NULLs,
//! extremes, infinities, 100-digit numerics, empty arrays, quotes and
//! control characters.

use crate::support::{fingerprint, psql, TestDb};

const SOURCE: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'it''s "fine"');
CREATE TABLE public.all_types (
  id int4 PRIMARY KEY, t timestamptz NOT NULL,
  b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
  n_fixed numeric(12,2), n_wide numeric(50,10), n_any numeric, n_neg numeric(5,-2),
  tx text, vc varchar(20), bp char(5), nm name, by bytea,
  d date, tm time, ts timestamp, tstz timestamptz, iv interval, u uuid,
  js json, jb jsonb, e mood,
  a_i4 int4[], a_tx text[], a_n numeric(10,2)[], a_ts timestamptz[], a_b bool[], a_e mood[]
);
INSERT INTO public.all_types (id, t) VALUES (1, '2025-06-01 00:00:01+00');
INSERT INTO public.all_types VALUES (2, '2025-06-01 01:00:00+00',
  true, 1, 2, 3, 1.5, 2.25,
  1234567890.12, 12345678901234567890123456789012345678.1234567890, 0.000001, 12300,
  'plain', 'varchar', 'bp', 'a_name', '\x0001feff',
  '2025-06-01', '13:14:15.123456', '2025-06-01 13:14:15.5', '2025-06-01 13:14:15.123456+09', '1 year 2 mons 3 days 04:05:06.789012', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": [1, "x"],  "b" : null}', '{"z": 1, "a": {"k": [true, null]}}', 'ok',
  '{1,NULL,3}', '{"a,b","\"q\"",NULL,""}', '{1.50,-2.25}', '{"2025-06-01 00:00:00+00"}', '{t,f,NULL}', '{sad,"it''s \"fine\""}');
INSERT INTO public.all_types VALUES (3, '2025-06-01 02:00:00+00',
  false, -32768, 2147483647, -9223372036854775808, 'NaN', '-Infinity',
  -9999999999.99, -0.0000000001, 1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001.0000000001, -99900,
  E'quote '' dq " backslash \\ tab \t nl \n cr \r bell \x07 한국어 똠 펲 🚀', '', 'ab', 'n', '\x',
  'infinity', '24:00:00', '-infinity', 'infinity', '-1 mons -2 days -00:00:00.000001', '00000000-0000-0000-0000-000000000000',
  '[]', '"just a string"', 'it''s "fine"',
  '{}', '{}', '{}', '{}', '{}', '{}');
INSERT INTO public.all_types VALUES (4, '2025-06-01 03:00:00+00',
  NULL, 32767, -2147483648, 9223372036854775807, '-0', 'Infinity',
  0, 0, 'NaN', 0,
  repeat('x', 100000), repeat('y', 20), 'abcde', repeat('z', 63), decode(repeat('00ff', 1000), 'hex'),
  '-infinity', '00:00:00', 'infinity', '-infinity', '178000000 years', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
  'null', 'null', NULL,
  '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}');
INSERT INTO public.all_types (id, t, d, ts, tstz, n_any) VALUES
  (5, '2025-06-01 04:00:00+00', '4713-01-01 BC', '4713-01-01 00:00:00 BC', '294247-01-01 00:00:00.999999+00', 'Infinity'),
  (6, '2025-06-01 05:00:00+00', '5874897-12-31', '294247-01-10 04:00:54.775806', '4713-01-01 00:00:00+00 BC', '-Infinity');
"#;

fn pipeline(mode: &str) -> String {
    format!(
        r#"name = "types"
[source]
type = "postgres"
url = "${{ETL_SRC_URL}}"
table = "public.all_types"
batch_rows = 2

[chunks]
time_column = "t"
interval = "1h"
workers = 2

[[sinks]]
type = "postgres"
url = "${{ETL_DST_URL}}"
table = "copy.all_types"
mode = "{mode}"
create_table = true
"#
    )
}

fn column_types(url: &str, table: &str) -> String {
    psql(
        url,
        &format!(
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) \
             FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum > 0"
        ),
    )
}

#[test]
fn every_supported_type_round_trips_exactly() {
    // Given a table with every supported type, NULLs and extreme values
    let db = TestDb::new("types_round_trip");
    psql(&db.src, SOURCE);
    let p = db.pipeline("types.toml", &pipeline("append"));

    // When it is copied into a created table
    let out = db.etl(&["run", p.to_str().unwrap()]);

    // Then every row is identical as PostgreSQL prints it
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("6 done, 0 failed, of 6"), "{out:?}");
    let source = fingerprint(&db.src, "public.all_types", "id");
    assert!(source.starts_with("6 "), "{source}");
    assert_eq!(fingerprint(&db.dst, "copy.all_types", "id"), source);
    // And the created table has the source's types (enums become text)
    let expected = column_types(&db.src, "public.all_types")
        .replace("a_e mood[]", "a_e text[]")
        .replace("e mood", "e text");
    assert_eq!(column_types(&db.dst, "copy.all_types"), expected);
    assert_eq!(
        psql(&db.dst, "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'copy.all_types'::regclass AND attnum > 0 AND attnotnull"),
        "id,t",
        "NOT NULL columns stay NOT NULL"
    );
    assert_eq!(
        psql(&db.dst, "SELECT count(*) FROM pg_index WHERE indrelid = 'copy.all_types'::regclass AND indisprimary"),
        "1",
        "the source's primary key is created"
    );
}

#[test]
fn upsert_mode_merges_and_is_idempotent() {
    // Given the typed table loaded once with upsert
    let db = TestDb::new("types_upsert");
    psql(&db.src, SOURCE);
    let p = db.pipeline("types.toml", &pipeline("upsert"));
    let first = db.etl(&["run", p.to_str().unwrap()]);
    assert_eq!(first.code, 0, "{first:?}");

    // When a source row changes and the run is repeated twice
    psql(
        &db.src,
        "UPDATE public.all_types SET tx = 'changed', i4 = 42 WHERE id = 2",
    );
    for _ in 0..2 {
        let out = db.etl(&["run", p.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{out:?}");
    }

    // Then the target equals the source: the change merged, nothing doubled
    assert_eq!(
        fingerprint(&db.dst, "copy.all_types", "id"),
        fingerprint(&db.src, "public.all_types", "id")
    );
}

#[test]
fn unsupported_types_are_named_with_a_cast_to_use() {
    // Given a source with a geometric and a range column
    let db = TestDb::new("types_unsupported");
    psql(&db.src, "CREATE TABLE s (t timestamptz, p point, r int4range); INSERT INTO s VALUES (now(), '(1,2)', '[1,5)')");
    let p = db.pipeline(
        "p.toml",
        "name = \"u\"\n[source]\ntype = \"postgres\"\nurl = \"${ETL_SRC_URL}\"\ntable = \"s\"\n[chunks]\ntime_column = \"t\"\n\
         [[sinks]]\ntype = \"postgres\"\nurl = \"${ETL_DST_URL}\"\ntable = \"s\"\ncreate_table = true\n",
    );
    // When planned
    let out = db.etl(&["plan", p.to_str().unwrap()]);
    // Then both columns are named, with the cast that would carry them
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stderr,
        "etl: the source has columns etl cannot carry:\n\
         \x20 column \"p\" (index 1) is of type point, which etl cannot carry; cast it in `query`, for example SELECT \"p\"::text\n\
         \x20 column \"r\" (index 2) is of type int4range, which etl cannot carry; cast it in `query`, for example SELECT \"r\"::text\n"
    );
}
