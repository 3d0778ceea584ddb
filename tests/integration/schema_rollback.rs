//! `etl schema rollback FILE TARGET`: a rollback file that apply wrote,
//! run through the same machinery, what cannot be undone named first.

use crate::schema::{apply_all, history, schema_dump};
use crate::support::{psql, TestDb};

#[test]
fn a_rollback_file_undoes_the_apply_and_names_what_it_cannot_undo_before_running() {
    // Given an apply that added a column, a table and an index, and
    // dropped a table (which nothing undoes)
    let db = TestDb::new("schema_rollback");
    psql(
        &db.dst,
        "CREATE TABLE public.t (id int PRIMARY KEY, v int); CREATE TABLE public.gone (id int); \
         INSERT INTO public.t SELECT g, g FROM generate_series(1, 100) g",
    );
    let before = schema_dump(&db.dst);
    psql(
        &db.src,
        "CREATE TABLE public.t (id int PRIMARY KEY, v int, w text); CREATE INDEX t_v ON public.t (v); \
         CREATE TABLE public.n (id int)",
    );
    let apply = apply_all(&db);
    assert_eq!(apply.code, 0, "{apply:?}");
    let files = history(&db, "rollback");
    assert_eq!(files.len(), 1, "{files:?}");
    let file = files[0].to_str().unwrap().to_string();

    // When it is rolled back without --yes (no terminal), then with it
    let unconfirmed = db.etl(&["schema", "rollback", &file, &db.dst]);
    let rolled = db.etl(&["schema", "rollback", &file, &db.dst, "--yes"]);

    // Then the dropped table is named before anything runs, each time
    for out in [&unconfirmed, &rolled] {
        assert!(
            out.stderr
                .contains("1 statement of that apply no statement undoes")
                && out.stderr.contains("drop-table: no statement undoes it")
                && out.stderr.contains("DROP TABLE public.gone"),
            "{out:?}"
        );
    }
    assert_ne!(unconfirmed.code, 0, "{unconfirmed:?}");
    assert!(
        unconfirmed.stderr.contains("confirm with --yes"),
        "{unconfirmed:?}"
    );
    // And the rest is undone, with its own history: the target is as
    // before the apply but for the dropped table, the rows kept
    assert_eq!(rolled.code, 1, "{rolled:?}");
    assert!(
        rolled.stdout.contains("-- etl schema rollback "),
        "{rolled:?}"
    );
    assert!(
        rolled
            .stdout
            .contains("ALTER TABLE public.t DROP COLUMN w;"),
        "{rolled:?}"
    );
    psql(&db.dst, "CREATE TABLE public.gone (id int)");
    assert_eq!(schema_dump(&db.dst), before);
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM public.t"), "100");
    assert_eq!(history(&db, "migrate").len(), 2);

    // And a file that is not a rollback file is refused, naming it
    let wrong = db.dir.path().join("plan.sql");
    std::fs::write(&wrong, "-- undoes [x] add-column\nSELECT 1;\n").unwrap();
    let refused = db.etl(&[
        "schema",
        "rollback",
        wrong.to_str().unwrap(),
        &db.dst,
        "--yes",
    ]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("plan.sql line 1: expected"),
        "{refused:?}"
    );
}
