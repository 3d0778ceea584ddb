//! File sinks: one file per chunk, Parquet (staging before a cut-over) or
//! CSV ([`csv`]: exports in any code page, readable by `\copy` and by etl's
//! CSV source).
//!
//! A chunk is written to a temporary file beside its target, fsynced, and
//! renamed into place (then the directory is fsynced), so a reader never
//! sees half a file and a crash leaves no partial one under the real name.
//! The rename is the chunk's record: a chunk's file exists only once it is
//! complete, and running the chunk again replaces it. A Parquet file stores
//! the Arrow schema (time zones, decimal precision, lists, the UUID
//! extension), so it reads back as it was written.

pub mod csv;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::{ChunkStats, ChunkWriter, Sink, SinkContext, Verifiable};
use crate::spec::ParquetCompression;
use crate::spec::{CsvSinkSpec, ParquetSinkSpec};
use etl_base::plan::Chunk;
use etl_model::verify::{Basis, FileFormat, Rows, WrittenFile};
use etl_pg::error::EtlError;
use etl_pg::pg_binary::rows::CsvCopy;

/// What a file sink writes.
#[derive(Debug, Clone)]
pub enum Format {
    Parquet(ParquetSinkSpec),
    Csv(CsvSinkSpec),
}

pub struct FileSink {
    /// The file of each chunk, with placeholders.
    path: String,
    format: Format,
    ctx: Arc<SinkContext>,
}

impl FileSink {
    pub fn parquet(spec: ParquetSinkSpec, ctx: Arc<SinkContext>) -> Self {
        FileSink {
            path: spec.path.clone(),
            format: Format::Parquet(spec),
            ctx,
        }
    }

    pub fn csv(spec: CsvSinkSpec, ctx: Arc<SinkContext>) -> Self {
        FileSink {
            path: spec.path.clone(),
            format: Format::Csv(spec),
            ctx,
        }
    }

    fn path_for(&self, chunk: &Chunk) -> PathBuf {
        PathBuf::from(render_path(&self.path, &self.ctx.pipeline, chunk))
    }

    /// A CSV sink fed by a PostgreSQL source with nothing between takes
    /// the server's own CSV (`COPY ... TO STDOUT (FORMAT csv)`) in the
    /// file's options: every type the server prints, byte for byte as
    /// `\copy ... CSV` writes it. Into a code page other than UTF-8 only
    /// for columns record batches cannot write: there a character the code
    /// page lacks fails the chunk with the server's message, where batches
    /// name its row and column. `None` where the file's encoding has no
    /// name on the server.
    fn csv_copy(&self) -> Option<CsvCopy> {
        let (Format::Csv(spec), Some(_)) = (&self.format, &self.ctx.copy) else {
            return None;
        };
        let encoding = CsvCopy::server_encoding(spec.encoding.name())?;
        if encoding != "UTF8" && csv::check_schema(&self.ctx.schema).is_ok() {
            return None;
        }
        Some(CsvCopy {
            header: spec.header,
            delimiter: spec.delimiter,
            null: spec.null.clone(),
            encoding,
        })
    }
}

/// Refuses, before anything is written, the columns Parquet cannot hold
/// (an interval: months, days and microseconds together have no Parquet
/// type; the parquet crate would fail every chunk), naming them and the
/// cast that writes them.
fn check_parquet(schema: &arrow::datatypes::Schema) -> Result<(), EtlError> {
    use arrow::datatypes::{DataType, IntervalUnit};
    fn interval(t: &DataType) -> bool {
        match t {
            DataType::Interval(IntervalUnit::MonthDayNano) => true,
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                interval(f.data_type())
            }
            DataType::Struct(fields) => fields.iter().any(|f| interval(f.data_type())),
            _ => false,
        }
    }
    let bad: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| interval(f.data_type()))
        .map(|f| f.name().as_str())
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(EtlError::Config(format!(
        "the Parquet sink cannot hold interval columns (Parquet has no type for months, days and microseconds together): {}; \
         cast them in `query`, as text (SELECT {first}::text AS {first}) or as seconds (extract(epoch FROM {first}) AS {first}_secs)",
        bad.join(", "),
        first = bad[0]
    )))
}

fn properties(spec: &ParquetSinkSpec) -> WriterProperties {
    {
        let compression = match spec.compression {
            ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::None => Compression::UNCOMPRESSED,
        };
        WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(spec.row_group_rows))
            .set_created_by(format!("etl {}", env!("CARGO_PKG_VERSION")))
            .build()
    }
}

