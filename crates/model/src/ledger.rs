//! The ledger as the layers above see it: what was committed, what failed,
//! the cutoff. Two views, because a chunk is recorded in two places:
//!
//! - [`Ledger`] the runner's: which chunks are done (`etl run` skips
//!   them), a failed attempt, the pipeline's cutoff. Every sink has one:
//!   a PostgreSQL target keeps it in its database (`etl.chunk_ledger`), a
//!   file sink beside its files.
//! - [`InTransaction`] a PostgreSQL chunk writer's: it claims its chunk and
//!   marks it done on its own session, inside the chunk's transaction, so
//!   the rows and their ledger row commit together.
//!
//! `etl-ledger` implements both; the runner hands them to the sinks, which
//! never name that crate (sinks and the ledger are siblings).

use std::collections::HashSet;

use async_trait::async_trait;
use tokio_postgres::Client;

use etl_base::plan::Chunk;
use etl_pg::error::EtlError;

/// The schema of a PostgreSQL target that holds etl's own tables (chunk
/// ledger, cutoff, phase log, the pivot's column map): `etl` unless the
/// sink sets `ledger_schema`, so that a clone of production need not carry
/// a schema named `etl` (and `etl forget` can take it away after).
///
/// etl's SQL names its tables `etl.chunk_ledger` and so on; [`Self::sql`]
/// puts them in this schema. A name is kept to lower-case letters, digits
/// and `_` (checked when the pipeline is read), so it needs no quoting
/// inside SQL text or literals.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LedgerSchema(String);

impl Default for LedgerSchema {
    fn default() -> Self {
        LedgerSchema("etl".into())
    }
}

impl LedgerSchema {
    /// A schema name as given in a pipeline, or why it cannot be one.
    pub fn new(name: &str) -> Result<LedgerSchema, String> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !name.starts_with("pg_");
        match ok {
            true => Ok(LedgerSchema(name.into())),
            false => Err(format!(
                "ledger_schema {name:?} is not a plain schema name: use lower-case letters, digits and _ (not starting with a digit or pg_), at most 63 characters"
            )),
        }
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// `schema.table`, for people and for SQL.
    pub fn table(&self, table: &str) -> String {
        format!("{}.{table}", self.0)
    }

    /// etl's SQL with every `etl.` qualifier (one not preceded by a letter,
    /// digit, `_`, `.` or `"`) naming this schema instead. For etl's own
    /// statement text only: text that holds a user's names or values (in
    /// literals or quoted identifiers) is built with [`Self::name`]
    /// instead, so that nothing of theirs is rewritten. The schema itself
    /// is made by [`Self::create`].
    pub fn sql(&self, text: &str) -> String {
        if self.0 == "etl" {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len() + 16);
        let mut rest = text;
        while let Some(at) = rest.find("etl.") {
            let before = rest[..at].chars().next_back();
            let qualifier = !matches!(before, Some(c) if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '"'));
            out.push_str(&rest[..at]);
            out.push_str(match qualifier {
                true => &self.0,
                false => "etl",
            });
            out.push('.');
            rest = &rest[at + 4..];
        }
        out.push_str(rest);
        out
    }

    /// `CREATE SCHEMA IF NOT EXISTS` this schema.
    pub fn create(&self) -> String {
        format!("CREATE SCHEMA IF NOT EXISTS {}", self.0)
    }
}

/// A session on which etl's own tables are in a [`LedgerSchema`]: the
/// statements given to it name them `etl.table`, as everywhere in etl's
/// SQL, and run against the schema's. Values go in as parameters; text
/// built from a user's names goes to `client` directly.
#[derive(Clone, Copy)]
pub struct SchemaClient<'a> {
    pub client: &'a Client,
    pub schema: &'a LedgerSchema,
}

type Params<'p> = [&'p (dyn tokio_postgres::types::ToSql + Sync)];

impl<'a> SchemaClient<'a> {
    pub fn new(client: &'a Client, schema: &'a LedgerSchema) -> Self {
        SchemaClient { client, schema }
    }

    pub async fn query(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        self.client.query(&self.schema.sql(sql), params).await
    }

    pub async fn query_one(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
        self.client.query_one(&self.schema.sql(sql), params).await
    }

    pub async fn query_opt(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
        self.client.query_opt(&self.schema.sql(sql), params).await
    }

    pub async fn execute(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<u64, tokio_postgres::Error> {
        self.client.execute(&self.schema.sql(sql), params).await
    }

    pub async fn batch_execute(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(&self.schema.sql(sql)).await
    }
}

impl std::fmt::Display for LedgerSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A change to a pipeline's cutoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CutoffChange {
    /// To this time, or not at all if it is already later (follow mode).
    Forward(i64),
    /// To this time (`etl cutoff set`).
    Exactly(i64),
    /// None (`etl cutoff clear`): a plain run backfills everything again.
    Clear,
}

