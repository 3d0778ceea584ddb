//! What a source is, once the pipeline file's values all make sense: the
//! closed set of sources ([`ValidatedSource`]) and each one's settings.
//! The command line's config layer builds these; [`crate::build`] opens them.

use std::path::PathBuf;

use etl_base::sql::TableName;
use etl_pg::Endpoint;
use serde::Deserialize;

/// What to do with narrow text that is not valid in `encoding`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalidText {
    #[default]
    Error,
    Replace,
}

/// What rows a source reads.
#[derive(Debug, Clone)]
pub enum Relation {
    Query(String),
    Table(TableName),
}

// Built once per run: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ValidatedSource {
    Postgres {
        endpoint: Endpoint,
        relation: Relation,
        batch_rows: usize,
        batch_bytes: usize,
    },
    Parquet {
        pattern: String,
        batch_rows: usize,
    },
    Odbc(OdbcSpec),
    Csv(crate::csv::CsvSpec),
    Access(AccessSpec),
    /// A whole PostgreSQL database (or schemas, or a list of tables).
    PostgresDatabase(PgDatabaseSpec),
}

/// A PostgreSQL database moved with everything in it.
#[derive(Debug, Clone)]
pub struct PgDatabaseSpec {
    pub endpoint: Endpoint,
    /// Names or glob patterns of tables (`*`: all); empty with `schemas`.
    pub tables: Vec<String>,
    /// Names or glob patterns of schemas; empty: every schema.
    pub schemas: Vec<String>,
    pub exclude: Vec<String>,
    pub owners: bool,
    pub grants: bool,
    /// Copy the database's large objects (`source.large_objects`).
    pub large_objects: bool,
}

/// An Access file read natively, table by table.
#[derive(Debug, Clone)]
pub struct AccessSpec {
    pub path: PathBuf,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub options: crate::access::ReadOptions,
}

/// An ODBC source whose settings make sense (the driver is reached only
/// when the run starts).
#[derive(Debug, Clone)]
pub struct OdbcSpec {
    pub connection_string: String,
    pub relation: OdbcRelation,
    /// The encoding label as written (`cp949`).
    pub encoding_label: String,
    pub options: crate::odbc::OdbcOptions,
    /// Connections reading one big table at once (ranges of its key).
    pub readers: usize,
}

/// What an ODBC source reads.
#[derive(Debug, Clone)]
pub enum OdbcRelation {
    Query(String),
    /// Table names or `*`, and names left out.
    Tables {
        include: Vec<String>,
        exclude: Vec<String>,
    },
}

// Defaults of the pipeline file's source settings, shared by the sources' serde types.
pub const fn default_true() -> bool {
    true
}

pub fn default_delimiter() -> String {
    ",".into()
}

pub fn default_quote() -> String {
    "\"".into()
}

pub fn default_encoding() -> String {
    "utf-8".to_string()
}

pub const fn default_batch_rows() -> usize {
    65_536
}
