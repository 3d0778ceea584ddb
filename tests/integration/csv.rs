//! CSV files in: a CP949 export loaded exactly as `psql \copy ... ENCODING
//! 'UHC'` loads it, bad lines failing their range or kept aside, and a big
//! file cut into byte ranges that a killed run resumes exactly.

use std::path::Path;

use crate::support::{cp949, fingerprint, korean_text, psql, spawn_etl, wait_for_line, TestDb};

fn pipeline(db: &TestDb, source_extra: &str, chunks_extra: &str) -> String {
    let text = format!(
        "name = \"csv\"\n[source]\ntype = \"csv\"\npath = \"data/*.csv\"\n{source_extra}\n\
         [chunks]\nworkers = 2\nretries = 0\nfailed_csv = \"out/failed.csv\"\n{chunks_extra}\n\
         [[sinks]]\ntype = \"postgres\"\nurl = \"${{ETL_DST_URL}}\"\ntable = \"public.{{file}}\"\ncreate_table = true\n"
    );
    db.pipeline("csv.toml", &text).to_str().unwrap().to_string()
}

/// Whether the plan lists a column as `name type origin` (its columns
/// are padded to line up).
fn shows_column(plan: &str, column: &str) -> bool {
    plan.lines().any(|l| {
        l.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .starts_with(column)
    })
}

fn write(db: &TestDb, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = db.dir.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `\copy` of `file` into a table shaped like `like`, as the runbooks do it.
fn psql_copy(db: &TestDb, like: &str, table: &str, file: &Path, options: &str) {
    psql(&db.dst, &format!("CREATE TABLE {table} (LIKE {like})"));
    psql(
        &db.dst,
        &format!(
            "\\copy {table} FROM '{}' WITH (FORMAT csv, {options})",
            file.display()
        ),
    );
}

#[test]
fn a_cp949_export_loads_exactly_as_psql_copy_loads_it() {
    // Given a CP949 file with Korean headers, quoted commas and newlines,
    // quoted empty strings beside unquoted empty fields, codes with
    // leading zeros and values with spaces around them
    let db = TestDb::new("csv_cp949");
    let lines: Vec<&str> = korean_text().lines().collect();
    let mut text = String::from("번호,이름,우편번호,금액,메모,등록일\n");
    for (i, line) in lines.iter().enumerate() {
        let memo = format!("{line}, {}\n{line}", i);
        let name = if i % 3 == 0 {
            "\"\"".to_string()
        } else if i % 3 == 1 {
            String::new()
        } else {
            format!("  {}  ", &line.chars().take(4).collect::<String>())
        };
        text.push_str(&format!(
            "{},{name},{:05},{}.{:02},\"{}\",2025-06-{:02}\n",
            i + 1,
            (i * 977) % 100_000,
            i * 13,
            i % 100,
            memo.replace('"', "\"\""),
            i % 28 + 1
        ));
    }
    let file = write(&db, "orders.csv", &cp949(&text));
    let p = pipeline(&db, "encoding = \"cp949\"", "");

    // When etl plans and loads it, and psql \copy loads it too
    let plan = db.etl(&["plan", &p]);
    let run = db.etl(&["run", &p]);

    // Then the plan shows the inferred types (codes stay text) and the two
    // tables are equal row for row
    assert_eq!(plan.code, 0, "{plan:?}");
    for column in [
        "번호 bigint inferred",
        "우편번호 text inferred",
        "금액 numeric(38,2) inferred",
        "등록일 date inferred",
    ] {
        assert!(shows_column(&plan.stdout, column), "{column}: {plan:?}");
    }
    assert_eq!(run.code, 0, "{run:?}");
    psql_copy(
        &db,
        "orders",
        "copied",
        &file,
        "HEADER true, ENCODING 'UHC'",
    );
    assert_eq!(
        fingerprint(&db.dst, "orders", "\"번호\""),
        fingerprint(&db.dst, "copied", "\"번호\"")
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FILTER (WHERE \"이름\" IS NULL) || ' ' || count(*) FILTER (WHERE \"이름\" = '') || ' ' || min(\"우편번호\") FROM orders"
        ),
        format!("{} {} 00000", (lines.len() + 1) / 3, lines.len().div_ceil(3))
    );
}

/// 30 rows of (id, amount, note) with a line of two fields at line 6 and
/// an amount that is not a number at line 21.
fn bad_file(db: &TestDb) -> std::path::PathBuf {
    let mut text = String::from("id,amount,note\n");
    for i in 1..=30 {
        match i {
            5 => text.push_str("5,50\n"),
            20 => text.push_str("20,12x,\"twenty\"\n"),
            i => text.push_str(&format!("{i},{},n{i}\n", i * 10)),
        }
    }
    write(db, "bad.csv", text.as_bytes())
}

#[test]
fn bad_lines_fail_their_range_or_go_to_the_reject_file() {
    // Given a file with a short line and a value that is not a bigint
    let db = TestDb::new("csv_bad");
    bad_file(&db);
    let columns = "[source.columns]\namount = \"bigint\"";

    // When loaded with on_bad_line = "fail" (the default), in ranges of 10 rows
    let p = pipeline(&db, columns, "range_rows = 10");
    let fail = db.etl(&["run", &p]);

    // Then the two ranges holding them fail naming file, line and column;
    // the third loads
    assert_eq!(fail.code, 1, "{fail:?}");
    assert!(fail.stdout.contains("1 done, 2 failed, of 3"), "{fail:?}");
    assert!(
        fail.stdout
            .contains("bad.csv, line 6: 2 fields where the header has 3"),
        "{fail:?}"
    );
    assert!(
        fail.stdout
            .contains("bad.csv, line 21: column \"amount\": \"12x\" is not a bigint"),
        "{fail:?}"
    );
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM bad"), "10");
    let failed = std::fs::read_to_string(db.dir.path().join("out/failed.csv")).unwrap();
    assert_eq!(failed.lines().count(), 2, "{failed}");
    assert!(failed.starts_with("bad,15,"), "{failed}");

    // When the same file is loaded again with on_bad_line = "skip"
    psql(&db.dst, "DROP TABLE bad; DELETE FROM etl.chunk_ledger");
    let p = pipeline(
        &db,
        &format!("on_bad_line = \"skip\"\n{columns}"),
        "range_rows = 10",
    );
    let skip = db.etl(&["run", &p]);

    // Then every other row lands, the two lines are in the reject file with
    // their line numbers and reasons, the summary counts them, exit 3
    assert_eq!(skip.code, 3, "{skip:?}");
    assert!(
        skip.stdout.contains("left out 1 bad line of bad"),
        "{skip:?}"
    );
    assert_eq!(psql(&db.dst, "SELECT count(*), sum(id) FROM bad"), "28|440");
    let rejects = std::fs::read_to_string(db.dir.path().join("out/failed.rejects.csv")).unwrap();
    let mut lines: Vec<&str> = rejects.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 3, "{rejects}");
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(",6,2 fields where the header has 3,\"5,50\"")),
        "{rejects}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(",21,\"column \"\"amount\"\": \"\"12x\"\" is not a bigint")),
        "{rejects}"
    );
}

