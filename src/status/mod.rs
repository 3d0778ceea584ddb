//! What `etl status` shows, read from the ledger in each PostgreSQL sink:
//! per key the chunks' states, the rate (rows per second and per hour), an
//! ETA for what is pending and the size of the key's target tables; the
//! failed chunks with their errors; a migration's phases. [`html`] draws
//! the same as one self-contained page.

pub mod html;

use std::collections::{BTreeMap, HashSet};

use etl_model::ledger::SchemaClient;

use crate::error::EtlError;
use etl_ledger::sql::{self as ledger, ChunkState, PhaseStep};

/// One ledger's account of a pipeline.
#[derive(Debug, serde::Serialize)]
pub struct LedgerStatus {
    pub ledger: String,
    pub cutoff: Option<String>,
    pub chunks: Vec<ChunkState>,
    pub keys: Vec<KeyStatus>,
    /// Every key together; its rate and ETA count the workers' overlap.
    pub total: KeyStatus,
    pub tables: Vec<TableSize>,
    pub phases: Vec<PhaseStep>,
    /// The last run's peak connections per server.
    pub connections: Vec<ledger::ConnectionPeak>,
}

/// Chunk counts and pace of one key.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct KeyStatus {
    pub key: String,
    pub done: usize,
    pub failed: usize,
    pub pending: usize,
    pub running: usize,
    pub rows: u64,
    /// Rows per second while the key's chunks ran: its rows over the time
    /// from its first chunk's start to its last chunk's end.
    pub rows_per_sec: Option<f64>,
    /// Seconds until its pending and running chunks are done, at the pace
    /// its done chunks kept (failed chunks wait for `etl rerun`).
    pub eta_secs: Option<f64>,
    /// Bytes of the target tables only this key writes.
    pub bytes: Option<u64>,
}

/// A target table's size on the server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableSize {
    pub table: String,
    pub bytes: u64,
    /// The planner's row estimate (`reltuples`), -1 before the first ANALYZE.
    pub rows_estimate: f64,
    pub keys: usize,
}

/// Reads the ledger of `pipeline` (only `keys` when given). `None` when the
/// target has no ledger yet.
pub async fn read(
    db: SchemaClient<'_>,
    ledger_name: &str,
    pipeline: &str,
    keys: Option<&std::collections::BTreeSet<String>>,
) -> Result<LedgerStatus, EtlError> {
    let context = format!("reading {ledger_name}");
    let empty = || LedgerStatus {
        ledger: ledger_name.to_string(),
        cutoff: None,
        chunks: Vec::new(),
        keys: Vec::new(),
        total: KeyStatus {
            key: "all".into(),
            ..Default::default()
        },
        tables: Vec::new(),
        phases: Vec::new(),
        connections: Vec::new(),
    };
    if !ledger::exists(db)
        .await
        .map_err(EtlError::pg(context.clone()))?
    {
        return Ok(empty());
    }
    let mut chunks = ledger::states(db, pipeline)
        .await
        .map_err(EtlError::pg(context.clone()))?;
    if let Some(keys) = keys {
        chunks.retain(|s| s.key.as_ref().is_some_and(|k| keys.contains(k)));
    }
    let cutoff = ledger::cutoff(db, pipeline)
        .await
        .map_err(EtlError::pg(context.clone()))?
        .map(crate::time::format_timestamp);
    let phases = ledger::phases(db, pipeline)
        .await
        .map_err(EtlError::pg(context.clone()))?;
    let connections = ledger::connections(db, pipeline)
        .await
        .map_err(EtlError::pg(context.clone()))?;
    let tables = sizes(db, &chunks).await.map_err(EtlError::pg(context))?;
    let mut keys = by_key(&chunks);
    // A table written by one key alone counts as that key's size.
    for k in &mut keys {
        let mine: HashSet<&str> = chunks
            .iter()
            .filter(|c| c.key.as_deref().unwrap_or("") == k.key)
            .map(|c| c.target.as_str())
            .collect();
        let own: Vec<&TableSize> = tables
            .iter()
            .filter(|t| t.keys == 1 && mine.contains(t.table.as_str()))
            .collect();
        if !own.is_empty() {
            k.bytes = Some(own.iter().map(|t| t.bytes).sum());
        }
    }
    let mut total = tally("all", chunks.iter());
    total.bytes = Some(tables.iter().map(|t| t.bytes).sum());
    Ok(LedgerStatus {
        ledger: ledger_name.to_string(),
        cutoff,
        chunks,
        keys,
        total,
        tables,
        phases,
        connections,
    })
}

