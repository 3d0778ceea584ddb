//! The sessions of a database as `pg_stat_activity` and `pg_locks` show
//! them, for `etl db sessions` and `etl db kill`: who is connected, what
//! they run, for how long, and whom they wait for.

use tokio_postgres::Client;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Session {
    pub pid: i32,
    pub user: String,
    /// Whether its role is a superuser (`etl db kill` spares those unless
    /// told otherwise).
    pub superuser: bool,
    pub application: String,
    pub client: String,
    /// The client's TCP port (-1 over a Unix socket).
    #[serde(skip)]
    pub client_port: i32,
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
             coalesce(host(a.client_addr), 'local'), coalesce(a.client_port, -1), coalesce(a.state, ''), \
             coalesce(extract(epoch FROM now() - coalesce(a.xact_start, a.query_start, a.backend_start))::int8, 0), \
             coalesce(extract(epoch FROM now() - a.state_change)::int8, 0), \
             regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), pg_blocking_pids(a.pid), \
             coalesce(r.rolsuper, false) \
             FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid WHERE a.datname = current_database() AND a.backend_type = 'client backend' \
             AND a.pid <> pg_backend_pid() ORDER BY 7 DESC, a.pid",
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
            client_port: r.get(4),
            state: r.get(5),
            age_secs: r.get(6),
            state_secs: r.get(7),
            query: r.get(8),
            waiting_for: r.get(9),
            superuser: r.get(10),
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

/// Why etl must never terminate this session, if it must not: etl's own
/// (its application name is `etl` or starts with `etl `, as every
/// connection etl makes is named), or its caller's (a process etl runs
/// under, like a psql that ran it with `\!`, connected over TCP).
pub fn protected(s: &Session, caller_ports: &[u16]) -> Option<&'static str> {
    if s.application == "etl" || s.application.starts_with("etl ") {
        return Some("etl's own session");
    }
    let port = u16::try_from(s.client_port).ok()?;
    caller_ports
        .contains(&port)
        .then_some("the session of the program that ran etl")
}

/// The local TCP ports of the sockets etl's parent processes hold, read
/// from `/proc` (Linux): a session whose client port is one of them is
/// etl's caller. Empty where `/proc` cannot tell.
pub fn caller_ports() -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    let mut pid = std::os::unix::process::parent_id();
    while pid > 1 {
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for fd in fds.flatten() {
                if let Ok(link) = std::fs::read_link(fd.path()) {
                    let link = link.to_string_lossy();
                    if let Some(inode) = link
                        .strip_prefix("socket:[")
                        .and_then(|l| l.strip_suffix(']'))
                    {
                        inodes.insert(inode.to_string());
                    }
                }
            }
        }
        // The parent's parent: the 4th field of /proc/PID/stat, after
        // the command name in parentheses.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        pid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            if inodes.contains(*inode) {
                if let Some(port) = local
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                {
                    ports.push(port);
                }
            }
        }
    }
    ports
}

pub async fn terminate(client: &Client, pid: i32) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await?
        .get(0))
}
