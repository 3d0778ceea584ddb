//! Access files read natively (jetdb): every table of the shared samples
//! read whole with the row count MDBTools' `mdb-count` gives, keys as the
//! file records them.

use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use etl::source::access::{catalog, table_names, AccessTable};
use etl::source::Source;
use futures_util::StreamExt;

use crate::odbc::fixtures;
use crate::support::{etl_in, psql, repo, TestDb};

fn read(path: &Path, table: &str) -> (AccessTable, Vec<RecordBatch>) {
    let t = AccessTable::open(path, table, 1000).unwrap();
    let chunking = etl::config::validate::Chunking {
        time_column: String::new(),
        interval: 86_400_000_000,
        key_column: None,
        range_column: None,
        range_rows: 1_000_000,
        start: None,
        end: None,
        only_keys: None,
        workers: 1,
        retries: 0,
        retry_backoff: std::time::Duration::ZERO,
        failed_csv: "failed.csv".into(),
    };
    let batches = etl::run::block_on(async {
        let plan = t.plan(&chunking).await.unwrap();
        let mut stream = t.open(&plan.chunks[0].chunk).await.unwrap();
        let mut out = Vec::new();
        while let Some(b) = stream.next().await {
            out.push(b.unwrap_or_else(|e| panic!("{table}: {e}")));
        }
        out
    });
    (t, batches)
}

fn mdb_count(path: &Path, table: &str) -> u64 {
    let out = std::process::Command::new("mdb-count")
        .arg(path)
        .arg(table)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn column<'a>(batches: &'a [RecordBatch], name: &str) -> Vec<&'a arrow::array::ArrayRef> {
    batches
        .iter()
        .map(|b| b.column_by_name(name).unwrap())
        .collect()
}

