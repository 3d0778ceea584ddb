//! Whole PostgreSQL databases (pipelines/postgres-database.toml): a source
//! with each object kind (fixtures/sql/whole_database.sql) copied whole and
//! compared table by table and by `pg_dump --schema-only`; killed during
//! the data and during the post-data phase, then resumed exact.

use crate::support::{psql, psql_file, repo, spawn_etl, wait_for_line, TestDb};

pub(crate) fn load(db: &TestDb, rows: u32) {
    psql_file(
        &db.src,
        &repo().join("fixtures/sql/whole_database.sql"),
        &[("rows", &rows.to_string())],
    );
}

pub(crate) fn pipeline() -> String {
    repo()
        .join("pipelines/postgres-database.toml")
        .to_str()
        .unwrap()
        .to_string()
}

/// Every table of the source (partitioned parents included, read whole
/// through them) as `schema.table`.
fn tables(url: &str) -> Vec<String> {
    psql(
        url,
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'etl') \
         AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// Count and md5 over a table's own rows in text order, with the settings
/// that shape text output fixed.
fn fingerprint(url: &str, table: &str) -> String {
    psql(
        url,
        &format!(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 3; SET IntervalStyle = 'postgres'; \
             SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '-') FROM ONLY {table} t"
        ),
    )
}

/// `pg_dump --schema-only` without etl's ledger, owners or psql's
/// `\restrict` lines (their key is random per dump).
fn schema_dump(url: &str) -> String {
    let out = std::process::Command::new("pg_dump")
        .args(["--schema-only", "--no-owner", "--exclude-schema=etl", url])
        .output()
        .expect("pg_dump is installed");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('\\'))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn assert_equal(db: &TestDb) {
    let src = tables(&db.src);
    assert_eq!(src, tables(&db.dst));
    assert!(src.len() >= 12, "{src:?}");
    for t in &src {
        assert_eq!(
            fingerprint(&db.src, t),
            fingerprint(&db.dst, t),
            "table {t}"
        );
    }
    assert_eq!(schema_dump(&db.src), schema_dump(&db.dst));
    let sequences = "SELECT string_agg(format('%s=%s', sequencename, last_value), ',' ORDER BY 1) FROM pg_sequences WHERE schemaname <> 'etl'";
    assert_eq!(psql(&db.src, sequences), psql(&db.dst, sequences));
    // Large objects, with their oids and bytes.
    let objects = "SELECT count(*) || ' ' || string_agg(oid::text || ':' || length(lo_get(oid)) || ':' || md5(lo_get(oid)), ',' ORDER BY oid) FROM pg_largeobject_metadata";
    let on_source = psql(&db.src, objects);
    assert!(on_source.starts_with("3 "), "{on_source}");
    assert_eq!(on_source, psql(&db.dst, objects));
}

