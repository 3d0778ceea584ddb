//! The readers of an ODBC chunk: each runs one SELECT (a whole table, a
//! time window, one range of a key) and sends Arrow batches to the thread
//! that writes the chunk.
//!
//! One reader is a thread of this process. Several run as child processes
//! (`etl odbc-read`, hidden), each streaming Arrow IPC on its stdout: in
//! one process, drivers share their libraries' process-wide locks (SQLite
//! takes one on every allocation, so two threads read no faster than one),
//! and a driver that crashes takes only its child down, failing the table
//! instead of the run. The request (with the connection string, which may
//! hold a password) goes to the child on stdin, never on its command line;
//! its warnings come back on stderr and are passed on, its counts in a
//! last stderr line.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::thread::JoinHandle;

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::odbc::{self, Cast, OdbcOptions, Param};
use etl_pg::error::EtlError;

/// What a child reader runs: the connection, the SELECT and the options.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadRequest {
    pub connection_string: String,
    pub select: String,
    /// Bound to the SELECT's `?` markers, in order.
    #[serde(default)]
    pub params: Vec<Param>,
    /// The source table, for `[source.casts]`; `None` for a query.
    pub table: Option<String>,
    /// encoding_rs's name of the encoding (`EUC-KR`).
    pub encoding: String,
    pub replace_invalid: bool,
    pub batch_rows: usize,
    pub batch_bytes: usize,
    pub max_text_bytes: usize,
    pub truncate_long: bool,
    pub row_by_row: bool,
    /// `Table.Column` -> `text` | `binary`.
    pub casts: BTreeMap<String, String>,
    /// Fetch buffer sizes learned for long columns.
    #[serde(default)]
    pub text_buffers: BTreeMap<String, usize>,
}

impl ReadRequest {
    pub fn new(
        connection_string: &str,
        select: &str,
        table: Option<&str>,
        o: &OdbcOptions,
    ) -> Self {
        ReadRequest {
            connection_string: connection_string.to_string(),
            select: select.to_string(),
            params: Vec::new(),
            table: table.map(str::to_string),
            encoding: o.encoding.name().to_string(),
            replace_invalid: o.replace_invalid,
            batch_rows: o.batch_rows,
            batch_bytes: o.batch_bytes,
            max_text_bytes: o.max_text_bytes,
            truncate_long: o.truncate_long,
            row_by_row: o.row_by_row,
            text_buffers: o.text_buffers.clone(),
            casts: o
                .casts
                .iter()
                .map(|(c, cast)| {
                    let cast = match cast {
                        Cast::Text => "text",
                        Cast::Binary => "binary",
                    };
                    (c.clone(), cast.to_string())
                })
                .collect(),
        }
    }

    /// The same request with `params` bound to the SELECT's markers.
    pub fn with_params(mut self, params: Vec<Param>) -> Self {
        self.params = params;
        self
    }

    fn options(&self) -> Result<OdbcOptions, EtlError> {
        let mut o = OdbcOptions::new(&self.encoding)?;
        o.replace_invalid = self.replace_invalid;
        o.batch_rows = self.batch_rows;
        o.batch_bytes = self.batch_bytes;
        o.max_text_bytes = self.max_text_bytes;
        o.truncate_long = self.truncate_long;
        o.row_by_row = self.row_by_row;
        o.text_buffers = self.text_buffers.clone();
        for (column, cast) in &self.casts {
            o.casts
                .insert(column.clone(), Cast::parse(cast).map_err(EtlError::Config)?);
        }
        Ok(o)
    }

    /// Connects and runs the SELECT.
    pub fn open(&self) -> Result<odbc::OdbcReader, EtlError> {
        let connection = odbc::connect(&self.connection_string)?;
        odbc::open_table(
            connection,
            &self.select,
            &self.params,
            self.options()?,
            self.table.as_deref(),
        )
    }
}

/// What a reader counted: values replaced, cut, or invalid dates made NULL.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ReadStats {
    pub replaced: BTreeMap<String, u64>,
    pub truncated: BTreeMap<String, (u64, u64)>,
    pub invalid_dates: BTreeMap<String, (u64, u64)>,
}

impl ReadStats {
    /// Adds another reader's counts (the first row seen stays the first).
    pub fn add(&mut self, other: ReadStats) {
        for (c, n) in other.replaced {
            *self.replaced.entry(c).or_default() += n;
        }
        for (map, from) in [
            (&mut self.truncated, other.truncated),
            (&mut self.invalid_dates, other.invalid_dates),
        ] {
            for (c, (n, first)) in from {
                map.entry(c).or_insert((0, first)).0 += n;
            }
        }
    }

    /// The same counts with each column named `table.column`.
    pub fn in_table(self, table: &str) -> ReadStats {
        let name = |c: String| format!("{table}.{c}");
        ReadStats {
            replaced: self
                .replaced
                .into_iter()
                .map(|(c, n)| (name(c), n))
                .collect(),
            truncated: self
                .truncated
                .into_iter()
                .map(|(c, n)| (name(c), n))
                .collect(),
            invalid_dates: self
                .invalid_dates
                .into_iter()
                .map(|(c, n)| (name(c), n))
                .collect(),
        }
    }

