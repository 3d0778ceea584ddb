//! `etl schema apply --phase expand|backfill|contract` and `etl schema
//! status`: a change applied in stages, code of the old and of the new
//! schema both working between them, each stage resumable.

use crate::schema::assert_equal_schemas;
use crate::support::{psql, spawn_etl, wait_for_line, TestDb};

/// psql that must fail: its message.
fn refused_by_server(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-Atq", url, "-c", sql])
        .output()
        .expect("psql is installed");
    assert!(!out.status.success(), "{sql} ran: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_staged_change_keeps_old_and_new_names_working_between_its_stages() {
    // Given a target whose orders table is to have amount renamed total,
    // note NOT NULL and v (its last column: the contract of a type change
    // moves the column last) widened to bigint, and items renamed products
    let db = TestDb::new("schema_stages");
    for url in [&db.src, &db.dst] {
        psql(
            url,
            "CREATE TABLE orders (id int PRIMARY KEY, amount int NOT NULL DEFAULT 0, note text, v int); \
             CREATE INDEX orders_amount ON orders (amount); \
             CREATE TABLE items (id int PRIMARY KEY, name text); \
             INSERT INTO orders SELECT g, g, CASE WHEN g % 1000 = 0 THEN NULL ELSE 'n' END, g FROM generate_series(1, 20000) g; \
             INSERT INTO items SELECT g, 'i' || g FROM generate_series(1, 10) g",
        );
    }
    psql(
        &db.src,
        "UPDATE orders SET note = 'n' WHERE note IS NULL; \
         ALTER TABLE orders RENAME COLUMN amount TO total; \
         ALTER TABLE orders ALTER COLUMN v TYPE bigint; \
         ALTER TABLE orders ALTER COLUMN note SET NOT NULL; \
         ALTER TABLE items RENAME TO products",
    );
    let renames = [
        "--rename",
        "public.orders.amount=total",
        "--rename",
        "public.items=public.products",
    ];
    let phase = |stage: &str| -> Vec<String> {
        [
            &[
                "schema", "apply", &db.src, &db.dst, "--yes", "--phase", stage,
            ][..],
            &renames[..],
        ]
        .concat()
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |stage: &str| {
        let args = phase(stage);
        db.etl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // The plan names each statement's stage.
    let plan = db.etl(
        &[
            &["schema", "plan", &db.src, &db.dst, "--stages"][..],
            &renames[..],
        ]
        .concat(),
    );
    assert_eq!(plan.code, 0, "{plan:?}");
    for line in [
        "low phased-rename-column (expand)",
        "low phased-rename-table (expand)",
        "phased-expand (expand)",
        "set-not-null-check (expand)",
        "phased-rename-backfill (backfill)",
        "phased-backfill (backfill)",
        "set-not-null-validate (backfill)",
        "phased-rename-contract (contract)",
        "phased-rename-view-drop (contract)",
        "phased-contract (contract)",
        "set-not-null (contract)",
    ] {
        assert!(plan.stdout.contains(line), "no {line} in {plan:?}");
    }

    // No change is open: only expand starts one.
    let early = run("backfill");
    assert_ne!(early.code, 0, "{early:?}");
    assert!(early.stderr.contains("no staged change open"), "{early:?}");

    // When the expand stage runs
    let expand = run("expand");
    assert_eq!(expand.code, 0, "{expand:?}");
    assert!(
        expand.stderr.contains("--phase backfill"),
        "says what is next: {expand:?}"
    );

    // Then code of the old schema and of the new both work
    psql(
        &db.dst,
        "INSERT INTO orders (id, amount, v, note) VALUES (20001, 5, 1, 'old'); \
         INSERT INTO orders (id, total, v, note) VALUES (20002, 7, 2, 'new'); \
         UPDATE orders SET amount = 11 WHERE id = 1; \
         UPDATE orders SET total = 12 WHERE id = 2; \
         INSERT INTO items VALUES (11, 'old'); INSERT INTO products VALUES (12, 'new')",
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT string_agg(id || ':' || amount || '=' || total, ',' ORDER BY id) FROM orders WHERE id IN (1, 2, 20001, 20002)"
        ),
        "1:11=11,2:12=12,20001:5=5,20002:7=7"
    );
    assert_eq!(
        psql(&db.dst, "SELECT count(*) FROM items"),
        psql(&db.dst, "SELECT count(*) FROM products")
    );
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM products"), "12");
    // and a new NULL note is refused already, the old ones not yet checked
    let null = refused_by_server(
        &db.dst,
        "INSERT INTO orders (id, amount, v) VALUES (20003, 1, 1)",
    );
    assert!(null.contains("note_etl_not_null"), "{null}");

    // The status tells the stage; a plain apply and the contract are refused
    let status = db.etl(&["schema", "status", &db.dst]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status.stdout.contains("open, in stage backfill"),
        "{status:?}"
    );
    assert!(status.stdout.contains("--phase backfill"), "{status:?}");
    let plain = db.etl(
        &[
            &["schema", "apply", &db.src, &db.dst, "--yes"][..],
            &renames[..],
        ]
        .concat(),
    );
    assert_ne!(plain.code, 0, "{plain:?}");
    assert!(plain.stderr.contains("staged change open"), "{plain:?}");
    let contract = run("contract");
    assert_eq!(contract.code, 4, "{contract:?}");
    assert!(
        contract.stderr.contains("stage backfill of staged change"),
        "{contract:?}"
    );

    // The backfill is refused while old rows hold NULL notes, named
    let backfill = run("backfill");
    assert_eq!(backfill.code, 4, "{backfill:?}");
    assert!(
        backfill
            .stdout
            .contains("FAILS: public.orders.note holds 20 NULLs"),
        "{backfill:?}"
    );
    psql(&db.dst, "UPDATE orders SET note = 'n' WHERE note IS NULL");
    let backfill = run("backfill");
    assert_eq!(backfill.code, 0, "{backfill:?}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM orders WHERE total IS DISTINCT FROM amount OR v__etl_new IS DISTINCT FROM v"
        ),
        "0"
    );

    // A contract killed after its first statement resumes where it stopped
    let args = phase("contract");
    let (mut child, lines) = spawn_etl(
        &db,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("ETL_TEST_PAUSE_AT", "schema-apply:1")],
    );
    wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    child.kill().unwrap();
    child.wait().unwrap();
    let status = db.etl(&["schema", "status", &db.dst]);
    assert!(
        status.stdout.contains("open, in stage contract"),
        "{status:?}"
    );
    assert!(status.stdout.contains("contract  1 of"), "{status:?}");
    let contract = run("contract");
    assert_eq!(contract.code, 0, "{contract:?}");
    assert!(contract.stderr.contains("closed"), "{contract:?}");

    // Then the target matches, with every row and value
    assert_equal_schemas(&db);
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*), sum(total), sum(v), count(*) FILTER (WHERE note IS NULL) FROM orders"
        ),
        "20002|200010032|200010003|0"
    );
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM products"), "12");
    let status = db.etl(&["schema", "status", &db.dst, "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert!(listed[0]["closed_at"].is_string(), "{status:?}");
    // and a new change can start (the renames are done: not given again)
    let again = db.etl(&[
        "schema", "apply", &db.src, &db.dst, "--yes", "--phase", "expand",
    ]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("already matches"), "{again:?}");
}

#[test]
fn a_table_repartitioned_in_stages_keeps_every_row_written_while_its_rows_move() {
    // Given a plain table of 200,000 rows that FROM has partitioned by
    // time, with its key widened to hold the partition column
    let db = TestDb::new("schema_repartition");
    psql(
        &db.dst,
        "CREATE TABLE events (id int PRIMARY KEY, ts timestamptz NOT NULL, v int, note text); \
         CREATE INDEX events_v ON events (v); COMMENT ON TABLE events IS 'the events'; \
         GRANT SELECT ON events TO PUBLIC; \
         INSERT INTO events SELECT g, timestamptz '2025-06-01' + g * interval '2 minutes', g, 'n' FROM generate_series(1, 200000) g",
    );
    psql(
        &db.src,
        "CREATE TABLE events (id int, ts timestamptz NOT NULL, v int, note text, PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts); \
         CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01'); \
         CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01'); \
         CREATE TABLE events_rest PARTITION OF events DEFAULT; \
         CREATE INDEX events_v ON events (v); COMMENT ON TABLE events IS 'the events'; \
         GRANT SELECT ON events TO PUBLIC",
    );
    let plan = db.etl(&["schema", "plan", &db.src, &db.dst, "--stages"]);
    for line in [
        "low repartition-create (expand)",
        "low repartition-sync (expand)",
        "repartition-move (backfill)",
        "medium repartition-swap (contract)",
        "high repartition-drop-old (contract)",
    ] {
        assert!(plan.stdout.contains(line), "no {line} in {plan:?}");
    }
    assert!(!plan.stdout.contains("FAILS"), "{plan:?}");
    let run = |stage: &str| {
        db.etl(&[
            "schema", "apply", &db.src, &db.dst, "--yes", "--phase", stage,
        ])
    };
    let expand = run("expand");
    assert_eq!(expand.code, 0, "{expand:?}");

    // When rows are inserted, updated and deleted while they move, each
    // change in a transaction of its own
    let writes = "DO $w$ BEGIN FOR i IN 1..400 LOOP \
         UPDATE events SET v = -v WHERE id = i * 97; \
         DELETE FROM events WHERE id = i * 89 + 1; \
         INSERT INTO events VALUES (1000000 + i, timestamptz '2026-06-01' + i * interval '1 hour', i, 'w'); \
         COMMIT; PERFORM pg_sleep(0.002); END LOOP; END $w$";
    let mut writer = std::process::Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-q", &db.dst, "-c", writes])
        .spawn()
        .expect("psql is installed");
    let backfill = run("backfill");
    let wrote = writer.wait().unwrap();
    assert!(wrote.success(), "the writer failed");
    assert_eq!(backfill.code, 0, "{backfill:?}");
    // and after the backfill, before the swap
    psql(
        &db.dst,
        "UPDATE events SET note = 'u' WHERE id % 1013 = 0; INSERT INTO events VALUES (2000000, '2027-02-01', 7, 'rest')",
    );
    let contract = run("contract");
    assert_eq!(contract.code, 0, "{contract:?}");

    // Then the target matches FROM (its grants too, which pg_dump
    // prints), and holds exactly the rows written
    assert_equal_schemas(&db);
    assert!(
        psql(
            &db.dst,
            "SELECT relacl::text FROM pg_class WHERE oid = 'events'::regclass"
        )
        .contains("=r/"),
        "PUBLIC keeps SELECT"
    );
    let expected = "CREATE TEMP TABLE e AS SELECT g AS id, g AS v, 'n'::text AS note FROM generate_series(1, 200000) g; \
         UPDATE e SET v = -v WHERE id IN (SELECT i * 97 FROM generate_series(1, 400) i); \
         DELETE FROM e WHERE id IN (SELECT i * 89 + 1 FROM generate_series(1, 400) i); \
         INSERT INTO e SELECT 1000000 + i, i, 'w' FROM generate_series(1, 400) i; \
         UPDATE e SET note = 'u' WHERE id % 1013 = 0; INSERT INTO e VALUES (2000000, 7, 'rest'); \
         SELECT count(*), sum(v), sum(hashtext(id || note)) FROM e";
    let tally = "SELECT count(*), sum(v), sum(hashtext(id || note)) FROM events";
    assert_eq!(
        psql(&db.dst, tally),
        psql(&db.dst, expected).lines().last().unwrap()
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT string_agg(tableoid::regclass::text, ',' ORDER BY tableoid::regclass::text) FROM (SELECT DISTINCT tableoid FROM events) p"
        ),
        "events_2025,events_2026,events_rest"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT to_regclass('public.events__etl_old') IS NULL"
        ),
        "t"
    );

    // And back to a plain table, in one apply without stages
    psql(
        &db.src,
        "DROP TABLE events; \
         CREATE TABLE events (id int, ts timestamptz NOT NULL, v int, note text, PRIMARY KEY (id, ts)); \
         CREATE INDEX events_v ON events (v); COMMENT ON TABLE events IS 'the events'; \
         GRANT SELECT ON events TO PUBLIC",
    );
    let back = db.etl(&["schema", "apply", &db.src, &db.dst, "--yes"]);
    assert_eq!(back.code, 0, "{back:?}");
    assert_equal_schemas(&db);
    assert_eq!(
        psql(&db.dst, tally),
        psql(&db.dst, expected).lines().last().unwrap()
    );
}

