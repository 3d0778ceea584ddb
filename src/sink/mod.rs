//! Sinks: where rows go. A sink begins a chunk, takes its batches, and
//! commits it atomically: a writer dropped without commit leaves no trace.

pub mod ledger;
pub mod parquet;
pub mod postgres;
pub mod wide;

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;

use crate::config::validate::{Chunking, ValidatedSink};
use crate::error::EtlError;
use crate::plan::Chunk;

#[async_trait]
pub trait Sink: Send + Sync {
    /// What the sink would do for these chunks (tables, DDL), without
    /// writing anything: the sink's part of `etl plan`.
    async fn describe(
        &self,
        chunks: &[Chunk],
        source: &dyn crate::source::Source,
    ) -> Result<Vec<String>, EtlError>;
    /// Runs once before the first chunk: creates and checks the targets of
    /// `chunks`; with `truncate` (`etl run`, not `etl rerun`), replace mode
    /// truncates them.
    async fn prepare_run(&self, chunks: &[Chunk], truncate: bool) -> Result<(), EtlError>;
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
    /// Moves the cutoff forward (never back).
    async fn set_cutoff(&self, cutoff: i64) -> Result<(), EtlError>;
    /// Where this sink writes, for people: endpoint and table, or path.
    fn name(&self) -> String;
    /// Compares one chunk in this sink with the source.
    async fn verify(
        &self,
        chunk: &Chunk,
        source: &dyn crate::source::Source,
    ) -> Result<crate::verify::Comparison, EtlError>;
    /// Records a failed attempt (after its rollback) with its error.
    async fn record_failure(&self, chunk: &Chunk, error: &str) -> Result<(), EtlError>;
}

#[async_trait]
pub trait ChunkWriter: Send {
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), EtlError>;
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
    pub chunking: Chunking,
    /// Set when the last stage is a pivot: sinks write wide tables.
    pub pivot: Option<Arc<wide::WideSpec>>,
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
            Ok(Arc::new(parquet::ParquetSink::new(spec.clone(), context)))
        }
    }
}
