//! Tables and partitions: created (with their foreign keys and row-level
//! security), dropped, and changed in place where PostgreSQL can.
use super::columns::column_def;
use super::*;

impl Rules<'_> {
    pub(super) fn table(&mut self, d: &Difference) {
        match d.change {
            Change::Added => self.table_added(d),
            Change::Removed => self.table_removed(d),
            Change::Changed => self.table_changed(d),
        }
    }

    /// A new table (or partition), its foreign keys after the tables they
    /// name, its row-level security once its policies are in.
    fn table_added(&mut self, d: &Difference) {
        let n = d.key.name.clone();
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
            let needs = self.referenced(c);
            let s = self.push(&dd, sql, "add-foreign-key-new-table", Risk::Low);
            s.rollback = Some(format!("ALTER TABLE {n} DROP CONSTRAINT {}", c.name));
            s.reasons
                .push("the new table is empty: nothing to validate".into());
            s.tables.push(n.clone());
            s.needs.extend(needs);
            if let Some((r, _)) = refs {
                if r != n {
                    self.on_table_last(&r, Lock::ShareRowExclusive, Effect::Brief);
                }
            }
        }
        // Row-level security of the new table, once its policies are in.
        if t.row_security.is_some() {
            self.row_security(&n, None, t.row_security);
        }
    }

    /// A table dropped, the views on it that stay dropped first.
    fn table_removed(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        // Views on it that FROM keeps (over what replaces it, a
        // view of the same name say) are dropped first and made
        // again after: DROP TABLE refuses while they stand.
        self.recreate_views_on(&n);
        let t = &self.to.tables[&n];
        let parent = t.partition_of.clone();
        let s = self.push(d, format!("DROP TABLE {n}"), "drop-table", Risk::VeryHigh);
        s.reasons.push(format!(
            "drops the table and its {} ({})",
            match t.rows < 0 {
                true => "rows (how many is unknown: never analyzed)".to_string(),
                false => rows_text(t.rows),
            },
            human::bytes(t.bytes.max(0) as u64)
        ));
        self.on_table_last(&n, Lock::AccessExclusive, Effect::Brief);
        if let Some((p, _)) = parent {
            self.on_table_last(&p, Lock::AccessExclusive, Effect::Brief);
        }
    }

    /// A table's persistence, inheritance, partition, row-level security
    /// or partitioning changed.
    fn table_changed(&mut self, d: &Difference) {
        let n = d.key.name.clone();
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
        if want.row_security != have.row_security {
            self.row_security(&n, have.row_security, want.row_security);
        }
        if want.partitioned_by != have.partitioned_by {
            match super::repartition::refusal(self, &n) {
                None => self.repartition(d, &n),
                Some(why) => {
                    let sql = format!("-- {n}: partitioning cannot change in place");
                    let s = self.push(d, sql, "repartition", Risk::VeryHigh);
                    s.fails = Some(format!(
                        "{n} is partitioned differently ({} on the target, {} wanted), and {why}",
                        have.partitioned_by.as_deref().unwrap_or("not partitioned"),
                        want.partitioned_by.as_deref().unwrap_or("not partitioned")
                    ));
                }
            }
        }
    }

    /// Row-level security turned on, forced, or off on table `n`, after
    /// its policies are in place (or before they go).
    fn row_security(&mut self, n: &str, have: Option<bool>, want: Option<bool>) {
        let n = n.to_string();
        let mut sql = Vec::new();
        match (have, want) {
            (_, None) => sql.push(format!("ALTER TABLE {n} DISABLE ROW LEVEL SECURITY")),
            (None, Some(_)) => sql.push(format!("ALTER TABLE {n} ENABLE ROW LEVEL SECURITY")),
            _ => {}
        }
        match want {
            Some(true) => sql.push(format!("ALTER TABLE {n} FORCE ROW LEVEL SECURITY")),
            Some(false) if have == Some(true) => {
                sql.push(format!("ALTER TABLE {n} NO FORCE ROW LEVEL SECURITY"))
            }
            _ => {}
        }
        let on = want.is_some();
        // After the policies are in place (or before they go).
        let needs: Vec<Key> = self
            .from
            .policies
            .iter()
            .filter(|(_, p)| p.table == n)
            .map(|(k, _)| Key::new(Kind::Policy, k))
            .collect();
        // Keyed apart from the table: its policies need the
        // table, and it needs them.
        let rls = Difference {
            key: Key::new(Kind::Policy, &n),
            change: Change::Changed,
            detail: vec![],
        };
        let s = self.push(&rls, sql.join("; "), "row-security", Risk::High);
        s.reasons.push(match on {
                true => "from now on roles other than the owner see only the rows a policy lets them (none where no policy applies)".to_string(),
                false => "from now on every role with a grant sees every row".to_string(),
            });
        s.needs = needs;
        self.on_table_last(&n, Lock::AccessExclusive, Effect::Brief);
        if self.added_table(&n) {
            let s = self.out.last_mut().expect("pushed");
            s.risk = Risk::Low;
            s.reasons.push("a new table: no one reads it yet".into());
        }
    }
}

/// `CREATE TABLE` with its columns and every constraint but the foreign
/// keys (added after the tables they name); and the tables it needs.
pub(super) fn create_table(t: &Table) -> (String, Vec<Key>) {
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
    // A child declares only its own columns: the rest come by INHERITS.
    let mut parts: Vec<String> = t
        .columns
        .iter()
        .filter(|c| c.local || t.inherits.is_empty())
        .map(column_def)
        .collect();
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
