//! Schemas, extensions, types, sequences, functions.
use super::*;

impl Rules<'_> {
    pub(super) fn schema(&mut self, d: &Difference) {
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

    pub(super) fn extension(&mut self, d: &Difference) {
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
                        etl_base::sql::literal(&version)
                    );
                    let reachable = self
                        .to
                        .extension_updates
                        .get(&n)
                        .cloned()
                        .unwrap_or_default();
                    let s = self.push(d, sql, "update-extension", Risk::Medium);
                    s.reasons.push(format!(
                        "runs the extension's update script {have_version} -> {version}"
                    ));
                    if !reachable.contains(&version) {
                        s.fails = Some(format!(
                            "no update script on TO's server goes from {n} {have_version} to {version}{}; {}: \
                             install {n} {version}'s files there, or drop the extension and create it at {version} (its objects and the columns of its types go with it)",
                            match newer(&have_version, &version) {
                                true => " (a downgrade: PostgreSQL has none)",
                                false => "",
                            },
                            match reachable.is_empty() {
                                true => "it reaches no other version".to_string(),
                                false => format!("it reaches {}", reachable.join(", ")),
                            }
                        ));
                    }
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

    pub(super) fn ty(&mut self, d: &Difference) {
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
                (want @ TypeDef::Domain { .. }, have @ TypeDef::Domain { .. }) => {
                    self.domain_change(d, &n, want, have)
                }
                (TypeDef::Composite(want), TypeDef::Composite(have)) => {
                    self.composite_change(d, &n, want, have)
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

    /// A domain's base type (refused: it cannot change in place), default,
    /// CHECKs (added NOT VALID, then validated) and NOT NULL.
    fn domain_change(&mut self, d: &Difference, n: &str, want: &TypeDef, have: &TypeDef) {
        let (
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
        ) = (want, have)
        else {
            return;
        };
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
                let sql = format!("ALTER DOMAIN {n} ADD CONSTRAINT {c} {def} NOT VALID");
                let s = self.push(d, sql, "domain-add-check", Risk::Medium);
                s.reasons.push(
                    "new values are checked at once; existing ones by the VALIDATE after it".into(),
                );
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

    /// A composite type's attributes dropped, added or changed in type.
    fn composite_change(
        &mut self,
        d: &Difference,
        n: &str,
        want: &[(String, String)],
        have: &[(String, String)],
    ) {
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

    /// New values in place where the old ones keep their order; otherwise
    /// the type is made anew and its columns moved to it.
    pub(super) fn enum_change(&mut self, d: &Difference, want: &[String], have: &[String]) {
        let kept: Vec<&String> = want.iter().filter(|l| have.contains(l)).collect();
        let in_order = kept.len() == have.len() && kept.iter().zip(have).all(|(a, b)| *a == b);
        match in_order {
            true => self.enum_add_values(d, want, have),
            false => self.enum_recreate(d, want, have),
        }
    }

    /// Each value of `want` that `have` lacks added in place, before the
    /// next value kept (or after the one before it).
    fn enum_add_values(&mut self, d: &Difference, want: &[String], have: &[String]) {
        let n = &d.key.name;
        for (i, label) in want.iter().enumerate() {
            if have.contains(label) {
                continue;
            }
            let place = match want[i + 1..].iter().find(|l| have.contains(l)) {
                Some(next) => format!(" BEFORE {}", etl_base::sql::literal(next)),
                None => match want[..i].iter().rev().find(|l| have.contains(l)) {
                    Some(prev) => format!(" AFTER {}", etl_base::sql::literal(prev)),
                    None => String::new(),
                },
            };
            let sql = format!(
                "ALTER TYPE {n} ADD VALUE IF NOT EXISTS {}{place}",
                etl_base::sql::literal(label)
            );
            let s = self.push(d, sql, "enum-add-value", Risk::Low);
            s.reasons
                .push("adds a value in place; no table is read or rewritten".into());
            s.transactional = false;
        }
    }

    /// The type made anew: the old one renamed, the new one created, each
    /// column of it moved over, the old one dropped.
    fn enum_recreate(&mut self, d: &Difference, want: &[String], have: &[String]) {
        let n = d.key.name.clone();
        let removed: Vec<&String> = have.iter().filter(|l| !want.contains(l)).collect();
        let (schema, bare) = split_member(&n);
        let old_bare = format!("{}__etl_old", crate::diff::unquote(bare));
        let old = format!("{schema}.{}", etl_base::sql::ident(&old_bare));
        let sql = format!(
            "ALTER TYPE {n} RENAME TO {}",
            etl_base::sql::ident(&old_bare)
        );
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
            self.enum_move_column(d, &table, &c, &removed);
        }
        let s = self.push(
            d,
            format!("DROP TYPE {old}"),
            "enum-recreate",
            Risk::VeryHigh,
        );
        s.reasons.push("the old type, no longer used".into());
    }

    /// Column `c` of `table` moved to the enum made anew (its default
    /// dropped and set again around it), checked first for values the new
    /// type has not (`removed`).
    fn enum_move_column(&mut self, d: &Difference, table: &str, c: &Column, removed: &[&String]) {
        let n = &d.key.name;
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
            .get(table)
            .and_then(|t| t.column(col))
            .and_then(|w| w.default.clone());
        if let Some(def) = want_default {
            sql.push_str(&format!(
                "; ALTER TABLE {table} ALTER COLUMN {col} SET DEFAULT {def}"
            ));
        }
        let list: Vec<String> = removed.iter().map(|l| etl_base::sql::literal(l)).collect();
        let s = self.push(d, sql, "enum-recreate", Risk::VeryHigh);
        let test = match array {
            "" => format!("{col}::text IN ({})", list.join(", ")),
            _ => format!("{col}::text[] && ARRAY[{}]::text[]", list.join(", ")),
        };
        s.check = (!removed.is_empty()).then(|| {
            (
                format!("SELECT count(*) FROM {table} WHERE {test}"),
                format!("{{n}} rows of {table} hold a removed value in {col}; change them first"),
            )
        });
        self.on_table_last(table, Lock::AccessExclusive, Effect::Rewrite);
    }

    /// A collation made before what uses it (the plan's order by kind,
    /// and tables' dependencies on it); dropped after the columns of TO
    /// that use it have changed. PostgreSQL cannot change one in place.
    pub(super) fn collation(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        match d.change {
            Change::Added => {
                let sql = format!("CREATE COLLATION {n} {}", self.from.collations[&n]);
                let s = self.push(d, sql, "create-collation", Risk::Low);
                s.reasons.push("catalog only".into());
                s.rollback = Some(format!("DROP COLLATION {n}"));
            }
            Change::Removed => {
                let users: Vec<Key> = self
                    .to
                    .tables
                    .values()
                    .flat_map(|t| {
                        t.columns
                            .iter()
                            .filter(|c| super::columns::collation_of(&c.ty) == Some(n.as_str()))
                            .map(move |c| Key::new(Kind::Column, &format!("{}.{}", t.name, c.name)))
                    })
                    .collect();
                let def = self.to.collations[&n].clone();
                let s = self.push(
                    d,
                    format!("DROP COLLATION {n}"),
                    "drop-collation",
                    Risk::Medium,
                );
                s.reasons
                    .push("after the columns that used it have changed; fails while anything else uses it".into());
                s.rollback = Some(format!("CREATE COLLATION {n} {def}"));
                // Not with the drops at the start: after the changes of
                // the columns that use it.
                s.drop_phase = false;
                s.needs = users;
            }
            Change::Changed => {
                let fails = format!(
                    "collation {n} is defined otherwise on the target ({}; wanted {}), and PostgreSQL cannot alter a collation: make one of another name, move the columns to it, then drop the old one",
                    self.to.collations[&n], self.from.collations[&n]
                );
                let s = self.push(
                    d,
                    format!("-- collation {n} cannot be changed in place"),
                    "collation-changed",
                    Risk::VeryHigh,
                );
                s.fails = Some(fails);
            }
        }
    }

    pub(super) fn sequence(&mut self, d: &Difference) {
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
                    let gone = self.planned(Change::Removed, Kind::Table, t)
                        || self.planned(Change::Removed, Kind::Column, &format!("{t}.{c}"));
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

    pub(super) fn function(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        let word = |f: &crate::catalog::Function| {
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
}

pub(super) fn create_type(n: &str, def: &TypeDef) -> (String, String) {
    match def {
        TypeDef::Enum(labels) => {
            let list: Vec<String> = labels.iter().map(|l| etl_base::sql::literal(l)).collect();
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

/// Whether version `a` is after `b`, comparing the numbers of dotted
/// versions (`1.10` after `1.9`); other text compares as text.
fn newer(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Option<Vec<u64>> { v.split('.').map(|p| p.parse().ok()).collect() };
    match (parts(a), parts(b)) {
        (Some(a), Some(b)) => a > b,
        _ => a > b,
    }
}

#[cfg(test)]
mod tests {
    use super::newer;

    #[test]
    fn versions_compare_by_their_numbers() {
        assert!(newer("1.10", "1.9"));
        assert!(newer("1.8", "1.4"));
        assert!(!newer("1.4", "1.8"));
        assert!(!newer("2.0", "2.0"));
        assert!(newer("beta2", "beta1"));
    }
}
