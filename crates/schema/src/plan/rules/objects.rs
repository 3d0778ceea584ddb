//! Views, triggers, row-level security policies, grants, comments.
use super::*;

impl Rules<'_> {
    pub(super) fn view(&mut self, d: &Difference) {
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
                    self.view_members_again(&n);
                }
            }
        }
    }

    pub(super) fn trigger(&mut self, d: &Difference) {
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

    pub(super) fn policy(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        let create = |p: &crate::catalog::Policy| {
            let mut sql = format!(
                "CREATE POLICY {} ON {} AS {} FOR {} TO {}",
                p.name,
                p.table,
                if p.permissive {
                    "PERMISSIVE"
                } else {
                    "RESTRICTIVE"
                },
                p.command,
                p.roles.join(", ")
            );
            if let Some(u) = &p.using {
                sql.push_str(&format!(" USING ({u})"));
            }
            if let Some(c) = &p.check {
                sql.push_str(&format!(" WITH CHECK ({c})"));
            }
            sql
        };
        let drop = |p: &crate::catalog::Policy| format!("DROP POLICY {} ON {}", p.name, p.table);
        let (sql, rule, risk, table, undo) = match d.change {
            Change::Added => {
                let p = &self.from.policies[&n];
                (
                    create(p),
                    "create-policy",
                    Risk::Medium,
                    p.table.clone(),
                    Some(drop(p)),
                )
            }
            Change::Removed => {
                let p = &self.to.policies[&n];
                (
                    drop(p),
                    "drop-policy",
                    Risk::High,
                    p.table.clone(),
                    Some(create(p)),
                )
            }
            Change::Changed => {
                let (p, h) = (&self.from.policies[&n], &self.to.policies[&n]);
                // One transaction: no moment without the policy.
                (
                    format!("{}; {}", drop(h), create(p)),
                    "replace-policy",
                    Risk::Medium,
                    p.table.clone(),
                    Some(format!("{}; {}", drop(p), create(h))),
                )
            }
        };
        let s = self.push(d, sql, rule, risk);
        s.drop_phase = false;
        s.rollback = undo;
        s.reasons
            .push("changes which rows roles see or may write, at once".into());
        self.on_table_last(&table, Lock::AccessExclusive, Effect::Brief);
    }

    /// A privilege granted beyond its object's defaults (`... TO role`),
    /// or a default revoked (`... FROM role`).
    pub(super) fn grant(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        let (object, grantee, revoked) = match (n.rsplit_once(" TO "), n.rsplit_once(" FROM ")) {
            (Some((o, g)), _) => (o.to_string(), g.to_string(), false),
            (None, Some((o, g))) => (o.to_string(), g.to_string(), true),
            _ => return,
        };
        let privileges = |p: Option<&String>| -> Vec<String> {
            p.map(|p| p.split(", ").map(str::to_string).collect())
                .unwrap_or_default()
        };
        let want = privileges(self.from.grants.get(&n));
        let have = privileges(self.to.grants.get(&n));
        let bare = |p: &str| p.trim_end_matches(" WITH GRANT OPTION").to_string();
        // For a revoked default the roles swap: what FROM revokes more is
        // revoked, what TO revokes more is granted back.
        let (take, give): (Vec<&String>, Vec<&String>) = match revoked {
            false => (
                have.iter().filter(|p| !want.contains(p)).collect(),
                want.iter().filter(|p| !have.contains(p)).collect(),
            ),
            true => (
                want.iter().filter(|p| !have.contains(p)).collect(),
                have.iter().filter(|p| !want.contains(p)).collect(),
            ),
        };
        let name = object.split_once(' ').map_or("", |(_, n)| n).to_string();
        let needs: Vec<Key> = [
            Kind::Table,
            Kind::View,
            Kind::Sequence,
            Kind::Schema,
            Kind::Function,
        ]
        .into_iter()
        .map(|k| Key::new(k, &name))
        .collect();
        if !take.is_empty() {
            let list: Vec<String> = take.iter().map(|p| bare(p)).collect();
            let sql = format!("REVOKE {} ON {object} FROM {grantee}", list.join(", "));
            let s = self.push(d, sql, "revoke", Risk::Medium);
            s.drop_phase = false;
            s.needs = needs.clone();
            s.reasons.push(format!(
                "{grantee} loses {} at once: its queries fail after it",
                list.join(", ")
            ));
            s.rollback = Some(format!(
                "GRANT {} ON {object} TO {grantee}",
                list.join(", ")
            ));
        }
        for option in ["", " WITH GRANT OPTION"] {
            let list: Vec<String> = give
                .iter()
                .filter(|g| g.ends_with(" WITH GRANT OPTION") != option.is_empty())
                .map(|g| bare(g))
                .collect();
            if list.is_empty() {
                continue;
            }
            let sql = format!("GRANT {} ON {object} TO {grantee}{option}", list.join(", "));
            let s = self.push(d, sql, "grant", Risk::Low);
            s.drop_phase = false;
            s.needs = needs.clone();
            s.reasons.push("catalog only".into());
            s.rollback = Some(format!(
                "REVOKE {} ON {object} FROM {grantee}",
                list.join(", ")
            ));
        }
    }

    pub(super) fn comment(&mut self, d: &Difference) {
        let n = d.key.name.clone();
        let text = match d.change {
            Change::Removed => "NULL".to_string(),
            _ => etl_base::sql::literal(&self.from.comments[&n]),
        };
        let undo = match self.to.comments.get(&n) {
            Some(t) => etl_base::sql::literal(t),
            None => "NULL".to_string(),
        };
        let s = self.push(d, format!("COMMENT ON {n} IS {text}"), "comment", Risk::Low);
        s.drop_phase = false;
        s.reasons.push("catalog only".into());
        s.rollback = Some(format!("COMMENT ON {n} IS {undo}"));
    }
}