#[test]
fn a_repartition_etl_cannot_keep_whole_is_refused_saying_why() {
    let db = TestDb::new("schema_repartition_refused");
    psql(
        &db.dst,
        "CREATE TABLE logs (id int PRIMARY KEY, ts timestamptz NOT NULL)",
    );
    psql(
        &db.src,
        "CREATE TABLE logs (id int, ts timestamptz NOT NULL) PARTITION BY RANGE (ts); \
         CREATE TABLE logs_all PARTITION OF logs DEFAULT",
    );
    let plan = db.etl(&["schema", "plan", &db.src, &db.dst]);
    assert!(
        plan.stdout.contains(
            "FAILS: public.logs is partitioned differently (not partitioned on the target, RANGE (ts) wanted), and public.logs has no primary key in FROM"
        ),
        "{plan:?}"
    );
    let apply = db.etl(&["schema", "apply", &db.src, &db.dst, "--yes"]);
    assert_eq!(apply.code, 4, "{apply:?}");

    // Row-level security, read only with --policies, is refused by the
    // server before anything is made when it is not
    for url in [&db.src, &db.dst] {
        psql(url, "DROP TABLE logs");
    }
    psql(
        &db.dst,
        "CREATE TABLE secrets (id int PRIMARY KEY, ts timestamptz NOT NULL); ALTER TABLE secrets ENABLE ROW LEVEL SECURITY",
    );
    psql(
        &db.src,
        "CREATE TABLE secrets (id int, ts timestamptz NOT NULL, PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts); \
         CREATE TABLE secrets_all PARTITION OF secrets DEFAULT",
    );
    let with = db.etl(&["schema", "plan", &db.src, &db.dst, "--policies"]);
    assert!(
        with.stdout
            .contains("public.secrets has row-level security"),
        "{with:?}"
    );
    let apply = db.etl(&["schema", "apply", &db.src, &db.dst, "--yes"]);
    assert_ne!(apply.code, 0, "{apply:?}");
    assert!(
        apply
            .stderr
            .contains("public.secrets has row-level security"),
        "{apply:?}"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT to_regclass('public.secrets__etl_new') IS NULL"
        ),
        "t",
        "nothing made"
    );
}

