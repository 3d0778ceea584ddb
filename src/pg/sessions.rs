//! The sessions of a database as `pg_stat_activity` and `pg_locks` show
//! them, for `etl db sessions` and `etl db kill`: who is connected, what
//! they run, for how long, and whom they wait for.

use tokio_postgres::Client;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Session {
    pub pid: i32,
    pub user: String,
    pub application: String,
    pub client: String,
    /// `active`, `idle`, `idle in transaction`, ...
    pub state: String,
    /// Seconds since its transaction began (or its query, or its state).
    pub age_secs: i64,
    /// Seconds in its current state.
    pub state_secs: i64,
    pub query: String,
    /// The sessions it waits for (`pg_blocking_pids`).
    pub waiting_for: Vec<i32>,
    /// With `--locks`: `mode on relation` (`granted` or `waiting`).
    pub locks: Vec<String>,
}

/// Every other client session of the current database.
pub async fn list(client: &Client, locks: bool) -> Result<Vec<Session>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.pid, coalesce(a.usename::text, ''), coalesce(a.application_name, ''), \
             coalesce(host(a.client_addr), 'local'), coalesce(a.state, ''), \
             coalesce(extract(epoch FROM now() - coalesce(a.xact_start, a.query_start, a.backend_start))::int8, 0), \
             coalesce(extract(epoch FROM now() - a.state_change)::int8, 0), \
             regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), pg_blocking_pids(a.pid) \
             FROM pg_stat_activity a WHERE a.datname = current_database() AND a.backend_type = 'client backend' \
             AND a.pid <> pg_backend_pid() ORDER BY 6 DESC, a.pid",
            &[],
        )
        .await?;
    let mut out: Vec<Session> = rows
        .iter()
        .map(|r| Session {
            pid: r.get(0),
            user: r.get(1),
            application: r.get(2),
            client: r.get(3),
            state: r.get(4),
            age_secs: r.get(5),
            state_secs: r.get(6),
            query: r.get(7),
            waiting_for: r.get(8),
            locks: Vec::new(),
        })
        .collect();
    if locks {
        for r in client
            .query(
                "SELECT l.pid, l.mode || ' on ' || coalesce(l.relation::regclass::text, l.locktype) || \
                 CASE WHEN l.granted THEN '' ELSE ' (waiting)' END \
                 FROM pg_locks l WHERE l.locktype IN ('relation', 'advisory', 'transactionid') \
                 AND (l.relation IS NULL OR l.relation NOT IN (SELECT oid FROM pg_class WHERE relnamespace = 'pg_catalog'::regnamespace)) \
                 AND l.pid <> pg_backend_pid() ORDER BY 1, 2",
                &[],
            )
            .await?
        {
            let pid: i32 = r.get(0);
            if let Some(s) = out.iter_mut().find(|s| s.pid == pid) {
                s.locks.push(r.get(1));
            }
        }
    }
    Ok(out)
}

/// Whether etl must never terminate this session: etl's own (its
/// application name is `etl` or starts with `etl `, as every connection
/// etl makes is named).
pub fn protected(s: &Session) -> bool {
    s.application == "etl" || s.application.starts_with("etl ")
}

pub async fn terminate(client: &Client, pid: i32) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await?
        .get(0))
}
