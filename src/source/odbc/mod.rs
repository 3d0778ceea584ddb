//! ODBC sources: any driver unixODBC knows (SQL Server through FreeTDS,
//! SQLite, MS Access through MDBTools, PostgreSQL through psqlODBC).
//!
//! - [`read`]: one SELECT into Arrow batches, narrow text decoded from the
//!   configured code page, bounds bound as typed parameters.
//! - [`process`]: where that reader runs: a thread of this process, or a
//!   child process (`readers` > 1: drivers that serialise threads on a
//!   process-wide lock, SQLite's, read in parallel only as processes).
//! - [`OdbcSource`]: an ODBC query or table as a [`Source`] of the chunk
//!   runner: time windows (optionally per key) planned through the driver
//!   and read with `WHERE t >= ? AND t < ? [AND key = ?]`.
//!
//! A whole database (`tables = ["*"]`) is read by [`crate::migrate`], table
//! by table, through the same reader.

pub mod process;
mod read;

pub use read::*;

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use async_trait::async_trait;
use futures_util::Stream;

use super::{BatchStream, Source, SourceCounts};
use crate::config::validate::{Chunking, OdbcRelation, OdbcSpec};
use crate::error::EtlError;
use crate::plan::{Chunk, Plan, PlannedChunk};
use crate::time::Micros;
use process::{ReadRequest, ReadStats};

const DAY: Micros = 86_400_000_000;

/// The spec as its driver needs it: MDBTools is read row by row and hands
/// out UTF-8 (the file's code page becomes `MDB_JET3_CHARSET`); SQLite
/// without `StepAPI=1` holds a whole result in memory (warned).
pub fn prepare(spec: &OdbcSpec) -> OdbcSpec {
    let mut spec = spec.clone();
    if crate::migrate::catalog::is_mdbtools(&spec.connection_string) {
        // MDBTools refuses row arrays: it is read one row at a time.
        spec.options.row_by_row = true;
        mdbtools_code_page(&mut spec.options);
    }
    let lower = spec.connection_string.to_ascii_lowercase();
    if lower.contains("sqlite") && !lower.contains("stepapi") {
        tracing::warn!("SQLite's ODBC driver holds a whole result in memory unless the connection string has StepAPI=1; add it to keep memory bounded by the batch.");
    }
    spec
}

/// MDBTools always hands out UTF-8, converting an Access 97 (Jet 3)
/// file's text from the code page in `MDB_JET3_CHARSET` (CP1252 when
/// unset; Access 2000 and later store Unicode). So `encoding` names the
/// file's code page: it becomes `MDB_JET3_CHARSET` (unless the environment
/// sets it already) and etl decodes the driver's UTF-8.
fn mdbtools_code_page(options: &mut OdbcOptions) {
    let encoding = options.encoding;
    if encoding == encoding_rs::UTF_8 {
        return;
    }
    // iconv's names; encoding_rs's EUC-KR is all of CP949 (UHC).
    let iconv = if encoding == encoding_rs::EUC_KR {
        "CP949"
    } else {
        encoding.name()
    };
    match std::env::var("MDB_JET3_CHARSET") {
        Ok(set) => tracing::info!(
            MDB_JET3_CHARSET = set,
            encoding = encoding.name(),
            "MDB_JET3_CHARSET is set: MDBTools converts Access 97 text from it, not from encoding."
        ),
        Err(_) => {
            // Set before the first connection, while no other thread reads
            // the environment; reader processes inherit it.
            std::env::set_var("MDB_JET3_CHARSET", iconv);
        }
    }
    options.encoding = encoding_rs::UTF_8;
}

/// The driver's identifier quote, `"` when it names none.
pub fn quote_char(connection: &odbc_api::Connection<'_>) -> char {
    connection
        .identifier_quote_char()
        .ok()
        .flatten()
        .filter(|c| !c.is_whitespace())
        .unwrap_or('"')
}

/// `name` quoted with `quote`, the quote doubled inside.
pub fn quote_with(quote: char, name: &str) -> String {
    let q = quote.to_string();
    format!("{q}{}{q}", name.replace(&q, &format!("{q}{q}")))
}

/// How chunk bounds are bound for the time column.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TimeKind {
    Timestamp,
    Date,
}