#[test]
fn a_repartition_move_whose_session_is_ended_goes_on_from_its_last_batch() {
    // Given a 300,000-row table being repartitioned, its move under way
    let db = TestDb::new("schema_repartition_fault");
    psql(
        &db.dst,
        "CREATE TABLE events (id int PRIMARY KEY, ts timestamptz NOT NULL, v int); \
         INSERT INTO events SELECT g, timestamptz '2025-01-01' + g * interval '1 minute', g FROM generate_series(1, 300000) g",
    );
    psql(
        &db.src,
        "CREATE TABLE events (id int, ts timestamptz NOT NULL, v int, PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts); \
         CREATE TABLE events_a PARTITION OF events FOR VALUES FROM (MINVALUE) TO ('2025-04-01'); \
         CREATE TABLE events_b PARTITION OF events FOR VALUES FROM ('2025-04-01') TO (MAXVALUE)",
    );
    let expand = db.etl(&[
        "schema", "apply", &db.src, &db.dst, "--yes", "--phase", "expand",
    ]);
    assert_eq!(expand.code, 0, "{expand:?}");
    let (mut child, lines) = spawn_etl(
        &db,
        &[
            "schema", "apply", &db.src, &db.dst, "--yes", "--phase", "backfill",
        ],
        &[],
    );
    let moving = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'DO $etl$ DECLARE b bigint%' AND state = 'active'";
    crate::support::eventually("the move to start", || psql(&db.dst, moving) == "1");

    // When its session is ended by the server
    let ended = psql(
        &db.dst,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'DO $etl$ DECLARE b bigint%'",
    );
    assert_eq!(ended, "1");
    let status = child.wait().unwrap();
    let said: Vec<String> = lines.try_iter().collect();

    // Then the backfill tries again and finishes, and the contract swaps
    assert!(status.success(), "{said:?}");
    assert!(
        said.iter()
            .any(|l| l.contains("Transient failure; statement [3] was stopped")),
        "{said:?}"
    );
    let contract = db.etl(&[
        "schema", "apply", &db.src, &db.dst, "--yes", "--phase", "contract",
    ]);
    assert_eq!(contract.code, 0, "{contract:?}");
    assert_equal_schemas(&db);
    assert_eq!(
        psql(&db.dst, "SELECT count(*), sum(v) FROM events"),
        "300000|45000150000"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT to_regclass('etl.repartition_move') IS NULL"
        ),
        "t",
        "the move's place is cleaned up"
    );
}

