//! FROM and TO of `etl schema` and `etl db`: a PostgreSQL URL, or the name
//! of a `[targets.NAME]` in the targets file (`--config FILE`, else
//! `$ETL_TARGETS`, else `etl-targets.toml` in the working directory):
//!
//! ```toml
//! [targets.staging]
//! url = "postgresql://deploy@staging-db:5432/app"
//! password_env = "STAGING_PASSWORD"
//! sslmode = "verify-full"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::SchemaError;
use etl_pg::{Endpoint, TlsKeys};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    targets: BTreeMap<String, Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    url: String,
    password_env: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
}

/// A database to read or change, and the name its history files carry.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub endpoint: Endpoint,
}

/// The targets file to read: `--config`, `$ETL_TARGETS`, `etl-targets.toml`.
pub fn config_path(config: Option<&Path>) -> PathBuf {
    config
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ETL_TARGETS").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("etl-targets.toml"))
}

/// A URL, or a target of the targets file.
pub fn resolve(arg: &str, config: Option<&Path>) -> Result<Target, SchemaError> {
    let is_url =
        arg.starts_with("postgres://") || arg.starts_with("postgresql://") || arg.contains('=');
    if is_url {
        let none = None;
        let endpoint = Endpoint::parse(
            arg,
            None,
            TlsKeys {
                sslmode: &none,
                sslrootcert: &none,
                sslcert: &none,
                sslkey: &none,
            },
        )
        .map_err(|e| SchemaError::Targets(format!("{arg:?} {}", message(e))))?;
        return Ok(Target {
            name: url_name(&endpoint),
            endpoint,
        });
    }
    let path = config_path(config);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        SchemaError::Targets(format!(
            "{arg:?} is not a postgresql:// URL, so it names a target of {}, which cannot be read ({e}); write [targets.{arg}] url = \"postgresql://...\" there, or pass --config FILE",
            path.display()
        ))
    })?;
    let file: File = toml::from_str(&text)
        .map_err(|e| SchemaError::Targets(format!("{}: {e}", path.display())))?;
    let Some(entry) = file.targets.get(arg) else {
        let known: Vec<&String> = file.targets.keys().collect();
        return Err(SchemaError::Targets(format!(
            "{} has no [targets.{arg}]; its targets: {known:?}",
            path.display()
        )));
    };
    let endpoint = Endpoint::parse(
        &entry.url,
        entry.password_env.clone(),
        TlsKeys {
            sslmode: &entry.sslmode,
            sslrootcert: &entry.sslrootcert,
            sslcert: &entry.sslcert,
            sslkey: &entry.sslkey,
        },
    )
    .map_err(|e| {
        SchemaError::Targets(format!(
            "{}: targets.{arg}.url {}",
            path.display(),
            message(e)
        ))
    })?;
    Ok(Target {
        name: arg.to_string(),
        endpoint,
    })
}

fn message(e: etl_pg::ParseError) -> String {
    match e {
        etl_pg::ParseError::Url(m) => m,
        etl_pg::ParseError::SslMode(m) => format!("sslmode: {m}"),
    }
}

/// `host_port_db` of a URL, for file names.
fn url_name(e: &Endpoint) -> String {
    let shown = e.to_string();
    let rest = shown.split('@').nth(1).unwrap_or(&shown);
    rest.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
