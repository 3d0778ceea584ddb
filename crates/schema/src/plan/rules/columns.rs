//! Columns: added, dropped and changed (a type change, SET NOT NULL
//! through a validated CHECK, `--phased` expand / backfill / contract),
//! and what tells whether a type change rewrites the table.
use super::*;

impl Rules<'_> {
    pub(super) fn column(&mut self, d: &Difference) {
        let (table, col) = split_member(&d.key.name);
        let (table, col) = (table.to_string(), col.to_string());
        match d.change {
            Change::Added => {
                if self.added_to_a_parent(&table, &col) {
                    // The parent's ADD COLUMN adds it here too (inherited,
                    // as FROM has it); added here first it would stay a
                    // column of the child's own.
                    return;
                }
                let c = self.from.tables[&table]
                    .column(&col)
                    .cloned()
                    .expect("listed");
                let sql = format!("ALTER TABLE {table} ADD COLUMN {}", column_def(&c));
                let volatile = c.default.as_deref().is_some_and(volatile);
                let (rule, risk, effect) = if c.identity.is_some() {
                    ("add-column-identity", Risk::High, Effect::Rewrite)
                } else if c.generated.is_some() {
                    ("add-column-generated", Risk::High, Effect::Rewrite)
                } else if volatile {
                    ("add-column-volatile-default", Risk::High, Effect::Rewrite)
                } else if c.default.is_some() {
                    ("add-column-constant-default", Risk::Low, Effect::Brief)
                } else {
                    ("add-column", Risk::Low, Effect::Brief)
                };
                let s = self.push(d, sql, rule, risk);
                s.rollback = Some(format!("ALTER TABLE {table} DROP COLUMN {col}"));
                if volatile {
                    s.reasons
                        .push("its default is volatile: every row gets its own value".into());
                } else if c.default.is_some() {
                    s.reasons
                        .push("a non-volatile default is kept in the catalog (no rewrite)".into());
                }
                if c.not_null
                    && c.default.is_none()
                    && c.identity.is_none()
                    && c.generated.is_none()
                {
                    s.check = Some((
                        format!("SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 1) s"),
                        format!("{table} has rows and {col} is NOT NULL without a default: give it a default, or add it nullable, fill it, then SET NOT NULL"),
                    ));
                }
                self.on_table_last(&table, Lock::AccessExclusive, effect);
            }
            Change::Removed => {
                if self.dropped_with_a_parent(&table, &col) {
                    // Only inherited: the parent's DROP COLUMN takes it.
                    return;
                }
                // A child that keeps the column (FROM declares it there)
                // keeps it as its own: the parent drops it ONLY.
                let keeps = self.children_keeping(&table, &col);
                let only = if keeps { "ONLY " } else { "" };
                // Children that drop it too, after the parent (where the
                // column stays theirs: declared there, or left by ONLY).
                let after: Vec<Key> = self
                    .children(&table)
                    .filter(|child| !self.dropped_with_a_parent(child, &col))
                    .map(|child| format!("{child}.{col}"))
                    .filter(|member| self.planned(Change::Removed, Kind::Column, member))
                    .map(|member| Key::new(Kind::Column, &member))
                    .collect();
                let s = self.push(
                    d,
                    format!("ALTER TABLE {only}{table} DROP COLUMN {col}"),
                    "drop-column",
                    Risk::VeryHigh,
                );
                s.reasons
                    .push("its values are lost (the space is reclaimed by later rewrites)".into());
                if keeps {
                    s.reasons.push(
                        "ONLY: the inheriting tables that keep the column keep it as their own"
                            .into(),
                    );
                }
                s.needs = after;
                self.on_table_last(&table, Lock::AccessExclusive, Effect::Brief);
            }
            Change::Changed => {
                let want = self.from.tables[&table]
                    .column(&col)
                    .cloned()
                    .expect("listed");
                let have = self.to.tables[&table]
                    .column(&col)
                    .cloned()
                    .expect("listed");
                self.column_change(d, &table, &want, &have);
            }
        }
    }

    /// The tables of TO that inherit (not as partitions) from `table`.
    fn children<'b>(&'b self, table: &'b str) -> impl Iterator<Item = &'b str> + 'b {
        self.to
            .tables
            .values()
            .filter(move |t| t.inherits.iter().any(|p| p == table))
            .map(|t| t.name.as_str())
    }

    /// Whether a table inheriting from `table` keeps column `col` in FROM
    /// (so the parent's drop must leave it there).
    fn children_keeping(&self, table: &str, col: &str) -> bool {
        self.children(table).any(|child| {
            self.from
                .tables
                .get(child)
                .is_some_and(|t| t.column(col).is_some())
        })
    }

    /// Whether `table`'s column `col` is only inherited on TO from a
    /// parent that drops it in this plan for its children too (not ONLY).
    fn dropped_with_a_parent(&self, table: &str, col: &str) -> bool {
        let Some(t) = self.to.tables.get(table) else {
            return false;
        };
        if t.column(col).is_none_or(|c| c.local) {
            return false;
        }
        t.inherits.iter().any(|parent| {
            self.planned(Change::Removed, Kind::Column, &format!("{parent}.{col}"))
                && !self.children_keeping(parent, col)
        })
    }

    /// Whether `table` inherits (not as a partition) from a table that
    /// gains column `col` in this plan.
    fn added_to_a_parent(&self, table: &str, col: &str) -> bool {
        let Some(t) = self.from.tables.get(table) else {
            return false;
        };
        t.inherits
            .iter()
            .any(|parent| self.planned(Change::Added, Kind::Column, &format!("{parent}.{col}")))
    }

    pub(super) fn column_change(
        &mut self,
        d: &Difference,
        table: &str,
        want: &Column,
        have: &Column,
    ) {
        let col = &want.name;
        if want.generated != have.generated {
            return self.generated_change(d, table, want);
        }
        if have.default.is_some() && want.default != have.default {
            let s = self.push(
                d,
                format!("ALTER TABLE {table} ALTER COLUMN {col} DROP DEFAULT"),
                "drop-default",
                Risk::Low,
            );
            s.rollback = have
                .default
                .as_ref()
                .map(|x| format!("ALTER TABLE {table} ALTER COLUMN {col} SET DEFAULT {x}"));
            // It lets go of what the old default uses: among the drops,
            // before a sequence it names is dropped (the new default, if
            // any, is set after, with the creates).
            s.drop_phase = true;
            if let Some(sequence) = have.default.as_deref().and_then(nextval_sequence) {
                s.needs.push(Key::new(Kind::Sequence, &sequence));
            }
            self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
        }
        if want.identity != have.identity && have.identity.is_some() && want.identity.is_none() {
            self.push(
                d,
                format!("ALTER TABLE {table} ALTER COLUMN {col} DROP IDENTITY"),
                "drop-identity",
                Risk::Medium,
            );
            self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
        }
        if want.ty != have.ty {
            if self.options.phased {
                self.phased_type_change(d, table, want, have);
            } else {
                self.type_change(d, table, want, have);
            }
        }
        if want.default.is_some() && want.default != have.default {
            let x = want.default.clone().unwrap_or_default();
            let s = self.push(
                d,
                format!("ALTER TABLE {table} ALTER COLUMN {col} SET DEFAULT {x}"),
                "set-default",
                Risk::Low,
            );
            s.reasons.push("new rows only".into());
            s.rollback = Some(match &have.default {
                Some(h) => format!("ALTER TABLE {table} ALTER COLUMN {col} SET DEFAULT {h}"),
                None => format!("ALTER TABLE {table} ALTER COLUMN {col} DROP DEFAULT"),
            });
            self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
        }
        if want.not_null && !have.not_null {
            self.set_not_null(d, table, col);
        } else if !want.not_null && have.not_null {
            let s = self.push(
                d,
                format!("ALTER TABLE {table} ALTER COLUMN {col} DROP NOT NULL"),
                "drop-not-null",
                Risk::Low,
            );
            s.rollback = Some(format!(
                "ALTER TABLE {table} ALTER COLUMN {col} SET NOT NULL"
            ));
            self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
        }
        if want.identity != have.identity {
            if let Some(i) = want.identity {
                let how = if i == 'a' { "ALWAYS" } else { "BY DEFAULT" };
                let (sql, rule) = match have.identity {
                    Some(_) => (format!("ALTER TABLE {table} ALTER COLUMN {col} SET GENERATED {how}"), "set-identity"),
                    None => (format!("ALTER TABLE {table} ALTER COLUMN {col} ADD GENERATED {how} AS IDENTITY"), "add-identity"),
                };
                let s = self.push(d, sql, rule, Risk::Medium);
                s.reasons.push("the identity sequence starts at 1: set it past the column's MAX (etl db fix-sequences)".into());
                self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
            }
        }
    }

    /// A generated column's expression changed: dropped and added again.
    fn generated_change(&mut self, d: &Difference, table: &str, want: &Column) {
        let col = &want.name;
        let s = self.push(
            d,
            format!("ALTER TABLE {table} DROP COLUMN {col}"),
            "generated-change",
            Risk::High,
        );
        s.reasons.push(
            "a generated column's expression cannot change in place: dropped and added again"
                .into(),
        );
        self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
        let sql = format!("ALTER TABLE {table} ADD COLUMN {}", column_def(want));
        self.push(d, sql, "generated-change", Risk::High);
        self.on_table_last(table, Lock::AccessExclusive, Effect::Rewrite);
    }

    /// A column's type changed in one statement (through text from or to
    /// an enum), graded by whether it rewrites the table; the views on
    /// the table made again after it.
    fn type_change(&mut self, d: &Difference, table: &str, want: &Column, have: &Column) {
        let col = &want.name;
        let rewrites = rewrites(&have.ty, &want.ty);
        // An enum has no cast to another type but through text.
        let enums = is_enum(self.to, &have.ty) || is_enum(self.from, &want.ty);
        let from = match enums {
            true => format!("{col}::text"),
            false => col.to_string(),
        };
        let sql = format!(
            "ALTER TABLE {table} ALTER COLUMN {col} TYPE {} USING {from}::{}",
            want.ty,
            strip_collate(&want.ty)
        );
        // Only the collation: the indexes on the column are built again,
        // scanning the table under the lock.
        let reindexed = strip_collate(&have.ty) == strip_collate(&want.ty)
            && self
                .to
                .indexes
                .values()
                .any(|i| i.table == table && i.columns.iter().any(|c| c == col));
        let (rule, risk) = match (rewrites, reindexed) {
            (true, _) => ("rewrite-type-change", Risk::High),
            (false, true) => ("collation-change-reindex", Risk::Medium),
            (false, false) => ("type-change-no-rewrite", Risk::Low),
        };
        let s = self.push(d, sql, rule, risk);
        s.reasons.push(format!("{} -> {}", have.ty, want.ty));
        if reindexed {
            s.reasons.push(
                "the collation alone: the table is not rewritten, its indexes on the column are built again under the lock"
                    .into(),
            );
        }
        s.rollback = Some(format!(
            "ALTER TABLE {table} ALTER COLUMN {col} TYPE {} USING {from}::{}",
            have.ty,
            strip_collate(&have.ty)
        ));
        if rewrites {
            s.check = Some(converts_check(table, &from, &want.ty));
        }
        self.on_table_last(
            table,
            Lock::AccessExclusive,
            match (rewrites, reindexed) {
                (true, _) => Effect::Rewrite,
                (false, true) => Effect::Scan,
                (false, false) => Effect::Brief,
            },
        );
        self.recreate_views_on(table);
    }

    /// SET NOT NULL through a validated CHECK, so that no step scans the
    /// table under ACCESS EXCLUSIVE.
    pub(super) fn set_not_null(&mut self, d: &Difference, table: &str, col: &str) {
        let helper = not_null_helper(col);
        let existing = self
            .to
            .tables
            .get(table)
            .and_then(|t| t.constraints.get(&helper))
            .map(|c| c.validated);
        let nulls = (
            format!("SELECT count(*) FROM {table} WHERE {col} IS NULL"),
            format!(
                "{table}.{col} holds {{n}} NULLs: fill them (or keep the column nullable) first"
            ),
        );
        if existing.is_none() {
            let sql = format!(
                "ALTER TABLE {table} ADD CONSTRAINT {helper} CHECK ({col} IS NOT NULL) NOT VALID"
            );
            let s = self.push(d, sql, "set-not-null-check", Risk::Low);
            s.reasons
                .push("step 1 of SET NOT NULL: new rows are checked at once".into());
            s.rollback = Some(format!(
                "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {helper}"
            ));
            self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
        }
        if existing != Some(true) {
            let sql = format!("ALTER TABLE {table} VALIDATE CONSTRAINT {helper}");
            let s = self.push(d, sql, "set-not-null-validate", Risk::Medium);
            s.reasons
                .push("step 2 of SET NOT NULL: existing rows are checked".into());
            s.check = Some(nulls.clone());
            self.on_table_last(table, Lock::ShareUpdateExclusive, Effect::Scan);
        }
        let sql = format!("ALTER TABLE {table} ALTER COLUMN {col} SET NOT NULL");
        let s = self.push(d, sql, "set-not-null", Risk::Low);
        s.reasons
            .push("step 3: the validated CHECK proves it, so nothing is scanned".into());
        s.rollback = Some(format!(
            "ALTER TABLE {table} ALTER COLUMN {col} DROP NOT NULL"
        ));
        if existing == Some(true) {
            s.check = Some(nulls);
        }
        self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
        let sql = format!("ALTER TABLE {table} DROP CONSTRAINT {helper}");
        let s = self.push(d, sql, "set-not-null-cleanup", Risk::Low);
        s.reasons
            .push("step 4: the helper CHECK is no longer needed".into());
        self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
    }

    /// `--phased`: a new column of the new type kept in step by a trigger,
    /// filled in batches, then swapped in; no step rewrites the table
    /// under ACCESS EXCLUSIVE.
    pub(super) fn phased_type_change(
        &mut self,
        d: &Difference,
        table: &str,
        want: &Column,
        have: &Column,
    ) {
        let col = &want.name;
        let bare = crate::diff::unquote(col);
        let new = etl_base::sql::ident(&format!("{bare}__etl_new"));
        let old = etl_base::sql::ident(&format!("{bare}__etl_old"));
        let (schema, tbare) = split_member(table);
        let func = format!(
            "{schema}.{}",
            etl_base::sql::ident(&format!("{}_{bare}_etl_sync", crate::diff::unquote(tbare)))
        );
        let trigger = etl_base::sql::ident(&format!("{bare}_etl_sync"));
        let ty = &want.ty;
        let plain = strip_collate(ty);
        let s = self.push(
            d,
            format!("ALTER TABLE {table} ADD COLUMN {new} {ty}"),
            "phased-expand",
            Risk::Low,
        );
        s.reasons.push(format!(
            "expand: a new column of {ty} beside {col} ({})",
            have.ty
        ));
        self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
        let sql = format!(
            "CREATE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $etl$ BEGIN NEW.{new} := NEW.{col}::{plain}; RETURN NEW; END $etl$; \
             CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {func}()"
        );
        let s = self.push(d, sql, "phased-sync-trigger", Risk::Low);
        s.reasons
            .push("expand: rows written from now on fill the new column too".into());
        self.on_table_last(table, Lock::ShareRowExclusive, Effect::Brief);
        let sql = batched_fill(table, &new, col, &format!("{col}::{plain}"));
        let s = self.push(d, sql, "phased-backfill", Risk::Medium);
        s.reasons
            .push("backfill: batches of 10,000 rows, each committed (row locks only)".into());
        s.check = Some(converts_check(table, col, ty));
        s.transactional = false;
        self.on_table_last(table, Lock::ShareUpdateExclusive, Effect::Scan);
        let sql = format!(
            "DROP TRIGGER {trigger} ON {table}; DROP FUNCTION {func}(); \
             ALTER TABLE {table} RENAME COLUMN {col} TO {old}; ALTER TABLE {table} RENAME COLUMN {new} TO {col}; \
             ALTER TABLE {table} DROP COLUMN {old}"
        );
        let s = self.push(d, sql, "phased-contract", Risk::High);
        s.reasons.push(format!(
            "contract: swaps the columns in one transaction; indexes, constraints and views on {col} must be made again on the new column"
        ));
        self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
    }
}

