//! etl moves data into PostgreSQL fast and safely.
pub mod pg_binary;
