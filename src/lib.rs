//! etl moves data into PostgreSQL fast and safely, driven by one pipeline
//! file. This crate is the binary's: [`cli`] the command line, [`config`]
//! the pipeline file (parsed with serde, then every value checked without a
//! connection, each problem with its line and key), [`preflight`],
//! [`status`], [`logging`]. The work is done by the workspace's crates,
//! layered so each uses only those before it (README, "Layout"):
//!
//! `etl-base` (quoting, time, the range splitter) -> `etl-pg` (endpoints,
//! the pool, COPY codecs, DDL, errors, the retry helper) -> `etl-model`
//! (chunking, rows between layers, checksums, the ledger's traits) ->
//! `etl-schema`, and the siblings `etl-source`, `etl-transform`,
//! `etl-sink`, `etl-ledger` -> `etl-run` (the one chunk runner) -> `etl-migrate` (whole databases as phases around it).
//!
//! They are re-exported here under the module names they had when this
//! was one crate (`etl::source`, `etl::pg`, ...), for the tests and benches.
pub(crate) use etl_base::hooks;
pub use etl_base::{plan, sql, time};
pub use etl_ledger as ledger;
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
