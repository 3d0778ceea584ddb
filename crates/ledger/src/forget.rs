//! `etl forget`: a finished pipeline's rows taken out of a target's
//! ledger (`etl.chunk_ledger`, `etl.phase_log`, `etl.cutoff`, in the
//! sink's `ledger_schema`), and that schema dropped once nothing in it
//! holds a row and it holds nothing but etl's tables (a clone of
//! production then carries nothing of etl's). Refused while a live etl
//! process runs chunks of the pipeline.

use etl_model::ledger::SchemaClient;
use etl_pg::error::EtlError;

/// The ledger tables that hold rows per pipeline.
const PER_PIPELINE: [&str; 3] = ["etl.chunk_ledger", "etl.phase_log", "etl.cutoff"];

/// Every table etl makes in its schema; anything else there is the user's.
const ETLS_OWN: [&str; 5] = [
    "chunk_ledger",
    "phase_log",
    "cutoff",
    "column_map",
    "wide_text_pending",
];

/// What the target's ledger holds for `pipeline`, for people (empty: nothing).
pub async fn held(db: SchemaClient<'_>, pipeline: &str) -> Result<Vec<String>, EtlError> {
    let mut lines = Vec::new();
    for table in present(db).await? {
        let n: i64 = db
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE pipeline = $1"),
                &[&pipeline],
            )
            .await
            .map_err(EtlError::pg(format!("counting the rows of {table}")))?
            .get(0);
        if n > 0 {
            lines.push(format!("{n} row(s) of {table}"));
        }
    }
    Ok(lines)
}

/// Deletes the pipeline's rows in one transaction, then drops the schema
/// `etl` when none of its tables holds a row and it holds nothing else.
/// Returns what it did, for people.
pub async fn forget(db: SchemaClient<'_>, pipeline: &str) -> Result<Vec<String>, EtlError> {
    let running = running_pids(db, pipeline).await?;
    if !running.is_empty() {
        return Err(EtlError::Config(format!(
            "pipeline {pipeline:?} has chunks running in live etl processes (server pids {running:?}); stop them (Ctrl-C or SIGTERM) and forget it after"
        )));
    }
    let held = held(db, pipeline).await?;
    let tx = "forgetting the pipeline's ledger rows";
    db.batch_execute("BEGIN").await.map_err(EtlError::pg(tx))?;
    for table in present(db).await? {
        db.execute(
            &format!("DELETE FROM {table} WHERE pipeline = $1"),
            &[&pipeline],
        )
        .await
        .map_err(EtlError::pg(format!("deleting the rows of {table}")))?;
    }
    let kept = still_holding(db).await?;
    let schema = db.schema.name();
    if kept.is_empty() {
        db.client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .map_err(EtlError::pg(format!("dropping the schema {schema}")))?;
    }
    db.batch_execute("COMMIT").await.map_err(EtlError::pg(tx))?;
    let mut lines: Vec<String> = held.into_iter().map(|h| format!("deleted {h}")).collect();
    match kept.as_slice() {
        [] => lines.push(format!("dropped schema {schema}: nothing else was in it")),
        _ => lines.push(format!("kept schema {schema}: {}", kept.join(", "))),
    }
    Ok(lines)
}

/// The per-pipeline ledger tables that exist.
async fn present(db: SchemaClient<'_>) -> Result<Vec<String>, EtlError> {
    let mut out = Vec::new();
    for table in PER_PIPELINE.map(|t| db.schema.sql(t)) {
        let exists: bool = db
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .map_err(EtlError::pg(format!("looking for {table}")))?
            .get(0);
        if exists {
            out.push(table);
        }
    }
    Ok(out)
}

/// Server pids of live sessions that hold a chunk of `pipeline`.
async fn running_pids(db: SchemaClient<'_>, pipeline: &str) -> Result<Vec<i32>, EtlError> {
    if !crate::sql::exists(db)
        .await
        .map_err(EtlError::pg("looking for etl.chunk_ledger"))?
    {
        return Ok(Vec::new());
    }
    Ok(db
        .query(
            "SELECT DISTINCT claimed_pid FROM etl.chunk_ledger WHERE pipeline = $1 AND status = 'running' \
             AND claimed_pid IN (SELECT pid FROM pg_stat_activity) ORDER BY 1",
            &[&pipeline],
        )
        .await
        .map_err(EtlError::pg("reading the running chunks"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Why the ledger's schema stays: etl's tables that hold rows (another
/// pipeline's, a pivot's column map), and anything not etl's own.
async fn still_holding(db: SchemaClient<'_>) -> Result<Vec<String>, EtlError> {
    let rows = db
        .query(
            "SELECT format('%I.%I', $1::text, c.relname), c.relkind::text, c.relname::text FROM pg_class c \
             WHERE c.relnamespace = to_regnamespace($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') \
             UNION ALL SELECT 'function ' || p.proname, 'function', '' FROM pg_proc p \
             WHERE p.pronamespace = to_regnamespace($1) \
             UNION ALL SELECT 'type ' || t.typname, 'type', '' FROM pg_type t \
             WHERE t.typnamespace = to_regnamespace($1) AND t.typrelid = 0 AND t.typelem = 0 ORDER BY 1",
            &[&db.schema.name()],
        )
        .await
        .map_err(EtlError::pg(format!("listing what schema {} holds", db.schema)))?;
    let mut kept = Vec::new();
    for r in rows {
        let (name, kind, relname): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        if kind != "r" || !ETLS_OWN.contains(&relname.as_str()) {
            kept.push(format!("{name} (not etl's)"));
            continue;
        }
        let has_rows: bool = db
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {name})"), &[])
            .await
            .map_err(EtlError::pg(format!("looking into {name}")))?
            .get(0);
        if has_rows {
            kept.push(format!("{name} holds rows"));
        }
    }
    Ok(kept)
}
