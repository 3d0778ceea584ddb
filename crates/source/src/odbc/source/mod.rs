//! [`OdbcSource`]: an ODBC query or table as a [`Source`] of the chunk
//! runner. Its chunks are one of:
//!
//! - time windows of `[chunks] time_column`, optionally per `key_column`,
//!   read with `WHERE t >= ? AND t < ? [AND key = ?]`;
//! - a whole table (a migration's small tables);
//! - ranges of a table's key (a migration's big tables): an integer,
//!   date or timestamp key cut in equal widths of MIN..MAX, read with
//!   `WHERE k >= ? AND k < ?`; a text key cut at every Nth value in the
//!   driver's order (its collation decides, so etl never compares text
//!   itself), the values kept by the caller so a resumed run cuts the
//!   same parts.
//!
//! Bounds and keys are bound as typed parameters, never spliced into the
//! SQL, and every row read is checked against its chunk's bounds: a driver
//! that compares values other than etl does fails the chunk instead of
//! moving rows between chunks silently.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use async_trait::async_trait;

use super::process::{self, ReadRequest, ReadStats};
use super::stream::ReaderStream;
use super::{connect, count_lines, prepare, quote_char, quote_with, Param};
use crate::odbc::{OdbcRelation, OdbcSpec};
use crate::{BatchStream, Source, SourceCounts};
use etl_base::plan::{Chunk, Plan, PlannedChunk};
use etl_base::time::Micros;
use etl_model::Chunking;
use etl_pg::error::EtlError;

mod plan;

use plan::finish_plan;

const DAY: Micros = 86_400_000_000;

/// How chunk bounds are bound for the time column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeKind {
    Timestamp,
    Date,
}

/// What the source's chunks are cut along.
enum Axis {
    /// Time windows, optionally per key.
    Windows {
        /// The time column quoted for the driver.
        time: String,
        kind: TimeKind,
        /// Bounds go to the driver as text ("2025-06-01 00:00:00"), not as
        /// SQL TIMESTAMP: SQLite stores times as text and compares them as
        /// text, and its driver renders a bound timestamp with ".000",
        /// which sorts after the midnight row written without it.
        text_times: bool,
        key_column: Option<String>,
        /// The key column quoted, and whether its values bind as integers.
        key: Option<(String, bool)>,
    },
    /// A table of a migration: whole, or in ranges of its key.
    Table {
        /// The SELECT that reads the whole table (or the query as given).
        select: String,
        /// The key (quoted) and its kind, when the table is cut into ranges.
        split: Option<(String, KeyKind)>,
        /// A text key's values the parts are cut at, once known.
        cuts: Mutex<Option<Vec<String>>>,
        /// About this many rows per range...
        range_rows: u64,
        /// ...and at least this many ranges once the table has more than
        /// this many rows each: the workers that can read it at once.
        min_parts: u64,
        batch_rows: u64,
    },
}

/// The key a migration's table is cut into ranges of.
pub struct Split {
    pub key: SplitKey,
    pub kind: KeyKind,
}

/// A split key: a column, or SQLite's `rowid` (not a column of the rows
/// read, and written unquoted: SQLite reads an unknown quoted name as a
/// string).
#[derive(Debug, Clone, PartialEq)]
pub enum SplitKey {
    Column(String),
    Rowid,
}

/// What a migration reads: a table by its name, or a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Relation {
    Table(String),
    Query(String),
}

/// What a split key holds, which says how its ranges are cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyKind {
    /// Equal widths of MIN..MAX ([`Chunk::range`]).
    Integer,
    /// Equal spans of MIN..MAX, as time windows ([`Chunk::window`]).
    Time(TimeKind),
    /// Parts cut at every Nth value in the driver's order ([`Chunk::part`]).
    Text,
}

impl KeyKind {
    /// The kind of a column read as `data_type`, if it can be split.
    pub fn of(data_type: &DataType) -> Option<KeyKind> {
        Some(match data_type {
            DataType::Int16 | DataType::Int32 | DataType::Int64 => KeyKind::Integer,
            DataType::Timestamp(TimeUnit::Microsecond, _) => KeyKind::Time(TimeKind::Timestamp),
            DataType::Date32 => KeyKind::Time(TimeKind::Date),
            DataType::Utf8 => KeyKind::Text,
            _ => return None,
        })
    }
}

