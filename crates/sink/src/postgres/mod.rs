//! PostgreSQL sink: each chunk is one transaction around
//! `COPY table (columns) FROM STDIN (FORMAT binary)`.
//!
//! Each chunk is claimed in the ledger first (`etl_model::ledger::InTransaction`, on the
//! chunk's own session), and marked done
//! in its own data transaction. Modes (see [`SinkMode`]): append and
//! replace copy straight into the table; a chunk whose window overlaps a
//! chunk loaded before deletes that window first, so running a chunk twice
//! never duplicates rows and a first load never pays for a DELETE. Upsert
//! copies into a temporary table and merges on the primary key.

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::{Client, CopyInSink};

use super::{ChunkStats, ChunkWriter, Sink, SinkContext, Tables, Verifiable, WideTables};
use crate::spec::PostgresSinkSpec;
use crate::spec::{AfterLoad, SinkMode};
use etl_base::plan::{chunk_filter, Chunk};
use etl_base::sql::{ident, TableName};
use etl_model::ledger::InTransaction;
use etl_model::verify::{Comparison, Rows, RowsQuery, SourceSide};
use etl_pg::error::EtlError;
use etl_pg::pg_binary::encode::CopyEncoder;
use etl_pg::pg_binary::PgType;
use etl_pg::Pool;

mod forward;
mod pass;
mod target;
mod verify;
mod writer;

use etl_pg::ddl::{create_table_sql, explain_busy, read_columns, read_primary_key, CatalogColumn};
use target::Target;
use writer::PostgresChunkWriter;

/// Bytes of encoded rows buffered before they are sent to the server.
const SEND_BYTES: usize = 1 << 20;

pub struct PostgresSink {
    spec: PostgresSinkSpec,
    ctx: Arc<SinkContext>,
    pool: Arc<Pool>,
    /// The target's ledger, joined inside each chunk's transaction.
    ledger: Arc<dyn InTransaction>,
    targets: tokio::sync::Mutex<HashMap<TableName, Arc<Target>>>,
    time_has_zone: bool,
    /// A pivot's wide tables, when the pipeline ends with one.
    wide: Option<Arc<super::wide::Wide>>,
    /// `etl verify`'s reads of whole tables ([`pass`]).
    passes: pass::Passes,
}

impl PostgresSink {
    pub fn new(
        spec: PostgresSinkSpec,
        ctx: Arc<SinkContext>,
        ledger: Arc<dyn InTransaction>,
    ) -> Self {
        let time_has_zone = ctx
            .schema
            .field_with_name(&ctx.chunking.time_column)
            .map(|f| matches!(f.data_type(), DataType::Timestamp(_, Some(_))))
            .unwrap_or(true);
        let pool = Pool::new(spec.endpoint.clone(), &format!("etl {}", ctx.pipeline));
        let wide = ctx.wide.as_ref().map(|w| {
            let key_column = ctx
                .chunking
                .key_column
                .clone()
                .filter(|k| w.index.iter().any(|f| f.name() == k));
            Arc::new(super::wide::Wide::new(
                spec.clone(),
                w.clone(),
                ctx.pipeline.clone(),
                ctx.chunking.time_column.clone(),
                time_has_zone,
                key_column,
                ledger.clone(),
            ))
        });
        PostgresSink {
            spec,
            ctx,
            pool,
            ledger,
            targets: Default::default(),
            time_has_zone,
            wide,
            passes: Default::default(),
        }
    }

    /// Replace mode as a run starts: empties `tables` (the table, or a
    /// wide table's parts) and forgets `table`'s chunks in the ledger, in
    /// one transaction under the sink's timeouts.
    async fn truncate_replaced(
        &self,
        client: &Client,
        table: &TableName,
        tables: &str,
    ) -> Result<(), EtlError> {
        let qualified = table.qualified();
        let truncated = client
            .batch_execute(&format!(
                "BEGIN; {}; TRUNCATE {tables}; {}; COMMIT",
                self.spec.timeouts.set_local(),
                self.ledger.forget_sql(&qualified)
            ))
            .await
            .map_err(EtlError::pg(format!(
                "truncating {qualified} (mode replace)"
            )));
        match truncated {
            Ok(()) => Ok(()),
            Err(e) => {
                Err(explain_busy(client, &qualified, self.spec.timeouts.lock_timeout_secs, e).await)
            }
        }
    }

