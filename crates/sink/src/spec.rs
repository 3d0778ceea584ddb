//! What a sink is, once the pipeline file's values all make sense: the
//! closed set of sinks ([`ValidatedSink`]) and each one's settings, with
//! the settings' own types (mode, timeouts, foreign keys, compression).
//! The command line's config layer builds these; [`crate::build`] opens them.

use etl_base::sql::TableName;
use etl_model::ledger::LedgerSchema;
use etl_pg::Endpoint;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParquetCompression {
    #[default]
    Zstd,
    Snappy,
    None,
}

/// How a load into existing tables gets past their foreign keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FkHandling {
    /// Parents load before their children, one level of the foreign-key
    /// graph at a time; the target's triggers fire.
    #[default]
    Order,
    /// Every chunk with `session_replication_role = replica`: neither
    /// foreign keys nor triggers fire (needs a superuser).
    ReplicaRole,
    /// The foreign keys dropped before the data (each under the sink's
    /// lock_timeout; one that stays busy is kept and named with the session
    /// holding it), added back `NOT VALID` and validated after it.
    DropRecreate,
}

impl FkHandling {
    pub fn as_str(self) -> &'static str {
        match self {
            FkHandling::Order => "order",
            FkHandling::ReplicaRole => "replica-role",
            FkHandling::DropRecreate => "drop-recreate",
        }
    }
}

/// `[sinks.timeouts]`, applied to every chunk transaction and DDL statement.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkTimeouts {
    /// Longest wait for a lock (PostgreSQL `lock_timeout`); a chunk that
    /// times out is retried like any transient failure. Default 30; 0 waits forever.
    #[serde(default = "default_lock_timeout_secs")]
    pub lock_timeout_secs: f64,
    /// Longest a single statement may run (`statement_timeout`). Default 0: no limit.
    #[serde(default)]
    pub statement_timeout_secs: f64,
}

impl Default for SinkTimeouts {
    fn default() -> Self {
        SinkTimeouts {
            lock_timeout_secs: default_lock_timeout_secs(),
            statement_timeout_secs: 0.0,
        }
    }
}

const fn default_lock_timeout_secs() -> f64 {
    30.0
}

impl SinkTimeouts {
    /// `SET LOCAL` statements for a transaction.
    pub fn set_local(&self) -> String {
        format!(
            "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}",
            (self.lock_timeout_secs * 1000.0).round() as u64,
            (self.statement_timeout_secs * 1000.0).round() as u64
        )
    }
}

/// How a chunk's rows meet the rows already in the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    /// Each chunk replaces its own window: the target rows in the chunk's
    /// time window (and key) are deleted, then the chunk's rows are copied,
    /// in one transaction. Running a chunk twice never duplicates rows.
    #[default]
    Append,
    /// Rows are merged on the primary key: new keys inserted, existing
    /// rows updated.
    Upsert,
    /// The target is truncated once when `etl run` starts, then loaded as
    /// with append. `etl rerun` does not truncate.
    Replace,
}

impl SinkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkMode::Append => "append",
            SinkMode::Upsert => "upsert",
            SinkMode::Replace => "replace",
        }
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ValidatedSink {
    Postgres(PostgresSinkSpec),
    Parquet(ParquetSinkSpec),
    Csv(CsvSinkSpec),
}

#[derive(Debug, Clone)]
pub struct CsvSinkSpec {
    pub path: String,
    pub header: bool,
    pub delimiter: u8,
    pub null: String,
    pub encoding: &'static encoding_rs::Encoding,
}

#[derive(Debug, Clone)]
pub struct ParquetSinkSpec {
    pub path: String,
    pub compression: ParquetCompression,
    pub row_group_rows: usize,
}

/// What runs on every table a load wrote, once every chunk is done
/// (`analyze_after`; follow mode's small loads leave it to autovacuum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLoad {
    Nothing,
    /// `ANALYZE`: the planner's statistics (a pipeline's `analyze_after =
    /// true`).
    Analyze,
    /// `VACUUM (ANALYZE)`: statistics, and the visibility map that lets
    /// index-only scans skip the heap, as pgcopydb leaves a clone (a
    /// migration's default).
    VacuumAnalyze,
}

impl AfterLoad {
    /// The statement's name, as logs and the plan give it.
    pub fn as_str(self) -> &'static str {
        match self {
            AfterLoad::Nothing => "nothing",
            AfterLoad::Analyze => "ANALYZE",
            AfterLoad::VacuumAnalyze => "VACUUM (ANALYZE)",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PostgresSinkSpec {
    pub endpoint: Endpoint,
    pub table: TableTemplate,
    pub mode: SinkMode,
    pub create_table: bool,
    pub primary_key: Option<Vec<String>>,
    pub timeouts: SinkTimeouts,
    /// What runs on each table once a load is done (`analyze_after`).
    pub after_load: AfterLoad,
    /// A whole PostgreSQL database into existing tables.
    pub fk_handling: FkHandling,
    /// Set by a migration into existing tables: a whole table's chunk
    /// empties it with DELETE (TRUNCATE refuses a table a foreign key
    /// references), and each chunk runs with `session_replication_role =
    /// replica` when `replica_role`.
    pub whole_by_delete: bool,
    pub replica_role: bool,
    /// The schema that holds etl's own tables in the target (`ledger_schema`).
    pub ledger_schema: LedgerSchema,
}

/// A target table name that may hold `{key}`.
#[derive(Debug, Clone)]
pub struct TableTemplate(String);

impl TableTemplate {
    /// A template as written: a table name that may hold `{key}`.
    pub fn new(text: impl Into<String>) -> TableTemplate {
        TableTemplate(text.into())
    }

    /// Exactly this table, whatever the chunk's key.
    pub fn fixed(table: &TableName) -> TableTemplate {
        TableTemplate(table.qualified())
    }

    pub fn has_key(&self) -> bool {
        self.0.contains("{key}")
    }

    /// The table for a chunk's key. A key is placed inside the name's last
    /// part as plain text (the name is quoted whole), so any key is safe.
    pub fn render(&self, key: Option<&str>) -> Result<TableName, String> {
        if !self.has_key() {
            return TableName::parse(&self.0);
        }
        // Parse with a placeholder, then put the key into the parsed parts.
        const MARK: &str = "etl_key_placeholder";
        let mut table = TableName::parse(&self.0.replace("{key}", MARK))?;
        let key = key.unwrap_or("null");
        table.name = table.name.replace(MARK, key);
        if let Some(schema) = &mut table.schema {
            *schema = schema.replace(MARK, key);
        }
        Ok(table)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