#[test]
fn whole_database_moves_with_everything_in_it() {
    // Given a source with every object kind, 30,000 orders
    let db = TestDb::new("pgdb_whole");
    load(&db, 30_000);
    let p = pipeline();

    // When it is planned
    let plan = db.etl(&["plan", &p]);

    // Then the plan lists the phases and writes nothing
    assert_eq!(plan.code, 0, "{plan:?}");
    for want in [
        "Phases: discover, pre-data, data, post-data, sequences, verify",
        "sales.orders -> \"sales\".\"orders\": 28,500 rows",
        "1 MATERIALIZED VIEW",
        "3 TABLE ATTACH",
        "1 TRIGGER",
        "2 FK CONSTRAINT",
        "partitioned tables created with their partitions",
        "After the data: VACUUM (ANALYZE) of each table loaded (analyze_after = false leaves it to autovacuum)",
        "Nothing was written.",
    ] {
        assert!(plan.stdout.contains(want), "{want}: {plan:?}");
    }
    assert!(tables(&db.dst).is_empty());

    // When it runs
    let out = db.etl(&["run", &p]);

    // Then every table, the schema, the sequences equal the source's: no
    // partition loaded twice, the trigger did not fire on the load
    // (sales.counters would count the orders again), the materialized
    // view refreshed, the enum array and user types carried as they are
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("11 of 11 tables have the source's row count"),
        "{out:?}"
    );
    assert_equal(&db);
    assert_eq!(
        psql(&db.dst, "SELECT count(*) FROM public.readings"),
        "5000"
    );
    assert_eq!(psql(&db.dst, "SELECT n FROM sales.counters"), "30000");
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM sales.orders"), "28500");
    // Vacuumed and analyzed by hand, not left to autovacuum (as pgcopydb)
    assert_eq!(
        psql(
            &db.dst,
            "SELECT last_vacuum IS NOT NULL AND last_analyze IS NOT NULL \
             FROM pg_stat_user_tables WHERE relid = 'sales.customers'::regclass"
        ),
        "t"
    );
    assert_eq!(
        psql(&db.dst, "SELECT count(*) > 0 FROM sales.order_totals"),
        "t"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT moods::text, (p).b, total FROM public.kinds WHERE id = 2"
        ),
        "{sad,happy}|p2|6.00"
    );
    // And verify agrees; a second run has nothing left to do
    let verify = db.etl(&["verify", &p]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert_eq!(
        verify.stdout.matches("equal (checksum)").count(),
        11,
        "{verify:?}"
    );
    assert!(
        verify
            .stdout
            .contains("foreign key orders_customer_fkey on sales.orders: 0 orphan rows"),
        "{verify:?}"
    );
    assert!(
        verify
            .stdout
            .lines()
            .any(|l| l.starts_with("large objects") && l.ends_with("3  equal")),
        "{verify:?}"
    );
    let again = db.etl(&["run", &p]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("0 loaded, 11 skipped"), "{again:?}");

    // The trigger is there, after the data: it fires on new rows.
    psql(
        &db.dst,
        "INSERT INTO sales.orders (customer, placed, amount) VALUES (1, now(), 1)",
    );
    assert_eq!(psql(&db.dst, "SELECT n FROM sales.counters"), "30001");

    // And verify sees the row the source does not have; and a changed
    // value, by checksum, where the counts are equal
    let verify = db.etl(&["verify", &p]);
    assert_eq!(verify.code, 1, "{verify:?}");
    assert!(verify.stdout.contains("28,501"), "{verify:?}");
    // (public.kinds, of an enum array and a composite, is checksummed as
    // text COPY data; the others as binary)
    psql(&db.dst, "UPDATE public.kinds SET doc = '{}' WHERE id = 7");
    let verify = db.etl(&["verify", &p]);
    assert!(
        verify
            .stdout
            .lines()
            .any(|l| l.starts_with("public.kinds") && l.ends_with("differs (checksum)")),
        "{verify:?}"
    );
    assert!(
        verify
            .stdout
            .lines()
            .any(|l| l.starts_with("sales.customers") && l.ends_with("equal (checksum)")),
        "{verify:?}"
    );
    // A large object missing on the target: verify says so.
    psql(
        &db.dst,
        "SELECT lo_unlink(max(oid)) FROM pg_largeobject_metadata",
    );
    let verify = db.etl(&["verify", &p]);
    assert_eq!(verify.code, 1, "{verify:?}");
    assert!(
        verify
            .stdout
            .lines()
            .any(|l| l.starts_with("large objects") && l.ends_with("2  differs")),
        "{verify:?}"
    );
}

/// Runs the pipeline until `pause`, kills it there, runs it again.
fn killed_at_then_resumed(name: &str, pause: &str) -> TestDb {
    let db = TestDb::new(name);
    load(&db, 30_000);
    // The shipped pipeline, sales.orders in ranges of 10,000 ids.
    let shipped = std::fs::read_to_string(pipeline()).unwrap();
    let text = shipped.replace("range_rows = 1000000", "range_rows = 10000");
    assert_ne!(text, shipped);
    let p = db.pipeline("whole.toml", &text);
    let p = p.to_str().unwrap();
    let (mut child, lines) = spawn_etl(
        &db,
        &["run", "--workers", "1", p],
        &[("ETL_TEST_PAUSE_AT", pause)],
    );
    wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    child.kill().expect("SIGKILL etl");
    child.wait().unwrap();
    let out = db.etl(&["run", p]);
    assert_eq!(out.code, 0, "{out:?}");
    db
}

