//! A PostgreSQL target's ledger: the runner's view ([`Ledger`]) on a
//! pooled session, and the chunk writers' ([`InTransaction`]) on theirs.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::Client;

use crate::sql::{self, Row};
use etl_base::plan::Chunk;
use etl_model::ledger::{CutoffChange, Entry, InTransaction, Ledger, LedgerSchema, SchemaClient};
use etl_pg::error::EtlError;
use etl_pg::{Endpoint, Pool};

/// The ledger of one pipeline in one PostgreSQL target.
pub struct PgLedger {
    pool: Arc<Pool>,
    pipeline: String,
    schema: LedgerSchema,
}

impl PgLedger {
    /// The ledger of `pipeline` in the `schema` of `endpoint`'s database.
    pub fn new(endpoint: Endpoint, pipeline: &str, schema: LedgerSchema) -> Arc<Self> {
        Arc::new(PgLedger {
            pool: Pool::new(endpoint, &format!("etl {pipeline}")),
            pipeline: pipeline.to_string(),
            schema,
        })
    }

    /// `client` with this ledger's schema.
    fn on<'a>(&'a self, client: &'a Client) -> SchemaClient<'a> {
        SchemaClient::new(client, &self.schema)
    }

    fn endpoint(&self) -> &Endpoint {
        self.pool.endpoint()
    }

    /// A session to read the ledger on, or `None` before it exists (nothing
    /// recorded yet); given back to the pool by the caller.
    async fn reading(&self) -> Result<Option<etl_pg::Conn>, EtlError> {
        let client = self.pool.get().await?;
        let exists = sql::exists(self.on(&client))
            .await
            .map_err(EtlError::pg(self.reading_context()))?;
        if !exists {
            self.pool.put(client);
            return Ok(None);
        }
        Ok(Some(client))
    }

    fn reading_context(&self) -> String {
        format!(
            "reading {} on {}",
            self.schema.table("chunk_ledger"),
            self.endpoint()
        )
    }

    /// The statement that records, inside the creating transaction, that
    /// this pipeline created `table`.
    pub fn created_sql(&self, table: &str, statement: &str) -> String {
        crate::created::record(&self.schema, &self.pipeline, table, statement)
    }
}

#[async_trait]
impl Ledger for PgLedger {
    fn name(&self) -> String {
        format!(
            "{} on {}",
            self.schema.table("chunk_ledger"),
            self.endpoint()
        )
    }

