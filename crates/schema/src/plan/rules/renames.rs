//! `--rename OLD=NEW`: one `ALTER ... RENAME`, or, in a staged change
//! (`--phase`), the old name kept working until the contract stage, so
//! code of either name runs while the application is deployed:
//!
//! - a table: renamed, and a view of the old name over it (a simple view,
//!   so PostgreSQL writes through it); the contract drops the view;
//! - a column: a twin under the new name, kept equal to the old column by
//!   a trigger both ways and filled in batches; the contract drops the
//!   twin and renames the old column, which keeps its values, defaults,
//!   constraints and indexes.

use super::super::{Effect, Lock};
use super::{Risk, Rules};
use crate::catalog::split_member;
use crate::diff::{unquote, Change, Difference};
use crate::rename::Rename;

impl Rules<'_> {
    pub(super) fn rename(&mut self, r: &Rename) {
        let (key, _) = r.shown();
        let d = Difference {
            key,
            change: Change::Changed,
            detail: vec![],
        };
        match (r, self.options.staged) {
            (Rename::Table { old, new }, true) => self.staged_table_rename(&d, r, old, new),
            (Rename::Column { table, old, new }, true) => {
                self.staged_column_rename(&d, table, old, new)
            }
            (_, false) => {
                let (rule, table) = match r {
                    Rename::Table { new, .. } => ("rename-table", new),
                    Rename::Column { table, .. } => ("rename-column", table),
                };
                let s = self.push(&d, r.sql(), rule, Risk::Medium);
                s.reasons
                    .push("--rename: queries and code using the old name fail after it".into());
                s.rollback = Some(r.undo());
                self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
            }
        }
    }

    fn staged_table_rename(&mut self, d: &Difference, r: &Rename, old: &str, new: &str) {
        let sql = format!("{}; CREATE VIEW {old} AS SELECT * FROM {new}", r.sql());
        let s = self.push(d, sql, "phased-rename-table", Risk::Low);
        s.reasons.push(format!(
            "expand: {old} stays as a view over {new}: code using either name reads and writes the same rows (grant on the view what the old name had)"
        ));
        s.rollback = Some(format!("DROP VIEW {old}; {}", r.undo()));
        self.on_table_last(new, Lock::AccessExclusive, Effect::Brief);
        let s = self.push(
            d,
            format!("DROP VIEW {old}"),
            "phased-rename-view-drop",
            Risk::Medium,
        );
        s.reasons
            .push(format!("contract: code still using {old} fails after it"));
        s.rollback = Some(format!("CREATE VIEW {old} AS SELECT * FROM {new}"));
        self.on_table_last(new, Lock::AccessExclusive, Effect::Brief);
    }

    fn staged_column_rename(&mut self, d: &Difference, table: &str, old: &str, new: &str) {
        // The column's other changes would land on the twin, which the
        // contract drops.
        let key = format!("{table}.{new}");
        let other: Vec<&String> = self
            .diffs
            .iter()
            .filter(|x| x.key.kind == crate::Kind::Column && x.key.name == key)
            .flat_map(|x| x.detail.iter().skip(1))
            .collect();
        if !other.is_empty() {
            let sql = format!("-- {table}.{old} -> {new}: renamed in stages");
            let s = self.push(d, sql, "phased-rename-column", Risk::VeryHigh);
            s.fails = Some(format!(
                "{table}.{old} is renamed in stages and changes otherwise too ({}): rename it in an apply without --phase, or make the other change in an apply of its own first",
                other.iter().map(|x| x.as_str()).collect::<Vec<_>>().join("; ")
            ));
            return;
        }
        // TO's catalog already calls the column by its new name.
        let ty = self
            .to
            .tables
            .get(table)
            .and_then(|t| t.column(new))
            .map_or_else(|| "text".to_string(), |c| c.ty.clone());
        let (schema, tbare) = split_member(table);
        let bare = unquote(new);
        let func = format!(
            "{schema}.{}",
            etl_base::sql::ident(&format!("{}_{bare}_etl_twin", unquote(tbare)))
        );
        let trigger = etl_base::sql::ident(&format!("{bare}_etl_twin"));
        let sql = format!(
            "ALTER TABLE {table} ADD COLUMN {new} {ty}; \
             CREATE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $etl$ BEGIN \
             IF TG_OP = 'INSERT' THEN \
               IF NEW.{new} IS NULL THEN NEW.{new} := NEW.{old}; ELSE NEW.{old} := NEW.{new}; END IF; \
             ELSIF NEW.{new} IS DISTINCT FROM OLD.{new} THEN NEW.{old} := NEW.{new}; \
             ELSE NEW.{new} := NEW.{old}; END IF; \
             RETURN NEW; END $etl$; \
             CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {func}()"
        );
        let undo = format!(
            "DROP TRIGGER {trigger} ON {table}; DROP FUNCTION {func}(); ALTER TABLE {table} DROP COLUMN {new}"
        );
        let s = self.push(d, sql, "phased-rename-column", Risk::Low);
        s.reasons.push(format!(
            "expand: {new} beside {old}, kept equal both ways by a trigger: code using either name works"
        ));
        s.rollback = Some(undo);
        self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
        let sql = super::columns::batched_fill(table, new, old, old);
        let s = self.push(d, sql, "phased-rename-backfill", Risk::Medium);
        s.reasons.push(format!(
            "backfill: {new} filled from {old} in batches of 10,000 rows, each committed (row locks only)"
        ));
        s.transactional = false;
        self.on_table_last(table, Lock::ShareUpdateExclusive, Effect::Scan);
        let sql = format!(
            "DROP TRIGGER {trigger} ON {table}; DROP FUNCTION {func}(); \
             ALTER TABLE {table} DROP COLUMN {new}; ALTER TABLE {table} RENAME COLUMN {old} TO {new}"
        );
        let s = self.push(d, sql, "phased-rename-contract", Risk::Medium);
        s.reasons.push(format!(
            "contract: {old} takes the name {new} with its values, default, constraints and indexes; code still using {old} fails after it"
        ));
        self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
    }
}
