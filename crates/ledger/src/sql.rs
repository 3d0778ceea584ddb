//! The ledger's SQL: `etl.chunk_ledger` in the target database: one row per
//! chunk of a pipeline and target table, with its state.
//!
//! - A run first registers its chunks (`pending`), committed.
//! - A worker claims a chunk with a committed UPDATE that sets `running` and
//!   `claimed_pid` to its sink session's backend pid, and succeeds only when
//!   no live session holds the chunk. A claim dies with its session, so a
//!   killed process never leaves a chunk stuck; several processes share one
//!   plan without running a chunk twice at once.
//! - The chunk's data transaction, on that same session, marks it `done`
//!   (with `loaded`, its rows are in the target) before COMMIT: a chunk is
//!   either done-and-recorded or neither.
//! - A failed attempt is marked `failed` with its error, in a transaction of
//!   its own after the rollback.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use etl_base::plan::Chunk;
use etl_base::sql::literal;
use etl_model::ledger::{CutoffChange, LedgerSchema, SchemaClient};

/// The ledger's tables, in the schema's DDL by [`ddl`].
const TABLES: &str = "CREATE TABLE IF NOT EXISTS etl.chunk_ledger ( \
      pipeline text NOT NULL, target text NOT NULL, chunk_key text, \
      start_at timestamptz NOT NULL, end_at timestamptz NOT NULL, \
      status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')), \
      loaded boolean NOT NULL DEFAULT false, \
      rows bigint, attempts integer NOT NULL DEFAULT 0, last_error text, claimed_pid integer, \
      started_at timestamptz, finished_at timestamptz, checksum text, \
      UNIQUE NULLS NOT DISTINCT (pipeline, target, chunk_key, start_at, end_at)); \
    DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'etl.chunk_ledger'::regclass \
      AND attname = 'checksum') THEN ALTER TABLE etl.chunk_ledger ADD COLUMN checksum text; END IF; END $$; \
    CREATE INDEX IF NOT EXISTS chunk_ledger_window ON etl.chunk_ledger (target, chunk_key, start_at); \
    CREATE TABLE IF NOT EXISTS etl.cutoff ( \
      pipeline text PRIMARY KEY, cutoff timestamptz NOT NULL, updated_at timestamptz NOT NULL DEFAULT now()); \
    CREATE TABLE IF NOT EXISTS etl.phase_log ( \
      pipeline text NOT NULL, phase text NOT NULL, item text NOT NULL, \
      status text NOT NULL CHECK (status IN ('done', 'failed')), \
      statement text, error text, finished_at timestamptz NOT NULL DEFAULT now(), \
      PRIMARY KEY (pipeline, phase, item))";

/// Creates the schema and the ledger's tables; run with
/// [`etl_pg::locked_ddl`].
pub fn ddl(schema: &LedgerSchema) -> String {
    format!("{}; {}", schema.create(), schema.sql(TABLES))
}

/// The oldest PostgreSQL a target may run: the ledger's `UNIQUE NULLS NOT
/// DISTINCT` (one row per chunk, a NULL key included) came in 15.
pub const MIN_SERVER_VERSION: i32 = 150000;

/// Why a target's server cannot hold the ledger, or `None` when it can.
pub fn unsupported_server(version_num: i32, version: &str) -> Option<String> {
    (version_num < MIN_SERVER_VERSION).then(|| {
        format!(
            "the target runs PostgreSQL {version}; etl keeps its ledger (etl.chunk_ledger) in the target and needs PostgreSQL 15 or later there (UNIQUE NULLS NOT DISTINCT); load into a 15+ server, or stage to Parquet and load from there"
        )
    })
}

/// Checks the server, then creates the ledger's tables if missing (run
/// under an advisory lock: concurrent runs create them once).
pub async fn ensure(db: SchemaClient<'_>) -> Result<Result<(), String>, tokio_postgres::Error> {
    let row = db
        .query_one(
            "SELECT current_setting('server_version_num')::int4, current_setting('server_version')",
            &[],
        )
        .await?;
    if let Some(why) = unsupported_server(row.get(0), row.get(1)) {
        return Ok(Err(why));
    }
    etl_pg::locked_ddl(db.client, &db.schema.table("chunk_ledger"), &ddl(db.schema)).await?;
    Ok(Ok(()))
}

