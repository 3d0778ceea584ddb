//! The integration tests: the `etl` binary against a real PostgreSQL.
//! One test binary (ripgrep's layout); one file per topic.

mod support;

mod access;
mod config_errors;
mod connections;
mod copy;
mod copy_command;
mod csv;
mod csv_export;
mod docs;
mod failures;
mod faults;
mod fixtures_script;
mod follow;
mod layout;
mod migrate;
mod odbc;
mod odbc_chunks;
mod operations;
mod parquet;
mod pg_cuts;
mod pg_database;
mod phase_faults;
mod pivot;
mod pivot_stages;
mod processes;
mod resume;
mod schema;
mod schema_kinds;
mod schema_rollback;
mod schema_stages;
mod status;
mod tls;
mod transforms;
mod types;
mod verify;
mod without_sql;