#[test]
fn every_sample_table_reads_whole_with_mdb_counts_and_the_files_keys() {
    let Some(fixtures) = fixtures() else { return };
    for file in ["nwind.mdb", "ASampleDatabase.accdb"] {
        let path = fixtures.join("access").join(file);
        let names = table_names(&path).unwrap();
        assert!(!names.is_empty(), "{file}: {names:?}");
        for name in &names {
            // Every table whole, as many rows as mdb-count counts
            let (_, batches) = read(&path, name);
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            assert_eq!(rows as u64, mdb_count(&path, name), "{file} {name}");
        }
    }

    // Keys, AutoNumber columns and enforced relationships as nwind records them
    let nwind = fixtures.join("access/nwind.mdb");
    let names = table_names(&nwind).unwrap();
    let cat = catalog(&nwind, &names).unwrap();
    assert_eq!(
        cat.keys["Order Details"].primary_key,
        ["OrderID", "ProductID"]
    );
    assert_eq!(cat.keys["Orders"].primary_key, ["OrderID"]);
    assert_eq!(cat.keys["Orders"].identity, ["OrderID"]);
    assert!(cat.keys["Customers"].identity.is_empty());
    assert!(cat.keys["Categories"]
        .indexes
        .iter()
        .any(|i| i.unique && i.columns == ["CategoryName"]));
    let mut fks: Vec<String> = cat
        .foreign_keys
        .iter()
        .map(|f| {
            format!(
                "{}({}) -> {}({})",
                f.table,
                f.columns.join(","),
                f.parent,
                f.parent_columns.join(",")
            )
        })
        .collect();
    fks.sort();
    assert_eq!(
        fks,
        [
            "Order Details(OrderID) -> Orders(OrderID)",
            "Order Details(ProductID) -> Products(ProductID)",
            "Orders(CustomerID) -> Customers(CustomerID)",
            "Orders(EmployeeID) -> Employees(EmployeeID)",
            "Orders(ShipVia) -> Shippers(ShipperID)",
            "Products(CategoryID) -> Categories(CategoryID)",
            "Products(SupplierID) -> Suppliers(SupplierID)",
        ]
    );
    let asample = fixtures.join("access/ASampleDatabase.accdb");
    let cat = catalog(&asample, &table_names(&asample).unwrap()).unwrap();
    assert_eq!(cat.keys["Asset Items"].primary_key, ["Asset No"]);

    // Values as Access holds them: the day count as a date, Currency exact,
    // Single as real, Text sizes in characters
    let (orders, batches) = read(&nwind, "Orders");
    assert_eq!(orders.access_types[0], "AutoNumber");
    assert_eq!(orders.access_types[1], "Text(5)");
    let ids = column(&batches, "OrderID");
    let dates = column(&batches, "OrderDate");
    let freight = column(&batches, "Freight");
    let (b, r) = ids
        .iter()
        .enumerate()
        .find_map(|(b, a)| {
            let a = a.as_primitive::<arrow::datatypes::Int32Type>();
            (0..a.len()).find(|r| a.value(*r) == 10330).map(|r| (b, r))
        })
        .expect("order 10330");
    let day = dates[b]
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
        .value(r);
    assert_eq!(day, 784_944_000_000_000, "1994-11-16 00:00:00 UTC");
    let f = freight[b].as_primitive::<arrow::datatypes::Decimal128Type>();
    assert_eq!((f.value(r), f.scale()), (127_500, 4), "12.7500");
    let (_, details) = read(&nwind, "Order Details");
    let discounts: Vec<f32> = column(&details, "Discount")
        .iter()
        .flat_map(|a| {
            a.as_primitive::<arrow::datatypes::Float32Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert!(discounts.contains(&0.15), "a 0.15 discount stays 0.15");
}

/// Every table of `path`, read whole: the first error, if any.
fn read_everything(path: &Path) -> Result<u64, String> {
    let names = table_names(path).map_err(|e| e.to_string())?;
    let mut rows = 0;
    for name in &names {
        let t = AccessTable::open(path, name, 1000).map_err(|e| e.to_string())?;
        rows += etl::run::block_on(async {
            let mut stream = t
                .open(&etl::plan::Chunk::whole(Some(name.clone())))
                .await
                .map_err(|e| e.to_string())?;
            let mut n = 0;
            while let Some(b) = stream.next().await {
                n += b.map_err(|e| e.to_string())?.num_rows() as u64;
            }
            Ok::<u64, String>(n)
        })?;
    }
    catalog(path, &names).map_err(|e| e.to_string())?;
    Ok(rows)
}

#[test]
fn corrupted_copies_fail_cleanly_and_quickly() {
    let Some(fixtures) = fixtures() else { return };
    let original = std::fs::read(fixtures.join("access/nwind.mdb")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A fixed sequence (xorshift), so a failure can be replayed.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut failed, mut read) = (0, 0);
    for copy in 0..12 {
        let mut bytes = original.clone();
        for _ in 0..(8 << (copy % 4)) {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        let path = dir.path().join(format!("bad{copy}.mdb"));
        std::fs::write(&path, &bytes).unwrap();
        // When read whole on a thread of its own
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| read_everything(&p));
            let _ = tx.send(r.map_err(|_| "a panic".to_string()));
        });
        // Then it ends within the limit, without a panic: an error naming
        // the file, or rows (a change in unused pages reads as before)
        let outcome = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("copy {copy} did not finish within 60 s"));
        match outcome.unwrap_or_else(|p| panic!("copy {copy}: {p}")) {
            Ok(_) => read += 1,
            Err(e) => {
                assert!(e.contains(&format!("bad{copy}.mdb")), "copy {copy}: {e}");
                failed += 1;
            }
        }
    }
    eprintln!("corrupted copies: {failed} failed cleanly, {read} read");
    assert!(failed > 0, "no corrupted copy was noticed");
}

/// A shipped Access pipeline run on `file` into `db.dst`.
fn migrate(db: &TestDb, pipeline: &str, file: &Path, args: &[&str]) -> crate::support::Output {
    let pipeline = repo().join("pipelines").join(pipeline);
    let mut all = vec![args[0], pipeline.to_str().unwrap()];
    all.extend(&args[1..]);
    etl_in(
        db.dir.path(),
        &all,
        &[
            ("ETL_DST_URL", &db.dst),
            ("ETL_ACCESS_FILE", file.to_str().unwrap()),
        ],
    )
}

