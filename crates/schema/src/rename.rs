//! `--rename OLD=NEW`: a table or column of TO that is the renamed one of
//! FROM, compared as one object (a rename, not a drop and an add).
//!
//! TO's catalog is rewritten as if the rename had run: the object's name,
//! and every place the catalog prints it (keys, comments, dependencies,
//! foreign keys naming the table, index and constraint definitions naming
//! the column), so that nothing else shows as changed because of it. The
//! diff then carries the rename as a change of the object's new name.

use std::collections::BTreeMap;

use super::catalog::{split_member, Catalog};
use super::diff::unquote;
use super::{Key, Kind, SchemaError};

/// A rename as the user wrote it, resolved against TO.
#[derive(Debug, Clone, PartialEq)]
pub enum Rename {
    /// `schema.old` -> `schema.new` (same schema).
    Table { old: String, new: String },
    /// In `table`, `old` -> `new`.
    Column {
        table: String,
        old: String,
        new: String,
    },
}

impl Rename {
    /// `public.orders=public.purchases` or `public.orders.amount=total`
    /// (names as `quote_ident` writes them).
    pub fn parse(text: &str, to: &Catalog) -> Result<Rename, SchemaError> {
        let bad = |why: String| SchemaError::Targets(format!("--rename {text:?}: {why}"));
        let (old, new) = text.split_once('=').ok_or_else(|| {
            bad(
                "write OLD=NEW (public.orders=public.purchases, or public.orders.amount=total)"
                    .into(),
            )
        })?;
        let (old, new) = (old.trim().to_string(), new.trim().to_string());
        if to.tables.contains_key(&old) {
            let (schema, _) = split_member(&old);
            let new = if split_member(&new).0.is_empty() {
                format!("{schema}.{new}")
            } else {
                new
            };
            if split_member(&new).0 != schema {
                return Err(bad(format!(
                    "a rename stays in schema {schema}; moving a table to another schema (ALTER TABLE ... SET SCHEMA) is not planned"
                )));
            }
            return Ok(Rename::Table { old, new });
        }
        let (table, column) = split_member(&old);
        match to.tables.get(table) {
            Some(t) if t.column(column).is_some() => Ok(Rename::Column {
                table: table.to_string(),
                old: column.to_string(),
                new,
            }),
            Some(_) => Err(bad(format!("{table} has no column {column} on the target"))),
            None => Err(bad(format!(
                "the target has no table {old} (nor table {table} with a column {column})"
            ))),
        }
    }

    /// The key the renamed object has in FROM, and where it came from.
    pub fn shown(&self) -> (Key, String) {
        match self {
            Rename::Table { old, new } => {
                (Key::new(Kind::Table, new), format!("renamed from {old}"))
            }
            Rename::Column { table, old, new } => (
                Key::new(Kind::Column, &format!("{table}.{new}")),
                format!("renamed from {old}"),
            ),
        }
    }

    /// The statement that renames it on TO.
    pub fn sql(&self) -> String {
        match self {
            Rename::Table { old, new } => {
                format!("ALTER TABLE {old} RENAME TO {}", split_member(new).1)
            }
            Rename::Column { table, old, new } => {
                format!("ALTER TABLE {table} RENAME COLUMN {old} TO {new}")
            }
        }
    }

    /// The statement that undoes it.
    pub fn undo(&self) -> String {
        match self {
            Rename::Table { old, new } => {
                format!("ALTER TABLE {new} RENAME TO {}", split_member(old).1)
            }
            Rename::Column { table, old, new } => {
                format!("ALTER TABLE {table} RENAME COLUMN {new} TO {old}")
            }
        }
    }

    /// TO's catalog as if the rename had run.
    pub fn rewrite(&self, to: &mut Catalog) {
        match self {
            Rename::Table { old, new } => rewrite_table(to, old, new),
            Rename::Column { table, old, new } => rewrite_column(to, table, old, new),
        }
    }
}

fn rename_in(name: &mut String, old: &str, new: &str) {
    if name == old {
        *name = new.to_string();
    }
}

fn moved(key: &str, prefix: &str, new: &str) -> String {
    match key.strip_prefix(prefix) {
        Some(rest) => format!("{new}.{rest}"),
        None => key.to_string(),
    }
}

fn rename_keys(depends: &mut BTreeMap<Key, Vec<Key>>, f: impl Fn(&Key) -> Option<String>) {
    let fix = |k: Key| match f(&k) {
        Some(name) => Key::new(k.kind, &name),
        None => k,
    };
    *depends = std::mem::take(depends)
        .into_iter()
        .map(|(k, v)| (fix(k), v.into_iter().map(fix).collect()))
        .collect();
}

