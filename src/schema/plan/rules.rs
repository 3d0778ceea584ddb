//! The statements for each difference, in their safer forms, and their
//! grades. Rule ids are stable: scripts and `--allow` refer to them.

use super::super::catalog::{
    split_member, Catalog, Column, Constraint, Index, Table, TypeDef, View,
};
use super::super::diff::{not_null_helper, Change, Difference};
use super::super::rename::Rename;
use super::super::{Key, Kind, Risk};
use super::{Lock, Options, Step};

const GIB: i64 = 1 << 30;
const SMALL_BYTES: i64 = 100 << 20;

/// What a statement does to its table's data.
#[derive(Clone, Copy, PartialEq)]
enum Effect {
    /// Catalog only.
    Brief,
    /// Reads every row.
    Scan,
    /// Writes the table anew.
    Rewrite,
}

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
        }
    }

    pub fn steps(mut self) -> Vec<Step> {
        for r in self.renames {
            let (key, _) = r.shown();
            let d = Difference {
                key,
                change: Change::Changed,
                detail: vec![],
            };
            let (rule, table) = match r {
                Rename::Table { new, .. } => ("rename-table", new.clone()),
                Rename::Column { table, .. } => ("rename-column", table.clone()),
            };
            let s = self.push(&d, r.sql(), rule, Risk::Medium);
            s.reasons
                .push("--rename: queries and code using the old name fail after it".into());
            s.rollback = Some(r.undo());
            self.on_table_last(&table, Lock::AccessExclusive, Effect::Brief);
        }
        for d in self.diffs {
            match d.key.kind {
                Kind::Schema => self.schema(d),
                Kind::Extension => self.extension(d),
                Kind::Type => self.ty(d),
                Kind::Sequence => self.sequence(d),
                Kind::Function => self.function(d),
                Kind::Table => self.table(d),
                Kind::Column => self.column(d),
                Kind::Constraint => self.constraint(d),
                Kind::Index => self.index(d),
                Kind::View => self.view(d),
                Kind::Trigger => self.trigger(d),
                Kind::Comment => self.comment(d),
            }
        }
        self.out
    }

    /// A new step; the caller fills in what differs from a brief,
    /// lock-free, transactional statement.
    fn push(&mut self, d: &Difference, sql: String, rule: &'static str, risk: Risk) -> &mut Step {
        self.out.push(Step {
            n: 0,
            key: d.key.clone(),
            change: d.change,
            sql,
            rule,
            risk,
            reasons: Vec::new(),
            lock: None,
            tables: Vec::new(),
            transactional: true,
            fails: None,
            rollback: None,
            after: Vec::new(),
            drop_phase: d.change == Change::Removed,
            needs: Vec::new(),
            check: None,
        });
        self.out.last_mut().expect("just pushed")
    }

    /// The size of a table on the target, and whether it is large or small.
    fn size(&self, table: &str) -> (i64, i64, Option<bool>) {
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
    fn on_table(&self, step: &mut Step, table: &str, lock: Lock, effect: Effect) {
        let (rows, bytes, large) = self.size(table);
        step.lock = Some(lock);
        if !step.tables.iter().any(|t| t == table) {
            step.tables.push(table.to_string());
        }
        let what = match effect {
            Effect::Brief => "catalog only, no scan",
            Effect::Scan => "scans the table",
            Effect::Rewrite => "rewrites the table and its indexes",
        };
        let size = if self.to.tables.contains_key(table) {
            format!(
                "{table}: ~{} rows, {} on the target",
                thousands(rows),
                bytes_text(bytes)
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
                        thousands(self.options.large_rows)
                    ));
                }
                Some(false) if step.risk > Risk::Low => {
                    step.risk = step.risk.down();
                    step.reasons.push(format!(
                        "graded down: a small table (under {} rows and 100 MiB)",
                        thousands(self.options.small_rows)
                    ));
                }
                _ => {}
            }
        }
    }

    fn added_table(&self, table: &str) -> bool {
        !self.to.tables.contains_key(table)
    }

    fn schema(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        match d.change {
            Change::Added => {
                let s = self.push(d, format!("CREATE SCHEMA {n}"), "create-schema", Risk::Low);
                s.reasons.push("a new schema".into());
                s.rollback = Some(format!("DROP SCHEMA {n}"));
            }
            _ => {
                let s = self.push(d, format!("DROP SCHEMA {n}"), "drop-schema", Risk::VeryHigh);
                s.reasons
                    .push("drops the schema; the statements before it drop what it holds".into());
            }
        }
    }

    fn extension(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        match d.change {
            Change::Added => {
                let (schema, _) = &self.from.extensions[&n];
                let sql = format!("CREATE EXTENSION IF NOT EXISTS {n} WITH SCHEMA {schema}");
                let s = self.push(d, sql, "create-extension", Risk::Low);
                s.reasons
                    .push("needs the extension's files installed on the target server".into());
                s.rollback = Some(format!("DROP EXTENSION {n}"));
            }
            Change::Changed => {
                let (schema, version) = self.from.extensions[&n].clone();
                let (have_schema, have_version) = self.to.extensions[&n].clone();
                if version != have_version {
                    let sql = format!(
                        "ALTER EXTENSION {n} UPDATE TO {}",
                        crate::sql::literal(&version)
                    );
                    let s = self.push(d, sql, "update-extension", Risk::Medium);
                    s.reasons.push(format!(
                        "runs the extension's update script {have_version} -> {version}"
                    ));
                }
                if schema != have_schema {
                    let sql = format!("ALTER EXTENSION {n} SET SCHEMA {schema}");
                    let s = self.push(d, sql, "move-extension", Risk::Medium);
                    s.reasons.push("moves the extension's objects".into());
                }
            }
            Change::Removed => {
                let s = self.push(
                    d,
                    format!("DROP EXTENSION {n}"),
                    "drop-extension",
                    Risk::VeryHigh,
                );
                s.reasons.push(
                    "drops the extension's types and functions (columns of its types must be gone)"
                        .into(),
                );
            }
        }
    }

    fn ty(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        match d.change {
            Change::Added => {
                let def = &self.from.types[&n];
                let (sql, drop) = create_type(&n, def);
                let s = self.push(d, sql, "create-type", Risk::Low);
                s.reasons.push("a new type".into());
                s.rollback = Some(drop);
            }
            Change::Removed => {
                let word = match self.to.types[&n] {
                    TypeDef::Domain { .. } => "DOMAIN",
                    _ => "TYPE",
                };
                let s = self.push(d, format!("DROP {word} {n}"), "drop-type", Risk::VeryHigh);
                s.reasons
                    .push("drops the type; columns of it must be gone first".into());
            }
            Change::Changed => match (&self.from.types[&n], &self.to.types[&n]) {
                (TypeDef::Enum(want), TypeDef::Enum(have)) => self.enum_change(d, want, have),
                (
                    TypeDef::Domain {
                        base,
                        default,
                        not_null,
                        checks,
                    },
                    TypeDef::Domain {
                        base: have_base,
                        default: have_default,
                        not_null: have_not_null,
                        checks: have_checks,
                    },
                ) => {
                    if base != have_base {
                        let sql = format!("-- ALTER DOMAIN {n}: base type {have_base} -> {base}");
                        let s = self.push(d, sql, "domain-base-type", Risk::VeryHigh);
                        s.fails = Some(format!(
                            "a domain's base type cannot change in place; create a new domain, move each column to it with ALTER COLUMN ... TYPE, and drop {n}"
                        ));
                        return;
                    }
                    if default != have_default {
                        let sql = match default {
                            Some(x) => format!("ALTER DOMAIN {n} SET DEFAULT {x}"),
                            None => format!("ALTER DOMAIN {n} DROP DEFAULT"),
                        };
                        let s = self.push(d, sql, "domain-default", Risk::Low);
                        s.reasons.push("new rows only; catalog only".into());
                    }
                    for (c, def) in have_checks {
                        if checks.get(c) != Some(def) {
                            let sql = format!("ALTER DOMAIN {n} DROP CONSTRAINT {c}");
                            let s = self.push(d, sql, "domain-drop-check", Risk::Low);
                            s.reasons.push("catalog only".into());
                        }
                    }
                    for (c, def) in checks {
                        if have_checks.get(c) != Some(def) {
                            let sql =
                                format!("ALTER DOMAIN {n} ADD CONSTRAINT {c} {def} NOT VALID");
                            let s = self.push(d, sql, "domain-add-check", Risk::Medium);
                            s.reasons
                                .push("new values are checked at once; existing ones by the VALIDATE after it".into());
                            let sql = format!("ALTER DOMAIN {n} VALIDATE CONSTRAINT {c}");
                            let s = self.push(d, sql, "validate-constraint", Risk::Medium);
                            s.reasons.push(
                                "scans every column of the domain (SHARE UPDATE EXCLUSIVE: reads and writes go on)".into(),
                            );
                        }
                    }
                    if not_null != have_not_null {
                        let (sql, rule, risk, why) = match not_null {
                            true => (
                                format!("ALTER DOMAIN {n} SET NOT NULL"),
                                "domain-set-not-null",
                                Risk::High,
                                "scans every column of the domain under a lock that blocks writes",
                            ),
                            false => (
                                format!("ALTER DOMAIN {n} DROP NOT NULL"),
                                "domain-drop-not-null",
                                Risk::Low,
                                "catalog only",
                            ),
                        };
                        let s = self.push(d, sql, rule, risk);
                        s.reasons.push(why.into());
                    }
                }
                (TypeDef::Composite(want), TypeDef::Composite(have)) => {
                    for (a, t) in have {
                        if !want.iter().any(|(w, _)| w == a) {
                            let sql = format!("ALTER TYPE {n} DROP ATTRIBUTE {a}");
                            let s = self.push(d, sql, "drop-attribute", Risk::VeryHigh);
                            s.reasons
                                .push(format!("drops attribute {a} ({t}) and its values"));
                        }
                    }
                    for (a, t) in want {
                        match have.iter().find(|(h, _)| h == a) {
                            None => {
                                let sql = format!("ALTER TYPE {n} ADD ATTRIBUTE {a} {t}");
                                let s = self.push(d, sql, "add-attribute", Risk::Low);
                                s.reasons.push("catalog only".into());
                            }
                            Some((_, h)) if h != t => {
                                let sql = format!("ALTER TYPE {n} ALTER ATTRIBUTE {a} TYPE {t}");
                                let s = self.push(d, sql, "attribute-type-change", Risk::High);
                                s.reasons.push(format!(
                                    "{h} -> {t}; fails while a table column has the type"
                                ));
                            }
                            _ => {}
                        }
                    }
                }
                (want, _) => {
                    let (create, _) = create_type(&n, want);
                    let sql = format!("DROP TYPE {n}");
                    let s = self.push(d, sql, "drop-type", Risk::VeryHigh);
                    s.drop_phase = true;
                    s.reasons
                        .push("the type cannot change in place: dropped and created again; columns of it must be gone".into());
                    let s = self.push(d, create, "create-type", Risk::Low);
                    s.reasons.push("created again".into());
                }
            },
        }
    }

    /// New values in place where the old ones keep their order; otherwise
    /// the type is made anew and its columns moved to it.
    fn enum_change(&mut self, d: &Difference, want: &[String], have: &[String]) {
        let n = d.key.name.clone();
        let kept: Vec<&String> = want.iter().filter(|l| have.contains(l)).collect();
        let in_order = kept.len() == have.len() && kept.iter().zip(have).all(|(a, b)| *a == b);
        if in_order {
            for (i, label) in want.iter().enumerate() {
                if have.contains(label) {
                    continue;
                }
                let place = match want[i + 1..].iter().find(|l| have.contains(l)) {
                    Some(next) => format!(" BEFORE {}", crate::sql::literal(next)),
                    None => match want[..i].iter().rev().find(|l| have.contains(l)) {
                        Some(prev) => format!(" AFTER {}", crate::sql::literal(prev)),
                        None => String::new(),
                    },
                };
                let sql = format!(
                    "ALTER TYPE {n} ADD VALUE IF NOT EXISTS {}{place}",
                    crate::sql::literal(label)
                );
                let s = self.push(d, sql, "enum-add-value", Risk::Low);
                s.reasons
                    .push("adds a value in place; no table is read or rewritten".into());
                s.transactional = false;
            }
            return;
        }
        // Made anew: rename, create, move each column, drop the old one.
        let removed: Vec<&String> = have.iter().filter(|l| !want.contains(l)).collect();
        let (schema, bare) = split_member(&n);
        let old_bare = format!("{}__etl_old", super::super::diff::unquote(bare));
        let old = format!("{schema}.{}", crate::sql::ident(&old_bare));
        let sql = format!("ALTER TYPE {n} RENAME TO {}", crate::sql::ident(&old_bare));
        let s = self.push(d, sql, "enum-recreate", Risk::VeryHigh);
        s.reasons.push(format!(
            "values removed or reordered ({removed:?}): the type is made anew and every column of it rewritten"
        ));
        let (create, _) = create_type(&n, &TypeDef::Enum(want.to_vec()));
        let s = self.push(d, create, "enum-recreate", Risk::VeryHigh);
        s.reasons.push("the new type".into());
        let users: Vec<(String, Column)> = self
            .to
            .tables
            .values()
            .filter(|t| t.partition_of.is_none())
            .flat_map(|t| t.columns.iter().map(move |c| (t.name.clone(), c.clone())))
            .filter(|(_, c)| c.ty == n || c.ty == format!("{n}[]"))
            .collect();
        for (table, c) in users {
            let array = if c.ty.ends_with("[]") { "[]" } else { "" };
            let col = &c.name;
            let mut sql = String::new();
            if c.default.is_some() {
                sql.push_str(&format!(
                    "ALTER TABLE {table} ALTER COLUMN {col} DROP DEFAULT; "
                ));
            }
            sql.push_str(&format!(
                "ALTER TABLE {table} ALTER COLUMN {col} TYPE {n}{array} USING {col}::text{array}::{n}{array}"
            ));
            let want_default = self
                .from
                .tables
                .get(&table)
                .and_then(|t| t.column(col))
                .and_then(|w| w.default.clone());
            if let Some(def) = want_default {
                sql.push_str(&format!(
                    "; ALTER TABLE {table} ALTER COLUMN {col} SET DEFAULT {def}"
                ));
            }
            let list: Vec<String> = removed.iter().map(|l| crate::sql::literal(l)).collect();
            let s = self.push(d, sql, "enum-recreate", Risk::VeryHigh);
            let test = match array {
                "" => format!("{col}::text IN ({})", list.join(", ")),
                _ => format!("{col}::text[] && ARRAY[{}]::text[]", list.join(", ")),
            };
            s.check = (!removed.is_empty()).then(|| {
                (
                    format!("SELECT count(*) FROM {table} WHERE {test}"),
                    format!(
                        "{{n}} rows of {table} hold a removed value in {col}; change them first"
                    ),
                )
            });
            self.on_table_last(&table, Lock::AccessExclusive, Effect::Rewrite);
        }
        let s = self.push(
            d,
            format!("DROP TYPE {old}"),
            "enum-recreate",
            Risk::VeryHigh,
        );
        s.reasons.push("the old type, no longer used".into());
    }

    fn on_table_last(&mut self, table: &str, lock: Lock, effect: Effect) {
        let mut step = self.out.pop().expect("a step was pushed");
        self.on_table(&mut step, table, lock, effect);
        self.out.push(step);
    }

    fn sequence(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        match d.change {
            Change::Added | Change::Changed => {
                let q = &self.from.sequences[&n];
                let params = format!(
                    "AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {}CYCLE",
                    q.ty,
                    q.increment,
                    q.min,
                    q.max,
                    q.start,
                    q.cache,
                    if q.cycle { "" } else { "NO " }
                );
                let owned = q.owned_by.clone();
                let (sql, rule) = match d.change {
                    Change::Added => (format!("CREATE SEQUENCE {n} {params}"), "create-sequence"),
                    _ => (format!("ALTER SEQUENCE {n} {params}"), "alter-sequence"),
                };
                let added = d.change == Change::Added;
                let s = self.push(d, sql, rule, Risk::Low);
                s.reasons.push("catalog only".into());
                if added {
                    s.rollback = Some(format!("DROP SEQUENCE {n}"));
                }
                let have_owner = self.to.sequences.get(&n).and_then(|s| s.owned_by.clone());
                if owned != have_owner {
                    let (sql, needs) = match &owned {
                        Some((t, c)) => (
                            format!("ALTER SEQUENCE {n} OWNED BY {t}.{c}"),
                            vec![Key::new(Kind::Table, t)],
                        ),
                        None => (format!("ALTER SEQUENCE {n} OWNED BY NONE"), vec![]),
                    };
                    let s = self.push(d, sql, "sequence-owned-by", Risk::Low);
                    s.reasons.push("catalog only".into());
                    s.needs = needs;
                }
            }
            Change::Removed => {
                // A serial column's sequence goes with its table or column.
                if let Some((t, c)) = &self.to.sequences[&n].owned_by {
                    let gone = self.diffs.iter().any(|x| {
                        x.change == Change::Removed
                            && ((x.key.kind == Kind::Table && x.key.name == *t)
                                || (x.key.kind == Kind::Column && x.key.name == format!("{t}.{c}")))
                    });
                    if gone {
                        return;
                    }
                }
                let s = self.push(
                    d,
                    format!("DROP SEQUENCE {n}"),
                    "drop-sequence",
                    Risk::VeryHigh,
                );
                s.reasons
                    .push("drops the sequence and its current value".into());
            }
        }
    }

    fn function(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        let word = |f: &super::super::catalog::Function| {
            if f.procedure {
                "PROCEDURE"
            } else {
                "FUNCTION"
            }
        };
        match d.change {
            Change::Added => {
                let f = &self.from.functions[&n];
                let (sql, drop) = (f.def.clone(), format!("DROP {} {n}", word(f)));
                let s = self.push(d, sql, "create-function", Risk::Low);
                s.reasons.push("a new function".into());
                s.rollback = Some(drop);
            }
            Change::Changed => {
                let (f, have) = (&self.from.functions[&n], &self.to.functions[&n]);
                if f.result == have.result && f.arg_names == have.arg_names {
                    let sql = f.def.clone();
                    let undo = have.def.clone();
                    let s = self.push(d, sql, "replace-function", Risk::Low);
                    s.reasons.push(
                        "CREATE OR REPLACE: calls that start after it use the new body".into(),
                    );
                    s.rollback = Some(undo);
                } else {
                    let (drop, create) = (format!("DROP {} {n}", word(have)), f.def.clone());
                    let s = self.push(d, drop, "function-recreate", Risk::High);
                    s.drop_phase = true;
                    s.reasons.push("its result type or argument names change: dropped and created again; calls in between fail, and objects using it must be gone".into());
                    let s = self.push(d, create, "function-recreate", Risk::High);
                    s.reasons.push("created again".into());
                }
            }
            Change::Removed => {
                let sql = format!("DROP {} {n}", word(&self.to.functions[&n]));
                let s = self.push(d, sql, "drop-function", Risk::High);
                s.reasons.push("callers fail after it".into());
            }
        }
    }

    fn table(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        match d.change {
            Change::Added => {
                let t = self.from.tables[&n].clone();
                let (sql, needs) = create_table(&t);
                let partition = t.partition_of.clone();
                let rule = if partition.is_some() {
                    "create-partition"
                } else {
                    "create-table"
                };
                let s = self.push(d, sql, rule, Risk::Low);
                s.rollback = Some(format!("DROP TABLE {n}"));
                s.needs = needs;
                match partition {
                    Some((parent, bound)) => {
                        s.risk = Risk::Medium;
                        let scans_default = self
                            .to
                            .tables
                            .get(&parent)
                            .is_some_and(|p| p.has_default_partition)
                            && bound != "DEFAULT";
                        self.on_table_last(
                            &parent,
                            Lock::AccessExclusive,
                            if scans_default {
                                Effect::Scan
                            } else {
                                Effect::Brief
                            },
                        );
                        if scans_default {
                            let s = self.out.last_mut().expect("pushed");
                            s.reasons.push(format!(
                                "{parent} has a default partition: it is scanned for rows of the new bound"
                            ));
                        }
                    }
                    None => s.reasons.push("a new table".into()),
                }
                // Foreign keys of the new table: after the tables they name.
                for c in t.constraints.values().filter(|c| c.kind == 'f') {
                    let key = Key::new(Kind::Constraint, &format!("{n}.{}", c.name));
                    let dd = Difference {
                        key,
                        change: Change::Added,
                        detail: vec![],
                    };
                    let sql = format!("ALTER TABLE {n} ADD CONSTRAINT {} {}", c.name, c.def);
                    let refs = c.references.clone();
                    let s = self.push(&dd, sql, "add-foreign-key-new-table", Risk::Low);
                    s.rollback = Some(format!("ALTER TABLE {n} DROP CONSTRAINT {}", c.name));
                    s.reasons
                        .push("the new table is empty: nothing to validate".into());
                    s.tables.push(n.clone());
                    if let Some((r, _)) = refs {
                        s.needs.push(Key::new(Kind::Table, &r));
                        if r != n {
                            self.on_table_last(&r, Lock::ShareRowExclusive, Effect::Brief);
                        }
                    }
                }
            }
            Change::Removed => {
                let t = &self.to.tables[&n];
                let parent = t.partition_of.clone();
                let s = self.push(d, format!("DROP TABLE {n}"), "drop-table", Risk::VeryHigh);
                s.reasons.push(format!(
                    "drops the table and its ~{} rows ({})",
                    thousands(t.rows),
                    bytes_text(t.bytes)
                ));
                self.on_table_last(&n, Lock::AccessExclusive, Effect::Brief);
                if let Some((p, _)) = parent {
                    self.on_table_last(&p, Lock::AccessExclusive, Effect::Brief);
                }
            }
            Change::Changed => {
                let (want, have) = (self.from.tables[&n].clone(), self.to.tables[&n].clone());
                if want.unlogged != have.unlogged {
                    let sql = format!(
                        "ALTER TABLE {n} SET {}",
                        if want.unlogged { "UNLOGGED" } else { "LOGGED" }
                    );
                    self.push(d, sql, "set-logged", Risk::High);
                    self.on_table_last(&n, Lock::AccessExclusive, Effect::Rewrite);
                }
                if want.inherits != have.inherits {
                    for p in have.inherits.iter().filter(|p| !want.inherits.contains(p)) {
                        self.push(
                            d,
                            format!("ALTER TABLE {n} NO INHERIT {p}"),
                            "no-inherit",
                            Risk::Medium,
                        );
                        self.on_table_last(&n, Lock::AccessExclusive, Effect::Brief);
                    }
                    for p in want.inherits.iter().filter(|p| !have.inherits.contains(p)) {
                        self.push(
                            d,
                            format!("ALTER TABLE {n} INHERIT {p}"),
                            "inherit",
                            Risk::Medium,
                        );
                        self.on_table_last(&n, Lock::AccessExclusive, Effect::Brief);
                    }
                }
                if want.partition_of != have.partition_of {
                    if let Some((p, _)) = &have.partition_of {
                        let sql = format!("ALTER TABLE {p} DETACH PARTITION {n}");
                        self.push(d, sql, "detach-partition", Risk::High);
                        self.on_table_last(p, Lock::AccessExclusive, Effect::Brief);
                    }
                    if let Some((p, bound)) = &want.partition_of {
                        let sql = format!("ALTER TABLE {p} ATTACH PARTITION {n} {bound}");
                        let s = self.push(d, sql, "attach-partition", Risk::High);
                        s.reasons.push(format!("SHARE UPDATE EXCLUSIVE on {p}"));
                        self.on_table_last(&n, Lock::AccessExclusive, Effect::Scan);
                    }
                }
                if want.partitioned_by != have.partitioned_by {
                    let sql = format!("-- {n}: partitioning cannot change in place");
                    let s = self.push(d, sql, "repartition", Risk::VeryHigh);
                    s.fails = Some(format!(
                        "{n} is partitioned differently ({:?} on the target, {:?} wanted): create the new table beside it, move the rows (etl run), and swap the names",
                        have.partitioned_by, want.partitioned_by
                    ));
                }
            }
        }
    }

    fn column(&mut self, d: &Difference) {
        let (table, col) = split_member(&d.key.name);
        let (table, col) = (table.to_string(), col.to_string());
        match d.change {
            Change::Added => {
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
                let s = self.push(
                    d,
                    format!("ALTER TABLE {table} DROP COLUMN {col}"),
                    "drop-column",
                    Risk::VeryHigh,
                );
                s.reasons
                    .push("its values are lost (the space is reclaimed by later rewrites)".into());
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

    fn column_change(&mut self, d: &Difference, table: &str, want: &Column, have: &Column) {
        let col = &want.name;
        if want.generated != have.generated {
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
            return;
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
                let rewrites = rewrites(&have.ty, &want.ty);
                let sql = format!(
                    "ALTER TABLE {table} ALTER COLUMN {col} TYPE {} USING {col}::{}",
                    want.ty,
                    strip_collate(&want.ty)
                );
                let (rule, risk) = match rewrites {
                    true => ("rewrite-type-change", Risk::High),
                    false => ("type-change-no-rewrite", Risk::Low),
                };
                let s = self.push(d, sql, rule, risk);
                s.reasons.push(format!("{} -> {}", have.ty, want.ty));
                s.rollback = Some(format!(
                    "ALTER TABLE {table} ALTER COLUMN {col} TYPE {} USING {col}::{}",
                    have.ty,
                    strip_collate(&have.ty)
                ));
                if rewrites {
                    s.check = Some(converts_check(table, col, &want.ty));
                }
                self.on_table_last(
                    table,
                    Lock::AccessExclusive,
                    if rewrites {
                        Effect::Rewrite
                    } else {
                        Effect::Brief
                    },
                );
                self.recreate_views_on(table);
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

    /// SET NOT NULL through a validated CHECK, so that no step scans the
    /// table under ACCESS EXCLUSIVE.
    fn set_not_null(&mut self, d: &Difference, table: &str, col: &str) {
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
    fn phased_type_change(&mut self, d: &Difference, table: &str, want: &Column, have: &Column) {
        let col = &want.name;
        let bare = super::super::diff::unquote(col);
        let new = crate::sql::ident(&format!("{bare}__etl_new"));
        let old = crate::sql::ident(&format!("{bare}__etl_old"));
        let (schema, tbare) = split_member(table);
        let func = format!(
            "{schema}.{}",
            crate::sql::ident(&format!(
                "{}_{bare}_etl_sync",
                super::super::diff::unquote(tbare)
            ))
        );
        let trigger = crate::sql::ident(&format!("{bare}_etl_sync"));
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
        let sql = format!(
            "DO $etl$ DECLARE n bigint; BEGIN LOOP \
             UPDATE {table} SET {new} = {col}::{plain} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {new} IS NULL AND {col} IS NOT NULL LIMIT 10000)); \
             GET DIAGNOSTICS n = ROW_COUNT; COMMIT; EXIT WHEN n = 0; END LOOP; END $etl$"
        );
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

    /// A view on a table whose column changes type must be dropped first
    /// and made again after (PostgreSQL refuses the change otherwise); the
    /// views listed as changed are made again by [`Rules::view`].
    fn recreate_views_on(&mut self, table: &str) {
        for v in views_over(self.to, vec![table.to_string()]) {
            let listed = self
                .diffs
                .iter()
                .any(|d| d.key.kind == Kind::View && d.key.name == v);
            let already = self
                .out
                .iter()
                .any(|s| s.key.kind == Kind::View && s.key.name == v);
            if listed || already {
                continue;
            }
            let d = Difference {
                key: Key::new(Kind::View, &v),
                change: Change::Changed,
                detail: vec![],
            };
            let have = self.to.views[&v].clone();
            let s = self.push(&d, drop_view(&have), "view-recreate", Risk::Medium);
            s.drop_phase = true;
            s.reasons.push(format!(
                "{table} changes a column type under it: dropped and made again"
            ));
            if let Some(want) = self.from.views.get(&v).cloned() {
                let s = self.push(&d, create_view(&want), "view-recreate", Risk::Medium);
                s.reasons.push("made again after the type change".into());
            }
        }
    }

    fn constraint(&mut self, d: &Difference) {
        let (table, name) = split_member(&d.key.name);
        let (table, name) = (table.to_string(), name.to_string());
        match d.change {
            Change::Added => {
                let c = self.from.tables[&table].constraints[&name].clone();
                self.add_constraint(d, &table, &c);
            }
            Change::Removed => {
                let c = self.to.tables[&table].constraints[&name].clone();
                self.drop_constraint(d, &table, &c);
            }
            Change::Changed => {
                let (want, have) = (
                    self.from.tables[&table].constraints[&name].clone(),
                    self.to.tables[&table].constraints[&name].clone(),
                );
                if want.def == have.def {
                    // Added NOT VALID earlier (an apply stopped between).
                    self.validate(d, &table, &want);
                } else {
                    self.drop_constraint(d, &table, &have);
                    self.out.last_mut().expect("pushed").drop_phase = true;
                    self.add_constraint(d, &table, &want);
                }
            }
        }
    }

    fn drop_constraint(&mut self, d: &Difference, table: &str, c: &Constraint) {
        let sql = format!("ALTER TABLE {table} DROP CONSTRAINT {}", c.name);
        let s = self.push(d, sql, "drop-constraint", Risk::Medium);
        s.reasons.push(format!(
            "the table loses the rule ({}); {}",
            c.def,
            if matches!(c.kind, 'p' | 'u') {
                "its index goes too"
            } else {
                "nothing is scanned"
            }
        ));
        self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
        if let Some((r, _)) = &c.references {
            if r != table {
                self.on_table_last(r, Lock::AccessExclusive, Effect::Brief);
            }
        }
    }

    fn add_constraint(&mut self, d: &Difference, table: &str, c: &Constraint) {
        let name = &c.name;
        let undo = format!("ALTER TABLE {table} DROP CONSTRAINT {name}");
        let partitioned = self
            .to
            .tables
            .get(table)
            .is_some_and(|t| t.partitioned_by.is_some());
        match c.kind {
            'c' | 'f' if !partitioned || c.kind == 'c' => {
                let sql = format!(
                    "ALTER TABLE {table} ADD CONSTRAINT {name} {} NOT VALID",
                    c.def
                );
                let (rule, lock) = match c.kind {
                    'f' => ("add-foreign-key-not-valid", Lock::ShareRowExclusive),
                    _ => ("add-check-not-valid", Lock::AccessExclusive),
                };
                let s = self.push(d, sql, rule, Risk::Medium);
                s.reasons
                    .push("NOT VALID: new rows are checked at once, existing ones by the VALIDATE after it".into());
                s.rollback = Some(undo);
                if let Some((r, _)) = &c.references {
                    s.needs.push(Key::new(Kind::Table, r));
                }
                self.on_table_last(table, lock, Effect::Brief);
                if let Some((r, _)) = &c.references {
                    if r != table {
                        self.on_table_last(r, Lock::ShareRowExclusive, Effect::Brief);
                    }
                }
                self.validate(d, table, c);
            }
            'p' | 'u' if !partitioned => {
                let index_name = name.clone();
                let existing = self.to.indexes.get(&qualified_index(table, &index_name));
                let reuse = existing.is_some_and(|i| i.valid && i.unique);
                if !reuse {
                    let def = c.index_def.clone().unwrap_or_default();
                    let sql = concurrently(&def);
                    let s = self.push(d, sql, "add-unique-index", Risk::High);
                    s.reasons.push(
                        "builds the key's unique index first, CONCURRENTLY; fails on duplicates"
                            .into(),
                    );
                    s.transactional = false;
                    s.check = Some(duplicates_check(table, &c.columns, c.kind == 'p'));
                    s.rollback = Some(format!(
                        "DROP INDEX CONCURRENTLY IF EXISTS {}",
                        qualified_index(table, &index_name)
                    ));
                    self.on_table_last(table, Lock::ShareUpdateExclusive, Effect::Scan);
                }
                let word = if c.kind == 'p' {
                    "PRIMARY KEY"
                } else {
                    "UNIQUE"
                };
                let sql = format!(
                    "ALTER TABLE {table} ADD CONSTRAINT {name} {word} USING INDEX {index_name}"
                );
                let s = self.push(d, sql, "add-constraint-using-index", Risk::Medium);
                s.reasons
                    .push("takes over the index built before it".into());
                s.rollback = Some(undo);
                self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
            }
            _ => {
                let rule = match c.kind {
                    'x' => "add-exclusion",
                    'f' => "add-foreign-key",
                    _ => "add-key-partitioned",
                };
                let sql = format!("ALTER TABLE {table} ADD CONSTRAINT {name} {}", c.def);
                let s = self.push(d, sql, rule, Risk::High);
                s.reasons.push(match c.kind {
                    'x' => "builds its index and checks every row under the lock".to_string(),
                    _ => "on a partitioned table it cannot be added NOT VALID or CONCURRENTLY: every partition is checked under the lock".to_string(),
                });
                s.rollback = Some(undo);
                if matches!(c.kind, 'p' | 'u') {
                    s.check = Some(duplicates_check(table, &c.columns, c.kind == 'p'));
                }
                self.on_table_last(table, Lock::AccessExclusive, Effect::Scan);
            }
        }
    }

    fn validate(&mut self, d: &Difference, table: &str, c: &Constraint) {
        let sql = format!("ALTER TABLE {table} VALIDATE CONSTRAINT {}", c.name);
        let check = match (c.kind, &c.references) {
            ('f', Some((r, rcols))) => {
                let cols: Vec<String> = c.columns.iter().map(|x| format!("a.{x}")).collect();
                let refs: Vec<String> = rcols.iter().map(|x| format!("b.{x}")).collect();
                let present: Vec<String> =
                    cols.iter().map(|x| format!("{x} IS NOT NULL")).collect();
                Some((
                    format!(
                        "SELECT count(*) FROM {table} a WHERE {} AND NOT EXISTS (SELECT 1 FROM {r} b WHERE ({}) = ({}))",
                        present.join(" AND "),
                        refs.join(", "),
                        cols.join(", ")
                    ),
                    format!("{{n}} rows of {table} reference no row of {r} ({}): delete or fix them first", c.name),
                ))
            }
            ('c', _) => c.def.strip_prefix("CHECK ").map(|expr| {
                let expr = expr.trim_end_matches(" NO INHERIT");
                (
                    format!("SELECT count(*) FROM {table} WHERE NOT coalesce({expr}, true)"),
                    format!(
                        "{{n}} rows of {table} break {} ({}): fix them first",
                        c.name, c.def
                    ),
                )
            }),
            _ => None,
        };
        let s = self.push(d, sql, "validate-constraint", Risk::Medium);
        s.reasons.push("checks the existing rows".into());
        s.check = check;
        self.on_table_last(table, Lock::ShareUpdateExclusive, Effect::Scan);
    }

    fn index(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        // An index a key constraint takes over (ADD CONSTRAINT ... USING
        // INDEX, after an apply stopped between) is not dropped.
        let adopted = |i: &Index| {
            self.diffs.iter().any(|x| {
                x.key.kind == Kind::Constraint
                    && x.change == Change::Added
                    && qualified_index(split_member(&x.key.name).0, split_member(&x.key.name).1)
                        == i.name
            })
        };
        if matches!(d.change, Change::Removed | Change::Changed) {
            let have = self.to.indexes[&n].clone();
            if d.change == Change::Removed && adopted(&have) {
                return;
            }
            let (sql, transactional) = match have.on_partitioned {
                true => (format!("DROP INDEX {n}"), true),
                false => (format!("DROP INDEX CONCURRENTLY {n}"), false),
            };
            let s = self.push(d, sql, "drop-index", Risk::Medium);
            s.drop_phase = true;
            s.transactional = transactional;
            s.reasons.push(if have.valid {
                "queries that used it get slower".to_string()
            } else {
                "INVALID (an interrupted CREATE INDEX CONCURRENTLY): made again".to_string()
            });
            let lock = if transactional {
                Lock::AccessExclusive
            } else {
                Lock::ShareUpdateExclusive
            };
            self.on_table_last(&have.table, lock, Effect::Brief);
        }
        if matches!(d.change, Change::Added | Change::Changed) {
            let want = self.from.indexes[&n].clone();
            let new_table =
                self.added_table(&want.table) && !self.from.views.contains_key(&want.table);
            let undo = format!("DROP INDEX CONCURRENTLY IF EXISTS {n}");
            if new_table {
                let s = self.push(d, want.def.clone(), "create-index-new-table", Risk::Low);
                s.reasons.push("on a new, empty table".into());
                s.rollback = Some(undo);
                s.tables.push(want.table.clone());
            } else if want.on_partitioned {
                let s = self.push(d, want.def.clone(), "create-index-partitioned", Risk::High);
                s.reasons.push(
                    "on a partitioned table CONCURRENTLY does not apply: every partition is locked against writes while it builds".into(),
                );
                s.rollback = Some(format!("DROP INDEX IF EXISTS {n}"));
                self.on_table_last(&want.table.clone(), Lock::Share, Effect::Scan);
            } else {
                let (rule, risk) = match want.unique {
                    true => ("create-unique-index", Risk::High),
                    false => ("create-index", Risk::Medium),
                };
                let s = self.push(d, concurrently(&want.def), rule, risk);
                s.transactional = false;
                s.rollback = Some(undo);
                if want.unique {
                    s.reasons.push("fails on duplicate keys".into());
                    s.check = Some(duplicates_check(&want.table, &want.columns, false));
                }
                self.on_table_last(
                    &want.table.clone(),
                    Lock::ShareUpdateExclusive,
                    Effect::Scan,
                );
            }
        }
    }

    fn view(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        match d.change {
            Change::Added => {
                let v = self.from.views[&n].clone();
                let (rule, risk) = match v.materialized {
                    true => ("create-matview", Risk::Medium),
                    false => ("create-view", Risk::Low),
                };
                let s = self.push(d, create_view(&v), rule, risk);
                s.rollback = Some(drop_view(&v));
                s.reasons.push(match v.materialized {
                    true => "runs its query to fill it".to_string(),
                    false => "a new view".to_string(),
                });
            }
            Change::Removed => {
                let v = self.to.views[&n].clone();
                let s = self.push(d, drop_view(&v), "drop-view", Risk::Medium);
                s.reasons.push("queries on it fail after it".into());
            }
            Change::Changed => {
                let (want, have) = (self.from.views[&n].clone(), self.to.views[&n].clone());
                let extends = have.columns.len() <= want.columns.len()
                    && have.columns.iter().zip(&want.columns).all(|(a, b)| a == b);
                let in_the_way = self.views_in_the_way.contains(&n);
                if !want.materialized && !have.materialized && extends && !in_the_way {
                    let sql = format!("CREATE OR REPLACE VIEW {n} AS {}", body(&want.def));
                    let s = self.push(d, sql, "replace-view", Risk::Low);
                    s.reasons
                        .push("CREATE OR REPLACE: queries after it see the new definition".into());
                    s.rollback = Some(format!("CREATE OR REPLACE VIEW {n} AS {}", body(&have.def)));
                } else {
                    let s = self.push(d, drop_view(&have), "view-recreate", Risk::Medium);
                    s.drop_phase = true;
                    s.reasons.push(
                        "its columns change: dropped and made again; queries in between fail"
                            .into(),
                    );
                    let s = self.push(d, create_view(&want), "view-recreate", Risk::Medium);
                    s.reasons.push("made again".into());
                }
            }
        }
    }

    fn trigger(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        match d.change {
            Change::Added => {
                let t = self.from.triggers[&n].clone();
                let s = self.push(d, t.def.clone(), "create-trigger", Risk::Low);
                s.rollback = Some(format!("DROP TRIGGER {} ON {}", t.name, t.table));
                self.on_table_last(&t.table, Lock::ShareRowExclusive, Effect::Brief);
            }
            Change::Removed => {
                let t = self.to.triggers[&n].clone();
                let sql = format!("DROP TRIGGER {} ON {}", t.name, t.table);
                self.push(d, sql, "drop-trigger", Risk::Medium);
                self.on_table_last(&t.table, Lock::AccessExclusive, Effect::Brief);
            }
            Change::Changed => {
                let (t, have) = (self.from.triggers[&n].clone(), self.to.triggers[&n].clone());
                let sql = t
                    .def
                    .replacen("CREATE TRIGGER", "CREATE OR REPLACE TRIGGER", 1);
                let s = self.push(d, sql, "replace-trigger", Risk::Low);
                s.rollback = Some(have.def.replacen(
                    "CREATE TRIGGER",
                    "CREATE OR REPLACE TRIGGER",
                    1,
                ));
                self.on_table_last(&t.table, Lock::ShareRowExclusive, Effect::Brief);
            }
        }
    }

    fn comment(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        let text = match d.change {
            Change::Removed => "NULL".to_string(),
            _ => crate::sql::literal(&self.from.comments[&n]),
        };
        let undo = match self.to.comments.get(&n) {
            Some(t) => crate::sql::literal(t),
            None => "NULL".to_string(),
        };
        let s = self.push(d, format!("COMMENT ON {n} IS {text}"), "comment", Risk::Low);
        s.drop_phase = false;
        s.reasons.push("catalog only".into());
        s.rollback = Some(format!("COMMENT ON {n} IS {undo}"));
    }
}

/// The views (on `catalog`) over `tables`, and the views over those.
fn views_over(catalog: &Catalog, mut on: Vec<String>) -> Vec<String> {
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

fn create_type(n: &str, def: &TypeDef) -> (String, String) {
    match def {
        TypeDef::Enum(labels) => {
            let list: Vec<String> = labels.iter().map(|l| crate::sql::literal(l)).collect();
            (
                format!("CREATE TYPE {n} AS ENUM ({})", list.join(", ")),
                format!("DROP TYPE {n}"),
            )
        }
        TypeDef::Domain {
            base,
            default,
            not_null,
            checks,
        } => {
            let mut sql = format!("CREATE DOMAIN {n} AS {base}");
            if let Some(x) = default {
                sql.push_str(&format!(" DEFAULT {x}"));
            }
            if *not_null {
                sql.push_str(" NOT NULL");
            }
            for (c, def) in checks {
                sql.push_str(&format!(" CONSTRAINT {c} {def}"));
            }
            (sql, format!("DROP DOMAIN {n}"))
        }
        TypeDef::Composite(attrs) => {
            let list: Vec<String> = attrs.iter().map(|(a, t)| format!("{a} {t}")).collect();
            (
                format!("CREATE TYPE {n} AS ({})", list.join(", ")),
                format!("DROP TYPE {n}"),
            )
        }
        TypeDef::Range { subtype } => (
            format!("CREATE TYPE {n} AS RANGE (SUBTYPE = {subtype})"),
            format!("DROP TYPE {n}"),
        ),
    }
}

fn column_def(c: &Column) -> String {
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

/// `CREATE TABLE` with its columns and every constraint but the foreign
/// keys (added after the tables they name); and the tables it needs.
fn create_table(t: &Table) -> (String, Vec<Key>) {
    let n = &t.name;
    let mut needs = Vec::new();
    let cons: Vec<String> = t
        .constraints
        .values()
        .filter(|c| c.kind != 'f')
        .map(|c| format!("CONSTRAINT {} {}", c.name, c.def))
        .collect();
    if let Some((parent, bound)) = &t.partition_of {
        needs.push(Key::new(Kind::Table, parent));
        let body = if cons.is_empty() {
            String::new()
        } else {
            format!(" ({})", cons.join(", "))
        };
        let mut sql = format!("CREATE TABLE {n} PARTITION OF {parent}{body} {bound}");
        if let Some(p) = &t.partitioned_by {
            sql.push_str(&format!(" PARTITION BY {p}"));
        }
        return (sql, needs);
    }
    let mut parts: Vec<String> = t.columns.iter().map(column_def).collect();
    parts.extend(cons);
    let mut sql = format!(
        "CREATE {}TABLE {n} ({})",
        if t.unlogged { "UNLOGGED " } else { "" },
        parts.join(", ")
    );
    if !t.inherits.is_empty() {
        sql.push_str(&format!(" INHERITS ({})", t.inherits.join(", ")));
        needs.extend(t.inherits.iter().map(|p| Key::new(Kind::Table, p)));
    }
    if let Some(p) = &t.partitioned_by {
        sql.push_str(&format!(" PARTITION BY {p}"));
    }
    (sql, needs)
}

fn body(def: &str) -> &str {
    def.trim().trim_end_matches(';')
}

fn create_view(v: &View) -> String {
    match v.materialized {
        true => format!("CREATE MATERIALIZED VIEW {} AS {}", v.name, body(&v.def)),
        false => format!("CREATE VIEW {} AS {}", v.name, body(&v.def)),
    }
}

fn drop_view(v: &View) -> String {
    match v.materialized {
        true => format!("DROP MATERIALIZED VIEW {}", v.name),
        false => format!("DROP VIEW {}", v.name),
    }
}

/// `CREATE [UNIQUE] INDEX CONCURRENTLY name ON ...`.
fn concurrently(def: &str) -> String {
    match def.find(" INDEX ") {
        Some(i) => format!("{} INDEX CONCURRENTLY {}", &def[..i], &def[i + 7..]),
        None => def.to_string(),
    }
}

/// The index of a key constraint: same schema as the table.
fn qualified_index(table: &str, name: &str) -> String {
    let (schema, _) = split_member(table);
    if schema.is_empty() {
        name.to_string()
    } else {
        format!("{schema}.{name}")
    }
}

fn duplicates_check(table: &str, columns: &[String], primary: bool) -> (String, String) {
    let cols = columns.join(", ");
    let present: Vec<String> = columns.iter().map(|c| format!("{c} IS NOT NULL")).collect();
    let mut sql = format!(
        "SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {} GROUP BY {cols} HAVING count(*) > 1) d",
        present.join(" AND ")
    );
    if primary {
        let nulls: Vec<String> = columns.iter().map(|c| format!("{c} IS NULL")).collect();
        sql = format!(
            "SELECT ({sql}) + (SELECT count(*) FROM {table} WHERE {})",
            nulls.join(" OR ")
        );
    }
    (
        sql,
        format!(
            "{table} has {{n}} duplicate{} keys ({cols}): remove them first",
            if primary { " or NULL" } else { "" }
        ),
    )
}

fn converts_check(table: &str, col: &str, ty: &str) -> (String, String) {
    (
        format!(
            "SELECT count(*) FROM {table} WHERE {col} IS NOT NULL AND NOT pg_temp.etl_converts({col}, {})",
            crate::sql::literal(strip_collate(ty))
        ),
        format!("{{n}} values of {table}.{col} do not convert to {ty}: change them first (or give the change a USING expression by hand)"),
    )
}

fn strip_collate(ty: &str) -> &str {
    ty.split(" COLLATE ").next().unwrap_or(ty)
}

/// Whether a default is computed per row (a volatile function), so that
/// adding the column rewrites the table.
fn volatile(default: &str) -> bool {
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
pub fn rewrites(old: &str, new: &str) -> bool {
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

fn thousands(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && ch != '-' {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn bytes_text(b: i64) -> String {
    let b = b as f64;
    if b >= GIB as f64 {
        format!("{:.1} GiB", b / GIB as f64)
    } else if b >= (1 << 20) as f64 {
        format!("{:.1} MiB", b / (1 << 20) as f64)
    } else {
        format!("{:.0} kB", b / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_a_varchar_or_numeric_does_not_rewrite() {
        assert!(!rewrites("character varying(10)", "character varying(20)"));
        assert!(!rewrites("character varying(10)", "text"));
        assert!(rewrites("character varying(20)", "character varying(10)"));
        assert!(!rewrites("numeric(10,2)", "numeric(12,2)"));
        assert!(rewrites("numeric(10,2)", "numeric(12,3)"));
        assert!(!rewrites("numeric(10,2)", "numeric"));
        assert!(rewrites("integer", "bigint"));
        assert!(rewrites("text", "integer"));
    }

    #[test]
    fn indexes_are_built_concurrently() {
        assert_eq!(
            concurrently("CREATE UNIQUE INDEX t_a ON public.t USING btree (a)"),
            "CREATE UNIQUE INDEX CONCURRENTLY t_a ON public.t USING btree (a)"
        );
    }

    #[test]
    fn numbers_read_with_separators() {
        assert_eq!(thousands(100_000_000), "100,000,000");
        assert_eq!(thousands(10), "10");
    }
}