    /// The wide tables' state: asked for only through [`Sink::wide`],
    /// which has it only when the rows are wide.
    fn wide_part(&self) -> Result<&super::wide::Wide, EtlError> {
        self.wide
            .as_deref()
            .ok_or_else(|| EtlError::Bug("wide tables asked of a sink of plain rows".into()))
    }

    /// The condition selecting a chunk's rows in the target.
    fn filter(&self, chunk: &Chunk) -> String {
        // A migration's range of its key: integers, or times (a date or
        // timestamp key, compared as a timestamp without zone as read).
        if let Some(k) = self.ctx.chunking.target_range_column() {
            let bound = |v: i64| match chunk.unit {
                etl_base::plan::Unit::Time => etl_base::time::sql_literal(v, false),
                _ => v.to_string(),
            };
            return etl_base::plan::range_condition(&ident(k), chunk, bound);
        }
        chunk_filter(
            &self.ctx.chunking.time_column,
            self.time_has_zone,
            self.ctx.chunking.key_column.as_deref(),
            chunk,
        )
    }

    fn table_for(&self, chunk: &Chunk) -> Result<TableName, EtlError> {
        let table = self.spec.table.render(chunk.key.as_deref()).map_err(|e| {
            EtlError::Config(format!(
                "sinks.table {:?} for key {:?}: {e}",
                self.spec.table.as_str(),
                chunk.key
            ))
        })?;
        // A wide table's name is made to fit PostgreSQL, as its parts' are.
        Ok(match self.wide {
            Some(_) => super::wide::base_table(&table),
            None => table,
        })
    }

    /// The distinct target tables of `chunks`, schema made explicit.
    fn tables_for(&self, chunks: &[Chunk]) -> Result<BTreeSet<TableName>, EtlError> {
        chunks
            .iter()
            .map(|c| {
                self.table_for(c).map(|t| TableName {
                    schema: Some(t.schema_or_public().to_string()),
                    name: t.name,
                })
            })
            .collect()
    }

    /// Each table these chunks write, once, with the first chunk that
    /// names it (a wide table's channels are that chunk key's).
    fn first_chunk_per_table<'a>(
        &self,
        chunks: &'a [Chunk],
    ) -> Result<Vec<(TableName, &'a Chunk)>, EtlError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for chunk in chunks {
            let table = self.table_for(chunk)?;
            if seen.insert(table.qualified()) {
                out.push((table, chunk));
            }
        }
        Ok(out)
    }

    /// The table's checked plan, creating the table first if allowed.
    async fn checked_target(
        &self,
        client: &Client,
        table: &TableName,
    ) -> Result<Arc<Target>, EtlError> {
        let mut targets = self.targets.lock().await;
        if let Some(t) = targets.get(table) {
            return Ok(t.clone());
        }
        let columns = match read_columns(client, table).await? {
            Some(columns) => columns,
            None if self.spec.create_table => {
                let ddl = create_table_sql(table, &self.ctx.schema, &self.primary_key(Vec::new()), &self.ctx.identity)?;
                tracing::info!(table = %table, "Creating target table.");
                let sql = format!(
                    "{}; {ddl}; {}",
                    self.spec.timeouts.set_local(),
                    self.ledger.created_sql(&table.qualified(), &ddl)
                );
                etl_pg::locked_ddl(client, &format!("etl ddl {table}"), &sql)
                    .await
                    .map_err(EtlError::pg(format!("creating target table {table}")))?;
                read_columns(client, table).await?.ok_or_else(|| {
                    EtlError::Changed(format!("target table {table} is missing right after it was created"))
                })?
            }
            None => {
                return Err(EtlError::Config(format!(
                    "target table {table} does not exist on {}; create it, or set create_table = true in [[sinks]]",
                    self.spec.endpoint
                )))
            }
        };
        let catalog_pk = read_primary_key(client, table).await?;
        let target = Arc::new(self.plan_target(table, &columns, catalog_pk)?);
        targets.insert(table.clone(), target.clone());
        Ok(target)
    }

    /// The channels of the wide table `chunk` writes to: its key's, or
    /// every key's when all keys share one table.
    fn channels_of(
        &self,
        by_key: &std::collections::HashMap<Option<String>, Vec<(String, etl_model::wide::Kind)>>,
        chunk: &Chunk,
    ) -> Vec<(String, etl_model::wide::Kind)> {
        if self.ctx.chunking.key_column.is_some() && !self.spec.table.has_key() {
            by_key.values().flatten().cloned().collect()
        } else {
            by_key.get(&chunk.key).cloned().unwrap_or_default()
        }
    }
}

