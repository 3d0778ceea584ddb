//! A table whose partitioning changes (plain to partitioned, back, or by
//! another key), which PostgreSQL cannot do in place, done as a guided
//! change while the table stays in use:
//!
//! 1. expand: the new table beside the old one (`t__etl_new`, FROM's
//!    definition with its partitions, keys, indexes and foreign keys, the
//!    index names suffixed until the swap), and a trigger on the old table
//!    that mirrors every row written from now on into it (by FROM's key);
//! 2. backfill: the rows moved in batches of 128 heap blocks, each batch
//!    committed, its source rows locked `FOR SHARE` until then, so a
//!    concurrent UPDATE or DELETE waits for the batch and its trigger then
//!    finds the row moved (read and write in one statement on the server:
//!    a reader session and a writer session could not hold those locks
//!    across). Rows a writer holds locked are skipped (`SKIP LOCKED`:
//!    waiting on a writer whose trigger waits on the batch would
//!    deadlock); what is there already is kept (`ON CONFLICT DO
//!    NOTHING`). Then both tables are compared, count and checksum of
//!    every row, in one statement's snapshot (the trigger writes both in
//!    the writer's transaction, so any snapshot sees them equal); while
//!    they differ (rows skipped), another pass, up to 5. Each batch
//!    records where the move is (`etl.repartition_move`, in the batch's
//!    transaction): a move stopped (a lost session, a kill) goes on from
//!    the next batch when the backfill runs again;
//! 3. contract: the names swapped in one short transaction (the old table
//!    becomes `t__etl_old`, its keys and indexes suffixed), then the old
//!    table dropped.
//!
//! What this cannot keep whole is refused before anything runs (FAILS):
//! no primary key wanted, other column changes, identity or generated
//! columns, views or other tables' foreign keys on it, its own triggers,
//! row-level security, inheritance, partitions of partitions, partition
//! names in use. The new table gets the old one's owner and grants.

use super::super::{Effect, Lock};
use super::tables::create_table;
use super::{split_member, views_over, Rules};
use crate::catalog::Table;
use crate::diff::{unquote, Change, Difference};
use crate::{Key, Kind, Risk};

/// Heap blocks per batch of the move (1 MiB).
const BATCH_BLOCKS: u32 = 128;
/// Passes over the table before the move gives up on rows that stay
/// locked by writers.
const PASSES: u32 = 5;

/// Why `n` cannot be repartitioned by etl, or nothing.
pub(super) fn refusal(rules: &Rules<'_>, n: &str) -> Option<String> {
    let (want, have) = (&rules.from.tables[n], &rules.to.tables[n]);
    if !want.constraints.values().any(|c| c.kind == 'p') {
        return Some(format!("{n} has no primary key in FROM: etl keeps the rows written during the move in step by it; give the new table one"));
    }
    let shape = |t: &Table| -> Vec<(String, String)> {
        t.columns
            .iter()
            .map(|c| (c.name.clone(), c.ty.clone()))
            .collect()
    };
    if shape(want) != shape(have) {
        return Some(format!("{n}'s columns change too: apply the column changes first (its partitioning as it is), then the repartition"));
    }
    if let Some(c) = have
        .columns
        .iter()
        .find(|c| c.identity.is_some() || c.generated.is_some())
    {
        return Some(format!("{n}.{} is an identity or generated column: the rows moved would get new values; make it a plain column with a default first", c.name));
    }
    if let Some(why) = in_the_way(rules, n) {
        return Some(why);
    }
    let inherited = rules
        .to
        .tables
        .values()
        .any(|t| t.inherits.iter().any(|p| p == n));
    if !have.inherits.is_empty() || inherited || want.partition_of.is_some() {
        return Some(format!(
            "{n} inherits, is inherited from or is a partition: not repartitioned by etl"
        ));
    }
    for p in partitions(rules, n) {
        if p.partitioned_by.is_some() {
            return Some(format!(
                "{} is partitioned itself: etl repartitions one level",
                p.name
            ));
        }
        if rules.to.tables.contains_key(&p.name) || rules.to.indexes.contains_key(&p.name) {
            return Some(format!(
                "{} is a new partition whose name the target already uses: rename that first",
                p.name
            ));
        }
    }
    None
}

