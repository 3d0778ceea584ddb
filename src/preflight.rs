//! `etl preflight`: what a run needs, checked before anything is written.
//! Each source and sink connection, the server versions etl supports, the
//! privileges the run will use (CREATE where it creates, INSERT, DELETE
//! for replaced windows, UPDATE for upsert, TRUNCATE for replace, owning a
//! wide table it widens), the types created tables need (an extension's
//! type missing on the target), and free disk on the target against twice
//! the estimated size of the data, where that can be known.
//!
//! Everything here only reads: catalog queries and `has_*_privilege`.
//! Free disk comes from `statvfs` on the server's data directory, which
//! needs the server on this machine and a role that may read
//! `data_directory`; otherwise the check says it cannot tell.

use etl_base::human::bytes;
use tokio_postgres::Client;

use crate::config::validate::PostgresSinkSpec;
use crate::config::SinkMode;
use crate::error::pg_message;
use crate::sql::TableName;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    /// Could not be told; not a failure.
    Unknown,
    Fail,
}

/// One line of the preflight table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub verdict: Verdict,
    pub check: String,
    /// `source ...`, `sink ...`.
    pub place: String,
    pub detail: String,
}

impl Finding {
    pub fn new(verdict: Verdict, check: &str, place: &str, detail: impl Into<String>) -> Self {
        Finding {
            verdict,
            check: check.to_string(),
            place: place.to_string(),
            detail: detail.into(),
        }
    }
}

/// Whether the run's connections fit the server: its `max_connections`
/// less those in use (and less the reserved ones, for a role that is not
/// a superuser), and the role's own connection limit, against the bound
/// of the run's pool ([`crate::pg::limit`]).
pub async fn connections(client: &Client, place: &str) -> Finding {
    let needed = crate::pg::limit() as i64;
    let sql = "SELECT current_setting('max_connections')::int8, \
                      CASE WHEN r.rolsuper THEN 0 ELSE current_setting('superuser_reserved_connections')::int8 END, \
                      (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int8, \
                      r.rolconnlimit::int8, \
                      (SELECT count(*) FROM pg_stat_activity a WHERE a.usename = r.rolname)::int8 \
               FROM pg_roles r WHERE r.rolname = current_user";
    let row = match client.query_one(sql, &[]).await {
        Ok(r) => r,
        Err(e) => return Finding::new(Verdict::Unknown, "connections", place, pg_message(&e)),
    };
    let (max, reserved, used, role_limit, role_used): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    // This preflight's own session is among those in use.
    let free = max - reserved - used + 1;
    let role_free = (role_limit >= 0).then_some(role_limit - role_used + 1);
    let fits = needed <= free && role_free.is_none_or(|f| needed <= f);
    let detail = format!(
        "the run opens at most {needed} here (2 x workers + 2, or [chunks] max_connections); \
         the server allows {max}, {used} in use{}{}",
        if reserved > 0 {
            format!(", {reserved} reserved for superusers")
        } else {
            String::new()
        },
        role_free.map_or(String::new(), |f| format!(", the role may open {f} more"))
    );
    match fits {
        true => Finding::new(Verdict::Pass, "connections", place, detail),
        false => Finding::new(
            Verdict::Fail,
            "connections",
            place,
            format!("{detail}: lower workers or [chunks] max_connections, or wait for the server's sessions to end"),
        ),
    }
}

