//! The statements for each difference, in their safer forms, and their
//! grades. Rule ids are stable: scripts and `--allow` refer to them.
//! One file per family of objects; here the grading by lock, effect and
//! table size that all share.

mod columns;
mod keys;
mod objects;
mod renames;
mod repartition;
mod tables;
mod types;

use super::super::rename::Rename;
use super::super::{Key, Kind, Risk};
use super::{Effect, Lock, Options, Step, Work};
use crate::catalog::{split_member, Catalog, Column, Constraint, Index, Table, TypeDef, View};
use crate::diff::{not_null_helper, Change, Difference};
use etl_base::human::{self, thousands_signed};

const GIB: i64 = 1 << 30;
const SMALL_BYTES: i64 = 100 << 20;

pub(super) struct Rules<'a> {
    from: &'a Catalog,
    to: &'a Catalog,
    diffs: &'a [Difference],
    renames: &'a [Rename],
    options: Options,
    out: Vec<Step>,
    /// Views (on TO) over a table whose column changes type: PostgreSQL
    /// refuses the change while they exist, so they are dropped first and
    /// made again after.
    views_in_the_way: Vec<String>,
    /// Tables whose partitioning changes that etl repartitions itself
    /// ([`repartition`]): their partitions, keys and indexes are its.
    repartitioned: Vec<String>,
}

impl<'a> Rules<'a> {
    pub fn new(
        from: &'a Catalog,
        to: &'a Catalog,
        diffs: &'a [Difference],
        renames: &'a [Rename],
        options: Options,
    ) -> Self {
        let changed: Vec<String> = diffs
            .iter()
            .filter(|d| {
                d.key.kind == Kind::Column
                    && d.change == Change::Changed
                    && d.detail.iter().any(|x| x.starts_with("type "))
                    && !options.phased
            })
            .map(|d| split_member(&d.key.name).0.to_string())
            .collect();
        Rules {
            from,
            to,
            diffs,
            renames,
            options,
            out: Vec::new(),
            views_in_the_way: views_over(to, changed),
            repartitioned: Vec::new(),
        }
    }

    pub fn steps(mut self) -> Vec<Step> {
        self.repartitioned = self
            .diffs
            .iter()
            .filter(|d| d.key.kind == Kind::Table && d.change == Change::Changed)
            .map(|d| d.key.name.clone())
            .filter(|n| self.from.tables[n].partitioned_by != self.to.tables[n].partitioned_by)
            .filter(|n| repartition::refusal(&self, n).is_none())
            .collect();
        for r in self.renames {
            self.rename(r);
        }
        for d in self.diffs {
            if self.in_repartition(d) {
                continue;
            }
            match d.key.kind {
                Kind::Schema => self.schema(d),
                Kind::Extension => self.extension(d),
                Kind::Collation => self.collation(d),
                Kind::Type => self.ty(d),
                Kind::Sequence => self.sequence(d),
                Kind::Function => self.function(d),
                Kind::Table => self.table(d),
                Kind::Column => self.column(d),
                Kind::Constraint => self.constraint(d),
                Kind::Index => self.index(d),
                Kind::View => self.view(d),
                Kind::Trigger => self.trigger(d),
                Kind::Policy => self.policy(d),
                Kind::Grant => self.grant(d),
                Kind::Comment => self.comment(d),
            }
        }
        self.out
    }

    /// A new step; the caller fills in what differs from a brief,
    /// lock-free, transactional statement.
    pub(super) fn push(
        &mut self,
        d: &Difference,
        sql: String,
        rule: &'static str,
        risk: Risk,
    ) -> &mut Step {
        self.out.push(Step {
            n: 0,
            key: d.key.clone(),
            change: d.change,
            sql,
            rule: rule.into(),
            risk,
            stage: None,
            reasons: Vec::new(),
            lock: None,
            tables: Vec::new(),
            transactional: true,
            fails: None,
            rollback: None,
            cleanup: None,
            after: Vec::new(),
            work: Vec::new(),
            estimate_secs: None,
            drop_phase: d.change == Change::Removed,
            needs: Vec::new(),
            check: None,
        });
        self.out.last_mut().expect("just pushed")
    }