/// Fills column `new` of `table` from `value` (an expression of column
/// `from`) where it is still NULL, in batches of 10,000 rows, each
/// committed: row locks only, and run again it takes what is left.
pub(super) fn batched_fill(table: &str, new: &str, from: &str, value: &str) -> String {
    format!(
        "DO $etl$ DECLARE n bigint; BEGIN LOOP \
         UPDATE {table} SET {new} = {value} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {new} IS NULL AND {from} IS NOT NULL LIMIT 10000)); \
         GET DIAGNOSTICS n = ROW_COUNT; COMMIT; EXIT WHEN n = 0; END LOOP; END $etl$"
    )
}

pub(super) fn column_def(c: &Column) -> String {
    let mut s = format!("{} {}", c.name, c.ty);
    if let Some(g) = &c.generated {
        s.push_str(&format!(" GENERATED ALWAYS AS ({g}) STORED"));
    } else if let Some(i) = c.identity {
        s.push_str(if i == 'a' {
            " GENERATED ALWAYS AS IDENTITY"
        } else {
            " GENERATED BY DEFAULT AS IDENTITY"
        });
    } else if let Some(x) = &c.default {
        s.push_str(&format!(" DEFAULT {x}"));
    }
    if c.not_null {
        s.push_str(" NOT NULL");
    }
    s
}

