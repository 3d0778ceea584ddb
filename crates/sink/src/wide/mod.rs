//! Wide tables for a pivot stage, in PostgreSQL.
//!
//! A key's wide table (the sink's `table`, the "base") is split into parts:
//! the base itself, then `{table}_2`, `{table}_3`... once `max_columns`
//! channels fill one; a channel listed in `column_groups` goes to its
//! group's tables `{table}_{group}`, `{table}_{group}_2`... Every part has
//! the pivot's index as primary key and receives every index value of each
//! chunk it is written in, so each part equals the in-database pivot
//! restricted to its columns.
//!
//! `etl.column_map` (base_table, table_name, column_name, channel) records
//! where each channel lives: a channel keeps its column for good, and no
//! two channels share one. A channel name that is not a usable column name
//! (over PostgreSQL's 63 bytes, empty, taken by an index column or by a
//! longer name's shortening) gets `prefix_hhhhhhhh`, its first bytes and a
//! hash of the whole name. Columns are added (and widened, boolean < bigint
//! < double precision < text) before a chunk's data is copied, in their own
//! transaction under the sink's timeouts and an advisory lock per base
//! table, so concurrent workers and processes agree on the layout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{Field, FieldRef, Schema};
use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::{Client, CopyInSink};

use super::{ChunkStats, ChunkWriter};
use crate::spec::PostgresSinkSpec;
use crate::spec::SinkMode;
use etl_base::plan::{chunk_filter, Chunk};
use etl_base::sql::{ident, literal, TableName};
use etl_model::ledger::{InTransaction, LedgerSchema, SchemaClient};
use etl_model::wide::Kind;
use etl_pg::ddl::{create_table_sql, explain_busy, read_columns, CatalogColumn};
use etl_pg::error::EtlError;
use etl_pg::pg_binary::encode::CopyEncoder;
use etl_pg::pg_binary::PgType;
use etl_pg::text::fit_identifier;
use etl_pg::Pool;

mod changes;
mod text;
mod verify;
mod writer;

pub use writer::WideWriter;

const COLUMN_MAP_TABLES: &str = "CREATE TABLE IF NOT EXISTS etl.column_map ( \
      base_table text NOT NULL, table_name text NOT NULL, column_name text NOT NULL, \
      channel text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), \
      PRIMARY KEY (base_table, channel), UNIQUE (table_name, column_name)); \
    CREATE TABLE IF NOT EXISTS etl.wide_text_pending ( \
      pipeline text NOT NULL, base_table text NOT NULL, channel text NOT NULL, \
      chunk_key text, chunk_start bigint NOT NULL, chunk_end bigint NOT NULL)";

/// Creates the column map's tables in the ledger's schema; run with
/// [`etl_pg::locked_ddl`].
pub fn column_map_ddl(schema: &LedgerSchema) -> String {
    format!("{}; {}", schema.create(), schema.sql(COLUMN_MAP_TABLES))
}

/// Wide rows as the sink writes them: the index and how to split value
/// columns (from the rows' schema, [`etl_model::wide::WideLayout`]), and the
/// rules of the pivot that made them from the source, when this pipeline
/// pivots (for `etl plan`'s channels and `etl verify`).
#[derive(Debug)]
pub struct WideSpec {
    pub index: Vec<FieldRef>,
    pub layout: etl_model::wide::WideLayout,
    pub pivot: Option<etl_model::wide::PivotRules>,
}

/// Where a channel's values go.
#[derive(Debug, Clone)]
struct Placement {
    part: String,
    column: String,
    kind: Kind,
}

/// A part table as the target has it.
#[derive(Debug, Clone)]
struct Part {
    columns: Vec<CatalogColumn>,
    /// Channels placed in it.
    channels: usize,
}

/// A base table's layout: parts by qualified name, channels' places.
#[derive(Debug, Clone, Default)]
struct Layout {
    parts: BTreeMap<String, Part>,
    channels: HashMap<String, Placement>,
}

/// State shared by the sink and its writers.
pub struct Wide {
    pub spec: PostgresSinkSpec,
    pub wide: Arc<WideSpec>,
    pub pipeline: String,
    pub time_column: String,
    pub time_has_zone: bool,
    /// The chunk key's column, when it is part of the index.
    pub key_column: Option<String>,
    /// The target's ledger, joined inside each chunk's transaction.
    pub ledger: Arc<dyn InTransaction>,
    layouts: tokio::sync::Mutex<HashMap<String, Layout>>,
}

/// The part table `seq` (1-based) of a group (`None`: ungrouped channels).
fn part_table(base: &TableName, group: Option<&str>, seq: usize) -> TableName {
    let suffix = match (group, seq) {
        (None, 1) => String::new(),
        (None, n) => format!("_{n}"),
        (Some(g), 1) => format!("_{g}"),
        (Some(g), n) => format!("_{g}_{n}"),
    };
    TableName {
        schema: Some(base.schema_or_public().to_string()),
        name: fit_identifier(&format!("{}{suffix}", base.name), &|_| false),
    }
}