/// `old` as a whole identifier (not inside a longer name or a string
/// literal) replaced by `new`.
fn replace_ident(text: &str, old: &str, new: &str) -> String {
    let bare = unquote(old) == old;
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let ch = rest.chars().next().expect("inside the text");
        if ch == '\'' {
            in_string = !in_string;
        }
        let before_ok = i == 0 || !text[..i].chars().next_back().is_some_and(word);
        if !in_string && before_ok && rest.starts_with(old) {
            let after = rest[old.len()..].chars().next();
            if !bare || !after.is_some_and(word) {
                out.push_str(new);
                i += old.len();
                continue;
            }
        }
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// TO's catalog as if table `old` were `new`: its key, and every place
/// the catalog names it.
fn rewrite_table(to: &mut Catalog, old: &str, new: &str) {
    if let Some(mut t) = to.tables.remove(old) {
        t.name = new.to_string();
        to.tables.insert(new.to_string(), t);
    }
    let references = format!("REFERENCES {old}(");
    let now = format!("REFERENCES {new}(");
    for t in to.tables.values_mut() {
        if let Some((p, _)) = &mut t.partition_of {
            rename_in(p, old, new);
        }
        for p in &mut t.inherits {
            rename_in(p, old, new);
        }
        for c in t.constraints.values_mut() {
            c.def = c.def.replace(&references, &now);
            if let Some((r, _)) = &mut c.references {
                rename_in(r, old, new);
            }
        }
    }
    for i in to.indexes.values_mut() {
        rename_in(&mut i.table, old, new);
        i.def = i
            .def
            .replace(&format!(" ON {old} "), &format!(" ON {new} "));
        i.def = i
            .def
            .replace(&format!(" ON ONLY {old} "), &format!(" ON ONLY {new} "));
    }
    for s in to.sequences.values_mut() {
        if let Some((t, _)) = &mut s.owned_by {
            rename_in(t, old, new);
        }
    }
    let prefix = format!("{old}.");
    to.triggers = std::mem::take(&mut to.triggers)
        .into_iter()
        .map(|(k, mut t)| {
            rename_in(&mut t.table, old, new);
            t.def = t
                .def
                .replace(&format!(" ON {old} "), &format!(" ON {new} "));
            (moved(&k, &prefix, new), t)
        })
        .collect();
    to.comments = std::mem::take(&mut to.comments)
        .into_iter()
        .map(|(k, v)| {
            let k = k
                .replace(&format!("TABLE {old}"), &format!("TABLE {new}"))
                .replace(&format!("COLUMN {old}."), &format!("COLUMN {new}."))
                .replace(&format!(" ON {old}"), &format!(" ON {new}"));
            (k, v)
        })
        .collect();
    rename_keys(&mut to.depends, |k| match k.kind {
        Kind::Table if k.name == *old => Some(new.to_string()),
        Kind::Column | Kind::Constraint | Kind::Trigger if k.name.starts_with(&prefix) => {
            Some(moved(&k.name, &prefix, new))
        }
        _ => None,
    });
}

/// TO's catalog as if `table`'s column `old` were `new`.
fn rewrite_column(to: &mut Catalog, table: &str, old: &str, new: &str) {
    let Some(t) = to.tables.get_mut(table) else {
        return;
    };
    if let Some(c) = t.columns.iter_mut().find(|c| c.name == *old) {
        c.name = new.to_string();
    }
    for c in t.constraints.values_mut() {
        c.def = replace_ident(&c.def, old, new);
        for x in &mut c.columns {
            if x == old {
                *x = new.to_string();
            }
        }
    }
    // Foreign keys of other tables naming the column.
    for other in to.tables.values_mut() {
        for c in other.constraints.values_mut() {
            if let Some((r, cols)) = &mut c.references {
                if r == table && cols.iter().any(|c| c == old) {
                    for x in cols.iter_mut() {
                        if x == old {
                            *x = new.to_string();
                        }
                    }
                    if let Some(at) = c.def.find(&format!("REFERENCES {table}(")) {
                        let (head, tail) = c.def.split_at(at);
                        c.def = format!("{head}{}", replace_ident(tail, old, new));
                    }
                }
            }
        }
    }
    for i in to.indexes.values_mut().filter(|i| i.table == *table) {
        i.def = replace_ident(&i.def, old, new);
        for x in &mut i.columns {
            if x == old {
                *x = new.to_string();
            }
        }
    }
    if let Some(text) = to.comments.remove(&format!("COLUMN {table}.{old}")) {
        to.comments.insert(format!("COLUMN {table}.{new}"), text);
    }
    let (from, into) = (format!("{table}.{old}"), format!("{table}.{new}"));
    rename_keys(&mut to.depends, |k| {
        (k.kind == Kind::Column && k.name == from).then(|| into.clone())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_is_renamed_as_a_whole_word_outside_strings() {
        assert_eq!(
            replace_ident(
                "CHECK ((amount > 0) AND (amount_max > amount) AND (x <> 'amount'))",
                "amount",
                "total"
            ),
            "CHECK ((total > 0) AND (amount_max > total) AND (x <> 'amount'))"
        );
        assert_eq!(
            replace_ident(
                "CREATE INDEX i ON public.t USING btree (amount)",
                "amount",
                "total"
            ),
            "CREATE INDEX i ON public.t USING btree (total)"
        );
    }
}