#[test]
fn killed_during_the_data_resumes_exact() {
    // Given a run killed after its second chunk committed
    let db = killed_at_then_resumed("pgdb_kill_data", "commit:2");

    // Then the second run loaded the rest once (sales.orders in three
    // ranges), and all equals the source
    assert_equal(&db);
    let ranges = psql(&db.dst, "SELECT count(*) FROM etl.chunk_ledger WHERE target = '\"sales\".\"orders\"' AND status = 'done'");
    assert_eq!(ranges, "3");
    // (and public.journal, without a key, in ranges of its blocks)
    let blocks = psql(
        &db.dst,
        "SELECT count(*) FROM etl.chunk_ledger WHERE target = '\"public\".\"journal\"' AND status = 'done'",
    );
    assert_eq!(blocks, "2");
}

#[test]
fn killed_while_building_indexes_resumes_exact() {
    // Given a run killed inside the fifth post-data entry's transaction
    let db = killed_at_then_resumed("pgdb_kill_index", "post-data:5");

    // Then the second run added only what was missing, and all equals the source
    assert_equal(&db);
    let failed = psql(
        &db.dst,
        "SELECT count(*) FROM etl.phase_log WHERE status <> 'done'",
    );
    assert_eq!(failed, "0");
}

/// The source's schema on the target first (`pg_dump --schema-only`), as
/// people do before a data-only restore; then a pipeline loading into it.
fn existing_schema(db: &TestDb, fk_handling: &str) -> String {
    let dump = std::process::Command::new("pg_dump")
        .args(["--schema-only", "--no-owner", &db.src])
        .output()
        .expect("pg_dump is installed");
    assert!(dump.status.success(), "{dump:?}");
    let file = db.dir.path().join("schema.sql");
    std::fs::write(&file, &dump.stdout).unwrap();
    psql_file(&db.dst, &file, &[]);
    let text = std::fs::read_to_string(pipeline())
        .unwrap()
        .replace(
            "create_table = true",
            &format!("create_table = false\nfk_handling = \"{fk_handling}\"\n[sinks.timeouts]\nlock_timeout_secs = 1"),
        );
    db.pipeline("existing.toml", &text)
        .to_str()
        .unwrap()
        .to_string()
}

fn foreign_keys(url: &str) -> String {
    psql(
        url,
        "SELECT string_agg(conname || ':' || convalidated, ',' ORDER BY conname) FROM pg_constraint WHERE contype = 'f' AND conparentid = 0",
    )
}

fn fk_definitions(url: &str) -> String {
    psql(
        url,
        "SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), E'\\n' ORDER BY conname) FROM pg_constraint WHERE contype = 'f' AND conparentid = 0",
    )
}

