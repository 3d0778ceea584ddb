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
