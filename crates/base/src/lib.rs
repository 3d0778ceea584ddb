//! The bottom layer of etl: what every other crate may use and nothing
//! here may know about them.
//!
//! - [`sql`] quotes identifiers and literals for SQL text (the one place).
//! - [`time`] parses and prints timestamps as microseconds since 1970.
//! - [`plan`] cuts work into chunks: the one range splitter (integer, text
//!   and time ranges, property-tested), the time-window rule.
//! - [`compression`] a file's compression, by its name.
//! - [`csv_line`] splits a line of the small CSV files etl reads itself.
//! - [`env`] `${NAME}` in pipeline strings, from the environment.
//! - [`hooks`] the test-only fault injection points.
//! - [`human`] numbers, sizes and durations as people read them.
//!
//! Must not know: PostgreSQL sessions, Arrow, any source or sink, the
//! ledger, the runner. No I/O here except the test hooks' resume file.
pub mod compression;
pub mod csv_line;
pub mod env;
pub mod hooks;
pub mod human;
pub mod plan;
pub mod sql;
pub mod time;
