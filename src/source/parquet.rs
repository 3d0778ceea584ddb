//! Parquet source: a set of files (a staging folder), read batch by batch.
//!
//! Chunks are windows over the time column (and key), as for PostgreSQL;
//! files that etl staged with the same `[chunks]` map one file to one
//! chunk. Planning reads only the time and key columns of every file. A
//! chunk reads only the files whose time range overlaps its window, a
//! batch at a time, and keeps the rows inside the window: memory is a
//! batch, not a file.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::kernels::cmp::{eq, gt_eq, lt};
use arrow::compute::{and, cast, filter_record_batch, is_null};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMicrosecondType};
use async_trait::async_trait;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::{BatchStream, Source};
use crate::config::validate::Chunking;
use crate::error::EtlError;
use crate::plan::{Chunk, Plan, PlannedChunk};
use crate::time::Micros;

pub struct ParquetSource {
    files: Vec<FileInfo>,
    schema: SchemaRef,
    time_index: usize,
    key_index: Option<usize>,
    batch_rows: usize,
    bytes_read: Arc<AtomicU64>,
}

struct FileInfo {
    path: PathBuf,
    /// Earliest and latest time in the file; `None` when it has no time.
    range: Option<(Micros, Micros)>,
    bytes: u64,
}

fn read_error(
    path: &std::path::Path,
) -> impl FnOnce(parquet::errors::ParquetError) -> EtlError + '_ {
    move |e| EtlError::Io {
        context: format!("reading {}", path.display()),
        source: std::io::Error::other(e),
    }
}

fn open(path: &std::path::Path) -> Result<ParquetRecordBatchReaderBuilder<File>, EtlError> {
    let file = File::open(path).map_err(|source| EtlError::Io {
        context: format!("opening {}", path.display()),
        source,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(read_error(path))
}

/// The PostgreSQL type names a file's field metadata carries (etl writes
/// them when it stages a PostgreSQL source) are names, not SQL: a file
/// whose metadata holds anything else is refused before any table is made.
fn check_type_names(path: &std::path::Path, schema: &SchemaRef) -> Result<(), EtlError> {
    for field in schema.fields() {
        if let Some(t) = field.metadata().get(crate::pg_binary::PG_TYPE_METADATA) {
            crate::sql::type_name(t).map_err(|e| {
                EtlError::Schema(format!(
                    "{}: column {:?}: field metadata {}: {e}; the file was not written by etl, or was changed since: remove the metadata or stage the file again",
                    path.display(),
                    field.name(),
                    crate::pg_binary::PG_TYPE_METADATA
                ))
            })?;
        }
    }
    Ok(())
}

impl ParquetSource {
    /// Finds the files and checks they share one schema with a usable time column.
    pub fn build(pattern: &str, batch_rows: usize, chunking: &Chunking) -> Result<Self, EtlError> {
        let mut paths: Vec<PathBuf> = glob::glob(pattern)
            .map_err(|e| {
                EtlError::Schema(format!(
                    "source.path {pattern:?} is not a glob pattern: {e}"
                ))
            })?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        let Some(first) = paths.first().cloned() else {
            return Err(EtlError::Schema(format!(
                "source.path {pattern:?} matches no file"
            )));
        };
        let schema = open(&first)?.schema().clone();
        check_type_names(&first, &schema)?;
        let time_index = schema.index_of(&chunking.time_column).map_err(|_| {
            EtlError::Schema(format!(
                "chunks.time_column {:?} is not a column of {}",
                chunking.time_column,
                first.display()
            ))
        })?;
        if !matches!(
            schema.field(time_index).data_type(),
            DataType::Timestamp(_, _)
        ) {
            return Err(EtlError::Schema(format!(
                "chunks.time_column {:?} is {} in {}; chunks are cut on a timestamp column",
                chunking.time_column,
                schema.field(time_index).data_type(),
                first.display()
            )));
        }
        let key_index = match &chunking.key_column {
            Some(k) => Some(schema.index_of(k).map_err(|_| {
                EtlError::Schema(format!(
                    "chunks.key_column {k:?} is not a column of {}",
                    first.display()
                ))
            })?),
            None => None,
        };
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let builder = open(&path)?;
            let fields = |s: &SchemaRef| {
                s.fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().clone()))
                    .collect::<Vec<_>>()
            };
            check_type_names(&path, builder.schema())?;
            if fields(builder.schema()) != fields(&schema) {
                return Err(EtlError::Schema(format!(
                    "{} has other columns than {}; every file of source.path must have the same columns",
                    path.display(),
                    first.display()
                )));
            }
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let mut range: Option<(Micros, Micros)> = None;
            for batch in read_columns(&path, &[time_index], batch_rows)? {
                let times = micros(column(&batch, &chunking.time_column)?)?;
                for t in times.iter().flatten() {
                    range = Some(range.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
                }
            }
            files.push(FileInfo { path, range, bytes });
        }
        Ok(ParquetSource {
            files,
            schema,
            time_index,
            key_index,
            batch_rows,
            bytes_read: Arc::default(),
        })
    }
}

