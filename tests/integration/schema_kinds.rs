//! `etl schema` on each kind of change, one pair of schemas written for
//! each test: applied, then a second diff empty and `pg_dump
//! --schema-only` of both sides equal (issue 32's kinds).

use crate::schema::{apply_all, assert_equal_schemas};
use crate::support::{psql, TestDb};

#[test]
fn a_table_never_analyzed_reads_rows_unknown_not_zero() {
    // Given a target table with rows the planner has not counted
    // (autovacuum off, no ANALYZE: reltuples = -1), and one to drop
    let db = TestDb::new("schema_unanalyzed");
    psql(&db.src, "CREATE TABLE public.u (id int, v bigint)");
    psql(
        &db.dst,
        "CREATE TABLE public.u (id int, v int) WITH (autovacuum_enabled = off); \
         INSERT INTO public.u SELECT g, g FROM generate_series(1, 5000) g; \
         CREATE TABLE public.gone (id int) WITH (autovacuum_enabled = off); \
         INSERT INTO public.gone SELECT generate_series(1, 10)",
    );

    // When planned
    let plan = db.etl(&["schema", "plan", &db.src, &db.dst]);

    // Then its size is said unknown, never "~0 rows", and graded by bytes
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(!plan.stdout.contains("~0 rows"), "{plan:?}");
    assert!(
        plan.stdout
            .contains("public.u: rows unknown (never analyzed; graded by its size),"),
        "{plan:?}"
    );
    assert!(
        plan.stdout
            .contains("drops the table and its rows (how many is unknown: never analyzed)"),
        "{plan:?}"
    );
}

#[test]
fn a_keys_deferral_changes_in_place_and_a_unique_key_keeps_it() {
    // Given a foreign key and a unique key made DEFERRABLE on FROM only
    let db = TestDb::new("schema_deferral");
    let tables = |deferral: &str| {
        format!(
            "CREATE TABLE public.p (id int PRIMARY KEY); \
             CREATE TABLE public.c (id int, pid int, \
               CONSTRAINT c_fk FOREIGN KEY (pid) REFERENCES public.p{fk}, \
               CONSTRAINT c_u UNIQUE (id){u}); \
             INSERT INTO public.p VALUES (1); INSERT INTO public.c VALUES (1, 1)",
            fk = if deferral.is_empty() {
                ""
            } else {
                " DEFERRABLE INITIALLY DEFERRED"
            },
            u = deferral
        )
    };
    psql(&db.src, &tables(" DEFERRABLE"));
    psql(&db.dst, &tables(""));

    // When planned and applied
    let plan = db.etl(&["schema", "plan", &db.src, &db.dst]);
    let apply = db.etl(&[
        "schema",
        "apply",
        &db.src,
        &db.dst,
        "--max-risk",
        "medium",
        "--yes",
    ]);

    // Then the foreign key's deferral is one brief ALTER CONSTRAINT (no
    // drop, no scan), the unique key comes back DEFERRABLE, and the two
    // schemas are equal
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout
            .contains("ALTER TABLE public.c ALTER CONSTRAINT c_fk DEFERRABLE INITIALLY DEFERRED;")
            && !plan.stdout.contains("DROP CONSTRAINT c_fk"),
        "{plan:?}"
    );
    assert!(
        plan.stdout
            .contains("ADD CONSTRAINT c_u UNIQUE USING INDEX c_u DEFERRABLE;"),
        "{plan:?}"
    );
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_equal_schemas(&db);
}

#[test]
fn a_sequence_a_default_still_uses_is_dropped_after_the_default() {
    // Given a target whose column default draws from a sequence FROM lacks
    let db = TestDb::new("schema_seq_default");
    psql(&db.src, "CREATE TABLE public.t (id int, v int)");
    psql(
        &db.dst,
        "CREATE SEQUENCE public.s; CREATE TABLE public.t (id int DEFAULT nextval('public.s'), v int); \
         INSERT INTO public.t (v) VALUES (1)",
    );

    // When applied
    let apply = apply_all(&db);

    // Then the default goes first and the sequence after: equal schemas
    assert_eq!(apply.code, 0, "{apply:?}");
    let plan = &apply.stdout;
    let (default, sequence) = (
        plan.find("ALTER TABLE public.t ALTER COLUMN id DROP DEFAULT")
            .unwrap(),
        plan.find("DROP SEQUENCE public.s").unwrap(),
    );
    assert!(default < sequence, "{plan}");
    assert_equal_schemas(&db);
}