/// The file of a chunk: `{pipeline}`, `{key}`, `{start}` and `{end}`
/// replaced. Times read `20250601T000000Z` (with `.388958` when they have
/// a fraction), a range's bounds its key values; a key keeps letters, digits, `.`, `_` and `-`, and every
/// other byte becomes `%XX`, so no key can leave the folder or collide; the
/// NULL key is `_`, so a key that is `_` alone becomes `%5F`.
pub fn render_path(template: &str, pipeline: &str, chunk: &Chunk) -> String {
    let key = chunk
        .key
        .as_deref()
        .map(escape_key)
        .unwrap_or_else(|| "_".to_string());
    template
        .replace("{pipeline}", pipeline)
        .replace("{key}", &key)
        // A migration's chunk key is its table.
        .replace("{table}", &key)
        .replace("{start}", &path_bound(chunk, chunk.start))
        .replace("{end}", &path_bound(chunk, chunk.end))
}

/// A chunk's bound in a file name: a time, or a range's key value (`min`
/// and `max` for the ends open below and above).
fn path_bound(chunk: &Chunk, value: i64) -> String {
    use etl_base::plan::{Unit, ABOVE, BELOW};
    match chunk.unit {
        Unit::Time if chunk.is_whole() => "all".into(),
        Unit::Time => path_time(value),
        _ if value <= BELOW => "min".into(),
        _ if value >= ABOVE => "max".into(),
        _ => value.to_string(),
    }
}

fn escape_key(key: &str) -> String {
    if key.is_empty() {
        return "%".to_string(); // never a bare empty folder name
    }
    if key == "_" {
        return "%5F".to_string(); // `_` alone is the NULL key's
    }
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'.' | b'_' | b'-') && !(key == "." || key == "..")
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn path_time(micros: i64) -> String {
    let Some(t) = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros) else {
        return micros.to_string();
    };
    let mut s = t.format("%Y%m%dT%H%M%S").to_string();
    let frac = micros.rem_euclid(1_000_000);
    if frac != 0 {
        s.push_str(&format!(".{frac:06}"));
    }
    s.push('Z');
    s
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> EtlError {
    move |source| EtlError::Io { context, source }
}

#[async_trait]
impl Sink for FileSink {
    async fn describe(
        &self,
        chunks: &[Chunk],
        _source: Option<&Rows>,
    ) -> Result<Vec<String>, EtlError> {
        let first = chunks
            .first()
            .map(|c| self.path_for(c).display().to_string())
            .unwrap_or_default();
        let what = match &self.format {
            Format::Parquet(p) => {
                check_parquet(&self.ctx.schema)?;
                format!(
                    "parquet files {} ({} chunk files, {:?} compression, row groups of {} rows)",
                    self.path,
                    chunks.len(),
                    p.compression,
                    p.row_group_rows
                )
            }
            Format::Csv(c) => {
                let copied = match self.csv_copy() {
                    Some(_) => ", the server's CSV as it comes (COPY ... TO STDOUT (FORMAT csv))",
                    None => {
                        csv::check_schema(&self.ctx.schema)?;
                        ""
                    }
                };
                format!(
                    "csv files {} ({} chunk files, {}, delimiter {:?}, NULL as {:?}{}{copied})",
                    self.path,
                    chunks.len(),
                    c.encoding.name(),
                    c.delimiter as char,
                    c.null,
                    if c.header { ", with a header" } else { "" }
                )
            }
        };
        Ok(vec![format!(
            "{what}{}",
            if first.is_empty() {
                String::new()
            } else {
                format!(", first: {first}")
            }
        )])
    }

    fn target(&self, chunk: &Chunk) -> Result<String, EtlError> {
        Ok(self.path_for(chunk).display().to_string())
    }

    fn name(&self) -> String {
        match self.format {
            Format::Parquet(_) => format!("parquet {}", self.path),
            Format::Csv(_) => format!("csv {}", self.path),
        }
    }

    fn verifiable(&self) -> Option<&dyn Verifiable> {
        Some(self)
    }

    /// Each chunk makes its own file; before the first, the columns are
    /// checked against what the format holds, so a column it cannot hold
    /// stops the run before anything is written, not chunk after chunk.
    async fn prepare(&self, _chunks: &[Chunk], _truncate: bool) -> Result<(), EtlError> {
        match (&self.format, self.csv_copy()) {
            (Format::Parquet(_), _) => check_parquet(&self.ctx.schema),
            (Format::Csv(_), None) => csv::check_schema(&self.ctx.schema),
            (Format::Csv(_), Some(_)) => Ok(()),
        }
    }

