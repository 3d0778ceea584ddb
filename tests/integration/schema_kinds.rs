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
fn a_column_dropped_from_a_parent_stays_in_a_child_that_keeps_it() {
    // Given a parent losing two columns: `e` kept by child `a` (declared
    // there in FROM) and dropped from child `b`, `f` dropped everywhere
    let db = TestDb::new("schema_inherit_drop");
    psql(
        &db.dst,
        "CREATE TABLE public.base (created_at timestamp, e int, f int); \
         CREATE TABLE public.a (a1 int) INHERITS (public.base); \
         CREATE TABLE public.b (b1 int) INHERITS (public.base); \
         INSERT INTO public.a VALUES (now(), 7, 8, 1)",
    );
    psql(
        &db.src,
        "CREATE TABLE public.base (created_at timestamp); \
         CREATE TABLE public.a (e int, a1 int) INHERITS (public.base); \
         CREATE TABLE public.b (b1 int) INHERITS (public.base)",
    );

    // When applied
    let apply = apply_all(&db);

    // Then the parent drops `e` ONLY (the child keeps it and its value as
    // its own), `b` drops it after, and `f` goes with the parent
    assert_eq!(apply.code, 0, "{apply:?}");
    assert!(
        apply
            .stdout
            .contains("ALTER TABLE ONLY public.base DROP COLUMN e;")
            && apply
                .stdout
                .contains("ALTER TABLE public.base DROP COLUMN f;")
            && !apply.stdout.contains("ALTER TABLE public.a DROP COLUMN"),
        "{apply:?}"
    );
    assert_equal_schemas(&db);
    assert_eq!(psql(&db.dst, "SELECT e FROM public.a"), "7");
}