pub(super) fn converts_check(table: &str, col: &str, ty: &str) -> (String, String) {
    (
        format!(
            "SELECT pg_temp.etl_bad_casts({}, {}, {})",
            etl_base::sql::literal(table),
            etl_base::sql::literal(col),
            etl_base::sql::literal(strip_collate(ty))
        ),
        format!("{{n}} values of {table}.{col} do not convert to {ty}: change them first (or give the change a USING expression by hand)"),
    )
}

/// Whether `ty` is an enum of `catalog`.
fn is_enum(catalog: &Catalog, ty: &str) -> bool {
    matches!(
        catalog.types.get(strip_collate(ty)),
        Some(crate::catalog::TypeDef::Enum(_))
    )
}

pub(super) fn strip_collate(ty: &str) -> &str {
    ty.split(" COLLATE ").next().unwrap_or(ty)
}

/// The collation a column's type names (`text COLLATE public.ko` ->
/// `public.ko`).
pub(super) fn collation_of(ty: &str) -> Option<&str> {
    ty.split_once(" COLLATE ").map(|(_, c)| c)
}

/// Whether a default is computed per row (a volatile function), so that
/// adding the column rewrites the table.
pub(super) fn volatile(default: &str) -> bool {
    const VOLATILE: [&str; 8] = [
        "nextval(",
        "random(",
        "gen_random_uuid(",
        "uuid_generate_",
        "clock_timestamp(",
        "timeofday(",
        "txid_current(",
        "setval(",
    ];
    VOLATILE.iter().any(|f| default.contains(f))
}