    /// Values that did not load as they were: invalid dates made NULL.
    pub fn values_changed(&self) -> u64 {
        self.invalid_dates.values().map(|v| v.0).sum()
    }

    fn of(reader: &mut odbc::OdbcReader) -> Self {
        ReadStats {
            replaced: std::mem::take(&mut reader.replaced),
            truncated: std::mem::take(&mut reader.truncated),
            invalid_dates: std::mem::take(&mut reader.invalid_dates),
        }
    }
}

/// The batches sent to the thread that writes the chunk (readers are
/// threads, not tasks: they send with `blocking_send`).
pub type Batches = tokio::sync::mpsc::Sender<Result<RecordBatch, EtlError>>;

/// An error of one part of a table ("rows with "id" from 500 below 1000").
fn in_part(part: &Option<String>, e: EtlError) -> EtlError {
    match part {
        None => e,
        Some(part) => e.in_context(part),
    }
}

/// Starts a reader of `request` in a thread of this process.
pub fn in_thread(
    request: ReadRequest,
    part: Option<String>,
    batches: Batches,
) -> Result<JoinHandle<Result<ReadStats, EtlError>>, EtlError> {
    std::thread::Builder::new()
        .name("etl-odbc-reader".into())
        .spawn(move || {
            let mut reader = request.open().map_err(|e| in_part(&part, e))?;
            while let Some(batch) = reader.next_batch().transpose() {
                let failed = batch.is_err();
                if batches
                    .blocking_send(batch.map_err(|e| in_part(&part, e)))
                    .is_err()
                    || failed
                {
                    break;
                }
            }
            Ok(ReadStats::of(&mut reader))
        })
        .map_err(|e| EtlError::Io {
            context: "starting an ODBC reader thread".into(),
            source: e,
        })
}

/// The last stderr line of a child reader: its counts, as JSON.
const STATS_LINE: &str = "etl-odbc-read stats: ";
/// The stderr line that carries a reader's error as data
/// ([`EtlError::carry`]).
const ERROR_LINE: &str = "etl-odbc-read error: ";