/// The ledger's identity columns for one chunk, as SQL parameters.
pub struct Row<'a> {
    pub pipeline: &'a str,
    pub target: &'a str,
    pub key: &'a Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl<'a> Row<'a> {
    pub fn new(pipeline: &'a str, target: &'a str, chunk: &'a Chunk) -> Self {
        Row {
            pipeline,
            target,
            key: &chunk.key,
            start: micros(chunk.start),
            end: micros(chunk.end),
        }
    }
}

fn micros(m: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(m).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

const IDENTITY: &str =
    "pipeline = $1 AND target = $2 AND chunk_key IS NOT DISTINCT FROM $3 AND start_at = $4 AND end_at = $5";

/// Registers chunks as pending; rows already there are left as they are.
pub async fn register(
    db: SchemaClient<'_>,
    pipeline: &str,
    chunks: &[(String, Chunk)],
) -> Result<(), tokio_postgres::Error> {
    let targets: Vec<&str> = chunks.iter().map(|(t, _)| t.as_str()).collect();
    let keys: Vec<Option<&str>> = chunks.iter().map(|(_, c)| c.key.as_deref()).collect();
    let starts: Vec<DateTime<Utc>> = chunks.iter().map(|(_, c)| micros(c.start)).collect();
    let ends: Vec<DateTime<Utc>> = chunks.iter().map(|(_, c)| micros(c.end)).collect();
    db
        .execute(
            "INSERT INTO etl.chunk_ledger (pipeline, target, chunk_key, start_at, end_at) \
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[]) \
             ON CONFLICT DO NOTHING",
            &[&pipeline, &targets, &keys, &starts, &ends],
        )
        .await?;
    Ok(())
}

/// Claims a chunk for this session (committed at once). `false` when a live
/// session holds it, or it is done and `redo` is not set. A chunk whose
/// row is not in the ledger (registered before a crash of a server that
/// commits asynchronously, or deleted by hand) is registered again and
/// claimed: it is never skipped as if another process had it.
pub async fn claim(
    db: SchemaClient<'_>,
    row: &Row<'_>,
    redo: bool,
) -> Result<bool, tokio_postgres::Error> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
        &row.pipeline,
        &row.target,
        row.key,
        &row.start,
        &row.end,
        &redo,
    ];
    let update = format!(
        "UPDATE etl.chunk_ledger SET status = 'running', claimed_pid = pg_backend_pid(), \
         started_at = now(), finished_at = NULL, attempts = attempts + 1 \
         WHERE {IDENTITY} AND (status <> 'done' OR $6) \
         AND (status <> 'running' OR claimed_pid IS NULL \
              OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = claimed_pid))"
    );
    if db.execute(&update, &params).await? == 1 {
        return Ok(true);
    }
    let missing = db
        .execute(
            "INSERT INTO etl.chunk_ledger (pipeline, target, chunk_key, start_at, end_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &params[..5],
        )
        .await?;
    if missing == 0 {
        return Ok(false);
    }
    tracing::warn!(
        target_table = row.target,
        "A chunk registered for this run was not in etl.chunk_ledger (the target lost it in a crash, or it was deleted); registered again."
    );
    Ok(db.execute(&update, &params).await? == 1)
}

/// Inside the chunk's transaction: locks the ledger rows of every window
/// of this target and key that overlaps the chunk's (its own included), in
/// a fixed order, and says whether any of them loaded rows. Two chunks with
/// overlapping windows (a backfill and a follow process, say) therefore
/// run one after the other, and the second replaces what the first wrote
/// instead of adding to it.
pub async fn lock_window(
    db: SchemaClient<'_>,
    row: &Row<'_>,
) -> Result<bool, tokio_postgres::Error> {
    Ok(db
        .query_one(
            "SELECT coalesce(bool_or(loaded), false) FROM (SELECT loaded FROM etl.chunk_ledger \
             WHERE target = $1 AND chunk_key IS NOT DISTINCT FROM $2 AND start_at < $4 AND end_at > $3 \
             ORDER BY start_at, end_at, pipeline FOR UPDATE) AS w",
            &[&row.target, row.key, &row.start, &row.end],
        )
        .await?
        .get(0))
}

