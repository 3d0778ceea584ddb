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
    /// Inside the chunk's transaction: marks it done with its rows, then
    /// commits the transaction.
    async fn commit_done(
        &self,
        client: &Client,
        target: &str,
        chunk: &Chunk,
        rows: u64,
    ) -> Result<(), EtlError>;
    /// SQL that forgets every chunk of `target` (a table emptied in the
    /// same transaction: replace mode).
    fn forget_sql(&self, target: &str) -> String;
    /// SQL that records, inside the creating transaction, that this
    /// pipeline created `table` with `statement` (what `etl run
    /// --recreate` drops).
    fn created_sql(&self, table: &str, statement: &str) -> String;
}
