//! Errors of a running pipeline. A chunk's error is recorded with the chunk
//! and never stops the run; the message says what failed, where, and what
//! to change.

use crate::pg::ConnectError;
use crate::pg_binary::decode::DecodeError;
use crate::pg_binary::encode::EncodeError;

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
            EtlError::Postgres { source, .. } => match source.code() {
                Some(code) => {
                    let c = code.code();
                    c.starts_with("08") // connection exception
                        || c.starts_with("57P") // admin/crash shutdown, cannot connect now
                        || matches!(c, "40001" | "40P01" | "55P03" | "53300")
                }
                // No SQLSTATE: the client lost the connection (I/O, closed).
                None => {
                    source.is_closed()
                        || std::error::Error::source(source)
                            .is_some_and(|e| e.is::<std::io::Error>())
                }
            },
            EtlError::Io { .. } | EtlError::Busy { .. } => true,
            _ => false,
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
