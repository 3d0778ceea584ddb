//! The statements that make a base table's wide parts hold new channels:
//! parts created, columns added (or taken over) up to the most a part may
//! hold, columns widened for a wider kind, and each new channel's place
//! recorded in the column map.

use super::*;

/// What the layout needs, gathered channel by channel.
#[derive(Default)]
struct Changes {
    /// Per part: the columns to add.
    added: BTreeMap<String, Vec<(String, Kind)>>,
    /// The parts to create.
    created: BTreeMap<String, TableName>,
    /// Channels per part, those placed here included.
    counts: HashMap<String, usize>,
    /// (part, column, channel) for the column map.
    mapped: Vec<(String, String, String)>,
    /// Columns widened for a wider kind.
    widened: Vec<String>,
}

/// `ALTER TABLE part ALTER COLUMN column TYPE to` (booleans through int
/// to a number).
fn widen(part: &str, column: &str, from: Kind, to: Kind) -> String {
    let using = if from == Kind::Bool && to != Kind::Text {
        format!("{}::int::{}", ident(column), to.pg_type())
    } else {
        format!("{}::{}", ident(column), to.pg_type())
    };
    format!(
        "ALTER TABLE {part} ALTER COLUMN {} TYPE {} USING {using}",
        ident(column),
        to.pg_type()
    )
}

impl Wide {
    /// The statements that make `layout` hold `channels`.
    pub(super) fn plan_changes(
        &self,
        base: &TableName,
        layout: &Layout,
        channels: &[(String, Kind)],
    ) -> Result<Vec<String>, EtlError> {
        let mut changes = Changes {
            counts: layout
                .parts
                .iter()
                .map(|(q, p)| (q.clone(), p.channels))
                .collect(),
            ..Changes::default()
        };
        let index = self.index_names();
        let mut sorted: Vec<&(String, Kind)> = channels.iter().collect();
        sorted.sort();
        for (channel, kind) in sorted {
            match layout.channels.get(channel) {
                Some(p) if p.kind < *kind => changes
                    .widened
                    .push(widen(&p.part, &p.column, p.kind, *kind)),
                Some(_) => {}
                None => self.place(base, layout, &index, &mut changes, channel, *kind)?,
            }
        }
        self.statements(base, changes)
    }

    /// A new channel's place: the first part of its group with room (a new
    /// part when none has), in a column of its name that no channel has
    /// (taken over) or a new one.
    fn place(
        &self,
        base: &TableName,
        layout: &Layout,
        index: &[String],
        changes: &mut Changes,
        channel: &str,
        kind: Kind,
    ) -> Result<(), EtlError> {
        let group = self.wide.layout.groups.get(channel).map(String::as_str);
        for seq in 1.. {
            let table = part_table(base, group, seq);
            let q = table.qualified();
            let existing = layout.parts.get(&q);
            if existing.is_none() && !changes.created.contains_key(&q) {
                if group.is_none() && seq == 1 && !self.spec.create_table {
                    return Err(EtlError::Config(format!(
                        "wide table {base} does not exist; create it, or set create_table = true in [[sinks]]"
                    )));
                }
                changes.created.insert(q.clone(), table.clone());
            }
            let count = changes.counts.entry(q.clone()).or_default();
            if *count >= self.wide.layout.max_columns {
                continue;
            }
            *count += 1;
            let column = match adoptable(layout, existing, index, &q, channel) {
                Some(c) => {
                    let Some(have) = kind_of(c) else {
                        return Err(EtlError::Config(format!(
                            "column {:?} of {q} is of type {}, which a pivot cannot write; rename or drop it",
                            c.name, c.info.name
                        )));
                    };
                    if have < kind {
                        changes.widened.push(widen(&q, &c.name, have, kind));
                    }
                    c.name.clone()
                }
                None => {
                    let planned = changes.added.entry(q.clone()).or_default();
                    let taken = |name: &str| {
                        index.iter().any(|i| i == name)
                            || existing.is_some_and(|p| p.columns.iter().any(|c| c.name == name))
                            || planned.iter().any(|(c, _)| c == name)
                    };
                    let column = fit_identifier(channel, &taken);
                    planned.push((column.clone(), kind));
                    column
                }
            };
            changes.mapped.push((q, column, channel.to_string()));
            break;
        }
        Ok(())
    }

    /// The changes as statements: parts created (and recorded), columns
    /// added per part, columns widened, the channels' places mapped.
    fn statements(&self, base: &TableName, changes: Changes) -> Result<Vec<String>, EtlError> {
        let mut out = Vec::new();
        for table in changes.created.values() {
            let create = self.create_sql(table)?;
            let record = self.ledger.created_sql(&table.qualified(), &create);
            out.push(create);
            out.push(record);
        }
        for (part, columns) in changes.added.iter().filter(|(_, c)| !c.is_empty()) {
            out.push(format!(
                "ALTER TABLE {part} {}",
                columns
                    .iter()
                    .map(|(c, k)| format!("ADD COLUMN {} {}", ident(c), k.pg_type()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out.extend(changes.widened);
        if !changes.mapped.is_empty() {
            out.push(format!(
                "INSERT INTO {}.column_map (base_table, table_name, column_name, channel) VALUES {}",
                self.spec.ledger_schema.name(),
                changes
                    .mapped
                    .iter()
                    .map(|(t, c, ch)| format!(
                        "({}, {}, {}, {})",
                        literal(&base.qualified()),
                        literal(t),
                        literal(c),
                        literal(ch)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(out)
    }
}

/// A column of `channel`'s name in `part` that no channel has (made by
/// hand, or the map was lost), to be taken over.
fn adoptable<'a>(
    layout: &Layout,
    existing: Option<&'a Part>,
    index: &[String],
    q: &str,
    channel: &str,
) -> Option<&'a CatalogColumn> {
    existing?.columns.iter().find(|c| {
        c.name == channel
            && !index.contains(&c.name)
            && !layout
                .channels
                .values()
                .any(|m| m.part == q && m.column == c.name)
    })
}