pub(super) fn body(def: &str) -> &str {
    def.trim().trim_end_matches(';')
}

pub(super) fn create_view(v: &View) -> String {
    match v.materialized {
        true => format!("CREATE MATERIALIZED VIEW {} AS {}", v.name, body(&v.def)),
        false => format!("CREATE VIEW {} AS {}", v.name, body(&v.def)),
    }
}

pub(super) fn drop_view(v: &View) -> String {
    match v.materialized {
        true => format!("DROP MATERIALIZED VIEW {}", v.name),
        false => format!("DROP VIEW {}", v.name),
    }
}

impl Rules<'_> {
    /// A view on a table whose column changes type must be dropped first
    /// and made again after (PostgreSQL refuses the change otherwise); the
    /// views listed as changed are made again by [`Rules::view`].
    pub(super) fn recreate_views_on(&mut self, table: &str) {
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
                self.view_members_again(&v);
            }
        }
    }

    /// What a view dropped and made again (under a type change, or for
    /// its new columns) loses with it, made again as FROM has it: a
    /// materialized view's indexes, comments (the view's and its
    /// columns'), grants, triggers; each after the view. Those the diff
    /// lists are made by their own rules.
    fn view_members_again(&mut self, view: &str) {
        let added = |kind, name: &String| Difference {
            key: Key::new(kind, name),
            change: Change::Added,
            detail: vec![],
        };
        // A member the diff lists is made by its own rule.
        let listed = |kind: Kind, name: &String| {
            self.diffs
                .iter()
                .any(|d| d.key.kind == kind && &d.key.name == name)
        };
        let first = self.out.len();
        let indexes: Vec<String> = self
            .from
            .indexes
            .iter()
            .filter(|(k, i)| i.table == view && !listed(Kind::Index, k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &indexes {
            self.index(&added(Kind::Index, k));
        }
        let comments: Vec<String> = self
            .from
            .comments
            .keys()
            .filter(|k| {
                (*k == &format!("VIEW {view}")
                    || *k == &format!("MATERIALIZED VIEW {view}")
                    || k.starts_with(&format!("COLUMN {view}.")))
                    && !listed(Kind::Comment, k)
            })
            .cloned()
            .collect();
        for k in &comments {
            self.comment(&added(Kind::Comment, k));
        }
        let grants: Vec<String> = self
            .from
            .grants
            .keys()
            .filter(|k| {
                (k.starts_with(&format!("TABLE {view} TO "))
                    || k.starts_with(&format!("TABLE {view} FROM ")))
                    && !listed(Kind::Grant, k)
            })
            .cloned()
            .collect();
        for k in &grants {
            self.grant(&added(Kind::Grant, k));
        }
        // Its triggers (INSTEAD OF on a view).
        let triggers: Vec<String> = self
            .from
            .triggers
            .iter()
            .filter(|(k, t)| t.table == view && !listed(Kind::Trigger, k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &triggers {
            self.trigger(&added(Kind::Trigger, k));
        }
        for s in &mut self.out[first..] {
            s.needs.push(Key::new(Kind::View, view));
            s.reasons.push(format!("{view} is made again without it"));
        }
    }
}