/// Each public table of `url` as (name, rows, md5 of its rows as text).
fn tables(url: &str) -> Vec<String> {
    psql(
        url,
        "SELECT string_agg(format('%s %s', c.relname, \
         (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) || '' '' || coalesce(md5(string_agg(t::text, ''|'' ORDER BY t::text)), '''') AS c FROM public.%I t', c.relname), false, true, '')))[1]::text), E'\\n' ORDER BY c.relname) \
         FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn the_native_route_migrates_the_samples_equal_to_the_mdbtools_route() {
    let Some(fixtures) = fixtures() else { return };
    for (name, file, foreign_keys) in [
        ("access_native_nwind", "nwind.mdb", 7),
        ("access_native_asample", "ASampleDatabase.accdb", 0),
    ] {
        let file = fixtures.join("access").join(file);
        // Given the file migrated through MDBTools into one database
        let odbc = TestDb::new(&format!("{name}_odbc"));
        let out = migrate(&odbc, "access-migration.toml", &file, &["run"]);
        assert_eq!(out.code, 0, "{out:?}");

        // When planned and migrated natively into another
        let native = TestDb::new(name);
        let plan = migrate(&native, "access-native.toml", &file, &["plan"]);
        assert_eq!(plan.code, 0, "{plan:?}");
        assert!(plan.stdout.contains("read natively (jetdb)"), "{plan:?}");
        let out = migrate(&native, "access-native.toml", &file, &["run"]);
        assert_eq!(out.code, 0, "{out:?}");

        // Then every table equals the other route's, cell by cell, but for
        // Single values: MDBTools widens them to double (0.15000001), the
        // native route keeps a real (0.15), equal once both are real
        let but_singles = |url: &str| -> Vec<String> {
            tables(url)
                .into_iter()
                .filter(|t| !t.starts_with("Order Details "))
                .collect()
        };
        assert_eq!(but_singles(&native.dst), but_singles(&odbc.dst), "{file:?}");
        if foreign_keys > 0 {
            let rows = "SELECT count(*), md5(string_agg(format('%s %s %s %s %s', \"OrderID\", \"ProductID\", \"UnitPrice\", \"Quantity\", \"Discount\"::real), '|' ORDER BY \"OrderID\", \"ProductID\")) FROM \"Order Details\"";
            assert_eq!(psql(&native.dst, rows), psql(&odbc.dst, rows));
            let fifteen = "SELECT DISTINCT \"Discount\"::text FROM \"Order Details\" WHERE \"Discount\" > 0.14 AND \"Discount\" < 0.16";
            assert_eq!(psql(&native.dst, fifteen), "0.15");
            assert_eq!(psql(&odbc.dst, fifteen), "0.15000001");
            // And the cascade rules the file records (as mdb-schema prints
            // them: Orders.CustomerID ON UPDATE CASCADE, Order
            // Details.OrderID ON DELETE CASCADE), where MDBTools' route has none
            let cascades = "SELECT string_agg(format('%s(%s) %s%s', conrelid::regclass, \
                (SELECT attname FROM pg_attribute WHERE attrelid = conrelid AND attnum = conkey[1]), \
                confupdtype, confdeltype), ',' ORDER BY conrelid::regclass::text) \
                FROM pg_constraint WHERE contype = 'f' AND (confupdtype = 'c' OR confdeltype = 'c')";
            assert_eq!(
                psql(&native.dst, cascades),
                "\"Order Details\"(OrderID) ac,\"Orders\"(CustomerID) ca"
            );
        }
        // And the keys and enforced relationships exist, validated
        assert_eq!(
            psql(
                &native.dst,
                "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated AND connamespace = 'public'::regnamespace"
            ),
            foreign_keys.to_string()
        );
        let verify = migrate(&native, "access-native.toml", &file, &["verify"]);
        assert_eq!(verify.code, 0, "{verify:?}");
    }
}