/// One chunk as the ledger records it: the target it was written to (a
/// table, or a file) and its window.
pub type Entry = (String, Chunk);

/// A pipeline's ledger in one sink's target, as the runner uses it.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Where the ledger is kept, for people.
    fn name(&self) -> String;
    /// The chunks among `entries` recorded as committed.
    async fn committed(&self, entries: &[Entry]) -> Result<HashSet<Chunk>, EtlError>;
    /// Records a failed attempt (after its rollback) with its error.
    async fn record_failure(
        &self,
        target: &str,
        chunk: &Chunk,
        error: &str,
    ) -> Result<(), EtlError>;
    /// The pipeline's persisted cutoff (µs since 1970): below it backfill,
    /// from it onward follow mode.
    async fn cutoff(&self) -> Result<Option<i64>, EtlError>;
    /// Moves the cutoff (follow mode: forward only), or sets or clears it
    /// by hand (`etl cutoff`).
    async fn set_cutoff(&self, change: CutoffChange) -> Result<(), EtlError>;
    /// The seconds each chunk among `entries` took when it committed (from
    /// its claim to its commit), where the ledger keeps that: what `etl
    /// plan` and the progress display estimate a run's time from.
    async fn durations(&self, _entries: &[Entry]) -> Result<Vec<(Chunk, f64)>, EtlError> {
        Ok(Vec::new())
    }
    /// `etl forget`: what the ledger holds of the pipeline, for people;
    /// with `apply`, removed (and what was removed). Refused while a live
    /// process runs its chunks.
    async fn forget(&self, apply: bool) -> Result<Vec<String>, EtlError>;
}

/// The ledger of a PostgreSQL target, as its chunk writers join it on
/// their own sessions.
#[async_trait]
pub trait InTransaction: Send + Sync {
    /// Creates the ledger's tables if missing; an error when the server
    /// cannot hold them.
    async fn ensure(&self, client: &Client) -> Result<(), EtlError>;
    /// Registers a run's chunks as pending (committed at once).
    async fn register(&self, client: &Client, entries: &[Entry]) -> Result<(), EtlError>;
    /// Claims a chunk for this session (committed at once): `false` when a
    /// live session holds it, or it is done and `redo` is not set.
    async fn claim(
        &self,
        client: &Client,
        target: &str,
        chunk: &Chunk,
        redo: bool,
    ) -> Result<bool, EtlError>;
    /// Inside the chunk's transaction: locks the ledger rows of every
    /// window of this target and key that overlaps the chunk's, and says
    /// whether any of them loaded rows (they are to be replaced).
    async fn lock_window(
        &self,
        client: &Client,
        target: &str,
        chunk: &Chunk,
    ) -> Result<bool, EtlError>;
    /// Inside the chunk's transaction: marks it done with its rows and
    /// the checksum of what it wrote ([`crate::verify::Recorded`]), then
    /// commits the transaction.
    async fn commit_done(
        &self,
        client: &Client,
        target: &str,
        chunk: &Chunk,
        rows: u64,
        checksum: Option<&str>,
    ) -> Result<(), EtlError>;
    /// The checksum recorded with a done chunk, if any.
    async fn recorded(
        &self,
        client: &Client,
        target: &str,
        chunk: &Chunk,
    ) -> Result<Option<String>, EtlError>;
    /// SQL that forgets every chunk of `target` (a table emptied in the
    /// same transaction: replace mode).
    fn forget_sql(&self, target: &str) -> String;
    /// SQL that records, inside the creating transaction, that this
    /// pipeline created `table` with `statement` (what `etl run
    /// --recreate` drops).
    fn created_sql(&self, table: &str, statement: &str) -> String;
}

#[cfg(test)]
mod tests {
    use super::LedgerSchema;

    #[test]
    fn sql_moves_only_etl_qualifiers() {
        let s = LedgerSchema::new("ops_ledger").unwrap();
        assert_eq!(
            s.sql("SELECT to_regclass('etl.chunk_ledger'), x.etl.y, \"etl.z\", fetl.a FROM etl.cutoff JOIN (etl.phase_log)"),
            "SELECT to_regclass('ops_ledger.chunk_ledger'), x.etl.y, \"etl.z\", fetl.a FROM ops_ledger.cutoff JOIN (ops_ledger.phase_log)"
        );
        let etl = LedgerSchema::default();
        assert_eq!(etl.sql("FROM etl.cutoff"), "FROM etl.cutoff");
    }

    #[test]
    fn names_that_would_need_quoting_are_refused() {
        for bad in [
            "",
            "Ops",
            "1x",
            "a-b",
            "pg_x",
            "a b",
            "a\"b",
            &"x".repeat(64),
        ] {
            let e = LedgerSchema::new(bad).unwrap_err();
            assert!(e.contains("lower-case letters"), "{bad}: {e}");
        }
        assert_eq!(
            LedgerSchema::new("_x9").unwrap().table("cutoff"),
            "_x9.cutoff"
        );
    }
}