#[test]
fn a_staged_change_abandoned_lets_plain_applies_run_again() {
    // Given a staged change whose expand stage ran
    let db = TestDb::new("schema_stages_abandon");
    for url in [&db.src, &db.dst] {
        psql(url, "CREATE TABLE t (id int PRIMARY KEY, note text)");
    }
    psql(&db.src, "ALTER TABLE t ALTER COLUMN note SET NOT NULL");
    let expand = [
        "schema", "apply", &db.src, &db.dst, "--yes", "--phase", "expand",
    ];
    // (one --phase apply at a time: another holding the lock refuses it)
    let (mut holder, _) = crate::support::hold_open(
        &db.dst,
        "other-apply",
        "SELECT pg_advisory_lock(hashtext('etl schema apply --phase'));",
    );
    let refused = db.etl(&expand);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("another etl schema apply --phase is running"),
        "{refused:?}"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    crate::support::eventually("the other session's lock to go", || {
        psql(
            &db.dst,
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND d.datname = current_database()",
        ) == "0"
    });
    let expand = db.etl(&expand);
    assert_eq!(expand.code, 0, "{expand:?}");
    let id = psql(&db.dst, "SELECT id FROM etl.schema_change");

    // When it is abandoned (asked first), then undone by its rollback file
    let unasked = db.etl(&["schema", "status", &db.dst, "--abandon", &id]);
    assert_ne!(unasked.code, 0, "{unasked:?}");
    assert!(unasked.stderr.contains("confirm with --yes"), "{unasked:?}");
    let wrong = db.etl(&["schema", "status", &db.dst, "--abandon", "999", "--yes"]);
    assert!(
        wrong.stderr.contains("no open staged change 999"),
        "{wrong:?}"
    );
    let abandoned = db.etl(&["schema", "status", &db.dst, "--abandon", &id, "--yes"]);
    assert_eq!(abandoned.code, 0, "{abandoned:?}");
    assert!(
        abandoned.stdout.contains(&format!("staged change {id} on"))
            && abandoned.stdout.contains(": abandoned "),
        "{abandoned:?}"
    );
    let rollback = crate::schema::history(&db, "rollback");
    let undone = db.etl(&[
        "schema",
        "rollback",
        rollback[0].to_str().unwrap(),
        &db.dst,
        "--yes",
    ]);
    assert_eq!(undone.code, 0, "{undone:?}");

    // Then a plain apply runs again and makes the target match
    let plain = db.etl(&["schema", "apply", &db.src, &db.dst, "--yes"]);
    assert_eq!(plain.code, 0, "{plain:?}");
    assert_equal_schemas(&db);
}

#[test]
fn a_column_renamed_in_stages_that_changes_otherwise_too_is_refused() {
    let db = TestDb::new("schema_stages_rename_and_type");
    psql(&db.dst, "CREATE TABLE t (id int PRIMARY KEY, a int)");
    psql(&db.src, "CREATE TABLE t (id int PRIMARY KEY, b bigint)");
    let args = [
        "schema",
        "plan",
        &db.src,
        &db.dst,
        "--stages",
        "--rename",
        "public.t.a=b",
    ];
    let plan = db.etl(&args);
    assert!(
        plan.stdout
            .contains("FAILS: public.t.a is renamed in stages and changes otherwise too (type integer -> bigint)"),
        "{plan:?}"
    );
}