/// Reads only `columns` of a file.
fn read_columns(
    path: &std::path::Path,
    columns: &[usize],
    batch_rows: usize,
) -> Result<Vec<RecordBatch>, EtlError> {
    let builder = open(path)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(batch_rows)
        .build()
        .map_err(read_error(path))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EtlError::Io {
            context: format!("reading {}", path.display()),
            source: std::io::Error::other(e),
        })
}

/// A timestamp column as microseconds since 1970 UTC, whatever its unit
/// (the values of a zoned timestamp are UTC already).
fn micros(column: &ArrayRef) -> Result<arrow::array::TimestampMicrosecondArray, EtlError> {
    use arrow::datatypes::{
        TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    };
    Ok(match column.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => column
            .as_primitive::<TimestampMicrosecondType>()
            .clone()
            .with_timezone_opt(None::<String>),
        DataType::Timestamp(TimeUnit::Millisecond, _) => column
            .as_primitive::<TimestampMillisecondType>()
            .unary(|v| v.saturating_mul(1_000)),
        DataType::Timestamp(TimeUnit::Second, _) => column
            .as_primitive::<TimestampSecondType>()
            .unary(|v| v.saturating_mul(1_000_000)),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => column
            .as_primitive::<TimestampNanosecondType>()
            .unary(|v| v.div_euclid(1_000)),
        other => {
            return Err(EtlError::Schema(format!(
                "time column is {other}, not a timestamp"
            )))
        }
    })
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, EtlError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| EtlError::Bug(format!("projected column {name:?} is missing")))
}

/// A key column as text, the form chunk keys take.
fn keys(column: &ArrayRef) -> Result<StringArray, EtlError> {
    let c = cast(column, &DataType::Utf8)
        .map_err(|e| EtlError::Schema(format!("key column cannot be read as text: {e}")))?;
    Ok(c.as_string::<i32>().clone())
}

