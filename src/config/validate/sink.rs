//! `[[sinks]]`: each sink's settings checked against what the source
//! makes of them (a migration, byte ranges of files, time windows).

use super::*;
use etl_model::ledger::LedgerSchema;

/// What the source and `[chunks]` make of the sinks' settings.
pub(super) struct Shape {
    pub is_migration: bool,
    pub csv_windows: bool,
    pub csv_ranges: bool,
    pub odbc_windows: bool,
    /// Whether an ODBC migration reads whole tables.
    pub odbc_tables: Option<bool>,
    /// The one table a windowed ODBC source reads, for `{table}`.
    pub odbc_table: Option<String>,
    /// `[chunks] key_column` is set.
    pub key_column: bool,
    /// Parquet files read whole, each a chunk keyed by its name.
    pub parquet_files: bool,
    /// A whole PostgreSQL database: its tables keep their schemas and names.
    pub pg_database: bool,
    /// The source is read whole, in one chunk (a PostgreSQL table or query
    /// without [chunks] time_column): a file sink's path may be fixed.
    pub one_chunk: bool,
}

/// Sink `i` checked; `None` when it has problems (collected).
pub(super) fn sink(
    c: &mut Collector<'_>,
    i: usize,
    sink: SinkConfig,
    shape: &Shape,
) -> Option<ValidatedSink> {
    match sink {
        SinkConfig::Parquet(s) => parquet(c, i, s, shape),
        SinkConfig::Csv(s) => csv(c, i, s, shape),
        SinkConfig::Postgres(s) => postgres(c, i, s, shape),
    }
}

fn parquet(
    c: &mut Collector<'_>,
    i: usize,
    s: crate::config::ParquetSinkConfig,
    shape: &Shape,
) -> Option<ValidatedSink> {
    if shape.pg_database {
        c.add(
            &format!("sinks[{i}].type"),
            "a whole PostgreSQL database goes into files as the server's own CSV (type = \"csv\"); into Parquet not yet (its tables are handed over as COPY data)",
        );
    }
    file_path(c, i, &s.path, shape, "parquet");
    if s.row_group_rows == 0 {
        c.add(&format!("sinks[{i}].row_group_rows"), "must be at least 1");
    }
    Some(ValidatedSink::Parquet(ParquetSinkSpec {
        path: s.path,
        compression: s.compression,
        row_group_rows: s.row_group_rows,
    }))
}

fn csv(
    c: &mut Collector<'_>,
    i: usize,
    s: crate::config::CsvSinkConfig,
    shape: &Shape,
) -> Option<ValidatedSink> {
    file_path(c, i, &s.path, shape, "csv");
    let key = |k: &str| format!("sinks[{i}].{k}");
    let delimiter = match s.delimiter.as_bytes() {
        [b] if b.is_ascii() && *b != b'"' && *b != b'\n' && *b != b'\r' => Some(*b),
        _ => {
            c.add(
                &key("delimiter"),
                format!(
                    "{:?} must be one ASCII character other than a quote or a line break",
                    s.delimiter
                ),
            );
            None
        }
    };
    let encoding = match crate::source::encoding_for(&s.encoding) {
        Ok(e) if e.is_ascii_compatible() && e.output_encoding() == e => Some(e),
        Ok(_) => {
            c.add(&key("encoding"), format!("{:?} cannot be written here (UTF-16 and replacement are read-only in encoding_rs); use utf-8 or a legacy code page", s.encoding));
            None
        }
        Err(e) => {
            c.add(&key("encoding"), e);
            None
        }
    };
    if s.null.contains(['"', '\n', '\r'])
        || delimiter.is_some_and(|d| s.null.as_bytes().contains(&d))
    {
        c.add(
            &key("null"),
            "must not hold a quote, a line break or the delimiter",
        );
    }
    let (delimiter, encoding) = delimiter.zip(encoding)?;
    Some(ValidatedSink::Csv(CsvSinkSpec {
        path: s.path,
        header: s.header,
        delimiter,
        null: s.null,
        encoding,
    }))
}

