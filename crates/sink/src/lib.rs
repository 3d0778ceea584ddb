//! Sinks: where rows go. A sink begins a chunk, takes its batches, and
//! commits it atomically: a writer dropped without commit leaves no trace.
//!
//! - [`postgres`] binary `COPY ... FROM STDIN` in one transaction per chunk
//!   with its ledger row, which the writer records through
//!   `etl_model::ledger::InTransaction` (append, upsert, replace; tables created and
//!   widened as needed); [`wide`] a pivot's wide tables.
//! - [`file`] one Parquet or CSV file per chunk, renamed into place.
//! - [`spec`] the sinks as the pipeline file's validation leaves them.
//!
//! Must not know: any source (what `etl verify` and `etl plan` need of the
//! source is asked through `etl_model::verify`), the transforms, the
//! ledger's store (`etl-ledger`: the runner hands it over), the runner.

pub mod file;
pub mod postgres;
pub mod spec;
pub mod wide;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;

use etl_base::plan::Chunk;
use etl_model::verify::{Basis, Comparison, Rows, RowsQuery, SourceSide};
use etl_model::Chunking;
use etl_pg::error::EtlError;

/// Where rows go: a sink names the target of each chunk and begins one
/// writer per chunk (three required methods). What else a sink can do is
/// an ability the runner asks for ([`Sink::verifiable`], [`Sink::tables`],
/// [`Sink::wide`]); which chunks are
/// committed, failures and the cutoff are the ledger's
/// ([`etl_model::ledger`]), keyed by [`Sink::target`].
#[async_trait]
pub trait Sink: Send + Sync {
    /// Where this sink writes, for people: endpoint and table, or path.
    fn name(&self) -> String;
    /// The target `chunk` is written to (a qualified table, or a file's
    /// path), as the ledger records it.
    fn target(&self, chunk: &Chunk) -> Result<String, EtlError>;
    /// Claims and starts one chunk. `None` when another live process holds
    /// it, or it is done and `redo` (a rerun or `--restart`) is not set.
    async fn begin(
        &self,
        chunk: &Chunk,
        redo: bool,
    ) -> Result<Option<Box<dyn ChunkWriter>>, EtlError>;
    /// Runs once before the first chunk: creates and checks the targets of
    /// `chunks` and registers them in the ledger; with `truncate` (`etl
    /// run`, not `etl rerun`), replace mode truncates them. A sink whose
    /// chunks make their own targets (a file per chunk) only checks that
    /// they can hold every column.
    async fn prepare(&self, _chunks: &[Chunk], _truncate: bool) -> Result<(), EtlError> {
        Ok(())
    }
    /// What the sink would do for these chunks (tables, DDL), without
    /// writing anything: the sink's part of `etl plan`.
    /// `source`: the rows of [`WideTables::source_query`] over the source,
    /// when the sink has one and the source has SQL.
    async fn describe(
        &self,
        chunks: &[Chunk],
        _source: Option<&Rows>,
    ) -> Result<Vec<String>, EtlError> {
        Ok(vec![format!("{} ({} chunks)", self.name(), chunks.len())])
    }
    /// A sink whose chunks `etl verify` can compare with the source.
    fn verifiable(&self) -> Option<&dyn Verifiable> {
        None
    }
    /// A sink of database tables: DDL ahead, ANALYZE, comparing in SQL.
    fn tables(&self) -> Option<&dyn Tables> {
        None
    }
    /// A sink of a pivot's wide tables: their channels as columns.
    fn wide(&self) -> Option<&dyn WideTables> {
        None
    }
}

/// The ability of a sink whose chunks `etl verify` compares.
#[async_trait]
pub trait Verifiable: Send + Sync {
    /// What one chunk is compared by; the runner reads the source's side
    /// accordingly (a [`Basis::File`] it compares itself, the others in
    /// [`Tables::verify`]).
    async fn basis(&self, chunk: &Chunk) -> Result<Basis, EtlError>;
}

/// The ability of a sink that writes database tables.
#[async_trait]
pub trait Tables: Send + Sync {
    /// `etl run --ddl-only`, after [`Sink::prepare`]: creates up front
    /// what the data would add as it arrives (a pivot's channel columns,
    /// listed from the source's rows of [`WideTables::source_query`]),
    /// loads nothing; says what the targets now are.
    async fn create_ahead(
        &self,
        chunks: &[Chunk],
        source: Option<&Rows>,
    ) -> Result<Vec<String>, EtlError>;
    /// After a load (`analyze_after`): ANALYZE (or VACUUM (ANALYZE), for a
    /// migration) every table these chunks
    /// wrote; returns their names.
    async fn analyze(&self, chunks: &[Chunk]) -> Result<Vec<String>, EtlError>;
    /// Compares one chunk in this sink with the source's side of it (for a
    /// [`Basis::Rows`], [`Basis::Copy`] or [`Basis::Queries`]).
    async fn verify(&self, chunk: &Chunk, source: SourceSide) -> Result<Comparison, EtlError>;
    /// The chunks `etl verify` is about to compare (a table with no index
    /// to find one chunk's rows by is then read once for all of them).
    fn will_verify(&self, chunks: &[Chunk]);
    /// Whether the table's columns tell this chunk's rows from the other
    /// chunks' (a time window, a key range); those it cannot (a file read
    /// whole, a byte range) are compared together, table by table.
    fn selects(&self, chunk: &Chunk) -> bool;
    /// `etl verify --quick`: the chunk's rows in the table now against the
    /// checksum its writer recorded in the ledger, the source unread;
    /// several chunks the table cannot tell apart: the whole table against
    /// their records added up. `None` when one recorded none.
    async fn verify_recorded(&self, chunks: &[Chunk]) -> Result<Option<Comparison>, EtlError>;
}

/// The ability of a sink that writes wide rows ([`etl_model::wide`]) into
/// tables whose columns are channels.
#[async_trait]
pub trait WideTables: Send + Sync {
    /// A query over all the source's rows whose answer [`Sink::describe`]
    /// and [`Tables::create_ahead`] use (the channels per key).
    fn source_query(&self) -> Option<RowsQuery>;
    /// The channels whose columns this chunk's target has as text
    /// already, so the pivot makes their cells text (its repeated readings
    /// compared as text, as the column's type orders them).
    async fn text_channels(&self, chunk: &Chunk) -> Result<Vec<String>, EtlError>;
    /// The chunks among `chunks` that wrote numbers into a column a later
    /// chunk widened to text, where as text another value is the greatest
    /// ([`etl_model::wide::AMBIGUOUS_METADATA`]): they run again, pivoted
    /// with the channel as text.
    async fn stale(&self, chunks: &[Chunk]) -> Result<Vec<Chunk>, EtlError>;
}

#[async_trait]
pub trait ChunkWriter: Send {
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), EtlError>;
    /// Whether this writer takes the source's COPY data as it comes.
    fn can_copy(&self) -> bool {
        false
    }
    /// The CSV this writer takes COPY data in (a CSV file: the server's
    /// CSV as it comes); `None`: the source's own format. Every writer of
    /// a chunk must ask for the same, or the chunk goes as record batches.
    fn copy_csv(&self) -> Option<etl_pg::pg_binary::rows::CsvCopy> {
        None
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