#[test]
fn into_existing_tables_under_each_fk_handling() {
    for handling in ["order", "replica-role", "drop-recreate"] {
        // Given the source's schema on the target, its foreign keys and
        // triggers in place
        let db = TestDb::new(&format!("pgdb_existing_{}", handling.replace('-', "_")));
        load(&db, 30_000);
        let p = existing_schema(&db, handling);
        let fks = foreign_keys(&db.dst);
        assert_eq!(
            fks,
            "customers_referred_by_fkey:true,orders_customer_fkey:true"
        );
        let definitions = fk_definitions(&db.dst);
        // (tables whose columns are of the source's types take its binary
        // COPY data as is; one of an enum array and a composite, text; and
        // a column made another type on the target, text)
        let plan = db.etl(&["plan", &p]);
        let line = |table: &str| {
            plan.stdout
                .lines()
                .find(|l| l.contains(&format!(". {table} -> ")))
                .unwrap_or_else(|| panic!("{table} in {plan:?}"))
                .to_string()
        };
        assert!(line("sales.orders").ends_with(", binary COPY"), "{plan:?}");
        assert!(line("public.kinds").contains(", text COPY ("), "{plan:?}");
        psql(
            &db.dst,
            "ALTER TABLE sales.customers ALTER COLUMN name TYPE varchar(200)",
        );
        let plan = db.etl(&["plan", &p]);
        assert!(
            plan.stdout
                .lines()
                .any(|l| l.contains(". sales.customers -> ") && l.contains(", text COPY (")),
            "{plan:?}"
        );

        // When the data is loaded into it
        let out = db.etl(&["run", &p]);

        // Then every table but the trigger's counter equals the source, the
        // foreign keys are there and valid, no orphans; under "order" the
        // target's trigger fired on the load (parents first: the counter
        // loaded before the orders), and verify says so
        let counter = psql(&db.dst, "SELECT n FROM sales.counters");
        if handling == "order" {
            assert_eq!(out.code, 1, "{handling}: {out:?}");
            assert!(
                out.stdout.contains("sales.counters: checksum differs"),
                "{out:?}"
            );
            assert_eq!(counter, "58500");
        } else {
            assert_eq!(out.code, 0, "{handling}: {out:?}");
            assert_eq!(counter, "30000", "{handling}");
        }
        for t in tables(&db.src).iter().filter(|t| *t != "sales.counters") {
            assert_eq!(
                fingerprint(&db.src, t),
                fingerprint(&db.dst, t),
                "{handling}: table {t}"
            );
        }
        assert_eq!(foreign_keys(&db.dst), fks, "{handling}");
        // (added back as they were: actions, deferral, SET NULL)
        assert_eq!(fk_definitions(&db.dst), definitions, "{handling}");
        assert!(out.stdout.contains("0 orphan rows"), "{handling}: {out:?}");
        // The trigger is on after the load, whatever the handling.
        assert_eq!(
            psql(
                &db.dst,
                "SELECT tgenabled FROM pg_trigger WHERE tgname = 'orders_touch'"
            ),
            "O"
        );
    }
}

#[test]
fn drop_recreate_keeps_a_busy_foreign_key_and_names_its_holder() {
    // Given the schema on the target and a session holding sales.orders
    let db = TestDb::new("pgdb_busy_fk");
    load(&db, 3_000);
    let p = existing_schema(&db, "drop-recreate");
    let mut holder =
        crate::support::hold_lock(&db.dst, "busy-holder", "sales.orders", "ACCESS SHARE");

    // When the data is loaded with drop-recreate
    let out = db.etl(&["run", &p]);
    holder.kill().unwrap();
    holder.wait().unwrap();

    // Then the busy key stayed (named with the session), the table loaded
    // after its parent, the other key was dropped and added back valid
    // (its trigger is off all the same: DISABLE TRIGGER takes a lock that
    // a reader does not block)
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("busy-holder"), "{out:?}");
    assert!(out.stderr.contains("orders_customer_fkey"), "{out:?}");
    assert_eq!(
        foreign_keys(&db.dst),
        "customers_referred_by_fkey:true,orders_customer_fkey:true"
    );
    let log = psql(
        &db.dst,
        "SELECT string_agg(item || ' ' || status || ' ' || coalesce(left(error, 5), '-'), ', ' ORDER BY item) FROM etl.phase_log WHERE phase = 'fk-drop'",
    );
    assert_eq!(
        log,
        "sales.customers customers_referred_by_fkey done -, sales.orders orders_customer_fkey failed kept:"
    );
    for t in tables(&db.src) {
        assert_eq!(
            fingerprint(&db.src, &t),
            fingerprint(&db.dst, &t),
            "table {t}"
        );
    }
}

#[test]
fn plan_into_existing_tables_lists_what_the_target_lacks() {
    // Given the schema on the target, less one table and one column
    let db = TestDb::new("pgdb_plan_existing");
    load(&db, 100);
    let p = existing_schema(&db, "order");
    psql(
        &db.dst,
        "DROP TABLE public.journal; ALTER TABLE sales.counters DROP COLUMN n",
    );

    // When planned
    let out = db.etl(&["plan", &p]);

    // Then both are named before anything is written
    assert_eq!(out.code, 0, "{out:?}");
    for want in [
        "fk_handling = \"order\"",
        "Cannot be loaded",
        "table \"public\".\"journal\" does not exist on the target",
        "table \"sales\".\"counters\" has no column [\"n\"]",
    ] {
        assert!(out.stdout.contains(want), "{want}: {out:?}");
    }
    assert_eq!(psql(&db.dst, "SELECT to_regnamespace('etl') IS NULL"), "t");
}

