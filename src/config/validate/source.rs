//! `[source]`: each kind's settings checked, into the spec its source is
//! built from.

use super::*;

/// The `[source]` table checked; `None` when it has problems (collected).
pub(super) fn source(
    c: &mut Collector<'_>,
    source: SourceConfig,
    failed_csv: &str,
) -> Option<ValidatedSource> {
    match source {
        SourceConfig::Csv(s) => checked(c, crate::source::csv::config::validate(s, failed_csv))
            .map(ValidatedSource::Csv),
        SourceConfig::Odbc(s) => {
            checked(c, crate::source::odbc::config::validate(s)).map(ValidatedSource::Odbc)
        }
        SourceConfig::Access(s) => {
            checked(c, crate::source::access::config::validate(s)).map(ValidatedSource::Access)
        }
        SourceConfig::Parquet(s) => {
            checked(c, crate::source::parquet::config::validate(s)).map(|(pattern, batch_rows)| {
                ValidatedSource::Parquet {
                    pattern,
                    batch_rows,
                }
            })
        }
        SourceConfig::Postgres(s) => postgres(c, s),
    }
}

/// A PostgreSQL source: one table or query, or a whole database.
fn postgres(
    c: &mut Collector<'_>,
    s: crate::config::PostgresSourceConfig,
) -> Option<ValidatedSource> {
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
        (Some(q), None) => Some(Relation::Query(q.trim().trim_end_matches(';').to_string())),
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
            uncarried_as_text: false,
        })
}

/// A source's own check: its spec, or its problems collected.
fn checked<T>(c: &mut Collector<'_>, result: Result<T, Vec<(String, String)>>) -> Option<T> {
    match result {
        Ok(spec) => Some(spec),
        Err(problems) => {
            for (key, message) in problems {
                c.add(&key, message);
            }
            None
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