/// Whether changing a column from `old` to `new` rewrites the table.
/// PostgreSQL skips the rewrite for binary-coercible changes that only
/// widen: varchar(n) to a longer or unbounded varchar or text, text to
/// varchar, numeric(p,s) to a larger p with the same s or to numeric.
pub(super) fn rewrites(old: &str, new: &str) -> bool {
    // A collation alone changes nothing stored (its indexes are built
    // again, [`Rules::type_change`] says so).
    let (old, new) = (strip_collate(old), strip_collate(new));
    if old == new {
        return false;
    }
    let parse = |t: &str| -> (String, Vec<i64>) {
        match t.split_once('(') {
            Some((base, rest)) => (
                base.trim().to_string(),
                rest.trim_end_matches(')')
                    .split(',')
                    .filter_map(|x| x.trim().parse().ok())
                    .collect(),
            ),
            None => (t.trim().to_string(), Vec::new()),
        }
    };
    let (ob, om) = parse(old);
    let (nb, nm) = parse(new);
    let varchar = |b: &str| b == "character varying" || b == "text";
    if varchar(&ob) && varchar(&nb) {
        return match (om.first(), nm.first()) {
            (_, None) => false,
            (Some(o), Some(n)) => n < o,
            (None, Some(_)) => true,
        };
    }
    if ob == "numeric" && nb == "numeric" {
        return match (om.as_slice(), nm.as_slice()) {
            (_, []) => false,
            ([op, os], [np, ns]) => !(np >= op && ns == os),
            ([op], [np]) => np < op,
            _ => true,
        };
    }
    true
}