#[test]
fn a_folder_of_different_cp949_exports_loads_each_file_as_its_own_table() {
    // Given two CP949 exports of different shapes in one folder: people
    // with amounts, and codes (leading zeros) with notes holding commas,
    // quotes and newlines, dates and counts
    let db = TestDb::new("csv_folder");
    let lines: Vec<&str> = korean_text().lines().collect();
    let mut people = String::from("번호,이름,금액\n");
    let mut codes = String::from("코드,설명,등록일,수량\n");
    for (i, line) in lines.iter().enumerate() {
        let name: String = line.chars().take(6).collect();
        people.push_str(&format!(
            "{},{},{}.{:02}\n",
            i + 1,
            name.replace(',', " "),
            i * 7,
            i % 100
        ));
        codes.push_str(&format!(
            "{:05},\"{}, \"\"{}\"\"\n{}\",2025-07-{:02},{}\n",
            i * 37,
            line.replace('"', "\"\""),
            i,
            name.replace('"', "\"\""),
            i % 28 + 1,
            i * 3
        ));
    }
    let mut files = Vec::new();
    for (name, text) in [("people.csv", &people), ("codes.csv", &codes)] {
        files.push((
            name.trim_end_matches(".csv"),
            write(&db, name, &cp949(text)),
        ));
    }
    let p = pipeline(&db, "encoding = \"cp949\"", "range_rows = 7");

    // When it is planned, loaded and verified
    let plan = db.etl(&["plan", &p]);
    let run = db.etl(&["run", &p]);
    let verify = db.etl(&["verify", &p]);

    // Then each file is a table with its own columns and types, cut into
    // its own ranges, loaded exactly as psql's \copy ... ENCODING 'UHC'
    // loads it, and verify agrees
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(plan.stdout.contains("2 tables from CSV files"), "{plan:?}");
    assert!(
        plan.stdout.contains("Estimate: ~")
            && plan
                .stdout
                .contains("for the data on 2 workers; basis: a read of "),
        "{plan:?}"
    );
    for column in [
        "번호 bigint inferred",
        "금액 numeric(38,2) inferred",
        "코드 text inferred",
        "등록일 date inferred",
        "수량 bigint inferred",
    ] {
        assert!(shows_column(&plan.stdout, column), "{column}: {plan:?}");
    }
    assert!(
        plan.stdout.contains("codes -> \"public\".\"codes\""),
        "{plan:?}"
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Migration csv done"), "{run:?}");
    assert!(
        run.stdout
            .contains("2 of 2 tables have the source's row count"),
        "{run:?}"
    );
    for (table, file) in &files {
        let copied = format!("copied_{table}");
        psql_copy(&db, table, &copied, file, "HEADER true, ENCODING 'UHC'");
        let order = if *table == "people" {
            "번호"
        } else {
            "코드"
        };
        assert_eq!(
            fingerprint(&db.dst, table, order),
            fingerprint(&db.dst, &copied, order),
            "{table}"
        );
    }
    assert_eq!(verify.code, 0, "{verify:?}");
    assert_eq!(
        verify.stdout.matches("equal (checksum)").count(),
        2,
        "each file's records hashed as the table stores them, beside the table's: {verify:?}"
    );

    // And one Korean text changed in the target is found by verify (the
    // count is the same)
    psql(
        &db.dst,
        "UPDATE codes SET \"설명\" = \"설명\" || '.' WHERE \"코드\" = '00037'",
    );
    let changed = db.etl(&["verify", &p]);
    assert_eq!(changed.code, 1, "{changed:?}");
    let line = changed.line("codes ");
    assert!(line.ends_with("differs (checksum)"), "{line}");

    // And without {file} the files must share their columns: the error
    // says how to load each as its own table
    let one = db.pipeline(
        "one.toml",
        &std::fs::read_to_string(&p)
            .unwrap()
            .replace("public.{file}", "public.everything"),
    );
    let refused = db.etl(&["run", one.to_str().unwrap()]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("put {file} in the PostgreSQL sink's table"),
        "{refused:?}"
    );
}

#[test]
fn a_big_file_cut_into_ranges_resumes_exactly_after_a_kill() {
    // Given 60,000 rows in ranges of 5,000, with quoted newlines inside
    let db = TestDb::new("csv_resume");
    let mut text = String::from("id,at,value,note\n");
    for i in 0..60_000 {
        text.push_str(&format!(
            "{i},2025-06-01 {:02}:{:02}:{:02},{}.5,\"line {i}\nsecond, part\"\n",
            i / 3600 % 24,
            i / 60 % 60,
            i % 60,
            i % 1000
        ));
    }
    let file = write(&db, "big.csv", text.as_bytes());
    let p = pipeline(&db, "", "range_rows = 5000");

    // When a run is killed after its third range, and run again
    let (mut child, lines) = spawn_etl(
        &db,
        &["run", "--workers", "1", &p],
        &[("ETL_TEST_PAUSE_AT", "commit:3")],
    );
    wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM big"), "15000");
    let again = db.etl(&["run", &p]);

    // Then the ranges done are skipped and the table equals \copy's
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("9 done, 0 failed, of 9"), "{again:?}");
    assert!(
        again
            .stdout
            .contains("skipped      3 chunks done by an earlier run"),
        "{again:?}"
    );
    psql_copy(&db, "big", "copied", &file, "HEADER true");
    assert_eq!(
        fingerprint(&db.dst, "big", "id"),
        fingerprint(&db.dst, "copied", "id")
    );
}

