//! Constraints and indexes: NOT VALID then VALIDATE, keys from unique
//! indexes built CONCURRENTLY, the counts that say a statement would fail.
use super::*;

impl Rules<'_> {
    pub(super) fn constraint(&mut self, d: &Difference) {
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
                } else if want.kind == 'f'
                    && without_deferral(&want.def) == without_deferral(&have.def)
                {
                    // Only when it is checked changed: said in place,
                    // nothing scanned, the rows already keep it.
                    let wanted = match deferral(&want.def) {
                        d if d.is_empty() => " NOT DEFERRABLE".to_string(),
                        d => d,
                    };
                    let undo = match deferral(&have.def) {
                        d if d.is_empty() => " NOT DEFERRABLE".to_string(),
                        d => d,
                    };
                    let sql = format!("ALTER TABLE {table} ALTER CONSTRAINT {name}{wanted}");
                    let s = self.push(d, sql, "alter-constraint-deferral", Risk::Low);
                    s.reasons.push(
                        "when the key is checked (deferral) changes; nothing is scanned".into(),
                    );
                    s.rollback = Some(format!("ALTER TABLE {table} ALTER CONSTRAINT {name}{undo}"));
                    self.on_table_last(&table, Lock::AccessExclusive, Effect::Brief);
                } else {
                    self.drop_constraint(d, &table, &have);
                    self.out.last_mut().expect("pushed").drop_phase = true;
                    self.add_constraint(d, &table, &want);
                }
            }
        }
    }

    pub(super) fn drop_constraint(&mut self, d: &Difference, table: &str, c: &Constraint) {
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

    pub(super) fn add_constraint(&mut self, d: &Difference, table: &str, c: &Constraint) {
        let undo = format!("ALTER TABLE {table} DROP CONSTRAINT {}", c.name);
        let partitioned = self
            .to
            .tables
            .get(table)
            .is_some_and(|t| t.partitioned_by.is_some());
        match c.kind {
            'c' | 'f' if !partitioned || c.kind == 'c' => self.add_not_valid(d, table, c, undo),
            'p' | 'u' if !partitioned => self.add_using_index(d, table, c, undo),
            _ => self.add_under_lock(d, table, c, undo),
        }
    }

    /// A check or foreign key added NOT VALID (new rows checked at once),
    /// then validated.
    fn add_not_valid(&mut self, d: &Difference, table: &str, c: &Constraint, undo: String) {
        let name = &c.name;
        let sql = format!(
            "ALTER TABLE {table} ADD CONSTRAINT {name} {} NOT VALID",
            c.def
        );
        let (rule, lock) = match c.kind {
            'f' => ("add-foreign-key-not-valid", Lock::ShareRowExclusive),
            _ => ("add-check-not-valid", Lock::AccessExclusive),
        };
        let needs = self.referenced(c);
        let s = self.push(d, sql, rule, Risk::Medium);
        s.reasons.push(
            "NOT VALID: new rows are checked at once, existing ones by the VALIDATE after it"
                .into(),
        );
        s.rollback = Some(undo);
        s.needs.extend(needs);
        self.on_table_last(table, lock, Effect::Brief);
        if let Some((r, _)) = &c.references {
            if r != table {
                self.on_table_last(r, Lock::ShareRowExclusive, Effect::Brief);
            }
        }
        self.validate(d, table, c);
    }

    /// A primary key or unique constraint: its unique index built first,
    /// CONCURRENTLY (or one left by an earlier apply taken over), then the
    /// constraint made on it.
    fn add_using_index(&mut self, d: &Difference, table: &str, c: &Constraint, undo: String) {
        let name = &c.name;
        let index_name = name.clone();
        let existing = self.to.indexes.get(&qualified_index(table, &index_name));
        let reuse = existing.is_some_and(|i| i.valid && i.unique);
        let qualified = qualified_index(table, &index_name);
        if existing.is_some() && !reuse {
            // Left INVALID by an interrupted build: made again.
            let sql = format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}");
            let s = self.push(d, sql, "drop-index", Risk::Medium);
            s.transactional = false;
            s.reasons.push(
                "an INVALID or non-unique index of the key's name (an interrupted build): made again"
                    .into(),
            );
            self.on_table_last(table, Lock::ShareUpdateExclusive, Effect::Brief);
        }
        if !reuse {
            let def = c.index_def.clone().unwrap_or_default();
            let sql = concurrently(&def);
            let cleanup = format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}");
            let s = self.push(d, sql, "add-unique-index", Risk::High);
            s.cleanup = Some(cleanup);
            s.reasons.push(
                "builds the key's unique index first, CONCURRENTLY; fails on duplicates".into(),
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
        // The index carries no deferral: the constraint says it.
        let sql = format!(
            "ALTER TABLE {table} ADD CONSTRAINT {name} {word} USING INDEX {index_name}{}",
            deferral(&c.def)
        );
        let s = self.push(d, sql, "add-constraint-using-index", Risk::Medium);
        s.reasons
            .push("takes over the index built before it".into());
        s.rollback = Some(undo);
        self.on_table_last(table, Lock::AccessExclusive, Effect::Brief);
    }

    /// What can only be added under the table's lock, checking every row:
    /// an exclusion constraint, or a key on a partitioned table.
    fn add_under_lock(&mut self, d: &Difference, table: &str, c: &Constraint, undo: String) {
        let name = &c.name;
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

    /// What a foreign key waits on: the table it references and, made in
    /// the same plan, the key or unique constraint there on its columns
    /// (PostgreSQL needs that key first).
    pub(super) fn referenced(&self, c: &Constraint) -> Vec<Key> {
        let Some((r, cols)) = &c.references else {
            return Vec::new();
        };
        let mut keys = vec![Key::new(Kind::Table, r)];
        let same = |a: &[String]| a.len() == cols.len() && a.iter().all(|x| cols.contains(x));
        if let Some(t) = self.from.tables.get(r) {
            keys.extend(
                t.constraints
                    .values()
                    .filter(|k| matches!(k.kind, 'p' | 'u') && same(&k.columns))
                    .map(|k| Key::new(Kind::Constraint, &format!("{r}.{}", k.name))),
            );
        }
        keys
    }

    pub(super) fn validate(&mut self, d: &Difference, table: &str, c: &Constraint) {
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

    pub(super) fn index(&mut self, d: &Difference) {
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
                false => (format!("DROP INDEX CONCURRENTLY IF EXISTS {n}"), false),
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
                self.on_table_last(&want.table.clone(), Lock::Share, Effect::Index);
            } else {
                let (rule, risk) = match want.unique {
                    true => ("create-unique-index", Risk::High),
                    false => ("create-index", Risk::Medium),
                };
                let s = self.push(d, concurrently(&want.def), rule, risk);
                // A build stopped by a lock timeout leaves an INVALID index.
                s.cleanup = Some(format!("DROP INDEX CONCURRENTLY IF EXISTS {n}"));
                s.transactional = false;
                s.rollback = Some(undo);
                if want.unique {
                    s.reasons.push("fails on duplicate keys".into());
                    s.check = Some(duplicates_check(&want.table, &want.columns, false));
                }
                self.on_table_last(
                    &want.table.clone(),
                    Lock::ShareUpdateExclusive,
                    Effect::Index,
                );
            }
        }
    }
}