/// The sequence a default `nextval('public.s'::regclass)` draws from.
fn nextval_sequence(default: &str) -> Option<String> {
    let rest = default.split("nextval('").nth(1)?;
    Some(rest.split("'::regclass").next()?.replace("''", "'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_names_its_sequence() {
        assert_eq!(
            nextval_sequence("nextval('public.s'::regclass)").as_deref(),
            Some("public.s")
        );
        assert_eq!(nextval_sequence("now()"), None);
    }

    #[test]
    pub(super) fn widening_a_varchar_or_numeric_does_not_rewrite() {
        assert!(!rewrites("character varying(10)", "character varying(20)"));
        assert!(!rewrites(
            "text COLLATE public.posix",
            "text COLLATE public.\"numeric\""
        ));
        assert!(!rewrites("text", "text COLLATE \"C\""));
        assert!(rewrites("text COLLATE \"C\"", "integer"));
        // A collation's users are found by its whole name.
        assert_eq!(
            collation_of("text COLLATE public.num2"),
            Some("public.num2")
        );
        assert_ne!(collation_of("text COLLATE public.num2"), Some("public.num"));
        assert_eq!(collation_of("text"), None);
        assert!(!rewrites("character varying(10)", "text"));
        assert!(rewrites("character varying(20)", "character varying(10)"));
        assert!(!rewrites("numeric(10,2)", "numeric(12,2)"));
        assert!(rewrites("numeric(10,2)", "numeric(12,3)"));
        assert!(!rewrites("numeric(10,2)", "numeric"));
        assert!(rewrites("integer", "bigint"));
        assert!(rewrites("text", "integer"));
    }
}
