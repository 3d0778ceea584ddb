//! A PostgreSQL table or query into CSV files without a time column:
//! whole, or in ranges of an integer column; written as psql's `\copy`
//! writes it, every type the server prints included.

use crate::support::{fingerprint, psql, seq_scans, TestDb};

#[test]
fn a_table_without_a_time_column_exports_whole_equal_to_psql_copy() {
    // Given a lookup table with no time column to cut on: text with commas,
    // quotes and newlines, an empty string beside NULLs, numerics, times
    let db = TestDb::new("csv_whole");
    psql(
        &db.src,
        "CREATE TABLE public.lookup (id int PRIMARY KEY, name text, price numeric(10,2), at timestamptz, ok boolean); \
         INSERT INTO public.lookup SELECT i, 'n' || i || ', \"q\"' || CASE WHEN i % 7 = 0 THEN E'\\nline' ELSE '' END, \
           i * 1.5, '2025-01-01 00:00:00+00'::timestamptz + i * interval '1 hour', i % 2 = 0 FROM generate_series(1, 1000) i; \
         INSERT INTO public.lookup VALUES (1001, NULL, NULL, NULL, NULL), (1002, '', 0, NULL, true)",
    );
    let p = db.pipeline(
        "lookup.toml",
        "name = \"lookup\"\n[source]\ntype = \"postgres\"\nurl = \"${ETL_SRC_URL}\"\ntable = \"public.lookup\"\n\
         [[sinks]]\ntype = \"csv\"\npath = \"out/lookup.csv\"\n\
         [[sinks]]\ntype = \"parquet\"\npath = \"out/lookup.parquet\"\n\
         [[sinks]]\ntype = \"postgres\"\nurl = \"${ETL_DST_URL}\"\ntable = \"public.lookup\"\ncreate_table = true\n",
    );
    let p = p.to_str().unwrap();

    // When planned (its statistics current), run and verified
    psql(&db.src, "ANALYZE public.lookup");
    let scans = seq_scans(&db.src, "public.lookup");
    let plan = db.etl(&["plan", p]);
    let planned = seq_scans(&db.src, "public.lookup");
    let run = db.etl(&["run", p]);
    let verify = db.etl(&["verify", p]);
    let again = db.etl(&["run", p]);

    // Then the table is one chunk, its rows from its statistics (the plan
    // scans the table once, for the short sample of its estimate, not
    // once more to count it); the CSV file equals psql's \copy ... CSV HEADER
    // byte for byte, the Parquet file and the table read back equal, and
    // a second run has nothing to do
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout
            .starts_with("Pipeline lookup: 1 chunks, 1,002 rows\n"),
        "{plan:?}"
    );
    assert_eq!(planned, scans + 1, "{plan:?}");
    assert_eq!(run.code, 0, "{run:?}");
    let copied = db.dir.path().join("copied.csv");
    psql(
        &db.src,
        &format!("\\copy public.lookup TO '{}' CSV HEADER", copied.display()),
    );
    assert_eq!(
        std::fs::read(db.dir.path().join("out/lookup.csv")).unwrap(),
        std::fs::read(&copied).unwrap()
    );
    assert_eq!(verify.code, 0, "{verify:?}");
    assert!(verify.stdout.contains("3 equal, 0 differ"), "{verify:?}");
    assert_eq!(
        fingerprint(&db.dst, "public.lookup", "id"),
        fingerprint(&db.src, "public.lookup", "id")
    );
    assert!(
        again
            .stdout
            .contains("skipped      1 chunks done by an earlier run"),
        "{again:?}"
    );

    // And what needs a time column says so
    let follow = db.etl(&["run", "--follow", p]);
    assert_eq!(follow.code, 2, "{follow:?}");
    assert!(
        follow
            .stderr
            .contains("and this pipeline has none (its source is read whole)"),
        "{follow:?}"
    );
    let keyed = db.pipeline(
        "keyed.toml",
        &std::fs::read_to_string(p).unwrap().replacen(
            "[[sinks]]",
            "[chunks]\nkey_column = \"id\"\n[[sinks]]",
            1,
        ),
    );
    let refused = db.etl(&["validate", keyed.to_str().unwrap()]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains(
            "chunks.key_column: without [chunks] time_column a PostgreSQL table or query is read whole, in one chunk"
        ),
        "{refused:?}"
    );
}

