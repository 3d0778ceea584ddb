//! Time windows over CSV files (`[chunks] time_column`, optionally per
//! `key_column`), as every other source cuts its rows.
//!
//! A file cannot be asked for the rows of one window, so the plan reads the
//! time (and key) of every record once and keeps, for each (key, window),
//! the byte spans of the files that hold its records: a file in time order
//! gives one span per window, an interleaved or unordered one gives more
//! (spans closer than [`GAP`] are merged). A chunk reads its spans and
//! keeps the records of its window and key; the others belong to other
//! chunks.
//!
//! Records whose time cannot be read (a wrong number of fields, a value
//! that is not a time) belong to no window. With `on_bad_line = "fail"`
//! the first fails the plan, before anything is written (fixed, its row
//! may belong to any window). With `"skip"` each is given to the chunk of
//! the record before it in its file (or after it, at the file's start),
//! which alone rejects it, once. A NULL time is in no chunk and counted as outside, as for the
//! other sources.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use super::parse::{Found, Parser, Record, Scanner};
use super::types::{self, ColType, Value};
use super::{io, newlines, open_read, CsvSource, OnBadLine};
use etl_base::plan::{Chunk, Plan, PlannedChunk};
use etl_base::time::Micros;
use etl_pg::error::EtlError;

/// Spans of one window closer than this are read as one (the records in
/// between are parsed and passed over).
const GAP: u64 = 256 * 1024;

/// `[chunks]` as a CSV source with time windows reads it.
#[derive(Debug, Clone)]
pub struct WindowSpec {
    pub time_column: String,
    pub key_column: Option<String>,
    pub interval: Micros,
    pub start: Option<Micros>,
    pub end: Option<Micros>,
}

/// Bytes `[start, end)` of file `file`, starting on line `line`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub file: usize,
    pub start: u64,
    pub end: u64,
    pub line: u64,
}

/// What one window's chunk reads.
#[derive(Debug, Default)]
pub struct WindowChunk {
    pub spans: Vec<Span>,
    pub rows: u64,
    /// The unreadable records this chunk answers for: (file, line).
    pub bad: HashSet<(usize, u64)>,
}

/// The windows of every file, from one scan.
#[derive(Debug, Default)]
pub struct WindowPlan {
    pub chunks: HashMap<(Option<String>, Micros), WindowChunk>,
    pub outside: u64,
    /// (interval, origin, lower, upper) it was made with.
    pub made_with: (Micros, Micros, Micros, Micros),
}

impl WindowChunk {
    fn add(&mut self, span: Span) {
        match self.spans.last_mut() {
            Some(last) if last.file == span.file && span.start <= last.end + GAP => {
                last.end = last.end.max(span.end);
            }
            _ => self.spans.push(span),
        }
    }
}

/// Where the time and key of a record are, and how to read them.
#[derive(Debug, Clone)]
pub struct Columns {
    pub time: usize,
    pub time_type: ColType,
    pub key: Option<usize>,
    pub width: usize,
    null: String,
}

/// What a record is to a window.
pub enum Class {
    /// In (key, window start).
    In(Option<String>, Micros),
    /// A NULL time: in no window.
    NoTime,
    /// Its time cannot be read (why): the chunk that owns it reports it.
    Bad(String),
}

impl Columns {
    /// The time and key columns of `source`, checked.
    pub fn of(source: &CsvSource, w: &WindowSpec) -> Result<Columns, EtlError> {
        let names: Vec<&str> = source
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let find = |key: &str, name: &str| {
            names.iter().position(|n| *n == name).ok_or_else(|| {
                EtlError::Config(format!(
                    "chunks.{key} {name:?} is not a column of {}; its columns are {}",
                    source.spec.pattern,
                    names.join(", ")
                ))
            })
        };
        let time = find("time_column", &w.time_column)?;
        let time_type = source.types[time];
        if !matches!(
            time_type,
            ColType::Timestamp | ColType::Timestamptz | ColType::Date
        ) {
            return Err(EtlError::Config(format!(
                "chunks.time_column {:?} of {} is read as {}, not a time; set its type in [source.columns]: {:?} = \"timestamptz\" (or \"timestamp\", \"date\")",
                w.time_column,
                source.spec.pattern,
                time_type.name(),
                w.time_column
            )));
        }
        let key = w
            .key_column
            .as_deref()
            .map(|k| find("key_column", k))
            .transpose()?;
        Ok(Columns {
            time,
            time_type,
            key,
            width: names.len(),
            null: source.spec.null.clone(),
        })
    }

    /// The record's time in µs, `Ok(None)` when NULL.
    fn time(&self, record: &Record) -> Result<Option<Micros>, ()> {
        let f = record.fields.get(self.time).ok_or(())?;
        if !f.quoted && f.text == self.null {
            return Ok(None);
        }
        match types::parse(self.time_type, &f.text) {
            Ok(Value::I64(v)) if self.time_type == ColType::Date => {
                Ok(Some(v.saturating_mul(86_400_000_000)))
            }
            Ok(Value::I64(v)) => Ok(Some(v)),
            _ => Err(()),
        }
    }