#[test]
fn a_round_trip_through_cp949_csv_files_is_exact() {
    // Given the fleet's readings with Korean text holding commas, quotes,
    // newlines, empty strings and NULLs
    let db = TestDb::new("csv_round");
    db.load_timeseries(2, 20, 600);
    psql(
        &db.src,
        "UPDATE tenant.tbl_data_timeseries SET str_v = CASE (long_v % 4) WHEN 0 THEN '' WHEN 1 THEN '똠방각하, \"펲시콜라\"' WHEN 2 THEN E'두 줄\\n메모' ELSE NULL END \
         WHERE value_format = 'Integer' AND long_v % 3 = 0",
    );
    let out_csv = db.pipeline(
        "out.toml",
        "name = \"to-csv\"\n[source]\ntype = \"postgres\"\nurl = \"${ETL_SRC_URL}\"\ntable = \"tenant.tbl_data_timeseries\"\n\
         [chunks]\ntime_column = \"created_time\"\ninterval = \"4h\"\nkey_column = \"ship_id\"\n\
         [[sinks]]\ntype = \"csv\"\npath = \"export/{key}_{start}.csv\"\nencoding = \"cp949\"\n",
    );
    let back = db.pipeline(
        "back.toml",
        "name = \"from-csv\"\n[source]\ntype = \"csv\"\npath = \"export/*.csv\"\nencoding = \"cp949\"\n\
         [source.columns]\ncreated_time = \"timestamptz\"\nbool_v = \"boolean\"\nlong_v = \"bigint\"\ndouble_v = \"double precision\"\nstr_v = \"text\"\nvalue_format = \"text\"\n\
         [chunks]\nrange_rows = 5000\n\
         [[sinks]]\ntype = \"postgres\"\nurl = \"${ETL_DST_URL}\"\ntable = \"tenant.tbl_data_timeseries\"\ncreate_table = true\n",
    );

    // When the readings go out to CP949 files, are verified, and come back in
    let out = db.etl(&["run", out_csv.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let verify = db.etl(&["verify", out_csv.to_str().unwrap()]);
    let back_run = db.etl(&["run", back.to_str().unwrap()]);

    // Then the files are one per chunk, verify finds them equal, and the
    // table loaded back equals the source row for row
    let files = std::fs::read_dir(db.dir.path().join("export"))
        .unwrap()
        .count();
    assert_eq!(files, 6, "2 ships x 3 windows of 4 hours");
    assert_eq!(verify.code, 0, "{verify:?}");
    assert!(verify.stdout.contains("6 equal, 0 differ"), "{verify:?}");
    assert_eq!(back_run.code, 0, "{back_run:?}");
    let order = "ship_id, created_time, data_channel_id";
    assert_eq!(
        fingerprint(&db.dst, "tenant.tbl_data_timeseries", order),
        fingerprint(&db.src, "tenant.tbl_data_timeseries", order)
    );

    // And psql \copy reads a file the same way
    let file = db.dir.path().join("export/IMO9900001_20250601T040000Z.csv");
    psql(
        &db.dst,
        "CREATE TABLE copied (LIKE tenant.tbl_data_timeseries)",
    );
    psql(
        &db.dst,
        &format!(
            "\\copy copied FROM '{}' WITH (FORMAT csv, HEADER true, ENCODING 'UHC')",
            file.display()
        ),
    );
    assert_eq!(
        fingerprint(&db.dst, "copied", order),
        fingerprint(
            &db.dst,
            "(SELECT * FROM tenant.tbl_data_timeseries WHERE ship_id = 'IMO9900001' AND created_time >= '2025-06-01 04:00+00' AND created_time < '2025-06-01 08:00+00')",
            order
        )
    );

    // When a value holds a character CP949 lacks
    psql(
        &db.src,
        "UPDATE tenant.tbl_data_timeseries SET str_v = '배 🚢' WHERE ship_id = 'IMO9900002' AND created_time = '2025-06-01 05:00+00' AND data_channel_id = 'ch_0019'",
    );
    let lacks = db.etl(&["run", "--restart", out_csv.to_str().unwrap()]);

    // Then that chunk fails naming row and column; the others are written
    assert_eq!(lacks.code, 1, "{lacks:?}");
    assert!(lacks.stdout.contains("5 done, 1 failed, of 6"), "{lacks:?}");
    assert!(
        lacks
            .stdout
            .contains("column \"str_v\" holds '🚢' (U+1F6A2), which EUC-KR cannot write"),
        "{lacks:?}"
    );
}

#[test]
fn gzip_and_zstd_files_are_written_and_read_by_their_extension() {
    // Given the readings written to gzip and zstd CSV files by two sinks
    let db = TestDb::new("csv_compressed");
    db.load_timeseries(2, 5, 300);
    let out = db.pipeline(
        "out.toml",
        "name = \"to-files\"\n[source]\ntype = \"postgres\"\nurl = \"${ETL_SRC_URL}\"\ntable = \"tenant.tbl_data_timeseries\"\n\
         [chunks]\ntime_column = \"created_time\"\ninterval = \"24h\"\nkey_column = \"ship_id\"\n\
         [[sinks]]\ntype = \"csv\"\npath = \"gz/{key}_{start}.csv.gz\"\n\
         [[sinks]]\ntype = \"csv\"\npath = \"zst/{key}_{start}.csv.zst\"\n",
    );
    let run = db.etl(&["run", out.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let gz = std::fs::read(db.dir.path().join("gz/IMO9900001_20250601T000000Z.csv.gz")).unwrap();
    let zst = std::fs::read(
        db.dir
            .path()
            .join("zst/IMO9900001_20250601T000000Z.csv.zst"),
    )
    .unwrap();
    assert_eq!(gz[..2], [0x1f, 0x8b], "a gzip file");
    assert_eq!(zst[..4], [0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    let verify = db.etl(&["verify", out.to_str().unwrap()]);
    assert_eq!(verify.code, 0, "{verify:?}");

    // When each set is loaded back by the CSV source, in ranges of 100 rows
    for (dir, table) in [("gz/*.csv.gz", "from_gz"), ("zst/*.csv.zst", "from_zst")] {
        let back = db.pipeline(
            "back.toml",
            &format!(
                "name = \"{table}\"\n[source]\ntype = \"csv\"\npath = \"{dir}\"\n\
                 [source.columns]\ncreated_time = \"timestamptz\"\nbool_v = \"boolean\"\nlong_v = \"bigint\"\ndouble_v = \"double precision\"\nstr_v = \"text\"\n\
                 [chunks]\nrange_rows = 100\n\
                 [[sinks]]\ntype = \"postgres\"\nurl = \"${{ETL_DST_URL}}\"\ntable = \"public.{table}\"\ncreate_table = true\n"
            ),
        );
        let plan = db.etl(&["plan", back.to_str().unwrap()]);
        let loaded = db.etl(&["run", back.to_str().unwrap()]);

        // Then each compressed file is one chunk, and the rows are the source's
        assert!(plan.stdout.starts_with("Pipeline "), "{plan:?}");
        assert!(plan.stdout.contains(": 2 chunks, 3,000 rows"), "{plan:?}");
        assert_eq!(loaded.code, 0, "{loaded:?}");
        let order = "ship_id, created_time, data_channel_id";
        assert_eq!(
            fingerprint(&db.dst, table, order),
            fingerprint(&db.src, "tenant.tbl_data_timeseries", order)
        );
    }
}

/// Two files of (ship, at, value) over three days, hourly, ships
/// interleaved; the second file holds more rows of the first day (out of
/// order across files). `a.csv` has a NULL time on line 3 and, when
/// `short`, a short line on line 101; when `bad_value`, line 101 has a
/// value that is not a bigint. `+09` puts the first nine rows of
/// `b.csv` on 31 May (UTC).
fn window_files(db: &TestDb, short: bool, bad_value: bool) -> (u64, u64) {
    let mut a = String::from("ship,at,value\n");
    let mut b = String::from("ship,at,value\n");
    let (mut rows, mut sum) = (0u64, 0u64);
    a.push_str("s1,2025-06-01 00:00:00+00,1\n");
    a.push_str("s2,,7\n");
    rows += 1;
    sum += 1;
    for h in 1..72u64 {
        for ship in ["s1", "s2"] {
            if short && h == 49 && ship == "s2" {
                a.push_str("s2,2025-06-03 01:00:00+00\n");
                continue;
            }
            if bad_value && h == 49 && ship == "s2" {
                a.push_str("s2,2025-06-03 01:00:00+00,12x\n");
                continue;
            }
            a.push_str(&format!(
                "{ship},2025-06-{:02} {:02}:00:00+00,{h}\n",
                1 + h / 24,
                h % 24
            ));
            rows += 1;
            sum += h;
        }
    }
    for h in 0..24u64 {
        b.push_str(&format!("s2,2025-06-01 {h:02}:30:00+09,{}\n", 1000 + h));
        rows += 1;
        sum += 1000 + h;
    }
    write(db, "a.csv", a.as_bytes());
    write(db, "b.csv", b.as_bytes());
    (rows, sum)
}

fn window_pipeline(db: &TestDb, policy: &str) -> String {
    let text = format!(
        "name = \"csv_windows\"\n[source]\ntype = \"csv\"\npath = \"data/*.csv\"\non_bad_line = \"{policy}\"\n\
         [source.columns]\nat = \"timestamptz\"\nvalue = \"bigint\"\n\
         [chunks]\ntime_column = \"at\"\nkey_column = \"ship\"\ninterval = \"24h\"\nworkers = 2\nretries = 0\nfailed_csv = \"out/failed.csv\"\n\
         [[sinks]]\ntype = \"postgres\"\nurl = \"${{ETL_DST_URL}}\"\ntable = \"public.w_{{key}}\"\ncreate_table = true\nprimary_key = [\"ship\", \"at\"]\n"
    );
    db.pipeline("windows.toml", &text)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn time_windows_per_key_over_several_files_load_each_row_once() {
    // Given two files whose rows of one day are spread over both, with a
    // NULL time and a short line
    let db = TestDb::new("csv_windows");
    let (rows, sum) = window_files(&db, true, false);
    let p = window_pipeline(&db, "skip");

    // When planned and loaded in windows of a day per ship, bad lines skipped
    let plan = db.etl(&["plan", &p]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let run = db.etl(&["run", &p]);

    // Then there is one chunk per ship and day, every row lands once in its
    // ship's table, the NULL time is reported as not loaded and the short
    // line is rejected once, by the chunk of the line before it
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.contains("7 done, 0 failed, of 7"), "{run:?}");
    assert!(
        run.stdout.contains("not loaded   1 rows outside"),
        "{run:?}"
    );
    let loaded = psql(
        &db.dst,
        "SELECT count(*), sum(value) FROM (SELECT * FROM w_s1 UNION ALL SELECT * FROM w_s2) t",
    );
    assert_eq!(loaded, format!("{rows}|{sum}"));
    assert_eq!(
        psql(&db.dst, "SELECT count(*) FROM w_s1 WHERE ship <> 's1'"),
        "0"
    );
    let rejects = std::fs::read_to_string(db.dir.path().join("out/failed.rejects.csv")).unwrap();
    assert_eq!(rejects.lines().count(), 2, "{rejects}");
    assert!(
        rejects.contains("a.csv,101,2 fields where the header has 3"),
        "{rejects}"
    );
    let ledger = psql(
        &db.dst,
        "SELECT string_agg(chunk_key || ' ' || to_char(start_at AT TIME ZONE 'UTC', 'MM-DD'), ',' ORDER BY chunk_key, start_at) FROM etl.chunk_ledger WHERE status = 'done'",
    );
    assert_eq!(
        ledger,
        "s1 06-01,s1 06-02,s1 06-03,s2 05-31,s2 06-01,s2 06-02,s2 06-03"
    );

    // And etl verify compares each window's records with its rows in the
    // target value by value: one value changed in one window is found (the
    // count is the same), then a row lost from one window
    let verify = db.etl(&["verify", &p]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert!(verify.stdout.contains("7 equal, 0 differ"), "{verify:?}");
    psql(
        &db.dst,
        "UPDATE w_s1 SET value = -value WHERE at = (SELECT min(at) FROM w_s1 WHERE at >= '2025-06-02 00:00+00' AND at < '2025-06-03 00:00+00' AND value <> 0)",
    );
    let changed = db.etl(&["verify", &p]);
    assert_eq!(changed.code, 1, "{changed:?}");
    assert!(changed.stdout.contains("6 equal, 1 differ"), "{changed:?}");
    let row = changed
        .stdout
        .lines()
        .find(|l| l.starts_with("s1 ") && l.contains("2025-06-02 00:00:00"))
        .unwrap_or_else(|| panic!("{changed:?}"));
    assert!(row.contains("differs"), "{row}");
    psql(
        &db.dst,
        "UPDATE w_s1 SET value = -value WHERE at = (SELECT min(at) FROM w_s1 WHERE at >= '2025-06-02 00:00+00' AND at < '2025-06-03 00:00+00' AND value <> 0)",
    );
    psql(
        &db.dst,
        "DELETE FROM w_s2 WHERE ctid = (SELECT min(ctid) FROM w_s2 WHERE at >= '2025-06-02 00:00+00' AND at < '2025-06-03 00:00+00')",
    );
    let lost = db.etl(&["verify", &p]);
    assert_eq!(lost.code, 1, "{lost:?}");
    assert!(lost.stdout.contains("6 equal, 1 differ"), "{lost:?}");

    // And --restart of one key redoes its windows in place, rows once (the
    // short line is s1's to reject)
    let again = db.etl(&["run", "--restart", "--key", "s2", &p]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("4 done, 0 failed, of 4"), "{again:?}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*), sum(value) FROM (SELECT * FROM w_s1 UNION ALL SELECT * FROM w_s2) t"
        ),
        format!("{rows}|{sum}")
    );
}

#[test]
fn a_window_failed_on_a_bad_line_reruns_after_the_file_is_fixed() {
    // Given the same files with a short line, bad lines failing
    let db = TestDb::new("csv_windows_rerun");
    window_files(&db, true, false);
    let p = window_pipeline(&db, "fail");

    // When run, then the line fails the plan before anything is written:
    // fixed, its row could belong to any window
    let run = db.etl(&["run", &p]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("a.csv, line 101: 2 fields where the header has 3; a time-window chunk cannot be found for it"),
        "{run:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'w_%'"
        ),
        "0"
    );

    // Given a value that does not parse instead, in a row whose window is known
    window_files(&db, false, true);
    let run = db.etl(&["run", &p]);

    // Then its window fails, naming file, line and column; the others load
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("6 done, 1 failed, of 7"), "{run:?}");
    assert!(
        run.stdout
            .contains("a.csv, line 101: column \"value\": \"12x\" is not a bigint"),
        "{run:?}"
    );
    let failed = std::fs::read_to_string(db.dir.path().join("out/failed.csv")).unwrap();
    assert!(failed.contains("s2,2025-06-03"), "{failed}");

    // When the line is fixed and the failed chunk rerun (a new process:
    // it finds the window's spans again)
    let (rows, sum) = window_files(&db, false, false);
    let rerun = db.etl(&["rerun", &p, "out/failed.csv"]);

    // Then the tables hold every row once
    assert_eq!(rerun.code, 0, "{rerun:?}");
    assert!(rerun.stdout.contains("1 done, 0 failed, of 1"), "{rerun:?}");
    let loaded = psql(
        &db.dst,
        "SELECT count(*), sum(value) FROM (SELECT * FROM w_s1 UNION ALL SELECT * FROM w_s2) t",
    );
    assert_eq!(loaded, format!("{rows}|{sum}"));
}

/// `rows` CP949 rows of (id, name), the row `bad` holding two bytes that
/// are not CP949.
fn cp949_with_bad_bytes(db: &TestDb, rows: u32, bad: u32) {
    let mut bytes = encoding_rs::EUC_KR.encode("id,name\n").0.into_owned();
    for i in 1..=rows {
        if i == bad {
            bytes.extend_from_slice(format!("{i},").as_bytes());
            bytes.extend_from_slice(b"\xff\xfe\n");
        } else {
            let name = ["선박", "항해", "기관"][i as usize % 3];
            bytes.extend_from_slice(&encoding_rs::EUC_KR.encode(&format!("{i},{name}\n")).0);
        }
    }
    write(db, "ships.csv", &bytes);
}

#[test]
fn bytes_invalid_in_the_code_page_fail_naming_the_line_or_load_as_replacement() {
    // Given a CP949 file whose third row holds bytes that are not CP949
    let db = TestDb::new("csv_invalid");
    cp949_with_bad_bytes(&db, 5, 3);

    // When it is planned with on_invalid_text = "error" (the default)
    let p = pipeline(&db, "encoding = \"cp949\"", "");
    let plan = db.etl(&["plan", &p]);

    // Then reading the sample for types stops before anything is written,
    // naming the file, the line, the text before the bytes and what to change
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(
        plan.stderr.contains(
            "ships.csv, line 4: bytes that are not valid EUC-KR (after \"3,\"); set source.encoding to the file's code page, or on_invalid_text = \"replace\" to load them as U+FFFD"
        ),
        "{plan:?}"
    );

    // Given the bytes past the sample read for types, at row 11,000 of 12,000
    cp949_with_bad_bytes(&db, 12_000, 11_000);

    // When it is loaded in ranges of 5,000 rows
    let p = pipeline(&db, "encoding = \"cp949\"", "range_rows = 5000");
    let error = db.etl(&["run", &p]);

    // Then the range holding them fails naming the line; the others load
    assert_eq!(error.code, 1, "{error:?}");
    assert!(error.stdout.contains("2 done, 1 failed, of 3"), "{error:?}");
    assert!(
        error
            .stdout
            .contains("ships.csv, line 11001: bytes that are not valid EUC-KR"),
        "{error:?}"
    );
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM ships"), "10000");

    // When it is loaded again with on_invalid_text = "replace"
    psql(&db.dst, "DROP TABLE ships; DELETE FROM etl.chunk_ledger");
    let p = pipeline(
        &db,
        "encoding = \"cp949\"\non_invalid_text = \"replace\"",
        "range_rows = 5000",
    );
    let replace = db.etl(&["run", &p]);

    // Then every row lands, the bytes as U+FFFD, counted, and the run says
    // values were changed (exit 3)
    assert_eq!(replace.code, 3, "{replace:?}");
    assert!(
        replace
            .stdout
            .contains("replaced 2 invalid byte sequences in ships with U+FFFD"),
        "{replace:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) || ' ' || string_agg(name, ' ' ORDER BY id) FILTER (WHERE id BETWEEN 10999 AND 11001) FROM ships"
        ),
        "12000 항해 \u{FFFD}\u{FFFD} 선박"
    );
}

#[test]
fn a_value_past_the_inference_sample_that_breaks_its_type_fails_its_range() {
    // Given 12,000 numeric codes, of which the 11,000th (past the 10,000
    // records sampled for types) is not a number
    let db = TestDb::new("csv_sample");
    let mut text = String::from("code,qty\n");
    for i in 1..=12_000 {
        if i == 11_000 {
            text.push_str("A-11000,1\n");
        } else {
            text.push_str(&format!("{i},1\n"));
        }
    }
    write(&db, "codes.csv", text.as_bytes());

    // When it is planned and loaded in ranges of 5,000 rows
    let p = pipeline(&db, "", "range_rows = 5000");
    let plan = db.etl(&["plan", &p]);
    let run = db.etl(&["run", &p]);

    // Then the plan infers bigint from the sample; the range holding the
    // value fails naming file, line, column and the [source.columns] line
    // to write, and nothing of it loads as NULL
    assert!(
        shows_column(&plan.stdout, "code bigint inferred"),
        "{plan:?}"
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("2 done, 1 failed, of 3"), "{run:?}");
    assert!(
        run.stdout.contains(
            "codes.csv, line 11001: column \"code\": \"A-11000\" is not a bigint (bigint column; if it holds such values, set its type in [source.columns]: \"code\" = \"text\")"
        ),
        "{run:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) || ' ' || count(*) FILTER (WHERE code IS NULL) FROM codes"
        ),
        "10000 0"
    );

    // When the user writes that line and loads the file again
    psql(&db.dst, "DROP TABLE codes; DELETE FROM etl.chunk_ledger");
    let p = pipeline(
        &db,
        "[source.columns]\ncode = \"text\"",
        "range_rows = 5000",
    );
    let again = db.etl(&["run", &p]);

    // Then every row lands
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FILTER (WHERE code = 'A-11000') || ' ' || count(*) FROM codes"
        ),
        "1 12000"
    );
}

#[test]
fn a_retried_range_writes_its_bad_lines_to_the_reject_file_once() {
    // Given the file with two bad lines, and a target whose first COPY
    // fails (a statement trigger counting with a sequence, which a
    // rollback does not undo)
    let db = TestDb::new("csv_retry_rejects");
    let file = bad_file(&db);
    // and a note holding two bytes that are not UTF-8
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(b"31,310,n\xff\xfe\n");
    std::fs::write(&file, bytes).unwrap();
    psql(
        &db.dst,
        "CREATE SEQUENCE once; CREATE TABLE bad (id bigint, amount bigint, note text); \
         CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF nextval('once') = 1 THEN RAISE EXCEPTION 'the first load fails' USING ERRCODE = '40001'; END IF; RETURN NULL; END $$; \
         CREATE TRIGGER fail_once BEFORE INSERT ON bad FOR EACH STATEMENT EXECUTE FUNCTION fail_once()",
    );
    let p = pipeline(
        &db,
        "on_bad_line = \"skip\"\non_invalid_text = \"replace\"\n[source.columns]\namount = \"bigint\"",
        "",
    );
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("retries = 0", "retries = 1\nretry_backoff_secs = 0");
    std::fs::write(&p, text).unwrap();

    // When the file is loaded as one range, the first try failing
    let out = db.etl(&["run", &p]);

    // Then the retry loads it, and each bad line is in the reject file and
    // the summary once, the replaced bytes counted once
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.contains("1 done, 0 failed, of 1"), "{out:?}");
    assert!(
        out.stdout.contains("left out 2 bad lines of bad"),
        "{out:?}"
    );
    assert_eq!(out.stdout.matches("left out").count(), 1, "{out:?}");
    assert!(
        out.stdout
            .contains("replaced 2 invalid byte sequences in bad with U+FFFD"),
        "{out:?}"
    );
    assert_eq!(out.stdout.matches("replaced").count(), 1, "{out:?}");
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM bad"), "29");
    let rejects = std::fs::read_to_string(db.dir.path().join("out/failed.rejects.csv")).unwrap();
    assert_eq!(rejects.lines().count(), 3, "{rejects}");
}

#[test]
fn follow_is_refused_on_files_with_what_to_do_instead() {
    let db = TestDb::new("csv_follow");
    write(&db, "x.csv", b"a,b\n1,2\n");
    let p = pipeline(&db, "", "");
    let out = db.etl(&["run", "--follow", &p]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(
            "--follow polls a database for rows newer than the cutoff, which files do not have"
        ),
        "{out:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'x'"
        ),
        "0"
    );
}