/// The pipeline's persisted cutoff (µs): follow mode loads from it onward.
pub async fn cutoff(
    db: SchemaClient<'_>,
    pipeline: &str,
) -> Result<Option<i64>, tokio_postgres::Error> {
    Ok(db
        .query_opt(
            "SELECT (extract(epoch FROM cutoff) * 1000000)::int8 FROM etl.cutoff WHERE pipeline = $1",
            &[&pipeline],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Persists the pipeline's cutoff: forward only (follow mode), or as set
/// or cleared by hand.
pub async fn set_cutoff(
    db: SchemaClient<'_>,
    pipeline: &str,
    change: CutoffChange,
) -> Result<(), tokio_postgres::Error> {
    use CutoffChange::*;
    let (sql, cutoff) = match change {
        Forward(c) => (
            "INSERT INTO etl.cutoff (pipeline, cutoff) VALUES ($1, $2) ON CONFLICT (pipeline) \
             DO UPDATE SET cutoff = greatest(etl.cutoff.cutoff, EXCLUDED.cutoff), updated_at = now()",
            c,
        ),
        Exactly(c) => (
            "INSERT INTO etl.cutoff (pipeline, cutoff) VALUES ($1, $2) ON CONFLICT (pipeline) \
             DO UPDATE SET cutoff = EXCLUDED.cutoff, updated_at = now()",
            c,
        ),
        Clear => {
            db
                .execute("DELETE FROM etl.cutoff WHERE pipeline = $1", &[&pipeline])
                .await?;
            return Ok(());
        }
    };
    db.execute(sql, &[&pipeline, &micros(cutoff)]).await?;
    Ok(())
}

/// Marks the chunk done and commits its transaction: its rows and its
/// ledger row become visible together.
pub async fn commit_done(
    db: SchemaClient<'_>,
    row: &Row<'_>,
    rows: u64,
    checksum: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    mark_done(db, row, rows, checksum).await?;
    db.batch_execute("COMMIT").await
}

/// Marks the chunk done, inside its data transaction.
pub async fn mark_done(
    db: SchemaClient<'_>,
    row: &Row<'_>,
    rows: u64,
    checksum: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    db
        .execute(
            &format!(
                "UPDATE etl.chunk_ledger SET status = 'done', loaded = true, rows = $6, last_error = NULL, \
                 claimed_pid = NULL, finished_at = clock_timestamp(), checksum = $7 WHERE {IDENTITY}"
            ),
            &[&row.pipeline, &row.target, row.key, &row.start, &row.end, &(rows as i64), &checksum],
        )
        .await?;
    Ok(())
}

/// The checksum a chunk's writer recorded when it committed; `None` when
/// the chunk is not done or was loaded without one.
pub async fn recorded(
    db: SchemaClient<'_>,
    row: &Row<'_>,
) -> Result<Option<String>, tokio_postgres::Error> {
    let found = db
        .query_opt(
            &format!(
                "SELECT checksum FROM etl.chunk_ledger \
                 WHERE {IDENTITY} AND status = 'done' AND checksum IS NOT NULL"
            ),
            &[&row.pipeline, &row.target, row.key, &row.start, &row.end],
        )
        .await?;
    Ok(found.map(|r| r.get(0)))
}

/// Marks a failed attempt, after its transaction was rolled back.
pub async fn mark_failed(
    db: SchemaClient<'_>,
    row: &Row<'_>,
    error: &str,
) -> Result<(), tokio_postgres::Error> {
    db.execute(
        &format!(
            "UPDATE etl.chunk_ledger SET status = 'failed', last_error = $6, claimed_pid = NULL, \
                 finished_at = clock_timestamp() WHERE {IDENTITY}"
        ),
        &[
            &row.pipeline,
            &row.target,
            row.key,
            &row.start,
            &row.end,
            &error,
        ],
    )
    .await?;
    Ok(())
}

/// SQL that forgets every pipeline's chunks of `target` (a table emptied
/// in the same transaction: replace mode).
pub fn forget_sql(schema: &LedgerSchema, target: &str) -> String {
    format!(
        "DELETE FROM {}.chunk_ledger WHERE target = {}",
        schema.name(),
        literal(target)
    )
}

/// Empties a target table (`how`: `TRUNCATE ONLY` or `DELETE FROM ONLY`)
/// where it exists, and marks its chunks in the ledger as not loaded;
/// unless another process sharing the plan has a chunk of it in flight
/// (claimed by a live session) or done since `planned_at` (this run's
/// reading of the ledger). Checked at once, then decided again under a
/// lock on the table (SHARE, or TRUNCATE's own ACCESS EXCLUSIVE) that
/// waits for writers in flight, so nothing another process committed is
/// emptied (issue 30) and no process waits behind another's chunk; its
/// ranges then replace their own rows instead.
pub fn empty_unless_busy_sql(
    schema: &LedgerSchema,
    target: &str,
    how: &str,
    planned_at: &str,
) -> String {
    let t = literal(target);
    let busy = format!(
        "IF to_regclass('{s}.chunk_ledger') IS NOT NULL THEN \
           IF EXISTS (SELECT 1 FROM {s}.chunk_ledger l WHERE l.target = {t} AND ( \
              (l.status = 'done' AND l.finished_at >= {at}::timestamptz) \
              OR (l.status = 'running' AND l.claimed_pid IS NOT NULL AND l.claimed_pid <> pg_backend_pid() \
                  AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.claimed_pid)))) THEN \
             RAISE LOG 'etl: another process loads %; not emptied', {t}; RETURN; \
           END IF; \
         END IF;",
        at = literal(planned_at),
        s = schema.name(),
    );
    // TRUNCATE locks it whole anyway; DELETE needs only to wait for
    // writers in flight (SHARE), letting readers be.
    let mode = match how.starts_with("TRUNCATE") {
        true => "ACCESS EXCLUSIVE",
        false => "SHARE",
    };
    // Checked first without the lock (a chunk in flight holds a live
    // claim, committed before its data: no wait behind it), then again
    // under it (a chunk claimed in between).
    format!(
        "DO $$ BEGIN \
         IF to_regclass({t}) IS NULL THEN RETURN; END IF; \
         {busy} \
         LOCK TABLE {target} IN {mode} MODE; \
         {busy} \
         {how} {target}; \
         IF to_regclass('{s}.chunk_ledger') IS NOT NULL THEN \
           UPDATE {s}.chunk_ledger SET loaded = false WHERE target = {t} AND loaded; END IF; END $$",
        s = schema.name(),
    )
}

/// Whether the ledger table exists yet.
pub async fn exists(db: SchemaClient<'_>) -> Result<bool, tokio_postgres::Error> {
    Ok(db
        .query_one("SELECT to_regclass('etl.chunk_ledger') IS NOT NULL", &[])
        .await?
        .get(0))
}

/// `(target, key, start µs, end µs)` of the pipeline's done chunks.
pub async fn done(
    db: SchemaClient<'_>,
    pipeline: &str,
) -> Result<HashSet<(String, Option<String>, i64, i64)>, tokio_postgres::Error> {
    Ok(db
        .query(
            "SELECT target, chunk_key, (extract(epoch FROM start_at) * 1000000)::int8, \
             (extract(epoch FROM end_at) * 1000000)::int8 FROM etl.chunk_ledger \
             WHERE pipeline = $1 AND status = 'done'",
            &[&pipeline],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// `(target, key, start µs, end µs) -> seconds` from claim to commit of
/// the pipeline's done chunks.
pub async fn durations(
    db: SchemaClient<'_>,
    pipeline: &str,
) -> Result<std::collections::HashMap<(String, Option<String>, i64, i64), f64>, tokio_postgres::Error>
{
    Ok(db
        .query(
            "SELECT target, chunk_key, (extract(epoch FROM start_at) * 1000000)::int8, \
             (extract(epoch FROM end_at) * 1000000)::int8, \
             extract(epoch FROM finished_at - started_at)::float8 FROM etl.chunk_ledger \
             WHERE pipeline = $1 AND status = 'done' AND finished_at > started_at",
            &[&pipeline],
        )
        .await?
        .iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2), r.get(3)), r.get(4)))
        .collect())
}

/// One chunk's state, for `etl status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChunkState {
    pub target: String,
    pub key: Option<String>,
    pub start: String,
    pub end: String,
    /// pending, running, done or failed. A `running` chunk whose session is
    /// gone shows as pending: its claim died with it.
    pub status: String,
    pub rows: Option<i64>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub claimed_pid: Option<i32>,
    /// The window (µs since 1970), for pictures of the run.
    pub start_us: i64,
    pub end_us: i64,
    /// When its last attempt started and when it finished (µs).
    pub started_us: Option<i64>,
    pub finished_us: Option<i64>,
}

/// Every chunk of a pipeline, ordered by key and start.
pub async fn states(
    db: SchemaClient<'_>,
    pipeline: &str,
) -> Result<Vec<ChunkState>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT target, chunk_key, (extract(epoch FROM start_at) * 1000000)::int8, \
             (extract(epoch FROM end_at) * 1000000)::int8, \
             CASE WHEN status = 'running' AND NOT EXISTS \
                 (SELECT 1 FROM pg_stat_activity a WHERE a.pid = claimed_pid) THEN 'pending' ELSE status END, \
             rows, attempts, last_error, claimed_pid, \
             (extract(epoch FROM started_at) * 1000000)::int8, (extract(epoch FROM finished_at) * 1000000)::int8 \
             FROM etl.chunk_ledger WHERE pipeline = $1 ORDER BY chunk_key NULLS FIRST, start_at, target",
            &[&pipeline],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ChunkState {
            target: r.get(0),
            key: r.get(1),
            start: etl_base::time::format_timestamp(r.get(2)),
            end: etl_base::time::format_timestamp(r.get(3)),
            status: r.get(4),
            rows: r.get(5),
            attempts: r.get(6),
            last_error: r.get(7),
            claimed_pid: r.get(8),
            start_us: r.get(2),
            end_us: r.get(3),
            started_us: r.get(9),
            finished_us: r.get(10),
        })
        .collect())
}