#[test]
fn a_column_moved_to_another_enum_goes_through_text_with_its_default() {
    // Given a column of enum a on the target that FROM has of enum b
    let db = TestDb::new("schema_enum_move");
    let types = "CREATE TYPE public.a AS ENUM ('x', 'y', 'w'); CREATE TYPE public.b AS ENUM ('x', 'y', 'z');";
    psql(
        &db.src,
        &format!("{types} CREATE TABLE public.t (id int, m public.b DEFAULT 'x')"),
    );
    psql(
        &db.dst,
        &format!(
            "{types} CREATE TABLE public.t (id int, m public.a DEFAULT 'x'); \
             INSERT INTO public.t VALUES (1, 'y'), (2, 'w'), (3, NULL)"
        ),
    );

    // When planned while a value has no place in b
    let plan = db.etl(&["schema", "plan", &db.src, &db.dst]);

    // Then the change casts through text, and the value is counted
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout
            .contains("ALTER TABLE public.t ALTER COLUMN m TYPE public.b USING m::text::public.b;")
            && plan
                .stdout
                .contains("-- FAILS: 1 values of public.t.m::text do not convert to public.b"),
        "{plan:?}"
    );

    // When the value is changed and the plan applied: equal schemas, the
    // values and the default moved
    psql(&db.dst, "UPDATE public.t SET m = 'x' WHERE id = 2");
    let apply = apply_all(&db);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_equal_schemas(&db);
    assert_eq!(
        psql(
            &db.dst,
            "SELECT string_agg(coalesce(m::text, '-'), ',' ORDER BY id) FROM public.t"
        ),
        "y,x,-"
    );
}

#[test]
fn a_column_added_to_a_parent_reaches_its_children_through_it() {
    // Given a parent with a child and a grandchild, FROM's parent with a
    // new column
    let db = TestDb::new("schema_inherit_add");
    let tables = |extra: &str| {
        format!(
            "CREATE TABLE public.p (id int{extra}); CREATE TABLE public.c (bark text) INHERITS (public.p); \
             CREATE TABLE public.g (x int) INHERITS (public.c)"
        )
    };
    psql(&db.src, &tables(", extra text"));
    psql(&db.dst, &tables(""));

    // When applied
    let apply = apply_all(&db);

    // Then one ADD COLUMN on the parent, none on the children, and the
    // children inherit it as FROM's do
    assert_eq!(apply.code, 0, "{apply:?}");
    assert!(
        apply
            .stdout
            .contains("ALTER TABLE public.p ADD COLUMN extra text;")
            && !apply.stdout.contains("ALTER TABLE public.c ADD COLUMN")
            && !apply.stdout.contains("ALTER TABLE public.g ADD COLUMN"),
        "{apply:?}"
    );
    assert_equal_schemas(&db);
}

#[test]
fn a_materialized_view_made_again_keeps_its_index_and_comment() {
    // Given a materialized view with a unique index and a comment over a
    // column whose type changes
    let db = TestDb::new("schema_matview_again");
    let tables = |ty: &str| {
        format!(
            "CREATE TABLE public.t (id int PRIMARY KEY, v {ty}); INSERT INTO public.t VALUES (1, 1); \
             CREATE MATERIALIZED VIEW public.mv AS SELECT id, v FROM public.t; \
             CREATE UNIQUE INDEX mv_id ON public.mv (id); \
             COMMENT ON MATERIALIZED VIEW public.mv IS 'per id'; COMMENT ON COLUMN public.mv.v IS 'the value'"
        )
    };
    psql(&db.src, &tables("bigint"));
    psql(&db.dst, &tables("int"));

    // When applied
    let apply = apply_all(&db);

    // Then the view is dropped, made again, and so are its index and
    // comments: a second diff finds nothing
    assert_eq!(apply.code, 0, "{apply:?}");
    assert!(
        apply.stdout.contains("DROP MATERIALIZED VIEW public.mv;")
            && apply
                .stdout
                .contains("CREATE UNIQUE INDEX CONCURRENTLY mv_id ON public.mv"),
        "{apply:?}"
    );
    assert_equal_schemas(&db);
}

#[test]
fn new_tables_with_inheritance_children_and_row_security_are_made_whole() {
    // Given FROM with a parent and its child, and a table with a policy
    // and row-level security on; TO with none of them
    let db = TestDb::new("schema_new_whole");
    psql(
        &db.src,
        "CREATE TABLE public.p (id int PRIMARY KEY, v int); CREATE TABLE public.c (bark text) INHERITS (public.p); \
         CREATE TABLE public.r (id int, owner text); ALTER TABLE public.r ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY r_own ON public.r USING (owner = current_user)",
    );

    // When applied with the policies compared
    let apply = db.etl(&[
        "schema",
        "apply",
        &db.src,
        &db.dst,
        "--policies",
        "--max-risk",
        "medium",
        "--yes",
    ]);

    // Then the child declares only its own column, security comes on after
    // the policy (low: a new table), and the schemas are equal
    assert_eq!(apply.code, 0, "{apply:?}");
    let plan = &apply.stdout;
    assert!(
        plan.contains("CREATE TABLE public.c (bark text) INHERITS (public.p);"),
        "{plan}"
    );
    let (policy, security) = (
        plan.find("CREATE POLICY r_own ON public.r").unwrap(),
        plan.find("ALTER TABLE public.r ENABLE ROW LEVEL SECURITY")
            .unwrap(),
    );
    assert!(policy < security, "{plan}");
    assert!(plan.contains("] low row-security:"), "{plan}");
    let again = db.etl(&["schema", "diff", &db.src, &db.dst, "--policies"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_equal_schemas(&db);
}
