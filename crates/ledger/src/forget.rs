//! `etl forget`: a finished pipeline's rows taken out of a target's
//! ledger (`etl.chunk_ledger`, `etl.phase_log`, `etl.cutoff`), and the
//! `etl` schema dropped once nothing in it holds a row (a clone of
//! production then carries nothing of etl's). Refused while a live etl
//! process runs chunks of the pipeline.

use tokio_postgres::Client;

use etl_pg::error::EtlError;

/// The ledger tables that hold rows per pipeline.
const PER_PIPELINE: [&str; 3] = ["etl.chunk_ledger", "etl.phase_log", "etl.cutoff"];

/// What the target's ledger holds for `pipeline`, for people (empty: nothing).
pub async fn held(client: &Client, pipeline: &str) -> Result<Vec<String>, EtlError> {
    let mut lines = Vec::new();
    for table in present(client).await? {
        let n: i64 = client
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
pub async fn forget(client: &Client, pipeline: &str) -> Result<Vec<String>, EtlError> {
    let running = running_pids(client, pipeline).await?;
    if !running.is_empty() {
        return Err(EtlError::Config(format!(
            "pipeline {pipeline:?} has chunks running in live etl processes (server pids {running:?}); stop them (Ctrl-C or SIGTERM) and forget it after"
        )));
    }
    let held = held(client, pipeline).await?;
    let tx = "forgetting the pipeline's ledger rows";
    client
        .batch_execute("BEGIN")
        .await
        .map_err(EtlError::pg(tx))?;
    for table in present(client).await? {
        client
            .execute(
                &format!("DELETE FROM {table} WHERE pipeline = $1"),
                &[&pipeline],
            )
            .await
            .map_err(EtlError::pg(format!("deleting the rows of {table}")))?;
    }
    let kept = still_holding(client).await?;
    if kept.is_empty() {
        client
            .batch_execute("DROP SCHEMA IF EXISTS etl CASCADE")
            .await
            .map_err(EtlError::pg("dropping the schema etl"))?;
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(EtlError::pg(tx))?;
    let mut lines: Vec<String> = held.into_iter().map(|h| format!("deleted {h}")).collect();
    match kept.as_slice() {
        [] => lines.push("dropped schema etl: nothing else was in it".into()),
        _ => lines.push(format!("kept schema etl: {}", kept.join(", "))),
    }
    Ok(lines)
}

/// The per-pipeline ledger tables that exist.
async fn present(client: &Client) -> Result<Vec<&'static str>, EtlError> {
    let mut out = Vec::new();
    for table in PER_PIPELINE {
        let exists: bool = client
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
async fn running_pids(client: &Client, pipeline: &str) -> Result<Vec<i32>, EtlError> {
    if !crate::sql::exists(client)
        .await
        .map_err(EtlError::pg("looking for etl.chunk_ledger"))?
    {
        return Ok(Vec::new());
    }
    Ok(client
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

/// Why the schema `etl` stays: its tables that hold rows (another
/// pipeline's, a pivot's column map), and objects other than tables.
async fn still_holding(client: &Client) -> Result<Vec<String>, EtlError> {
    let rows = client
        .query(
            "SELECT format('%I.%I', 'etl', c.relname), c.relkind::text FROM pg_class c \
             WHERE c.relnamespace = to_regnamespace('etl') AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') \
             UNION ALL SELECT 'function ' || p.proname, 'function' FROM pg_proc p \
             WHERE p.pronamespace = to_regnamespace('etl') ORDER BY 1",
            &[],
        )
        .await
        .map_err(EtlError::pg("listing what schema etl holds"))?;
    let mut kept = Vec::new();
    for r in rows {
        let (name, kind): (String, String) = (r.get(0), r.get(1));
        if kind != "r" {
            kept.push(format!("{name} (not etl's)"));
            continue;
        }
        let has_rows: bool = client
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
