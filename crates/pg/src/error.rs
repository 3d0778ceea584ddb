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
    /// The source and target do not fit together, or a column cannot be carried.
    #[error("{0}")]
    Schema(String),
    /// A value did not fit its column's fetch buffer, which started small
    /// and may grow: the chunk is read again, at once, with buffers of
    /// `bytes` for `column` (not a failure; see
    /// `etl::source::odbc::ADAPTIVE_BYTES`).
    #[error("read again with larger fetch buffers: {{\"column\":{column:?},\"bytes\":{bytes}}}")]
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

impl EtlError {
    /// Whether trying the chunk again may succeed: the connection broke,
    /// the server is shutting down or starting, a deadlock or serialization
    /// failure, a lock timeout, too many connections. Statement timeouts,
    /// constraint violations, type
    /// mismatches and bad data are permanent: retrying cannot help.
    pub fn is_transient(&self) -> bool {
        match self {
            EtlError::Connect(_) => true,
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
            EtlError::Connect(_) => true,
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

    /// A [`EtlError::ReadAgain`] read back from its text (a reader
    /// process's last words).
    pub fn read_again_from(text: &str) -> Option<EtlError> {
        let json = text
            .split("read again with larger fetch buffers: ")
            .nth(1)?
            .lines()
            .next()?;
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        Some(EtlError::ReadAgain {
            column: v.get("column")?.as_str()?.to_string(),
            bytes: v.get("bytes")?.as_u64()? as usize,
        })
    }

    /// An ODBC error that arrived as text (from a reader process): its
    /// SQLSTATE read back from odbc-api's "State: XXXXX" when it is there.
    pub fn odbc_text(context: impl Into<String>, message: String) -> EtlError {
        let state = message
            .split("State: ")
            .nth(1)
            .map(|rest| rest.chars().take(5).collect::<String>())
            .filter(|s| s.len() == 5 && s.chars().all(|c| c.is_ascii_alphanumeric()));
        EtlError::Odbc {
            context: context.into(),
            state,
            message,
        }
    }

    /// The same error with `prefix` before its message: whose rows, which
    /// part. Typed errors keep their type.
    pub fn in_context(self, prefix: &str) -> EtlError {
        match self {
            EtlError::Schema(m) => EtlError::Schema(format!("{prefix}: {m}")),
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
        let lost = EtlError::odbc_text(
            "reading",
            "ODBC emitted an error calling 'SQLFetch':\nState: 08S01, Native error: 0, Message: lost".into(),
        );
        assert!(lost.is_transient(), "{lost:?}");
        let syntax = EtlError::odbc_text(
            "reading",
            "State: 42000, Native error: 1, Message: syntax".into(),
        );
        assert!(!syntax.is_transient());
        assert!(!EtlError::odbc_text("reading", "a crash".into()).is_transient());
        // Context is added in front; the state stays.
        let e = lost.in_context("source table \"t\"");
        assert!(
            e.to_string().starts_with("source table \"t\": reading: "),
            "{e}"
        );
        assert!(e.is_transient());
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