#[test]
fn new_serials_keys_and_the_foreign_keys_on_them_come_in_the_order_they_need() {
    // Given FROM with a new table with a serial key, a new primary key on
    // an old table that a new foreign key references, a view dropped
    // from a column that goes
    let db = TestDb::new("schema_serial_order");
    psql(
        &db.dst,
        "CREATE TABLE public.products (product_no int, name text, old int); \
         CREATE TABLE public.items (id int, product_no int); \
         CREATE VIEW public.v AS SELECT * FROM public.products",
    );
    psql(
        &db.src,
        "CREATE TABLE public.products (product_no serial PRIMARY KEY, name text); \
         CREATE TABLE public.items (id int, product_no int REFERENCES public.products); \
         CREATE TABLE public.example (id serial PRIMARY KEY, name text NOT NULL); \
         CREATE VIEW public.v AS SELECT 2 AS a",
    );

    // When applied
    let apply = apply_all(&db);

    // Then every statement runs (the sequence before the table whose
    // default uses it, OWNED BY after it; the view dropped before the
    // column it read; the key before the foreign key on it), no cycle
    assert_eq!(apply.code, 0, "{apply:?}");
    assert!(!apply.stderr.contains("cycle"), "{apply:?}");
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

#[test]
fn collations_are_made_before_the_columns_that_use_them_and_dropped_after() {
    // Given a collation only TO has, used by a column that moves to one
    // only FROM has (ICU), and a new column using it
    let db = TestDb::new("schema_collations");
    psql(
        &db.dst,
        "CREATE COLLATION public.posix FROM \"POSIX\"; \
         CREATE TABLE public.t (a text, b text COLLATE public.posix); \
         CREATE INDEX t_b ON public.t (b); \
         INSERT INTO public.t VALUES ('x', 'y')",
    );
    psql(
        &db.src,
        "CREATE COLLATION public.num (provider = icu, locale = 'en-u-kn-true'); \
         CREATE TABLE public.t (a text, b text COLLATE public.num, c text COLLATE public.num); \
         CREATE INDEX t_b ON public.t (b)",
    );

    // When diffed and applied
    let diff = db.etl(&["schema", "diff", &db.src, &db.dst]);
    let apply = apply_all(&db);

    // Then each collation is a difference of its own, made first and
    // dropped once no column uses it
    assert!(
        diff.stdout.contains("+ collation public.num")
            && diff.stdout.contains("- collation public.posix"),
        "{diff:?}"
    );
    assert_eq!(apply.code, 0, "{apply:?}");
    let at = |sql: &str| {
        apply
            .stdout
            .find(sql)
            .unwrap_or_else(|| panic!("{sql}: {apply:?}"))
    };
    let made = at("CREATE COLLATION public.num (provider = icu, locale = 'en-u-kn-true');");
    let moved = at("ALTER TABLE public.t ALTER COLUMN b TYPE text COLLATE public.num");
    let dropped = at("DROP COLLATION public.posix;");
    assert!(made < moved && moved < dropped, "{apply:?}");
    assert!(
        apply.stdout.contains("] medium drop-collation:"),
        "{apply:?}"
    );
    // And moving the column is no rewrite, but its index is built again
    assert!(
        apply.stdout.contains(" collation-change-reindex: ")
            && apply
                .stdout
                .contains("its indexes on the column are built again under the lock"),
        "{apply:?}"
    );
    assert_equal_schemas(&db);
    assert_eq!(psql(&db.dst, "SELECT b FROM public.t"), "y");
}

#[test]
fn aggregates_operators_and_default_privileges_that_differ_are_named_never_skipped() {
    // Given FROM with an aggregate, an operator, and default privileges that TO lacks or defines otherwise,
    // beside one table both have alike
    let db = TestDb::new("schema_unread");
    let common = "CREATE TABLE public.t (id int); \
         CREATE FUNCTION public.add2(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b'; \
         CREATE FUNCTION public.lt2(a int, b int) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT a < b'";
    psql(
        &db.src,
        &format!(
            "{common}; CREATE AGGREGATE public.total(int) (sfunc = public.add2, stype = int, initcond = '0'); \
             CREATE OPERATOR public.<<< (leftarg = int, rightarg = int, function = public.lt2); \
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC"
        ),
    );
    psql(
        &db.dst,
        &format!(
            "{common}; CREATE AGGREGATE public.total(int) (sfunc = public.add2, stype = int, initcond = '1')"
        ),
    );

    // When diffed and planned
    let diff = db.etl(&["schema", "diff", &db.src, &db.dst]);
    let plan = db.etl(&["schema", "plan", &db.src, &db.dst]);

    // Then the diff does not say they match: it names each one, and what to do
    assert_eq!(diff.code, 1, "{diff:?}");
    for line in [
        "0 differences (",
        "3 of the kinds etl schema does not make match (aggregates, operators and their classes and families, default privileges, owners) differ; make them by hand:",
        "  ~ aggregate public.total(integer)",
        "  + operator public.<<<(integer,integer)",
        "  + default privileges of ",
    ] {
        assert!(diff.stdout.contains(line), "{line}: {diff:?}");
    }
    assert!(!diff.stdout.contains("matches"), "{diff:?}");
    // And the plan's header lists the kinds not made to match and each one that differs
    assert_eq!(plan.code, 0, "{plan:?}");
    for line in [
        "-- not made to match: aggregates, operators and their classes and families, default privileges, owners, grants and row-level security (--grants, --policies compare them)",
        "-- of which these differ (make them by hand):",
        "--   + operator public.<<<(integer,integer)",
        "--   ~ aggregate public.total(integer)",
    ] {
        assert!(plan.stdout.contains(line), "{line}: {plan:?}");
    }
    // And an apply, with nothing of its own to do, does not say they match
    // without naming them
    let apply = apply_all(&db);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert!(
        apply.stdout.contains(": nothing to apply, but for objects of the kinds etl does not make (aggregates, operators and their classes and families, default privileges, owners), which differ; make them by hand:\n  ")
            && apply.stdout.contains("  ~ aggregate public.total(integer)"),
        "{apply:?}"
    );
}

#[test]
fn an_extension_update_runs_and_a_downgrade_is_said_as_such_before_anything_runs() {
    // Given citext older on TO than on FROM (its update scripts reach the
    // newer version), and hstore newer on TO than on FROM
    let db = TestDb::new("schema_ext_versions");
    psql(
        &db.src,
        "CREATE EXTENSION citext; CREATE EXTENSION hstore VERSION '1.4'",
    );
    psql(
        &db.dst,
        "CREATE EXTENSION citext VERSION '1.4'; CREATE EXTENSION hstore",
    );
    let version = |url: &str, ext: &str| {
        psql(
            url,
            &format!("SELECT extversion FROM pg_extension WHERE extname = '{ext}'"),
        )
    };

    // When planned and applied
    let plan = db.etl(&["schema", "plan", &db.src, &db.dst]);
    let refused = apply_all(&db);

    // Then the downgrade is marked FAILS, saying why and what to do, and
    // nothing runs
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.contains(&format!(
            "-- FAILS: no update script on TO's server goes from hstore {} to 1.4 (a downgrade: PostgreSQL has none); it reaches no other version: install hstore 1.4's files there, or drop the extension",
            version(&db.dst, "hstore")
        )),
        "{plan:?}"
    );
    assert!(
        plan.stdout.contains("ALTER EXTENSION citext UPDATE TO '"),
        "{plan:?}"
    );
    assert_eq!(refused.code, 4, "{refused:?}");
    assert_eq!(version(&db.dst, "citext"), "1.4");

    // And with hstore made alike by hand, the update runs and the two are equal
    psql(
        &db.dst,
        "DROP EXTENSION hstore; CREATE EXTENSION hstore VERSION '1.4'",
    );
    let apply = apply_all(&db);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(version(&db.dst, "citext"), version(&db.src, "citext"));
    let again = db.etl(&["schema", "diff", &db.src, &db.dst]);
    assert_eq!(again.code, 0, "{again:?}");
}