    async fn committed(&self, entries: &[Entry]) -> Result<HashSet<Chunk>, EtlError> {
        let Some(client) = self.reading().await? else {
            return Ok(HashSet::new());
        };
        let done = sql::done(self.on(&client), &self.pipeline)
            .await
            .map_err(EtlError::pg(self.reading_context()))?;
        self.pool.put(client);
        Ok(entries
            .iter()
            .filter(|(target, c)| done.contains(&(target.clone(), c.key.clone(), c.start, c.end)))
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn record_failure(
        &self,
        target: &str,
        chunk: &Chunk,
        error: &str,
    ) -> Result<(), EtlError> {
        let client = self.pool.get().await?;
        sql::mark_failed(
            self.on(&client),
            &Row::new(&self.pipeline, target, chunk),
            error,
        )
        .await
        .map_err(EtlError::pg(self.schema.sql(&format!(
            "recording the failure of chunk {chunk} in etl.chunk_ledger"
        ))))?;
        self.pool.put(client);
        Ok(())
    }

    async fn cutoff(&self) -> Result<Option<i64>, EtlError> {
        let client = self.pool.get().await?;
        self.ensure(&client).await?;
        let cutoff = sql::cutoff(self.on(&client), &self.pipeline)
            .await
            .map_err(EtlError::pg(format!(
                "reading the cutoff on {}",
                self.endpoint()
            )))?;
        self.pool.put(client);
        Ok(cutoff)
    }

    async fn durations(&self, entries: &[Entry]) -> Result<Vec<(Chunk, f64)>, EtlError> {
        let Some(client) = self.reading().await? else {
            return Ok(Vec::new());
        };
        let took = sql::durations(self.on(&client), &self.pipeline)
            .await
            .map_err(EtlError::pg(self.reading_context()))?;
        self.pool.put(client);
        Ok(entries
            .iter()
            .filter_map(|(target, c)| {
                took.get(&(target.clone(), c.key.clone(), c.start, c.end))
                    .map(|secs| (c.clone(), *secs))
            })
            .collect())
    }

    async fn forget(&self, apply: bool) -> Result<Vec<String>, EtlError> {
        let client = self.pool.get().await?;
        let lines = match apply {
            true => crate::forget::forget(self.on(&client), &self.pipeline).await?,
            false => crate::forget::held(self.on(&client), &self.pipeline).await?,
        };
        self.pool.put(client);
        Ok(lines)
    }

    async fn set_cutoff(&self, change: CutoffChange) -> Result<(), EtlError> {
        let client = self.pool.get().await?;
        self.ensure(&client).await?;
        sql::set_cutoff(self.on(&client), &self.pipeline, change)
            .await
            .map_err(EtlError::pg(format!(
                "saving the cutoff on {}",
                self.endpoint()
            )))?;
        self.pool.put(client);
        Ok(())
    }
}

#[async_trait]
impl InTransaction for PgLedger {
    async fn ensure(&self, client: &Client) -> Result<(), EtlError> {
        sql::ensure(self.on(client))
            .await
            .map_err(EtlError::pg(format!(
                "creating {} on {}",
                self.schema.table("chunk_ledger"),
                self.endpoint()
            )))?
            .map_err(|why| EtlError::Config(format!("{}: {why}", self.endpoint())))
    }

    async fn register(&self, client: &Client, entries: &[Entry]) -> Result<(), EtlError> {
        sql::register(self.on(client), &self.pipeline, entries)
            .await
            .map_err(EtlError::pg(
                self.schema
                    .sql("registering the run's chunks in etl.chunk_ledger"),
            ))
    }

    async fn claim(
        &self,
        client: &Client,
        target: &str,
        chunk: &Chunk,
        redo: bool,
    ) -> Result<bool, EtlError> {
        sql::claim(
            self.on(client),
            &Row::new(&self.pipeline, target, chunk),
            redo,
        )
        .await
        .map_err(EtlError::pg(
            self.schema
                .sql(&format!("claiming chunk {chunk} in etl.chunk_ledger")),
        ))
    }

    async fn lock_window(
        &self,
        client: &Client,
        target: &str,
        chunk: &Chunk,
    ) -> Result<bool, EtlError> {
        sql::lock_window(self.on(client), &Row::new(&self.pipeline, target, chunk))
            .await
            .map_err(EtlError::pg(format!(
                "checking the ledger for chunk {chunk} into {target}"
            )))
    }

    async fn commit_done(
        &self,
        client: &Client,
        target: &str,
        chunk: &Chunk,
        rows: u64,
        checksum: Option<&str>,
    ) -> Result<(), EtlError> {
        sql::commit_done(
            self.on(client),
            &Row::new(&self.pipeline, target, chunk),
            rows,
            checksum,
        )
        .await
        .map_err(EtlError::pg(self.schema.sql(&format!(
            "recording chunk {chunk} into {target} in etl.chunk_ledger and committing"
        ))))
    }

    async fn recorded(
        &self,
        client: &Client,
        target: &str,
        chunk: &Chunk,
    ) -> Result<Option<String>, EtlError> {
        sql::recorded(self.on(client), &Row::new(&self.pipeline, target, chunk))
            .await
            .map_err(EtlError::pg(self.schema.sql(&format!(
                "reading the checksum recorded for chunk {chunk} into {target} in etl.chunk_ledger"
            ))))
    }

    fn forget_sql(&self, target: &str) -> String {
        sql::forget_sql(&self.schema, target)
    }

    fn created_sql(&self, table: &str, statement: &str) -> String {
        PgLedger::created_sql(self, table, statement)
    }
}
