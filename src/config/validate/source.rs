//! `[source]`: each kind's settings checked, into the spec its source is
//! built from.

use std::path::PathBuf;

use super::*;

/// The `[source]` table checked; `None` when it has problems (collected).
pub(super) fn source(
    c: &mut Collector<'_>,
    source: SourceConfig,
    failed_csv: &str,
) -> Option<ValidatedSource> {
    match source {
        SourceConfig::Csv(s) => match crate::source::csv::config::validate(s, failed_csv) {
            Ok(spec) => Some(ValidatedSource::Csv(spec)),
            Err(problems) => {
                for (key, message) in problems {
                    c.add(&key, message);
                }
                None
            }
        },
        SourceConfig::Odbc(s) => {
            if s.connection_string.trim().is_empty() {
                c.add(
                    "source.connection_string",
                    "is empty; write one like \"Driver={MDBTools};DBQ=data.mdb;\" or \"DSN=name;\"",
                );
            }
            let relation = match (s.query, s.tables) {
                (Some(q), None) if q.trim().is_empty() => {
                    c.add("source.query", "is empty; write a SELECT");
                    None
                }
                (Some(q), None) => Some(OdbcRelation::Query(
                    q.trim().trim_end_matches(';').to_string(),
                )),
                (None, Some(t)) if t.is_empty() || t.iter().any(|t| t.trim().is_empty()) => {
                    c.add(
                        "source.tables",
                        "must list table names, or be [\"*\"] for every user table",
                    );
                    None
                }
                (None, Some(t)) => Some(OdbcRelation::Tables {
                    include: t,
                    exclude: s.exclude.clone(),
                }),
                (Some(_), Some(_)) => {
                    c.add("source.query", "give either `query` or `tables`, not both");
                    None
                }
                (None, None) => {
                    c.add(
                        "source",
                        "needs `query` (a SELECT) or `tables` ([\"*\"] for the whole database)",
                    );
                    None
                }
            };
            if !s.exclude.is_empty() && !matches!(relation, Some(OdbcRelation::Tables { .. })) {
                c.add("source.exclude", "only applies with `tables`");
            }
            let options = match crate::source::odbc::OdbcOptions::new(&s.encoding) {
                Ok(mut o) => {
                    o.replace_invalid = s.on_invalid_text == crate::config::OnInvalidText::Replace;
                    o.batch_rows = s.batch_rows;
                    o.batch_bytes = s.batch_bytes;
                    o.max_text_bytes = s.max_text_bytes;
                    o.truncate_long = s.on_long_value == crate::config::OnLongValue::Truncate;
                    for (column, cast) in &s.casts {
                        match crate::source::odbc::Cast::parse(cast) {
                            Ok(cast) => {
                                o.casts.insert(column.clone(), cast);
                            }
                            Err(e) => c.add(&format!("source.casts.{column}"), e),
                        }
                    }
                    Some(o)
                }
                Err(e) => {
                    c.add("source.encoding", e.to_string());
                    None
                }
            };
            if s.batch_rows == 0 {
                c.add("source.batch_rows", "must be at least 1");
            }
            if s.batch_bytes < 1024 {
                c.add("source.batch_bytes", "must be at least 1024");
            }
            if s.max_text_bytes == 0 {
                c.add("source.max_text_bytes", "must be at least 1");
            }
            if !(0..=64).contains(&s.readers) {
                c.add("source.readers", "must be 1 to 64 (or 0: chosen by driver)");
            }
            relation.zip(options).map(|(relation, options)| {
                ValidatedSource::Odbc(OdbcSpec {
                    connection_string: s.connection_string,
                    relation,
                    encoding_label: s.encoding,
                    options,
                    readers: s.readers,
                })
            })
        }
        SourceConfig::Access(s) => {
            if s.path.trim().is_empty() {
                c.add("source.path", "is empty; name the .mdb or .accdb file");
            }
            if s.tables.is_empty() || s.tables.iter().any(|t| t.trim().is_empty()) {
                c.add(
                    "source.tables",
                    "must list table names, or be [\"*\"] for every user table",
                );
            }
            if s.batch_rows == 0 {
                c.add("source.batch_rows", "must be at least 1");
            }
            let mut options = crate::source::access::ReadOptions {
                batch_rows: s.batch_rows,
                replace_invalid: s.on_invalid_text == crate::config::OnInvalidText::Replace,
                ..Default::default()
            };
            if let Some(label) = &s.encoding {
                match crate::source::encoding_for(label) {
                    Ok(e) => options.encoding = Some(e),
                    Err(e) => c.add("source.encoding", e),
                }
            }
            for (column, cast) in &s.casts {
                match crate::source::odbc::Cast::parse(cast) {
                    Ok(cast) => {
                        options.casts.insert(column.clone(), cast);
                    }
                    Err(e) => c.add(&format!("source.casts.{column}"), e),
                }
            }
            Some(ValidatedSource::Access(AccessSpec {
                path: PathBuf::from(s.path),
                include: s.tables,
                exclude: s.exclude,
                options,
            }))
        }
        SourceConfig::Parquet(s) => {
            if s.path.trim().is_empty() {
                c.add(
                    "source.path",
                    "is empty; name the files, like \"staging/**/*.parquet\"",
                );
            } else if let Err(e) = glob::Pattern::new(&s.path) {
                c.add(
                    "source.path",
                    format!("{:?} is not a glob pattern: {e}", s.path),
                );
            }
            if s.batch_rows == 0 {
                c.add("source.batch_rows", "must be at least 1");
            }
            Some(ValidatedSource::Parquet {
                pattern: s.path,
                batch_rows: s.batch_rows,
            })
        }
        SourceConfig::Postgres(s) => {
            let endpoint = endpoint(
                c,
                "source.url",
                &s.url,
                s.password_env.clone(),
                TlsKeys {
                    sslmode: &s.sslmode,
                    sslrootcert: &s.sslrootcert,
                    sslcert: &s.sslcert,
                    sslkey: &s.sslkey,
                },
            );
            if s.tables.is_some() || s.schemas.is_some() {
                return database(c, s, endpoint);
            }
            for (k, set) in [
                ("exclude", !s.exclude.is_empty()),
                ("owners", s.owners),
                ("grants", s.grants),
                ("large_objects", s.large_objects.is_some()),
            ] {
                if set {
                    c.add(&format!("source.{k}"), "applies to a whole database; add `tables = [\"*\"]` or `schemas = [...]`, or leave it out");
                }
            }
            let relation = match (s.query, s.table) {
                (Some(q), None) if q.trim().is_empty() => {
                    c.add("source.query", "is empty; write a SELECT");
                    None
                }
                (Some(q), None) => {
                    Some(Relation::Query(q.trim().trim_end_matches(';').to_string()))
                }
                (None, Some(t)) => match TableName::parse(&t) {
                    Ok(t) => Some(Relation::Table(t)),
                    Err(e) => {
                        c.add("source.table", e);
                        None
                    }
                },
                (Some(_), Some(_)) => {
                    c.add("source.query", "give either `query` or `table`, not both");
                    None
                }
                (None, None) => {
                    c.add(
                        "source",
                        "needs `query` (a SELECT) or `table` (schema.table)",
                    );
                    None
                }
            };
            if s.batch_rows == 0 {
                c.add("source.batch_rows", "must be at least 1");
            }
            if s.batch_bytes < 1024 {
                c.add("source.batch_bytes", "must be at least 1024");
            }
            endpoint
                .zip(relation)
                .map(|(endpoint, relation)| ValidatedSource::Postgres {
                    endpoint,
                    relation,
                    batch_rows: s.batch_rows,
                    batch_bytes: s.batch_bytes,
                })
        }
    }
}