#[test]
fn a_trigger_on_a_view_is_made_with_the_view_and_again_when_the_view_is_made_again() {
    // Given a view with an INSTEAD OF trigger on both sides, over a table
    // whose column changes type on FROM, and a second view whose trigger
    // only FROM has
    let db = TestDb::new("schema_view_trigger");
    let schema = |v_type: &str, extra: &str| {
        format!(
            "CREATE TABLE public.t (id int, v {v_type}); \
             CREATE FUNCTION public.t_ins() RETURNS trigger LANGUAGE plpgsql AS \
               'BEGIN INSERT INTO public.t VALUES (NEW.id, NEW.v); RETURN NEW; END'; \
             CREATE VIEW public.w AS SELECT id, v FROM public.t; \
             CREATE TRIGGER w_ins INSTEAD OF INSERT ON public.w FOR EACH ROW EXECUTE FUNCTION public.t_ins(); \
             CREATE VIEW public.w2 AS SELECT id FROM public.t; {extra}"
        )
    };
    psql(
        &db.src,
        &schema(
            "bigint",
            "CREATE TRIGGER w2_ins INSTEAD OF INSERT ON public.w2 FOR EACH ROW EXECUTE FUNCTION public.t_ins();",
        ),
    );
    psql(&db.dst, &schema("int", ""));
    psql(&db.dst, "INSERT INTO public.t VALUES (1, 1)");

    // When applied
    let apply = apply_all(&db);

    // Then both triggers are there, the schemas are equal, and an insert
    // through the view goes through its trigger
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_equal_schemas(&db);
    psql(&db.dst, "INSERT INTO public.w VALUES (2, 2)");
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM public.t"), "2");
}

#[test]
fn a_table_replaced_by_a_view_of_its_name_takes_the_views_on_it_along() {
    // Given TO with a table x.data that two views read (one on the other),
    // and FROM where x.data is a view over a new table with those views
    // on it unchanged
    let db = TestDb::new("schema_table_to_view");
    let views = "CREATE VIEW x.recent AS SELECT id, v FROM x.data WHERE id > 10; \
                 CREATE VIEW x.recent_ids AS SELECT id FROM x.recent; \
                 COMMENT ON VIEW x.recent IS 'the last ones'";
    psql(
        &db.src,
        &format!(
            "CREATE SCHEMA x; CREATE TABLE x.data_v2 (id int PRIMARY KEY, v text, extra int); \
             CREATE VIEW x.data AS SELECT id, v FROM x.data_v2; {views}"
        ),
    );
    psql(
        &db.dst,
        &format!(
            "CREATE SCHEMA x; CREATE TABLE x.data (id int PRIMARY KEY, v text); \
             INSERT INTO x.data SELECT g, 'v' || g FROM generate_series(1, 20) g; {views}"
        ),
    );

    // When applied
    let apply = apply_all(&db);

    // Then the views on it are dropped first and made again after, whole
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_equal_schemas(&db);
}

#[test]
fn a_view_or_matview_made_again_for_its_new_columns_comes_back_with_its_members() {
    // Given a materialized view with a unique index and a comment, and a
    // view with a comment and an INSTEAD OF trigger, both of whose
    // columns change on FROM (so neither can be replaced in place)
    let db = TestDb::new("schema_view_members");
    let schema = |m_cols: &str, v_cols: &str| {
        format!(
            "CREATE TABLE public.t (id int PRIMARY KEY, v int, w text); \
             CREATE FUNCTION public.t_ins() RETURNS trigger LANGUAGE plpgsql AS \
               'BEGIN INSERT INTO public.t (id) VALUES (NEW.id); RETURN NEW; END'; \
             CREATE MATERIALIZED VIEW public.m AS SELECT {m_cols} FROM public.t; \
             CREATE UNIQUE INDEX m_id ON public.m (id); \
             COMMENT ON MATERIALIZED VIEW public.m IS 'for reports'; \
             CREATE VIEW public.w AS SELECT {v_cols} FROM public.t; \
             COMMENT ON VIEW public.w IS 'for the app'; \
             CREATE TRIGGER w_ins INSTEAD OF INSERT ON public.w FOR EACH ROW EXECUTE FUNCTION public.t_ins()"
        )
    };
    psql(&db.src, &schema("id, v, w", "id, w"));
    psql(&db.dst, &schema("id, v", "id, v"));

    // When applied
    let apply = apply_all(&db);

    // Then both are made again whole: index, comments and trigger back
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_equal_schemas(&db);
}