#[async_trait]
impl Source for ParquetSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn primary_key(&self) -> &[String] {
        &[]
    }

    async fn plan(&self, chunking: &Chunking) -> Result<Plan, EtlError> {
        let interval = chunking.interval;
        let origin = chunking.start.unwrap_or(0);
        let (lower, upper) = (
            chunking.start.unwrap_or(i64::MIN),
            chunking.end.unwrap_or(i64::MAX),
        );
        let mut counts: HashMap<(Option<String>, i64), u64> = HashMap::new();
        let mut plan = Plan::default();
        let columns: Vec<usize> = std::iter::once(self.time_index)
            .chain(self.key_index)
            .collect();
        // A projection keeps the file's column order: find columns by name.
        let time_name = self.schema.field(self.time_index).name();
        let key_name = self.key_index.map(|k| self.schema.field(k).name());
        for file in &self.files {
            for batch in read_columns(&file.path, &columns, self.batch_rows)? {
                let times = micros(column(&batch, time_name)?)?;
                let keys = match key_name {
                    Some(k) => Some(keys(column(&batch, k)?)?),
                    None => None,
                };
                for row in 0..batch.num_rows() {
                    if times.is_null(row) || times.value(row) < lower || times.value(row) >= upper {
                        plan.rows_outside += 1;
                        continue;
                    }
                    let t = times.value(row);
                    let window = origin + (t - origin).div_euclid(interval) * interval;
                    let key = keys
                        .as_ref()
                        .and_then(|k| (!k.is_null(row)).then(|| k.value(row).to_string()));
                    *counts.entry((key, window)).or_default() += 1;
                }
            }
        }
        plan.chunks = counts
            .into_iter()
            .map(|((key, start), rows)| PlannedChunk {
                chunk: Chunk::window(key, start, start.saturating_add(interval).min(upper)),
                rows,
            })
            .collect();
        plan.chunks
            .sort_by(|a, b| (a.chunk.start, &a.chunk.key).cmp(&(b.chunk.start, &b.chunk.key)));
        let first = plan.chunks.iter().map(|c| c.chunk.start).min();
        let last = plan.chunks.iter().map(|c| c.chunk.end).max();
        plan.range = first.zip(last);
        Ok(plan)
    }

    async fn open(&self, chunk: &Chunk) -> Result<BatchStream, EtlError> {
        let files: Vec<(PathBuf, u64)> = self
            .files
            .iter()
            .filter(|f| {
                f.range
                    .is_some_and(|(min, max)| min < chunk.end && max >= chunk.start)
            })
            .map(|f| (f.path.clone(), f.bytes))
            .collect();
        let (time_index, key_index, batch_rows) =
            (self.time_index, self.key_index, self.batch_rows);
        let bytes_read = self.bytes_read.clone();
        let chunk = chunk.clone();
        // Files are opened one after the other as the stream is read.
        let batches = files.into_iter().flat_map(move |(path, bytes)| {
            bytes_read.fetch_add(bytes, Ordering::Relaxed);
            let chunk = chunk.clone();
            let reader = open(&path).and_then(|b| {
                b.with_batch_size(batch_rows)
                    .build()
                    .map_err(read_error(&path))
            });
            let batches: Box<dyn Iterator<Item = Result<RecordBatch, EtlError>> + Send> =
                match reader {
                    Err(e) => Box::new(std::iter::once(Err(e))),
                    Ok(reader) => Box::new(reader.map(move |batch| {
                        let batch = batch.map_err(|e| EtlError::Io {
                            context: format!("reading {}", path.display()),
                            source: std::io::Error::other(e),
                        })?;
                        in_chunk(&batch, time_index, key_index, &chunk)
                    })),
                };
            batches
        });
        let batches = batches.filter(|b| b.as_ref().map_or(true, |b| b.num_rows() > 0));
        Ok(Box::pin(futures_util::stream::iter(batches)))
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
}

/// The rows of `batch` inside the chunk's window (and key).
fn in_chunk(
    batch: &RecordBatch,
    time_index: usize,
    key_index: Option<usize>,
    chunk: &Chunk,
) -> Result<RecordBatch, EtlError> {
    let arrow_err = |e: arrow::error::ArrowError| {
        EtlError::Schema(format!("filtering a batch to its chunk: {e}"))
    };
    let times = micros(batch.column(time_index))?;
    let start = arrow::array::TimestampMicrosecondArray::new_scalar(chunk.start);
    let end = arrow::array::TimestampMicrosecondArray::new_scalar(chunk.end);
    let mut mask: BooleanArray = and(
        &gt_eq(&times, &start).map_err(arrow_err)?,
        &lt(&times, &end).map_err(arrow_err)?,
    )
    .map_err(arrow_err)?;
    if let Some(k) = key_index {
        let keys = keys(batch.column(k))?;
        let key_mask = match &chunk.key {
            Some(v) => eq(&keys, &StringArray::new_scalar(v.as_str())).map_err(arrow_err)?,
            None => is_null(&keys).map_err(arrow_err)?,
        };
        mask = and(&mask, &key_mask).map_err(arrow_err)?;
    }
    filter_record_batch(batch, &mask).map_err(arrow_err)
}
