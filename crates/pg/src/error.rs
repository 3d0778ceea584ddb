//! Errors of a running pipeline. A chunk's error is recorded with the chunk
//! and never stops the run; the message says what failed, where, and what
//! to change.

use crate::pg_binary::decode::DecodeError;
use crate::pg_binary::encode::EncodeError;
use crate::ConnectError;

#[derive(Debug, thiserror::Error)]
pub enum EtlError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A statement failed; `context` says which and on what.
    #[error("{context}: {}", pg_message(.source))]
    Postgres {
        context: String,
        source: tokio_postgres::Error,
    },
    #[error("decoding the source's COPY stream: {0}")]
    Decode(#[from] DecodeError),
    #[error("encoding rows for the target: {0}")]
    Encode(#[from] EncodeError),
    /// Bad input or configuration: a setting of the pipeline file, or a
    /// source or target that does not fit it. The message names where and
    /// what to change; trying again cannot help.
    #[error("{0}")]
    Config(String),
    /// A value, row or line of the source that cannot be carried as it is;
    /// the message names the file or table, the row or line, the column,
    /// and the setting that would take it.
    #[error("{0}")]
    Data(String),
    /// What was planned or recorded no longer matches what is there (a
    /// file changed since the plan, etl's own records edited by hand); the
    /// message says what to run again.
    #[error("{0}")]
    Changed(String),
    /// A program etl runs (pg_dump, mdb-schema) is missing or failed.
    #[error("{0}")]
    Tool(String),
    /// A reader stopped because the load gave up on its chunk (another
    /// reader of it failed first, with the error that counts).
    #[error("stopped: the load gave up on this chunk")]
    Stopped,
    /// A value did not fit its column's fetch buffer, which started small
    /// and may grow: the chunk is read again, at once, with buffers of
    /// `bytes` for `column` (not a failure; see
    /// `etl::source::odbc::ADAPTIVE_BYTES`).
    #[error("read again with larger fetch buffers: {bytes} bytes for column {column:?}")]
    ReadAgain { column: String, bytes: usize },
    /// An ODBC driver call failed; `state` is the driver's SQLSTATE.
    #[error("{context}: {message}")]
    Odbc {
        context: String,
        state: Option<String>,
        message: String,
    },
    /// A transform stage failed; `index` counts `[[transforms]]` from 0.
    #[error("transforms[{index}]: {message}")]
    Transform { index: usize, message: String },
    /// The target stayed locked by another session past `lock_timeout`.
    #[error("target table {table} is locked by {holders}; gave up after lock_timeout_secs = {lock_timeout_secs} ([sinks.timeouts]): {last}")]
    Busy {
        table: String,
        holders: String,
        lock_timeout_secs: f64,
        last: Box<EtlError>,
    },
    /// A chunk failed on every attempt.
    #[error("failed after {attempts} attempts; last error: {last}")]
    Retried { attempts: u32, last: Box<EtlError> },
    /// An invariant broke: a bug in etl, not the user's doing.
    #[error("this is a bug in etl, please report it: {0}")]
    Bug(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// [`EtlError`] as JSON between processes ([`EtlError::carry`]).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Carried {
    Odbc {
        context: String,
        state: Option<String>,
        message: String,
    },
    ReadAgain {
        column: String,
        bytes: usize,
    },
    Config {
        message: String,
    },
    Data {
        message: String,
    },
    Changed {
        message: String,
    },
    Bug {
        message: String,
    },
    Other {
        message: String,
        transient: bool,
    },
}

impl EtlError {
    /// Whether trying the chunk again may succeed: the connection broke,
    /// the server is shutting down or starting, a deadlock or serialization
    /// failure, a lock timeout, too many connections. Statement timeouts,
    /// constraint violations, type
    /// mismatches and bad data are permanent: retrying cannot help.
    pub fn is_transient(&self) -> bool {
        match self {
            EtlError::Connect(e) => e.is_transient(),
            // A lost session, or a serialization failure, deadlock or lock
            // timeout on a session that is fine.
            EtlError::Postgres { source, .. } => {
                self.is_connection_lost()
                    || source
                        .code()
                        .is_some_and(|c| matches!(c.code(), "40001" | "40P01" | "55P03"))
            }
            // The driver lost its connection or timed out, or the source
            // database chose this statement as a deadlock or
            // serialization victim.
            EtlError::Odbc {
                state: Some(state), ..
            } => {
                state.starts_with("08")
                    || matches!(state.as_str(), "HYT00" | "HYT01" | "40001" | "40P01")
            }
            // Only where trying again can help: a network hiccup, not a
            // missing file or a full disk.
            EtlError::Io { source, .. } => {
                use std::io::ErrorKind::*;
                matches!(
                    source.kind(),
                    ConnectionReset
                        | ConnectionAborted
                        | ConnectionRefused
                        | BrokenPipe
                        | TimedOut
                        | Interrupted
                        | UnexpectedEof
                )
            }
            EtlError::Busy { .. } => true,
            _ => false,
        }
    }

    /// Whether the session itself was lost (the connection broke, the
    /// server ended it or went down, a new one could not be made): the
    /// step must be tried again on a new session. Unlike
    /// [`EtlError::is_transient`], a lock timeout or deadlock is not: the
    /// session is fine, and a phase reports such a step and goes on.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            EtlError::Connect(e) => e.is_transient(),
            EtlError::Postgres { source, .. } => match source.code() {
                Some(code) => {
                    let c = code.code();
                    c.starts_with("08") // connection exception
                        || c.starts_with("57P") // admin/crash shutdown, cannot connect now
                        || c == "53300" // too many clients
                }
                // No SQLSTATE: the client lost the connection (I/O, closed).
                None => {
                    source.is_closed()
                        || std::error::Error::source(source)
                            .is_some_and(|e| e.is::<std::io::Error>())
                }
            },
            EtlError::Retried { last, .. } => last.is_connection_lost(),
            _ => false,
        }
    }

    /// The error as JSON, to cross a process boundary (an ODBC reader
    /// process to the loading process) with its kind and the values that
    /// locate it: [`EtlError::carried`] gives the same error back, so the
    /// loading process decides on retries as if it had failed itself.
    pub fn carry(&self) -> String {
        let message = self.to_string();
        let carried = match self {
            EtlError::Odbc {
                context,
                state,
                message,
            } => Carried::Odbc {
                context: context.clone(),
                state: state.clone(),
                message: message.clone(),
            },
            EtlError::ReadAgain { column, bytes } => Carried::ReadAgain {
                column: column.clone(),
                bytes: *bytes,
            },
            EtlError::Config(_) => Carried::Config { message },
            EtlError::Data(_) => Carried::Data { message },
            EtlError::Changed(_) => Carried::Changed { message },
            EtlError::Bug(m) => Carried::Bug { message: m.clone() },
            other => Carried::Other {
                message,
                transient: other.is_transient(),
            },
        };
        serde_json::to_string(&carried).expect("plain strings and numbers serialize")
    }

    /// An error [`EtlError::carry`] wrote, or `None` when `json` is not one.
    pub fn carried(json: &str) -> Option<EtlError> {
        Some(match serde_json::from_str::<Carried>(json).ok()? {
            Carried::Odbc {
                context,
                state,
                message,
            } => EtlError::Odbc {
                context,
                state,
                message,
            },
            Carried::ReadAgain { column, bytes } => EtlError::ReadAgain { column, bytes },
            Carried::Config { message } => EtlError::Config(message),
            Carried::Data { message } => EtlError::Data(message),
            Carried::Changed { message } => EtlError::Changed(message),
            Carried::Bug { message } => EtlError::Bug(message),
            // Transient as it was: an I/O fault of the kind that is.
            Carried::Other { message, transient } => EtlError::Io {
                context: "in the reader process".into(),
                source: std::io::Error::new(
                    match transient {
                        true => std::io::ErrorKind::Interrupted,
                        false => std::io::ErrorKind::Other,
                    },
                    message,
                ),
            },
        })
    }

    /// The same error with `prefix` before its message: whose rows, which
    /// part. Typed errors keep their type.
    pub fn in_context(self, prefix: &str) -> EtlError {
        match self {
            EtlError::Config(m) => EtlError::Config(format!("{prefix}: {m}")),
            EtlError::Data(m) => EtlError::Data(format!("{prefix}: {m}")),
            EtlError::Changed(m) => EtlError::Changed(format!("{prefix}: {m}")),
            EtlError::Odbc {
                context,
                state,
                message,
            } => EtlError::Odbc {
                context: format!("{prefix}: {context}"),
                state,
                message,
            },
            other => other,
        }
    }

    /// The SQLSTATE of a server error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            EtlError::Postgres { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }

    pub fn pg(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> EtlError {
        let context = context.into();
        move |source| EtlError::Postgres { context, source }
    }
}

/// The server's message with its detail and hint, or the client error.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; detail: {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                s.push_str(&format!(": {c}"));
                cause = c.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odbc_errors_are_transient_by_their_sqlstate() {
        let odbc = |state: Option<&str>| EtlError::Odbc {
            context: "reading".into(),
            state: state.map(String::from),
            message: "ODBC emitted an error calling 'SQLFetch'".into(),
        };
        let lost = odbc(Some("08S01"));
        assert!(lost.is_transient(), "{lost:?}");
        assert!(!odbc(Some("42000")).is_transient());
        assert!(!odbc(None).is_transient());
        // Context is added in front; the state stays.
        let e = lost.in_context("source table \"t\"");
        assert!(
            e.to_string().starts_with("source table \"t\": reading: "),
            "{e}"
        );
        assert!(e.is_transient());
    }

    #[test]
    fn an_error_carried_between_processes_keeps_its_kind_and_values() {
        let odbc = EtlError::Odbc {
            context: "rows of \"t\"".into(),
            state: Some("08S01".into()),
            message: "lost".into(),
        };
        let back = EtlError::carried(&odbc.carry()).unwrap();
        assert!(
            matches!(&back, EtlError::Odbc { state: Some(s), context, .. } if s == "08S01" && context == "rows of \"t\""),
            "{back:?}"
        );
        assert!(back.is_transient());
        let again = EtlError::ReadAgain {
            column: "memo".into(),
            bytes: 65536,
        };
        assert!(matches!(
            EtlError::carried(&again.carry()),
            Some(EtlError::ReadAgain { bytes: 65536, column }) if column == "memo"
        ));
        let data =
            EtlError::Data("column \"x\": row 3 holds bytes that are not valid EUC-KR".into());
        let back = EtlError::carried(&data.carry()).unwrap();
        assert!(
            matches!(&back, EtlError::Data(m) if m.contains("row 3")),
            "{back:?}"
        );
        assert!(!back.is_transient());
        let reset = EtlError::Io {
            context: "writing rows".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        };
        assert!(EtlError::carried(&reset.carry()).unwrap().is_transient());
        assert!(EtlError::carried("a crash").is_none());
        assert!(EtlError::carried("{\"kind\":\"odbc\"}").is_none());
    }

    #[test]
    fn io_errors_are_transient_only_where_a_retry_can_help() {
        let io = |kind| EtlError::Io {
            context: "x".into(),
            source: std::io::Error::from(kind),
        };
        assert!(io(std::io::ErrorKind::ConnectionReset).is_transient());
        assert!(!io(std::io::ErrorKind::NotFound).is_transient());
        assert!(!io(std::io::ErrorKind::PermissionDenied).is_transient());
    }
}