#[async_trait]
impl Sink for PostgresSink {
    fn name(&self) -> String {
        format!("{} {}", self.spec.endpoint, self.spec.table.as_str())
    }

    fn target(&self, chunk: &Chunk) -> Result<String, EtlError> {
        Ok(self.table_for(chunk)?.qualified())
    }

    fn verifiable(&self) -> Option<&dyn Verifiable> {
        Some(self)
    }

    fn tables(&self) -> Option<&dyn Tables> {
        Some(self)
    }

    fn wide(&self) -> Option<&dyn WideTables> {
        self.wide.as_ref().map(|_| self as &dyn WideTables)
    }

    async fn describe(
        &self,
        chunks: &[Chunk],
        source: Option<&Rows>,
    ) -> Result<Vec<String>, EtlError> {
        let client = self.pool.get().await?;
        let mut lines = Vec::new();
        if let Some(wide) = &self.wide {
            // Channels per key, read from the source in SQL; their columns
            // are planned as a run would place them.
            let channels = source.map(super::wide::Wide::channels_from);
            for (table, chunk) in self.first_chunk_per_table(chunks)? {
                match &channels {
                    Some(by_key) => {
                        let mine = self.channels_of(by_key, chunk);
                        lines.extend(wide.describe(&client, &table, &mine).await?);
                    }
                    None => lines.push(format!(
                        "wide table {table}: one column per channel, added as chunks bring them (this source cannot list its channels up front); mode {}",
                        self.spec.mode.as_str()
                    )),
                }
            }
            if channels.is_some() && !chunks.is_empty() {
                lines.push("(channels as the source holds them; SQL stages before the pivot may drop some)".into());
            }
            self.pool.put(client);
            return Ok(lines);
        }
        for table in self.tables_for(chunks)? {
            match read_columns(&client, &table).await? {
                Some(columns) => {
                    let pk = read_primary_key(&client, &table).await?;
                    self.plan_target(&table, &columns, pk)?;
                    lines.push(format!(
                        "table {table} exists ({} columns); mode {}",
                        columns.len(),
                        self.spec.mode.as_str()
                    ));
                }
                None if self.spec.create_table => {
                    lines.push(format!("{};", create_table_sql(&table, &self.ctx.schema, &self.primary_key(Vec::new()), &self.ctx.identity)?));
                }
                None => {
                    return Err(EtlError::Config(format!(
                        "target table {table} does not exist on {}; create it, or set create_table = true in [[sinks]]",
                        self.spec.endpoint
                    )))
                }
            }
        }
        self.pool.put(client);
        Ok(lines)
    }