/// An ODBC query or one table, cut into time windows.
pub struct OdbcSource {
    spec: OdbcSpec,
    /// What follows FROM: the quoted table, or the query as a derived table.
    from: String,
    /// The source table, for `[source.casts]` and messages.
    table: Option<String>,
    schema: SchemaRef,
    /// The time column quoted for the driver.
    time: String,
    time_kind: TimeKind,
    /// The time column's index in the schema, for the window check.
    time_index: usize,
    /// Bounds go to the driver as text ("2025-06-01 00:00:00"), not as
    /// SQL TIMESTAMP: SQLite stores times as text and compares them as
    /// text, and its driver renders a bound timestamp with ".000", which
    /// sorts after the midnight row written without it.
    text_times: bool,
    key_column: Option<String>,
    /// The key column quoted, and whether its values bind as integers.
    key: Option<(String, bool)>,
    /// What the chunks read so far counted (replaced, cut, invalid dates).
    stats: Arc<Mutex<ReadStats>>,
    bytes_read: Arc<AtomicU64>,
}

impl OdbcSource {
    /// Connects and describes the query's columns; checks the chunk columns.
    pub fn build(spec: &OdbcSpec, chunking: &Chunking) -> Result<Self, EtlError> {
        let spec = prepare(spec);
        let connection = connect(&spec.connection_string)?;
        let quote = quote_char(&connection);
        let text_times = connection
            .database_management_system_name()
            .is_ok_and(|name| name.to_ascii_lowercase().contains("sqlite"));
        drop(connection);
        let (from, table) = match &spec.relation {
            OdbcRelation::Query(q) => (format!("({q}) q"), None),
            OdbcRelation::Tables { include, .. } => match include.as_slice() {
                [t] if t != "*" => (quote_with(quote, t), Some(t.clone())),
                _ => {
                    return Err(EtlError::Bug(
                        "a whole-database ODBC source reached the chunk runner".into(),
                    ))
                }
            },
        };
        let mut options = spec.options.clone();
        options.batch_rows = 1;
        let described = ReadRequest::new(
            &spec.connection_string,
            &format!("SELECT * FROM {from}"),
            table.as_deref(),
            &options,
        )
        .open()
        .map_err(|e| EtlError::Schema(format!("describing the ODBC source: {e}")))?;
        let schema = described.schema();
        drop(described);
        let column = |name: &str, what: &str| {
            schema
                .field_with_name(name)
                .map(|f| f.data_type().clone())
                .map_err(|_| {
                    EtlError::Schema(format!(
                    "chunks.{what} {name:?} is not a column of the source; its columns are: {:?}",
                    schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
                ))
                })
        };
        let time_kind = match column(&chunking.time_column, "time_column")? {
            DataType::Timestamp(TimeUnit::Microsecond, _) => TimeKind::Timestamp,
            DataType::Date32 => TimeKind::Date,
            other => {
                return Err(EtlError::Schema(format!(
                    "chunks.time_column {:?} is read as {other}, not a timestamp or date; name a TIMESTAMP or DATE column (a text column holding times: cast it in `query`)",
                    chunking.time_column
                )))
            }
        };
        let key = match &chunking.key_column {
            None => None,
            Some(k) => {
                let integer = match column(k, "key_column")? {
                    DataType::Int16 | DataType::Int32 | DataType::Int64 => true,
                    DataType::Utf8 => false,
                    other => {
                        return Err(EtlError::Schema(format!(
                            "chunks.key_column {k:?} is read as {other}; an ODBC key must be an integer or text column"
                        )))
                    }
                };
                Some((quote_with(quote, k), integer))
            }
        };
        Ok(OdbcSource {
            time_index: schema
                .index_of(&chunking.time_column)
                .map_err(|e| EtlError::Bug(e.to_string()))?,
            text_times,
            time: quote_with(quote, &chunking.time_column),
            time_kind,
            key_column: chunking.key_column.clone(),
            key,
            spec,
            from,
            table,
            schema,
            stats: Arc::default(),
            bytes_read: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Runs `select` and hands every batch to `each`, in this thread.
    fn scan(
        &self,
        select: &str,
        mut each: impl FnMut(&RecordBatch) -> Result<(), EtlError>,
    ) -> Result<(), EtlError> {
        let mut reader = ReadRequest::new(
            &self.spec.connection_string,
            select,
            self.table.as_deref(),
            &self.spec.options,
        )
        .open()?;
        while let Some(batch) = reader.next_batch()? {
            each(&batch)?;
        }
        Ok(())
    }

    /// The chunk's SELECT and its parameters.
    fn chunk_select(&self, chunk: &Chunk) -> Result<(String, Vec<Param>), EtlError> {
        let t = &self.time;
        let mut sql = format!("SELECT * FROM {} WHERE {t} >= ? AND {t} < ?", self.from);
        let bound = |t: Micros| -> Result<Param, EtlError> {
            Ok(match (self.time_kind, self.text_times) {
                (TimeKind::Timestamp, false) => Param::Timestamp(t),
                (TimeKind::Timestamp, true) => Param::Text(crate::time::format_timestamp(t)),
                // A date d is in [start, end) when its midnight is.
                (TimeKind::Date, false) => Param::Date(day_at_or_after(t)?),
                (TimeKind::Date, true) => Param::Text(
                    crate::time::format_timestamp(day_at_or_after(t)? as i64 * DAY)[..10]
                        .to_string(),
                ),
            })
        };
        let mut params = vec![bound(chunk.start)?, bound(chunk.end)?];
        if let Some((k, integer)) = &self.key {
            match &chunk.key {
                None => sql.push_str(&format!(" AND {k} IS NULL")),
                Some(v) if *integer => {
                    let v = v.parse().map_err(|_| {
                        EtlError::Schema(format!(
                            "chunk {chunk}: key {v:?} is not an integer, but {:?} is an integer column",
                            self.key_column.as_deref().unwrap_or("")
                        ))
                    })?;
                    sql.push_str(&format!(" AND {k} = ?"));
                    params.push(Param::Int(v));
                }
                Some(v) => {
                    sql.push_str(&format!(" AND {k} = ?"));
                    params.push(Param::Text(v.clone()));
                }
            }
        }
        Ok((sql, params))
    }
}

/// The first day whose midnight is at or after `t`.
fn day_at_or_after(t: Micros) -> Result<i32, EtlError> {
    let days = t.div_euclid(DAY) + i64::from(t.rem_euclid(DAY) != 0);
    i32::try_from(days)
        .map_err(|_| EtlError::Schema(format!("chunk bound {t} µs is out of the date range")))
}

/// Row `i` of a time column as µs since 1970: a timestamp, a date, or text
/// (drivers describe MIN/MAX of a column as text) in PostgreSQL's format.
fn micros_at(array: &ArrayRef, i: usize) -> Result<Option<Micros>, EtlError> {
    if array.is_null(i) {
        return Ok(None);
    }
    Ok(Some(match array.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => array
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .value(i),
        DataType::Date32 => {
            array
                .as_primitive::<arrow::datatypes::Date32Type>()
                .value(i) as i64
                * DAY
        }
        DataType::Utf8 => {
            let text = array.as_string::<i32>().value(i);
            crate::time::parse_timestamp(text).map_err(|e| {
                EtlError::Schema(format!(
                    "the driver returned the time {text:?}, which etl cannot read: {e}"
                ))
            })?
        }
        other => {
            return Err(EtlError::Schema(format!(
                "the driver returned a time column as {other}, not a timestamp"
            )))
        }
    }))
}

/// Row `i` of a key column as the chunk's key text.
fn key_at(array: &ArrayRef, i: usize) -> Result<Option<String>, EtlError> {
    if array.is_null(i) {
        return Ok(None);
    }
    let text = arrow::compute::cast(&array.slice(i, 1), &DataType::Utf8)
        .map_err(|e| EtlError::Schema(format!("reading a key value as text: {e}")))?;
    Ok(Some(text.as_string::<i32>().value(0).to_string()))
}

/// Sorted chunks and their range, as every source orders them.
fn finish_plan(mut plan: Plan, chunking: &Chunking) -> Plan {
    plan.chunks
        .sort_by(|a, b| (a.chunk.start, &a.chunk.key).cmp(&(b.chunk.start, &b.chunk.key)));
    let first = plan.chunks.iter().map(|c| c.chunk.start).min();
    let last = plan.chunks.iter().map(|c| c.chunk.end).max();
    plan.range = chunking.start.or(first).zip(chunking.end.or(last));
    plan
}

#[async_trait]
impl Source for OdbcSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn primary_key(&self) -> &[String] {
        &[]
    }

    /// One pass over the key and time columns, binned here: every window
    /// that holds rows, counted; NULL times and rows outside start/end
    /// counted apart. Portable to drivers without date arithmetic in SQL.
    async fn plan(&self, chunking: &Chunking) -> Result<Plan, EtlError> {
        let select = match &self.key {
            Some((k, _)) => format!("SELECT {k}, {} FROM {}", self.time, self.from),
            None => format!("SELECT {} FROM {}", self.time, self.from),
        };
        let origin = chunking.start.unwrap_or(0);
        let (lower, upper) = (
            chunking.start.unwrap_or(i64::MIN),
            chunking.end.unwrap_or(i64::MAX),
        );
        let interval = chunking.interval;
        let mut windows: HashMap<(Option<String>, Micros), u64> = HashMap::new();
        let mut outside = 0u64;
        self.scan(&select, |batch| {
            let time = batch.column(batch.num_columns() - 1);
            for i in 0..batch.num_rows() {
                match micros_at(time, i)? {
                    Some(t) if t >= lower && t < upper => {
                        let start = origin + (t - origin).div_euclid(interval) * interval;
                        let key = match self.key {
                            Some(_) => key_at(batch.column(0), i)?,
                            None => None,
                        };
                        *windows.entry((key, start)).or_default() += 1;
                    }
                    _ => outside += 1,
                }
            }
            Ok(())
        })
        .map_err(|e| EtlError::Schema(format!("counting the source's rows per chunk: {e}")))?;
        let plan = Plan {
            chunks: windows
                .into_iter()
                .map(|((key, start), rows)| PlannedChunk {
                    chunk: Chunk {
                        key,
                        start,
                        end: start.saturating_add(interval).min(upper),
                    },
                    rows,
                })
                .collect(),
            rows_outside: outside,
            range: None,
        };
        Ok(finish_plan(plan, chunking))
    }

    /// One grouped query for each key's first and last time: every window
    /// between them, rows not counted.
    async fn plan_by_index(&self, chunking: &Chunking) -> Result<Option<Plan>, EtlError> {
        if chunking.start.is_some() || chunking.end.is_some() {
            return Ok(None);
        }
        let t = &self.time;
        let select = match &self.key {
            Some((k, _)) => format!(
                "SELECT {k}, MIN({t}), MAX({t}) FROM {} GROUP BY {k}",
                self.from
            ),
            None => format!("SELECT MIN({t}), MAX({t}) FROM {}", self.from),
        };
        let interval = chunking.interval;
        let mut plan = Plan::default();
        self.scan(&select, |batch| {
            let n = batch.num_columns();
            for i in 0..batch.num_rows() {
                let key = match self.key {
                    Some(_) => key_at(batch.column(0), i)?,
                    None => None,
                };
                let (Some(min), Some(max)) = (
                    micros_at(batch.column(n - 2), i)?,
                    micros_at(batch.column(n - 1), i)?,
                ) else {
                    continue;
                };
                let mut start = crate::plan::align_down(min, interval);
                while start <= max {
                    plan.chunks.push(PlannedChunk {
                        chunk: Chunk {
                            key: key.clone(),
                            start,
                            end: start + interval,
                        },
                        rows: 0,
                    });
                    start += interval;
                }
            }
            Ok(())
        })
        .map_err(|e| EtlError::Schema(format!("finding the source's time range per key: {e}")))?;
        Ok(Some(finish_plan(plan, chunking)))
    }

    async fn open(&self, chunk: &Chunk) -> Result<BatchStream, EtlError> {
        let (select, params) = self.chunk_select(chunk)?;
        let request = ReadRequest::new(
            &self.spec.connection_string,
            &select,
            self.table.as_deref(),
            &self.spec.options,
        )
        .with_params(params);
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let handle = if self.spec.readers > 1 {
            process::in_child(request, None, tx)?
        } else {
            process::in_thread(request, None, tx)?
        };
        Ok(Box::pin(ReaderStream {
            window: (self.time_index, chunk.clone()),
            rx,
            handle: Some(handle),
            failed: false,
            stats: self.stats.clone(),
            bytes: self.bytes_read.clone(),
        }))
    }

    async fn sql_checksum(
        &self,
        _chunk: &Chunk,
        _columns: &[String],
    ) -> Result<Option<crate::verify::Checksum>, EtlError> {
        Ok(None)
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    fn counts(&self) -> SourceCounts {
        let stats = self.stats.lock().expect("no panic while holding the lock");
        SourceCounts {
            lines: count_lines(&stats, &self.spec.options),
            values_changed: stats.values_changed(),
        }
    }
}

/// One chunk's rows from its reader (thread or process). At the end the
/// reader's counts join the source's; a reader's error ends the stream.
struct ReaderStream {
    /// The time column's index and the chunk: every row must lie in it.
    window: (usize, Chunk),
    rx: tokio::sync::mpsc::Receiver<Result<RecordBatch, EtlError>>,
    handle: Option<std::thread::JoinHandle<Result<ReadStats, EtlError>>>,
    failed: bool,
    stats: Arc<Mutex<ReadStats>>,
    bytes: Arc<AtomicU64>,
}

impl Stream for ReaderStream {
    type Item = Result<RecordBatch, EtlError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(batch))) => {
                this.bytes
                    .fetch_add(batch.get_array_memory_size() as u64, Ordering::Relaxed);
                if let Err(e) = check_window(&batch, this.window.0, &this.window.1) {
                    this.failed = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.failed = true;
                Poll::Ready(Some(Err(e)))
            }
            // Every sender is gone: the reader has ended (or is ending).
            Poll::Ready(None) => {
                let Some(handle) = this.handle.take() else {
                    return Poll::Ready(None);
                };
                let result = handle.join().unwrap_or_else(|_| {
                    Err(EtlError::Bug("an ODBC reader thread panicked".into()))
                });
                match result {
                    Ok(stats) if !this.failed => {
                        this.stats
                            .lock()
                            .expect("no panic while holding the lock")
                            .add(stats);
                        Poll::Ready(None)
                    }
                    Err(e) if !this.failed => {
                        this.failed = true;
                        Poll::Ready(Some(Err(e)))
                    }
                    _ => Poll::Ready(None),
                }
            }
        }
    }
}

