//! PostgreSQL for every part of etl, and the error and retry rules that
//! go with talking to servers.
//!
//! - [`Endpoint`] where to connect (password, TLS in [`tls`]), [`Pool`] the
//!   one connection pool per endpoint, bounded from the worker count.
//! - [`retry`] the one retry helper: which errors are transient
//!   ([`error::EtlError::is_transient`]), backoff, a fresh session per try.
//! - [`pg_binary`] the binary COPY codecs (Arrow arrays in and out, sans-IO).
//! - [`sessions`] and [`sequences`]: reading and ending sessions, sequences.
//! - [`ddl`] the one place that makes table DDL and reads a table's columns.
//! - [`text`] PostgreSQL's text rules (float8out, identifier length);
//!   [`block_on`] runs a future on this thread's runtime, where its pooled
//!   sessions live.
//!
//! Must not know: sources other than PostgreSQL, sinks, the ledger, the
//! runner, DataFusion, the pipeline file.
pub mod ddl;
mod endpoint;
pub mod error;
pub mod pg_binary;
mod pool;
pub mod retry;
pub mod sequences;
pub mod sessions;
pub mod text;
pub mod tls;

pub use endpoint::*;
pub use pool::{block_on, close_idle_here, limit, limit_for, peaks, set_limit, Conn, Pool};
pub use tls::{SslMode, TlsOptions};
