//! Parquet source: a set of files (a staging folder), read batch by batch.
//!
//! Chunks are windows over the time column (and key), as for PostgreSQL;
//! files that etl staged with the same `[chunks]` map one file to one
//! chunk. Without `[chunks] time_column` each file is a chunk of its own
//! (part 0 of the key that is the file's path under the folder the files
//! share, without `.parquet`), read whole, its rows counted from the
//! file's footer. Planning reads only the time and key columns of every file. A
//! chunk reads only the files whose time range overlaps its window, a
//! batch at a time, and keeps the rows inside the window: memory is a
//! batch, not a file.
//!
//! Files may differ in their columns (a pivot stages each chunk with its
//! own channels): the source's schema is their union, a column's type the
//! widest by the pivot's rules. Wide rows ([`etl_model::wide`]) keep each
//! file's own columns, so wide tables get the columns the chunk had; other
//! rows get the union's, NULL where a file has none.

pub mod config;

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::kernels::cmp::{eq, gt_eq, lt};
use arrow::compute::{and, cast, filter_record_batch, is_null};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use async_trait::async_trait;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::{BatchStream, Source};
use etl_base::plan::{Chunk, Plan, PlannedChunk};
use etl_base::time::Micros;
use etl_model::wide::{ChunkKey, Kind, WideLayout};
use etl_model::Chunking;
use etl_pg::error::EtlError;

pub struct ParquetSource {
    files: Vec<FileInfo>,
    /// The union of the files' columns.
    schema: SchemaRef,
    /// Wide rows keep each file's own columns ([`etl_model::wide`]).
    wide: bool,
    time_name: String,
    batch_rows: usize,
    bytes_read: Arc<AtomicU64>,
}

struct FileInfo {
    path: PathBuf,
    /// The file's path under the folder all the files share, without
    /// `.parquet` (`IMO9900001/20250601T000000Z`): its chunk's key when
    /// the files are read whole.
    stem: String,
    /// Earliest and latest time in the file; `None` when it has no time.
    range: Option<(Micros, Micros)>,
    bytes: u64,
    /// Rows in the file (from its footer).
    rows: u64,
    /// `None` without `[chunks] time_column`: the file is read whole.
    time_index: Option<usize>,
    key: FileKey,
}

/// Where a file's rows get their chunk key.
#[derive(Clone)]
enum FileKey {
    /// No `key_column`.
    None,
    /// From this column.
    Column(usize),
    /// The whole file has this key (a staged chunk of wide rows, whose
    /// rows lack the key column: [`etl_model::wide::ChunkKey`]).
    Fixed(Option<String>),
}

/// The union of the files' columns: each column once, in the order first
/// seen; a column whose type differs between files takes the widest by
/// the pivot's rules (boolean < bigint < double precision < text), any
/// other difference is refused naming both files.
fn union_schema(schemas: &[(PathBuf, SchemaRef)]) -> Result<Schema, EtlError> {
    let mut fields: Vec<(Field, &std::path::Path)> = Vec::new();
    let first = &schemas[0];
    let layout = WideLayout::of(&first.1)?;
    for (path, schema) in schemas {
        if WideLayout::of(schema)? != layout {
            return Err(EtlError::Config(format!(
                "{} and {} hold different kinds of rows (wide rows of another layout, or not wide); load them with two pipelines",
                first.0.display(),
                path.display()
            )));
        }
        for f in schema.fields() {
            match fields.iter_mut().find(|(u, _)| u.name() == f.name()) {
                None => fields.push((f.as_ref().clone().with_nullable(true), path)),
                Some((u, seen)) if u.data_type() != f.data_type() => {
                    match (Kind::of(u.data_type()), Kind::of(f.data_type())) {
                        (Some(a), Some(b)) => {
                            // Types of one kind take its canonical type.
                            *u = Field::new(u.name(), a.max(b).arrow(), true);
                            if b > a {
                                *seen = path;
                            }
                        }
                        _ => {
                            return Err(EtlError::Config(format!(
                                "column {:?} is {} in {} but {} in {}; every file of source.path must give a column one type (or types a pivot widens: boolean, integer, floating point, text)",
                                f.name(),
                                u.data_type(),
                                seen.display(),
                                f.data_type(),
                                path.display()
                            )))
                        }
                    }
                }
                Some(_) => {}
            }
        }
    }
    let fields: Vec<Field> = fields.into_iter().map(|(f, _)| f).collect();
    Ok(Schema::new_with_metadata(
        fields,
        first.1.metadata().clone(),
    ))
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
        if let Some(t) = field.metadata().get(etl_pg::pg_binary::PG_TYPE_METADATA) {
            etl_base::sql::type_name(t).map_err(|e| {
                EtlError::Changed(format!(
                    "{}: column {:?}: field metadata {}: {e}; the file was not written by etl, or was changed since: remove the metadata or stage the file again",
                    path.display(),
                    field.name(),
                    etl_pg::pg_binary::PG_TYPE_METADATA
                ))
            })?;
        }
    }
    Ok(())
}

