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
    let t = AccessTable::open(path, table, &[], &Default::default()).unwrap();
    let chunking = etl::config::validate::Chunking::windows("", 86_400_000_000);
    let batches = etl::pg::block_on(async {
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
    let fixtures = fixtures();
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
        let t =
            AccessTable::open(path, name, &[], &Default::default()).map_err(|e| e.to_string())?;
        rows += etl::pg::block_on(async {
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
    let fixtures = fixtures();
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
    let fixtures = fixtures();
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
        // And verify compares every table value by value (the file's rows
        // hashed as the target stores them, beside the table's), equal...
        let verify = migrate(&native, "access-native.toml", &file, &["verify"]);
        assert_eq!(verify.code, 0, "{verify:?}");
        assert!(verify.stdout.contains("equal (checksum)"), "{verify:?}");
        assert!(!verify.stdout.contains("differs"), "{verify:?}");
        // ...and one value changed in one table is found, its count the same
        if foreign_keys > 0 {
            psql(
                &native.dst,
                "UPDATE \"Order Details\" SET \"Quantity\" = \"Quantity\" + 1 WHERE ctid = (SELECT min(ctid) FROM \"Order Details\")",
            );
            let verify = migrate(&native, "access-native.toml", &file, &["verify"]);
            assert_eq!(verify.code, 1, "{verify:?}");
            let line = verify.line("Order Details ");
            assert!(line.ends_with("differs (checksum)"), "{line}");
            assert_eq!(verify.stdout.matches("differs").count(), 1, "{verify:?}");
        }
    }
}

/// An Access 2007 file with complex columns (the public Northwind 2007
/// sample: a multi-value column, attachment and version-history columns):
/// `ETL_ACCESS_COMPLEX`, else `access/Northwind.accdb` among the shared
/// samples; missing, the test fails.
fn complex_sample() -> std::path::PathBuf {
    let file = match std::env::var_os("ETL_ACCESS_COMPLEX") {
        Some(f) => std::path::PathBuf::from(f),
        None => fixtures().join("access/Northwind.accdb"),
    };
    assert!(
        file.exists(),
        "no Access file with complex columns at {file:?}: set ETL_ACCESS_COMPLEX, or ETL_FIXTURES to the shared samples"
    );
    file
}

#[test]
fn northwind_2007_reloads_into_tables_made_beforehand_under_each_fk_handling() {
    let file = complex_sample();
    // Given Northwind 2007 in a schema made beforehand, its foreign keys in
    // place and its rows loaded (the first run's tables and keys)
    let db = TestDb::new("access_existing");
    let made = migrate(&db, "access-native.toml", &file, &["run"]);
    assert_eq!(made.code, 0, "{made:?}");
    let before = tables(&db.dst);
    let keys = "SELECT count(*) || ' ' || count(*) FILTER (WHERE convalidated) FROM pg_constraint \
                WHERE contype = 'f' AND connamespace = 'public'::regnamespace";
    let keys_before = psql(&db.dst, keys);
    assert_ne!(keys_before, "0 0", "the sample has relationships");
    let shipped = std::fs::read_to_string(repo().join("pipelines/access-native.toml")).unwrap();

    for handling in ["order", "drop-recreate", "replica-role"] {
        // When the file loads again into those tables, with create_table =
        // false and this fk_handling (a pipeline of its own: a fresh ledger)
        let text = shipped
            .replace(
                "name = \"access-native\"",
                &format!("name = \"existing-{handling}\""),
            )
            .replace(
                "create_table = true",
                &format!("create_table = false\nfk_handling = \"{handling}\""),
            );
        let p = db.pipeline(&format!("{handling}.toml"), &text);
        let p = p.to_str().unwrap();
        let env = [
            ("ETL_DST_URL", db.dst.as_str()),
            ("ETL_ACCESS_FILE", file.to_str().unwrap()),
        ];
        let plan = etl_in(db.dir.path(), &["plan", p], &env);
        let out = etl_in(db.dir.path(), &["run", p], &env);

        // Then the referenced tables were emptied children first and
        // reloaded parents first: every table as it was, every foreign key
        // still there and valid, no orphan row, nothing created
        assert_eq!(plan.code, 0, "{handling}: {plan:?}");
        assert!(
            plan.stdout.contains(&format!(
                "Create: none (create_table = false: the tables exist on the target, with their own keys); foreign keys and triggers: fk_handling = \"{handling}\"; whole tables emptied with DELETE, children first"
            )),
            "{handling}: {plan:?}"
        );
        assert_eq!(out.code, 0, "{handling}: {out:?}");
        assert!(out.stdout.contains(" done\n"), "{handling}: {out:?}");
        assert!(out.stdout.contains(" 0 orphan rows"), "{handling}: {out:?}");
        assert_eq!(tables(&db.dst), before, "{handling}");
        assert_eq!(psql(&db.dst, keys), keys_before, "{handling}");
    }
}

#[test]
fn complex_columns_become_child_tables_and_the_files_keys_hold() {
    let file = complex_sample();
    // Given Northwind 2007 migrated through MDBTools
    let odbc = TestDb::new("access_complex_odbc");
    let mdbtools = migrate(&odbc, "access-migration.toml", &file, &["run"]);

    // When it is migrated natively
    let native = TestDb::new("access_complex");
    let plan = migrate(&native, "access-native.toml", &file, &["plan"]);
    let out = migrate(&native, "access-native.toml", &file, &["run"]);

    // Then MDBTools' keys fail (shifted onto other columns) where every
    // constraint of the native route is added
    assert!(
        mdbtools.stdout.contains("constraints  90 added, 7 failed"),
        "{mdbtools:?}"
    );
    assert!(
        mdbtools
            .stdout
            .contains("\"Orders\" (Tax Status): column \"Tax Status\" of relation \"Orders\" contains null values"),
        "{mdbtools:?}"
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("constraints  104 added\n"), "{out:?}");

    // And each complex column is a child table in the plan and the target
    assert!(
        plan.stdout
            .contains("Products_Supplier IDs -> \"public\".\"Products_Supplier IDs\": 50 rows"),
        "{plan:?}"
    );
    for child in [
        "Customers_Attachments",
        "Employees_Attachments",
        "Orders_VersionHistory_F5F8918F-0A3F-4DA9-AE71-184EE5012880",
    ] {
        assert!(
            plan.stdout.contains(&format!("{child} -> ")),
            "{child}: {plan:?}"
        );
    }
    assert_eq!(
        psql(
            &native.dst,
            "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '\"Products_Supplier IDs\"'::regclass AND attnum > 0"
        ),
        "ID,ordinal,value"
    );
    // the parent without its link column
    assert_eq!(
        psql(
            &native.dst,
            "SELECT count(*) FROM pg_attribute WHERE attrelid = '\"Products\"'::regclass AND attname IN ('Supplier IDs', 'Attachments')"
        ),
        "0"
    );

    // And the values are MDBTools' reading of the hidden table, joined to
    // the products by the link number
    let export = |table: &str| -> Vec<Vec<String>> {
        let out = std::process::Command::new("mdb-export")
            .args(["-H", "-d", "\t"])
            .arg(&file)
            .arg(table)
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    };
    let hidden = String::from_utf8(
        std::process::Command::new("mdb-tables")
            .args(["-S", "-1"])
            .arg(&file)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .lines()
    .find(|t| t.starts_with("f_") && t.ends_with("_Supplier IDs"))
    .unwrap()
    .to_string();
    // Products: "Supplier IDs" (the link) is the first column, ID the
    // second; the hidden table: the link, its own AutoNumber, the value
    let link_to_id: std::collections::HashMap<String, String> = export("Products")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    let mut expected: Vec<String> = export(&hidden)
        .into_iter()
        .map(|r| format!("{} {}", link_to_id[&r[0]], r[2]))
        .collect();
    expected.sort();
    let mut loaded: Vec<String> = psql(
        &native.dst,
        "SELECT \"ID\" || ' ' || value FROM \"Products_Supplier IDs\"",
    )
    .lines()
    .map(str::to_string)
    .collect();
    loaded.sort();
    assert_eq!(loaded.len(), 50);
    assert_eq!(loaded, expected);

    // And the child tables are keyed on (parent key, ordinal), with foreign
    // keys to their parents that cascade, validated
    assert_eq!(
        psql(
            &native.dst,
            "SELECT string_agg(format('%s %s%s', conrelid::regclass, confupdtype, confdeltype), ',' ORDER BY conrelid::regclass::text) \
             FROM pg_constraint WHERE contype = 'f' AND convalidated AND conrelid::regclass::text ~ '_(Attachments|Supplier IDs|VersionHistory_.*)\"$'"
        ),
        "\"Customers_Attachments\" cc,\"Employees_Attachments\" cc,\"Orders_VersionHistory_F5F8918F-0A3F-4DA9-AE71-184EE5012880\" cc,\"Products_Attachments\" cc,\"Products_Supplier IDs\" cc,\"Shippers_Attachments\" cc,\"Suppliers_Attachments\" cc"
    );
    assert_eq!(
        psql(
            &native.dst,
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = '\"Products_Supplier IDs\"'::regclass AND contype = 'p'"
        ),
        "PRIMARY KEY (\"ID\", ordinal)"
    );
    let verify = migrate(&native, "access-native.toml", &file, &["verify"]);
    assert_eq!(verify.code, 0, "{verify:?}");
}

#[test]
fn an_attachment_reads_as_its_name_type_and_whole_inflated_content() {
    let file = complex_sample();
    // Given the attachment column of Access's own resources table (the
    // Office theme of Northwind 2007, stored compressed)
    let mut reader = etl::source::access::open(&file).unwrap();
    let (def, _) = etl::source::access::table_def(&mut reader, &file, "MSysResources").unwrap();
    let (column, complex) = etl::source::access::child_columns(&mut reader, &file, &def)
        .unwrap()
        .into_iter()
        .find(|(c, _)| c == "Data")
        .unwrap();

    // When it is read as a child table
    let child = etl::source::access::AccessChild::open(
        &file,
        "MSysResources",
        &column,
        complex,
        &["Id".into()],
        &Default::default(),
    )
    .unwrap();
    let batches = etl::pg::block_on(async {
        let chunk = etl::plan::Chunk::whole(Some(child.name.clone()));
        let mut stream = child.open(&chunk).await.unwrap();
        let mut out = Vec::new();
        while let Some(b) = stream.next().await {
            out.push(b.unwrap());
        }
        out
    });

    // Then it is one file: its name, its type and its whole content (a
    // ZIP, from its first local header to its end-of-directory record)
    assert_eq!(child.rows().unwrap(), 1);
    let b = &batches[0];
    assert_eq!(b.num_rows(), 1);
    let text = |name: &str| {
        b.column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_string()
    };
    assert_eq!(text("file_name"), "Office Theme.thmx");
    assert_eq!(text("file_type"), "thmx");
    let data = b
        .column_by_name("data")
        .unwrap()
        .as_binary::<i32>()
        .value(0);
    assert!(
        data.starts_with(b"PK\x03\x04"),
        "{:?}",
        &data[..8.min(data.len())]
    );
    let end = data.len().saturating_sub(22);
    assert_eq!(&data[end..end + 4], b"PK\x05\x06", "{} bytes", data.len());
    assert_eq!(
        b.column_by_name("ordinal")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int32Type>()
            .value(0),
        1
    );
}

/// Days from 1899-12-30 (Access's day 0) to `date`, as Access stores a
/// date: the day number, and the time of day as a fraction that counts
/// forward from midnight (so away from zero before day 0).
fn ole_days(date: &str, day_fraction: f64) -> f64 {
    let day0 = chrono::NaiveDate::from_ymd_opt(1899, 12, 30).unwrap();
    let days =
        (chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap() - day0).num_days() as f64;
    if days < 0.0 {
        days - day_fraction
    } else {
        days + day_fraction
    }
}

#[test]
fn dates_before_1900_and_in_9999_load_exact_where_mdbtools_loses_them() {
    let fixtures = fixtures();
    // Given a copy of nwind.mdb with two birth dates changed in place (each
    // stored double is found once in the file): 1801-03-04 12:00 and
    // 9999-12-31 23:59:59
    let db = TestDb::new("access_dates");
    let mut bytes = std::fs::read(fixtures.join("access/nwind.mdb")).unwrap();
    for (was, now) in [
        (ole_days("1948-12-08", 0.0), ole_days("1801-03-04", 0.5)),
        (
            ole_days("1952-02-19", 0.0),
            ole_days("9999-12-31", 86_399.0 / 86_400.0),
        ),
    ] {
        let was = was.to_le_bytes();
        let at: Vec<usize> = (0..bytes.len() - 8)
            .filter(|&i| bytes[i..i + 8] == was)
            .collect();
        assert_eq!(at.len(), 1, "the date is stored once");
        bytes[at[0]..at[0] + 8].copy_from_slice(&now.to_le_bytes());
    }
    let file = db.dir.path().join("dates.mdb");
    std::fs::write(&file, &bytes).unwrap();
    let odbc = TestDb::new("access_dates_odbc");

    // When it is migrated natively, and through MDBTools
    let native = migrate(&db, "access-native.toml", &file, &["run"]);
    let mdbtools = migrate(&odbc, "access-migration.toml", &file, &["run"]);

    // Then the native route loads both exact; MDBTools cannot read them,
    // and etl reports them loaded as NULL
    assert_eq!(native.code, 0, "{native:?}");
    let births = "SELECT string_agg(coalesce(\"BirthDate\"::text, 'NULL'), ',' ORDER BY \"EmployeeID\") FROM \"Employees\" WHERE \"EmployeeID\" <= 3";
    assert_eq!(
        psql(&db.dst, births),
        "1801-03-04 12:00:00,9999-12-31 23:59:59,1963-08-30 00:00:00"
    );
    assert_eq!(psql(&odbc.dst, births), "NULL,NULL,1963-08-30 00:00:00");
    assert!(
        mdbtools
            .stdout
            .contains("bad dates    Employees.BirthDate 2 (first at row 1): the driver returned invalid dates, loaded as NULL"),
        "{mdbtools:?}"
    );
    assert_eq!(
        mdbtools.stdout.matches("bad dates").count(),
        1,
        "{mdbtools:?}"
    );
    assert_eq!(mdbtools.code, 3, "{mdbtools:?}");
}

/// `source.encoding` (and what goes with it) added to the shipped native
/// pipeline, written into the test's folder.
fn native_pipeline_with(db: &TestDb, extra: &str) -> String {
    let text = std::fs::read_to_string(repo().join("pipelines/access-native.toml"))
        .unwrap()
        .replace(
            "tables = [\"*\"]",
            &format!("tables = [\"Employees\"]\n{extra}"),
        );
    db.pipeline("native.toml", &text)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn access_97_text_decodes_in_the_configured_code_page() {
    let fixtures = fixtures();
    // Given a copy of nwind.mdb (Access 97, code page 1252 in its header)
    // whose "Davolio" is stored as the CP949 bytes of "김철수X" and whose
    // "Fuller" holds two bytes that are not CP949
    let db = TestDb::new("access_encoding");
    let mut bytes = std::fs::read(fixtures.join("access/nwind.mdb")).unwrap();
    let korean = encoding_rs::EUC_KR.encode("김철수X").0.into_owned();
    for (was, now) in [(&b"Davolio"[..], &korean[..]), (b"Fuller", b"Fu\xff\xfeer")] {
        assert_eq!(was.len(), now.len());
        let mut i = 0;
        while let Some(at) = bytes[i..].windows(was.len()).position(|w| w == was) {
            bytes[i + at..i + at + was.len()].copy_from_slice(now);
            i += at + was.len();
        }
    }
    let file = db.dir.path().join("korean97.mdb");
    std::fs::write(&file, &bytes).unwrap();
    let file = file.to_str().unwrap();
    let env = [("ETL_DST_URL", db.dst.as_str()), ("ETL_ACCESS_FILE", file)];

    // When it is read as its header says, then with encoding = "cp949"
    let header = native_pipeline_with(&db, "");
    let as_header = etl_in(db.dir.path(), &["run", &header], &env);
    let names = "SELECT string_agg(\"LastName\", ',' ORDER BY \"EmployeeID\") FROM \"Employees\" WHERE \"EmployeeID\" <= 2";
    let mojibake = psql(&db.dst, names);
    psql(
        &db.dst,
        "DROP TABLE \"Employees\"; DELETE FROM etl.chunk_ledger",
    );
    let cp949 = native_pipeline_with(&db, "encoding = \"cp949\"");
    let plan = etl_in(db.dir.path(), &["plan", &cp949], &env);
    let error = etl_in(db.dir.path(), &["run", &cp949], &env);

    // Then the header's code page gives mojibake; CP949 gives the Korean
    // name, and the bytes that are not CP949 fail the table naming table,
    // row, column and what to change
    assert_eq!(as_header.code, 0, "{as_header:?}");
    assert_eq!(mojibake, "±èÃ¶¼öX,Fuÿþer");
    assert!(
        plan.stdout
            .contains("text: EUC-KR (source.encoding; the header names code page 1252)"),
        "{plan:?}"
    );
    assert_eq!(error.code, 1, "{error:?}");
    assert!(
        error.stdout.contains(
            "table \"Employees\", row 2, column \"LastName\": bytes that are not valid EUC-KR"
        ),
        "{error:?}"
    );

    // When the bytes are let through as U+FFFD
    let replace = native_pipeline_with(&db, "encoding = \"cp949\"\non_invalid_text = \"replace\"");
    let replaced = etl_in(db.dir.path(), &["run", &replace], &env);

    // Then every row lands, the replacement counted (exit 3)
    assert_eq!(replaced.code, 3, "{replaced:?}");
    assert!(
        replaced
            .stdout
            .contains("replaced 2 invalid byte sequences in Employees with U+FFFD"),
        "{replaced:?}"
    );
    assert_eq!(psql(&db.dst, names), "김철수X,Fu\u{FFFD}\u{FFFD}er");

    // And a Unicode file refuses source.encoding
    let accdb = fixtures.join("access/ASampleDatabase.accdb");
    let every = std::fs::read_to_string(repo().join("pipelines/access-native.toml"))
        .unwrap()
        .replace("tables = [\"*\"]", "tables = [\"*\"]\nencoding = \"cp949\"");
    let every = db.pipeline("every.toml", &every);
    let unicode = etl_in(
        db.dir.path(),
        &["plan", every.to_str().unwrap()],
        &[
            ("ETL_DST_URL", db.dst.as_str()),
            ("ETL_ACCESS_FILE", accdb.to_str().unwrap()),
        ],
    );
    assert_eq!(unicode.code, 2, "{unicode:?}");
    assert!(
        unicode
            .stderr
            .contains("source.encoding applies to Access 97 (Jet3) files"),
        "{unicode:?}"
    );
}

#[test]
fn casts_read_a_column_as_text_or_as_the_bytes_the_file_stores() {
    let fixtures = fixtures();
    // Given nwind's employees with a date read as text and a name as bytes
    let db = TestDb::new("access_casts");
    let file = fixtures.join("access/nwind.mdb");
    let p = native_pipeline_with(
        &db,
        "[source.casts]\n\"Employees.BirthDate\" = \"text\"\nLastName = \"binary\"",
    );

    // When it is migrated natively
    let out = etl_in(
        db.dir.path(),
        &["run", &p],
        &[
            ("ETL_DST_URL", db.dst.as_str()),
            ("ETL_ACCESS_FILE", file.to_str().unwrap()),
        ],
    );

    // Then the columns have the types the casts ask for, and the values
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT format('%s %s %s %s', pg_typeof(\"BirthDate\"), \"BirthDate\", pg_typeof(\"LastName\"), encode(\"LastName\", 'escape')) FROM \"Employees\" WHERE \"EmployeeID\" = 1"
        ),
        "text 1948-12-08 00:00:00 bytea Davolio"
    );

    // And a cast that is neither text nor binary is refused, naming it
    let bad = native_pipeline_with(&db, "[source.casts]\nLastName = \"varchar\"");
    let refused = etl_in(
        db.dir.path(),
        &["plan", &bad],
        &[
            ("ETL_DST_URL", db.dst.as_str()),
            ("ETL_ACCESS_FILE", file.to_str().unwrap()),
        ],
    );
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("source.casts.LastName"),
        "{refused:?}"
    );
}
