//! Sinks: where rows go. A sink begins a chunk, takes its batches, and
//! commits it atomically: a writer dropped without commit leaves no trace.
//!
//! - [`postgres`] binary `COPY ... FROM STDIN` in one transaction per chunk
//!   with its [`ledger`] row (append, upsert, replace; tables created and
//!   widened as needed); [`wide`] a pivot's wide tables.
//! - [`file`] one Parquet or CSV file per chunk, renamed into place.
//! - [`spec`] the sinks as the pipeline file's validation leaves them.
//!
//! Must not know: any source (what `etl verify` and `etl plan` need of the
//! source is asked through `etl_model::verify`), the transforms, the runner.

pub mod created;
pub mod file;
pub mod ledger;
pub mod postgres;
pub mod spec;
pub mod wide;

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;

use crate::spec::ValidatedSink;
use etl_base::plan::Chunk;
use etl_model::verify::{Basis, Comparison, Rows, RowsQuery, SourceSide};
use etl_model::Chunking;
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

#[async_trait]
pub trait Sink: Send + Sync {
    /// What the sink would do for these chunks (tables, DDL), without
    /// writing anything: the sink's part of `etl plan`.
    /// `source`: the rows of [`Sink::source_query`] over the source, when
    /// the sink has one and the source has SQL.
    async fn describe(
        &self,
        chunks: &[Chunk],
        source: Option<&Rows>,
    ) -> Result<Vec<String>, EtlError>;
    /// A query over all the source's rows whose answer [`Sink::describe`]
    /// and [`Sink::create_ahead`] use (a pivot's channels per key).
    fn source_query(&self) -> Option<RowsQuery> {
        None
    }
    /// Runs once before the first chunk: creates and checks the targets of
    /// `chunks`; with `truncate` (`etl run`, not `etl rerun`), replace mode
    /// truncates them.
    async fn prepare_run(&self, chunks: &[Chunk], truncate: bool) -> Result<(), EtlError>;
    /// `etl run --ddl-only`, after `prepare_run`: creates up front what
    /// the data would add as it arrives (a pivot's channel columns, listed
    /// from the source's rows of [`Sink::source_query`]), loads nothing;
    /// says what the targets now are.
    async fn create_ahead(
        &self,
        chunks: &[Chunk],
        source: Option<&Rows>,
    ) -> Result<Vec<String>, EtlError>;
    /// After a load (`analyze_after`): ANALYZE every table these chunks
    /// wrote; returns their names.
    async fn analyze(&self, chunks: &[Chunk]) -> Result<Vec<String>, EtlError>;
    /// The chunks among `chunks` this sink has committed for `pipeline`, as
    /// its ledger records them: `etl run` skips them when every sink has.
    async fn committed(&self, pipeline: &str, chunks: &[Chunk])
        -> Result<HashSet<Chunk>, EtlError>;
    /// Claims and starts one chunk. `None` when another live process holds
    /// it, or it is done and `redo` (a rerun or `--restart`) is not set.
    async fn begin(
        &self,
        chunk: &Chunk,
        redo: bool,
    ) -> Result<Option<Box<dyn ChunkWriter>>, EtlError>;
    /// The pipeline's persisted cutoff (µs since 1970): below it backfill,
    /// from it onward follow mode.
    async fn cutoff(&self) -> Result<Option<i64>, EtlError>;
    /// Moves the cutoff (follow mode: forward only), or sets or clears it
    /// by hand (`etl cutoff`).
    async fn set_cutoff(&self, change: CutoffChange) -> Result<(), EtlError>;
    /// Where this sink writes, for people: endpoint and table, or path.
    fn name(&self) -> String;
    /// What `etl verify` compares one chunk by; the runner reads the
    /// source's side accordingly.
    async fn verify_basis(&self, chunk: &Chunk) -> Result<Basis, EtlError>;
    /// Compares one chunk in this sink with the source's side of it (for a
    /// [`Basis::Sql`] or [`Basis::Queries`]; the runner compares a
    /// [`Basis::File`] itself).
    async fn verify(&self, chunk: &Chunk, source: SourceSide) -> Result<Comparison, EtlError>;
    /// Records a failed attempt (after its rollback) with its error.
    async fn record_failure(&self, chunk: &Chunk, error: &str) -> Result<(), EtlError>;
    /// Wide rows: the channels whose columns this chunk's target has as
    /// text already, so the pivot makes their cells text (its repeated
    /// readings compared as text, as the column's type orders them).
    async fn text_channels(&self, _chunk: &Chunk) -> Result<Vec<String>, EtlError> {
        Ok(Vec::new())
    }
    /// Wide rows: the chunks among `chunks` that wrote numbers into a
    /// column a later chunk widened to text, where as text another value
    /// is the greatest ([`etl_model::wide::AMBIGUOUS_METADATA`]): they run
    /// again, pivoted with the channel as text.
    async fn stale(&self, _chunks: &[Chunk]) -> Result<Vec<Chunk>, EtlError> {
        Ok(Vec::new())
    }
}

#[async_trait]
pub trait ChunkWriter: Send {
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), EtlError>;
    /// Whether this writer takes the source's COPY data as it comes.
    fn can_copy(&self) -> bool {
        false
    }
    /// The chunk's data will be the source's COPY data (asked of every
    /// writer when all [`ChunkWriter::can_copy`]).
    fn start_copy(&mut self) {}
    /// COPY data forwarded from the source ([`SinkContext::copy`]).
    async fn write_copy(&mut self, _data: bytes::Bytes) -> Result<(), EtlError> {
        Err(EtlError::Bug(
            "COPY data sent to a sink that writes record batches".into(),
        ))
    }
    /// Makes the chunk visible; returns rows and bytes written.
    async fn commit(self: Box<Self>) -> Result<ChunkStats, EtlError>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkStats {
    pub rows: u64,
    pub bytes: u64,
}

/// Everything a sink needs to know about the run.
pub struct SinkContext {
    pub pipeline: String,
    pub schema: SchemaRef,
    /// The source's primary key, for created tables.
    pub source_primary_key: Vec<String>,
    /// Columns created `GENERATED BY DEFAULT AS IDENTITY` (a migration's
    /// auto-numbered columns; loaded values keep theirs).
    pub identity: Vec<String>,
    pub chunking: Chunking,
    /// Set when the rows are wide ([`etl_model::wide`]: a pivot's, or a staged
    /// pivot's read back): sinks write wide tables.
    pub wide: Option<Arc<wide::WideSpec>>,
    /// Set when the source hands its chunks over as COPY data and no
    /// transform runs: the sink writes the bytes as they come.
    pub copy: Option<etl_model::CopyThrough>,
}

pub async fn build(
    sink: &ValidatedSink,
    context: Arc<SinkContext>,
) -> Result<Arc<dyn Sink>, EtlError> {
    match sink {
        ValidatedSink::Postgres(spec) => {
            Ok(Arc::new(postgres::PostgresSink::new(spec.clone(), context)))
        }
        ValidatedSink::Parquet(spec) => {
            Ok(Arc::new(file::FileSink::parquet(spec.clone(), context)))
        }
        ValidatedSink::Csv(spec) => Ok(Arc::new(file::FileSink::csv(spec.clone(), context))),
    }
}
