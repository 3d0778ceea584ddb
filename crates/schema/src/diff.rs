//! Two catalogs compared by name: what the wanted schema (FROM) has that
//! the database to change (TO) lacks, what TO has too much, and what
//! differs, with the detail a person reads (`type integer -> bigint`).
//! Members of a table that is added or removed whole (its columns,
//! constraints, indexes, triggers) are not listed again.

use std::collections::BTreeMap;

use super::catalog::{Catalog, Column, Constraint, Sequence, Table, TypeDef};
use super::{Key, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// In FROM only: to create.
    Added,
    /// In TO only: to drop.
    Removed,
    /// In both, different.
    Changed,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Difference {
    #[serde(flatten)]
    pub key: Key,
    pub change: Change,
    /// What differs, for `Changed` (`type integer -> bigint`).
    pub detail: Vec<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = match self.change {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Changed => '~',
        };
        write!(f, "{sign} {}", self.key)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail.join("; "))?;
        }
        Ok(())
    }
}

/// The name of the helper CHECK etl adds before `SET NOT NULL` (so the
/// SET NOT NULL does not scan under its ACCESS EXCLUSIVE lock), dropped
/// after it; an identifier `quote_ident` leaves bare, as the catalog
/// prints names.
pub fn not_null_helper(column: &str) -> String {
    let raw = unquote(column);
    let bare = !raw.is_empty()
        && raw.len() <= 40
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare {
        format!("{raw}_etl_not_null")
    } else {
        // FNV-1a: any column name, a short stable identifier.
        let hash = raw.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
        format!("etl_not_null_{:016x}", hash)
    }
}

/// A name as `quote_ident` printed it, without its quotes.
pub fn unquote(name: &str) -> String {
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => name.to_string(),
    }
}

/// Compares each kind of object by name.
pub fn diff(from: &Catalog, to: &Catalog) -> Vec<Difference> {
    let mut out = Vec::new();
    let unit = |_: &(), _: &()| Vec::new();
    compare(&mut out, Kind::Schema, &from.schemas, &to.schemas, unit);
    let (f, t) = (&from.extensions, &to.extensions);
    compare(&mut out, Kind::Extension, f, t, extension_detail);
    let (f, t) = (&from.collations, &to.collations);
    compare(&mut out, Kind::Collation, f, t, |a, b| {
        changed(a != b, &format!("{b} -> {a}"))
    });
    compare(&mut out, Kind::Type, &from.types, &to.types, type_detail);
    let (f, t) = (&from.sequences, &to.sequences);
    compare(&mut out, Kind::Sequence, f, t, sequence_detail);
    let (f, t) = (&from.functions, &to.functions);
    compare(&mut out, Kind::Function, f, t, |a, b| {
        changed(a.def != b.def, "definition")
    });
    // Tables: the table itself, then its columns and constraints.
    compare(
        &mut out,
        Kind::Table,
        &from.tables,
        &to.tables,
        table_detail,
    );
    table_members(&mut out, from, to);
    compare(&mut out, Kind::Index, &from.indexes, &to.indexes, |a, b| {
        let mut d = Vec::new();
        if a.def != b.def {
            d.push(format!("{} -> {}", b.def, a.def));
        }
        if !b.valid {
            d.push("INVALID on the target (an interrupted CREATE INDEX CONCURRENTLY)".into());
        }
        d
    });
    compare(&mut out, Kind::View, &from.views, &to.views, |a, b| {
        let mut d = Vec::new();
        if a.materialized != b.materialized {
            d.push(format!(
                "materialized {} -> {}",
                b.materialized, a.materialized
            ));
        }
        d.extend(changed(a.def != b.def, "definition"));
        d
    });
    let (f, t) = (&from.triggers, &to.triggers);
    compare(&mut out, Kind::Trigger, f, t, |a, b| {
        changed(a.def != b.def, &format!("{} -> {}", b.def, a.def))
    });
    let (f, t) = (&from.policies, &to.policies);
    compare(&mut out, Kind::Policy, f, t, |a, b| {
        changed(a != b, "definition")
    });
    compare(&mut out, Kind::Grant, &from.grants, &to.grants, |a, b| {
        changed(a != b, &format!("{b} -> {a}"))
    });
    let (f, t) = (&from.comments, &to.comments);
    compare(&mut out, Kind::Comment, f, t, |a, b| {
        changed(a != b, &format!("{b:?} -> {a:?}"))
    });
    leave_out_what_goes_with_removed(&mut out, to);
    out
}