/// The advisory lock guarding a base table's layout, as a SQL literal.
fn layout_lock(qualified: &str) -> String {
    literal(&format!("etl pivot {qualified}"))
}

/// A key's wide table, schema explicit and name fit to PostgreSQL.
pub fn base_table(table: &TableName) -> TableName {
    part_table(table, None, 1)
}

fn kind_of(c: &CatalogColumn) -> Option<Kind> {
    Some(match c.info.oid {
        16 => Kind::Bool,
        20 => Kind::Int,
        701 => Kind::Float,
        25 => Kind::Text,
        _ => return None,
    })
}

fn pg_type(kind: Kind) -> PgType {
    match kind {
        Kind::Bool => PgType::Bool,
        Kind::Int => PgType::Int8,
        Kind::Float => PgType::Float8,
        Kind::Text => PgType::Text,
    }
}

impl Wide {
    pub fn new(
        spec: PostgresSinkSpec,
        wide: Arc<WideSpec>,
        pipeline: String,
        time_column: String,
        time_has_zone: bool,
        key_column: Option<String>,
        ledger: Arc<dyn InTransaction>,
    ) -> Self {
        Wide {
            spec,
            wide,
            pipeline,
            time_column,
            time_has_zone,
            key_column,
            ledger,
            layouts: Default::default(),
        }
    }

    fn index_names(&self) -> Vec<String> {
        self.wide.index.iter().map(|f| f.name().clone()).collect()
    }

    /// Checks what can be checked before the first chunk and creates the
    /// base table (index only) when allowed.
    pub async fn prepare(&self, client: &Client, base: &TableName) -> Result<(), EtlError> {
        let index = self.index_names();
        if self.spec.mode != SinkMode::Upsert && !index.contains(&self.time_column) {
            return Err(EtlError::Config(format!(
                "mode {} replaces a chunk's window when it runs again, so the pivot's index needs the time column {:?}; add it to index or use mode = \"upsert\"",
                self.spec.mode.as_str(),
                self.time_column
            )));
        }
        match read_columns(client, base).await? {
            Some(columns) => {
                let pk = etl_pg::primary_key(client, &base.qualified())
                    .await
                    .map_err(EtlError::pg(format!("reading the primary key of {base}")))?;
                if pk != index {
                    return Err(EtlError::Config(format!(
                        "wide table {base} has primary key ({}), but the pivot's index is ({}); they must be the same",
                        pk.join(", "),
                        index.join(", ")
                    )));
                }
                for f in &self.wide.index {
                    if !columns.iter().any(|c| c.name == *f.name()) {
                        return Err(EtlError::Config(format!(
                            "wide table {base} has no index column {:?}",
                            f.name()
                        )));
                    }
                }
                Ok(())
            }
            None if self.spec.create_table => self.create_part(client, base).await,
            None => Err(EtlError::Config(format!(
                "wide table {base} does not exist on {}; create it, or set create_table = true in [[sinks]]",
                self.spec.endpoint
            ))),
        }
    }

    async fn create_part(&self, client: &Client, table: &TableName) -> Result<(), EtlError> {
        let create = self.create_sql(table)?;
        let sql = format!(
            "{}; {create}; {}",
            self.spec.timeouts.set_local(),
            self.ledger.created_sql(&table.qualified(), &create)
        );
        etl_pg::locked_ddl(client, &format!("etl ddl {table}"), &sql)
            .await
            .map_err(EtlError::pg(format!("creating wide table {table}")))
    }

    fn create_sql(&self, table: &TableName) -> Result<String, EtlError> {
        let schema = Schema::new(self.wide.index.clone());
        create_table_sql(table, &schema, &self.index_names(), &[])
    }

    /// The base table and every part created for it, as `etl plan` and
    /// replace mode need them.
    pub async fn parts(&self, client: &Client, base: &TableName) -> Result<Vec<String>, EtlError> {
        Ok(self.load(client, base).await?.parts.into_keys().collect())
    }