/// Every row the driver returned for a chunk lies in its window: a driver
/// that compares times other than as etl does (text with another format,
/// another time zone) would otherwise put rows in the wrong chunk, or in
/// none, silently.
fn check_window(batch: &RecordBatch, column: usize, chunk: &Chunk) -> Result<(), EtlError> {
    let times = batch.column(column);
    for i in 0..batch.num_rows() {
        match micros_at(times, i)? {
            Some(t) if t >= chunk.start && t < chunk.end => {}
            found => {
                return Err(EtlError::Schema(format!(
                    "chunk {chunk}: the driver returned a row whose time is {}, outside the chunk; it compares times differently from etl (times stored as text in another format?). Cast the time column in `query` so the driver compares real timestamps",
                    found.map_or("NULL".to_string(), crate::time::format_timestamp)
                )))
            }
        }
    }
    Ok(())
}

/// The summary's lines for values that did not load as they were.
pub fn count_lines(stats: &ReadStats, options: &OdbcOptions) -> Vec<String> {
    let mut lines = Vec::new();
    let listed = |map: &BTreeMap<String, (u64, u64)>| {
        map.iter()
            .map(|(c, (n, first))| format!("{c} {n} (first at row {first})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !stats.replaced.is_empty() {
        let list: Vec<String> = stats
            .replaced
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        lines.push(format!(
            "replaced text {} (invalid {} bytes loaded as U+FFFD)",
            list.join(", "),
            options.encoding.name()
        ));
    }
    if !stats.truncated.is_empty() {
        lines.push(format!(
            "truncated    {}: values longer than max_text_bytes = {} cut to it (on_long_value = \"truncate\")",
            listed(&stats.truncated),
            options.max_text_bytes
        ));
    }
    if !stats.invalid_dates.is_empty() {
        lines.push(format!(
            "bad dates    {}: the driver returned invalid dates, loaded as NULL",
            listed(&stats.invalid_dates)
        ));
    }
    lines
}
