//! Running a long migration by hand: one key at a time on every command,
//! the cutoff set by hand, checks on the loaded data, ANALYZE after the
//! load.

use crate::support::{assert_copied, psql, repo, TestDb};

fn ships(db: &TestDb, table: &str) -> String {
    psql(
        &db.dst,
        &format!("SELECT string_agg(DISTINCT ship_id, ',' ORDER BY ship_id) FROM {table}"),
    )
}

#[test]
fn one_key_at_a_time_on_plan_run_verify_and_status() {
    // Given three ships over two days
    let db = TestDb::new("one_key");
    db.load_timeseries(3, 2, 2 * 1440);
    let p = repo().join("pipelines/ships-copy.toml");
    let p = p.to_str().unwrap();

    // When planned for one ship: only its chunks
    let plan = db.etl(&["plan", p, "--key", "IMO9900002"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout
            .starts_with("Pipeline ships-copy: 2 chunks, 5,760 rows\n"),
        "{plan:?}"
    );
    assert!(!plan.stdout.contains("IMO9900001"), "{plan:?}");

    // When two ships are run: only their rows land
    let run = db.etl(&["run", p, "--key", "IMO9900002", "--key", "IMO9900003"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        ships(&db, "tenant.tbl_data_timeseries"),
        "IMO9900002,IMO9900003"
    );

    // Then status for one ship shows that ship alone, done
    let status = db.etl(&["status", p, "--key", "IMO9900003"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("IMO9900003"), "{status:?}");
    assert!(!status.stdout.contains("IMO9900002"), "{status:?}");

    // And verify finds a loaded ship equal and the one not loaded missing
    let equal = db.etl(&["verify", p, "--key", "IMO9900002"]);
    assert_eq!(equal.code, 0, "{equal:?}");
    assert!(equal.stdout.contains("Verified 2 chunks"), "{equal:?}");
    let missing = db.etl(&["verify", p, "--key", "IMO9900001"]);
    assert_eq!(missing.code, 1, "{missing:?}");

    // When the whole pipeline runs: the loaded ships are skipped, the last
    // one lands, and the target equals the source
    let rest = db.etl(&["run", p]);
    assert_eq!(rest.code, 0, "{rest:?}");
    assert!(
        rest.stdout
            .contains("skipped      4 chunks done by an earlier run"),
        "{rest:?}"
    );
    assert_copied(&db);

    // And --key is refused where it cannot mean what it says
    let follow = db.etl(&["run", p, "--key", "IMO9900001", "--follow"]);
    assert_eq!(follow.code, 2, "{follow:?}");
    assert!(follow.stderr.contains("--key with --follow"), "{follow:?}");
    let text = std::fs::read_to_string(p)
        .unwrap()
        .replace("key_column = \"ship_id\"\n", "");
    let no_key = db.pipeline("no-key.toml", &text);
    let out = db.etl(&["plan", no_key.to_str().unwrap(), "--key", "IMO9900001"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("--key picks values of [chunks] key_column, and"),
        "{out:?}"
    );
}