/// A PostgreSQL source: version, SELECT on its table, and the size of
/// what it will read (the table's, or the planner's estimate for a query).
pub async fn postgres_source(
    client: &Client,
    place: &str,
    relation: &crate::config::validate::Relation,
) -> (Vec<Finding>, Option<u64>) {
    use crate::config::validate::Relation;
    let mut out = Vec::new();
    match client.query_one("SHOW server_version", &[]).await {
        Ok(r) => out.push(Finding::new(
            Verdict::Pass,
            "server version",
            place,
            format!(
                "PostgreSQL {} (read with COPY TO STDOUT binary)",
                r.get::<_, String>(0)
            ),
        )),
        Err(e) => out.push(Finding::new(
            Verdict::Fail,
            "server version",
            place,
            pg_message(&e),
        )),
    }
    out.push(connections(client, place).await);
    let estimate = match relation {
        Relation::Table(t) => {
            let q = t.qualified();
            match client
                .query_one(
                    "SELECT current_user::text, has_table_privilege($1, 'SELECT'), pg_total_relation_size($1::regclass)::int8",
                    &[&q],
                )
                .await
            {
                Ok(r) => {
                    let (user, select, bytes): (String, bool, i64) = (r.get(0), r.get(1), r.get(2));
                    out.push(if select {
                        Finding::new(Verdict::Pass, "SELECT", place, format!("role {user} may read {q}"))
                    } else {
                        Finding::new(
                            Verdict::Fail,
                            "SELECT",
                            place,
                            format!("role {user} may not read {q}; GRANT SELECT ON {q} TO {}", crate::sql::ident(&user)),
                        )
                    });
                    Some(bytes as u64)
                }
                Err(e) => {
                    out.push(Finding::new(Verdict::Fail, "SELECT", place, pg_message(&e)));
                    None
                }
            }
        }
        Relation::Query(sql) => {
            match client
                .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), &[])
                .await
            {
                Ok(r) => {
                    let plan: String = r.get(0);
                    let v: serde_json::Value = serde_json::from_str(&plan).unwrap_or_default();
                    let p = &v[0]["Plan"];
                    let rows = p["Plan Rows"].as_f64().unwrap_or(0.0);
                    let width = p["Plan Width"].as_f64().unwrap_or(0.0);
                    out.push(Finding::new(
                        Verdict::Pass,
                        "query",
                        place,
                        format!("plans; about {} rows", rows as u64),
                    ));
                    Some((rows * (width + 24.0)) as u64)
                }
                Err(e) => {
                    out.push(Finding::new(Verdict::Fail, "query", place, pg_message(&e)));
                    None
                }
            }
        }
    };
    (out, estimate)
}

/// A PostgreSQL sink: version, the ledger's schema, each target's
/// privileges (or CREATE where it will be created), the types of created
/// tables, and free disk against twice `estimate`.
pub async fn postgres_sink(
    client: &Client,
    place: &str,
    spec: &PostgresSinkSpec,
    wide: bool,
    type_names: &[String],
    estimate: Option<u64>,
) -> Vec<Finding> {
    let mut out = vec![server_version(client, place).await];
    out.push(connections(client, place).await);
    let user: String = match client.query_one("SELECT current_user::text", &[]).await {
        Ok(r) => r.get(0),
        Err(e) => {
            out.push(Finding::new(Verdict::Fail, "role", place, pg_message(&e)));
            return out;
        }
    };
    // The ledger: etl.chunk_ledger (in ledger_schema), created on first use.
    let schema = &spec.ledger_schema;
    let what = format!("the ledger ({})", schema.table("chunk_ledger"));
    out.push(
        match schema_access(client, schema.name(), &user, &what).await {
            Ok(f) => Finding {
                place: place.to_string(),
                ..f
            },
            Err(e) => Finding::new(
                Verdict::Fail,
                &format!("ledger schema {schema}"),
                place,
                pg_message(&e),
            ),
        },
    );
    // The target table, or its schema when the name holds a placeholder.
    let table = if spec.table.as_str().contains('{') {
        None
    } else {
        spec.table.render(None).ok()
    };
    match table {
        Some(t) => out.extend(table_access(client, place, spec, &t, &user, wide).await),
        None => {
            let schema = spec
                .table
                .render(Some("x"))
                .map(|t| t.schema_or_public().to_string())
                .unwrap_or_else(|_| "public".into());
            if spec.create_table {
                out.push(
                    match schema_access(client, &schema, &user, "tables per key").await {
                        Ok(f) => Finding {
                            place: place.to_string(),
                            ..f
                        },
                        Err(e) => Finding::new(Verdict::Fail, "CREATE", place, pg_message(&e)),
                    },
                );
            }
        }
    }
    if spec.create_table && !wide {
        out.push(column_types(client, place, type_names).await);
    }
    out.push(disk(client, place, spec, estimate).await);
    out
}

