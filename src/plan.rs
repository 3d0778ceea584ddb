//! Chunks: half-open time windows `[start, end)`, optionally for one key
//! value. A chunk is the unit of work, of commit and of retry; its identity
//! is its bounds and key, so a rerun from the CSV names the same chunk.

use std::fmt;

use crate::time::{format_timestamp, Micros};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chunk {
    /// The key column's value as text; `None` when the pipeline has no key
    /// column, or for rows whose key is NULL (see [`Chunk::key_is_null`]).
    pub key: Option<String>,
    pub start: Micros,
    pub end: Micros,
}

impl fmt::Display for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(k) = &self.key {
            write!(f, "{k} ")?;
        }
        write!(
            f,
            "[{}, {})",
            format_timestamp(self.start),
            format_timestamp(self.end)
        )
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
