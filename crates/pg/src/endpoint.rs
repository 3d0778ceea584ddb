//! PostgreSQL connections shared by the source and the sink: where to
//! connect, where the password comes from, TLS ([`tls`]), how the endpoint
//! is shown (never with its password), and the session settings etl
//! relies on.

use std::fmt;
use std::path::PathBuf;

use tokio_postgres::config::Host;
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, NoTls, Socket};

use crate::tls::{SslMode, TlsOptions};

/// A PostgreSQL server and database, as the pipeline file names it.
#[derive(Clone)]
pub struct Endpoint {
    config: Config,
    password_env: Option<String>,
    tls: TlsOptions,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

/// `postgresql://user@host:port/db`, never the password.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self.config.get_user().unwrap_or("");
        let host = self.host().unwrap_or_else(|| "localhost".to_string());
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let db = self.config.get_dbname().unwrap_or(user);
        let password = if self.config.get_password().is_some() {
            ":***"
        } else {
            ""
        };
        write!(f, "postgresql://{user}{password}@{host}:{port}/{db}")
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {endpoint}: {}", crate::error::pg_message(.source))]
    Connect {
        endpoint: String,
        source: tokio_postgres::Error,
    },
    #[error("environment variable {name} (password_env for {endpoint}) is not set")]
    MissingPasswordEnv { endpoint: String, name: String },
    #[error("cannot connect to {endpoint} over TLS: {message}")]
    Tls { endpoint: String, message: String },
    /// Every slot of the endpoint's pool stayed in use (transient).
    #[error("all {limit} connections etl may open to {endpoint} stayed in use for two minutes; raise [chunks] max_connections or lower workers")]
    Exhausted { endpoint: String, limit: usize },
}

/// What a server says when it refuses a connection for good: the database
/// does not exist (3D000), the role does not or may not log in, or no
/// `pg_hba.conf` line lets it (28000), the password is wrong (28P01), the
/// role lacks CONNECT on the database (42501).
const REFUSED: [&str; 4] = ["3D000", "28000", "28P01", "42501"];

impl ConnectError {
    /// Whether connecting again may succeed: the server down, starting,
    /// shutting down or out of connection slots, the network, etl's own
    /// pool full. Not a server that refused the database, role or password
    /// ([`REFUSED`]), nor settings etl cannot use (a password variable not
    /// set, TLS files it cannot read): those stay as they are until the
    /// user changes them, so they are said at once.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Connect { source, .. } => {
                !source.code().is_some_and(|c| REFUSED.contains(&c.code()))
            }
            ConnectError::MissingPasswordEnv { .. } | ConnectError::Tls { .. } => false,
            ConnectError::Exhausted { .. } => true,
        }
    }
}

/// The TLS keys written beside a `url` (in a pipeline or a targets file).
pub struct TlsKeys<'a> {
    pub sslmode: &'a Option<String>,
    pub sslrootcert: &'a Option<String>,
    pub sslcert: &'a Option<String>,
    pub sslkey: &'a Option<String>,
}

/// What is wrong with a written endpoint, and which key holds it.
#[derive(Debug)]
pub enum ParseError {
    /// The URL (or its TLS parameters); the message says what to write.
    Url(String),
    /// The `sslmode` key beside it.
    SslMode(String),
}

impl Endpoint {
    /// A `postgresql://` URL (or key=value string) with the TLS keys
    /// written beside it; the URL's own TLS parameters win.
    pub fn parse(
        url: &str,
        password_env: Option<String>,
        keys: TlsKeys<'_>,
    ) -> Result<Endpoint, ParseError> {
        // The TLS keys leave the URL (tokio-postgres knows only some of them).
        let (url, in_url) = TlsOptions::extract(url).map_err(ParseError::Url)?;
        let mode = keys
            .sslmode
            .as_deref()
            .map(SslMode::parse)
            .transpose()
            .map_err(ParseError::SslMode)?;
        let tls = in_url.or(TlsOptions {
            mode,
            root_cert: keys.sslrootcert.clone(),
            cert: keys.sslcert.as_ref().map(PathBuf::from),
            key: keys.sslkey.as_ref().map(PathBuf::from),
        });
        use std::str::FromStr as _;
        match Config::from_str(&url) {
            Ok(config) => Ok(Endpoint::new(config, password_env).with_tls(tls)),
            // tokio-postgres's message never includes the password.
            Err(e) => Err(ParseError::Url(format!(
                "is not a PostgreSQL URL ({e}); write postgresql://user@host:port/database"
            ))),
        }
    }

