//! Sources: where rows come from. A source knows its schema before any
//! chunk runs, plans the chunks (windows that hold rows, with counts), and
//! streams one chunk's rows as Arrow record batches, memory bounded by a batch.

pub mod odbc;
pub mod parquet;
pub mod postgres;

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use futures_util::Stream;

use crate::config::validate::{Chunking, ValidatedSource};
use crate::error::EtlError;
use crate::plan::{Chunk, Plan};

/// One chunk's rows.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch, EtlError>> + Send>>;

#[async_trait]
pub trait Source: Send + Sync {
    /// Schema of every batch, known before any chunk runs.
    fn schema(&self) -> SchemaRef;
    /// Primary key columns of the source, when it has one; created target
    /// tables get the same key.
    fn primary_key(&self) -> &[String];
    /// Cuts the source into chunks holding rows, with their counts.
    async fn plan(&self, chunking: &Chunking) -> Result<Plan, EtlError>;
    /// A cheaper plan for `etl run` when the source can find its keys and
    /// time ranges by index: every window from each key's first to last
    /// time, rows not counted (empty windows cost an index probe). `None`
    /// when it cannot; the run then uses [`Source::plan`].
    async fn plan_by_index(&self, _chunking: &Chunking) -> Result<Option<Plan>, EtlError> {
        Ok(None)
    }
    /// Streams one chunk's rows; the stream ends when the chunk is exhausted.
    async fn open(&self, chunk: &Chunk) -> Result<BatchStream, EtlError>;
    /// Count and checksum of one chunk's rows over `columns`, computed by
    /// the source itself ([`crate::verify::sql`]); `None` when the source
    /// cannot (a file source).
    async fn sql_checksum(
        &self,
        chunk: &Chunk,
        columns: &[String],
    ) -> Result<Option<crate::verify::Checksum>, EtlError>;
    /// The number of one chunk's rows, counted by the source itself; `None`
    /// when it cannot (a file source). Verify's fallback where a source
    /// has no SQL checksum.
    async fn count(&self, _chunk: &Chunk) -> Result<Option<u64>, EtlError> {
        Ok(None)
    }
    /// Runs `SELECT {select} FROM <the source> WHERE <chunk's rows> {tail}`
    /// in the source (all rows without a chunk); each value must be text.
    /// `None` when the source has no SQL (a file source).
    async fn sql_rows(
        &self,
        _chunk: Option<&Chunk>,
        _select: &str,
        _tail: &str,
    ) -> Result<Option<Vec<Vec<Option<String>>>>, EtlError> {
        Ok(None)
    }
    /// Bytes read from the source so far, over all chunks.
    fn bytes_read(&self) -> u64;
    /// Values the source did not read as they were (text replaced or cut,
    /// invalid dates made NULL), over the chunks read to their end.
    fn counts(&self) -> SourceCounts {
        SourceCounts::default()
    }
}

/// What a source counted while reading, for the run's summary.
#[derive(Debug, Clone, Default)]
pub struct SourceCounts {
    /// One line each, like "replaced text s 2 (...)".
    pub lines: Vec<String>,
    /// Values loaded other than as the source held them (exit code 3).
    pub values_changed: u64,
}

/// Connects the configured source and learns its schema.
pub async fn build(
    source: &ValidatedSource,
    chunking: &Chunking,
) -> Result<Arc<dyn Source>, EtlError> {
    match source {
        ValidatedSource::Postgres { .. } => Ok(Arc::new(
            postgres::PostgresSource::build(source, chunking).await?,
        )),
        ValidatedSource::Parquet {
            pattern,
            batch_rows,
        } => Ok(Arc::new(parquet::ParquetSource::build(
            pattern,
            *batch_rows,
            chunking,
        )?)),
        ValidatedSource::Odbc(spec) => Ok(Arc::new(odbc::OdbcSource::build(spec, chunking)?)),
    }
}