    /// Reads the layout from the target: etl.column_map and the catalog.
    async fn load(&self, client: &Client, base: &TableName) -> Result<Layout, EtlError> {
        let qualified = base.qualified();
        let schema = &self.spec.ledger_schema;
        let context = || format!("reading {} for {qualified}", schema.table("column_map"));
        let mapped = SchemaClient::new(client, schema)
            .query(
                "SELECT table_name, column_name, channel FROM etl.column_map \
                 WHERE base_table = $1 AND to_regclass('etl.column_map') IS NOT NULL",
                &[&qualified],
            )
            .await;
        let mapped = match mapped {
            Ok(rows) => rows,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                Vec::new()
            }
            Err(e) => return Err(EtlError::pg(context())(e)),
        };
        let mut layout = Layout::default();
        let mut tables: BTreeSet<String> = mapped.iter().map(|r| r.get(0)).collect();
        tables.insert(qualified.clone());
        for t in tables {
            let table = TableName::parse(&t)
                .map_err(|e| EtlError::Changed(format!("etl.column_map names table {t:?}: {e}")))?;
            // Names from the map go into SQL as etl wrote them (quoted
            // parts) or not at all.
            if table.qualified() != t {
                return Err(EtlError::Changed(format!(
                    "etl.column_map names table {t:?} for base_table = {qualified:?}, not a name as etl writes it ({}); the map was changed by hand: restore the row, or drop the map's rows for base_table = {qualified:?} (and its wide tables) to start that table over",
                    table.qualified()
                )));
            }
            if let Some(columns) = read_columns(client, &table).await? {
                layout.parts.insert(
                    t,
                    Part {
                        columns,
                        channels: 0,
                    },
                );
            }
        }
        for r in &mapped {
            let (part, column, channel): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let Some(p) = layout.parts.get_mut(&part) else {
                return Err(EtlError::Changed(format!(
                    "etl.column_map places channel {channel:?} in table {part}, which does not exist; drop the map's rows for base_table = {qualified:?} to start that table over"
                )));
            };
            let found = p.columns.iter().find(|c| c.name == column);
            let Some(kind) = found.and_then(kind_of) else {
                return Err(EtlError::Changed(format!(
                    "etl.column_map places channel {channel:?} in column {column:?} of {part}, which is missing or not boolean, bigint, double precision or text"
                )));
            };
            p.channels += 1;
            layout
                .channels
                .insert(channel, Placement { part, column, kind });
        }
        Ok(layout)
    }

    /// Makes the target hold `channels` (name, kind): adds parts and
    /// columns and widens types the cached (else the current) layout lacks.
    /// The chunk reads the layout it writes by afterwards, under its lock.
    pub async fn make_room(
        &self,
        client: &Client,
        base: &TableName,
        channels: &[(String, Kind)],
    ) -> Result<(), EtlError> {
        let qualified = base.qualified();
        let fits = |l: &Layout| {
            channels
                .iter()
                .all(|(c, k)| l.channels.get(c).is_some_and(|p| p.kind >= *k))
        };
        // The cache is only held for a moment: never across a wait on the
        // server, where another worker of this process may hold what we wait for.
        if self.layouts.lock().await.get(&qualified).is_some_and(fits) {
            return Ok(());
        }
        let layout = self.load(client, base).await?;
        if fits(&layout) {
            self.layouts.lock().await.insert(qualified, layout);
            return Ok(());
        }
        // Under the base table's lock (exclusive; chunks hold it shared while
        // they write, so no chunk is half-way when columns change), read
        // again and change what is missing, in one transaction.
        let begun = client
            .batch_execute(&format!(
                "BEGIN; {}; SELECT pg_advisory_xact_lock(hashtext({}))",
                self.spec.timeouts.set_local(),
                layout_lock(&qualified)
            ))
            .await
            .map_err(EtlError::pg(format!("locking the layout of {qualified}")));
        let changed = async {
            begun?;
            let layout = self.load(client, base).await?;
            let ddl = self.plan_changes(base, &layout, channels)?;
            for statement in &ddl {
                if statement.contains(" ALTER COLUMN ") {
                    tracing::warn!(sql = %statement, "Risky change: a channel's format changed, so its column is widened (the table is rewritten; existing values are cast).");
                } else if statement.starts_with("CREATE ") {
                    tracing::info!(sql = %statement, "Creating wide table.");
                } else if let Some(rest) = statement.strip_prefix("ALTER TABLE ") {
                    let table = rest.split(" ADD COLUMN ").next().unwrap_or(rest);
                    let columns = statement.matches(" ADD COLUMN ").count();
                    tracing::info!(table, columns, "Adding channel columns.");
                    tracing::debug!(sql = %statement, "Adding channel columns.");
                }
            }
            let mut sql = ddl.join("; ");
            sql.push_str("; COMMIT");
            client
                .batch_execute(&sql)
                .await
                .map_err(EtlError::pg(format!("adding columns to {qualified}")))
        }
        .await;
        if let Err(e) = changed {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(
                explain_busy(client, &qualified, self.spec.timeouts.lock_timeout_secs, e).await,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_named_by_group_and_number() {
        let base = TableName {
            schema: Some("wide".into()),
            name: "t_IMO1".into(),
        };
        assert_eq!(
            part_table(&base, None, 1).qualified(),
            "\"wide\".\"t_IMO1\""
        );
        assert_eq!(
            part_table(&base, None, 3).qualified(),
            "\"wide\".\"t_IMO1_3\""
        );
        assert_eq!(
            part_table(&base, Some("engine"), 2).qualified(),
            "\"wide\".\"t_IMO1_engine_2\""
        );
    }
}
