//! How long a run will take, and on what that guess stands: `etl plan`'s
//! estimate per key (or table) and in total, and the progress display's
//! time left before the run has a pace of its own.
//!
//! The model: a chunk runs on one worker, so the pace is rows per second
//! of one worker, and `rows` over `workers` workers (at most one per
//! chunk) take `rows / (pace * min(workers, chunks))`. The pace comes, in
//! this order, from the ledger's record of this plan's chunks done before
//! (their planned rows over the seconds each took from claim to commit:
//! reading, transforming and writing on these servers), else from a short
//! read of one chunk of the source (writing not measured, and said so).

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use etl_base::plan::{Chunk, Plan};
use etl_pg::block_on;
use etl_pg::error::EtlError;

use crate::Runner;

/// Rows read for a sample pace, at most; and for at most this long.
const SAMPLE_ROWS: usize = 200_000;
const SAMPLE_TIME: Duration = Duration::from_secs(3);

/// Rows per second of one worker, and what that is known from.
#[derive(Debug, Clone)]
pub struct Pace {
    pub per_worker: f64,
    pub basis: String,
}

impl Pace {
    /// Seconds for `rows` in `chunks` chunks on `workers` workers.
    pub fn secs(&self, rows: u64, chunks: usize, workers: usize) -> f64 {
        let parallel = workers.min(chunks).max(1) as f64;
        rows as f64 / (self.per_worker * parallel).max(1e-9)
    }
}

/// Chunks of a plan the ledger has done: their planned rows and the
/// seconds they took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recorded {
    pub chunks: usize,
    pub rows: u64,
    pub secs: f64,
}

impl Recorded {
    pub fn add(&mut self, other: Recorded) {
        self.chunks += other.chunks;
        self.rows += other.rows;
        self.secs += other.secs;
    }

    /// The pace they kept, when they hold rows.
    pub fn pace(self) -> Option<Pace> {
        if self.rows == 0 || self.secs <= 0.0 {
            return None;
        }
        let per_worker = self.rows as f64 / self.secs;
        Some(Pace {
            per_worker,
            basis: format!(
                "{} chunks of this plan done before, {} rows/s per worker read, transformed and written",
                self.chunks,
                crate::human::thousands(per_worker as u64)
            ),
        })
    }
}

impl Runner {
    /// The pace of this pipeline on these servers for `plan`: from the
    /// chunks of it the ledger has done, else from a short read of the
    /// source (`sample`), else none.
    pub fn pace(&self, plan: &Plan, sample: bool) -> Result<Option<Pace>, EtlError> {
        if let Some(p) = self.recorded(plan)?.pace() {
            return Ok(Some(p));
        }
        if !sample {
            return Ok(None);
        }
        self.sampled_pace(plan)
    }

    /// From the first sink's ledger: planned rows of the chunks it has
    /// done, and the seconds they took.
    pub fn recorded(&self, plan: &Plan) -> Result<Recorded, EtlError> {
        let Some((sink, ledger)) = self.outputs().next() else {
            return Ok(Recorded::default());
        };
        let entries = plan
            .chunks
            .iter()
            .map(|c| Ok((sink.target(&c.chunk)?, c.chunk.clone())))
            .collect::<Result<Vec<_>, EtlError>>()?;
        let took = block_on(self.step("reading the ledger failed", || ledger.durations(&entries)))?;
        // (a plan may hold many thousands of chunks: looked up, not searched)
        let rows_of: std::collections::HashMap<&Chunk, u64> =
            plan.chunks.iter().map(|c| (&c.chunk, c.rows)).collect();
        Ok(Recorded {
            chunks: took.len(),
            rows: took
                .iter()
                .map(|(c, _)| rows_of.get(c).copied().unwrap_or(0))
                .sum(),
            secs: took.iter().map(|(_, s)| s).sum(),
        })
    }

    /// A short read of the first chunk that has rows: its rows per second
    /// from the source (a source of record batches: not a table of a whole
    /// PostgreSQL database, which hands over COPY data only). A read that
    /// fails gives no pace (the run says why the chunk fails; a plan goes
    /// on).
    pub fn sampled_pace(&self, plan: &Plan) -> Result<Option<Pace>, EtlError> {
        let Some(first) = plan.chunks.iter().find(|c| c.rows > 0) else {
            return Ok(None);
        };
        let started = Instant::now();
        let read = block_on(async {
            let mut stream = self.source.open(&first.chunk).await?;
            let mut rows = 0;
            while let Some(batch) = stream.next().await {
                rows += batch?.num_rows();
                if rows >= SAMPLE_ROWS || started.elapsed() >= SAMPLE_TIME {
                    break;
                }
            }
            Ok::<_, EtlError>(rows)
        });
        let rows = match read {
            Ok(rows) if rows > 0 => rows,
            Ok(_) => return Ok(None),
            Err(e) => {
                tracing::warn!(chunk = %first.chunk, error = %e, "No estimate: reading a sample of the source failed.");
                return Ok(None);
            }
        };
        let per_worker = rows as f64 / started.elapsed().as_secs_f64().max(1e-3);
        Ok(Some(Pace {
            per_worker,
            basis: format!(
                "a read of {} rows of chunk {} at {} rows/s; writing not measured (no chunk of this plan done here yet)",
                crate::human::thousands(rows as u64),
                first.chunk,
                crate::human::thousands(per_worker as u64)
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_spread_over_the_workers_that_have_chunks() {
        let pace = Pace {
            per_worker: 1000.0,
            basis: String::new(),
        };
        assert_eq!(pace.secs(60_000, 10, 4), 15.0);
        // Two chunks keep two of four workers busy.
        assert_eq!(pace.secs(60_000, 2, 4), 30.0);
        assert_eq!(pace.secs(0, 0, 4), 0.0);
    }
}
