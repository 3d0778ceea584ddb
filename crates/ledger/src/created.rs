//! The tables a pipeline created, recorded in `etl.phase_log` (phase
//! `create`, one row per table with its CREATE statement) in the same
//! transaction that creates them. `etl run --recreate` drops exactly those,
//! with their `etl.column_map` rows and ledger entries; a table the
//! pipeline found already there is never dropped.

use etl_base::sql::{literal, TableName};
use etl_model::ledger::{LedgerSchema, SchemaClient};
use etl_pg::error::EtlError;

/// The phase under which created tables are recorded.
pub const PHASE: &str = "create";

/// The statement that records, inside the creating transaction, that
/// `pipeline` created `table` (qualified as etl writes it).
pub fn record(schema: &LedgerSchema, pipeline: &str, table: &str, statement: &str) -> String {
    format!(
        "INSERT INTO {}.phase_log (pipeline, phase, item, status, statement) \
         VALUES ({}, {}, {}, 'done', {}) ON CONFLICT (pipeline, phase, item) DO NOTHING",
        schema.name(),
        literal(pipeline),
        literal(PHASE),
        literal(table),
        literal(statement)
    )
}

/// The tables `pipeline` created on this server, as recorded (only those
/// that still exist), checked to be names as etl writes them.
pub async fn tables(db: SchemaClient<'_>, pipeline: &str) -> Result<Vec<TableName>, EtlError> {
    let context = || format!("reading the tables pipeline {pipeline:?} created from etl.phase_log");
    let exists: bool = db
        .query_one("SELECT to_regclass('etl.phase_log') IS NOT NULL", &[])
        .await
        .map_err(EtlError::pg(context()))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = db
        .query(
            "SELECT item FROM etl.phase_log WHERE pipeline = $1 AND phase = $2 \
             AND to_regclass(item) IS NOT NULL ORDER BY item",
            &[&pipeline, &PHASE],
        )
        .await
        .map_err(EtlError::pg(context()))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let item: String = r.get(0);
        // Names from the log go into DROP as etl wrote them, or not at all.
        let table = TableName::parse(&item)
            .ok()
            .filter(|t| t.qualified() == item)
            .ok_or_else(|| {
                EtlError::Changed(format!(
                    "etl.phase_log records table {item:?} as created by pipeline {pipeline:?}, which is not a name as etl writes it; the log was changed by hand: delete that row (phase 'create') and drop the table yourself"
                ))
            })?;
        out.push(table);
    }
    Ok(out)
}

/// Drops `tables` and forgets them, in one transaction under the sink's
/// timeouts: their `etl.column_map` rows, their chunks in the ledger, the
/// pipeline's other phase records and its cutoff (the next run starts over).
pub async fn drop_tables(
    db: SchemaClient<'_>,
    pipeline: &str,
    tables: &[TableName],
    set_local: &str,
    lock_timeout_secs: f64,
) -> Result<(), EtlError> {
    if tables.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = tables.iter().map(TableName::qualified).collect();
    let list = names
        .iter()
        .map(|n| literal(n))
        .collect::<Vec<_>>()
        .join(", ");
    let p = literal(pipeline);
    let sql = format!(
        "BEGIN; {}; DROP TABLE IF EXISTS {}; \
         DO $etl$ BEGIN IF to_regclass('{s}.column_map') IS NOT NULL THEN \
           DELETE FROM {s}.column_map WHERE base_table IN ({list}) OR table_name IN ({list}); END IF; \
           IF to_regclass('{s}.wide_text_pending') IS NOT NULL THEN \
           DELETE FROM {s}.wide_text_pending WHERE pipeline = {p} AND base_table IN ({list}); END IF; END $etl$; \
         DELETE FROM {s}.chunk_ledger WHERE pipeline = {p} AND target IN ({list}); \
         DELETE FROM {s}.phase_log WHERE pipeline = {p} AND (phase <> {phase} OR item IN ({list})); \
         DELETE FROM {s}.cutoff WHERE pipeline = {p}; COMMIT",
        set_local,
        names.join(", "),
        phase = literal(PHASE),
        s = db.schema.name(),
    );
    // Built with the schema's name: the statement holds the user's names.
    let dropped = db
        .client
        .batch_execute(&sql)
        .await
        .map_err(EtlError::pg(format!("dropping {}", names.join(", "))));
    match dropped {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = db.batch_execute("ROLLBACK").await;
            let e = etl_pg::ddl::explain_busy(db.client, &names[0], lock_timeout_secs, e).await;
            if e.sqlstate() == Some("2BP01") {
                return Err(EtlError::Config(format!(
                    "{e}\nother objects (views, foreign keys from tables this pipeline did not create) depend on these tables; drop those first, nothing was dropped"
                )));
            }
            Err(e)
        }
    }
}