/// A PostgreSQL source with `tables` or `schemas`: a whole database.
fn database(
    c: &mut Collector<'_>,
    s: crate::config::PostgresSourceConfig,
    endpoint: Option<Endpoint>,
) -> Option<ValidatedSource> {
    if s.query.is_some() || s.table.is_some() {
        c.add(
            "source.tables",
            "give `tables` / `schemas` (a whole database) or `table` / `query` (one relation), not both",
        );
    }
    let tables = s.tables.unwrap_or_default();
    let schemas = s.schemas.unwrap_or_default();
    if !tables.is_empty() && !schemas.is_empty() && tables.iter().any(|t| t != "*") {
        c.add(
            "source.schemas",
            "give either `tables` (names or patterns) or `schemas`, not both; use `exclude` to leave tables out of the schemas",
        );
    }
    if tables.is_empty() && schemas.is_empty() {
        c.add(
            "source.tables",
            "is empty; write [\"*\"] for every table, or name them (schema.table, glob patterns allowed)",
        );
    }
    for (k, list) in [
        ("tables", &tables),
        ("schemas", &schemas),
        ("exclude", &s.exclude),
    ] {
        for p in list.iter() {
            if p.trim().is_empty() {
                c.add(&format!("source.{k}"), "holds an empty name");
            } else if let Err(e) = glob::Pattern::new(p) {
                c.add(
                    &format!("source.{k}"),
                    format!("{p:?} is not a glob pattern: {e}"),
                );
            }
        }
    }
    let tables = if tables.iter().any(|t| t == "*") {
        Vec::new()
    } else {
        tables
    };
    endpoint.map(|endpoint| {
        ValidatedSource::PostgresDatabase(PgDatabaseSpec {
            endpoint,
            tables,
            schemas,
            exclude: s.exclude,
            owners: s.owners,
            grants: s.grants,
            large_objects: s.large_objects.unwrap_or(true),
        })
    })
}