#[test]
fn every_type_the_server_prints_goes_to_csv_as_the_server_prints_it() {
    // Given a table of the types the CSV sink cannot write from record
    // batches (bytea, arrays, intervals, uuid; with enums and json, a user
    // type and text), of the types etl carries in no Arrow type (ranges,
    // geometric and network types, money, xml, bit strings, a composite, an
    // array of ranges: read as their text), and
    // Korean text and odd values
    let db = TestDb::new("csv_every_type");
    let ddl = "CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy'); \
         CREATE TYPE public.pair AS (a int, b text); \
         CREATE TABLE public.things (id int PRIMARY KEY, raw bytea, tags text[], nums int[], took interval, \
           doc json, docb jsonb, uid uuid, mood public.mood, \
           amount numeric, f float8, d date, name text, \
           span int4range, during tstzrange, at point, area box, net inet, mac macaddr, cost money, \
           x xml, bits varbit, pair public.pair, spans int4range[])";
    psql(&db.src, ddl);
    psql(
        &db.src,
        "INSERT INTO public.things SELECT i, decode(md5(i::text), 'hex'), ARRAY['a,' || i, NULL, 'q\"' || i, ''], \
           ARRAY[i, -i], make_interval(0, i % 13, 0, i % 40, i % 24, i % 60, i / 7.0), \
           json_build_object('k', i, 's', E'line\\n' || i), jsonb_build_object('z', i), md5(i::text)::uuid, \
           (ARRAY['sad', 'ok', 'happy'])[1 + i % 3]::public.mood, i * 1.000001, \
           CASE i % 50 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN '-Infinity' ELSE i / 3.0 END, \
           CASE WHEN i = 7 THEN 'infinity'::date ELSE '2025-01-01'::date + i END, '한국어 ' || i, \
           int4range(i, i + i % 7), tstzrange('2025-01-01'::timestamptz + i * interval '1 h', NULL), \
           point(i, -i / 3.0), box(point(0, 0), point(i, i)), ('10.0.' || i % 256 || '.1/24')::inet, \
           ('08:00:2b:01:02:' || lpad(to_hex(i % 256), 2, '0'))::macaddr, (i * 1.25)::money, \
           xmlelement(name r, xmlattributes(i AS n), '한 \"' || i || '\"'), (i % 64)::bit(6)::varbit, \
           ROW(i, 'b,\"' || i)::public.pair, ARRAY[int4range(1, i), 'empty'] \
         FROM generate_series(1, 500) i; \
         INSERT INTO public.things (id) VALUES (501)",
    );
    let pipeline = |name: &str, sink: &str| {
        db.pipeline(
            &format!("{name}.toml"),
            &format!(
                "name = \"{name}\"\n[source]\ntype = \"postgres\"\nurl = \"${{ETL_SRC_URL}}\"\ntable = \"public.things\"\n\
                 [[sinks]]\ntype = \"csv\"\n{sink}\n"
            ),
        )
    };
    let plain = pipeline("plain", "path = \"out/things.csv\"");
    let korean = pipeline(
        "korean",
        "path = \"out/things-cp949.csv\"\nencoding = \"cp949\"\ndelimiter = \";\"\nnull = \"\\\\N\"",
    );
    let parquet = db.pipeline(
        "parquet.toml",
        "name = \"parquet\"\n[source]\ntype = \"postgres\"\nurl = \"${ETL_SRC_URL}\"\n\
         query = \"SELECT id, span, during, at, net, pair, spans FROM public.things\"\n\
         [[sinks]]\ntype = \"parquet\"\npath = \"out/things.parquet\"\n",
    );
    let into_postgres = db.pipeline(
        "pg.toml",
        "name = \"pg\"\n[source]\ntype = \"postgres\"\nurl = \"${ETL_SRC_URL}\"\ntable = \"public.things\"\n\
         [[sinks]]\ntype = \"postgres\"\nurl = \"${ETL_DST_URL}\"\ntable = \"public.copied\"\ncreate_table = true\n",
    );

    // When both are planned and run
    let plan = db.etl(&["plan", plain.to_str().unwrap()]);
    let runs =
        [plain.clone(), korean.clone(), parquet].map(|p| db.etl(&["run", p.to_str().unwrap()]));
    let refused = db.etl(&["run", into_postgres.to_str().unwrap()]);
    let whole_parquet = db.pipeline(
        "whole-parquet.toml",
        "name = \"whole\"\n[source]\ntype = \"postgres\"\nurl = \"${ETL_SRC_URL}\"\ntable = \"public.things\"\n\
         [[sinks]]\ntype = \"parquet\"\npath = \"out/whole.parquet\"\n",
    );
    let no_interval = db.etl(&["run", whole_parquet.to_str().unwrap()]);

    // Then each file equals psql's \copy with the same options byte for byte
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout
            .contains("the server's CSV as it comes (COPY ... TO STDOUT (FORMAT csv))"),
        "{plan:?}"
    );
    for run in &runs {
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains("chunks       1 done"), "{run:?}");
        assert!(run.stdout.contains("rows         501"), "{run:?}");
    }
    let copied = |name: &str, options: &str| {
        let file = db.dir.path().join(name);
        psql(
            &db.src,
            &format!("\\copy public.things TO '{}' {options}", file.display()),
        );
        std::fs::read(file).unwrap()
    };
    let written = std::fs::read(db.dir.path().join("out/things.csv")).unwrap();
    assert_eq!(written, copied("copied.csv", "CSV HEADER"));
    let korean_file = std::fs::read(db.dir.path().join("out/things-cp949.csv")).unwrap();
    assert_eq!(
        korean_file,
        copied(
            "copied-949.csv",
            "(FORMAT csv, HEADER, DELIMITER ';', NULL '\\N', ENCODING 'UHC')"
        )
    );
    let (text, _, bad) = encoding_rs::EUC_KR.decode(&korean_file);
    assert!(!bad && text.contains("한국어 500"), "CP949 text");
    // And the Parquet file holds the uncarried columns as their text
    let (schema, batches) = crate::parquet::parquet_rows(&db.dir.path().join("out/things.parquet"));
    assert_eq!(
        schema.field_with_name("span").unwrap().data_type(),
        &arrow::datatypes::DataType::Utf8
    );
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 501);
    let spans: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let column = b.column_by_name("span").unwrap();
            let strings = column
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            strings
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(spans.iter().any(|v| v == "[10,13)"), "{spans:?}");
    // And an interval, which Parquet cannot hold, is refused before any
    // chunk runs, naming the column and the casts
    assert_eq!(no_interval.code, 2, "{no_interval:?}");
    assert!(
        no_interval
            .stderr
            .contains("the Parquet sink cannot hold interval columns")
            && no_interval
                .stderr
                .contains(": took; cast them in `query`, as text (SELECT took::text AS took)"),
        "{no_interval:?}"
    );
    assert!(!db.dir.path().join("out/whole.parquet").exists());
    // And into a PostgreSQL sink they are refused, naming the column and the cast
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("column \"span\" (index 13) is of type int4range, which etl cannot carry")
            && refused.stderr.contains("SELECT \"span\"::text"),
        "{refused:?}"
    );
    let verify = db.etl(&["verify", plain.to_str().unwrap()]);
    assert_eq!(verify.code, 2, "{verify:?}");
    assert!(
        verify.stderr.contains("tags (List(") && verify.stderr.contains("it is not compared yet"),
        "{verify:?}"
    );

    // And each loads back into the same table exactly
    psql(&db.dst, ddl);
    psql(
        &db.dst,
        &format!(
            "\\copy public.things FROM '{}' CSV HEADER",
            db.dir.path().join("out/things.csv").display()
        ),
    );
    let order = "id";
    assert_eq!(
        fingerprint(&db.dst, "public.things", order),
        fingerprint(&db.src, "public.things", order)
    );
    psql(&db.dst, "TRUNCATE public.things");
    psql(
        &db.dst,
        &format!(
            "\\copy public.things FROM '{}' (FORMAT csv, HEADER, DELIMITER ';', NULL '\\N', ENCODING 'UHC')",
            db.dir.path().join("out/things-cp949.csv").display()
        ),
    );
    assert_eq!(
        fingerprint(&db.dst, "public.things", order),
        fingerprint(&db.src, "public.things", order)
    );
}