/// An ODBC query or table, cut into chunks.
pub struct OdbcSource {
    spec: OdbcSpec,
    /// What follows FROM: the quoted table, or the query as a derived table.
    from: String,
    /// The source table, for `[source.casts]`, counts and messages.
    table: Option<String>,
    schema: SchemaRef,
    axis: Axis,
    /// The column every row is checked against its chunk's bounds.
    bound_index: Option<usize>,
    /// What the chunks read so far counted (replaced, cut, invalid dates).
    stats: Arc<Mutex<ReadStats>>,
    /// Fetch buffer sizes learned for long columns (see
    /// [`super::ADAPTIVE_BYTES`]), kept for every later chunk.
    buffers: Arc<Mutex<std::collections::BTreeMap<String, usize>>>,
    bytes_read: Arc<AtomicU64>,
}

impl OdbcSource {
    /// A query or one table in time windows: connects, describes the
    /// columns and checks the chunk columns.
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
                        "a whole-database ODBC source reached the time-window source".into(),
                    ))
                }
            },
        };
        let schema = describe(&spec, &from, table.as_deref())?;
        let column = |name: &str, what: &str| {
            schema
                .field_with_name(name)
                .map(|f| f.data_type().clone())
                .map_err(|_| {
                    EtlError::Config(format!(
                        "chunks.{what} {name:?} is not a column of the source; its columns are: {:?}",
                        schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
                    ))
                })
        };
        let kind = match column(&chunking.time_column, "time_column")? {
            DataType::Timestamp(TimeUnit::Microsecond, _) => TimeKind::Timestamp,
            DataType::Date32 => TimeKind::Date,
            other => {
                return Err(EtlError::Config(format!(
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
                        return Err(EtlError::Config(format!(
                            "chunks.key_column {k:?} is read as {other}; an ODBC key must be an integer or text column"
                        )))
                    }
                };
                Some((quote_with(quote, k), integer))
            }
        };
        let bound_index = schema.index_of(&chunking.time_column).ok();
        let axis = Axis::Windows {
            time: quote_with(quote, &chunking.time_column),
            kind,
            text_times,
            key_column: chunking.key_column.clone(),
            key,
        };
        Ok(OdbcSource::new(
            spec,
            from,
            table,
            schema,
            axis,
            bound_index,
        ))
    }

    fn new(
        spec: OdbcSpec,
        from: String,
        table: Option<String>,
        schema: SchemaRef,
        axis: Axis,
        bound_index: Option<usize>,
    ) -> OdbcSource {
        OdbcSource {
            spec,
            from,
            table,
            schema,
            axis,
            bound_index,
            stats: Arc::default(),
            buffers: Arc::default(),
            bytes_read: Arc::new(AtomicU64::new(0)),
        }
    }

    /// One table (or query) of a migration, described already; `quote`
    /// the driver's identifier quote. `split`: its key, when big tables are
    /// cut into ranges of about `range_rows` rows, at least `min_parts` of
    /// them.
    #[allow(clippy::too_many_arguments)]
    pub fn table(
        spec: &OdbcSpec,
        relation: &Relation,
        quote: char,
        schema: SchemaRef,
        split: Option<Split>,
        range_rows: u64,
        min_parts: u64,
    ) -> OdbcSource {
        // A query is counted and filtered as a derived table.
        let (select, from, table) = match relation {
            Relation::Table(t) => {
                let quoted = quote_with(quote, t);
                (format!("SELECT * FROM {quoted}"), quoted, Some(t.clone()))
            }
            Relation::Query(q) => (q.clone(), format!("({q}) q"), None),
        };
        // Rows are checked against their range where the key is a column
        // etl can compare (text is ordered by the driver's collation).
        let bound_index = match &split {
            Some(Split {
                key: SplitKey::Column(c),
                kind,
            }) if *kind != KeyKind::Text => schema.index_of(c).ok(),
            _ => None,
        };
        let axis = Axis::Table {
            select,
            split: split.map(|s| {
                let sql = match s.key {
                    SplitKey::Column(c) => quote_with(quote, &c),
                    SplitKey::Rowid => "rowid".to_string(),
                };
                (sql, s.kind)
            }),
            cuts: Mutex::new(None),
            range_rows: range_rows.max(1),
            min_parts: min_parts.max(1),
            batch_rows: spec.options.batch_rows as u64,
        };
        OdbcSource::new(spec.clone(), from, table, schema, axis, bound_index)
    }

    /// Runs `select` and hands every batch to `each`, in this thread.
    fn scan(
        &self,
        select: &str,
        each: impl FnMut(&RecordBatch) -> Result<(), EtlError>,
    ) -> Result<(), EtlError> {
        self.scan_with(select, Vec::new(), each)
    }

    /// [`OdbcSource::scan`] with parameters bound to the SELECT's markers.
    /// A value longer than its fetch buffer starts the scan over with
    /// larger buffers (`each` sees the rows again: planning queries only).
    fn scan_with(
        &self,
        select: &str,
        params: Vec<Param>,
        mut each: impl FnMut(&RecordBatch) -> Result<(), EtlError>,
    ) -> Result<(), EtlError> {
        loop {
            let mut reader = ReadRequest::new(
                &self.spec.connection_string,
                select,
                self.table.as_deref(),
                &self.options(),
            )
            .with_params(params.clone())
            .open()?;
            let mut read = || {
                while let Some(batch) = reader.next_batch()? {
                    each(&batch)?;
                }
                Ok(())
            };
            match read() {
                Err(EtlError::ReadAgain { column, bytes }) => self.learn(column, bytes),
                other => return other,
            }
        }
    }

    /// The options with the fetch buffer sizes learned so far.
    fn options(&self) -> super::OdbcOptions {
        let mut options = self.spec.options.clone();
        options.text_buffers = self
            .buffers
            .lock()
            .expect("no panic while holding the lock")
            .clone();
        options
    }

    /// Column `column` needs fetch buffers of `bytes`.
    fn learn(&self, column: String, bytes: usize) {
        tracing::info!(
            column,
            bytes,
            "A value is longer than its fetch buffer; reading again with larger buffers."
        );
        let mut buffers = self
            .buffers
            .lock()
            .expect("no panic while holding the lock");
        let size = buffers.entry(column).or_default();
        *size = (*size).max(bytes);
    }

    /// The first row of an integer query (counts, key bounds); NULL is `None`.
    fn integers(&self, select: &str) -> Result<Vec<Option<i64>>, EtlError> {
        self.integers_with(select, Vec::new())
    }

    fn integers_with(
        &self,
        select: &str,
        params: Vec<Param>,
    ) -> Result<Vec<Option<i64>>, EtlError> {
        let mut values = None;
        self.scan_with(select, params, |batch| {
            if values.is_none() && batch.num_rows() > 0 {
                let row = (0..batch.num_columns())
                    .map(|c| match key_at(batch.column(c), 0)? {
                        None => Ok(None),
                        // Some drivers hand a count over as a decimal ("3.0").
                        Some(text) => text
                            .split('.')
                            .next()
                            .unwrap_or("")
                            .trim()
                            .parse()
                            .map(Some)
                            .map_err(|_| {
                                EtlError::Config(format!(
                                    "{select:?} returned {text:?}, not an integer"
                                ))
                            }),
                    })
                    .collect::<Result<Vec<_>, EtlError>>()?;
                values = Some(row);
            }
            Ok(())
        })?;
        values.ok_or_else(|| EtlError::Config(format!("{select:?} returned no row")))
    }

    /// Whether `select` runs (a column or feature the driver may lack).
    fn probe(&self, select: &str) -> bool {
        self.scan(select, |_| Ok(())).is_ok()
    }

    /// Whether the table has SQLite's `rowid` (not WITHOUT ROWID).
    pub fn has_rowid(&self) -> bool {
        self.probe(&format!("SELECT MIN(rowid) FROM {}", self.from))
    }

    /// The source's row count (`SELECT COUNT(*)`).
    pub fn count(&self) -> Result<u64, EtlError> {
        let select = format!("SELECT COUNT(*) FROM {}", self.from);
        match self.integers(&select)?[..] {
            [Some(n)] if n >= 0 => Ok(n as u64),
            _ => Err(EtlError::Config(format!("{select:?} returned no count"))),
        }
    }

    /// Who the rows belong to, in messages: `source table "x"`, or the query.
    fn label(&self) -> String {
        match &self.table {
            Some(t) => format!("source table {t:?}"),
            None => "the source query".into(),
        }
    }

    /// The chunk's SELECT and its parameters.
    fn chunk_select(&self, chunk: &Chunk) -> Result<(String, Vec<Param>), EtlError> {
        let from = &self.from;
        match &self.axis {
            Axis::Table {
                select,
                split: None,
                ..
            } => Ok((select.clone(), Vec::new())),
            Axis::Table { select, .. } if chunk.is_whole() => Ok((select.clone(), Vec::new())),
            Axis::Table {
                split: Some((k, KeyKind::Integer)),
                ..
            } => Ok(range_select(from, k, chunk, |v| Ok(Param::Int(v)))?),
            Axis::Table {
                split: Some((k, KeyKind::Time(kind))),
                ..
            } => Ok(range_select(from, k, chunk, |v| {
                time_param(*kind, false, v)
            })?),
            Axis::Table {
                split: Some((k, KeyKind::Text)),
                ..
            } => {
                let cuts = self.cuts()?;
                let part = usize::try_from(chunk.start)
                    .ok()
                    .filter(|p| *p <= cuts.len() && chunk.unit == etl_base::plan::Unit::Part)
                    .ok_or_else(|| {
                        EtlError::Changed(format!(
                            "chunk {chunk} is not one of the {} parts {} is cut into",
                            cuts.len() + 1,
                            self.label()
                        ))
                    })?;
                // Part p holds keys from cut p-1 (the first: from the
                // lowest) to cut p (the last: to the highest).
                let (mut conditions, mut params) = (Vec::new(), Vec::new());
                let (lower, upper) = etl_base::plan::part_bounds(&cuts, part);
                if let Some(v) = lower {
                    conditions.push(format!("{k} >= ?"));
                    params.push(Param::Text(v.clone()));
                }
                if let Some(v) = upper {
                    conditions.push(format!("{k} < ?"));
                    params.push(Param::Text(v.clone()));
                }
                let filter = match conditions.is_empty() {
                    true => String::new(),
                    false => format!(" WHERE {}", conditions.join(" AND ")),
                };
                Ok((format!("SELECT * FROM {from}{filter}"), params))
            }
            Axis::Windows {
                time,
                kind,
                text_times,
                key_column,
                key,
            } => {
                let mut sql = format!("SELECT * FROM {from} WHERE {time} >= ? AND {time} < ?");
                let mut params = vec![
                    time_param(*kind, *text_times, chunk.start)?,
                    time_param(*kind, *text_times, chunk.end)?,
                ];
                if let Some((k, integer)) = key {
                    match &chunk.key {
                        None => sql.push_str(&format!(" AND {k} IS NULL")),
                        Some(v) if *integer => {
                            let v = v.parse().map_err(|_| {
                                EtlError::Config(format!(
                                    "chunk {chunk}: key {v:?} is not an integer, but {:?} is an integer column",
                                    key_column.as_deref().unwrap_or("")
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
    }
}

/// Connects, runs `SELECT * FROM {from}` and describes its columns.
pub fn describe(spec: &OdbcSpec, from: &str, table: Option<&str>) -> Result<SchemaRef, EtlError> {
    let mut options = spec.options.clone();
    options.batch_rows = 1;
    let described = ReadRequest::new(
        &spec.connection_string,
        &format!("SELECT * FROM {from}"),
        table,
        &options,
    )
    .open()
    .map_err(|e| EtlError::Config(format!("describing the ODBC source: {e}")))?;
    Ok(described.schema())
}

/// A time bound as the driver compares it.
/// A key range's SELECT (`[lo, hi)`, an unbounded side left out: the
/// first and last ranges hold every key below and above the cuts) and its
/// parameters, each bound made by `param`.
fn range_select(
    from: &str,
    k: &str,
    chunk: &Chunk,
    param: impl Fn(i64) -> Result<Param, EtlError>,
) -> Result<(String, Vec<Param>), EtlError> {
    let condition = etl_base::plan::range_condition(k, chunk, |_| "?".into());
    let params = [chunk.lower(), chunk.upper()]
        .into_iter()
        .flatten()
        .map(param)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((format!("SELECT * FROM {from} WHERE {condition}"), params))
}

fn time_param(kind: TimeKind, text_times: bool, t: Micros) -> Result<Param, EtlError> {
    Ok(match (kind, text_times) {
        (TimeKind::Timestamp, false) => Param::Timestamp(t),
        (TimeKind::Timestamp, true) => Param::Text(etl_base::time::format_timestamp(t)),
        // A date d is in [start, end) when its midnight is.
        (TimeKind::Date, false) => Param::Date(day_at_or_after(t)?),
        (TimeKind::Date, true) => Param::Text(
            etl_base::time::format_timestamp(day_at_or_after(t)? as i64 * DAY)[..10].to_string(),
        ),
    })
}

/// The first day whose midnight is at or after `t`.
fn day_at_or_after(t: Micros) -> Result<i32, EtlError> {
    let days = t.div_euclid(DAY) + i64::from(t.rem_euclid(DAY) != 0);
    i32::try_from(days)
        .map_err(|_| EtlError::Config(format!("chunk bound {t} µs is out of the date range")))
}

/// Row `i` of a time column as µs since 1970: a timestamp, a date, or text
/// (drivers describe MIN/MAX of a column as text) in PostgreSQL's format.
pub(super) fn micros_at(array: &ArrayRef, i: usize) -> Result<Option<Micros>, EtlError> {
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
            etl_base::time::parse_timestamp(text).map_err(|e| {
                EtlError::Data(format!(
                    "the driver returned the time {text:?}, which etl cannot read: {e}"
                ))
            })?
        }
        other => {
            return Err(EtlError::Config(format!(
                "the driver returned a time column as {other}, not a timestamp"
            )))
        }
    }))
}

/// Row `i` of a key column as text (the chunk's key, or a number to parse).
fn key_at(array: &ArrayRef, i: usize) -> Result<Option<String>, EtlError> {
    if array.is_null(i) {
        return Ok(None);
    }
    let text = arrow::compute::cast(&array.slice(i, 1), &DataType::Utf8)
        .map_err(|e| EtlError::Bug(format!("reading a key value as text: {e}")))?;
    Ok(Some(text.as_string::<i32>().value(0).to_string()))
}

#[async_trait]
impl Source for OdbcSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn primary_key(&self) -> &[String] {
        &[]
    }

    async fn plan(&self, chunking: &Chunking) -> Result<Plan, EtlError> {
        match &self.axis {
            Axis::Windows { time, key, .. } => {
                self.plan_windows(chunking, time, key.as_ref().map(|(k, _)| k.as_str()))
            }
            Axis::Table {
                split,
                range_rows,
                min_parts,
                batch_rows,
                ..
            } => {
                let parts = |count: u64| {
                    count
                        .div_ceil(*range_rows)
                        .max((*min_parts).min(count / (*batch_rows).max(1)))
                };
                self.plan_table(split.as_ref(), parts)
            }
        }
    }

    /// Time windows: one grouped query for each key's first and last time,
    /// every window between them, rows not counted.
    async fn plan_by_index(&self, chunking: &Chunking) -> Result<Option<Plan>, EtlError> {
        let Axis::Windows { time: t, key, .. } = &self.axis else {
            return Ok(None);
        };
        if chunking.start.is_some() || chunking.end.is_some() {
            return Ok(None);
        }
        let select = match key {
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
                let key = match key {
                    Some(_) => key_at(batch.column(0), i)?,
                    None => None,
                };
                let (Some(min), Some(max)) = (
                    micros_at(batch.column(n - 2), i)?,
                    micros_at(batch.column(n - 1), i)?,
                ) else {
                    continue;
                };
                for start in etl_base::plan::window_starts(min, max, 0, interval) {
                    plan.chunks.push(PlannedChunk {
                        chunk: etl_base::plan::window_chunk(key.clone(), start, interval, i64::MAX),
                        rows: 0,
                    });
                }
            }
            Ok(())
        })
        .map_err(|e| EtlError::Config(format!("finding the source's time range per key: {e}")))?;
        Ok(Some(finish_plan(plan, chunking)))
    }

    async fn open(&self, chunk: &Chunk) -> Result<BatchStream, EtlError> {
        let (select, params) = self.chunk_select(chunk)?;
        let request = ReadRequest::new(
            &self.spec.connection_string,
            &select,
            self.table.as_deref(),
            &self.options(),
        )
        .with_params(params);
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        // Drivers that serialise threads on a process-wide lock (SQLite)
        // read chunks in parallel only as processes; a crash in one then
        // fails its chunk, not the run.
        let handle = if self.spec.readers > 1 {
            process::in_child(request, None, tx)?
        } else {
            process::in_thread(request, None, tx)?
        };
        Ok(Box::pin(ReaderStream {
            bounds: self
                .bound_index
                .filter(|_| !chunk.is_whole())
                .map(|i| (i, chunk.clone())),
            label: self.label(),
            rx,
            handle: Some(handle),
            failed: false,
            stats: self.stats.clone(),
            buffers: self.buffers.clone(),
            bytes: self.bytes_read.clone(),
        }))
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    fn counts(&self) -> SourceCounts {
        let stats = self.stats.lock().expect("no panic while holding the lock");
        SourceCounts {
            lines: count_lines(&stats, &self.spec.options),
            values_changed: stats.values_changed(),
            rows_rejected: 0,
        }
    }
}

impl OdbcSource {
    /// What the chunks read so far counted, columns named `table.column`
    /// for a table.
    pub fn read_stats(&self) -> ReadStats {
        let stats = self.stats.lock().expect("no panic while holding the lock");
        let copy = ReadStats {
            replaced: stats.replaced.clone(),
            truncated: stats.truncated.clone(),
            invalid_dates: stats.invalid_dates.clone(),
        };
        match &self.table {
            Some(t) => copy.in_table(t),
            None => copy,
        }
    }
}