/// The server's version: 15 or later holds the ledger.
async fn server_version(client: &Client, place: &str) -> Finding {
    match client
        .query_one(
            "SELECT current_setting('server_version_num')::int4, current_setting('server_version')",
            &[],
        )
        .await
    {
        Ok(r) => match etl_ledger::sql::unsupported_server(r.get(0), r.get(1)) {
            Some(why) => Finding::new(Verdict::Fail, "server version", place, why),
            None => Finding::new(
                Verdict::Pass,
                "server version",
                place,
                format!(
                    "PostgreSQL {} (15 or later holds the ledger)",
                    r.get::<_, String>(1)
                ),
            ),
        },
        Err(e) => Finding::new(Verdict::Fail, "server version", place, pg_message(&e)),
    }
}

/// Types the created tables use: an extension's type must exist here too.
async fn column_types(client: &Client, place: &str, type_names: &[String]) -> Finding {
    let mut missing = Vec::new();
    for t in type_names {
        match client
            .query_one("SELECT to_regtype($1) IS NOT NULL", &[t])
            .await
        {
            Ok(r) if r.get::<_, bool>(0) => {}
            Ok(_) => missing.push(t.clone()),
            Err(_) => missing.push(t.clone()),
        }
    }
    if missing.is_empty() {
        Finding::new(
            Verdict::Pass,
            "column types",
            place,
            "every type a created table uses exists",
        )
    } else {
        Finding::new(
            Verdict::Fail,
            "column types",
            place,
            format!(
                "type {} does not exist here; created tables need it: CREATE EXTENSION for the extension that provides it on the source",
                missing.join(", ")
            ),
        )
    }
}

/// CREATE (and USAGE) on `schema`, or CREATE on the database when the
/// schema does not exist yet.
async fn schema_access(
    client: &Client,
    schema: &str,
    user: &str,
    what: &str,
) -> Result<Finding, tokio_postgres::Error> {
    let r = client
        .query_one(
            "SELECT to_regnamespace($1) IS NOT NULL, \
             CASE WHEN to_regnamespace($1) IS NOT NULL THEN has_schema_privilege($1, 'CREATE') AND has_schema_privilege($1, 'USAGE') END, \
             has_database_privilege(current_database(), 'CREATE'), current_database()::text",
            &[&schema],
        )
        .await?;
    let (exists, on_schema, on_db, db): (bool, Option<bool>, bool, String) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    let check = format!("CREATE in schema {schema}");
    Ok(match (exists, on_schema) {
        (true, Some(true)) => Finding::new(Verdict::Pass, &check, "", format!("for {what}")),
        (true, _) => Finding::new(
            Verdict::Fail,
            &check,
            "",
            format!(
                "role {user} lacks CREATE (or USAGE) on schema {schema}, needed for {what}; GRANT USAGE, CREATE ON SCHEMA {} TO {}",
                crate::sql::ident(schema),
                crate::sql::ident(user)
            ),
        ),
        (false, _) if on_db => Finding::new(
            Verdict::Pass,
            &check,
            "",
            format!("schema {schema} will be created (CREATE on database {db}) for {what}"),
        ),
        (false, _) => Finding::new(
            Verdict::Fail,
            &check,
            "",
            format!(
                "schema {schema} does not exist and role {user} lacks CREATE on database {db} to create it, needed for {what}; GRANT CREATE ON DATABASE {} TO {}, or create the schema for it",
                crate::sql::ident(&db),
                crate::sql::ident(user)
            ),
        ),
    })
}