/// `CREATE [UNIQUE] INDEX CONCURRENTLY name ON ...`.
pub(super) fn concurrently(def: &str) -> String {
    match def.find(" INDEX ") {
        Some(i) => format!("{} INDEX CONCURRENTLY {}", &def[..i], &def[i + 7..]),
        None => def.to_string(),
    }
}

/// The index of a key constraint: same schema as the table.
pub(super) fn qualified_index(table: &str, name: &str) -> String {
    let (schema, _) = split_member(table);
    if schema.is_empty() {
        name.to_string()
    } else {
        format!("{schema}.{name}")
    }
}

pub(super) fn duplicates_check(table: &str, columns: &[String], primary: bool) -> (String, String) {
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

/// A constraint definition's deferral as `pg_get_constraintdef` prints
/// it: ` DEFERRABLE INITIALLY DEFERRED`, ` DEFERRABLE`, or nothing.
fn deferral(def: &str) -> String {
    if def.ends_with(" DEFERRABLE INITIALLY DEFERRED") {
        " DEFERRABLE INITIALLY DEFERRED".into()
    } else if def.ends_with(" DEFERRABLE") {
        " DEFERRABLE".into()
    } else {
        String::new()
    }
}

/// The definition without its deferral.
fn without_deferral(def: &str) -> &str {
    def.trim_end_matches(" DEFERRABLE INITIALLY DEFERRED")
        .trim_end_matches(" DEFERRABLE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn indexes_are_built_concurrently() {
        assert_eq!(
            concurrently("CREATE UNIQUE INDEX t_a ON public.t USING btree (a)"),
            "CREATE UNIQUE INDEX CONCURRENTLY t_a ON public.t USING btree (a)"
        );
    }
}