#[test]
fn replica_role_needs_a_superuser() {
    // Given a target reached as a role that is not a superuser
    let db = TestDb::new("pgdb_replica_plain");
    load(&db, 100);
    let p = existing_schema(&db, "replica-role");
    psql(
        &db.dst,
        "DO $$ BEGIN CREATE ROLE etl_plain LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    );
    let plain = db.dst.replacen("etl@", "etl_plain@", 1);
    assert_ne!(plain, db.dst);

    // When the load is asked with replica-role
    let out = crate::support::etl_in(
        db.dir.path(),
        &["run", &p],
        &[("ETL_SRC_URL", &db.src), ("ETL_DST_URL", &plain)],
    );

    // Then it stops before writing anything, saying what to change
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("only a superuser"), "{out:?}");
    assert!(out.stderr.contains("fk_handling = \"order\""), "{out:?}");
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM sales.orders"), "0");
}

#[test]
fn a_failed_table_goes_to_the_failed_csv_and_rerun_completes_it() {
    // Given the schema on the target, one partition refusing some of its
    // rows (a CHECK the source does not have)
    let db = TestDb::new("pgdb_rerun");
    load(&db, 3_000);
    let p = existing_schema(&db, "drop-recreate");
    psql(
        &db.dst,
        "ALTER TABLE public.readings_2024 ADD CONSTRAINT no_big CHECK (value < 100)",
    );

    // When the data is loaded: that chunk fails, the others load, the
    // failed CSV names it
    let out = db.etl(&["run", &p]);
    assert_eq!(out.code, 1, "{out:?}");
    let failed = std::fs::read_to_string(db.dir.path().join("failed_chunks.csv")).unwrap();
    assert!(failed.contains("public.readings_2024"), "{failed}");
    assert_eq!(failed.lines().count(), 1, "only that chunk: {failed}");
    assert_eq!(
        psql(&db.dst, "SELECT count(*) FROM public.readings_2024"),
        "0"
    );
    assert_eq!(
        fingerprint(&db.src, "public.readings_2025"),
        fingerprint(&db.dst, "public.readings_2025")
    );

    // Then, the CHECK dropped, rerun loads exactly that chunk, and the
    // table equals the source's
    psql(
        &db.dst,
        "ALTER TABLE public.readings_2024 DROP CONSTRAINT no_big",
    );
    let rerun = db.etl(&["rerun", &p, "failed_chunks.csv"]);
    assert_eq!(rerun.code, 0, "{rerun:?}");
    for t in tables(&db.src).iter().filter(|t| *t != "sales.counters") {
        assert_eq!(
            fingerprint(&db.src, t),
            fingerprint(&db.dst, t),
            "table {t}"
        );
    }
    let verify = db.etl(&["verify", &p]);
    assert!(
        verify
            .stdout
            .lines()
            .any(|l| l.starts_with("public.readings_2024") && l.ends_with("equal (checksum)")),
        "{verify:?}"
    );
}

#[test]
fn restart_into_existing_tables_with_foreign_keys_empties_children_first() {
    // Given the data loaded once into the source's schema, foreign keys
    // enforced, parents first
    let db = TestDb::new("pgdb_restart_order");
    // (fewer orders than customers: the tables are taken biggest first, so
    // the parent comes before its child unless emptied children first)
    load(&db, 100);
    let p = existing_schema(&db, "order");
    // (without the fixture's ON DELETE CASCADE: emptying a parent with its
    // children's rows in place fails)
    psql(
        &db.dst,
        "ALTER TABLE sales.orders DROP CONSTRAINT orders_customer_fkey, \
         ADD CONSTRAINT orders_customer_fkey FOREIGN KEY (customer) REFERENCES sales.customers (id)",
    );
    let first = db.etl(&["run", &p]);
    assert!(first.stdout.contains("0 failed"), "{first:?}");

    // When everything is loaded again: no parent is emptied while its
    // children still reference it, and the tables equal the source's
    let again = db.etl(&["run", "--restart", &p]);
    assert!(
        again.stdout.contains("11 done, 0 failed, of 11"),
        "{again:?}"
    );
    for t in tables(&db.src).iter().filter(|t| *t != "sales.counters") {
        assert_eq!(
            fingerprint(&db.src, t),
            fingerprint(&db.dst, t),
            "table {t}"
        );
    }
    assert_eq!(
        foreign_keys(&db.dst),
        "customers_referred_by_fkey:true,orders_customer_fkey:true"
    );
}

