//! The Parquet sink: one file per chunk, written to a temporary name,
//! fsynced and renamed; the Arrow schema survives; a chunk is done only
//! when every sink has it.

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Decimal128Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::support::{assert_copied, etl_in, fingerprint, psql, repo, TestDb};

const ORDER: &str = "ship_id, created_time, data_channel_id";

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn run_staging(db: &TestDb, args: &[&str]) -> crate::support::Output {
    let staging = db.dir.path().join("staging");
    let p = repo().join("pipelines/ships-staging.toml");
    let mut all = args.to_vec();
    all.push(p.to_str().unwrap());
    etl_in(
        db.dir.path(),
        &all,
        &[
            ("ETL_SRC_URL", &db.src),
            ("ETL_DST_URL", &db.dst),
            ("ETL_STAGING", staging.to_str().unwrap()),
        ],
    )
}

pub fn parquet_rows(path: &Path) -> (arrow::datatypes::SchemaRef, Vec<arrow::array::RecordBatch>) {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = reader.schema().clone();
    let batches = reader
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (schema, batches)
}

#[test]
fn staging_writes_one_readable_file_per_chunk_beside_postgres() {
    // Given 2 ships x 2 days
    let db = TestDb::new("parquet_staging");
    db.load_timeseries(2, 3, 2 * 1440);

    // When the shipped staging pipeline runs
    let out = run_staging(&db, &["run"]);

    // Then PostgreSQL has every row and there is one Parquet file per chunk, no temporary file
    assert_eq!(out.code, 0, "{out:?}");
    assert_copied(&db);
    let staging = db.dir.path().join("staging/ships-staging");
    let names: Vec<String> = files(&staging)
        .iter()
        .map(|p| p.strip_prefix(&staging).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        vec![
            "IMO9900001/20250601T000000Z.parquet",
            "IMO9900001/20250602T000000Z.parquet",
            "IMO9900002/20250601T000000Z.parquet",
            "IMO9900002/20250602T000000Z.parquet",
        ]
    );

    // And each file reads back with its schema and the source's values
    let (schema, batches) = parquet_rows(&staging.join("IMO9900002/20250602T000000Z.parquet"));
    assert_eq!(
        schema.field_with_name("created_time").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 3 * 1440);
    let first = &batches[0];
    let expected = psql(
        &db.src,
        "SELECT ship_id || ' ' || data_channel_id || ' ' || (extract(epoch FROM created_time) * 1000000)::int8 || ' ' || coalesce(long_v::text, '-') \
         FROM tenant.tbl_data_timeseries WHERE ship_id = 'IMO9900002' AND created_time >= '2025-06-02' ORDER BY created_time, data_channel_id LIMIT 1",
    );
    let long_v = first
        .column_by_name("long_v")
        .unwrap()
        .as_primitive::<Int64Type>();
    let got = format!(
        "{} {} {} {}",
        first
            .column_by_name("ship_id")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        first
            .column_by_name("data_channel_id")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        first
            .column_by_name("created_time")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        if long_v.is_null(0) {
            "-".to_string()
        } else {
            long_v.value(0).to_string()
        }
    );
    assert_eq!(got, expected);
}

#[test]
fn a_missing_file_makes_only_its_chunk_run_again() {
    // Given a completed staging run
    let db = TestDb::new("parquet_missing");
    db.load_timeseries(2, 3, 2 * 1440);
    assert_eq!(run_staging(&db, &["run"]).code, 0);
    let gone = db
        .dir
        .path()
        .join("staging/ships-staging/IMO9900001/20250602T000000Z.parquet");
    std::fs::remove_file(&gone).unwrap();

    // When run again
    let out = run_staging(&db, &["run"]);

    // Then exactly that chunk runs: the file is back, PostgreSQL still exact
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("1 done, 0 failed, of 1"), "{out:?}");
    assert!(out.stdout.contains("skipped      3 chunks"), "{out:?}");
    assert!(gone.is_file());
    assert_copied(&db);
}