/// The privileges the sink's mode uses on an existing table, or CREATE
/// where it will be created.
async fn table_access(
    client: &Client,
    place: &str,
    spec: &PostgresSinkSpec,
    table: &TableName,
    user: &str,
    wide: bool,
) -> Vec<Finding> {
    let q = table.qualified();
    let exists = match client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&q])
        .await
    {
        Ok(r) => r.get::<_, bool>(0),
        Err(e) => {
            return vec![Finding::new(
                Verdict::Fail,
                "target table",
                place,
                pg_message(&e),
            )]
        }
    };
    if !exists {
        if !spec.create_table {
            return vec![Finding::new(
                Verdict::Fail,
                "target table",
                place,
                format!("{q} does not exist; create it, or set create_table = true in [[sinks]]"),
            )];
        }
        return vec![match schema_access(
            client,
            table.schema_or_public(),
            user,
            &format!("creating {q}"),
        )
        .await
        {
            Ok(f) => Finding {
                place: place.to_string(),
                ..f
            },
            Err(e) => Finding::new(Verdict::Fail, "CREATE", place, pg_message(&e)),
        }];
    }
    let mut out = Vec::new();
    for (privilege, why) in privileges(spec.mode) {
        let r = client
            .query_one("SELECT has_table_privilege($1, $2)", &[&q, &privilege])
            .await;
        out.push(match r {
            Ok(r) if r.get::<_, bool>(0) => {
                Finding::new(Verdict::Pass, privilege, place, format!("on {q}"))
            }
            Ok(_) => Finding::new(
                Verdict::Fail,
                privilege,
                place,
                format!(
                    "role {user} lacks {privilege} on {q} ({why}); GRANT {privilege} ON {q} TO {}",
                    crate::sql::ident(user)
                ),
            ),
            Err(e) => Finding::new(Verdict::Fail, privilege, place, pg_message(&e)),
        });
    }
    if wide {
        out.push(owner(client, place, &q, user).await);
    }
    out
}

/// The privileges a sink's mode needs on its table, and why: append and
/// upsert replace a rerun chunk's window with DELETE; upsert updates;
/// replace truncates.
fn privileges(mode: SinkMode) -> Vec<(&'static str, &'static str)> {
    let mut needed = vec![("INSERT", "every chunk")];
    match mode {
        SinkMode::Append => needed.push(("DELETE", "a chunk that runs again replaces its window")),
        SinkMode::Upsert => {
            needed.push(("UPDATE", "upsert updates rows that exist"));
            needed.push(("DELETE", "a chunk that runs again replaces its window"));
        }
        SinkMode::Replace => needed.push(("TRUNCATE", "mode replace empties the table first")),
    }
    needed
}

/// Whether `user` may add a wide table's channel columns to `q` (ALTER
/// TABLE needs the table's owner).
async fn owner(client: &Client, place: &str, q: &str, user: &str) -> Finding {
    let r = client
        .query_one(
            "SELECT pg_has_role(relowner, 'USAGE'), relowner::regrole::text FROM pg_class WHERE oid = $1::regclass",
            &[&q],
        )
        .await;
    match r {
        Ok(r) if r.get::<_, bool>(0) => Finding::new(Verdict::Pass, "owner", place, format!("may add channel columns to {q}")),
        Ok(r) => Finding::new(
            Verdict::Fail,
            "owner",
            place,
            format!(
                "{q} is owned by {}, and new channels add columns to it (ALTER TABLE); run as that role, or GRANT {} TO {}",
                r.get::<_, String>(1),
                r.get::<_, String>(1),
                crate::sql::ident(user)
            ),
        ),
        Err(e) => Finding::new(Verdict::Fail, "owner", place, pg_message(&e)),
    }
}

/// Free disk under the server's data directory against twice `estimate`.
async fn disk(
    client: &Client,
    place: &str,
    spec: &PostgresSinkSpec,
    estimate: Option<u64>,
) -> Finding {
    let check = "free disk";
    let Some(estimate) = estimate else {
        return Finding::new(
            Verdict::Unknown,
            check,
            place,
            "the source cannot tell the size of its data",
        );
    };
    let wanted = estimate.saturating_mul(2);
    if !spec.endpoint.is_local() {
        return Finding::new(
            Verdict::Unknown,
            check,
            place,
            format!(
                "the server is on another machine and PostgreSQL does not report free disk; make sure {} are free (twice the source's {})",
                bytes(wanted),
                bytes(estimate)
            ),
        );
    }
    let dir = match client
        .query_one("SELECT current_setting('data_directory')", &[])
        .await
    {
        Ok(r) => r.get::<_, String>(0),
        Err(e) => {
            return Finding::new(
                Verdict::Unknown,
                check,
                place,
                format!(
                    "cannot read data_directory ({}); a superuser or a member of pg_read_all_settings can; make sure {} are free",
                    pg_message(&e),
                    bytes(wanted)
                ),
            )
        }
    };
    match free_bytes(std::path::Path::new(&dir)) {
        Some(free) if free >= wanted => Finding::new(
            Verdict::Pass,
            check,
            place,
            format!("{} free, twice the source's {} is {}", bytes(free), bytes(estimate), bytes(wanted)),
        ),
        Some(free) => Finding::new(
            Verdict::Fail,
            check,
            place,
            format!(
                "{} free under {dir}, but twice the source's {} is {}; free space or load elsewhere",
                bytes(free),
                bytes(estimate),
                bytes(wanted)
            ),
        ),
        None => Finding::new(
            Verdict::Unknown,
            check,
            place,
            format!("cannot stat {dir} from here; make sure {} are free", bytes(wanted)),
        ),
    }
}