fn postgres(
    c: &mut Collector<'_>,
    i: usize,
    s: crate::config::PostgresSinkConfig,
    shape: &Shape,
) -> Option<ValidatedSink> {
    let key = |k: &str| format!("sinks[{i}].{k}");
    let endpoint = endpoint(
        c,
        &key("url"),
        &s.url,
        s.password_env.clone(),
        TlsKeys {
            sslmode: &s.sslmode,
            sslrootcert: &s.sslrootcert,
            sslcert: &s.sslcert,
            sslkey: &s.sslkey,
        },
    );
    let table = table_template(c, i, &s, shape);
    // A migration: its tables are a database's, an Access file's, ODBC
    // tables or CSV files (`{file}`).
    let migration = shape.is_migration || (shape.csv_ranges && table.has_key());
    if s.fk_handling.is_some() && (!migration || s.create_table) {
        c.add(&key("fk_handling"), "applies to a migration (a whole database, an Access file, ODBC tables, or CSV files with {file}) loaded into tables that exist (create_table = false); leave it out");
    }
    if let Some(pk) = &s.primary_key {
        if pk.is_empty() || pk.iter().any(|c| c.trim().is_empty()) {
            c.add(&key("primary_key"), "must list one or more column names");
        }
    }
    for (name, v) in [
        ("lock_timeout_secs", s.timeouts.lock_timeout_secs),
        ("statement_timeout_secs", s.timeouts.statement_timeout_secs),
    ] {
        if !(0.0..=86_400.0).contains(&v) {
            c.add(
                &key(&format!("timeouts.{name}")),
                format!("{v} is out of range; use 0 (no limit) to 86400"),
            );
        }
    }
    let ledger_schema = match s.ledger_schema.as_deref().map(LedgerSchema::new) {
        None => LedgerSchema::default(),
        Some(Ok(schema)) => schema,
        Some(Err(why)) => {
            c.add(&key("ledger_schema"), why);
            LedgerSchema::default()
        }
    };
    endpoint.map(|endpoint| {
        ValidatedSink::Postgres(PostgresSinkSpec {
            endpoint,
            table,
            mode: s.mode,
            create_table: s.create_table,
            primary_key: s.primary_key,
            timeouts: s.timeouts,
            after_load: match s.analyze_after.unwrap_or(migration) {
                false => AfterLoad::Nothing,
                true if migration => AfterLoad::VacuumAnalyze,
                true => AfterLoad::Analyze,
            },
            fk_handling: s.fk_handling.unwrap_or_default(),
            whole_by_delete: false,
            replica_role: false,
            ledger_schema,
        })
    })
}

/// The sink's table with its placeholders as the source fills them: a
/// CSV file's stem, an ODBC table's name, a whole database's tables all
/// become the chunk's key.
fn table_template(
    c: &mut Collector<'_>,
    i: usize,
    s: &crate::config::PostgresSinkConfig,
    shape: &Shape,
) -> TableTemplate {
    let key = |k: &str| format!("sinks[{i}].{k}");
    let mut table = TableTemplate::new(s.table.clone());
    // A CSV source's byte ranges are keyed by file stem; its
    // time windows by the key column.
    if shape.csv_windows && s.table.contains("{file}") {
        c.add(
            &key("table"),
            "with [chunks] time_column a CSV source's chunks are time windows of all its files, keyed by key_column; use {key} with a key_column, or leave time_column out for {file}",
        );
    }
    if shape.csv_ranges {
        if s.table.contains("{key}") {
            c.add(
                &key("table"),
                "a CSV source has no key column; use {file} for each file's stem",
            );
        }
        table = TableTemplate::new(s.table.replace("{file}", "{key}"));
    }
    if shape.pg_database {
        if s.table.replace(' ', "") != "{schema}.{table}" {
            c.add(&key("table"), "a whole PostgreSQL database keeps its schemas and table names (its DDL, views and functions name them); write table = \"{schema}.{table}\"");
        }
        if s.mode != SinkMode::Append {
            c.add(&key("mode"), "a whole PostgreSQL database loads each table (or range of its key) once, replacing it when it runs again; use mode = \"append\"");
        }
        table = TableTemplate::new("{key}");
    } else if let Some(whole) = shape.odbc_tables {
        if s.table.contains("{key}") {
            c.add(
                &key("table"),
                "an ODBC source has no key; use {table} for the source table's name",
            );
        } else if s.table.contains("{table}") && !whole {
            c.add(
                &key("table"),
                "uses {table}, but the source reads a query; name the target table",
            );
        } else if !s.table.contains("{table}") && whole {
            c.add(
                &key("table"),
                "a whole-database source loads many tables; write the target as \"schema.{table}\"",
            );
        }
        if s.mode == SinkMode::Upsert {
            c.add(&key("mode"), "upsert needs time-window chunks on an ODBC source (add [chunks] time_column); without them use append (each table or query is replaced whole when it runs again) or replace");
        }
        // The source table's name takes the key's place.
        table = TableTemplate::new(s.table.replace("{table}", "{key}"));
    }
    if let Some(t) = &shape.odbc_table {
        table = TableTemplate::new(s.table.replace("{table}", t));
    } else if shape.odbc_windows && s.table.contains("{table}") {
        c.add(
            &key("table"),
            "uses {table}, but the source reads a query; name the target table",
        );
    }
    if let Err(e) = table.render(Some("k")) {
        c.add(&key("table"), e);
    }
    let rest = table.as_str().replace("{key}", "");
    if rest.contains('{') || rest.contains('}') {
        c.add(
            &key("table"),
            format!("{:?} holds a placeholder other than {{key}}", s.table),
        );
    }
    if table.has_key() && !shape.key_column && !shape.is_migration && !shape.csv_ranges {
        c.add(&key("table"), "uses {key} but [chunks] has no key_column");
    }
    table
}