/// `what have -> want`, `none` standing for an absent value.
fn from_to(what: &str, have: Option<&str>, want: Option<&str>, none: &str) -> String {
    format!(
        "{what} {} -> {}",
        have.unwrap_or(none),
        want.unwrap_or(none)
    )
}

/// `what` when `differs`.
fn changed(differs: bool, what: &str) -> Vec<String> {
    match differs {
        true => vec![what.to_string()],
        false => Vec::new(),
    }
}

/// An extension's schema and version.
fn extension_detail(a: &(String, String), b: &(String, String)) -> Vec<String> {
    let mut d = Vec::new();
    if a.0 != b.0 {
        d.push(format!("schema {} -> {}", b.0, a.0));
    }
    if a.1 != b.1 {
        d.push(format!("version {} -> {}", b.1, a.1));
    }
    d
}

fn sequence_detail(a: &Sequence, b: &Sequence) -> Vec<String> {
    let pairs = [
        ("type", a.ty.clone(), b.ty.clone()),
        ("start", a.start.to_string(), b.start.to_string()),
        (
            "increment",
            a.increment.to_string(),
            b.increment.to_string(),
        ),
        ("minvalue", a.min.to_string(), b.min.to_string()),
        ("maxvalue", a.max.to_string(), b.max.to_string()),
        ("cache", a.cache.to_string(), b.cache.to_string()),
        ("cycle", a.cycle.to_string(), b.cycle.to_string()),
        ("owned by", owner(&a.owned_by), owner(&b.owned_by)),
    ];
    pairs
        .into_iter()
        .filter(|(_, want, have)| want != have)
        .map(|(what, want, have)| format!("{what} {have} -> {want}"))
        .collect()
}

/// A table itself: partitioning, inheritance, logging, row security.
fn table_detail(a: &Table, b: &Table) -> Vec<String> {
    let mut d = Vec::new();
    if a.partitioned_by != b.partitioned_by {
        d.push(from_to(
            "partitioned by",
            b.partitioned_by.as_deref(),
            a.partitioned_by.as_deref(),
            "nothing",
        ));
    }
    if a.partition_of != b.partition_of {
        let show = |p: &Option<(String, String)>| {
            p.as_ref().map_or("no partition".to_string(), |(t, b)| {
                format!("partition of {t} {b}")
            })
        };
        d.push(format!(
            "{} -> {}",
            show(&b.partition_of),
            show(&a.partition_of)
        ));
    }
    if a.inherits != b.inherits {
        d.push(format!(
            "inherits ({}) -> ({})",
            b.inherits.join(", "),
            a.inherits.join(", ")
        ));
    }
    if a.unlogged != b.unlogged {
        d.push(format!("unlogged {} -> {}", b.unlogged, a.unlogged));
    }
    if a.row_security != b.row_security {
        let show = |r: Option<bool>| match r {
            None => "off",
            Some(false) => "on",
            Some(true) => "on, forced",
        };
        d.push(format!(
            "row level security {} -> {}",
            show(b.row_security),
            show(a.row_security)
        ));
    }
    d
}

/// The columns and constraints of each table both catalogs have.
fn table_members(out: &mut Vec<Difference>, from: &Catalog, to: &Catalog) {
    for (name, want) in &from.tables {
        let Some(have) = to.tables.get(name) else {
            continue;
        };
        // A partition's columns are its parent's.
        if want.partition_of.is_none() {
            let cols = |t: &Table| -> BTreeMap<String, Column> {
                t.columns
                    .iter()
                    .map(|c| (format!("{name}.{}", c.name), c.clone()))
                    .collect()
            };
            compare(out, Kind::Column, &cols(want), &cols(have), column_detail);
        }
        let cons = |t: &Table, helpers: bool| -> BTreeMap<String, Constraint> {
            t.constraints
                .iter()
                // A helper CHECK of an unfinished SET NOT NULL is the
                // plan's business while the column is still nullable.
                .filter(|(n, _)| {
                    helpers
                        || !t.columns.iter().any(|c| {
                            !c.not_null
                                && want.column(&c.name).is_some_and(|w| w.not_null)
                                && not_null_helper(&c.name) == **n
                        })
                })
                .map(|(n, c)| (format!("{name}.{n}"), c.clone()))
                .collect()
        };
        let (f, t) = (cons(want, true), cons(have, false));
        compare(out, Kind::Constraint, &f, &t, |a, b| {
            let mut d = Vec::new();
            if a.def != b.def {
                d.push(format!("{} -> {}", b.def, a.def));
            } else if a.validated && !b.validated {
                d.push("not validated".to_string());
            }
            d
        });
    }
}

