//! The ledger: which chunks of a pipeline are registered, claimed, done or
//! failed, the pipeline's cutoff, and the steps of a migration's phases.
//!
//! - [`pg`] a PostgreSQL target's ledger, kept in its database
//!   (`etl.chunk_ledger`, `etl.cutoff`, `etl.phase_log`, in the schema
//!   `etl` or the sink's `ledger_schema`; the SQL in
//!   [`sql`], the tables a pipeline created in [`created`]): its chunk
//!   writers join it on their own sessions, inside each chunk's
//!   transaction, through `etl_model::ledger::InTransaction`.
//! - [`file`] a file sink's ledger: the files are the record of their
//!   chunks (a chunk's file exists only once complete), the cutoff a small
//!   file beside them.
//! - [`forget`] `etl forget`: a pipeline's rows out of a target's ledger,
//!   and its schema dropped once empty.
//!
//! Must not know: sources, transforms, sinks or the runner; it sees chunks
//! and the names of their targets.

pub mod created;
pub mod file;
pub mod forget;
pub mod pg;
pub mod sql;

pub use file::FileLedger;
pub use pg::PgLedger;