/// Per key, in the ledger's order (by key, then window).
pub fn by_key(chunks: &[ChunkState]) -> Vec<KeyStatus> {
    let mut groups: BTreeMap<String, Vec<&ChunkState>> = BTreeMap::new();
    for c in chunks {
        groups
            .entry(c.key.clone().unwrap_or_default())
            .or_default()
            .push(c);
    }
    groups
        .into_iter()
        .map(|(key, chunks)| tally(&key, chunks.into_iter()))
        .collect()
}

fn tally<'a>(key: &str, chunks: impl Iterator<Item = &'a ChunkState>) -> KeyStatus {
    let mut k = KeyStatus {
        key: key.to_string(),
        ..Default::default()
    };
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for s in chunks {
        match s.status.as_str() {
            "done" => {
                k.done += 1;
                k.rows += s.rows.unwrap_or(0) as u64;
                if let (Some(a), Some(b)) = (s.started_us, s.finished_us) {
                    first = first.min(a);
                    last = last.max(b);
                }
            }
            "failed" => k.failed += 1,
            "running" => k.running += 1,
            _ => k.pending += 1,
        }
    }
    if k.done > 0 && last > first {
        let secs = ((last - first) as f64 / 1e6).max(1e-3);
        k.rows_per_sec = Some(k.rows as f64 / secs);
        let per_chunk = secs / k.done as f64;
        k.eta_secs = Some(per_chunk * (k.pending + k.running) as f64);
    } else if k.pending + k.running == 0 {
        k.eta_secs = Some(0.0);
    }
    k
}

/// Sizes of the target tables the chunks name, with a wide table's parts.
async fn sizes(
    db: SchemaClient<'_>,
    chunks: &[ChunkState],
) -> Result<Vec<TableSize>, tokio_postgres::Error> {
    let mut keys_of: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    for c in chunks {
        keys_of
            .entry(c.target.as_str())
            .or_default()
            .insert(c.key.as_deref().unwrap_or(""));
    }
    let names: Vec<String> = keys_of.keys().map(|t| t.to_string()).collect();
    let has_map: bool = db
        .query_one("SELECT to_regclass('etl.column_map') IS NOT NULL", &[])
        .await?
        .get(0);
    // A wide table's parts are in etl.column_map.
    let parts = if has_map {
        "coalesce((SELECT sum(pg_total_relation_size(to_regclass(p)))::int8 FROM \
         (SELECT DISTINCT table_name AS p FROM etl.column_map WHERE base_table = t AND table_name <> t) m), 0)"
    } else {
        "0"
    };
    let rows = db
        .query(
            &format!(
                "SELECT t, coalesce(pg_total_relation_size(to_regclass(t)), 0)::int8 + {parts}, \
                 coalesce((SELECT reltuples::float8 FROM pg_class WHERE oid = to_regclass(t)), -1) \
                 FROM unnest($1::text[]) AS t"
            ),
            &[&names],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let table: String = r.get(0);
            TableSize {
                keys: keys_of.get(table.as_str()).map_or(0, |k| k.len()),
                table,
                bytes: r.get::<_, i64>(1) as u64,
                rows_estimate: r.get(2),
            }
        })
        .collect())
}

/// `1h 02m`, `3m 20s`, `45s`.
pub fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}