    async fn prepare(&self, chunks: &[Chunk], truncate: bool) -> Result<(), EtlError> {
        let client = self.pool.get().await?;
        self.ledger.ensure(&client).await?;
        if self.wide.is_some() {
            let schema = &self.spec.ledger_schema;
            let map = schema.table("column_map");
            etl_pg::locked_ddl(&client, &map, &super::wide::column_map_ddl(schema))
                .await
                .map_err(EtlError::pg(format!(
                    "creating {map} on {}",
                    self.spec.endpoint
                )))?;
        }
        for table in self.tables_for(chunks)? {
            if let Some(wide) = &self.wide {
                if truncate && self.spec.mode == SinkMode::Replace {
                    let parts = wide.parts(&client, &table).await?;
                    if !parts.is_empty() {
                        tracing::info!(table = %table, parts = parts.len(), "Truncating wide tables (mode replace).");
                        self.truncate_replaced(&client, &table, &parts.join(", "))
                            .await?;
                    }
                }
                wide.prepare(&client, &table).await?;
                continue;
            }
            if truncate
                && self.spec.mode == SinkMode::Replace
                && read_columns(&client, &table).await?.is_some()
            {
                tracing::info!(table = %table, "Truncating target table (mode replace).");
                self.truncate_replaced(&client, &table, &table.qualified())
                    .await?;
            }
            // Create (if allowed) and check every target before the first
            // chunk: a table that does not fit is a configuration error, not
            // something to find out once per chunk.
            self.checked_target(&client, &table).await?;
        }
        let mut registered = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            registered.push((self.table_for(chunk)?.qualified(), chunk.clone()));
        }
        self.ledger.register(&client, &registered).await?;
        self.pool.put(client);
        Ok(())
    }

    async fn begin(
        &self,
        chunk: &Chunk,
        redo: bool,
    ) -> Result<Option<Box<dyn ChunkWriter>>, EtlError> {
        let table = self.table_for(chunk)?;
        let client = self.pool.get().await?;
        // A plain table is checked (and created) before the claim; a wide
        // table's columns are made by its writer, from the chunk's channels.
        let target = match &self.wide {
            Some(_) => None,
            None => Some(self.checked_target(&client, &table).await?),
        };
        let claimed = self
            .ledger
            .claim(&client, &table.qualified(), chunk, redo)
            .await?;
        if !claimed {
            self.pool.put(client);
            return Ok(None);
        }
        if let Some(wide) = &self.wide {
            let writer = wide.writer(client, self.pool.clone(), table, chunk.clone());
            return Ok(Some(Box::new(writer)));
        }
        let target = target.expect("a plain table's target is checked above");
        let sink = match self.open_copy(&client, chunk, &target).await {
            Ok(sink) => sink,
            Err(e) => {
                return Err(explain_busy(
                    &client,
                    &target.qualified,
                    self.spec.timeouts.lock_timeout_secs,
                    e,
                )
                .await)
            }
        };
        let mut buf = BytesMut::with_capacity(SEND_BYTES + 64 * 1024);
        if target.encoder.is_some() {
            CopyEncoder::write_header(&mut buf);
        }
        Ok(Some(Box::new(PostgresChunkWriter {
            client,
            pool: self.pool.clone(),
            sink: Box::pin(sink),
            buf,
            target,
            chunk: chunk.clone(),
            ledger: self.ledger.clone(),
            bytes: 0,
            raw: false,
            sum: writer::Sum::Rows(Default::default()),
        })))
    }
}

#[async_trait]
impl Tables for PostgresSink {
    async fn create_ahead(
        &self,
        chunks: &[Chunk],
        source: Option<&Rows>,
    ) -> Result<Vec<String>, EtlError> {
        let client = self.pool.get().await?;
        let mut lines = Vec::new();
        if let Some(wide) = &self.wide {
            let channels = source.map(super::wide::Wide::channels_from);
            for (table, chunk) in self.first_chunk_per_table(chunks)? {
                let Some(by_key) = &channels else {
                    lines.push(format!(
                        "wide table {table}: created with its index; this source cannot list its channels up front, so their columns are added as chunks bring them"
                    ));
                    continue;
                };
                let mine = self.channels_of(by_key, chunk);
                wide.make_room(&client, &table, &mine).await?;
                let parts = wide.parts(&client, &table).await?;
                lines.push(format!(
                    "wide table {table}: {} channel columns in {} table{}",
                    mine.len(),
                    parts.len(),
                    if parts.len() == 1 { "" } else { "s" }
                ));
            }
        } else {
            for table in self.tables_for(chunks)? {
                let columns = read_columns(&client, &table).await?.unwrap_or_default();
                lines.push(format!("table {table}: {} columns", columns.len()));
            }
        }
        self.pool.put(client);
        Ok(lines)
    }

    async fn analyze(&self, chunks: &[Chunk]) -> Result<Vec<String>, EtlError> {
        let statement = self.spec.after_load.as_str();
        if self.spec.after_load == AfterLoad::Nothing || chunks.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.pool.get().await?;
        let mut tables = Vec::new();
        for table in self.tables_for(chunks)? {
            match &self.wide {
                Some(wide) => tables.extend(wide.parts(&client, &table).await?),
                None => tables.push(table.qualified()),
            }
        }
        for table in &tables {
            // Both take SHARE UPDATE EXCLUSIVE: reads and writes go on.
            // One statement per call: VACUUM refuses a transaction block.
            client
                .batch_execute(&format!("{statement} {table}"))
                .await
                .map_err(EtlError::pg(format!("{statement} {table} (analyze_after)")))?;
        }
        self.pool.put(client);
        Ok(tables)
    }

