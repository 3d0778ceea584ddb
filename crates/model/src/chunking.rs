//! How the work is cut and run: the pipeline file's `[chunks]`, as the
//! planners and the runner read it.

use std::path::PathBuf;

use etl_base::time::Micros;

/// How the work is cut and run.
#[derive(Debug, Clone)]
pub struct Chunking {
    /// Empty for a migration's tables: they are read whole or in ranges
    /// of `range_column`.
    pub time_column: String,
    pub interval: Micros,
    pub key_column: Option<String>,
    /// The integer key whose ranges are the chunks (`Unit::Key`): set by
    /// a migration for its big tables, or by `[chunks] range_column`;
    /// [`BLOCKS`] for ranges of a table's heap blocks.
    pub range_column: Option<String>,
    /// A PostgreSQL table or query read without a time column: the
    /// values of `range_column` per range, aligned to multiples of it
    /// (`[chunks] range_width`). `None`: a migration's own cuts.
    pub range_width: Option<u64>,
    /// About this many rows per range (`[chunks] range_rows`).
    pub range_rows: u64,
    pub start: Option<Micros>,
    pub end: Option<Micros>,
    /// Only chunks of these keys (`--key`, repeatable), when set.
    pub only_keys: Option<std::collections::BTreeSet<String>>,
    pub workers: usize,
    /// `[chunks] max_connections`: lowers the bound of connections per endpoint.
    pub max_connections: Option<usize>,
    pub retries: u32,
    pub retry_backoff: std::time::Duration,
    pub failed_csv: PathBuf,
}

/// `[chunks] range_column = "ctid"`: ranges of the source table's heap
/// blocks (`range_width` blocks each), read in physical order by TID range
/// scans instead of through an index.
pub const BLOCKS: &str = "ctid";

impl Chunking {
    /// Whether the chunks are ranges of the source table's blocks.
    pub fn by_blocks(&self) -> bool {
        self.range_column.as_deref() == Some(BLOCKS)
    }

    /// The column whose ranges select a chunk's rows in a target too:
    /// `range_column`, but not the source's blocks (a target's rows sit
    /// in blocks of their own).
    pub fn target_range_column(&self) -> Option<&str> {
        self.range_column.as_deref().filter(|_| !self.by_blocks())
    }

    /// `retries` and `retry_backoff_secs`, as the retry helper takes them.
    pub fn retry(&self) -> (u32, std::time::Duration) {
        (self.retries, self.retry_backoff)
    }

    /// Windows of `interval` µs over `time_column` (empty: none), no key,
    /// one worker, no retries: the chunking of a source read on its own.
    pub fn windows(time_column: &str, interval: Micros) -> Self {
        Chunking {
            time_column: time_column.to_string(),
            interval,
            key_column: None,
            range_column: None,
            range_width: None,
            range_rows: 1_000_000,
            start: None,
            end: None,
            only_keys: None,
            workers: 1,
            max_connections: None,
            retries: 0,
            retry_backoff: std::time::Duration::ZERO,
            failed_csv: "failed.csv".into(),
        }
    }
}
