//! Planning an ODBC source's chunks: time windows binned from one pass
//! over the time (and key) column, a table whole or in ranges of its key
//! (integer, date and time keys in equal widths of MIN..MAX, text keys cut
//! at every Nth value in the driver's order, the cuts kept for a resumed
//! run).

use super::*;

impl OdbcSource {
    /// Time windows: one pass over the key and time columns, binned here:
    /// every window that holds rows, counted; NULL times and rows outside
    /// start/end counted apart. Portable to drivers without date
    /// arithmetic in SQL.
    pub(super) fn plan_windows(
        &self,
        chunking: &Chunking,
        time: &str,
        key: Option<&str>,
    ) -> Result<Plan, EtlError> {
        let select = match key {
            Some(k) => format!("SELECT {k}, {time} FROM {}", self.from),
            None => format!("SELECT {time} FROM {}", self.from),
        };
        let origin = chunking.start.unwrap_or(0);
        let (lower, upper) = (
            chunking.start.unwrap_or(i64::MIN),
            chunking.end.unwrap_or(i64::MAX),
        );
        let interval = chunking.interval;
        let mut windows: HashMap<(Option<String>, Micros), u64> = HashMap::new();
        let mut outside = 0u64;
        self.scan(&select, |batch| {
            let times = batch.column(batch.num_columns() - 1);
            for i in 0..batch.num_rows() {
                match micros_at(times, i)? {
                    Some(t) if t >= lower && t < upper => {
                        let start = etl_base::plan::window_start(t, origin, interval);
                        let key = match key {
                            Some(_) => key_at(batch.column(0), i)?,
                            None => None,
                        };
                        *windows.entry((key, start)).or_default() += 1;
                    }
                    _ => outside += 1,
                }
            }
            Ok(())
        })
        .map_err(|e| EtlError::Config(format!("counting the source's rows per chunk: {e}")))?;
        let plan = Plan {
            chunks: windows
                .into_iter()
                .map(|((key, start), rows)| PlannedChunk {
                    chunk: etl_base::plan::window_chunk(key, start, interval, upper),
                    rows,
                })
                .collect(),
            rows_outside: outside,
            range: None,
        };
        Ok(finish_plan(plan, chunking))
    }

    /// A migration's table: one chunk, or ranges of its key: equal widths
    /// of MIN..MAX for integers and times (the same bounds as long as the
    /// table does not change, so a killed run resumes with the same
    /// chunks), parts at the cut values for text. `parts` says how many
    /// ranges a table of so many rows is cut into.
    pub(super) fn plan_table(
        &self,
        split: Option<&(String, KeyKind)>,
        parts: impl Fn(u64) -> u64,
    ) -> Result<Plan, EtlError> {
        let name = self.table.clone().unwrap_or_else(|| "query".into());
        let plan = |chunks: Vec<(Chunk, u64)>| Plan {
            chunks: chunks
                .into_iter()
                .map(|(chunk, rows)| PlannedChunk { chunk, rows })
                .collect(),
            rows_outside: 0,
            range: None,
        };
        let whole = |rows: u64| plan(vec![(Chunk::whole(Some(name.clone())), rows)]);
        let Some((k, kind)) = split else {
            return Ok(whole(self.count()?));
        };
        if *kind == KeyKind::Text {
            let cuts = self.cuts()?;
            if cuts.is_empty() {
                return Ok(whole(self.count()?));
            }
            let count = self.count()?;
            let n = cuts.len() as u64 + 1;
            return Ok(plan(
                (0..n)
                    .map(|i| (Chunk::part(Some(name.clone()), i as i64), count / n))
                    .collect(),
            ));
        }
        // A NULL key is in no range: the table is read whole.
        let (range, count) = self.key_bounds(k, *kind)?;
        let Some((min, max)) = range else {
            return Ok(whole(count));
        };
        let parts = parts(count);
        if parts < 2 || max <= min {
            return Ok(whole(count));
        }
        // Time ranges start and end on a whole unit (a date's: days).
        let step = match kind {
            KeyKind::Integer => 1,
            KeyKind::Time(TimeKind::Date) => DAY,
            KeyKind::Time(TimeKind::Timestamp) => [DAY, 3_600_000_000, 60_000_000, 1_000_000]
                .into_iter()
                .find(|unit| (max - min) / parts as i64 >= *unit)
                .unwrap_or(1),
            KeyKind::Text => unreachable!("text keys are cut in parts"),
        };
        // Past the last key: a date's last day whole.
        let last = match kind {
            KeyKind::Time(TimeKind::Date) => max.saturating_add(DAY - 1),
            _ => max,
        };
        let ranges = etl_base::plan::split_range(min, last, parts, step);
        if ranges.is_empty() {
            return Ok(whole(count));
        }
        // Rows per range are not counted: estimated by width, summing to
        // the table's count.
        let rows = etl_base::plan::estimate_rows(&ranges, min, last, count);
        let chunks = ranges
            .into_iter()
            .zip(rows)
            .map(|((lo, hi), rows)| {
                let chunk = match kind {
                    KeyKind::Integer => Chunk::range(Some(name.clone()), lo, hi),
                    _ => Chunk::window(Some(name.clone()), lo, hi),
                };
                (chunk, rows)
            })
            .collect::<Vec<_>>();
        Ok(plan(chunks))
    }