    /// The record's key as chunk keys hold it.
    fn key(&self, record: &Record) -> Option<String> {
        let f = &record.fields[self.key?];
        (f.quoted || f.text != self.null).then(|| f.text.clone())
    }

    /// Where the record belongs, windows cut every `interval` from `origin`.
    pub fn class(&self, record: &Record, interval: Micros, origin: Micros) -> (Class, Micros) {
        let got = record.fields.len();
        if got != self.width {
            let why = format!(
                "{got} field{} where the header has {}",
                if got == 1 { "" } else { "s" },
                self.width
            );
            return (Class::Bad(why), 0);
        }
        match self.time(record) {
            Err(()) => {
                let f = &record.fields[self.time];
                let why = format!(
                    "the time column's value {:?} is not a {}",
                    f.text.chars().take(60).collect::<String>(),
                    self.time_type.name()
                );
                (Class::Bad(why), 0)
            }
            Ok(None) => (Class::NoTime, 0),
            Ok(Some(t)) => {
                let window = etl_base::plan::window_start(t, origin, interval);
                (Class::In(self.key(record), window), t)
            }
        }
    }

    /// Whether the record is one of `chunk`'s rows.
    pub fn in_chunk(&self, record: &Record, chunk: &Chunk) -> Option<bool> {
        if record.fields.len() != self.width {
            return None;
        }
        match self.time(record) {
            Err(()) => None,
            Ok(None) => Some(false),
            Ok(Some(t)) => Some(
                t >= chunk.start
                    && t < chunk.end
                    && (self.key.is_none() || self.key(record) == chunk.key),
            ),
        }
    }
}

/// Reads every file once and finds each window's spans.
pub fn scan(
    source: &CsvSource,
    w: &WindowSpec,
    interval: Micros,
    start: Option<Micros>,
    end: Option<Micros>,
) -> Result<WindowPlan, EtlError> {
    let columns = Columns::of(source, w)?;
    let origin = start.unwrap_or(0);
    let (lower, upper) = (start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX));
    let mut out = WindowPlan {
        made_with: (interval, origin, lower, upper),
        ..Default::default()
    };
    let spec = &source.spec;
    for (fi, file) in source.files.iter().enumerate() {
        let mut f: Box<dyn Read + Send> = if file.compressed {
            open_read(&file.path)?
        } else {
            let mut f = std::fs::File::open(&file.path)
                .map_err(io(format!("opening {}", file.path.display())))?;
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(file.data_start))
                .map_err(io(format!("reading {}", file.path.display())))?;
            Box::new(f)
        };
        let mut scan = FileScan {
            out: &mut out,
            columns: &columns,
            source,
            file: fi,
            bounds: (interval, origin, lower, upper),
            parser: Parser::new(spec.dialect, file.data_line),
            record: Record::default(),
            owner: None,
            orphans: Vec::new(),
            error: None,
        };
        let mut scanner = Scanner::new(spec.dialect);
        let mut carry: Vec<u8> = Vec::new();
        // Byte and line where the record being gathered starts.
        let (mut pos, mut line) = (file.data_start, file.data_line);
        // A compressed file is read from its start, header and all.
        let mut header = file.compressed && spec.header;
        let mut ends = Vec::new();
        super::each_block(&mut f, &file.path, |block| {
            ends.clear();
            scanner.scan(block, |i| ends.push(i));
            let mut from = 0;
            for &i in &ends {
                let bytes: &[u8] = if carry.is_empty() {
                    &block[from..=i]
                } else {
                    carry.extend_from_slice(&block[from..=i]);
                    &carry
                };
                scan.record(bytes, pos, line, header);
                header = false;
                line += newlines(bytes);
                pos += bytes.len() as u64;
                carry.clear();
                from = i + 1;
            }
            carry.extend_from_slice(&block[from..]);
        })?;
        if !carry.is_empty() {
            scan.record(&carry, pos, line, header);
        }
        if let Some(e) = scan.error {
            return Err(EtlError::Data(e));
        }
        if let Some((_, l)) = scan.orphans.first() {
            return Err(EtlError::Data(format!(
                "{}: no record has a readable {} (line {l} is the first of {} that do not); check the file's columns, or leave [chunks] time_column out to load it in byte ranges",
                file.path.display(),
                w.time_column,
                scan.orphans.len()
            )));
        }
    }
    Ok(out)
}

/// The plan's scan of one file.
struct FileScan<'a> {
    out: &'a mut WindowPlan,
    columns: &'a Columns,
    source: &'a CsvSource,
    file: usize,
    /// interval, origin, lower, upper.
    bounds: (Micros, Micros, Micros, Micros),
    parser: Parser,
    record: Record,
    /// The window of the last readable record, which answers for the
    /// unreadable ones after it.
    owner: Option<(Option<String>, Micros)>,
    /// Unreadable records before the file's first readable one.
    orphans: Vec<(Span, u64)>,
    /// The first unreadable record, when bad lines fail.
    error: Option<String>,
}

