//! `[chunks]` checked against the source's kind: the columns it may
//! name, the window (interval, start, end), and the run's limits.

use super::*;
use etl_base::time::Micros;

/// `[chunks]` checked, with its interval and bounds parsed (`None` where
/// they did not parse; the problem is collected).
pub(super) struct Chunks {
    pub config: crate::config::ChunksConfig,
    pub interval: Option<Micros>,
    pub start: Bound,
    pub end: Bound,
}

/// A window's start or end: `None` when it has problems, `Some(None)`
/// when not set.
type Bound = Option<Option<Micros>>;

pub(super) fn chunks(
    c: &mut Collector<'_>,
    chunks: Option<crate::config::ChunksConfig>,
    kind: &Kind,
    has_transforms: bool,
) -> Chunks {
    let ch = match chunks {
        Some(ch) => ch,
        None => {
            if !kind.is_migration && !kind.is_csv && !kind.pg_whole && !kind.parquet_files {
                c.add(
                    "chunks",
                    "is missing; add a [chunks] table with time_column, the timestamp column that chunks are cut on",
                );
            }
            toml::from_str::<crate::config::ChunksConfig>("")
                .expect("every [chunks] key has a default")
        }
    };
    chunk_columns(c, &ch, kind, has_transforms);
    let (interval, start, end) = window(c, &ch);
    run_limits(c, &ch);

    Chunks {
        config: ch,
        interval,
        start,
        end,
    }
}

/// `[chunks]`'s columns, as the source's kind allows them.
fn chunk_columns(
    c: &mut Collector<'_>,
    ch: &crate::config::ChunksConfig,
    kind: &Kind,
    has_transforms: bool,
) {
    if ch.range_column.is_some() && !kind.pg_whole {
        c.add("chunks.range_column", "cuts a PostgreSQL table or query read without [chunks] time_column into ranges of an integer column; leave it out here (a migration cuts its tables by their keys itself)");
    }
    if ch
        .range_column
        .as_deref()
        .is_some_and(|r| r.trim().is_empty())
    {
        c.add(
            "chunks.range_column",
            "is empty; name an integer column, or leave it out",
        );
    }
    match (&ch.range_column, ch.range_width) {
        (Some(_), None) => c.add("chunks.range_width", "is missing: range_column needs the values each range holds, e.g. range_width = 1000000 (ranges are aligned to multiples of it, so a later run cuts the same ones)"),
        (None, Some(_)) => c.add("chunks.range_width", "applies with range_column; leave it out"),
        (Some(_), Some(0)) => c.add("chunks.range_width", "must be at least 1"),
        _ => {}
    }
    if kind.is_migration {
        let why = "without [chunks] time_column an ODBC source runs one chunk per table (or one for its query); add time_column for time windows, or leave this out";
        if ch.time_column.is_some() {
            c.add("chunks.time_column", why);
        }
        windowless(c, ch, why);
        if has_transforms {
            c.add("transforms", "transforms run on time-window chunks; add [chunks] time_column (and read one table or a query), or load into PostgreSQL first and transform from there");
        }
    } else if kind.is_csv && !kind.csv_windows {
        windowless(c, ch, "without [chunks] time_column a CSV source is cut into byte ranges of about range_rows records per file (the key is the file); add time_column for time windows, or leave this out");
    } else if kind.parquet_files {
        windowless(c, ch, "without [chunks] time_column each Parquet file is a chunk of its own, read whole (the key is the file's path); add time_column for time windows, or leave this out");
        if has_transforms {
            c.add("transforms", "transforms run on time-window chunks; add [chunks] time_column to read the Parquet files in windows");
        }
    } else if kind.pg_whole {
        windowless(c, ch, "without [chunks] time_column a PostgreSQL table or query is read whole, in one chunk; add time_column (a timestamp column) for time windows, or leave this out");
    } else if ch
        .time_column
        .as_deref()
        .is_none_or(|t| t.trim().is_empty())
    {
        c.add(
            "chunks.time_column",
            "is missing or empty; name the timestamp column that chunks are cut on",
        );
    }
    if ch
        .key_column
        .as_deref()
        .is_some_and(|k| k.trim().is_empty())
    {
        c.add(
            "chunks.key_column",
            "is empty; name a column or leave the key out",
        );
    }
}

/// Refuses with `why` each of key_column, start and end that is set: they
/// cut time windows, and this source runs none.
fn windowless(c: &mut Collector<'_>, ch: &crate::config::ChunksConfig, why: &str) {
    for (k, set) in [
        ("key_column", ch.key_column.is_some()),
        ("start", ch.start.is_some()),
        ("end", ch.end.is_some()),
    ] {
        if set {
            c.add(&format!("chunks.{k}"), why);
        }
    }
}

/// `[chunks]`'s interval, start and end: each `None` where it has
/// problems (collected); start and end `Some(None)` where not set.
fn window(
    c: &mut Collector<'_>,
    ch: &crate::config::ChunksConfig,
) -> (Option<Micros>, Bound, Bound) {
    let interval = time::parse_interval(&ch.interval)
        .map_err(|e| c.add("chunks.interval", e))
        .ok();
    let mut bound = |key: &str, v: &Option<String>| match v {
        None => Some(None),
        Some(s) => time::parse_timestamp(s)
            .map(Some)
            .map_err(|e| c.add(key, e))
            .ok(),
    };
    let start = bound("chunks.start", &ch.start);
    let end = bound("chunks.end", &ch.end);
    if let (Some(Some(s)), Some(Some(e))) = (start, end) {
        if s >= e {
            c.add(
                "chunks.end",
                format!(
                    "{:?} is not after start {:?}",
                    ch.end.as_deref().unwrap_or(""),
                    ch.start.as_deref().unwrap_or("")
                ),
            );
        }
    }
    (interval, start, end)
}

/// `[chunks]`'s workers, connections, retries and files.
fn run_limits(c: &mut Collector<'_>, ch: &crate::config::ChunksConfig) {
    if !(1..=256).contains(&ch.workers) {
        c.add(
            "chunks.workers",
            format!("{} is out of range; use 1 to 256", ch.workers),
        );
    }
    if ch.max_connections.is_some_and(|m| m < 2) {
        c.add(
            "chunks.max_connections",
            "is below 2; etl needs a connection for a worker and one for its plan".to_string(),
        );
    }
    if ch.retries > 100 {
        c.add(
            "chunks.retries",
            format!("{} is out of range; use 0 to 100", ch.retries),
        );
    }
    if !(0.0..=3600.0).contains(&ch.retry_backoff_secs) {
        c.add(
            "chunks.retry_backoff_secs",
            format!("{} is out of range; use 0 to 3600", ch.retry_backoff_secs),
        );
    }
    if ch.range_rows == 0 {
        c.add("chunks.range_rows", "must be at least 1");
    }
    if ch.failed_csv.trim().is_empty() {
        c.add(
            "chunks.failed_csv",
            "is empty; name a file for failed chunks",
        );
    }
}