/// Records what one step of a migration's phase did (`constraints`,
/// `sequences`, `verify`): the statement and, when it failed, the error.
/// The last outcome of each step is kept.
pub async fn record_phase(
    db: SchemaClient<'_>,
    pipeline: &str,
    phase: &str,
    item: &str,
    statement: &str,
    error: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    record_steps(db, pipeline, phase, &[(item, statement, error)]).await
}

/// Records what steps of one phase did, as [`record_phase`] does for one,
/// in one statement: a phase of many steps (each table's cut) commits
/// once, not once a step.
pub async fn record_steps(
    db: SchemaClient<'_>,
    pipeline: &str,
    phase: &str,
    steps: &[(&str, &str, Option<&str>)],
) -> Result<(), tokio_postgres::Error> {
    if steps.is_empty() {
        return Ok(());
    }
    let items: Vec<&str> = steps.iter().map(|s| s.0).collect();
    let statements: Vec<&str> = steps.iter().map(|s| s.1).collect();
    let errors: Vec<Option<&str>> = steps.iter().map(|s| s.2).collect();
    db
        .execute(
            "INSERT INTO etl.phase_log (pipeline, phase, item, status, statement, error) \
             SELECT $1, $2, item, CASE WHEN error IS NULL THEN 'done' ELSE 'failed' END, statement, error \
             FROM unnest($3::text[], $4::text[], $5::text[]) AS s(item, statement, error) \
             ON CONFLICT (pipeline, phase, item) DO UPDATE \
             SET status = EXCLUDED.status, statement = EXCLUDED.statement, error = EXCLUDED.error, finished_at = now()",
            &[&pipeline, &phase, &items, &statements, &errors],
        )
        .await?;
    Ok(())
}

