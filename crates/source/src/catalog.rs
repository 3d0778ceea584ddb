//! What a source's catalog holds, as a migration needs it: each table's
//! primary key, auto-numbered columns and indexes, the foreign keys
//! between tables, and the order to load them in. Read from ODBC and
//! MDBTools by [`crate::odbc::catalog`], from an Access file by
//! [`crate::access`].

use std::collections::{BTreeMap, BTreeSet};

/// A source table's keys and indexes, as far as the source tells.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub primary_key: Vec<String>,
    /// Auto-numbered columns (AutoNumber, identity): their target sequence
    /// is reset to the loaded maximum.
    pub identity: Vec<String>,
    pub indexes: Vec<Index>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub name: String,
    pub unique: bool,
    pub columns: Vec<String>,
}

/// A foreign key between two source tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub name: String,
    pub table: String,
    pub columns: Vec<String>,
    pub parent: String,
    pub parent_columns: Vec<String>,
    /// `ON UPDATE` / `ON DELETE` (what the source says; no action when it
    /// does not).
    pub on_update: Action,
    pub on_delete: Action,
}

/// What a foreign key does to the child rows when its parent row changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Action {
    #[default]
    NoAction,
    Cascade,
}

impl Action {
    /// The clause after `ON UPDATE` / `ON DELETE`, `None` for the default.
    pub fn sql(self) -> Option<&'static str> {
        match self {
            Action::NoAction => None,
            Action::Cascade => Some("CASCADE"),
        }
    }
}

/// Keys of every table and the foreign keys between them.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub keys: BTreeMap<String, Keys>,
    pub foreign_keys: Vec<ForeignKey>,
    /// What the source has that is not created, and why (the plan lists
    /// them).
    pub left_out: Vec<String>,
    /// Where the keys came from, for the plan.
    pub keys_from: String,
}

/// Tables in load order: parents before children where the foreign keys
/// allow; tables in a cycle follow in name order (constraints are added
/// after all data, so a cycle never blocks a load).
pub fn load_order(tables: &[String], foreign_keys: &[ForeignKey]) -> (Vec<String>, Vec<String>) {
    let mut parents: BTreeMap<&str, BTreeSet<&str>> = tables
        .iter()
        .map(|t| (t.as_str(), BTreeSet::new()))
        .collect();
    for fk in foreign_keys {
        if fk.table != fk.parent {
            if let Some(p) = parents.get_mut(fk.table.as_str()) {
                p.insert(fk.parent.as_str());
            }
        }
    }
    let mut order: Vec<String> = Vec::new();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    loop {
        let ready: Vec<&str> = parents
            .iter()
            .filter(|(t, ps)| {
                !placed.contains(*t)
                    && ps
                        .iter()
                        .all(|p| placed.contains(p) || !parents_has(tables, p))
            })
            .map(|(t, _)| *t)
            .collect();
        if ready.is_empty() {
            break;
        }
        for t in ready {
            placed.insert(t);
            order.push(t.to_string());
        }
    }
    let cycle: Vec<String> = tables
        .iter()
        .filter(|t| !placed.contains(t.as_str()))
        .cloned()
        .collect();
    order.extend(cycle.iter().cloned());
    (order, cycle)
}

fn parents_has(tables: &[String], name: &str) -> bool {
    tables.iter().any(|t| t == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_load_first_and_a_cycle_does_not_block() {
        let fk = |t: &str, p: &str| ForeignKey {
            name: format!("{t}_{p}"),
            table: t.into(),
            columns: vec!["x".into()],
            parent: p.into(),
            parent_columns: vec!["x".into()],
            on_update: Action::NoAction,
            on_delete: Action::NoAction,
        };
        let tables: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        // a -> b -> c (c is the root parent); d <-> e is a cycle; a self-reference on c.
        let fks = [
            fk("a", "b"),
            fk("b", "c"),
            fk("d", "e"),
            fk("e", "d"),
            fk("c", "c"),
        ];
        let (order, cycle) = load_order(&tables, &fks);
        assert_eq!(order, ["c", "b", "a", "d", "e"]);
        assert_eq!(cycle, ["d", "e"]);
    }
}
