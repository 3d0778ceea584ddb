//! ODBC sources: any driver unixODBC knows (SQL Server through FreeTDS,
//! SQLite, MS Access through MDBTools, PostgreSQL through psqlODBC).
//!
//! - [`read`]: one SELECT into Arrow batches (row arrays, or row by row
//!   in `read/rows.rs`), narrow text decoded from the configured code
//!   page, bounds bound as typed parameters; under it,
//!   [`statement`] (the ODBC calls: connecting, statements, cursors, the
//!   catalog functions) and [`values`] (text, times and GUIDs made exact).
//! - [`process`]: where that reader runs: a thread of this process, or a
//!   child process (`readers` > 1: drivers that serialise threads on a
//!   process-wide lock, SQLite's, read in parallel only as processes).
//! - [`OdbcSource`]: an ODBC query or table as a [`crate::Source`] of the chunk
//!   runner: time windows (optionally per key) planned through the driver
//!   and read with `WHERE t >= ? AND t < ? [AND key = ?]`.
//!
//! A whole database (`tables = ["*"]`) is read by `etl::migrate`, table
//! by table, through the same reader.

pub mod catalog;
pub mod config;
pub mod process;
mod read;
mod source;
mod statement;
mod stream;
mod values;

pub use read::*;
pub use source::{describe, KeyKind, OdbcSource, Relation, Split, SplitKey, TimeKind};
pub use statement::*;
#[cfg(feature = "fuzzing")]
pub use values::decode_texts;
pub use values::round_to_micros;

use std::collections::BTreeMap;

use process::ReadStats;

/// An ODBC source whose settings make sense (the driver is reached only
/// when the run starts).
#[derive(Debug, Clone)]
pub struct OdbcSpec {
    pub connection_string: String,
    pub relation: OdbcRelation,
    /// The encoding label as written (`cp949`).
    pub encoding_label: String,
    pub options: OdbcOptions,
    /// Connections reading one big table at once (ranges of its key).
    pub readers: usize,
}

/// What an ODBC source reads.
#[derive(Debug, Clone)]
pub enum OdbcRelation {
    Query(String),
    /// Table names or `*`, and names left out.
    Tables {
        include: Vec<String>,
        exclude: Vec<String>,
    },
}

/// The spec as its driver needs it: MDBTools is read row by row and hands
/// out UTF-8 (the file's code page becomes `MDB_JET3_CHARSET`); SQLite
/// without `StepAPI=1` holds a whole result in memory (warned).
pub fn prepare(spec: &OdbcSpec) -> OdbcSpec {
    let mut spec = spec.clone();
    if catalog::is_mdbtools(&spec.connection_string) {
        // MDBTools refuses row arrays: it is read one row at a time.
        spec.options.row_by_row = true;
        mdbtools_code_page(&mut spec.options);
    }
    let lower = spec.connection_string.to_ascii_lowercase();
    let sqlite = lower.contains("sqlite");
    if sqlite && !lower.contains("stepapi") {
        tracing::warn!("SQLite's ODBC driver holds a whole result in memory unless the connection string has StepAPI=1; add it to keep memory bounded by the batch.");
    }
    if spec.readers == 0 {
        // SQLite's driver serialises threads on a process-wide lock: its
        // chunks read in parallel only as processes.
        spec.readers = if sqlite { 2 } else { 1 };
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
