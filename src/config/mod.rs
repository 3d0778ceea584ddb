//! The pipeline file: one TOML file drives a run.
//!
//! Three phases: [`load`] parses (serde: unknown keys and wrong types are
//! errors with file and line), [`validate::validate`] checks values without
//! touching the network (every problem at once, each with its line and key),
//! and the run builds connections from the validated pipeline.

use etl_base::env;
pub mod validate;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use validate::{ValidatedPipeline, ValidatedSink};

/// A whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Names the pipeline in logs, the summary and file names.
    #[serde(deserialize_with = "env::string")]
    pub name: String,
    /// Where rows come from.
    pub source: SourceConfig,
    /// How the work is cut into chunks and run. Required except for ODBC
    /// sources, which run one chunk per table (or per query).
    #[serde(default)]
    pub chunks: Option<ChunksConfig>,
    /// Stages between source and sinks, in order, run inside each chunk.
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
    /// Where rows go; every chunk goes to each sink.
    pub sinks: Vec<SinkConfig>,
    /// Rules the loaded data must keep, checked after the load and by
    /// `etl verify` on every PostgreSQL sink.
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
}

pub use etl_run::checks::CheckConfig;

/// A source, chosen by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// PostgreSQL, read with `COPY (...) TO STDOUT (FORMAT binary)`.
    Postgres(PostgresSourceConfig),
    /// Parquet files (a staging folder), read batch by batch.
    Parquet(ParquetSourceConfig),
    /// Any ODBC data source (MS Access through MDBTools, SQL Server through
    /// FreeTDS, SQLite, ...), narrow text decoded from `encoding`.
    Odbc(OdbcSourceConfig),
    /// CSV files, read as PostgreSQL's `COPY ... CSV` reads them.
    Csv(CsvSourceConfig),
    /// An MS Access file read natively (jetdb): a whole-database migration.
    Access(AccessSourceConfig),
}

pub use etl_source::access::config::AccessSourceConfig;
pub use etl_source::csv::config::CsvSourceConfig;
pub use etl_source::odbc::config::{OdbcSourceConfig, OnLongValue};
pub use etl_source::parquet::config::ParquetSourceConfig;
pub use etl_source::spec::OnInvalidText;
use etl_source::spec::{
    default_batch_bytes, default_batch_rows, default_delimiter, default_encoding, default_true,
};

/// `[source]` with `type = "postgres"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// libpq-style URI or key=value string. The password comes from the URL,
    /// `password_env`, `PGPASSWORD` or `~/.pgpass`, in that order.
    #[serde(deserialize_with = "env::string")]
    pub url: String,
    /// Name of an environment variable holding the password.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub password_env: Option<String>,
    /// TLS as libpq: disable, allow, prefer (default), require, verify-ca,
    /// verify-full. Also in the URL (`?sslmode=`) or `PGSSLMODE`.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub sslmode: Option<String>,
    /// The CA's PEM file, or `system`.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub sslrootcert: Option<String>,
    /// A client certificate (PEM) and its unencrypted key.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub sslcert: Option<String>,
    #[serde(default, deserialize_with = "env::opt_string")]
    pub sslkey: Option<String>,
    /// A SELECT whose rows are copied. Exactly one of `query` and `table`.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub query: Option<String>,
    /// A table (`schema.table`) copied whole; its primary key is used for
    /// created target tables.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub table: Option<String>,
    /// A whole database: its tables (`["*"]`, or names and glob patterns,
    /// `schema.table` or `table`), moved with everything in them.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// A whole database: these schemas (names or glob patterns) with
    /// everything in them.
    #[serde(default)]
    pub schemas: Option<Vec<String>>,
    /// A whole database: tables (`schema.table`, `table`, glob patterns)
    /// left out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// A whole database: owners kept (`ALTER ... OWNER TO`; the roles must
    /// exist on the target). Default false, as `pg_restore --no-owner`.
    #[serde(default)]
    pub owners: bool,
    /// A whole database: grants kept (GRANT / REVOKE). Default false, as
    /// `pg_restore --no-acl`.
    #[serde(default)]
    pub grants: bool,
    /// A whole database: its large objects (`lo_*`) copied too, with their
    /// oids. Default true, as pg_dump of a whole database.
    #[serde(default)]
    pub large_objects: Option<bool>,
    /// Rows per Arrow batch. Default 65536.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Bytes of row data per batch; whichever limit is reached first ends
    /// the batch. Default 32 MiB.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
}