    pub fn new(config: Config, password_env: Option<String>) -> Self {
        Endpoint {
            config,
            password_env,
            tls: TlsOptions::default(),
        }
    }

    /// With the TLS keys of its connection string or pipeline.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Whether the server runs on this machine (a Unix socket, or a
    /// loopback address or `localhost`): then its disk is this machine's.
    pub fn is_local(&self) -> bool {
        let hosts = self.config.get_hosts();
        hosts.is_empty()
            || hosts.iter().all(|h| match h {
                Host::Unix(_) => true,
                Host::Tcp(name) => {
                    name == "localhost"
                        || name
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback())
                }
            })
    }

    /// The environment a libpq tool (`pg_dump`) needs to reach the same
    /// server as [`Endpoint::connect`]: host, port, user, database,
    /// password, TLS keys (libpq reads the rest, `~/.pgpass`, itself).
    pub fn libpq_env(&self, application: &str) -> Result<Vec<(String, String)>, ConnectError> {
        let mut env = Vec::new();
        let mut set = |k: &str, v: String| env.push((k.to_string(), v));
        if let Some(host) = self.host() {
            set("PGHOST", host);
        }
        if let Some(port) = self.config.get_ports().first() {
            set("PGPORT", port.to_string());
        }
        if let Some(user) = self.config.get_user() {
            set("PGUSER", user.to_string());
        }
        if let Some(db) = self.config.get_dbname() {
            set("PGDATABASE", db.to_string());
        }
        match self.config.get_password() {
            Some(p) => set("PGPASSWORD", String::from_utf8_lossy(p).into_owned()),
            None => {
                if let Some(p) = self.password()? {
                    set("PGPASSWORD", p);
                }
            }
        }
        let tls = &self.tls;
        if let Some(mode) = tls.mode {
            set("PGSSLMODE", mode.to_string());
        }
        if let Some(root) = &tls.root_cert {
            set("PGSSLROOTCERT", root.clone());
        }
        if let Some(cert) = &tls.cert {
            set("PGSSLCERT", cert.display().to_string());
        }
        if let Some(key) = &tls.key {
            set("PGSSLKEY", key.display().to_string());
        }
        set("PGAPPNAME", application.to_string());
        Ok(env)
    }

    fn host(&self) -> Option<String> {
        self.config.get_hosts().first().map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
    }

    /// Connects, resolving the password, and prepares the session: UTC
    /// time zone, UTF-8, standard-conforming strings (etl quotes literals
    /// assuming it), and an application name that shows in pg_stat_activity.
    pub async fn connect(&self, application: &str) -> Result<Client, ConnectError> {
        let mut config = self.config.clone();
        if config.get_password().is_none() {
            if let Some(password) = self.password()? {
                config.password(password);
            }
        }
        if config.get_application_name().is_none() {
            config.application_name(application);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(30));
        }
        let endpoint = self.to_string();
        let (mode, tls) = self.tls.resolve().map_err(|message| ConnectError::Tls {
            endpoint: endpoint.clone(),
            message,
        })?;
        let connected = match (mode, tls) {
            (_, None) => spawn(config.ssl_mode(PgSslMode::Disable), NoTls, &endpoint).await,
            // allow: without TLS first, with it if the server insists.
            (SslMode::Allow, Some(tls)) => {
                let plain = config
                    .clone()
                    .ssl_mode(PgSslMode::Disable)
                    .connect(NoTls)
                    .await;
                match plain {
                    Ok((client, connection)) => Ok(run_connection(client, connection, &endpoint)),
                    Err(_) => {
                        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                        spawn(config.ssl_mode(PgSslMode::Require), tls, &endpoint).await
                    }
                }
            }
            (mode, Some(tls)) => {
                let pg_mode = match mode {
                    SslMode::Prefer => PgSslMode::Prefer,
                    _ => PgSslMode::Require,
                };
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                spawn(config.ssl_mode(pg_mode), tls, &endpoint).await
            }
        };
        let client = connected.map_err(|source| ConnectError::Connect {
            endpoint: endpoint.clone(),
            source,
        })?;
        // tokio-postgres already asks for client_encoding UTF8 at startup.
        client
            .batch_execute("SET TimeZone = 'UTC'; SET standard_conforming_strings = on")
            .await
            .map_err(|source| ConnectError::Connect { endpoint, source })?;
        Ok(client)
    }

    /// `password_env`, then `PGPASSWORD`, then a matching `~/.pgpass` line.
    fn password(&self) -> Result<Option<String>, ConnectError> {
        if let Some(name) = &self.password_env {
            return std::env::var(name)
                .map(Some)
                .map_err(|_| ConnectError::MissingPasswordEnv {
                    endpoint: self.to_string(),
                    name: name.clone(),
                });
        }
        if let Ok(p) = std::env::var("PGPASSWORD") {
            return Ok(Some(p));
        }
        let path = std::env::var_os("PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")));
        let Some(path) = path.filter(|p| p.is_file()) else {
            return Ok(None);
        };
        // As libpq: a password file others can read is ignored, with a warning.
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(&path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        file = %path.display(),
                        "The password file has group or world access and is ignored; permissions should be u=rw (0600) or less (chmod 600)."
                    );
                    return Ok(None);
                }
            }
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let host = self.host().unwrap_or_else(|| "localhost".to_string());
        let port = self
            .config
            .get_ports()
            .first()
            .copied()
            .unwrap_or(5432)
            .to_string();
        let user = self.config.get_user().unwrap_or("");
        let db = self.config.get_dbname().unwrap_or(user);
        Ok(pgpass_lookup(&text, &host, &port, db, user))
    }
}