impl ParquetSource {
    /// Finds the files and checks they share one schema with a usable time column.
    pub fn build(pattern: &str, batch_rows: usize, chunking: &Chunking) -> Result<Self, EtlError> {
        let paths = crate::files_matching(pattern)?;
        // Each file's footer, read once: its schema and its row count.
        let mut schemas = Vec::with_capacity(paths.len());
        let mut counts = Vec::with_capacity(paths.len());
        for path in &paths {
            let builder = open(path)?;
            let schema = builder.schema().clone();
            check_type_names(path, &schema)?;
            schemas.push((path.clone(), schema));
            counts.push(builder.metadata().file_metadata().num_rows().max(0) as u64);
        }
        let schema = union_schema(&schemas)?;
        let wide = WideLayout::of(&schema)?.is_some();
        let time_name = chunking.time_column.clone();
        let base = shared_folder(&paths);
        let mut files: Vec<FileInfo> = Vec::with_capacity(paths.len());
        for ((path, file_schema), rows) in schemas.into_iter().zip(counts) {
            let stem = path
                .strip_prefix(&base)
                .unwrap_or(&path)
                .with_extension("")
                .to_string_lossy()
                .into_owned();
            let file = FileInfo {
                bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
                path,
                stem,
                range: None,
                rows,
                time_index: None,
                key: FileKey::None,
            };
            if !time_name.is_empty() {
                files.push(timed_file(file, &file_schema, chunking, batch_rows)?);
                continue;
            }
            if let Some(other) = files.iter().find(|f| f.stem == file.stem) {
                return Err(EtlError::Config(format!(
                    "{} and {} both read {:?} without their extension: without [chunks] time_column each file is a chunk keyed by its path; rename one, or match one of them",
                    other.path.display(),
                    file.path.display(),
                    file.stem
                )));
            }
            files.push(file);
        }
        Ok(ParquetSource {
            files,
            schema: Arc::new(schema),
            wide,
            time_name,
            batch_rows,
            bytes_read: Arc::default(),
        })
    }
}