    /// A key's MIN and MAX (integers, or µs for times), `None` when the
    /// table is empty or a key is NULL (no range holds it); the row count.
    pub(super) fn key_bounds(
        &self,
        k: &str,
        kind: KeyKind,
    ) -> Result<(Option<(i64, i64)>, u64), EtlError> {
        let select = format!(
            "SELECT MIN({k}), MAX({k}), COUNT(*), COUNT({k}) FROM {}",
            self.from
        );
        if kind == KeyKind::Integer {
            return Ok(match self.integers(&select)?[..] {
                [Some(min), Some(max), Some(count), Some(keyed)] if keyed == count => {
                    (Some((min, max)), count as u64)
                }
                [_, _, count, _] => (None, count.unwrap_or(0) as u64),
                _ => (None, 0),
            });
        }
        let mut row = None;
        self.scan(&select, |batch| {
            if row.is_none() && batch.num_rows() > 0 {
                let count = |c: usize| -> Result<Option<i64>, EtlError> {
                    Ok(key_at(batch.column(c), 0)?.and_then(|t| t.split('.').next()?.parse().ok()))
                };
                row = Some((
                    micros_at(batch.column(0), 0)?,
                    micros_at(batch.column(1), 0)?,
                    count(2)?,
                    count(3)?,
                ));
            }
            Ok(())
        })
        .map_err(|e| EtlError::Config(format!("{}: finding its key's range: {e}", self.label())))?;
        Ok(match row {
            Some((Some(min), Some(max), Some(count), Some(keyed))) if keyed == count => {
                (Some((min, max)), count as u64)
            }
            Some((_, _, count, _)) => (None, count.unwrap_or(0) as u64),
            None => (None, 0),
        })
    }

    /// The text key values the table's parts are cut at: set by the
    /// caller (kept from the run that first cut them), or found now.
    pub fn cuts(&self) -> Result<Vec<String>, EtlError> {
        let Axis::Table { cuts, .. } = &self.axis else {
            return Ok(Vec::new());
        };
        if let Some(known) = &*cuts.lock().expect("no panic while holding the lock") {
            return Ok(known.clone());
        }
        let found = self.find_cuts()?;
        *cuts.lock().expect("no panic while holding the lock") = Some(found.clone());
        Ok(found)
    }

    /// Uses `cuts` (as [`OdbcSource::cuts`] returned them before) for the
    /// table's parts.
    pub fn set_cuts(&self, known: Vec<String>) {
        if let Axis::Table { cuts, .. } = &self.axis {
            *cuts.lock().expect("no panic while holding the lock") = Some(known);
        }
    }

    /// Every Nth value of the text key in the driver's order (one pass
    /// over the key alone), N the rows per part; none for a table small
    /// enough for one chunk, or with a NULL key.
    pub(super) fn find_cuts(&self) -> Result<Vec<String>, EtlError> {
        let Axis::Table {
            split: Some((k, KeyKind::Text)),
            range_rows,
            min_parts,
            batch_rows,
            ..
        } = &self.axis
        else {
            return Ok(Vec::new());
        };
        let select = format!("SELECT COUNT(*), COUNT({k}) FROM {}", self.from);
        let [Some(count), Some(keyed)] = self.integers(&select)?[..] else {
            return Ok(Vec::new());
        };
        let count = count as u64;
        let parts = count
            .div_ceil(*range_rows)
            .max((*min_parts).min(count / (*batch_rows).max(1)));
        if parts < 2 || keyed as u64 != count {
            return Ok(Vec::new());
        }
        let mut cuts = etl_base::plan::KeyCuts::new(count.div_ceil(parts));
        self.scan(
            &format!("SELECT {k} FROM {} ORDER BY {k}", self.from),
            |batch| {
                let keys = batch.column(0);
                for i in 0..batch.num_rows() {
                    cuts.add(key_at(keys, i)?);
                }
                Ok(())
            },
        )
        .map_err(|e| {
            EtlError::Config(format!(
                "{}: cutting it at values of {k}: {e}",
                self.label()
            ))
        })?;
        Ok(cuts.cuts)
    }
}

/// Sorted chunks and their range, as every source orders them.
pub(super) fn finish_plan(mut plan: Plan, chunking: &Chunking) -> Plan {
    plan.chunks
        .sort_by(|a, b| (a.chunk.start, &a.chunk.key).cmp(&(b.chunk.start, &b.chunk.key)));
    let first = plan.chunks.iter().map(|c| c.chunk.start).min();
    let last = plan.chunks.iter().map(|c| c.chunk.end).max();
    plan.range = chunking.start.or(first).zip(chunking.end.or(last));
    plan
}