/// `[chunks]`: time windows, optionally per key, run by a worker pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunksConfig {
    /// The timestamp or timestamptz column that windows are cut on.
    /// Required except for ODBC sources (which cannot be cut by time yet).
    #[serde(default, deserialize_with = "env::opt_string")]
    pub time_column: Option<String>,
    /// Window length: a whole number of s, m, h or d. Default "24h".
    #[serde(default = "default_interval", deserialize_with = "env::string")]
    pub interval: String,
    /// Chunks are per value of this column and per window.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub key_column: Option<String>,
    /// First window's start. Default: the earliest time in the source,
    /// rounded down to a whole interval since 1970-01-01 UTC.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub start: Option<String>,
    /// End of the last window (exclusive). Default: the end of the window
    /// that holds the latest time.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub end: Option<String>,
    /// Worker threads, each running one chunk end to end. Default 2.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Times a chunk that failed for a transient reason (connection lost,
    /// server restart, deadlock, lock timeout) is tried again before it is
    /// declared failed. Default 3.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry, doubling for each further one. Default 1.
    #[serde(default = "default_retry_backoff_secs")]
    pub retry_backoff_secs: f64,
    /// Where failed chunks are written (`key,start,end`), relative to the
    /// working directory. Default "failed_chunks.csv".
    #[serde(default = "default_failed_csv", deserialize_with = "env::string")]
    pub failed_csv: String,
    /// A migration's table with a single-column integer primary key is cut
    /// into ranges of the key of about this many rows, each its own chunk
    /// (and into at least `workers` ranges once it has `workers` x
    /// `batch_rows` rows). Default 1,000,000.
    #[serde(default = "default_range_rows")]
    pub range_rows: u64,
    /// A PostgreSQL `table` or `query` without `time_column`: cut into
    /// ranges of this integer column, `range_width` values wide and aligned
    /// to multiples of it (as time windows are to the interval, so a later
    /// run cuts the same ranges), instead of one chunk of everything.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub range_column: Option<String>,
    /// The values of `range_column` each range holds.
    #[serde(default)]
    pub range_width: Option<u64>,
    /// The most connections the run opens to each PostgreSQL endpoint
    /// (server and database) at once. Default and ceiling: 2 x workers +
    /// 2; never below workers + 1.
    #[serde(default)]
    pub max_connections: Option<usize>,
}

const fn default_range_rows() -> u64 {
    1_000_000
}

fn default_interval() -> String {
    "24h".to_string()
}

const fn default_workers() -> usize {
    2
}

const fn default_retries() -> u32 {
    3
}

const fn default_retry_backoff_secs() -> f64 {
    1.0
}

fn default_failed_csv() -> String {
    "failed_chunks.csv".to_string()
}

/// A transform stage, chosen by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformConfig {
    /// A SQL query over the previous stage, read as the table `input`.
    Sql(SqlTransformConfig),
    /// A narrow-to-wide pivot of EAV readings; SQL stages after it read wide rows.
    Pivot(PivotTransformConfig),
}

/// `[[transforms]]` with `type = "pivot"`: rows of (index..., name, format,
/// value columns...) become one row per index value with one column per
/// name, the value taken from the column that the format names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PivotTransformConfig {
    /// The wide table's primary key columns, like `["created_time"]`.
    pub index: Vec<String>,
    /// The column naming each reading's channel: one wide column per value.
    pub name_column: String,
    /// The column naming which value column holds the reading.
    pub format_column: String,
    /// Format -> value column, like `{ Decimal = "double_v", Integer = "long_v" }`.
    pub values: std::collections::BTreeMap<String, String>,
    /// `typed` (default): each channel's column takes its values' type
    /// (boolean, bigint, double precision or text); `text`: every column text.
    #[serde(default)]
    pub column_types: ColumnTypes,
    /// Channels per wide table; more spill into `{table}_2`, `{table}_3`...
    /// Default 1500 (PostgreSQL allows 1600 columns per table).
    #[serde(default = "default_max_columns")]
    pub max_columns: usize,
    /// A CSV file of `channel,group` lines (relative to the working
    /// directory): each group's channels go to their own table `{table}_{group}`.
    #[serde(default)]
    pub column_groups: Option<String>,
}

/// How wide columns are typed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnTypes {
    #[default]
    Typed,
    Text,
}

const fn default_max_columns() -> usize {
    1500
}

/// `[[transforms]]` with `type = "sql"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlTransformConfig {
    /// The query (DataFusion SQL), e.g. `SELECT * FROM input WHERE ...`.
    #[serde(deserialize_with = "env::string")]
    pub query: String,
}

/// A sink, chosen by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// PostgreSQL, written with `COPY ... FROM STDIN (FORMAT binary)`.
    Postgres(PostgresSinkConfig),
    /// Parquet files, one per chunk.
    Parquet(ParquetSinkConfig),
    /// CSV files, one per chunk, as `COPY ... TO ... CSV` writes them.
    Csv(CsvSinkConfig),
}