/// A file of a source cut into time windows: its time column (a
/// timestamp), its key (a column, or the value its metadata fixes) and the
/// range of its times, read from that column alone.
fn timed_file(
    file: FileInfo,
    file_schema: &Schema,
    chunking: &Chunking,
    batch_rows: usize,
) -> Result<FileInfo, EtlError> {
    let (path, time_name) = (&file.path, &chunking.time_column);
    let time_index = file_schema.index_of(time_name).map_err(|_| {
        EtlError::Config(format!(
            "chunks.time_column {time_name:?} is not a column of {}",
            path.display()
        ))
    })?;
    if !matches!(
        file_schema.field(time_index).data_type(),
        DataType::Timestamp(_, _)
    ) {
        return Err(EtlError::Config(format!(
            "chunks.time_column {time_name:?} is {} in {}; chunks are cut on a timestamp column",
            file_schema.field(time_index).data_type(),
            path.display()
        )));
    }
    let key = match &chunking.key_column {
        None => FileKey::None,
        Some(k) => match (file_schema.index_of(k), ChunkKey::of(file_schema)?) {
            (Ok(i), _) => FileKey::Column(i),
            (Err(_), Some(fixed)) if fixed.column == *k => FileKey::Fixed(fixed.value),
            _ => {
                return Err(EtlError::Config(format!(
                    "chunks.key_column {k:?} is not a column of {}",
                    path.display()
                )))
            }
        },
    };
    let mut range: Option<(Micros, Micros)> = None;
    for batch in read_columns(path, &[time_index], batch_rows)? {
        let times = micros(column(&batch, time_name)?)?;
        for t in times.iter().flatten() {
            range = Some(range.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
        }
    }
    Ok(FileInfo {
        range,
        time_index: Some(time_index),
        key,
        ..file
    })
}

/// The folder every path is in (the longest shared one).
fn shared_folder(paths: &[PathBuf]) -> PathBuf {
    let mut base = paths
        .first()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    for p in paths {
        while !p.starts_with(&base) {
            if !base.pop() {
                return PathBuf::new();
            }
        }
    }
    base
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
            return Err(EtlError::Config(format!(
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
        .map_err(|e| EtlError::Config(format!("key column cannot be read as text: {e}")))?;
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
        if self.time_name.is_empty() {
            let mut plan = Plan {
                chunks: self
                    .files
                    .iter()
                    .map(|f| PlannedChunk {
                        chunk: Chunk::part(Some(f.stem.clone()), 0),
                        rows: f.rows,
                    })
                    .collect(),
                ..Plan::default()
            };
            plan.order_and_span();
            return Ok(plan);
        }
        let interval = chunking.interval;
        let origin = chunking.start.unwrap_or(0);
        let (lower, upper) = (
            chunking.start.unwrap_or(i64::MIN),
            chunking.end.unwrap_or(i64::MAX),
        );
        let mut counts: HashMap<(Option<String>, i64), u64> = HashMap::new();
        let mut plan = Plan::default();
        for file in &self.files {
            let Some(time_index) = file.time_index else {
                continue;
            };
            let columns: Vec<usize> = match file.key {
                FileKey::Column(k) => vec![time_index, k],
                _ => vec![time_index],
            };
            // A projection keeps the file's column order: find columns by name.
            for batch in read_columns(&file.path, &columns, self.batch_rows)? {
                let times = micros(column(&batch, &self.time_name)?)?;
                let keys = match (&file.key, &chunking.key_column) {
                    (FileKey::Column(_), Some(name)) => Some(keys(column(&batch, name)?)?),
                    _ => None,
                };
                for row in 0..batch.num_rows() {
                    if times.is_null(row) || times.value(row) < lower || times.value(row) >= upper {
                        plan.rows_outside += 1;
                        continue;
                    }
                    let t = times.value(row);
                    let window = etl_base::plan::window_start(t, origin, interval);
                    let key = match &file.key {
                        FileKey::Fixed(k) => k.clone(),
                        _ => keys
                            .as_ref()
                            .and_then(|k| (!k.is_null(row)).then(|| k.value(row).to_string())),
                    };
                    *counts.entry((key, window)).or_default() += 1;
                }
            }
        }
        plan.chunks = counts
            .into_iter()
            .map(|((key, start), rows)| PlannedChunk {
                chunk: etl_base::plan::window_chunk(key, start, interval, upper),
                rows,
            })
            .collect();
        plan.order_and_span();
        Ok(plan)
    }

    async fn open(&self, chunk: &Chunk) -> Result<BatchStream, EtlError> {
        let whole_files = self.time_name.is_empty();
        if whole_files
            && (chunk.unit != etl_base::plan::Unit::Part
                || !self
                    .files
                    .iter()
                    .any(|f| Some(&f.stem) == chunk.key.as_ref()))
        {
            return Err(EtlError::Changed(format!(
                "chunk {chunk} names no file matched now (without [chunks] time_column each file is a chunk keyed by its name): the files changed since the plan; run etl plan again"
            )));
        }
        let files: Vec<(PathBuf, u64, Option<usize>, FileKey)> = self
            .files
            .iter()
            .filter(|f| match whole_files {
                true => Some(&f.stem) == chunk.key.as_ref(),
                false => {
                    f.range
                        .is_some_and(|(min, max)| min < chunk.end && max >= chunk.start)
                        && match &f.key {
                            FileKey::Fixed(k) => *k == chunk.key,
                            _ => true,
                        }
                }
            })
            .map(|f| (f.path.clone(), f.bytes, f.time_index, f.key.clone()))
            .collect();
        let (batch_rows, wide) = (self.batch_rows, self.wide);
        let union = self.schema.clone();
        let bytes_read = self.bytes_read.clone();
        let chunk = chunk.clone();
        // Files are opened one after the other as the stream is read.
        let batches = files
            .into_iter()
            .flat_map(move |(path, bytes, time_index, key)| {
                bytes_read.fetch_add(bytes, Ordering::Relaxed);
                let chunk = chunk.clone();
                let union = union.clone();
                let key_index = match key {
                    FileKey::Column(k) => Some(k),
                    _ => None,
                };
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
                            let batch = match time_index {
                                Some(t) => in_chunk(&batch, t, key_index, &chunk)?,
                                None => batch,
                            };
                            conform(&batch, &union, wide)
                                .map_err(|e| e.in_context(&path.display().to_string()))
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

/// A file's batch in the union's types: wide rows keep their own columns
/// (a sink learns them per batch), other rows get every column of the
/// union, NULL where the file has none.
fn conform(batch: &RecordBatch, union: &Schema, wide: bool) -> Result<RecordBatch, EtlError> {
    let schema = batch.schema();
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for u in union.fields() {
        match schema.index_of(u.name()) {
            Ok(i) => {
                let column = batch.column(i);
                columns.push(match Kind::of(u.data_type()) {
                    Some(kind) if column.data_type() != u.data_type() => {
                        etl_model::wide::conform(column, kind)?
                    }
                    _ => column.clone(),
                });
                fields.push(u.clone());
            }
            Err(_) if wide => {}
            Err(_) => {
                columns.push(arrow::array::new_null_array(
                    u.data_type(),
                    batch.num_rows(),
                ));
                fields.push(u.clone());
            }
        }
    }
    let schema = Schema::new_with_metadata(fields, union.metadata().clone());
    RecordBatch::try_new(Arc::new(schema), columns)
        .map_err(|e| EtlError::Bug(format!("a batch in the union of the files' columns: {e}")))
}

/// The rows of `batch` inside the chunk's window (and key).
fn in_chunk(
    batch: &RecordBatch,
    time_index: usize,
    key_index: Option<usize>,
    chunk: &Chunk,
) -> Result<RecordBatch, EtlError> {
    let arrow_err =
        |e: arrow::error::ArrowError| EtlError::Bug(format!("filtering a batch to its chunk: {e}"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Float64Array, Int64Array, TimestampMicrosecondArray};
    use futures_util::StreamExt;

    fn write(dir: &std::path::Path, name: &str, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let file = File::create(dir.join(name)).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    fn chunking() -> Chunking {
        Chunking::windows("t", 86_400_000_000)
    }

    #[test]
    fn chunk_settings_a_file_does_not_fit_are_named_with_the_file() {
        let build = |dir: &tempfile::TempDir, chunking: &Chunking| {
            let pattern = format!("{}/*", dir.path().display());
            match ParquetSource::build(&pattern, 1024, chunking) {
                Ok(_) => panic!("{pattern} was taken"),
                Err(e) => e.to_string(),
            }
        };
        let t = |v: i64| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(vec![v])) };
        let x = || -> ArrayRef { Arc::new(Int64Array::from(vec![7])) };

        // A time column one file lacks
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.parquet", vec![("t", t(1)), ("x", x())]);
        write(dir.path(), "b.parquet", vec![("x", x())]);
        let e = build(&dir, &chunking());
        assert!(
            e.starts_with("chunks.time_column \"t\" is not a column of "),
            "{e}"
        );
        assert!(e.ends_with("b.parquet"), "{e}");

        // A key column that is not there
        let keyed = Chunking {
            key_column: Some("ship".into()),
            ..chunking()
        };
        let e = build(&dir, &keyed);
        assert!(
            e.starts_with("chunks.key_column \"ship\" is not a column of "),
            "{e}"
        );

        // A time column that is not a timestamp
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "c.parquet", vec![("t", x())]);
        let e = build(&dir, &chunking());
        assert!(e.contains("chunks.time_column \"t\" is Int64 in "), "{e}");
        assert!(
            e.ends_with("c.parquet; chunks are cut on a timestamp column"),
            "{e}"
        );

        // Without a time column, two files whose paths differ only in their
        // extension would be one chunk's key
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d.parquet", vec![("x", x())]);
        write(dir.path(), "d.pq", vec![("x", x())]);
        let whole = Chunking {
            time_column: String::new(),
            ..chunking()
        };
        let e = build(&dir, &whole);
        assert!(e.contains("both read \"d\" without their extension"), "{e}");
    }

    #[test]
    fn files_with_other_columns_read_as_their_union() {
        // Given two files that share only some columns, x an integer in one
        // and a double in the other
        let dir = tempfile::tempdir().unwrap();
        let t = |v: i64| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(vec![v])) };
        write(
            dir.path(),
            "a.parquet",
            vec![
                ("t", t(1)),
                ("x", Arc::new(Int64Array::from(vec![7]))),
                ("y", Arc::new(StringArray::from(vec!["y"]))),
            ],
        );
        write(
            dir.path(),
            "b.parquet",
            vec![
                ("t", t(2)),
                ("x", Arc::new(Float64Array::from(vec![1.5]))),
                ("z", Arc::new(BooleanArray::from(vec![true]))),
            ],
        );
        let pattern = format!("{}/*.parquet", dir.path().display());
        let source = ParquetSource::build(&pattern, 1024, &chunking()).unwrap();

        // Then the schema is the union, x widened to a double
        let names: Vec<String> = source
            .schema()
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect();
        assert_eq!(
            names,
            ["t Timestamp(µs)", "x Float64", "y Utf8", "z Boolean"]
        );

        // And each file's rows come with every column, NULL where it had none
        let chunk = Chunk::window(None, 0, 86_400_000_000);
        let batches: Vec<RecordBatch> = collect(source.open(&chunk));
        assert_eq!(batches.len(), 2);
        let x = batches[0]
            .column(1)
            .as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(x.value(0), 7.0);
        assert!(batches[0].column(3).is_null(0));
        assert!(batches[1].column(2).is_null(0));

        // When a third file gives x a type no pivot widens to
        write(
            dir.path(),
            "c.parquet",
            vec![
                ("t", t(3)),
                (
                    "x",
                    Arc::new(arrow::array::Date32Array::from(vec![1])) as ArrayRef,
                ),
            ],
        );
        let e = ParquetSource::build(&pattern, 1024, &chunking())
            .err()
            .unwrap()
            .to_string();
        // Then it is refused naming the column and both files
        assert!(
            e.contains("column \"x\" is Float64 in") && e.contains("b.parquet but Date32 in"),
            "{e}"
        );
        assert!(e.contains("c.parquet"), "{e}");
    }

    fn collect(
        stream: impl std::future::Future<Output = Result<BatchStream, EtlError>>,
    ) -> Vec<RecordBatch> {
        etl_pg::block_on(async {
            let mut s = stream.await.unwrap();
            let mut out = Vec::new();
            while let Some(b) = s.next().await {
                out.push(b.unwrap());
            }
            out
        })
    }
}
