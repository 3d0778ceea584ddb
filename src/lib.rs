//! etl moves data into PostgreSQL fast and safely.
pub mod cli;
pub mod config;
pub mod error;
pub mod pg;
pub mod pg_binary;
pub mod plan;
pub mod run;
pub mod sink;
pub mod source;
pub mod sql;
pub mod time;
pub mod verify;