impl FileScan<'_> {
    /// One record's bytes (comment lines before it included), from byte
    /// `pos` on line `line`; the header is parsed for its lines only.
    fn record(&mut self, bytes: &[u8], pos: u64, line: u64, header: bool) {
        let spec = &self.source.spec;
        let file = &self.source.files[self.file];
        let text = if pos == 0 {
            spec.encoding.decode_with_bom_removal(bytes).0
        } else {
            spec.encoding.decode_without_bom_handling(bytes).0
        };
        let (interval, origin, lower, upper) = self.bounds;
        let mut at = 0;
        let class = loop {
            let (found, used) = self.parser.next_into(&text[at..], true, &mut self.record);
            at += used;
            match found {
                Found::Comment => continue,
                Found::Record if !header => {
                    break Some(self.columns.class(&self.record, interval, origin))
                }
                // The header; or an unclosed quote, which the reader reports.
                _ => break None,
            }
        };
        // A compressed file is read whole by every chunk it has rows for.
        let span = if file.compressed {
            Span {
                file: self.file,
                start: 0,
                end: file.size,
                line: 1,
            }
        } else {
            Span {
                file: self.file,
                start: pos,
                end: pos + bytes.len() as u64,
                line,
            }
        };
        match class {
            None => {}
            Some((Class::NoTime, _)) => self.out.outside += 1,
            Some((Class::In(..), t)) if t < lower || t >= upper => self.out.outside += 1,
            Some((Class::In(key, window), _)) => {
                let chunk = self.out.chunks.entry((key.clone(), window)).or_default();
                // Orphans come before this record in the file: spans stay
                // in file order.
                for (s, l) in self.orphans.drain(..) {
                    chunk.bad.insert((self.file, l));
                    chunk.add(s);
                }
                chunk.rows += 1;
                chunk.add(span);
                self.owner = Some((key, window));
            }
            // With bad lines failing, a line whose window is unknown fails
            // the plan: after it is fixed its row may belong to a window
            // already loaded, which a rerun of one chunk would not load.
            Some((Class::Bad(why), _))
                if spec.on_bad_line == OnBadLine::Fail && self.error.is_none() =>
            {
                self.error = Some(format!(
                    "{}, line {}: {why}; a time-window chunk cannot be found for it: fix the line (then run again), or set on_bad_line = \"skip\" to keep such lines in a reject file",
                    file.path.display(),
                    self.record.line
                ));
            }
            Some((Class::Bad(_), _)) if spec.on_bad_line == OnBadLine::Fail => {}
            Some((Class::Bad(_), _)) => match &self.owner {
                Some(o) => {
                    let chunk = self.out.chunks.get_mut(o).expect("owners are planned");
                    chunk.bad.insert((self.file, self.record.line));
                    chunk.add(span);
                }
                None => self.orphans.push((span, self.record.line)),
            },
        }
    }
}

/// The plan of chunks from the windows found.
pub fn plan(windows: &WindowPlan) -> Plan {
    let (interval, _, _, upper) = windows.made_with;
    let mut plan = Plan {
        rows_outside: windows.outside,
        ..Default::default()
    };
    plan.chunks = windows
        .chunks
        .iter()
        .map(|((key, start), c)| PlannedChunk {
            chunk: etl_base::plan::window_chunk(key.clone(), *start, interval, upper),
            rows: c.rows,
        })
        .collect();
    plan.order_and_span();
    plan
}

/// What a window chunk's reader keeps.
pub struct Filter {
    pub columns: Columns,
    pub chunk: Chunk,
    pub bad: HashSet<(usize, u64)>,
}

impl Filter {
    /// Whether the record read from file `file` is this chunk's to load
    /// (or to report, when it is unreadable and this chunk owns it).
    pub fn keeps(&self, file: usize, record: &Record) -> bool {
        match self.columns.in_chunk(record, &self.chunk) {
            Some(mine) => mine,
            None => self.bad.contains(&(file, record.line)),
        }
    }
}

/// The spans and filter of `chunk` in `windows`.
pub fn chunk_reads(
    windows: &Arc<WindowPlan>,
    columns: Columns,
    chunk: &Chunk,
) -> Option<(Vec<Span>, Filter)> {
    let (interval, origin, _, _) = windows.made_with;
    let start = etl_base::plan::window_start(chunk.start, origin, interval);
    if start != chunk.start {
        return None;
    }
    let c = windows.chunks.get(&(chunk.key.clone(), chunk.start))?;
    Some((
        c.spans.clone(),
        Filter {
            columns,
            chunk: chunk.clone(),
            bad: c.bad.clone(),
        },
    ))
}
