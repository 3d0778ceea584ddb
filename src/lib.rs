//! etl moves data into PostgreSQL fast and safely, driven by one pipeline file.
//!
//! - [`config`] parses the file (serde), then checks every value without a
//!   connection, each problem with its line and key.
//! - [`source`] streams Arrow record batches per chunk: PostgreSQL through
//!   binary `COPY (...) TO STDOUT` decoded by [`pg_binary`], Parquet files,
//!   or any ODBC driver (narrow text decoded from a code page).
//! - [`plan`] cuts the source into chunks: half-open time windows, per key;
//!   ranges of an integer key; whole tables.
//! - [`transform`] runs SQL stages on DataFusion inside each chunk.
//! - [`run`] gives chunks to a rayon pool; each worker drives a chunk end to
//!   end (a reader thread decodes while the worker encodes and writes),
//!   retries transient failures, and records the rest in the failed-chunk CSV.
//! - [`sink`] commits each chunk atomically: one PostgreSQL transaction around
//!   binary `COPY ... FROM STDIN` with its [`sink::ledger`] row, or one Parquet
//!   file renamed into place.
//! - [`migrate`] moves a whole ODBC database as phases around [`run`]:
//!   discover, create, data (the chunks), constraints, sequences, verify.
//! - [`schema`] diffs two PostgreSQL schemas, plans the change graded by
//!   risk, and applies it under short lock timeouts.
//! - [`verify`] compares source and targets per chunk; [`cli`] is the command line.
pub(crate) use etl_base::hooks;
pub use etl_base::{plan, sql, time};
pub use etl_migrate as migrate;
pub use etl_model::{verify, wide};
pub use etl_pg as pg;
pub use etl_pg::{error, pg_binary, retry};
pub use etl_run as run;
pub use etl_run::checks;
pub use etl_schema as schema;
pub use etl_sink as sink;
pub use etl_source as source;
pub use etl_transform as transform;

pub mod cli;
pub mod config;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod logging;
pub mod preflight;
pub mod status;