    async fn begin(
        &self,
        chunk: &Chunk,
        _redo: bool,
    ) -> Result<Option<Box<dyn ChunkWriter>>, EtlError> {
        let path = self.path_for(chunk);
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(io(format!("creating folder {}", dir.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let file = File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        let encoder = match &self.format {
            Format::Parquet(spec) => {
                let writer =
                    ArrowWriter::try_new(file, self.ctx.schema.clone(), Some(properties(spec)))
                        .map_err(|e| {
                            EtlError::Config(format!(
                                "cannot write chunk {chunk} as Parquet to {}: {e}",
                                path.display()
                            ))
                        })?;
                Encoder::Parquet(Box::new(writer), properties(spec))
            }
            Format::Csv(spec) => {
                // The columns were checked once, in prepare.
                Encoder::Csv(csv::CsvEncoder::new(spec.clone(), file, path.clone())?)
            }
        };
        // Wide rows keyed per chunk lack the key column: the file says it.
        let key = match (&self.ctx.wide, &self.ctx.chunking.key_column) {
            (Some(_), Some(column)) => Some(etl_model::wide::ChunkKey {
                column: column.clone(),
                value: chunk.key.clone(),
            }),
            _ => None,
        };
        Ok(Some(Box::new(FileChunkWriter {
            key,
            encoder: Some(encoder),
            schema: self.ctx.schema.clone(),
            tmp,
            path,
            dir,
            rows: 0,
            copy: self.csv_copy(),
        })))
    }
}

#[async_trait]
impl Verifiable for FileSink {
    async fn basis(&self, chunk: &Chunk) -> Result<Basis, EtlError> {
        if self.ctx.wide.is_some() {
            return Err(EtlError::Config(
                "etl verify checks a pivot's PostgreSQL wide tables; its Parquet files are not compared yet"
                    .into(),
            ));
        }
        let format = match &self.format {
            Format::Parquet(_) => FileFormat::Parquet,
            Format::Csv(spec) => {
                csv::check_schema(&self.ctx.schema).map_err(|e| match self.csv_copy() {
                    Some(_) => EtlError::Config(format!(
                        "etl verify reads a CSV file back as record batches, and this one was written as the server prints its rows (COPY ... CSV), with columns record batches do not carry: {e}; it is not compared yet (compare it with psql's \\copy, or verify a Parquet sink of the same pipeline)"
                    )),
                    None => e,
                })?;
                let bytes: Vec<&str> = self
                    .ctx
                    .schema
                    .fields()
                    .iter()
                    .filter(|f| {
                        matches!(
                            f.data_type(),
                            arrow::datatypes::DataType::Binary
                                | arrow::datatypes::DataType::LargeBinary
                        )
                    })
                    .map(|f| f.name().as_str())
                    .collect();
                if !bytes.is_empty() {
                    return Err(EtlError::Config(format!(
                        "etl verify reads a CSV file back through the CSV source, which does not read bytes (bytea, written as \\x and hex) yet: columns {}; the file is not compared (verify a Parquet sink of the same pipeline)",
                        bytes.join(", ")
                    )));
                }
                FileFormat::Csv {
                    encoding: spec.encoding,
                    header: spec.header,
                    delimiter: spec.delimiter,
                    null: spec.null.clone(),
                }
            }
        };
        Ok(Basis::File(WrittenFile {
            path: self.path_for(chunk),
            schema: self.ctx.schema.clone(),
            format,
        }))
    }
}

/// A chunk's file as it is written.
enum Encoder {
    Parquet(Box<ArrowWriter<File>>, WriterProperties),
    Csv(csv::CsvEncoder),
}

struct FileChunkWriter {
    /// The chunk's key, written into the schema of rows that lack its column.
    key: Option<etl_model::wide::ChunkKey>,
    encoder: Option<Encoder>,
    /// The file's columns (a pivot's chunk starts the file over with its own).
    schema: arrow::datatypes::SchemaRef,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    rows: u64,
    /// The server's CSV this writer takes, when its source gives it.
    copy: Option<CsvCopy>,
}

/// A writer dropped without commit removes its temporary file.
impl Drop for FileChunkWriter {
    fn drop(&mut self) {
        if self.encoder.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[async_trait]
impl ChunkWriter for FileChunkWriter {
    fn can_copy(&self) -> bool {
        self.copy.is_some()
    }

    fn copy_csv(&self) -> Option<CsvCopy> {
        self.copy.clone()
    }

    fn start_copy(&mut self) {
        if let Some(Encoder::Csv(c)) = &mut self.encoder {
            c.start_copy();
        }
    }

    async fn write_copy(&mut self, data: bytes::Bytes) -> Result<(), EtlError> {
        match &mut self.encoder {
            Some(Encoder::Csv(c)) if self.copy.is_some() => c.write_copy(&data),
            _ => Err(EtlError::Bug(
                "COPY data sent to a file writer that did not ask for it".into(),
            )),
        }
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<(), EtlError> {
        // Checked at begin unless the server's CSV was to come; batches
        // came instead (another sink of the chunk takes no CSV).
        if self.rows == 0 && self.copy.is_some() && matches!(self.encoder, Some(Encoder::Csv(_))) {
            csv::check_schema(&batch.schema())?;
        }
        let marked;
        let batch = match &self.key {
            Some(key) if batch.schema().column_with_name(&key.column).is_none() => {
                marked = batch
                    .clone()
                    .with_schema(Arc::new(key.mark(&batch.schema())))
                    .map_err(|e| EtlError::Bug(format!("marking a chunk's key: {e}")))?;
                &marked
            }
            _ => batch,
        };
        // A pivot's chunks each have their own columns (its channels): the
        // file starts over with the first batch's schema.
        if self.rows == 0 && self.schema != batch.schema() {
            self.schema = batch.schema();
            if let Some(Encoder::Parquet(_, properties)) = &self.encoder {
                let properties = properties.clone();
                let file = File::create(&self.tmp)
                    .map_err(io(format!("creating {}", self.tmp.display())))?;
                let writer = ArrowWriter::try_new(file, batch.schema(), Some(properties.clone()))
                    .map_err(|e| {
                    EtlError::Config(format!(
                        "cannot write {} as Parquet: {e}",
                        self.tmp.display()
                    ))
                })?;
                self.encoder = Some(Encoder::Parquet(Box::new(writer), properties));
            }
        }
        match self
            .encoder
            .as_mut()
            .expect("write is not called after commit")
        {
            Encoder::Parquet(writer, _) => writer.write(batch).map_err(|e| EtlError::Io {
                context: format!("writing {}", self.tmp.display()),
                source: std::io::Error::other(e),
            })?,
            Encoder::Csv(c) => c.write(batch)?,
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<ChunkStats, EtlError> {
        let encoder = self.encoder.take().expect("commit is called once");
        let tmp = self.tmp.clone();
        let schema = self.schema.clone();
        let finish = || -> Result<(), EtlError> {
            let file = match encoder {
                Encoder::Parquet(writer, _) => writer.into_inner().map_err(|e| EtlError::Io {
                    context: format!("finishing {}", tmp.display()),
                    source: std::io::Error::other(e),
                })?,
                Encoder::Csv(c) => c.finish(&schema)?,
            };
            file.sync_all()
                .map_err(io(format!("fsyncing {}", tmp.display())))?;
            std::fs::rename(&tmp, &self.path).map_err(io(format!(
                "renaming {} to {}",
                tmp.display(),
                self.path.display()
            )))?;
            sync_dir(&self.dir);
            Ok(())
        };
        if let Err(e) = finish() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        Ok(ChunkStats {
            rows: self.rows,
            bytes,
        })
    }
}

/// Makes a rename durable: fsync the directory that holds the new name.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_safe_and_distinct() {
        let chunk = |key: Option<&str>| {
            Chunk::window(
                key.map(str::to_string),
                1_748_736_000_000_000,
                1_748_822_400_388_958,
            )
        };
        let t = "staging/{pipeline}/{key}/{start}_{end}.parquet";
        assert_eq!(
            render_path(t, "p", &chunk(Some("IMO9986063"))),
            "staging/p/IMO9986063/20250601T000000Z_20250602T000000.388958Z.parquet"
        );
        assert_eq!(
            render_path(t, "p", &chunk(Some("../etc"))),
            "staging/p/..%2Fetc/20250601T000000Z_20250602T000000.388958Z.parquet"
        );
        assert_eq!(
            render_path(t, "p", &chunk(Some(".."))),
            "staging/p/%2E%2E/20250601T000000Z_20250602T000000.388958Z.parquet"
        );
        assert_eq!(
            render_path(t, "p", &chunk(Some("a b/ç"))),
            "staging/p/a%20b%2F%C3%A7/20250601T000000Z_20250602T000000.388958Z.parquet"
        );
        assert_eq!(
            render_path(t, "p", &chunk(None)),
            "staging/p/_/20250601T000000Z_20250602T000000.388958Z.parquet"
        );
        // The key "_" and the NULL key do not share a file (they did).
        assert_eq!(
            render_path(t, "p", &chunk(Some("_"))),
            "staging/p/%5F/20250601T000000Z_20250602T000000.388958Z.parquet"
        );
        assert_ne!(
            render_path(t, "p", &chunk(Some(""))),
            render_path(t, "p", &chunk(None))
        );
        // A range of a key column: its values, open ends named.
        let r = "out/t_{start}_{end}.csv";
        use etl_base::plan::{ABOVE, BELOW};
        assert_eq!(
            render_path(r, "p", &Chunk::range(None, BELOW, -5)),
            "out/t_min_-5.csv"
        );
        assert_eq!(
            render_path(r, "p", &Chunk::range(None, 10, ABOVE)),
            "out/t_10_max.csv"
        );
    }
}