/// Indexes, triggers and policies of a table removed whole go with it, as
/// do comments on objects removed: none is listed on its own.
fn leave_out_what_goes_with_removed(out: &mut Vec<Difference>, to: &Catalog) {
    let removed_tables: Vec<String> = out
        .iter()
        .filter(|d| d.key.kind == Kind::Table && d.change == Change::Removed)
        .map(|d| d.key.name.clone())
        .collect();
    out.retain(|d| {
        let table = match d.key.kind {
            Kind::Trigger | Kind::Policy => {
                Some(super::catalog::split_member(&d.key.name).0.to_string())
            }
            Kind::Index => to.indexes.get(&d.key.name).map(|i| i.table.clone()),
            _ => None,
        };
        !(d.change == Change::Removed && table.is_some_and(|t| removed_tables.contains(&t)))
    });
    let removed: Vec<String> = out
        .iter()
        .filter(|d| d.change == Change::Removed && d.key.kind != Kind::Comment)
        .map(|d| d.key.name.clone())
        .collect();
    out.retain(|d| {
        !(d.key.kind == Kind::Comment
            && d.change == Change::Removed
            && removed
                .iter()
                .any(|r| d.key.name.ends_with(&format!(" {r}"))))
    });
}

fn owner(o: &Option<(String, String)>) -> String {
    o.as_ref()
        .map_or("none".to_string(), |(t, c)| format!("{t}.{c}"))
}

fn compare<T>(
    out: &mut Vec<Difference>,
    kind: Kind,
    from: &BTreeMap<String, T>,
    to: &BTreeMap<String, T>,
    detail: impl Fn(&T, &T) -> Vec<String>,
) {
    for (name, want) in from {
        match to.get(name) {
            None => out.push(Difference {
                key: Key::new(kind, name),
                change: Change::Added,
                detail: Vec::new(),
            }),
            Some(have) => {
                let d = detail(want, have);
                if !d.is_empty() {
                    out.push(Difference {
                        key: Key::new(kind, name),
                        change: Change::Changed,
                        detail: d,
                    });
                }
            }
        }
    }
    for name in to.keys().filter(|n| !from.contains_key(*n)) {
        out.push(Difference {
            key: Key::new(kind, name),
            change: Change::Removed,
            detail: Vec::new(),
        });
    }
}

fn column_detail(a: &Column, b: &Column) -> Vec<String> {
    let mut d = Vec::new();
    if a.ty != b.ty {
        d.push(format!("type {} -> {}", b.ty, a.ty));
    }
    if a.not_null != b.not_null {
        d.push(
            if a.not_null {
                "SET NOT NULL"
            } else {
                "DROP NOT NULL"
            }
            .to_string(),
        );
    }
    if a.default != b.default {
        d.push(from_to(
            "default",
            b.default.as_deref(),
            a.default.as_deref(),
            "none",
        ));
    }
    if a.identity != b.identity {
        let show = |i: Option<char>| match i {
            Some('a') => "identity ALWAYS",
            Some(_) => "identity BY DEFAULT",
            None => "no identity",
        };
        d.push(format!("{} -> {}", show(b.identity), show(a.identity)));
    }
    if a.generated != b.generated {
        d.push(from_to(
            "generated",
            b.generated.as_deref(),
            a.generated.as_deref(),
            "none",
        ));
    }
    d
}

fn type_detail(a: &TypeDef, b: &TypeDef) -> Vec<String> {
    if a == b {
        return Vec::new();
    }
    match (a, b) {
        (TypeDef::Enum(want), TypeDef::Enum(have)) => {
            let added: Vec<&String> = want.iter().filter(|l| !have.contains(l)).collect();
            let removed: Vec<&String> = have.iter().filter(|l| !want.contains(l)).collect();
            let mut d = Vec::new();
            if !added.is_empty() {
                d.push(format!("values added {added:?}"));
            }
            if !removed.is_empty() {
                d.push(format!("values removed {removed:?}"));
            }
            if d.is_empty() {
                d.push(format!("values reordered {have:?} -> {want:?}"));
            }
            d
        }
        _ => vec![format!("{b:?} -> {a:?}")],
    }
}
