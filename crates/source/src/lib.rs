//! Sources: where rows come from. A source knows its schema before any
//! chunk runs, plans the chunks (windows that hold rows, with counts), and
//! streams one chunk's rows as Arrow record batches, memory bounded by a batch.

pub mod access;
pub mod catalog;
pub mod csv;
pub mod odbc;
mod options;
pub mod parquet;
pub mod postgres;
mod read_back;
pub mod spec;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;

use crate::spec::ValidatedSource;
use etl_base::plan::{Chunk, Plan};
use etl_model::Chunking;
use etl_pg::error::EtlError;

pub use etl_model::{BatchStream, CopyStream, CopyThrough};
pub use etl_pg::pg_binary::rows::CsvCopy;
pub use read_back::read_back;

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
    /// What `etl plan` shows of the source's columns (where types were
    /// inferred or names changed); empty when there is nothing to say.
    fn describe(&self) -> Vec<String> {
        Vec::new()
    }
    /// Streams one chunk's rows; the stream ends when the chunk is exhausted.
    async fn open(&self, chunk: &Chunk) -> Result<BatchStream, EtlError>;
    /// Its SQL over its own rows, when it has SQL (PostgreSQL): what
    /// `etl verify` checksums and a sink's queries read.
    fn sql(&self) -> Option<&dyn SqlRows> {
        None
    }
    /// Its chunks as PostgreSQL COPY data, when it can hand them over so
    /// (a PostgreSQL table into a table of the same types): the run
    /// forwards the bytes as they arrive, no Arrow in between.
    fn copy_out(&self) -> Option<&dyn CopyOut> {
        None
    }
    /// Bytes read from the source so far, over all chunks.
    fn bytes_read(&self) -> u64;
    /// Values the source did not read as they were (text replaced or cut,
    /// invalid dates made NULL), over the chunks read to their end.
    fn counts(&self) -> SourceCounts {
        SourceCounts::default()
    }
}

/// A source's SQL over its own rows ([`Source::sql`]).
#[async_trait]
pub trait SqlRows: Send + Sync {
    /// Runs the query `sql` writes around the chunk's rows (all rows
    /// without a chunk), given as a relation to select from: `(SELECT *
    /// FROM <the source> WHERE <chunk's rows>) AS rows`; each value must
    /// be text.
    async fn sql_rows(
        &self,
        chunk: Option<&Chunk>,
        sql: &(dyn for<'r> Fn(&'r str) -> String + Send + Sync),
    ) -> Result<etl_model::verify::Rows, EtlError>;
}

/// A source that hands its chunks over as PostgreSQL COPY data
/// ([`Source::copy_out`]); a sink writes them with `COPY ... FROM STDIN`
/// of that format.
#[async_trait]
pub trait CopyOut: Send + Sync {
    /// The format, and the columns in the order of their values.
    fn through(&self) -> CopyThrough;
    /// One chunk as COPY data: in the source's own format
    /// ([`CopyOut::through`]), or as the CSV `csv` asks for (a CSV file
    /// sink writes the server's CSV as it comes).
    async fn open_copy(&self, chunk: &Chunk, csv: Option<&CsvCopy>)
        -> Result<CopyStream, EtlError>;
}

/// A chunk read a batch at a time by a file source, with a last step
/// (counts, reject files) once its batches are done.
pub trait BatchReader {
    /// The next batch; `None` after the last.
    fn batch(&mut self) -> Result<Option<RecordBatch>, EtlError>;
    /// After the last batch.
    fn finish(&mut self) -> Result<(), EtlError>;
}

/// A [`BatchReader`] as the iterator behind a [`BatchStream`]: it ends
/// after the first error, and runs `finish` once after the last batch.
pub struct Batches<R> {
    reader: R,
    done: bool,
}

impl<R> Batches<R> {
    pub fn new(reader: R) -> Self {
        Batches {
            reader,
            done: false,
        }
    }
}

impl<R: BatchReader> Iterator for Batches<R> {
    type Item = Result<RecordBatch, EtlError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.reader.batch() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => {
                self.done = true;
                self.reader.finish().err().map(Err)
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// What a source counted while reading, for the run's summary.
#[derive(Debug, Clone, Default)]
pub struct SourceCounts {
    /// One line each, like "replaced text s 2 (...)".
    pub lines: Vec<String>,
    /// Values loaded other than as the source held them (exit code 3).
    pub values_changed: u64,
    /// Source rows left out and kept in a reject file (exit code 3).
    pub rows_rejected: u64,
}

/// The encoding of a label: any encoding_rs (WHATWG) label, and the
/// Windows code page names cp949/uhc/ms949 (encoding_rs's EUC-KR is the
/// whole of CP949, with 똠 and 펲).
/// The files a source's `path` glob matches, in name order; refused when
/// it matches none (a file source with nothing to read is a mistake).
pub fn files_matching(pattern: &str) -> Result<Vec<std::path::PathBuf>, EtlError> {
    let mut paths: Vec<std::path::PathBuf> = glob::glob(pattern)
        .map_err(|e| {
            EtlError::Config(format!(
                "source.path {pattern:?} is not a glob pattern: {e}"
            ))
        })?
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(EtlError::Config(format!(
            "source.path {pattern:?} matches no file (relative to {})",
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        )));
    }
    Ok(paths)
}

pub fn encoding_for(label: &str) -> Result<&'static encoding_rs::Encoding, String> {
    let l = match label.to_ascii_lowercase().as_str() {
        "cp949" | "uhc" | "ms949" | "windows949" => "windows-949".to_string(),
        other => other.to_string(),
    };
    encoding_rs::Encoding::for_label(l.as_bytes()).ok_or_else(|| {
        format!(
            "encoding {label:?} is not a known label; use one like \"cp949\", \"euc-kr\", \"windows-1252\" or \"utf-8\""
        )
    })
}

/// Connects the configured source and learns its schema.
pub async fn build(
    source: &ValidatedSource,
    chunking: &Chunking,
) -> Result<Arc<dyn Source>, EtlError> {
    match source {
        ValidatedSource::Postgres {
            endpoint,
            relation,
            batch_rows,
            batch_bytes,
            uncarried_as_text,
        } => Ok(Arc::new(
            postgres::PostgresSource::build(
                endpoint,
                relation,
                *batch_rows,
                *batch_bytes,
                *uncarried_as_text,
                chunking,
            )
            .await?,
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
        ValidatedSource::Csv(spec) => Ok(Arc::new(csv::CsvSource::build(spec)?)),
        ValidatedSource::PostgresDatabase(_) => Err(EtlError::Bug(
            "a whole PostgreSQL database is a migration, not one source".into(),
        )),
        ValidatedSource::Access(_) => Err(EtlError::Bug(
            "an Access source is a migration: etl::migrate reads it table by table".into(),
        )),
    }
}
