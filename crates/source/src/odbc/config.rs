//! `[source] type = "odbc"` checked: its connection string, what it reads
//! (a query, or tables), code page, buffers, readers and casts, into the
//! spec the ODBC source is built from.

use serde::Deserialize;

use super::{OdbcRelation, OdbcSpec};
use crate::options::{add, default_batch_bytes, default_encoding, OnInvalidText, Problems};
use etl_base::env;

/// `[source]` with `type = "odbc"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdbcSourceConfig {
    /// An ODBC connection string (`Driver={MDBTools};DBQ=file.mdb;`) or
    /// `DSN=name;`; a password via `${ENV}`.
    #[serde(deserialize_with = "env::string")]
    pub connection_string: String,
    /// One query whose rows are loaded into the sink's table. Exactly one
    /// of `query` and `tables`.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub query: Option<String>,
    /// Whole-database migration: `["*"]` for every user table, or a list.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Tables left out of `tables`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Code page of the source's narrow text (any encoding_rs label, and
    /// cp949/uhc/ms949). Default utf-8.
    #[serde(default = "default_encoding", deserialize_with = "env::string")]
    pub encoding: String,
    /// `error` (default) or `replace` (U+FFFD, counted per column).
    #[serde(default)]
    pub on_invalid_text: OnInvalidText,
    /// Rows per batch fetched from the driver. Default 10,000.
    #[serde(default = "default_odbc_batch_rows")]
    pub batch_rows: usize,
    /// Bytes of fetch buffers per batch; whichever limit is smaller wins.
    /// Default 32 MiB.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// The longest text or binary value, in bytes (see `on_long_value`).
    /// Also the fetch buffer of a text column with a long declared length,
    /// so it sizes batches. Default 65,536.
    #[serde(default = "default_max_text_bytes")]
    pub max_text_bytes: usize,
    /// With more than 1, every chunk is read by a child process (`etl
    /// odbc-read`), and a migration runs at least this many chunks at once
    /// (big tables cut into at least this many ranges): drivers that
    /// serialise threads (SQLite) read in parallel only as processes, and
    /// a driver crash fails its chunk, not the run. 1: threads. Default:
    /// 2 for SQLite's driver (it takes a process-wide lock on every
    /// allocation), 1 for others.
    #[serde(default = "default_readers")]
    pub readers: usize,
    /// A value longer than `max_text_bytes`: `error` (default: its table
    /// fails, naming column and row) or `truncate` (cut to the limit on a
    /// character boundary, counted per column in the summary).
    #[serde(default)]
    pub on_long_value: OnLongValue,
    /// `[source.casts]`: columns read another way than their ODBC type says,
    /// `"Table.Column" = "text"` (or `"Column"` for every table); `text`
    /// or `binary`. For types etl cannot map.
    #[serde(default)]
    pub casts: std::collections::BTreeMap<String, String>,
}

/// What to do with a text or binary value longer than `max_text_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLongValue {
    #[default]
    Error,
    Truncate,
}

/// 0: chosen by driver (SQLite: processes; others: threads).
pub(crate) const fn default_readers() -> usize {
    0
}

pub(crate) const fn default_odbc_batch_rows() -> usize {
    10_000
}

pub(crate) const fn default_max_text_bytes() -> usize {
    65_536
}

/// The spec, or (key, message) problems.
pub fn validate(s: OdbcSourceConfig) -> Result<OdbcSpec, Problems> {
    let mut problems = Problems::new();
    if s.connection_string.trim().is_empty() {
        add(
            &mut problems,
            "source.connection_string",
            "is empty; write one like \"Driver={MDBTools};DBQ=data.mdb;\" or \"DSN=name;\"",
        );
    }
    let relation = relation(
        &mut problems,
        s.query.as_deref(),
        s.tables.as_deref(),
        &s.exclude,
    );
    if !s.exclude.is_empty() && !matches!(relation, Some(OdbcRelation::Tables { .. })) {
        add(
            &mut problems,
            "source.exclude",
            "only applies with `tables`",
        );
    }
    let options = options(&mut problems, &s);
    if s.batch_rows == 0 {
        add(&mut problems, "source.batch_rows", "must be at least 1");
    }
    if s.batch_bytes < 1024 {
        add(&mut problems, "source.batch_bytes", "must be at least 1024");
    }
    if s.max_text_bytes == 0 {
        add(&mut problems, "source.max_text_bytes", "must be at least 1");
    }
    if !(0..=64).contains(&s.readers) {
        add(
            &mut problems,
            "source.readers",
            "must be 1 to 64 (or 0: chosen by driver)",
        );
    }
    match (relation, options) {
        (Some(relation), Some(options)) if problems.is_empty() => Ok(OdbcSpec {
            connection_string: s.connection_string,
            relation,
            encoding_label: s.encoding,
            options,
            readers: s.readers,
        }),
        _ => Err(problems),
    }
}

/// What the source reads: a query, or tables.
fn relation(
    problems: &mut Problems,
    query: Option<&str>,
    tables: Option<&[String]>,
    exclude: &[String],
) -> Option<OdbcRelation> {
    match (query, tables) {
        (Some(q), None) if q.trim().is_empty() => {
            add(problems, "source.query", "is empty; write a SELECT");
            None
        }
        (Some(q), None) => Some(OdbcRelation::Query(
            q.trim().trim_end_matches(';').to_string(),
        )),
        (None, Some(t)) if t.is_empty() || t.iter().any(|t| t.trim().is_empty()) => {
            add(
                problems,
                "source.tables",
                "must list table names, or be [\"*\"] for every user table",
            );
            None
        }
        (None, Some(t)) => Some(OdbcRelation::Tables {
            include: t.to_vec(),
            exclude: exclude.to_vec(),
        }),
        (Some(_), Some(_)) => {
            add(
                problems,
                "source.query",
                "give either `query` or `tables`, not both",
            );
            None
        }
        (None, None) => {
            add(
                problems,
                "source",
                "needs `query` (a SELECT) or `tables` ([\"*\"] for the whole database)",
            );
            None
        }
    }
}

/// How the driver's values are read: code page, buffers, casts.
fn options(problems: &mut Problems, s: &OdbcSourceConfig) -> Option<super::OdbcOptions> {
    match super::OdbcOptions::new(&s.encoding) {
        Ok(mut o) => {
            o.replace_invalid = s.on_invalid_text == OnInvalidText::Replace;
            o.batch_rows = s.batch_rows;
            o.batch_bytes = s.batch_bytes;
            o.max_text_bytes = s.max_text_bytes;
            o.truncate_long = s.on_long_value == OnLongValue::Truncate;
            for (column, cast) in &s.casts {
                match super::Cast::parse(cast) {
                    Ok(cast) => {
                        o.casts.insert(column.clone(), cast);
                    }
                    Err(e) => add(problems, &format!("source.casts.{column}"), e),
                }
            }
            Some(o)
        }
        Err(e) => {
            add(problems, "source.encoding", e.to_string());
            None
        }
    }
}