/// What stands on `n` in the target and would not follow it to the new
/// table: views, other tables' foreign keys, triggers, row-level security.
fn in_the_way(rules: &Rules<'_>, n: &str) -> Option<String> {
    let have = &rules.to.tables[n];
    let views = views_over(rules.to, vec![n.to_string()]);
    if !views.is_empty() {
        return Some(format!(
            "views stand on {n} ({}): drop them, repartition, make them again",
            views.join(", ")
        ));
    }
    let referencing: Vec<String> = rules
        .to
        .tables
        .values()
        .filter(|t| t.name != n)
        .flat_map(|t| t.constraints.values().map(move |c| (t, c)))
        .filter(|(_, c)| c.kind == 'f' && c.references.as_ref().is_some_and(|(r, _)| r == n))
        .map(|(t, c)| format!("{}.{}", t.name, c.name))
        .collect();
    if !referencing.is_empty() {
        return Some(format!(
            "foreign keys of other tables name {n} ({}): drop them, repartition, add them again",
            referencing.join(", ")
        ));
    }
    let triggers: Vec<&str> = rules
        .to
        .triggers
        .values()
        .filter(|t| t.table == n)
        .map(|t| t.name.as_str())
        .collect();
    if !triggers.is_empty() {
        return Some(format!(
            "{n} has triggers ({}): drop them, repartition, make them again",
            triggers.join(", ")
        ));
    }
    if have.row_security.is_some() || rules.to.policies.values().any(|p| p.table == n) {
        return Some(format!("{n} has row-level security: its policies would not follow the rows; drop them, repartition, make them again"));
    }
    None
}

/// FROM's partitions of `n`.
fn partitions<'c>(rules: &Rules<'c>, n: &str) -> Vec<&'c Table> {
    rules
        .from
        .tables
        .values()
        .filter(|t| t.partition_of.as_ref().is_some_and(|(p, _)| p == n))
        .collect()
}

/// `schema."bare<suffix>"` for a qualified name.
fn suffixed(name: &str, suffix: &str) -> String {
    let (schema, bare) = split_member(name);
    let bare = etl_base::sql::ident(&format!("{}{suffix}", unquote(bare)));
    match schema.is_empty() {
        true => bare,
        false => format!("{schema}.{bare}"),
    }
}

/// The bare name of a member (`"t_pkey"` of `public."t_pkey"`), suffixed.
fn bare_suffixed(name: &str, suffix: &str) -> String {
    let bare = split_member(name).1;
    etl_base::sql::ident(&format!(
        "{}{suffix}",
        unquote(if bare.is_empty() { name } else { bare })
    ))
}