/// `[[sinks]]` with `type = "csv"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSinkConfig {
    /// File of each chunk, with `{pipeline}`, `{key}`, `{start}`, `{end}`
    /// as for Parquet.
    #[serde(deserialize_with = "env::string")]
    pub path: String,
    /// A first line of column names. Default true.
    #[serde(default = "default_true")]
    pub header: bool,
    /// One ASCII character. Default `,`.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// How NULL is written. Default "" (an empty string is then written `""`).
    #[serde(default)]
    pub null: String,
    /// The files' code page (any encoding_rs label, cp949). Default utf-8.
    #[serde(default = "default_encoding", deserialize_with = "env::string")]
    pub encoding: String,
}

/// `[[sinks]]` with `type = "parquet"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// File of each chunk: `{pipeline}`, `{key}`, `{start}`, `{end}` are
    /// replaced (times as `20250601T000000Z`); relative to the working
    /// directory. Must hold `{start}` or `{end}`, and `{key}` when chunks
    /// are per key, so that every chunk has a file of its own.
    #[serde(deserialize_with = "env::string")]
    pub path: String,
    /// zstd, snappy or none. Default zstd.
    #[serde(default)]
    pub compression: ParquetCompression,
    /// Rows per row group. Default 1,000,000.
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
}

const fn default_row_group_rows() -> usize {
    1_000_000
}

/// `[[sinks]]` with `type = "postgres"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// libpq-style URI; password as for the source.
    #[serde(deserialize_with = "env::string")]
    pub url: String,
    /// Name of an environment variable holding the password.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub password_env: Option<String>,
    /// TLS as libpq: disable, allow, prefer (default), require, verify-ca,
    /// verify-full. Also in the URL (`?sslmode=`) or `PGSSLMODE`.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub sslmode: Option<String>,
    /// The CA's PEM file, or `system`.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub sslrootcert: Option<String>,
    /// A client certificate (PEM) and its unencrypted key.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub sslcert: Option<String>,
    #[serde(default, deserialize_with = "env::opt_string")]
    pub sslkey: Option<String>,
    /// Target table, `schema.table`; `{key}` is replaced by the chunk's key.
    #[serde(deserialize_with = "env::string")]
    pub table: String,
    /// append, upsert or replace. Default append.
    #[serde(default)]
    pub mode: SinkMode,
    /// Create the table (and its schema) from the source's columns when it
    /// is missing. Default false: a typo in `table` is an error, not a new table.
    #[serde(default)]
    pub create_table: bool,
    /// Primary key for created tables and the conflict target of upsert.
    /// Default: the source table's primary key, or the target's.
    #[serde(default)]
    pub primary_key: Option<Vec<String>>,
    /// `[sinks.timeouts]`: how long a chunk or DDL may wait on a busy target.
    #[serde(default)]
    pub timeouts: SinkTimeouts,
    /// Run ANALYZE on every table the run wrote, once the load is done
    /// (not after each follow-mode load); a migration (a whole database,
    /// an Access file, ODBC tables, CSV files with `{file}`) runs VACUUM
    /// (ANALYZE). Default: true
    /// for a migration, false otherwise.
    #[serde(default)]
    pub analyze_after: Option<bool>,
    /// A whole PostgreSQL database into tables that exist
    /// (`create_table = false`): how the target's foreign keys and
    /// triggers meet the load. Default "order".
    #[serde(default)]
    pub fk_handling: Option<FkHandling>,
    /// The schema of the target that holds etl's own tables (chunk
    /// ledger, cutoff, phase log, the pivot's column map). Default `etl`.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub ledger_schema: Option<String>,
}

pub use etl_sink::spec::{FkHandling, ParquetCompression, SinkMode, SinkTimeouts};

/// A pipeline file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read pipeline file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {} problem{}:\n{}", .problems.len(), if .problems.len() == 1 { "" } else { "s" }, format_problems(.problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<validate::Problem>,
    },
}

fn format_problems(problems: &[validate::Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and parses a pipeline file, `${NAME}` replaced from the environment.
pub fn load(path: &Path) -> Result<(Pipeline, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let pipeline = parse(&text).map_err(|message| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    })?;
    Ok((pipeline, text))
}

/// Parses pipeline text. The message of an error names the line and key.
pub fn parse(text: &str) -> Result<Pipeline, String> {
    toml::from_str(text).map_err(|e| {
        // toml's message is "TOML parse error at line L, column C\n  |\n...\nmessage";
        // keep it whole: it shows the offending line.
        e.to_string().trim_end().to_string()
    })
}

/// Loads and validates: what `etl validate` does.
pub fn load_validated(path: &Path) -> Result<ValidatedPipeline, ConfigError> {
    let (pipeline, text) = load(path)?;
    validate::validate(pipeline, &text).map_err(|problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}