#[test]
fn a_big_table_without_a_time_column_goes_in_ranges_of_its_key() {
    // Given a table of 10,000 rows with an integer key and no time column
    let db = TestDb::new("csv_key_ranges");
    psql(
        &db.src,
        "CREATE TABLE public.parts (id bigint PRIMARY KEY, name text, weight numeric); \
         INSERT INTO public.parts SELECT i * 3, 'part ' || i, i / 7.0 FROM generate_series(1, 10000) i",
    );
    let text = "name = \"parts\"\n[source]\ntype = \"postgres\"\nurl = \"${ETL_SRC_URL}\"\ntable = \"public.parts\"\n\
         [chunks]\nrange_column = \"id\"\nrange_width = 9000\nworkers = 2\n\
         [[sinks]]\ntype = \"csv\"\npath = \"out/parts_{start}_{end}.csv\"\n\
         [[sinks]]\ntype = \"postgres\"\nurl = \"${ETL_DST_URL}\"\ntable = \"public.parts\"\ncreate_table = true\n";
    let p = db.pipeline("parts.toml", text);
    let p = p.to_str().unwrap();

    // When planned and run; then rows arrive in a range that is done and
    // past the highest, and it runs again, then again with --restart
    let plan = db.etl(&["plan", p]);
    let run = db.etl(&["run", p]);
    psql(
        &db.src,
        "INSERT INTO public.parts SELECT i * 3, 'late ' || i, 0 FROM generate_series(10001, 10010) i; \
         INSERT INTO public.parts VALUES (40000, 'past the end', 1)",
    );
    let next = db.etl(&["run", p]);
    let again = db.etl(&["run", p, "--restart"]);
    let verify = db.etl(&["verify", p]);

    // Then the table is ranges of 9,000 of its key, each a file of its
    // own; the next run cuts the same ranges and loads the new one alone,
    // a restart replaces each file; together they hold every row once,
    // and the target equals the source
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout
            .starts_with("Pipeline parts: 4 chunks, 10,000 rows\n"),
        "{plan:?}"
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(next.code, 0, "{next:?}");
    assert!(
        next.stdout.contains("chunks       1 done, 0 failed, of 1")
            && next
                .stdout
                .contains("skipped      4 chunks done by an earlier run"),
        "{next:?}"
    );
    assert_eq!(again.code, 0, "{again:?}");
    let mut files: Vec<String> = std::fs::read_dir(db.dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "parts_0_9000.csv",
            "parts_18000_27000.csv",
            "parts_27000_36000.csv",
            "parts_36000_45000.csv",
            "parts_9000_18000.csv"
        ]
    );
    let mut lines: Vec<String> = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(db.dir.path().join("out").join(f)).unwrap();
        let mut it = text.lines();
        assert_eq!(it.next(), Some("id,name,weight"), "{f}");
        lines.extend(it.map(str::to_string));
    }
    lines.sort();
    let copied = db.dir.path().join("copied.csv");
    psql(
        &db.src,
        &format!("\\copy public.parts TO '{}' CSV", copied.display()),
    );
    let mut want: Vec<String> = std::fs::read_to_string(&copied)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    want.sort();
    assert_eq!(lines.len(), 10_011);
    assert_eq!(lines, want);
    assert_eq!(
        fingerprint(&db.dst, "public.parts", "id"),
        fingerprint(&db.src, "public.parts", "id")
    );
    assert_eq!(verify.code, 0, "{verify:?}");

    // And a column a range cannot hold every row of is refused, naming it
    psql(&db.src, "ALTER TABLE public.parts ADD COLUMN alt int; UPDATE public.parts SET alt = id WHERE id > 5");
    let nulls = db.pipeline(
        "nulls.toml",
        &text.replace("range_column = \"id\"", "range_column = \"alt\""),
    );
    let refused = db.etl(&["plan", nulls.to_str().unwrap()]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("chunks.range_column \"alt\" is NULL in 1 rows of the source"),
        "{refused:?}"
    );
    let text_col = db.pipeline(
        "text.toml",
        &text.replace("range_column = \"id\"", "range_column = \"name\""),
    );
    let refused = db.etl(&["plan", text_col.to_str().unwrap()]);
    assert!(
        refused
            .stderr
            .contains("chunks.range_column \"name\" is not an integer column"),
        "{refused:?}"
    );
    let fixed = db.pipeline(
        "fixed.toml",
        &text.replace("parts_{start}_{end}.csv", "parts.csv"),
    );
    let refused = db.etl(&["validate", fixed.to_str().unwrap()]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("has no {start} or {end}, so every chunk would write the same file"),
        "{refused:?}"
    );
}