    /// The size of a table on the target, and whether it is large or small.
    pub(super) fn size(&self, table: &str) -> (i64, i64, Option<bool>) {
        let Some(t) = self.to.tables.get(table) else {
            return (0, 0, Some(false));
        };
        let large = t.rows >= self.options.large_rows || t.bytes >= GIB;
        let small = t.rows < self.options.small_rows && t.bytes < SMALL_BYTES;
        (
            t.rows,
            t.bytes,
            if large {
                Some(true)
            } else if small {
                Some(false)
            } else {
                None
            },
        )
    }

    /// Grades a statement on `table` by what it does there, and says why.
    pub(super) fn on_table(&self, step: &mut Step, table: &str, lock: Lock, effect: Effect) {
        let (rows, bytes, large) = self.size(table);
        step.lock = Some(lock);
        if !step.tables.iter().any(|t| t == table) {
            step.tables.push(table.to_string());
        }
        let what = match effect {
            Effect::Brief => "catalog only, no scan",
            Effect::Scan => "scans the table",
            Effect::Rewrite => "rewrites the table and its indexes",
            Effect::Index => "scans the table and builds the index",
        };
        if effect != Effect::Brief && self.to.tables.contains_key(table) {
            step.work.push(Work {
                table: table.to_string(),
                effect,
                bytes: bytes.max(0),
            });
        }
        let size = if self.to.tables.contains_key(table) {
            format!(
                "{table}: {}, {} on the target",
                rows_text(rows),
                human::bytes(bytes.max(0) as u64)
            )
        } else {
            format!("{table}: new, empty")
        };
        step.reasons.push(format!(
            "{} on {table} ({}); {what}; {size}",
            lock.name(),
            lock.blocks()
        ));
        if effect != Effect::Brief {
            match large {
                Some(true) => {
                    step.risk = step.risk.up();
                    step.reasons.push(format!(
                        "graded up: a large table (at least {} rows or 1 GiB)",
                        thousands_signed(self.options.large_rows)
                    ));
                }
                Some(false) if step.risk > Risk::Low => {
                    step.risk = step.risk.down();
                    step.reasons.push(format!(
                        "graded down: a small table (under {} rows and 100 MiB)",
                        thousands_signed(self.options.small_rows)
                    ));
                }
                _ => {}
            }
        }
    }

    /// Whether the plan has `change` of the object `kind` `name`.
    pub(super) fn planned(&self, change: Change, kind: Kind, name: &str) -> bool {
        self.diffs
            .iter()
            .any(|d| d.change == change && d.key.kind == kind && d.key.name == name)
    }

    pub(super) fn added_table(&self, table: &str) -> bool {
        !self.to.tables.contains_key(table)
    }

    pub(super) fn on_table_last(&mut self, table: &str, lock: Lock, effect: Effect) {
        let mut step = self.out.pop().expect("a step was pushed");
        self.on_table(&mut step, table, lock, effect);
        self.out.push(step);
    }
}

/// `~1,234 rows`, or that the planner does not know (never analyzed).
pub(super) fn rows_text(rows: i64) -> String {
    match rows < 0 {
        true => "rows unknown (never analyzed; graded by its size)".into(),
        false => format!("~{} rows", thousands_signed(rows)),
    }
}

pub(super) fn views_over(catalog: &Catalog, mut on: Vec<String>) -> Vec<String> {
    let mut views: Vec<String> = Vec::new();
    while let Some(t) = on.pop() {
        for (name, deps) in &catalog.depends {
            if name.kind == Kind::View
                && deps.iter().any(|k| k.name == t)
                && !views.contains(&name.name)
            {
                views.push(name.name.clone());
                on.push(name.name.clone());
            }
        }
    }
    views
}
