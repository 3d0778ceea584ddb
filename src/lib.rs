//! etl moves data into PostgreSQL fast and safely.
pub mod config;
pub mod pg;
pub mod pg_binary;
pub mod sql;
pub mod time;