#[test]
fn a_partitioned_or_inherited_table_read_whole_is_planned_with_the_rows_of_its_children() {
    // Given a table partitioned in two and an inheritance parent with a
    // child, their statistics current
    let db = TestDb::new("csv_whole_children");
    psql(
        &db.src,
        "CREATE TABLE public.p (id int, at date) PARTITION BY RANGE (at); \
         CREATE TABLE public.p1 PARTITION OF public.p FOR VALUES FROM ('2024-01-01') TO ('2025-01-01'); \
         CREATE TABLE public.p2 PARTITION OF public.p FOR VALUES FROM ('2025-01-01') TO ('2026-01-01'); \
         INSERT INTO public.p SELECT i, date '2024-01-01' + (i % 700) FROM generate_series(1, 20000) i; \
         CREATE TABLE public.parent (id int); CREATE TABLE public.child (x int) INHERITS (public.parent); \
         INSERT INTO public.parent SELECT generate_series(1, 1000); \
         INSERT INTO public.child SELECT i, i FROM generate_series(1, 3000) i; \
         ANALYZE",
    );
    for (table, rows) in [("public.p", "20,000"), ("public.parent", "4,000")] {
        let p = db.pipeline(
            "whole.toml",
            &format!(
                "name = \"whole\"\n[source]\ntype = \"postgres\"\nurl = \"${{ETL_SRC_URL}}\"\ntable = \"{table}\"\n\
                 [[sinks]]\ntype = \"csv\"\npath = \"out/whole.csv\"\n"
            ),
        );

        // When it is planned
        let plan = db.etl(&["plan", p.to_str().unwrap()]);

        // Then its rows are its children's too, as a read of it returns them
        assert_eq!(plan.code, 0, "{plan:?}");
        assert!(
            plan.stdout
                .starts_with(&format!("Pipeline whole: 1 chunks, {rows} rows\n")),
            "{table}: {plan:?}"
        );
    }
}