#[test]
fn a_failed_chunk_leaves_no_file() {
    // Given a PostgreSQL target that rejects the second day
    let db = TestDb::new("parquet_failed");
    db.load_timeseries(1, 3, 2 * 1440);
    psql(&db.dst, "CREATE SCHEMA tenant");
    psql(
        &db.dst,
        "CREATE TABLE tenant.tbl_data_timeseries (ship_id text, data_channel_id text, created_time timestamptz, \
         value_format text, bool_v boolean, str_v text, long_v bigint, double_v double precision, \
         CHECK (created_time < '2025-06-02'))",
    );

    // When the staging pipeline runs
    let out = run_staging(&db, &["run"]);

    // Then the failed chunk has no file (and no temporary one), the other chunk has its file
    assert_eq!(out.code, 1, "{out:?}");
    let staging = db.dir.path().join("staging/ships-staging");
    let names: Vec<String> = files(&staging)
        .iter()
        .map(|p| p.strip_prefix(&staging).unwrap().display().to_string())
        .collect();
    assert_eq!(names, vec!["IMO9900001/20250601T000000Z.parquet"]);
}

#[test]
fn decimals_lists_and_time_zones_survive_in_parquet() {
    // Given a source with a decimal, a list and a timestamptz
    let db = TestDb::new("parquet_types");
    psql(
        &db.src,
        "CREATE TABLE t (id int, at timestamptz, amount numeric(12,2), tags text[]); \
         INSERT INTO t VALUES (1, '2025-06-01 10:00:00+09', 1234567890.12, '{a,NULL,b}'), (2, '2025-06-01 11:00:00+00', NULL, '{}')",
    );
    let p = db.pipeline(
        "p.toml",
        "name = \"types\"\n[source]\ntype = \"postgres\"\nurl = \"${ETL_SRC_URL}\"\ntable = \"t\"\n\
         [chunks]\ntime_column = \"at\"\n[[sinks]]\ntype = \"parquet\"\npath = \"out/{start}.parquet\"\ncompression = \"snappy\"\n",
    );
    let out = db.etl(&["run", p.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");

    // When the file is read back
    let (schema, batches) = parquet_rows(&db.dir.path().join("out/20250601T000000Z.parquet"));

    // Then types and values are as the source had them
    assert_eq!(
        schema.field_with_name("amount").unwrap().data_type(),
        &DataType::Decimal128(12, 2)
    );
    let b = &batches[0];
    assert_eq!(
        b.column_by_name("amount")
            .unwrap()
            .as_primitive::<Decimal128Type>()
            .value(0),
        123456789012
    );
    assert_eq!(
        b.column_by_name("at")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_748_739_600_000_000
    );
    let tags = b.column_by_name("tags").unwrap().as_list::<i32>();
    let first = tags.value(0);
    let first = first.as_string::<i32>();
    assert_eq!(
        (first.value(0), first.is_null(1), first.value(2)),
        ("a", true, "b")
    );
    assert_eq!(tags.value(1).len(), 0);
}

#[test]
fn pyarrow_reads_the_files_with_the_same_values() {
    // Given a staging run of 1 ship x 1 day
    let db = TestDb::new("parquet_pyarrow");
    db.load_timeseries(1, 20, 1440);
    assert_eq!(run_staging(&db, &["run"]).code, 0);
    let file = db
        .dir
        .path()
        .join("staging/ships-staging/IMO9900001/20250601T000000Z.parquet");

    // When pyarrow, an independent reader, sums the file's columns
    let script = "import sys, pyarrow.parquet as pq, pyarrow.compute as pc\n\
        t = pq.read_table(sys.argv[1])\n\
        print(t.num_rows, t.schema.field('created_time').type, \
              pc.sum(t['long_v']).as_py(), round(pc.sum(t['double_v']).as_py(), 3), \
              pc.sum(pc.cast(t['bool_v'], 'int64')).as_py(), pc.count_distinct(t['str_v']).as_py(), \
              pc.min(t['created_time']).as_py().isoformat())";
    let out = std::process::Command::new("python3")
        .args(["-c", script, file.to_str().unwrap()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pyarrow could not read the file (install it with scripts/install-deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Then it sees what PostgreSQL has
    let expected = psql(
        &db.src,
        "SELECT count(*) || ' timestamp[us, tz=UTC] ' || sum(long_v) || ' ' || round(sum(double_v)::numeric, 3) || ' ' \
         || sum(bool_v::int) || ' ' || count(DISTINCT str_v) || ' ' || to_char(min(created_time), 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"') \
         FROM tenant.tbl_data_timeseries",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
}

#[test]
fn a_staging_folder_loads_back_into_a_fresh_database_exactly() {
    // Given a staging folder written from the source
    let db = TestDb::new("parquet_back");
    db.load_timeseries(2, 5, 2 * 1440);
    assert_eq!(run_staging(&db, &["run"]).code, 0);
    let fresh = TestDb::new("parquet_back_fresh");
    let staging = db.dir.path().join("staging");
    let p = repo().join("pipelines/staging-to-postgres.toml");
    let env = [
        ("ETL_DST_URL", fresh.dst.as_str()),
        ("ETL_STAGING", staging.to_str().unwrap()),
    ];

    // When planned and loaded into a fresh database
    let plan = etl_in(db.dir.path(), &["plan", p.to_str().unwrap()], &env);
    let out = etl_in(db.dir.path(), &["run", p.to_str().unwrap()], &env);

    // Then one chunk per file, and the fresh table equals the original source, with its types
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout
            .starts_with("Pipeline staging-to-postgres: 4 chunks, 28,800 rows\n"),
        "{plan:?}"
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        fingerprint(&fresh.dst, "tenant.tbl_data_timeseries", ORDER),
        fingerprint(&db.src, "tenant.tbl_data_timeseries", ORDER)
    );
    assert_eq!(
        psql(&fresh.dst, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'tenant.tbl_data_timeseries'::regclass AND attname = 'created_time'"),
        "timestamp with time zone"
    );

    // And verify compares each window in the files with the table's rows,
    // value by value: equal, then one value changed is found in its chunk,
    // then a row deleted
    let verify = etl_in(db.dir.path(), &["verify", p.to_str().unwrap()], &env);
    assert_eq!(verify.code, 0, "{verify:?}");
    psql(
        &fresh.dst,
        "UPDATE tenant.tbl_data_timeseries SET value_format = value_format || '!' WHERE ctid = (SELECT min(ctid) FROM tenant.tbl_data_timeseries WHERE ship_id = 'IMO9900001' AND created_time >= '2025-06-02')",
    );
    let changed = etl_in(db.dir.path(), &["verify", p.to_str().unwrap()], &env);
    assert_eq!(changed.code, 1, "{changed:?}");
    assert!(changed.stdout.contains("3 equal, 1 differ"), "{changed:?}");
    let row = changed.line("IMO9900001");
    assert!(
        row.contains("2025-06-02") && row.contains("differs"),
        "{row}"
    );
    psql(
        &fresh.dst,
        "UPDATE tenant.tbl_data_timeseries SET value_format = rtrim(value_format, '!') WHERE value_format LIKE '%!'",
    );
    psql(
        &fresh.dst,
        "DELETE FROM tenant.tbl_data_timeseries WHERE ctid = (SELECT min(ctid) FROM tenant.tbl_data_timeseries WHERE ship_id = 'IMO9900002' AND created_time >= '2025-06-02')",
    );
    let differs = etl_in(db.dir.path(), &["verify", p.to_str().unwrap()], &env);
    assert_eq!(differs.code, 1, "{differs:?}");
    assert!(differs.stdout.contains("IMO9900002"), "{differs:?}");
}

#[test]
fn chunks_re_window_a_staging_folder() {
    // Given a staging folder of one file per ship and day
    let db = TestDb::new("parquet_rewindow");
    db.load_timeseries(2, 5, 2 * 1440);
    assert_eq!(run_staging(&db, &["run"]).code, 0);
    let fresh = TestDb::new("parquet_rewindow_fresh");
    let staging = db.dir.path().join("staging");
    let text = std::fs::read_to_string(repo().join("pipelines/staging-to-postgres.toml"))
        .unwrap()
        .replace("interval = \"24h\"", "interval = \"6h\"");
    let p = db.pipeline("six_hours.toml", &text);
    let env = [
        ("ETL_DST_URL", fresh.dst.as_str()),
        ("ETL_STAGING", staging.to_str().unwrap()),
    ];

    // When loaded back in 6-hour chunks
    let out = etl_in(db.dir.path(), &["run", p.to_str().unwrap()], &env);

    // Then each file is read by four chunks, and the table equals the source
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("  chunks       16 done, 0 failed, of 16"),
        "{out:?}"
    );
    assert_eq!(
        fingerprint(&fresh.dst, "tenant.tbl_data_timeseries", ORDER),
        fingerprint(&db.src, "tenant.tbl_data_timeseries", ORDER)
    );
}

#[test]
fn a_parquet_source_with_no_file_says_so() {
    let db = TestDb::new("parquet_no_file");
    let p = repo().join("pipelines/staging-to-postgres.toml");
    let out = etl_in(
        db.dir.path(),
        &["plan", p.to_str().unwrap()],
        &[("ETL_DST_URL", &db.dst), ("ETL_STAGING", "nowhere")],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.starts_with(
            "etl: source.path \"nowhere/ships-staging/**/*.parquet\" matches no file (relative to "
        ),
        "{out:?}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

#[test]
fn a_crafted_type_name_in_a_parquet_file_is_refused_and_nothing_runs() {
    // Given a staging folder with a file whose etl.pg_type metadata holds SQL
    let db = TestDb::new("parquet_crafted");
    psql(&db.dst, "CREATE TABLE victim (x int)");
    let staging = db.dir.path().join("staging");
    let file = staging.join("ships-staging/crafted.parquet");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let script = "import sys, datetime, pyarrow as pa, pyarrow.parquet as pq\n\
        schema = pa.schema([pa.field('ship_id', pa.string()), pa.field('created_time', pa.timestamp('us', tz='UTC')),\n\
          pa.field('data_channel_id', pa.string()),\n\
          pa.field('value', pa.string(), metadata={b'etl.pg_type': b'text); DROP TABLE victim; --'})])\n\
        t = pa.table({'ship_id': ['S1'], 'created_time': [datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc)],\n\
          'data_channel_id': ['c'], 'value': ['v']}, schema=schema)\n\
        pq.write_table(t, sys.argv[1])\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script, file.to_str().unwrap()])
        .output()
        .expect("python3 with pyarrow");
    assert!(out.status.success(), "{out:?}");
    let p = repo().join("pipelines/staging-to-postgres.toml");
    let env = [
        ("ETL_DST_URL", db.dst.as_str()),
        ("ETL_STAGING", staging.to_str().unwrap()),
    ];

    // When planned or run
    for command in ["plan", "run"] {
        let out = etl_in(db.dir.path(), &[command, p.to_str().unwrap()], &env);

        // Then it stops before anything is made, naming the file, the
        // column and the metadata
        assert_eq!(out.code, 2, "{out:?}");
        assert!(
            out.stderr.contains("crafted.parquet: column \"value\": field metadata etl.pg_type: \"text); DROP TABLE victim; --\" is not a PostgreSQL type name"),
            "{out:?}"
        );
    }
    assert_eq!(
        psql(&db.dst, "SELECT to_regclass('victim') IS NOT NULL AND to_regclass('tenant.tbl_data_timeseries') IS NULL"),
        "t"
    );
}

#[test]
fn a_file_sinks_cutoff_persists_beside_its_files_and_follow_moves_it() {
    // Given 2 ships x 3 days and a pipeline whose only sink is Parquet files
    let db = TestDb::new("parquet_cutoff");
    db.load_timeseries(2, 3, 3 * 1440);
    let p = db.dir.path().join("files.toml");
    std::fs::write(
        &p,
        "name = \"ships-files\"\n\
         [source]\ntype = \"postgres\"\nurl = \"${ETL_SRC_URL}\"\ntable = \"tenant.tbl_data_timeseries\"\n\
         [chunks]\ntime_column = \"created_time\"\ninterval = \"24h\"\nkey_column = \"ship_id\"\n\
         [[sinks]]\ntype = \"parquet\"\npath = \"out/{key}/{start}.parquet\"\n",
    )
    .unwrap();
    let p = p.to_str().unwrap();
    let out = db.dir.path().join("out");

    // When the cutoff is set by hand, then read by another process
    let set = db.etl(&["cutoff", "set", p, "2025-06-02 00:00:00"]);
    assert_eq!(set.code, 0, "{set:?}");
    let show = db.etl(&["cutoff", "show", p]);

    // Then it was kept in the sink's folder, not in memory
    assert!(show.stdout.contains("2025-06-02 00:00:00 UTC"), "{show:?}");
    let file = out.join(".etl/ships-files.cutoff");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        "1748822400000000"
    );

    // When a plain run follows
    let run = db.etl(&["run", p]);

    // Then the backfill stopped at the cutoff: the first day's files only
    assert_eq!(run.code, 0, "{run:?}");
    let names = |dir: &Path| -> Vec<String> {
        files(dir)
            .iter()
            .map(|f| f.strip_prefix(dir).unwrap().display().to_string())
            .filter(|f| !f.starts_with(".etl"))
            .collect()
    };
    assert_eq!(
        names(&out),
        [
            "IMO9900001/20250601T000000Z.parquet",
            "IMO9900002/20250601T000000Z.parquet"
        ]
    );

    // When run --follow loads from the cutoff and is stopped
    let (mut child, _log) = crate::support::spawn_etl(
        &db,
        &[
            "run",
            "--follow",
            "--interval-secs",
            "1",
            "--lag-secs",
            "0",
            p,
        ],
        &[],
    );
    crate::support::eventually("the cutoff to move", || {
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
            .is_some_and(|c| c > 1_748_822_400_000_000)
    });
    let (code, stdout) = crate::support::stop(&mut child);

    // Then the later rows are in one file per ship from the cutoff, the
    // cutoff moved forward in the file, and every row is in some file
    assert_eq!(code, Some(0), "{stdout}");
    let later: Vec<String> = names(&out)
        .into_iter()
        .filter(|n| n.contains("20250602T000000Z"))
        .collect();
    assert_eq!(later.len(), 2, "{:?}", names(&out));
    let rows: usize = files(&out)
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
        .map(|f| {
            parquet_rows(f)
                .1
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(rows, 2 * 3 * 3 * 1440);
    let show = db.etl(&["cutoff", "show", p]);
    assert!(!show.stdout.contains("2025-06-02 00:00:00 UTC"), "{show:?}");

    // And clear removes the file
    assert_eq!(db.etl(&["cutoff", "clear", p]).code, 0);
    assert!(!file.exists());
}

#[test]
fn a_staging_folder_without_a_time_column_goes_file_by_file_into_a_table_or_csv_files() {
    // Given a staging folder of 4 Parquet files (2 ships x 2 days), two of
    // them with the same name in different folders
    let db = TestDb::new("parquet_files");
    db.load_timeseries(2, 3, 2 * 1440);
    let staged = run_staging(&db, &["run"]);
    assert_eq!(staged.code, 0, "{staged:?}");
    let folder = "staging/ships-staging";

    // When `etl copy` moves the folder into PostgreSQL (twice), and a
    // pipeline without [chunks] writes the files out as CSV
    let copied = db.etl(&["copy", folder, &db.dst]);
    let again = db.etl(&["copy", folder, &db.dst]);
    let csv = db.pipeline(
        "files.toml",
        &format!(
            "name = \"files\"\n[source]\ntype = \"parquet\"\npath = \"{folder}/**/*.parquet\"\n\
             [[sinks]]\ntype = \"csv\"\npath = \"out/{{key}}/{{start}}.csv\"\n"
        ),
    );
    let plan = db.etl(&["plan", csv.to_str().unwrap()]);
    let exported = db.etl(&["run", csv.to_str().unwrap()]);

    // Then each file is a chunk keyed by its path, the table named after
    // the folder equals the source, and the second copy finds it all done
    assert_eq!(copied.code, 0, "{copied:?}");
    assert!(copied.stdout.contains("chunks       4 done"), "{copied:?}");
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(
        fingerprint(&db.dst, "public.ships_staging", ORDER),
        fingerprint(&db.src, "tenant.tbl_data_timeseries", ORDER)
    );
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.contains("IMO9900002/20250602T000000Z"),
        "{plan:?}"
    );
    assert_eq!(exported.code, 0, "{exported:?}");
    let out = db.dir.path().join("out");
    let mut written: Vec<String> = Vec::new();
    let mut lines = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let dir = entry.unwrap().path();
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            lines += std::fs::read_to_string(&file).unwrap().lines().count() - 1;
            written.push(file.strip_prefix(&out).unwrap().display().to_string());
        }
    }
    written.sort();
    assert_eq!(
        written,
        [
            "IMO9900001%2F20250601T000000Z/0.csv",
            "IMO9900001%2F20250602T000000Z/0.csv",
            "IMO9900002%2F20250601T000000Z/0.csv",
            "IMO9900002%2F20250602T000000Z/0.csv"
        ]
    );
    assert_eq!(lines, 2 * 3 * 2 * 1440);
    // And verify reads each file again beside the CSV file it became
    let verify = db.etl(&["verify", csv.to_str().unwrap()]);
    assert_eq!(verify.code, 0, "{verify:?}");

    // And a pipeline of the files into a table: verify compares the four
    // files' rows together with the whole table (no column says which file
    // a row came from), value by value, and so does --quick with the four
    // checksums recorded at load added up; a value changed is found by both
    let into_table = db.pipeline(
        "files-pg.toml",
        &format!(
            "name = \"files-pg\"\n[source]\ntype = \"parquet\"\npath = \"{folder}/**/*.parquet\"\n\
             [[sinks]]\ntype = \"postgres\"\nurl = \"${{ETL_DST_URL}}\"\ntable = \"public.files\"\ncreate_table = true\n"
        ),
    );
    let into_table = into_table.to_str().unwrap();
    let loaded = db.etl(&["run", into_table]);
    assert_eq!(loaded.code, 0, "{loaded:?}");
    for how in [
        &["verify", into_table][..],
        &["verify", "--quick", into_table],
    ] {
        let verify = db.etl(how);
        assert_eq!(verify.code, 0, "{verify:?}");
        assert!(
            verify.stdout.contains("1 equal, 0 differ")
                && verify.stdout.contains(
                    "compared together, table by table: \"public\".\"files\" (4 chunks)."
                ),
            "{verify:?}"
        );
    }
    psql(
        &db.dst,
        "UPDATE public.files SET value_format = value_format || '!' WHERE ctid = (SELECT min(ctid) FROM public.files)",
    );
    for how in [
        &["verify", into_table][..],
        &["verify", "--quick", into_table],
    ] {
        let changed = db.etl(how);
        assert_eq!(changed.code, 1, "{changed:?}");
        assert!(changed.stdout.contains("0 equal, 1 differ"), "{changed:?}");
        assert!(
            changed
                .stdout
                .lines()
                .any(|l| l.contains("(4 chunks)  whole table") && l.contains("differs")),
            "{changed:?}"
        );
    }

    // And a key or a window without time_column is refused, saying why
    let keyed = db.pipeline(
        "keyed.toml",
        &format!(
            "name = \"keyed\"\n[source]\ntype = \"parquet\"\npath = \"{folder}/**/*.parquet\"\n\
             [chunks]\nkey_column = \"ship_id\"\n\
             [[sinks]]\ntype = \"csv\"\npath = \"out2/{{key}}/{{start}}.csv\"\n"
        ),
    );
    let refused = db.etl(&["validate", keyed.to_str().unwrap()]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("without [chunks] time_column each Parquet file is a chunk of its own"),
        "{refused:?}"
    );
}
