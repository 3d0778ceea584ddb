//! CSV files: one file or a glob of them, in any ASCII-compatible code page
//! (CP949 first), read as PostgreSQL's `COPY ... CSV` reads them, so a
//! file loads exactly as `\copy` would load it ([`parse`]). Types come from
//! `[source.columns]` or a sample ([`types`]). A file is cut into byte
//! ranges that start at records (found by one scan that respects quotes,
//! `ranges`), each a chunk on the workers with its row count, recorded in the ledger
//! like every chunk: a killed load resumes, a failed range reruns. The
//! chunk's key is the file's stem (`{file}` in the sink's table); with
//! `{file}` each file can be a source of its own ([`CsvSource::per_file`]).
//! With `[chunks] time_column` the chunks are time windows instead
//! ([`windows`]).
//!
//! A line that does not parse (wrong number of fields, a value its type
//! cannot read) fails its chunk with file, line and column, or with
//! `on_bad_line = "skip"` goes to the reject file with its line number and
//! reason, counted, and the run exits 3.

pub mod config;
pub mod parse;
mod ranges;
mod read;
#[cfg(test)]
mod tests;
pub mod types;
pub mod windows;

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use encoding_rs::Encoding;

use self::parse::{Dialect, Scanner};
use self::read::{span_reader, ChunkBatches, RangeReader, WindowReads};
use self::types::ColType;
use super::{BatchStream, Source, SourceCounts};
use etl_base::plan::{Chunk, Plan, Unit};
use etl_model::Chunking;
use etl_pg::error::EtlError;

/// Records sampled for type inference.
const SAMPLE_ROWS: usize = 10_000;
/// Bytes read from the file at a time.
// (Tiny in unit tests, so records straddle the reads.)
const BLOCK: usize = if cfg!(test) { 61 } else { 1 << 20 };

pub use etl_base::compression::Compression;

/// A file's stem without its compression and CSV extensions:
/// `orders.csv.gz` -> `orders`.
pub fn stem(path: &Path) -> String {
    let mut p = path.to_path_buf();
    if Compression::of(&p) != Compression::None {
        p = p.with_extension("");
    }
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The file's bytes, decompressed when its name says so.
fn open_read(path: &Path) -> Result<Box<dyn Read + Send>, EtlError> {
    let file = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    Ok(match Compression::of(path) {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            file,
        ))),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(file)
                .map_err(io(format!("reading {} as zstd", path.display())))?,
        ),
    })
}

/// What to do with a line that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBadLine {
    #[default]
    Fail,
    Skip,
}

/// A CSV source whose settings make sense.
#[derive(Debug, Clone)]
pub struct CsvSpec {
    pub pattern: String,
    pub encoding: &'static Encoding,
    pub replace_invalid: bool,
    pub header: bool,
    pub dialect: Dialect,
    /// Unquoted fields equal to it are NULL.
    pub null: String,
    pub columns: Vec<(String, ColType)>,
    pub on_bad_line: OnBadLine,
    pub batch_rows: usize,
    /// Where rejected lines go (`on_bad_line = "skip"`).
    pub rejects: PathBuf,
    /// Time windows (`[chunks] time_column`) in place of byte ranges.
    pub windows: Option<windows::WindowSpec>,
}

#[derive(Debug)]
struct CsvFile {
    stem: String,
    path: PathBuf,
    /// Where the first record after the header starts, and its line.
    data_start: u64,
    data_line: u64,
    size: u64,
    /// A compressed file is one chunk, read from its start.
    compressed: bool,
}

pub struct CsvSource {
    spec: CsvSpec,
    files: Vec<CsvFile>,
    schema: SchemaRef,
    types: Vec<ColType>,
    /// Header names that were changed to be usable: (header, column).
    pub renamed: Vec<(String, String)>,
    /// The line each planned range starts on, by (stem, byte).
    lines: Mutex<HashMap<(String, i64), u64>>,
    bytes_read: Arc<AtomicU64>,
    counts: Arc<Mutex<SourceCounts>>,
    rejects: Arc<Mutex<read::Rejects>>,
    /// The spans of each window, from the last plan (or the first open).
    windows: Mutex<Option<Arc<windows::WindowPlan>>>,
}

