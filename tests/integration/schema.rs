//! `etl schema diff|plan|apply` between two real databases: the source
//! (FROM, the schema wanted) and the target (TO) of a [`TestDb`], built by
//! fixtures/sql/schema_{base,from,to}.sql to differ in each kind of object.

use std::collections::BTreeMap;

use crate::support::{
    hold_lock, hold_open, psql, psql_file, repo, spawn_etl, wait_for_line, TestDb,
};

pub(crate) fn build(db: &TestDb, big_rows: u32) {
    let sql = repo().join("fixtures/sql");
    let rows = big_rows.to_string();
    for url in [&db.src, &db.dst] {
        psql_file(url, &sql.join("schema_base.sql"), &[("big_rows", &rows)]);
    }
    psql_file(&db.src, &sql.join("schema_from.sql"), &[]);
    psql_file(&db.dst, &sql.join("schema_to.sql"), &[]);
}

/// The schema as pg_dump prints it, but for etl's own schema (its ledger
/// and staged changes, which `etl schema` does not compare).
pub(crate) fn schema_dump(url: &str) -> String {
    let out = std::process::Command::new("pg_dump")
        .args(["--schema-only", "--no-owner", "--exclude-schema=etl", url])
        .output()
        .expect("pg_dump is installed");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `etl schema apply` of every statement, whatever its grade.
pub(crate) fn apply_all(db: &TestDb) -> crate::support::Output {
    db.etl(&[
        "schema",
        "apply",
        &db.src,
        &db.dst,
        "--max-risk",
        "very-high",
        "--yes",
    ])
}

/// A second diff finds nothing, and `pg_dump --schema-only` of both
/// sides is the same.
pub(crate) fn assert_equal_schemas(db: &TestDb) {
    let again = db.etl(&["schema", "diff", &db.src, &db.dst]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(schema_dump(&db.src), schema_dump(&db.dst));
}

/// The statements of a plan or history file (comments left out).
pub(crate) fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with("--") || (current.is_empty() && line.trim().is_empty()) {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.ends_with(';') {
            out.push(current.trim_end().trim_end_matches(';').to_string());
            current.clear();
        }
    }
    out
}

pub(crate) fn history(db: &TestDb, kind: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(db.dir.path().join("history"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p: &std::path::PathBuf| {
        p.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&format!("{kind}."))
    });
    files.sort();
    files
}

#[test]
fn diff_lists_each_kind_plan_grades_each_statement_and_apply_makes_them_equal() {
    let db = TestDb::new("schema_all");
    build(&db, 50_000);

    let diff = db.etl(&["schema", "diff", &db.src, &db.dst, "--grants", "--policies"]);
    assert_eq!(diff.code, 1, "{diff:?}");
    for line in [
        "+ schema sales",
        "+ extension pg_trgm",
        "~ type public.mood: values added [\"happy\"]",
        "+ type public.positive",
        "+ type public.money_pair",
        "+ sequence public.invoice_no",
        "~ function public.double_it(integer): definition",
        "+ function public.reset_child()",
        "+ table sales.orders",
        "+ table public.events_2025",
        "- table public.gone",
        "~ column public.big.code: type integer -> bigint",
        "~ column public.small.name: SET NOT NULL",
        "+ column public.small.extra",
        "- column public.small.old_col",
        "+ constraint public.big.big_code_positive",
        "+ constraint public.child.child_parent_fk",
        "+ constraint public.parent.parent_label_key",
        "+ index public.big_name_trgm",
        "+ index public.big_lower_name",
        "- index public.big_note",
        "- index public.small_note",
        "+ view public.parent_counts",
        "~ view public.v_small: definition",
        "+ trigger public.child.child_touch",
        "+ comment TABLE public.big",
        "~ type public.pair:",
        "~ type public.short_code:",
        "~ sequence public.ticket_no: increment 1 -> 5",
        "~ column public.bookings.id: identity BY DEFAULT -> identity ALWAYS",
        "+ constraint public.bookings.bookings_no_overlap",
        "~ trigger public.small.small_stamp:",
        "~ table public.child: row level security off -> on",
        "+ policy public.child.child_read",
        "~ policy public.parent.parent_read: definition",
        "+ grant SCHEMA sales TO app_reader",
        "~ grant TABLE public.small TO app_reader: SELECT -> INSERT, SELECT",
    ] {
        assert!(
            diff.stdout.lines().any(|l| l.starts_with(line)),
            "no {line:?} in\n{}",
            diff.stdout
        );
    }
    let json = db.etl(&[
        "schema",
        "diff",
        "--json",
        &db.src,
        &db.dst,
        "--grants",
        "--policies",
    ]);
    let parsed: serde_json::Value =
        serde_json::from_str(&json.stdout).expect("diff --json is JSON");
    assert_eq!(parsed["equal"], false);
    assert_eq!(
        parsed["differences"].as_array().unwrap().len(),
        diff.stdout.lines().count() - 1,
        "{json:?}"
    );

    // The same type change graded apart on 10 rows and on 50,000 rows
    // (large from 20,000 here); the NULLs of a NOT NULL column flagged.
    let plan = db.etl(&[
        "schema",
        "plan",
        &db.src,
        &db.dst,
        "--grants",
        "--policies",
        "--large-rows",
        "20000",
        "-o",
        "plan.sql",
    ]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let text = std::fs::read_to_string(db.dir.path().join("plan.sql")).unwrap();
    let graded = |risk: &str, rule: &str, sql: &str| {
        let found = text.split("\n\n").any(|block| {
            block
                .lines()
                .any(|l| l.starts_with("-- [") && l.contains(&format!("] {risk} {rule}:")))
                && block.contains(sql)
        });
        assert!(found, "no {risk} {rule} for {sql} in\n{text}");
    };
    graded(
        "very-high",
        "rewrite-type-change",
        "ALTER TABLE public.big ALTER COLUMN code TYPE bigint",
    );
    // Each statement that scans, rewrites or indexes a table has its time
    // at the pace measured on the target, and the plan its total and basis
    let estimated = |sql: &str| -> bool {
        let block = text.split("\n\n").find(|b| b.contains(sql)).unwrap();
        block.lines().any(|l| l.starts_with("-- estimated: ~"))
    };
    assert!(estimated(
        "ALTER TABLE public.big ALTER COLUMN code TYPE bigint"
    ));
    assert!(estimated("CREATE INDEX CONCURRENTLY big_name_trgm"));
    assert!(!estimated("ADD COLUMN extra text"), "brief: {text}");
    let total = text
        .lines()
        .find(|l| l.starts_with("-- estimated time: ~"))
        .unwrap_or_else(|| panic!("no total in {text}"));
    assert!(
        total.contains("statements that scan, rewrite or index a table")
            && total.contains("basis: the target wrote a 200,000-row temporary table (")
            && total.contains("waits for locks not counted"),
        "{total}"
    );
    let json = db.etl(&["schema", "plan", "--json", &db.src, &db.dst]);
    assert_eq!(json.code, 0, "{json:?}");
    let steps: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let secs = |sql: &str| -> f64 {
        steps
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["sql"].as_str().unwrap().contains(sql))
            .unwrap()["estimate_secs"]
            .as_f64()
            .unwrap()
    };
    let (big, small) = (
        secs("ALTER TABLE public.big ALTER COLUMN code TYPE bigint"),
        secs("ALTER TABLE public.small ALTER COLUMN code TYPE bigint"),
    );
    assert!(
        big > 10.0 * small && small > 0.0,
        "big {big}, small {small}"
    );

    graded(
        "medium",
        "rewrite-type-change",
        "ALTER TABLE public.small ALTER COLUMN code TYPE bigint",
    );
    graded("very-high", "drop-table", "DROP TABLE public.gone");
    graded("very-high", "drop-column", "DROP COLUMN old_col");
    graded("low", "add-column", "ADD COLUMN extra text");
    graded(
        "low",
        "enum-add-value",
        "ALTER TYPE public.mood ADD VALUE IF NOT EXISTS 'happy' AFTER 'ok'",
    );
    graded(
        "high",
        "create-index",
        "CREATE INDEX CONCURRENTLY big_name_trgm",
    );
    graded(
        "medium",
        "add-foreign-key-not-valid",
        "FOREIGN KEY (parent_id) REFERENCES public.parent(id) NOT VALID",
    );
    graded(
        "low",
        "validate-constraint",
        "VALIDATE CONSTRAINT child_parent_fk",
    );
    graded(
        "high",
        "set-not-null-validate",
        "VALIDATE CONSTRAINT note_etl_not_null",
    );
    graded(
        "medium",
        "add-exclusion",
        "EXCLUDE USING gist (room WITH =, during WITH &&)",
    );
    graded(
        "low",
        "alter-sequence",
        "ALTER SEQUENCE public.ticket_no AS bigint INCREMENT BY 5",
    );
    graded(
        "low",
        "add-attribute",
        "ALTER TYPE public.pair ADD ATTRIBUTE c integer",
    );
    graded(
        "medium",
        "domain-add-check",
        "ALTER DOMAIN public.short_code ADD CONSTRAINT short_code_upper",
    );
    graded(
        "medium",
        "set-identity",
        "ALTER TABLE public.bookings ALTER COLUMN id SET GENERATED ALWAYS",
    );
    graded(
        "low",
        "replace-trigger",
        "CREATE OR REPLACE TRIGGER small_stamp BEFORE INSERT OR UPDATE",
    );
    graded(
        "high",
        "row-security",
        "ALTER TABLE public.child ENABLE ROW LEVEL SECURITY",
    );
    graded(
        "medium",
        "create-policy",
        "CREATE POLICY child_read ON public.child",
    );
    graded(
        "low",
        "grant",
        "GRANT INSERT ON TABLE public.small TO app_reader",
    );
    assert!(
        text.contains("-- FAILS: public.big.note holds 50 NULLs"),
        "{text}"
    );
    assert!(
        text.contains("ACCESS EXCLUSIVE on public.big (blocks reads and writes)"),
        "{text}"
    );
    assert!(text.contains("public.big: ~50,000 rows"), "{text}");
    // Dependency order: the view over small.code is dropped before the
    // type change and made again after; the table before its foreign key.
    let order = statements(&text);
    let at = |needle: &str| {
        order
            .iter()
            .position(|s| s.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in the plan"))
    };
    assert!(at("DROP VIEW public.v_small") < at("ALTER TABLE public.small ALTER COLUMN code TYPE"));
    assert!(
        at("ALTER TABLE public.small ALTER COLUMN code TYPE") < at("CREATE VIEW public.v_small")
    );
    assert!(at("CREATE SCHEMA sales") < at("CREATE TABLE sales.orders"));
    assert!(at("CREATE DOMAIN public.positive") < at("CREATE TABLE sales.orders"));
    assert!(at("CREATE TABLE sales.orders") < at("orders_parent_id_fkey"));
    assert!(at("CREATE POLICY child_read") < at("ENABLE ROW LEVEL SECURITY"));
    assert!(at("CREATE SCHEMA sales") < at("GRANT USAGE ON SCHEMA sales"));
    let json = db.etl(&[
        "schema",
        "plan",
        "--json",
        &db.src,
        &db.dst,
        "--grants",
        "--policies",
    ]);
    let steps: serde_json::Value = serde_json::from_str(&json.stdout).expect("plan --json is JSON");
    let rules: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rule"].as_str().unwrap())
        .collect();
    assert!(
        rules.contains(&"drop-column") && rules.contains(&"create-table"),
        "{rules:?}"
    );

    // A statement that would fail: refused, nothing applied.
    let refused = db.etl(&[
        "schema",
        "apply",
        &db.src,
        &db.dst,
        "--grants",
        "--policies",
        "--max-risk",
        "very-high",
        "--yes",
    ]);
    assert_eq!(refused.code, 4, "{refused:?}");
    assert!(
        refused.stderr.contains("would fail on the data"),
        "{refused:?}"
    );
    psql(&db.dst, "UPDATE big SET note = '' WHERE note IS NULL");
    // A drop above --max-risk low: refused, nothing applied.
    let low = db.etl(&[
        "schema",
        "apply",
        &db.src,
        &db.dst,
        "--grants",
        "--policies",
        "--max-risk",
        "low",
        "--yes",
    ]);
    assert_eq!(low.code, 4, "{low:?}");
    assert!(low.stderr.contains("very-high drop-table"), "{low:?}");
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM gone"), "5");
    assert!(
        history(&db, "migrate").is_empty(),
        "nothing ran, so no history"
    );

    let planned = statements(
        &db.etl(&["schema", "plan", &db.src, &db.dst, "--grants", "--policies"])
            .stdout,
    );
    let applied = db.etl(&[
        "schema",
        "apply",
        &db.src,
        &db.dst,
        "--grants",
        "--policies",
        "--max-risk",
        "very-high",
        "--yes",
    ]);
    assert_eq!(applied.code, 0, "{applied:?}");
    assert!(applied.stderr.contains("now matches"), "{applied:?}");
    let again = db.etl(&["schema", "diff", &db.src, &db.dst, "--grants", "--policies"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(schema_dump(&db.src), schema_dump(&db.dst));
    // The history holds exactly what ran, in order; the rollback undoes it.
    let files = history(&db, "migrate");
    assert_eq!(files.len(), 1);
    let ran = statements(&std::fs::read_to_string(&files[0]).unwrap());
    assert_eq!(ran, planned);
    let rollback = std::fs::read_to_string(&history(&db, "rollback")[0]).unwrap();
    assert!(rollback.contains("DROP SCHEMA sales;"), "{rollback}");
    assert!(rollback.contains("no statement undoes it"), "{rollback}");
    assert!(history(&db, "skip").is_empty());
}

#[test]
fn a_blocked_statement_is_skipped_naming_the_session_then_applied_in_a_later_pass() {
    let db = TestDb::new("schema_busy");
    for url in [&db.src, &db.dst] {
        psql(
            url,
            "CREATE TABLE busy (id int PRIMARY KEY); INSERT INTO busy VALUES (1)",
        );
    }
    psql(
        &db.src,
        "ALTER TABLE busy ADD COLUMN added text; CREATE TABLE other (id int)",
    );
    let holder = hold_lock(&db.dst, "etl-test-holder", "busy", "ACCESS SHARE");
    let pid = psql(
        &db.dst,
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'etl-test-holder'",
    );
    let args = [
        "schema",
        "apply",
        &db.src,
        &db.dst,
        "--yes",
        "--lock-timeout",
        "0.2",
        "--retries",
        "2",
    ];
    let blocked = db.etl(&[&args[..], &["--passes", "1"][..]].concat());
    assert_eq!(blocked.code, 5, "{blocked:?}");
    assert!(
        blocked
            .stderr
            .contains(&format!("pid {pid} (etl-test-holder, idle in transaction")),
        "{blocked:?}"
    );
    // The statement that was not in the way ran.
    assert_eq!(
        psql(&db.dst, "SELECT to_regclass('other') IS NOT NULL"),
        "t"
    );
    let skip = std::fs::read_to_string(&history(&db, "skip")[0]).unwrap();
    assert!(
        skip.contains("ALTER TABLE public.busy ADD COLUMN added text;"),
        "{skip}"
    );
    assert!(skip.contains(&format!("pid {pid}")), "{skip}");

    // Again, the session ending while etl waits between passes.
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let mut holder = holder;
        holder.kill().unwrap();
        holder.wait().unwrap();
    });
    let done = db.etl(&[&args[..], &["--passes", "5", "--pass-delay", "1"][..]].concat());
    release.join().unwrap();
    assert_eq!(done.code, 0, "{done:?}");
    assert!(done.stderr.contains("Skipped for now"), "{done:?}");
    assert_eq!(db.etl(&["schema", "diff", &db.src, &db.dst]).code, 0);
}

#[test]
fn a_killed_apply_resumes_and_runs_nothing_twice() {
    let db = TestDb::new("schema_kill");
    build(&db, 2_000);
    psql(&db.dst, "UPDATE big SET note = '' WHERE note IS NULL");
    let planned = statements(
        &db.etl(&["schema", "plan", &db.src, &db.dst, "--grants", "--policies"])
            .stdout,
    );
    // Killed right after the helper CHECK of a SET NOT NULL was added,
    // before it was validated: in the middle of its steps.
    let at = 1 + planned
        .iter()
        .position(|s| s.contains("ADD CONSTRAINT note_etl_not_null"))
        .expect("the plan sets big.note NOT NULL");
    let pause = format!("schema-apply:{at}");
    let (mut child, lines) = spawn_etl(
        &db,
        &[
            "schema",
            "apply",
            &db.src,
            &db.dst,
            "--grants",
            "--policies",
            "--max-risk",
            "very-high",
            "--yes",
        ],
        &[("ETL_TEST_PAUSE_AT", &pause)],
    );
    wait_for_line(&lines, "ETL_TEST_PAUSE_AT: paused");
    child.kill().unwrap();
    child.wait().unwrap();
    let first = statements(&std::fs::read_to_string(&history(&db, "migrate")[0]).unwrap());
    assert_eq!(first.len(), at);
    assert_eq!(first[..], planned[..at]);

    // What is left: the rest of the plan, made from the target as it is
    // now (the foreign key of the table created before the kill is now
    // added NOT VALID and validated, the table existing).
    let left = statements(
        &db.etl(&["schema", "plan", &db.src, &db.dst, "--grants", "--policies"])
            .stdout,
    );
    assert!(left.iter().all(|s| !first.contains(s)), "{left:?}");
    assert!(
        left.contains(&"ALTER TABLE public.big VALIDATE CONSTRAINT note_etl_not_null".to_string())
    );
    assert!(
        !left
            .iter()
            .any(|s| s.contains("ADD CONSTRAINT note_etl_not_null")),
        "{left:?}"
    );
    let resumed = db.etl(&[
        "schema",
        "apply",
        &db.src,
        &db.dst,
        "--grants",
        "--policies",
        "--max-risk",
        "very-high",
        "--yes",
    ]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(
        db.etl(&["schema", "diff", &db.src, &db.dst, "--grants", "--policies"])
            .code,
        0
    );
    let files = history(&db, "migrate");
    assert_eq!(files.len(), 2);
    let second = statements(&std::fs::read_to_string(&files[1]).unwrap());
    assert_eq!(second, left);
    let mut count: BTreeMap<&String, usize> = BTreeMap::new();
    for s in first.iter().chain(&second) {
        *count.entry(s).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ran twice: {twice:?}");
    assert_eq!(schema_dump(&db.src), schema_dump(&db.dst));
}

#[test]
fn db_kill_ends_idle_sessions_spares_superusers_and_goes_past_those_it_may_not_end() {
    // Given idle sessions of two plain roles and of a superuser, and one
    // idle in a transaction; the first role may see every session's state
    // (pg_read_all_stats) but end only its own
    let db = TestDb::new("db_kill");
    psql(
        &db.dst,
        "DROP ROLE IF EXISTS kill_a; DROP ROLE IF EXISTS kill_b; \
         CREATE ROLE kill_a LOGIN; CREATE ROLE kill_b LOGIN; GRANT pg_read_all_stats TO kill_a",
    );
    let as_role = |role: &str| db.dst.replace("://etl@", &format!("://{role}@"));
    let (other, _) = hold_open(&as_role("kill_b"), "b-idle", "SELECT 1;");
    let (su, _) = hold_open(&db.dst, "su-idle", "SELECT 1;");
    let (mine, _) = hold_open(&as_role("kill_a"), "a-idle", "SELECT 1;");
    let (mine_tx, _) = hold_open(&as_role("kill_a"), "a-tx", "BEGIN; SELECT 1;");
    let pid = |app: &str| {
        psql(
            &db.dst,
            &format!("SELECT pid FROM pg_stat_activity WHERE application_name = '{app}'"),
        )
    };
    let (other_pid, su_pid, mine_pid, tx_pid) =
        (pid("b-idle"), pid("su-idle"), pid("a-idle"), pid("a-tx"));
    let kill = |url: &str, args: &[&str]| {
        let mut all = vec!["db", "kill", url, "--older-than", "0s", "--yes"];
        all.extend_from_slice(args);
        db.etl(&all)
    };

    // When kill_a ends the idle sessions
    let out = kill(&as_role("kill_a"), &["--idle"]);

    // Then its own role's idle session ends, the superuser's is spared, the
    // other role's is refused and reported while the rest go on, and the
    // one idle in a transaction was not asked for
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "spared: pid {su_pid} (su-idle): a superuser's session (--include-superusers ends it too)"
        )),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains(&format!("pid {other_pid}: not terminated: ")),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(&format!("pid {mine_pid}: terminated")),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("1 of 2 session(s) not terminated"),
        "{out:?}"
    );
    assert!(!out.stdout.contains(&tx_pid), "{out:?}");
    assert_eq!(pid("a-idle"), "");
    assert_eq!(pid("b-idle"), other_pid);
    assert_eq!(pid("a-tx"), tx_pid);

    // When a superuser asks for both states, superusers' sessions included
    let out = kill(
        &db.dst,
        &["--idle", "--idle-in-transaction", "--include-superusers"],
    );

    // Then every one of them ends
    assert_eq!(out.code, 0, "{out:?}");
    for (app, p) in [
        ("b-idle", &other_pid),
        ("su-idle", &su_pid),
        ("a-tx", &tx_pid),
    ] {
        assert!(
            out.stdout.contains(&format!("pid {p}: terminated")),
            "{app}: {out:?}"
        );
        assert_eq!(pid(app), "", "{app}");
    }

    // And a kill without a state to end is refused by the command line
    let bare = db.etl(&["db", "kill", &db.dst, "--yes"]);
    assert_eq!(bare.code, 2, "{bare:?}");
    assert!(bare.stderr.contains("--idle-in-transaction"), "{bare:?}");
    for mut c in [other, su, mine, mine_tx] {
        let _ = (c.kill(), c.wait());
    }
}

#[test]
fn db_lists_sessions_ends_idle_transactions_but_etls_own_and_fixes_sequences() {
    let db = TestDb::new("schema_db");
    psql(
        &db.dst,
        "CREATE TABLE held (id serial PRIMARY KEY); INSERT INTO held (id) VALUES (5), (9)",
    );
    let mut idle = hold_lock(&db.dst, "test-idle", "held", "ACCESS SHARE");
    let mut own = hold_lock(&db.dst, "etl worker", "held", "ACCESS SHARE");
    let pid = |app: &str| {
        psql(
            &db.dst,
            &format!("SELECT pid FROM pg_stat_activity WHERE application_name = '{app}'"),
        )
    };
    let (idle_pid, own_pid) = (pid("test-idle"), pid("etl worker"));

    let listed = db.etl(&["db", "sessions", &db.dst, "--locks"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(
        listed.stdout.contains(&idle_pid) && listed.stdout.contains("idle in transaction"),
        "{listed:?}"
    );
    assert!(
        listed.stdout.contains("AccessShareLock on held"),
        "{listed:?}"
    );
    let json = db.etl(&["db", "sessions", &db.dst, "--json"]);
    let sessions: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert!(sessions
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["application"] == "test-idle"));

    let dry = db.etl(&[
        "db",
        "kill",
        &db.dst,
        "--idle-in-transaction",
        "--include-superusers",
        "--older-than",
        "0s",
        "--dry-run",
    ]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout
            .lines()
            .any(|l| l.starts_with(&format!("pid {idle_pid} "))),
        "{dry:?}"
    );
    assert!(
        dry.stdout.contains(&format!("spared: pid {own_pid} ")),
        "{dry:?}"
    );
    assert_eq!(pid("test-idle"), idle_pid, "--dry-run ends nothing");
    let asked = db.etl(&[
        "db",
        "kill",
        &db.dst,
        "--idle-in-transaction",
        "--include-superusers",
        "--older-than",
        "0s",
    ]);
    assert_eq!(asked.code, 2, "not a terminal, no --yes: {asked:?}");
    assert!(asked.stderr.contains("confirm with --yes"), "{asked:?}");
    let killed = db.etl(&[
        "db",
        "kill",
        &db.dst,
        "--idle-in-transaction",
        "--include-superusers",
        "--older-than",
        "0s",
        "--yes",
    ]);
    assert_eq!(killed.code, 0, "{killed:?}");
    assert!(
        killed
            .stdout
            .contains(&format!("pid {idle_pid}: terminated")),
        "{killed:?}"
    );
    assert_eq!(pid("test-idle"), "");
    assert_eq!(pid("etl worker"), own_pid, "etl's own session is spared");
    let _ = (idle.kill(), own.kill(), idle.wait(), own.wait());
    // A psql session that runs etl itself, idle in its transaction: spared.
    let script = format!(
        "SET application_name = 'caller';\nBEGIN;\nSELECT 1;\n\\! sleep 1; {} db kill {} --idle-in-transaction --include-superusers --older-than 0s --yes\nCOMMIT;\n",
        env!("CARGO_BIN_EXE_etl"),
        db.dst
    );
    let mut caller = std::process::Command::new("psql")
        .args(["-X", "-q", &db.dst])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(caller.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    let said = caller.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&said.stdout);
    assert!(
        said.contains("(caller): the session of the program that ran etl"),
        "{said}"
    );

    let dry = db.etl(&["db", "fix-sequences", &db.dst, "--dry-run"]);
    assert!(
        dry.stdout
            .contains("public.held_id_seq is at its start but public.held.id holds 9"),
        "{dry:?}"
    );
    assert_eq!(psql(&db.dst, "SELECT last_value FROM held_id_seq"), "1");
    let fixed = db.etl(&["db", "fix-sequences", &db.dst]);
    assert_eq!(fixed.code, 0, "{fixed:?}");
    assert_eq!(
        psql(&db.dst, "INSERT INTO held DEFAULT VALUES RETURNING id"),
        "10"
    );
}

#[test]
fn a_rename_given_with_rename_is_one_statement_not_a_drop_and_an_add() {
    let db = TestDb::new("schema_rename");
    psql(
        &db.dst,
        "CREATE TABLE orders (id int PRIMARY KEY, amount int CONSTRAINT amount_positive CHECK (amount > 0)); \
         CREATE INDEX orders_amount ON orders (amount); INSERT INTO orders VALUES (1, 5); \
         CREATE TABLE lines (id int, order_id int CONSTRAINT lines_order_fk REFERENCES orders (id))",
    );
    psql(
        &db.src,
        "CREATE TABLE purchases (id int CONSTRAINT orders_pkey PRIMARY KEY, total int CONSTRAINT amount_positive CHECK (total > 0)); \
         CREATE INDEX orders_amount ON purchases (total); \
         CREATE TABLE lines (id int, order_id int CONSTRAINT lines_order_fk REFERENCES purchases (id))",
    );
    let plain = db.etl(&["schema", "diff", &db.src, &db.dst]);
    assert!(plain.stdout.contains("- table public.orders"), "{plain:?}");
    let renames = [
        "--rename",
        "public.orders=purchases",
        "--rename",
        "public.purchases.amount=total",
    ];
    let diff = db.etl(&[&["schema", "diff", &db.src, &db.dst][..], &renames[..]].concat());
    assert_eq!(
        diff.stdout
            .lines()
            .filter(|l| l.starts_with(['+', '-', '~']))
            .collect::<Vec<_>>(),
        [
            "~ table public.purchases: renamed from public.orders",
            "~ column public.purchases.total: renamed from amount"
        ],
        "{diff:?}"
    );
    let plan = db.etl(&[&["schema", "plan", &db.src, &db.dst][..], &renames[..]].concat());
    assert_eq!(
        statements(&plan.stdout),
        [
            "ALTER TABLE public.orders RENAME TO purchases",
            "ALTER TABLE public.purchases RENAME COLUMN amount TO total"
        ]
    );
    assert!(plan.stdout.contains("medium rename-table"), "{plan:?}");
    let bad = db.etl(&[
        "schema",
        "diff",
        &db.src,
        &db.dst,
        "--rename",
        "public.nope=x",
    ]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("the target has no table public.nope"),
        "{bad:?}"
    );
    // Named targets, from etl-targets.toml in the working directory or
    // from --config.
    let targets = format!(
        "[targets.wanted]\nurl = \"{}\"\n[targets.staging]\nurl = \"{}\"\n",
        db.src, db.dst
    );
    std::fs::write(db.dir.path().join("etl-targets.toml"), &targets).unwrap();
    std::fs::write(db.dir.path().join("other.toml"), &targets).unwrap();
    let named = db.etl(&[&["schema", "diff", "wanted", "staging"][..], &renames[..]].concat());
    assert_eq!(named.code, 1, "{named:?}");
    assert!(
        named.stdout.contains("renamed from public.orders"),
        "{named:?}"
    );
    let other = db.etl(&[
        "schema",
        "diff",
        "wanted",
        "staging",
        "--config",
        "other.toml",
    ]);
    assert_eq!(other.code, 1, "{other:?}");
    let unknown = db.etl(&["schema", "diff", "wanted", "prod"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown
            .stderr
            .contains("etl-targets.toml has no [targets.prod]"),
        "{unknown:?}"
    );
    // Renames are medium: refused under --max-risk low unless allowed.
    let low = db.etl(
        &[
            &[
                "schema",
                "apply",
                "wanted",
                "staging",
                "--yes",
                "--max-risk",
                "low",
            ][..],
            &renames[..],
        ]
        .concat(),
    );
    assert_eq!(low.code, 4, "{low:?}");
    let allowed = [
        "--max-risk",
        "low",
        "--allow",
        "rename-table",
        "--allow",
        "rename-column",
    ];
    let applied = db.etl(
        &[
            &["schema", "apply", "wanted", "staging", "--yes"][..],
            &allowed[..],
            &renames[..],
        ]
        .concat(),
    );
    assert_eq!(applied.code, 0, "{applied:?}");
    assert_eq!(
        psql(&db.dst, "SELECT total FROM purchases"),
        "5",
        "the rows stay"
    );
    assert_eq!(db.etl(&["schema", "diff", &db.src, &db.dst]).code, 0);
}

#[test]
fn phased_type_change_enum_value_removed_and_a_backup_first() {
    let db = TestDb::new("schema_phased");
    for (url, labels) in [(&db.src, "'a', 'c'"), (&db.dst, "'a', 'b', 'c'")] {
        psql(
            url,
            &format!(
                "CREATE TYPE grade AS ENUM ({labels}); \
                 CREATE TABLE measures (id int PRIMARY KEY, v int, g grade DEFAULT 'a'); \
                 INSERT INTO measures SELECT n, n, CASE WHEN n % 2 = 0 THEN 'a' ELSE 'c' END::grade FROM generate_series(1, 25000) n"
            ),
        );
    }
    psql(&db.src, "ALTER TABLE measures ALTER COLUMN v TYPE bigint");
    psql(&db.dst, "UPDATE measures SET g = 'b' WHERE id = 7");
    let apply = [
        "schema",
        "apply",
        &db.src,
        &db.dst,
        "--phased",
        "--max-risk",
        "very-high",
        "--yes",
        "--backup",
        "backup",
    ];
    // A row holds the value removed: flagged, refused, nothing applied.
    let plan = db.etl(&["schema", "plan", &db.src, &db.dst, "--phased"]);
    assert!(
        plan.stdout
            .contains("-- FAILS: 1 rows of public.measures hold a removed value in g"),
        "{plan:?}"
    );
    for rule in [
        "very-high enum-recreate",
        "low phased-expand",
        "phased-backfill",
        "high phased-contract",
    ] {
        assert!(plan.stdout.contains(rule), "no {rule} in {plan:?}");
    }
    assert!(!plan.stdout.contains("rewrite-type-change"), "{plan:?}");
    let refused = db.etl(&apply);
    assert_eq!(refused.code, 4, "{refused:?}");

    psql(&db.dst, "UPDATE measures SET g = 'c' WHERE id = 7");
    let applied = db.etl(&apply);
    assert_eq!(applied.code, 0, "{applied:?}");
    assert_eq!(db.etl(&["schema", "diff", &db.src, &db.dst]).code, 0);
    assert_eq!(
        psql(&db.dst, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'measures'::regclass AND attname = 'v'"),
        "bigint"
    );
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*), sum(v), count(*) FILTER (WHERE g = 'c') FROM measures"
        ),
        "25000|312512500|12500"
    );
    assert_eq!(
        psql(&db.dst, "SELECT enum_range(NULL::grade)::text"),
        "{a,c}"
    );
    // The backup holds the table the high statements touch.
    let dumps: Vec<_> = std::fs::read_dir(db.dir.path().join("backup"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let listed = std::process::Command::new("pg_restore")
        .arg("-l")
        .arg(&dumps[0])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("TABLE DATA public measures"),
        "{listed:?}"
    );
}

#[test]
fn an_index_build_stopped_by_a_lock_timeout_is_dropped_and_built_again() {
    let db = TestDb::new("schema_cic");
    for url in [&db.src, &db.dst] {
        psql(url, "CREATE TABLE t (id int, v int); INSERT INTO t SELECT g, g FROM generate_series(1, 1000) g");
    }
    psql(&db.src, "CREATE INDEX t_v ON t (v)");
    // A session with an old snapshot: CREATE INDEX CONCURRENTLY waits for
    // it, and gives up at the lock timeout with the index INVALID.
    let (mut holder, said) = hold_open(
        &db.dst,
        "snapshot-holder",
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM t;",
    );
    assert_eq!(said, "1000");
    let args = [
        "schema",
        "apply",
        &db.src,
        &db.dst,
        "--yes",
        "--lock-timeout",
        "0.3",
        "--retries",
        "2",
        "--passes",
        "1",
    ];
    let blocked = db.etl(&args);
    assert_eq!(blocked.code, 5, "{blocked:?}");
    assert!(blocked.stderr.contains("snapshot-holder"), "{blocked:?}");
    // The INVALID index it left (not droppable while the snapshot lives)
    // is the next plan's to drop and build again.
    let plan = db.etl(&["schema", "plan", &db.src, &db.dst]);
    assert!(
        plan.stdout
            .contains("INVALID (an interrupted CREATE INDEX CONCURRENTLY)"),
        "{plan:?}"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let done = db.etl(&args);
    assert_eq!(done.code, 0, "{done:?}");
    assert_eq!(
        psql(
            &db.dst,
            "SELECT count(*) FROM pg_index WHERE NOT indisvalid"
        ),
        "0"
    );
    assert_eq!(db.etl(&["schema", "diff", &db.src, &db.dst]).code, 0);
}