/// Bytes free for an unprivileged user on the file system holding `path`.
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` is written by statvfs
    // before it is read, only when statvfs reports success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some).
    #[allow(clippy::unnecessary_cast)]
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The table for people: one line per check, failures first marked.
pub fn render(pipeline: &str, findings: &[Finding]) -> String {
    let failed = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Fail)
        .count();
    let mut out = format!(
        "Preflight of pipeline {pipeline}: {} checks, {failed} failed\n",
        findings.len()
    );
    let w_check = findings
        .iter()
        .map(|f| f.check.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let w_place = findings
        .iter()
        .map(|f| f.place.len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!(
        "  {:7}  {:w_check$}  {:w_place$}  detail\n",
        "result", "check", "where"
    ));
    for f in findings {
        let v = match f.verdict {
            Verdict::Pass => "pass",
            Verdict::Unknown => "unknown",
            Verdict::Fail => "FAIL",
        };
        out.push_str(&format!(
            "  {v:7}  {:w_check$}  {:w_place$}  {}\n",
            f.check, f.place, f.detail
        ));
    }
    out
}

/// A file sink (Parquet, CSV): the nearest existing folder of its path is
/// writable, and its file system has room for twice `estimate`.
pub fn file_sink(place: &str, path: &str, estimate: Option<u64>) -> Vec<Finding> {
    let fixed = path.split('{').next().unwrap_or("");
    let mut dir = std::path::Path::new(fixed);
    if !fixed.ends_with('/') {
        dir = dir.parent().unwrap_or(std::path::Path::new(""));
    }
    let mut existing = if dir.as_os_str().is_empty() {
        std::path::PathBuf::from(".")
    } else {
        dir.to_path_buf()
    };
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p.to_path_buf(),
            _ => {
                existing = std::path::PathBuf::from(".");
                break;
            }
        }
    }
    let mut out = Vec::new();
    let writable = {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::CString::new(existing.as_os_str().as_bytes())
            .ok()
            // SAFETY: a NUL-terminated path; access only reads it.
            .is_some_and(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0)
    };
    out.push(if existing.is_dir() && writable {
        Finding::new(
            Verdict::Pass,
            "writable folder",
            place,
            format!("{} (files go under {fixed})", existing.display()),
        )
    } else {
        Finding::new(
            Verdict::Fail,
            "writable folder",
            place,
            format!(
                "{} is not a folder this user may write; files go under {fixed}",
                existing.display()
            ),
        )
    });
    out.push(match (estimate, free_bytes(&existing)) {
        (None, _) => Finding::new(
            Verdict::Unknown,
            "free disk",
            place,
            "the source cannot tell the size of its data",
        ),
        (Some(_), None) => Finding::new(
            Verdict::Unknown,
            "free disk",
            place,
            format!("cannot stat {}", existing.display()),
        ),
        (Some(e), Some(free)) if free >= e.saturating_mul(2) => Finding::new(
            Verdict::Pass,
            "free disk",
            place,
            format!(
                "{} free, twice the source's {} is {}",
                bytes(free),
                bytes(e),
                bytes(e * 2)
            ),
        ),
        (Some(e), Some(free)) => Finding::new(
            Verdict::Fail,
            "free disk",
            place,
            format!(
                "{} free, but twice the source's {} is {}",
                bytes(free),
                bytes(e),
                bytes(e.saturating_mul(2))
            ),
        ),
    });
    out
}