/// The files `spec.pattern` matches, in name order; refused when none
/// does, or two share a stem (it names a file's chunks and its table).
fn matched(spec: &CsvSpec) -> Result<Vec<PathBuf>, EtlError> {
    let paths = crate::files_matching(&spec.pattern)?;
    let mut seen: HashMap<String, &PathBuf> = HashMap::new();
    for path in &paths {
        let stem = stem(path);
        if let Some(other) = seen.insert(stem.clone(), path) {
            return Err(EtlError::Config(format!(
                "{} and {} have the same name {stem:?}, which names a file's chunks and its {{file}} table; rename one or narrow source.path",
                other.display(),
                path.display()
            )));
        }
    }
    Ok(paths)
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> EtlError {
    move |source| EtlError::Io { context, source }
}

impl CsvSource {
    /// Finds the files, reads each header, and settles the columns'
    /// types (from `[source.columns]`, else a sample of the first file).
    /// Every file has the same columns.
    pub fn build(spec: &CsvSpec) -> Result<CsvSource, EtlError> {
        Self::of_files(spec, matched(spec)?, Arc::default(), true)
    }

    /// Each file of the glob as a source of its own, with its own header
    /// and types (a `[source.columns]` type applies to the files that have
    /// the column), sharing one reject file: a glob whose files each load
    /// into a table of their own (`{file}` in the sink's table).
    pub fn per_file(spec: &CsvSpec) -> Result<Vec<CsvSource>, EtlError> {
        let rejects: Arc<Mutex<read::Rejects>> = Arc::default();
        let sources = matched(spec)?
            .into_iter()
            .map(|path| Self::of_files(spec, vec![path], rejects.clone(), false))
            .collect::<Result<Vec<_>, _>>()?;
        for (named, _) in &spec.columns {
            if !sources
                .iter()
                .any(|s| s.schema.field_with_name(named).is_ok())
            {
                return Err(EtlError::Config(format!(
                    "[source.columns] names {named:?}, which is not a column of any file of {}",
                    spec.pattern
                )));
            }
        }
        Ok(sources)
    }

    /// `paths` read as one source; with `every_column`, each
    /// `[source.columns]` name must be one of their columns.
    fn of_files(
        spec: &CsvSpec,
        paths: Vec<PathBuf>,
        rejects: Arc<Mutex<read::Rejects>>,
        every_column: bool,
    ) -> Result<CsvSource, EtlError> {
        let mut files = Vec::new();
        let mut header: Option<(PathBuf, Vec<String>)> = None;
        let mut sample: Vec<Vec<Option<String>>> = Vec::new();
        for path in paths {
            let (file, names) = open_file(spec, path, &mut sample)?;
            match (&header, names) {
                (None, Some(n)) => header = Some((file.path.clone(), n)),
                (Some((first, h)), Some(n)) if *h != n => {
                    return Err(EtlError::Config(format!(
                        "the header of {} ({}) differs from that of {} ({}); the files of one source share their columns unless each loads into a table of its own: put {{file}} in the PostgreSQL sink's table (table = \"import.{{file}}\")",
                        file.path.display(),
                        n.join(","),
                        first.display(),
                        h.join(",")
                    )))
                }
                _ => {}
            }
            files.push(file);
        }
        let Columns {
            names,
            renamed,
            types,
        } = columns(spec, header.map(|(_, h)| h), &sample, every_column)?;
        let schema = Arc::new(Schema::new(
            names
                .iter()
                .zip(&types)
                .map(|(n, t)| Field::new(n, t.arrow(), true))
                .collect::<Vec<_>>(),
        ));
        Ok(CsvSource {
            spec: spec.clone(),
            files,
            schema,
            types,
            renamed,
            lines: Mutex::new(HashMap::new()),
            bytes_read: Arc::new(AtomicU64::new(0)),
            counts: Arc::new(Mutex::new(SourceCounts::default())),
            rejects,
            windows: Mutex::new(None),
        })
    }

    /// The files this source reads.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }

    /// Each column with its type and where the type came from, for `etl plan`.
    fn columns_described(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .zip(self.types_described())
            .map(|(f, t)| format!("{} {t}", f.name()))
            .collect()
    }

    /// Each column's type and where it came from (`bigint inferred`, `text
    /// from [source.columns]`, the header when it was renamed).
    pub fn types_described(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .zip(&self.types)
            .map(|(f, t)| {
                let given = self.spec.columns.iter().any(|(c, _)| c == f.name());
                let renamed = self
                    .renamed
                    .iter()
                    .find(|(_, n)| n == f.name())
                    .map(|(h, _)| format!(" (header {h:?})"))
                    .unwrap_or_default();
                format!(
                    "{}{}{renamed}",
                    t.name(),
                    if given {
                        " from [source.columns]"
                    } else {
                        " inferred"
                    }
                )
            })
            .collect()
    }

    fn file(&self, chunk: &Chunk) -> Result<&CsvFile, EtlError> {
        self.files
            .iter()
            .find(|f| Some(&f.stem) == chunk.key.as_ref())
            .ok_or_else(|| {
                EtlError::Changed(format!(
                    "chunk {chunk} names no file of {}; its files are {}",
                    self.spec.pattern,
                    self.files
                        .iter()
                        .map(|f| f.stem.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// The batches of a chunk read through `reader`.
    fn batches(&self, reader: RangeReader, stem: String, chunk: &Chunk) -> ChunkBatches {
        ChunkBatches {
            reader,
            chunk: chunk.to_string(),
            spec: self.spec.clone(),
            schema: self.schema.clone(),
            types: self.types.clone(),
            stem,
            rejected: Vec::new(),
            counts: self.counts.clone(),
            rejects: self.rejects.clone(),
            values: Vec::with_capacity(self.types.len()),
            window: None,
        }
    }

    /// A time window: the spans the plan found for it, each record kept
    /// when it is the window's (a rerun without a plan scans first).
    fn open_window(&self, w: &windows::WindowSpec, chunk: &Chunk) -> Result<BatchStream, EtlError> {
        let planned = self
            .windows
            .lock()
            .expect("no panic while holding the lock")
            .clone();
        let found = match planned {
            Some(p) => p,
            None => {
                let p = Arc::new(windows::scan(self, w, w.interval, w.start, w.end)?);
                *self
                    .windows
                    .lock()
                    .expect("no panic while holding the lock") = Some(p.clone());
                p
            }
        };
        let columns = windows::Columns::of(self, w)?;
        let Some((spans, filter)) = windows::chunk_reads(&found, columns, chunk) else {
            return Err(EtlError::Changed(format!(
                "chunk {chunk} is not a window of {} in [chunks] time_column {:?} (its rows are gone, or the interval or start changed since it was planned); run etl plan again",
                self.spec.pattern, w.time_column
            )));
        };
        let mut spans: VecDeque<_> = spans
            .into_iter()
            .map(|s| {
                let f = &self.files[s.file];
                (s, f.path.clone(), f.compressed && self.spec.header)
            })
            .collect();
        let (first, path, header) = spans.pop_front().expect("a planned window has a span");
        let reader = span_reader(&self.spec, first, &path, header)?;
        self.bytes_read.fetch_add(
            first.end - first.start + spans.iter().map(|(s, ..)| s.end - s.start).sum::<u64>(),
            Ordering::Relaxed,
        );
        let mut batches = self.batches(reader, chunk.to_string(), chunk);
        batches.window = Some(WindowReads {
            filter,
            file: first.file,
            spans,
            replaced: 0,
        });
        Ok(Box::pin(futures_util::stream::iter(super::Batches::new(
            batches,
        ))))
    }

    /// The line at byte `at` of `file`: planned, or counted from the start.
    fn line_at(&self, file: &CsvFile, at: u64) -> Result<u64, EtlError> {
        if at == file.data_start {
            return Ok(file.data_line);
        }
        if let Some(l) = self
            .lines
            .lock()
            .expect("no panic while holding the lock")
            .get(&(file.stem.clone(), at as i64))
        {
            return Ok(*l);
        }
        let mut f =
            File::open(&file.path).map_err(io(format!("opening {}", file.path.display())))?;
        let mut left = at;
        let mut lines = 1;
        // (on the heap: 1 MiB outside unit tests)
        #[allow(clippy::useless_vec)]
        let mut buf = vec![0u8; BLOCK];
        while left > 0 {
            let n = f
                .read(&mut buf[..(left.min(BLOCK as u64) as usize)])
                .map_err(io(format!("reading {}", file.path.display())))?;
            if n == 0 {
                break;
            }
            lines += newlines(&buf[..n]);
            left -= n as u64;
        }
        Ok(lines)
    }
}

#[async_trait]
impl Source for CsvSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn primary_key(&self) -> &[String] {
        &[]
    }

    fn describe(&self) -> Vec<String> {
        self.columns_described()
    }

    /// One scan of each file: a range ends at the record boundary after
    /// every `range_rows` records.
    async fn plan(&self, chunking: &Chunking) -> Result<Plan, EtlError> {
        if let Some(w) = &self.spec.windows {
            let found = windows::scan(self, w, chunking.interval, chunking.start, chunking.end)?;
            let plan = windows::plan(&found);
            *self
                .windows
                .lock()
                .expect("no panic while holding the lock") = Some(Arc::new(found));
            return Ok(plan);
        }
        self.ranges(chunking.range_rows)
    }

    async fn open(&self, chunk: &Chunk) -> Result<BatchStream, EtlError> {
        if let (Some(w), Unit::Time) = (&self.spec.windows, chunk.unit) {
            return self.open_window(w, chunk);
        }
        if chunk.unit != Unit::Key {
            return Err(EtlError::Config(format!(
                "chunk {chunk} is not a byte range of a CSV file; a CSV source runs ranges of its files"
            )));
        }
        let file = self.file(chunk)?;
        let (start, end) = (chunk.start as u64, (chunk.end as u64).min(file.size));
        if start < file.data_start || start > end {
            return Err(EtlError::Changed(format!(
                "chunk {chunk} is outside the records of {} (bytes {} to {}): the file changed since the plan; run etl plan again",
                file.path.display(),
                file.data_start,
                file.size
            )));
        }
        if file.compressed && (start != 0 || end != file.size) {
            return Err(EtlError::Changed(format!(
                "chunk {chunk} is part of compressed file {}, which runs whole (bytes 0 to {}): the file changed since the plan; run etl plan again",
                file.path.display(),
                file.size
            )));
        }
        let line = self.line_at(file, start)?;
        let mut reader = RangeReader::new(&self.spec, &file.path, start, end, line)?;
        if file.compressed && self.spec.header {
            reader.next_record()?;
        }
        self.bytes_read.fetch_add(end - start, Ordering::Relaxed);
        let batches = self.batches(reader, file.stem.clone(), chunk);
        Ok(Box::pin(futures_util::stream::iter(super::Batches::new(
            batches,
        ))))
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    fn counts(&self) -> SourceCounts {
        self.counts
            .lock()
            .expect("no panic while holding the lock")
            .clone()
    }
}

/// A whole file in the given types, as the CSV sink wrote it (quote `"`,
/// no comments), for reading it back.
pub fn read_file(
    path: &Path,
    encoding: &'static Encoding,
    header: bool,
    delimiter: u8,
    null: &str,
    types: &[ColType],
) -> Result<impl Iterator<Item = Result<RecordBatch, EtlError>>, EtlError> {
    let spec = CsvSpec {
        pattern: path.display().to_string(),
        encoding,
        replace_invalid: false,
        header,
        dialect: Dialect {
            delimiter,
            quote: b'"',
            escape: b'"',
            comment: None,
        },
        null: null.to_string(),
        columns: Vec::new(),
        on_bad_line: OnBadLine::Fail,
        batch_rows: 65_536,
        rejects: PathBuf::new(),
        windows: None,
    };
    let size = std::fs::metadata(path)
        .map_err(io(format!("reading {}", path.display())))?
        .len();
    let compressed = Compression::of(path) != Compression::None;
    let (start, line) = if header && !compressed {
        header_end(spec.dialect, path, size)?
    } else {
        (0, 1)
    };
    let mut reader = RangeReader::new(&spec, path, start, size, line)?;
    if header && compressed {
        reader.next_record()?;
    }
    let schema = Arc::new(Schema::new(
        types
            .iter()
            .enumerate()
            .map(|(i, t)| Field::new(format!("c{i}"), t.arrow(), true))
            .collect::<Vec<_>>(),
    ));
    Ok(super::Batches::new(ChunkBatches {
        reader,
        spec,
        schema,
        types: types.to_vec(),
        stem: path.display().to_string(),
        chunk: String::new(),
        rejected: Vec::new(),
        counts: Arc::new(Mutex::new(SourceCounts::default())),
        rejects: Arc::default(),
        values: Vec::with_capacity(types.len()),
        window: None,
    }))
}

/// Where the first record (the header) ends in the raw bytes of `path`,
/// and the line after it: found by the same scan that cuts ranges.
fn header_end(d: Dialect, path: &Path, size: u64) -> Result<(u64, u64), EtlError> {
    let mut f = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut scanner = Scanner::new(d);
    let mut buf = vec![0u8; 64 << 10];
    let (mut pos, mut lines) = (0u64, 1u64);
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            return Ok((size, lines));
        }
        let mut end = None;
        scanner.scan(&buf[..n], |i| {
            if end.is_none() {
                end = Some(i);
            }
        });
        if let Some(i) = end {
            lines += newlines(&buf[..=i]);
            return Ok((pos + i as u64 + 1, lines));
        }
        lines += newlines(&buf[..n]);
        pos += n as u64;
    }
}

/// Reads `reader` to its end in blocks of [`BLOCK`] bytes, each handed to
/// `f`: the one read loop of the plan's scans.
fn each_block(
    reader: &mut impl Read,
    path: &Path,
    mut f: impl FnMut(&[u8]),
) -> Result<(), EtlError> {
    // (on the heap: 1 MiB outside unit tests)
    #[allow(clippy::useless_vec)]
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            return Ok(());
        }
        f(&buf[..n]);
    }
}

/// The line feeds in `bytes`.
fn newlines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

/// One file of a source: where its data starts (past the header), its
/// header's names (`None`: no header, or an empty file), and its first
/// records added to `sample` until it holds [`SAMPLE_ROWS`].
fn open_file(
    spec: &CsvSpec,
    path: PathBuf,
    sample: &mut Vec<Vec<Option<String>>>,
) -> Result<(CsvFile, Option<Vec<String>>), EtlError> {
    let compressed = Compression::of(&path) != Compression::None;
    let size = std::fs::metadata(&path)
        .map_err(io(format!("reading {}", path.display())))?
        .len();
    let mut reader = RangeReader::new(spec, &path, 0, size, 1)?;
    let texts = |record: parse::Record| record.fields.into_iter().map(|f| f.text).collect();
    let (data_start, data_line, names) = match spec.header {
        false => (0, 1, None),
        true => match reader.next_record()? {
            // A compressed file is read from its start, header and all.
            Some((record, _)) if compressed => (0, 1, Some(texts(record))),
            Some((record, _)) => {
                let (start, line) = header_end(spec.dialect, &path, size)?;
                (start, line, Some(texts(record)))
            }
            None => (size, 1, None),
        },
    };
    while sample.len() < SAMPLE_ROWS {
        let Some((record, _)) = reader.next_record()? else {
            break;
        };
        sample.push(
            record
                .fields
                .into_iter()
                .map(|f| (f.quoted || f.text != spec.null).then_some(f.text))
                .collect(),
        );
    }
    let file = CsvFile {
        stem: stem(&path),
        path,
        data_start,
        data_line,
        size,
        compressed,
    };
    Ok((file, names))
}

/// The source's columns: the header's names (or `column_N` for the
/// widest sampled record), made fit for PostgreSQL (`renamed`: those
/// changed), each of the type `[source.columns]` gives it or else the one
/// its sampled values fit; with `every_column`, each `[source.columns]`
/// name must be one of them.
fn columns(
    spec: &CsvSpec,
    header: Option<Vec<String>>,
    sample: &[Vec<Option<String>>],
    every_column: bool,
) -> Result<Columns, EtlError> {
    let header_names = header.unwrap_or_else(|| {
        let n = sample.iter().map(Vec::len).max().unwrap_or(0);
        (1..=n).map(|i| format!("column_{i}")).collect()
    });
    if header_names.is_empty() {
        return Err(EtlError::Config(format!(
            "{} holds no header and no record; nothing to load",
            spec.pattern
        )));
    }
    let (names, renamed) = types::column_names(&header_names);
    for (named, _) in &spec.columns {
        if every_column && !names.contains(named) {
            return Err(EtlError::Config(format!(
                "[source.columns] names {named:?}, which is not a column of {}; its columns are {}",
                spec.pattern,
                names.join(", ")
            )));
        }
    }
    let inferred = types::infer(names.len(), sample.iter().map(|r| r.as_slice()));
    let types = names
        .iter()
        .zip(inferred)
        .map(|(n, t)| {
            spec.columns
                .iter()
                .find(|(c, _)| c == n)
                .map_or(t, |(_, given)| *given)
        })
        .collect();
    Ok(Columns {
        names,
        renamed,
        types,
    })
}

/// A source's columns: names, those renamed (header, name), and types.
struct Columns {
    names: Vec<String>,
    renamed: Vec<(String, String)>,
    types: Vec<ColType>,
}