    async fn verify(&self, chunk: &Chunk, source: SourceSide) -> Result<Comparison, EtlError> {
        self.verify_chunk(chunk, source).await
    }

    fn will_verify(&self, chunks: &[Chunk]) {
        *self
            .passes
            .chunks
            .lock()
            .expect("no panic while holding the lock") = chunks.to_vec();
    }

    fn selects(&self, chunk: &Chunk) -> bool {
        self.wide.is_some() || self.selects_rows(chunk)
    }

    async fn verify_recorded(&self, chunks: &[Chunk]) -> Result<Option<Comparison>, EtlError> {
        self.verify_against_record(chunks).await
    }
}

#[async_trait]
impl WideTables for PostgresSink {
    fn source_query(&self) -> Option<RowsQuery> {
        let key_column = self.ctx.chunking.key_column.as_deref();
        self.wide.as_ref()?.channels_query(key_column)
    }

    async fn text_channels(&self, chunk: &Chunk) -> Result<Vec<String>, EtlError> {
        let wide = self.wide_part()?;
        let client = self.pool.get().await?;
        let channels = wide.text_channels(&client, &self.table_for(chunk)?).await?;
        self.pool.put(client);
        Ok(channels)
    }

    async fn stale(&self, chunks: &[Chunk]) -> Result<Vec<Chunk>, EtlError> {
        let wide = self.wide_part()?;
        let client = self.pool.get().await?;
        let stale = wide.stale(&client, chunks).await?;
        self.pool.put(client);
        Ok(stale)
    }
}

impl PostgresSink {
    /// Opens the chunk's transaction (with the sink's timeouts), replaces
    /// the window if an earlier chunk loaded it, and starts COPY.
    async fn open_copy(
        &self,
        client: &Client,
        chunk: &Chunk,
        target: &Target,
    ) -> Result<CopyInSink<Bytes>, EtlError> {
        let context = |what: &str| format!("{what} for chunk {chunk} into {}", target.qualified);
        let replica = match self.spec.replica_role {
            true => "; SET LOCAL session_replication_role = replica",
            false => "",
        };
        client
            .batch_execute(&format!(
                "BEGIN; {}{replica}",
                self.spec.timeouts.set_local()
            ))
            .await
            .map_err(EtlError::pg(context("starting the transaction")))?;
        if let Some(stage) = &target.stage_sql {
            client
                .batch_execute(stage)
                .await
                .map_err(EtlError::pg(context("creating the staging table")))?;
        } else if chunk.is_whole() {
            // A whole table's chunk replaces the table, in its transaction.
            let empty = match self.spec.whole_by_delete {
                true => "DELETE FROM ONLY",
                false => "TRUNCATE ONLY",
            };
            client
                .batch_execute(&format!("{empty} {}", target.qualified))
                .await
                .map_err(EtlError::pg(context("emptying the target")))?;
        } else {
            let overlap = self
                .ledger
                .lock_window(client, &target.qualified, chunk)
                .await?;
            if overlap
                && chunk.unit != etl_base::plan::Unit::Time
                && self.ctx.chunking.target_range_column().is_none()
            {
                let (what, todo) = match self.ctx.chunking.by_blocks() {
                    true => ("blocks of the source table", "run it with mode = \"replace\", which empties the table as a run starts, or empty the table and run etl forget first"),
                    false => ("the source's rowid, or parts cut at text keys", "run etl run --restart (the source changed since its ranges were planned)"),
                };
                return Err(EtlError::Changed(format!(
                    "chunk {chunk} overlaps a range loaded before, and {} has no column to find that range's rows by (the ranges are of {what}): to load the table again, {todo}",
                    target.qualified
                )));
            }
            if overlap {
                let filter = self.filter(chunk);
                let deleted = client
                    .execute(
                        &format!("DELETE FROM {} WHERE {filter}", target.qualified),
                        &[],
                    )
                    .await
                    .map_err(EtlError::pg(context("deleting the window's earlier rows")))?;
                tracing::debug!(chunk = %chunk, deleted, "Window loaded before; its rows are replaced.");
            }
        }
        client
            .copy_in::<_, Bytes>(&target.copy_sql)
            .await
            .map_err(EtlError::pg(context("starting COPY")))
    }
}
