//! Chunks: half-open time windows `[start, end)`, optionally for one key
//! value; or half-open ranges of an integer key column (a big table
//! without a time column); or numbered parts of a table cut at values of
//! a text key; or a whole table. A chunk is the unit of work,
//! of commit and of retry; its identity is its bounds and key, so a rerun
//! from the CSV names the same chunk.

use std::fmt;

use crate::time::{format_timestamp, Micros};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chunk {
    /// The key column's value as text (a migration's: the source table);
    /// `None` when the pipeline has no key column, or for rows whose key is
    /// NULL.
    pub key: Option<String>,
    pub start: Micros,
    pub end: Micros,
    /// What `start` and `end` measure.
    pub unit: Unit,
}

/// What a chunk's bounds measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Unit {
    /// µs since 1970-01-01 UTC. start = end = 0 is a whole table.
    #[default]
    Time,
    /// Values of an integer key column, `[start, end)`; the ledger keeps
    /// them in its time columns as µs since 1970.
    Key,
    /// Part `start` (`end` = `start + 1`) of a table cut at values of its
    /// key that the source keeps (text keys: the driver's collation orders
    /// them, so the values, not etl, say which rows a part holds).
    Part,
}

impl Chunk {
    /// A time window.
    pub fn window(key: Option<String>, start: Micros, end: Micros) -> Chunk {
        Chunk {
            key,
            start,
            end,
            unit: Unit::Time,
        }
    }

    /// A whole table, named by `key`: start = end = 1970-01-01 in the
    /// ledger and the CSV.
    pub fn whole(key: Option<String>) -> Chunk {
        Chunk::window(key, 0, 0)
    }

    /// The rows whose integer key is in `[lo, hi)`.
    pub fn range(key: Option<String>, lo: i64, hi: i64) -> Chunk {
        Chunk {
            key,
            start: lo,
            end: hi,
            unit: Unit::Key,
        }
    }

    /// Part `i` of a table cut at stored key values.
    pub fn part(key: Option<String>, i: i64) -> Chunk {
        Chunk {
            key,
            start: i,
            end: i + 1,
            unit: Unit::Part,
        }
    }

    pub fn is_whole(&self) -> bool {
        self.unit == Unit::Time && self.start == 0 && self.end == 0
    }

    /// The chunk's start as logs show it ("whole table" for a whole
    /// table's chunk, which has no bounds).
    pub fn start_label(&self) -> String {
        match self.is_whole() {
            true => "whole table".into(),
            false => self.bound(self.start),
        }
    }

    /// A bound as the CSV and people read it.
    pub fn bound(&self, value: i64) -> String {
        match self.unit {
            Unit::Time => format_timestamp(value),
            Unit::Key => value.to_string(),
            Unit::Part => format!("part {value}"),
        }
    }
}

impl fmt::Display for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A whole table's chunk is named by its table.
        if self.is_whole() {
            return write!(f, "{}", self.key.as_deref().unwrap_or("(whole table)"));
        }
        if let Some(k) = &self.key {
            write!(f, "{k} ")?;
        }
        if self.unit == Unit::Part {
            return write!(f, "part {}", self.start);
        }
        write!(f, "[{}, {})", self.bound(self.start), self.bound(self.end))
    }
}

/// A chunk with the rows the plan counted in it.
#[derive(Debug, Clone)]
pub struct PlannedChunk {
    pub chunk: Chunk,
    pub rows: u64,
}

/// What the source holds, cut into chunks.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Windows that hold rows, ordered by start, then key.
    pub chunks: Vec<PlannedChunk>,
    /// Rows outside `[start, end)` or with a NULL time: in no chunk.
    pub rows_outside: u64,
    /// The whole range the chunks were cut from.
    pub range: Option<(Micros, Micros)>,
}

impl Plan {
    pub fn rows(&self) -> u64 {
        self.chunks.iter().map(|c| c.rows).sum()
    }
}

/// Rounds `t` down to a whole number of `interval`s since 1970-01-01 UTC.
/// A table of `count` rows whose integer key runs from `min` to `max`,
/// cut into `parts` ranges of equal width (the same ranges as long as
/// the table's MIN and MAX stay); rows per range estimated by width.
pub fn integer_ranges(
    table: &str,
    min: i64,
    max: i64,
    count: u64,
    parts: u64,
) -> Vec<PlannedChunk> {
    let (first, end) = (min as i128, max as i128 + 1);
    let width = ((end - first) / parts.max(1) as i128).max(1);
    let estimate = |at: i128| count as i128 * (at - first) / (end - first);
    (0..parts as i128)
        .map(|i| {
            (
                first + i * width,
                if i + 1 == parts as i128 {
                    end
                } else {
                    (first + (i + 1) * width).min(end)
                },
            )
        })
        .filter(|(lo, hi)| lo < hi)
        .map(|(lo, hi)| PlannedChunk {
            chunk: Chunk::range(
                Some(table.to_string()),
                lo as i64,
                hi.min(i64::MAX as i128) as i64,
            ),
            rows: (estimate(hi) - estimate(lo)) as u64,
        })
        .collect()
}

pub fn align_down(t: Micros, interval: Micros) -> Micros {
    t - t.rem_euclid(interval)
}

/// The `WHERE` condition that selects one chunk's rows, rendered from typed
/// bounds (`COPY (query)` takes no bind parameters) with quoted identifiers.
pub fn chunk_filter(
    time_column: &str,
    time_has_zone: bool,
    key_column: Option<&str>,
    chunk: &Chunk,
) -> String {
    use crate::sql::{ident, literal};
    use crate::time::sql_literal;
    let t = ident(time_column);
    let mut filter = format!(
        "{t} >= {} AND {t} < {}",
        sql_literal(chunk.start, time_has_zone),
        sql_literal(chunk.end, time_has_zone)
    );
    if let Some(k) = key_column {
        match &chunk.key {
            Some(v) => filter.push_str(&format!(" AND {} = {}", ident(k), literal(v))),
            None => filter.push_str(&format!(" AND {} IS NULL", ident(k))),
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_is_to_utc_midnight_for_days() {
        let day = 86_400_000_000;
        let t = crate::time::parse_timestamp("2025-06-01 13:14:15").unwrap();
        assert_eq!(format_timestamp(align_down(t, day)), "2025-06-01 00:00:00");
        let before_1970 = crate::time::parse_timestamp("1969-12-31 23:00:00").unwrap();
        assert_eq!(
            format_timestamp(align_down(before_1970, day)),
            "1969-12-31 00:00:00"
        );
    }
}