#[test]
fn owners_and_grants_when_asked_and_large_objects_with_their_comments() {
    // Given a source whose table and large object belong to a role, are
    // granted to another, and the large object has a comment
    let db = TestDb::new("pgdb_owners");
    for role in ["etl_t_owner", "etl_t_reader"] {
        psql(
            &db.src,
            &format!(
                "DO $$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            ),
        );
    }
    psql(
        &db.src,
        "CREATE TABLE public.notes (id int PRIMARY KEY, body text); \
         INSERT INTO public.notes SELECT g, 'note ' || g FROM generate_series(1, 10) g; \
         ALTER TABLE public.notes OWNER TO etl_t_owner; \
         GRANT SELECT ON public.notes TO etl_t_reader; \
         DO $$ DECLARE o oid := lo_from_bytea(0, 'attached'); BEGIN \
           EXECUTE format('COMMENT ON LARGE OBJECT %s IS %L', o, 'the attachment''s note'); \
           EXECUTE format('ALTER LARGE OBJECT %s OWNER TO etl_t_owner', o); \
           EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO etl_t_reader', o); END $$",
    );
    let lo = "SELECT obj_description(oid, 'pg_largeobject') || ' ' || pg_get_userbyid(lomowner) \
              || ' ' || coalesce(array_to_string(lomacl, ','), '-') FROM pg_largeobject_metadata";
    let grants = "SELECT tableowner || ' ' || has_table_privilege('etl_t_reader', 'public.notes', 'SELECT') \
                  FROM pg_tables WHERE tablename = 'notes'";

    // When it moves as the default asks (no owners, no grants)
    let out = db.etl(&["run", &pipeline()]);

    // Then the comment came, the owner and grants did not
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(psql(&db.dst, lo), "the attachment's note etl -");
    assert_eq!(psql(&db.dst, grants), "etl false");

    // When it moves again into an empty database, owners and grants asked
    psql(&db.dst, "DROP SCHEMA public CASCADE; DROP SCHEMA etl CASCADE; CREATE SCHEMA public; SELECT lo_unlink(oid) FROM pg_largeobject_metadata");
    let text = std::fs::read_to_string(pipeline())
        .unwrap()
        .replace("# owners = true", "owners = true")
        .replace("# grants = true", "grants = true");
    let asked = db.pipeline("asked.toml", &text);
    let out = db.etl(&["run", asked.to_str().unwrap()]);

    // Then the table and the large object have the source's owner and grants
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(psql(&db.dst, grants), "etl_t_owner true");
    assert_eq!(psql(&db.dst, lo), psql(&db.src, lo));
    assert!(psql(&db.dst, lo).contains("etl_t_reader=r/etl_t_owner"));
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM public.notes"), "10");
}

#[test]
fn a_resumed_run_never_runs_sql_read_back_from_the_ledger() {
    // Given a drop-recreate load that stopped before its keys came back
    // (a chunk refused by a CHECK the source does not have): the keys are
    // dropped and the trigger is off, both recorded in etl.phase_log
    let db = TestDb::new("pgdb_ledger_sql");
    load(&db, 300);
    let p = existing_schema(&db, "drop-recreate");
    let definitions = fk_definitions(&db.dst);
    psql(
        &db.dst,
        "ALTER TABLE public.readings_2024 ADD CONSTRAINT no_big CHECK (value < 100)",
    );
    let first = db.etl(&["run", &p]);
    assert_eq!(first.code, 1, "{first:?}");
    assert_eq!(foreign_keys(&db.dst), "");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT tgenabled FROM pg_trigger WHERE tgname = 'orders_touch'"
        ),
        "D"
    );

    // When someone who can write etl.phase_log puts SQL of their own in
    // the recorded statements, and the load is completed
    psql(
        &db.dst,
        "UPDATE etl.phase_log SET statement = 'DROP TABLE sales.counters' WHERE phase = 'trigger-off'; \
         UPDATE etl.phase_log SET statement = 'DROP TABLE sales.counters' \
         WHERE phase = 'fk-drop' AND item = 'sales.orders orders_customer_fkey'",
    );
    psql(
        &db.dst,
        "ALTER TABLE public.readings_2024 DROP CONSTRAINT no_big",
    );
    let rerun = db.etl(&["rerun", &p, "failed_chunks.csv"]);

    // Then none of it ran: the trigger is on again from the catalog, the
    // untouched key is back exactly as it was, and the changed record is
    // refused by name with what to do
    assert_eq!(
        psql(&db.dst, "SELECT to_regclass('sales.counters') IS NOT NULL"),
        "t"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT tgenabled FROM pg_trigger WHERE tgname = 'orders_touch'"
        ),
        "O"
    );
    assert_eq!(
        fk_definitions(&db.dst),
        definitions
            .lines()
            .filter(|l| !l.starts_with("orders_customer_fkey"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_ne!(rerun.code, 0, "{rerun:?}");
    let all = format!("{}{}", rerun.stdout, rerun.stderr);
    assert!(
        all.contains("record of dropped foreign key \"sales.orders orders_customer_fkey\"")
            && all.contains("add the key yourself and delete that row"),
        "{rerun:?}"
    );
}

#[test]
fn a_clone_with_its_ledger_in_another_schema_carries_nothing_of_etl_after_forget() {
    // Given a source with every object kind, and the pipeline keeping etl's
    // tables in the target's schema etl_clone (ledger_schema)
    let db = TestDb::new("pgdb_ledger_schema");
    load(&db, 3_000);
    let text = std::fs::read_to_string(pipeline()).unwrap() + "ledger_schema = \"etl_clone\"\n";
    let p = db.pipeline("clone.toml", &text);
    let p = p.to_str().unwrap();
    let namespaces = || {
        psql(
            &db.dst,
            "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace WHERE nspname LIKE 'etl%'",
        )
    };

    // When a run is killed after its first chunk commits, and run again
    let go = db.dir.path().join("go");
    let (mut child, lines) = spawn_etl(
        &db,
        &["run", p, "--workers", "1"],
        &[
            ("ETL_TEST_PAUSE_AT", "commit:1"),
            ("ETL_TEST_RESUME_FILE", go.to_str().unwrap()),
        ],
    );
    wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(namespaces(), "etl_clone", "no schema etl is made");
    let done_before: i64 = psql(
        &db.dst,
        "SELECT count(*) FROM etl_clone.chunk_ledger WHERE status = 'done'",
    )
    .parse()
    .unwrap();
    assert_eq!(done_before, 1, "the first chunk is recorded in etl_clone");
    let out = db.etl(&["run", p]);

    // Then it ends, its ledger in etl_clone alone
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("tables       10 loaded, 1 skipped (done before), 0 failed, of 11"),
        "{out:?}"
    );
    assert_eq!(namespaces(), "etl_clone");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FILTER (WHERE status <> 'done') || ' ' || count(*) FROM etl_clone.chunk_ledger"
        ),
        "0 11"
    );
    let status = db.etl(&["status", p]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status.stdout.starts_with(
            "Pipeline postgres-database, ledger etl_clone.chunk_ledger on postgresql://"
        ),
        "{status:?}"
    );
    let again = db.etl(&["run", p]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.contains("0 loaded, 11 skipped (done before)"),
        "{again:?}"
    );

    // When the pipeline is forgotten: the schema goes, and the target
    // equals the source table by table and in pg_dump --schema-only
    let forget = db.etl(&["forget", p, "--yes"]);
    assert_eq!(forget.code, 0, "{forget:?}");
    assert!(
        forget
            .stdout
            .contains("dropped schema etl_clone: nothing else was in it"),
        "{forget:?}"
    );
    assert_eq!(namespaces(), "");
    assert_equal(&db);
}