/// The statements recorded for the steps of one phase done, by step.
pub async fn phase_statements(
    db: SchemaClient<'_>,
    pipeline: &str,
    phase: &str,
) -> Result<HashMap<String, String>, tokio_postgres::Error> {
    Ok(db
        .query(
            "SELECT item, statement FROM etl.phase_log WHERE pipeline = $1 AND phase = $2 AND status = 'done' AND statement IS NOT NULL",
            &[&pipeline, &phase],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The statement recorded for one step, if it is recorded as done.
pub async fn phase_statement(
    db: SchemaClient<'_>,
    pipeline: &str,
    phase: &str,
    item: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(db
        .query_opt(
            "SELECT statement FROM etl.phase_log WHERE pipeline = $1 AND phase = $2 AND item = $3 AND status = 'done'",
            &[&pipeline, &phase, &item],
        )
        .await?
        .and_then(|r| r.get(0)))
}

/// A run's peak connections per server, replacing the last run's (phase
/// `connections` of `etl.phase_log`: the endpoint, and `peak N of at
/// most M`), for `etl status`.
pub async fn record_connections(
    db: SchemaClient<'_>,
    pipeline: &str,
    peaks: &[(String, usize)],
    limit: usize,
) -> Result<(), tokio_postgres::Error> {
    let endpoints: Vec<&str> = peaks.iter().map(|(e, _)| e.as_str()).collect();
    let said: Vec<String> = peaks
        .iter()
        .map(|(_, n)| format!("peak {n} of at most {limit}"))
        .collect();
    db
        .execute(
            "WITH gone AS (DELETE FROM etl.phase_log WHERE pipeline = $1 AND phase = 'connections') \
             INSERT INTO etl.phase_log (pipeline, phase, item, status, statement) \
             SELECT $1, 'connections', e, 'done', s FROM unnest($2::text[], $3::text[]) AS x(e, s) \
             ON CONFLICT (pipeline, phase, item) DO UPDATE SET statement = EXCLUDED.statement, finished_at = now()",
            &[&pipeline, &endpoints, &said],
        )
        .await?;
    Ok(())
}

/// The last run's peak connections: (endpoint, `peak N of at most M`,
/// when it ended).
pub async fn connections(
    db: SchemaClient<'_>,
    pipeline: &str,
) -> Result<Vec<ConnectionPeak>, tokio_postgres::Error> {
    Ok(db
        .query(
            "SELECT item, coalesce(statement, ''), to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') \
             FROM etl.phase_log WHERE pipeline = $1 AND phase = 'connections' ORDER BY item",
            &[&pipeline],
        )
        .await?
        .iter()
        .map(|r| ConnectionPeak {
            endpoint: r.get(0),
            peak: r.get(1),
            at: r.get(2),
        })
        .collect())
}

/// The most connections a run held to one server.
#[derive(Debug, serde::Serialize)]
pub struct ConnectionPeak {
    pub endpoint: String,
    /// `peak N of at most M`.
    pub peak: String,
    /// When the run recorded it (UTC).
    pub at: String,
}

/// One recorded step of a migration's phases.
#[derive(Debug, serde::Serialize)]
pub struct PhaseStep {
    pub phase: String,
    pub item: String,
    pub status: String,
    pub error: Option<String>,
}

/// The recorded steps of `pipeline`'s phases, in the phases' order.
pub async fn phases(
    db: SchemaClient<'_>,
    pipeline: &str,
) -> Result<Vec<PhaseStep>, tokio_postgres::Error> {
    let exists: bool = db
        .query_one("SELECT to_regclass('etl.phase_log') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    Ok(db
        .query(
            "SELECT phase, item, status, error FROM etl.phase_log WHERE pipeline = $1 AND phase <> 'connections' \
             ORDER BY array_position(ARRAY['discover', 'create', 'constraints', 'sequences', 'verify'], phase), finished_at, item",
            &[&pipeline],
        )
        .await?
        .iter()
        .map(|r| PhaseStep {
            phase: r.get(0),
            item: r.get(1),
            status: r.get(2),
            error: r.get(3),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emptying_checks_the_ledger_under_the_tables_lock() {
        let sql = empty_unless_busy_sql(
            &LedgerSchema::default(),
            "\"s\".\"t\"",
            "TRUNCATE ONLY",
            "2026-01-01 00:00:00+00",
        );
        let lock = sql
            .find("LOCK TABLE \"s\".\"t\" IN ACCESS EXCLUSIVE MODE")
            .unwrap();
        let check = "l.finished_at >= '2026-01-01 00:00:00+00'";
        let (before, after) = (sql.find(check).unwrap(), sql.rfind(check).unwrap());
        let empty = sql.find("TRUNCATE ONLY \"s\".\"t\"").unwrap();
        assert!(before < lock && lock < after && after < empty, "{sql}");
    }

    #[test]
    fn servers_before_15_are_refused_with_the_reason() {
        assert!(unsupported_server(150004, "15.4").is_none());
        assert!(unsupported_server(170000, "17.0").is_none());
        let why = unsupported_server(140011, "14.11").unwrap();
        assert!(
            why.starts_with("the target runs PostgreSQL 14.11; etl keeps its ledger"),
            "{why}"
        );
        assert!(why.contains("needs PostgreSQL 15 or later"), "{why}");
    }
}