impl Rules<'_> {
    /// Whether difference `d` belongs to a table repartitioned by
    /// [`Rules::repartition`], which makes it whole itself: the table's
    /// partitions, keys and indexes, on either side.
    pub(super) fn in_repartition(&self, d: &Difference) -> bool {
        let of = |table: &str| {
            self.repartitioned.iter().any(|n| {
                n == table
                    || [self.from, self.to].iter().any(|c| {
                        c.tables
                            .get(table)
                            .is_some_and(|t| t.partition_of.as_ref().is_some_and(|(p, _)| p == n))
                    })
            })
        };
        match d.key.kind {
            Kind::Table => !self.repartitioned.contains(&d.key.name) && of(&d.key.name),
            Kind::Index => [self.from, self.to]
                .iter()
                .filter_map(|c| c.indexes.get(&d.key.name))
                .any(|i| of(&i.table)),
            Kind::Constraint => of(split_member(&d.key.name).0),
            _ => false,
        }
    }

    /// The steps that repartition table `n` (see the module's doc).
    pub(super) fn repartition(&mut self, d: &Difference, n: &str) {
        let (want, have) = (self.from.tables[n].clone(), self.to.tables[n].clone());
        let new = suffixed(n, "__etl_new");
        let old = suffixed(n, "__etl_old");
        let staging = Difference {
            key: Key::new(Kind::Table, &new),
            change: Change::Changed,
            detail: vec![],
        };
        self.repartition_create(&staging, n, &new, &want);
        self.repartition_sync(&staging, n, &new, &want);
        let sum =
            |t: &str| format!("(SELECT coalesce(sum(hashtextextended(x::text, 0)), 0) FROM {t} x)");
        // One DO (a COMMIT inside it ends each batch; a batch of several
        // statements would be one transaction): the batches, each with
        // its place in etl.repartition_move (a move stopped goes on from
        // there), then the comparison as one statement, one snapshot; rows
        // a writer held locked (skipped: waiting on it could deadlock with
        // its trigger) are moved by the next pass.
        let sql = format!(
            "DO $etl$ DECLARE b bigint; last bigint; r record; p int; BEGIN \
             CREATE SCHEMA IF NOT EXISTS etl; \
             CREATE TABLE IF NOT EXISTS etl.repartition_move (tbl text PRIMARY KEY, pass int NOT NULL, next_block bigint NOT NULL); \
             SELECT m.pass, m.next_block INTO p, b FROM etl.repartition_move m WHERE m.tbl = {lit}; \
             IF NOT FOUND THEN p := 1; b := 0; END IF; \
             COMMIT; \
             LOOP \
               SELECT coalesce(max(pg_relation_size(relid) / current_setting('block_size')::int8), 0) INTO last \
               FROM (SELECT {lit}::regclass AS relid UNION SELECT relid FROM pg_partition_tree({lit}::regclass)) t; \
               WHILE b <= last LOOP \
                 INSERT INTO {new} SELECT * FROM {n} WHERE ctid >= format('(%s,0)', b)::tid AND ctid < format('(%s,0)', b + {BATCH_BLOCKS})::tid \
                 FOR SHARE SKIP LOCKED ON CONFLICT DO NOTHING; \
                 b := b + {BATCH_BLOCKS}; \
                 INSERT INTO etl.repartition_move VALUES ({lit}, p, b) \
                 ON CONFLICT (tbl) DO UPDATE SET pass = EXCLUDED.pass, next_block = EXCLUDED.next_block; \
                 COMMIT; \
               END LOOP; \
               SELECT (SELECT count(*) FROM {n}) AS a, (SELECT count(*) FROM {new}) AS b, {} AS ah, {} AS bh INTO r; \
               EXIT WHEN r.a = r.b AND r.ah = r.bh; \
               IF p >= {PASSES} THEN \
                 UPDATE etl.repartition_move SET pass = 1, next_block = 0 WHERE tbl = {lit}; COMMIT; \
                 RAISE EXCEPTION 'repartition of %: after % passes, % rows in the old table, % in the new (checksums % and %); run the backfill again once the sessions writing it are done', \
                 {lit}, p, r.a, r.b, r.ah, r.bh; \
               END IF; \
               p := p + 1; b := 0; \
             END LOOP; \
             DELETE FROM etl.repartition_move WHERE tbl = {lit}; \
             IF NOT EXISTS (SELECT 1 FROM etl.repartition_move) THEN DROP TABLE etl.repartition_move; END IF; \
             COMMIT; \
             BEGIN DROP SCHEMA etl; EXCEPTION WHEN dependent_objects_still_exist THEN NULL; END; \
             END $etl$",
            sum(n),
            sum(&new),
            lit = etl_base::sql::literal(n)
        );
        let s = self.push(&staging, sql, "repartition-move", Risk::Medium);
        s.reasons.push(format!(
            "backfill: the rows of {n} moved in batches of {BATCH_BLOCKS} blocks, each committed; the rows of a batch are locked FOR SHARE until it commits (an UPDATE or DELETE of them waits that long); then every row of both tables compared (count and checksum) in one snapshot: the old table is dropped only once they are equal"
        ));
        s.transactional = false;
        self.on_table_last(n, Lock::ShareUpdateExclusive, Effect::Rewrite);
        self.repartition_swap(d, n, &new, &old, &want, &have);
        let s = self.push(
            d,
            format!("DROP TABLE {old}"),
            "repartition-drop-old",
            Risk::High,
        );
        s.reasons.push(format!(
            "contract: drops {old} and its rows, found equal to {n}'s by the move's comparison"
        ));
        s.needs.push(Key::new(Kind::Table, &new));
        self.on_table_last(&old, Lock::AccessExclusive, Effect::Brief);
    }

    /// The new table, its partitions, keys (suffixed), indexes (suffixed)
    /// and foreign keys, empty.
    fn repartition_create(&mut self, staging: &Difference, n: &str, new: &str, want: &Table) {
        let mut t = want.clone();
        t.name = new.to_string();
        for c in t.constraints.values_mut() {
            if matches!(c.kind, 'p' | 'u' | 'x') {
                c.name = bare_suffixed(&c.name, "__etl_new");
            }
        }
        // Row-level security is read only with --policies: checked on the
        // server too, before anything is made.
        let lit = etl_base::sql::literal(n);
        let mut sql = vec![
            format!(
                "DO $etl$ BEGIN IF EXISTS (SELECT 1 FROM pg_class WHERE oid = {lit}::regclass AND relrowsecurity) \
                 OR EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = {lit}::regclass) THEN \
                 RAISE EXCEPTION '% has row-level security: its policies would not follow the rows; drop them, repartition, make them again', {lit}; \
                 END IF; END $etl$"
            ),
            create_table(&t).0,
        ];
        let mut needs = Vec::new();
        for p in partitions(self, n) {
            let mut p = p.clone();
            p.constraints.retain(|_, c| c.kind == 'c');
            let bound = p
                .partition_of
                .as_ref()
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            p.partition_of = Some((new.to_string(), bound));
            sql.push(create_table(&p).0);
        }
        for i in self.from.indexes.values().filter(|i| i.table == n) {
            let bare = split_member(&i.name).1;
            let def = i
                .def
                .replacen(
                    &format!("INDEX {bare} ON ONLY {n} "),
                    &format!("INDEX {} ON {new} ", bare_suffixed(&i.name, "__etl_new")),
                    1,
                )
                .replacen(
                    &format!("INDEX {bare} ON {n} "),
                    &format!("INDEX {} ON {new} ", bare_suffixed(&i.name, "__etl_new")),
                    1,
                );
            sql.push(def);
        }
        for c in want.constraints.values().filter(|c| c.kind == 'f') {
            sql.push(format!(
                "ALTER TABLE {new} ADD CONSTRAINT {} {}",
                c.name, c.def
            ));
            if let Some((r, _)) = &c.references {
                needs.push(Key::new(Kind::Table, r));
            }
        }
        let s = self.push(staging, sql.join("; "), "repartition-create", Risk::Low);
        s.reasons.push(format!(
            "expand: {new} beside {n}, partitioned as wanted, with its partitions, keys and indexes, empty (its index names suffixed until the swap)"
        ));
        s.rollback = Some(format!("DROP TABLE {new}"));
        s.needs = needs;
        s.tables.push(new.to_string());
    }

    /// The trigger on the old table that writes each row written from now
    /// on into the new one too (a row updated or deleted leaves it first).
    fn repartition_sync(&mut self, staging: &Difference, n: &str, new: &str, want: &Table) {
        let key = want
            .constraints
            .values()
            .find(|c| c.kind == 'p')
            .map(|c| c.columns.clone())
            .unwrap_or_default();
        let cols = key.join(", ");
        let of = |row: &str| {
            key.iter()
                .map(|c| format!("{row}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let func = suffixed(n, "_etl_repartition");
        let trigger = bare_suffixed(n, "_etl_repartition");
        let sql = format!(
            "CREATE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $etl$ BEGIN \
             IF TG_OP IN ('UPDATE', 'DELETE') THEN DELETE FROM {new} WHERE ({cols}) = ({}); END IF; \
             IF TG_OP IN ('INSERT', 'UPDATE') THEN DELETE FROM {new} WHERE ({cols}) = ({}); INSERT INTO {new} SELECT (NEW).*; END IF; \
             RETURN NULL; END $etl$; \
             CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {n} FOR EACH ROW EXECUTE FUNCTION {func}()",
            of("OLD"),
            of("NEW")
        );
        let s = self.push(staging, sql, "repartition-sync", Risk::Low);
        s.reasons.push(format!(
            "expand: each row written to {n} from now on is written to {new} too, in the same transaction"
        ));
        s.rollback = Some(format!(
            "DROP TRIGGER {trigger} ON {n}; DROP FUNCTION {func}()"
        ));
        self.on_table_last(n, Lock::ShareRowExclusive, Effect::Brief);
    }

    /// The names swapped in one transaction: the new table given the old
    /// one's owner and grants, the old table, its keys and indexes
    /// suffixed `__etl_old`, the new one's suffixes taken off, the
    /// sequences its columns own moved to it, FROM's comments on it.
    fn repartition_swap(
        &mut self,
        d: &Difference,
        n: &str,
        new: &str,
        old: &str,
        want: &Table,
        have: &Table,
    ) {
        let lit = etl_base::sql::literal(n);
        let mut sql = vec![
            // The old table's owner and grants, whatever --grants compares.
            format!(
                "DO $etl$ DECLARE g record; BEGIN \
                 EXECUTE format('ALTER TABLE {new} OWNER TO %I', (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = {lit}::regclass)); \
                 FOR g IN SELECT a.privilege_type AS p, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS who, a.is_grantable AS opt \
                 FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = {lit}::regclass AND a.grantee <> c.relowner LOOP \
                 EXECUTE format('GRANT %s ON {new} TO %s%s', g.p, g.who, CASE WHEN g.opt THEN ' WITH GRANT OPTION' ELSE '' END); \
                 END LOOP; END $etl$"
            ),
            format!(
                "DROP TRIGGER {} ON {n}; DROP FUNCTION {}()",
                bare_suffixed(n, "_etl_repartition"),
                suffixed(n, "_etl_repartition")
            ),
            format!("ALTER TABLE {n} RENAME TO {}", split_member(old).1),
        ];
        sql.extend(self.renamed(n, new, old, want, have));
        sql.extend(self.carried(n, want));
        let s = self.push(d, sql.join("; "), "repartition-swap", Risk::Medium);
        s.reasons.push(format!(
            "contract: {new} becomes {n} and {n} becomes {old}, in one short transaction; nothing is copied under the lock"
        ));
        s.needs.push(Key::new(Kind::Table, new));
        self.on_table_last(n, Lock::AccessExclusive, Effect::Brief);
    }

    /// What follows the table to its new self: the sequences its columns
    /// own, FROM's comments on it and its columns.
    fn carried(&self, n: &str, want: &Table) -> Vec<String> {
        let mut sql = Vec::new();
        for (seq, s) in &self.to.sequences {
            if let Some((t, c)) = &s.owned_by {
                if t == n {
                    sql.push(format!("ALTER SEQUENCE {seq} OWNED BY {n}.{c}"));
                }
            }
        }
        for (target, text) in &self.from.comments {
            let on_table = *target == format!("TABLE {n}");
            let on_column = want
                .columns
                .iter()
                .any(|c| *target == format!("COLUMN {n}.{}", c.name));
            if on_table || on_column {
                sql.push(format!(
                    "COMMENT ON {target} IS {}",
                    etl_base::sql::literal(text)
                ));
            }
        }
        sql
    }

    /// The old table's keys and indexes suffixed `__etl_old`, the new
    /// table named as the old one was and its suffixes taken off.
    fn renamed(&self, n: &str, new: &str, old: &str, want: &Table, have: &Table) -> Vec<String> {
        let (schema, bare) = split_member(n);
        let mut sql = Vec::new();
        let keys: Vec<&str> = want
            .constraints
            .values()
            .filter(|c| matches!(c.kind, 'p' | 'u' | 'x'))
            .map(|c| c.name.as_str())
            .collect();
        for c in have
            .constraints
            .values()
            .filter(|c| keys.contains(&c.name.as_str()))
        {
            sql.push(format!(
                "ALTER TABLE {old} RENAME CONSTRAINT {} TO {}",
                c.name,
                bare_suffixed(&c.name, "__etl_old")
            ));
        }
        let indexes: Vec<&String> = self
            .from
            .indexes
            .values()
            .filter(|i| i.table == n)
            .map(|i| &i.name)
            .collect();
        for i in indexes.iter().filter(|i| self.to.indexes.contains_key(**i)) {
            sql.push(format!(
                "ALTER INDEX {i} RENAME TO {}",
                bare_suffixed(i, "__etl_old")
            ));
        }
        sql.push(format!("ALTER TABLE {new} RENAME TO {bare}"));
        for c in keys {
            sql.push(format!(
                "ALTER TABLE {n} RENAME CONSTRAINT {} TO {c}",
                bare_suffixed(c, "__etl_new")
            ));
        }
        for i in &indexes {
            sql.push(format!(
                "ALTER INDEX {schema}.{} RENAME TO {}",
                bare_suffixed(i, "__etl_new"),
                split_member(i).1
            ));
        }
        sql
    }
}
