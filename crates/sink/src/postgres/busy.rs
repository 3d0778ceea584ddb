//! A lock timeout on a target table, told as the sessions holding it.

use tokio_postgres::Client;

use etl_pg::error::EtlError;

/// Turns a lock timeout into an error that names the table and the
/// sessions holding its locks (read after rolling back, so they may have
/// moved on); other errors pass through.
pub async fn explain_busy(
    client: &Client,
    qualified: &str,
    timeouts: &crate::spec::SinkTimeouts,
    e: EtlError,
) -> EtlError {
    if e.sqlstate() != Some("55P03") {
        return e;
    }
    let _ = client.batch_execute("ROLLBACK").await;
    let holders = client
        .query_one(
            "SELECT string_agg(DISTINCT 'pid ' || l.pid || coalesce(' (' || nullif(a.application_name, '') || ')', ''), ', ') \
             FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.relation = to_regclass($1) AND l.granted AND l.pid <> pg_backend_pid()",
            &[&qualified],
        )
        .await
        .ok()
        .and_then(|r| r.get::<_, Option<String>>(0))
        .unwrap_or_else(|| "another session (gone before etl could look)".to_string());
    EtlError::Busy {
        table: qualified.to_string(),
        holders,
        lock_timeout_secs: timeouts.lock_timeout_secs,
        last: Box::new(e),
    }
}