/// Connects with `tls` and runs the connection on the runtime.
async fn spawn<T>(config: &Config, tls: T, endpoint: &str) -> Result<Client, tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket> + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, connection) = config.connect(tls).await?;
    Ok(run_connection(client, connection, endpoint))
}

/// Runs a connection's task on this thread's runtime.
fn run_connection<S, T>(
    client: Client,
    connection: tokio_postgres::Connection<S, T>,
    endpoint: &str,
) -> Client
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let name = endpoint.to_string();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(endpoint = name, error = %e, "Connection closed with an error.");
        }
    });
    client
}

/// The password of the first `host:port:db:user:password` line that
/// matches (`*` matches anything; `\:` and `\\` are escapes).
fn pgpass_lookup(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::with_capacity(5);
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(ch) = chars.next() {
            match ch {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        if fields.len() != 5 {
            continue;
        }
        let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        let host_matches =
            matches(&fields[0], host) || (fields[0] == "localhost" && host.starts_with('/'));
        if host_matches
            && matches(&fields[1], port)
            && matches(&fields[2], db)
            && matches(&fields[3], user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

/// Runs `sql` (statements without BEGIN/COMMIT) in a transaction that
/// starts only once the session holds the advisory lock `name`. Taking the
/// lock before BEGIN matters: a transaction that began before the wait
/// would not see the catalog changes of the one it waited for, and
/// `CREATE ... IF NOT EXISTS` would collide with it.
pub async fn locked_ddl(
    client: &Client,
    name: &str,
    sql: &str,
) -> Result<(), tokio_postgres::Error> {
    let key = etl_base::sql::literal(name);
    client
        .batch_execute(&format!("SELECT pg_advisory_lock(hashtext({key}))"))
        .await?;
    let result = client.batch_execute(&format!("BEGIN; {sql}; COMMIT")).await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    let unlocked = client
        .batch_execute(&format!("SELECT pg_advisory_unlock(hashtext({key}))"))
        .await;
    result.and(unlocked)
}

/// The primary key columns of a table (`"schema"."table"`), in key order;
/// empty when it has none.
pub async fn primary_key(
    client: &Client,
    qualified: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1::text::regclass AND i.indisprimary \
             ORDER BY array_position(i.indkey, a.attnum)",
            &[&qualified],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn display_masks_the_password() {
        let e = Endpoint::new(
            Config::from_str("postgresql://etl:s3cret@db.example:6543/dst").unwrap(),
            None,
        );
        assert_eq!(e.to_string(), "postgresql://etl:***@db.example:6543/dst");
        assert!(!format!("{e:?}").contains("s3cret"));
    }

    #[test]
    fn pgpass_matches_wildcards_and_escapes() {
        let text =
            "# comment\nother:5432:*:etl:nope\n127.0.0.1:*:src:etl:pa\\:ss\n*:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(text, "127.0.0.1", "5432", "src", "etl").as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            pgpass_lookup(text, "127.0.0.1", "5432", "dst", "etl").as_deref(),
            Some("fallback")
        );
    }
}