/// Starts a reader of `request` as a child process (this executable's
/// `odbc-read`), and a thread that sends its batches on.
pub fn in_child(
    request: ReadRequest,
    part: Option<String>,
    batches: Batches,
) -> Result<JoinHandle<Result<ReadStats, EtlError>>, EtlError> {
    let io = |context: &str| {
        let context = context.to_string();
        move |source| EtlError::Io { context, source }
    };
    let exe = std::env::current_exe().map_err(io("finding the etl executable"))?;
    let mut child = std::process::Command::new(exe)
        .args(["-q", "odbc-read"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(io("starting an ODBC reader process (etl odbc-read)"))?;
    let request = serde_json::to_vec(&request)
        .map_err(|e| EtlError::Bug(format!("serializing a read request: {e}")))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::Builder::new()
        .name("etl-odbc-reader".into())
        .spawn(move || {
            // A child that cannot take its request has died: its status
            // below says how, which says more than this write's EPIPE.
            let sent = stdin.write_all(&request);
            drop(stdin);
            // Its warnings are passed on as they come; its counts, its
            // error as data, and its words for people (from "etl: " on,
            // which may run over lines) kept.
            let log = std::thread::spawn(move || said(stderr));
            // Dropping the stream closes the pipe: a child still writing
            // ends on it.
            let (stopped, broken) = forward(stdout, &batches);
            if stopped {
                // The load gave up (another reader failed): stop this one.
                let _ = child.kill();
                let _ = child.wait();
                return Err(in_part(&part, EtlError::Stopped));
            }
            ended(&mut child, log, sent, broken, &part, &batches)
        })
        .map_err(|e| EtlError::Io {
            context: "starting an ODBC reader thread".into(),
            source: e,
        })
}

/// How a reader process ended: its counts, or its error (its own, as it
/// wrote it; else what its status, its words or the broken stream say),
/// also sent to the load, which may still wait for batches. A broken
/// stream is never taken as the end.
fn ended(
    child: &mut std::process::Child,
    log: JoinHandle<(Option<String>, Option<String>, Vec<String>)>,
    sent: std::io::Result<()>,
    broken: Option<arrow::error::ArrowError>,
    part: &Option<String>,
    batches: &Batches,
) -> Result<ReadStats, EtlError> {
    // A broken stream is never taken as the end: the child died
    // (its status and words say why), or its output is not what
    // etl writes.
    let status = child.wait().map_err(|source| EtlError::Io {
        context: "waiting for the reader process".into(),
        source,
    })?;
    let (stats, carried, said) = log.join().unwrap_or_default();
    let ended = if said.is_empty() {
        format!("the reader process (etl odbc-read) ended with {status}; a driver crash?")
    } else {
        said.join("\n")
    };
    let error = match (&broken, status.success()) {
        (None, true) => sent
            .err()
            .map(|e| format!("sending the read request to the reader process: {e}")),
        (None, false) => Some(ended),
        (Some(e), true) => Some(format!("reading the reader process's rows: {e}")),
        (Some(e), false) => Some(format!("{ended} (its rows broke off: {e})")),
    };
    if let Some(error) = error {
        // The reader's own error as it wrote it (a driver error
        // keeps its SQLSTATE, and so whether it is worth trying
        // again); a crash or a broken stream is a driver error
        // without one.
        let typed = || match carried.as_deref().and_then(EtlError::carried) {
            Some(again @ EtlError::ReadAgain { .. }) => again,
            Some(e) => in_part(part, e),
            None => in_part(
                part,
                EtlError::Odbc {
                    context: "the reader process".into(),
                    state: None,
                    message: error.clone(),
                },
            ),
        };
        // The loading thread may still be waiting for batches.
        let _ = batches.blocking_send(Err(typed()));
        return Err(typed());
    }
    stats
        .map(|json| {
            serde_json::from_str(&json)
                .map_err(|e| EtlError::Bug(format!("a reader's counts: {e}")))
        })
        .unwrap_or_else(|| Ok(ReadStats::default()))
}

/// What a reader process wrote on stderr: its counts, its error as data,
/// and its words for people (from "etl: " on, which may run over lines);
/// its warnings are passed on as they come.
fn said(stderr: std::process::ChildStderr) -> (Option<String>, Option<String>, Vec<String>) {
    let (mut stats, mut carried, mut error) = (None, None, Vec::new());
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if let Some(json) = line.strip_prefix(STATS_LINE) {
            stats = Some(json.to_string());
        } else if let Some(json) = line.strip_prefix(ERROR_LINE) {
            carried = Some(json.to_string());
        } else if let Some(first) = line.strip_prefix("etl: ") {
            error.push(first.to_string());
        } else if !error.is_empty() {
            error.push(line);
        } else {
            eprintln!("{line}");
        }
    }
    (stats, carried, error)
}

/// The reader's batches passed on to the load as they come: whether the
/// load stopped taking them, and how the stream broke, if it did.
fn forward(
    stdout: std::process::ChildStdout,
    batches: &Batches,
) -> (bool, Option<arrow::error::ArrowError>) {
    let (mut stopped, mut broken) = (false, None);
    match arrow::ipc::reader::StreamReader::try_new(BufReader::new(stdout), None) {
        Err(e) => broken = Some(e),
        Ok(stream) => {
            for batch in stream {
                match batch {
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                    Ok(batch) => {
                        if batches.blocking_send(Ok(batch)).is_err() {
                            stopped = true;
                            break;
                        }
                    }
                }
            }
        }
    }
    (stopped, broken)
}

/// `etl odbc-read`: reads a request on stdin, writes the rows as an Arrow
/// IPC stream on stdout and its counts as the last stderr line; an error
/// goes to stderr as data (for the loading process) before its words.
pub fn child_main() -> Result<(), EtlError> {
    read_to_stdout().inspect_err(|e| eprintln!("{ERROR_LINE}{}", e.carry()))
}

fn read_to_stdout() -> Result<(), EtlError> {
    let io = |context: &'static str| {
        move |source| EtlError::Io {
            context: context.into(),
            source,
        }
    };
    // Ctrl-C (and a service manager's SIGTERM) reaches the whole process
    // group: the loading process decides
    // (it lets running tables finish), and ends this one by closing its
    // stdout or killing it.
    let _ = ctrlc::set_handler(|| {});
    let request: ReadRequest = serde_json::from_reader(std::io::stdin().lock())
        .map_err(|e| EtlError::Config(format!("etl odbc-read: a bad request on stdin: {e}")))?;
    let mut reader = request.open()?;
    let stdout = std::io::stdout().lock();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(
        std::io::BufWriter::new(stdout),
        &reader.schema(),
    )
    .map_err(|e| EtlError::Bug(format!("starting an Arrow IPC stream: {e}")))?;
    while let Some(batch) = reader.next_batch()? {
        writer.write(&batch).map_err(|e| EtlError::Io {
            context: "writing rows to the loading process".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    writer
        .finish()
        .map_err(|e| EtlError::Bug(format!("ending an Arrow IPC stream: {e}")))?;
    writer
        .into_inner()
        .map_err(|e| EtlError::Bug(format!("ending an Arrow IPC stream: {e}")))?
        .flush()
        .map_err(io("writing rows to the loading process"))?;
    let stats = serde_json::to_string(&ReadStats::of(&mut reader))
        .map_err(|e| EtlError::Bug(format!("a reader's counts: {e}")))?;
    eprintln!("{STATS_LINE}{stats}");
    Ok(())
}
