//! Pure checks of a parsed pipeline: no network, no files. Every problem is
//! collected, each with the line and key to change.

use std::fmt;
use std::path::PathBuf;

use super::{Pipeline, SinkConfig, SinkMode, SourceConfig, TransformConfig};

mod chunks;
mod sink;
mod source;
use crate::pg::Endpoint;
use crate::sql::TableName;
use crate::time;
use chunks::{chunks, Chunks};

/// One thing wrong with a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    /// Dotted key path, like `chunks.interval` or `sinks[0].table`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}, {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

pub use etl_run::ValidatedPipeline;
pub use etl_transform::spec::{PivotSpec, ValidatedTransform};

/// PostgreSQL's limit on columns per table.
pub const MAX_TABLE_COLUMNS: usize = 1600;

pub use etl_model::Chunking;
pub use etl_source::spec::{
    AccessSpec, OdbcRelation, OdbcSpec, PgDatabaseSpec, Relation, ValidatedSource,
};

pub use etl_sink::spec::{
    AfterLoad, CsvSinkSpec, ParquetSinkSpec, PostgresSinkSpec, TableTemplate, ValidatedSink,
};

struct Collector<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Collector<'_> {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line: line_of(self.text, key),
            key: key.to_string(),
            message: message.into(),
        });
    }
}

/// Checks every value; returns all problems when any.
pub fn validate(p: Pipeline, text: &str) -> Result<ValidatedPipeline, Vec<Problem>> {
    let mut c = Collector {
        text,
        problems: Vec::new(),
    };
    check_name(&mut c, &p.name);

    let kind = kind(&mut c, &p);
    let failed_csv = p
        .chunks
        .as_ref()
        .map_or_else(|| "failed_chunks.csv".to_string(), |c| c.failed_csv.clone());
    let source = source::source(&mut c, p.source, &failed_csv);
    let Chunks {
        config: ch,
        interval,
        start,
        end,
    } = chunks(&mut c, p.chunks, &kind, !p.transforms.is_empty());
    let transforms = transforms(&mut c, p.transforms, ch.key_column.as_ref(), &p.sinks);
    if p.sinks.is_empty() {
        c.add("sinks", "no sink is configured; add a [[sinks]] table");
    }
    let sinks = sinks(&mut c, p.sinks, &kind, &ch);

    let checks = checks(&mut c, p.checks, &sinks);

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(ValidatedPipeline {
        name: p.name,
        checks,
        transforms,
        source: fitted_source(
            source.expect("no problems means the source was valid"),
            &kind,
            &ch,
            interval,
            (start.flatten(), end.flatten()),
            &sinks,
        ),
        chunks: Chunking {
            time_column: ch.time_column.unwrap_or_default(),
            interval: interval.expect("no problems means the interval parsed"),
            key_column: ch.key_column,
            range_column: ch.range_column,
            range_width: ch.range_width,
            range_rows: ch.range_rows,
            only_keys: None,
            start: start.flatten(),
            end: end.flatten(),
            workers: ch.workers,
            max_connections: ch.max_connections,
            retries: ch.retries,
            retry_backoff: std::time::Duration::from_secs_f64(
                ch.retry_backoff_secs.clamp(0.0, 3600.0),
            ),
            failed_csv: PathBuf::from(ch.failed_csv),
        },
        sinks,
    })
}

/// A pipeline's name: non-empty, letters, digits, '-', '_' and '.'.
fn check_name(c: &mut Collector<'_>, name: &str) {
    if name.is_empty()
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
    {
        c.add(
            "name",
            format!(
                "{:?} must be non-empty and use only letters, digits, '-', '_' and '.'",
                name
            ),
        );
    }
}

/// Each `[[sinks]]` checked against the shape of the source and chunks.
fn sinks(
    c: &mut Collector<'_>,
    given: Vec<crate::config::SinkConfig>,
    kind: &Kind,
    ch: &crate::config::ChunksConfig,
) -> Vec<ValidatedSink> {
    let mut sinks = Vec::new();
    let shape = sink::Shape {
        is_migration: kind.is_migration,
        csv_windows: kind.csv_windows,
        csv_ranges: kind.csv_ranges,
        odbc_windows: kind.odbc_windows,
        odbc_tables: kind.odbc_tables,
        odbc_table: kind.odbc_table.clone(),
        key_column: ch.key_column.is_some(),
        parquet_files: kind.parquet_files,
        pg_database: kind.pg_database,
        one_chunk: kind.pg_whole && ch.range_column.is_none(),
    };
    for (i, s) in given.into_iter().enumerate() {
        sinks.extend(sink::sink(c, i, s, &shape));
    }
    sinks
}

/// The source as the chunks and sinks need it: a CSV file cut into time
/// windows, a PostgreSQL relation's uncarried types as text when no
/// PostgreSQL sink takes them.
fn fitted_source(
    source: ValidatedSource,
    kind: &Kind,
    ch: &crate::config::ChunksConfig,
    interval: Option<etl_base::time::Micros>,
    bounds: (
        Option<etl_base::time::Micros>,
        Option<etl_base::time::Micros>,
    ),
    sinks: &[ValidatedSink],
) -> ValidatedSource {
    match source {
        ValidatedSource::Csv(mut spec) if kind.csv_windows => {
            spec.windows = Some(crate::source::csv::windows::WindowSpec {
                time_column: ch.time_column.clone().unwrap_or_default(),
                key_column: ch.key_column.clone(),
                interval: interval.expect("no problems means the interval parsed"),
                start: bounds.0,
                end: bounds.1,
            });
            ValidatedSource::Csv(spec)
        }
        ValidatedSource::Postgres {
            endpoint,
            relation,
            batch_rows,
            batch_bytes,
            ..
        } => ValidatedSource::Postgres {
            endpoint,
            relation,
            batch_rows,
            batch_bytes,
            uncarried_as_text: !sinks
                .iter()
                .any(|s| matches!(s, ValidatedSink::Postgres(_))),
        },
        other => other,
    }
}

/// What kind of run the source makes; the other sections' checks depend on it.
struct Kind {
    odbc_windows: bool,
    pg_database: bool,
    is_migration: bool,
    odbc_tables: Option<bool>,
    odbc_table: Option<String>,
    is_csv: bool,
    csv_windows: bool,
    csv_ranges: bool,
    /// A PostgreSQL table or query without [chunks] time_column: read
    /// whole, in one chunk.
    pg_whole: bool,
    /// Parquet files without [chunks] time_column: each file a chunk,
    /// keyed by its name.
    parquet_files: bool,
}

fn kind(c: &mut Collector<'_>, p: &Pipeline) -> Kind {
    // An ODBC source with [chunks] time_column runs time windows through
    // the chunk runner like any source; without one it is a migration:
    // one chunk per table (or one for its query).
    let odbc_windows = matches!(&p.source, SourceConfig::Odbc(_))
        && p.chunks.as_ref().is_some_and(|c| c.time_column.is_some());
    let pg_database =
        matches!(&p.source, SourceConfig::Postgres(s) if s.tables.is_some() || s.schemas.is_some());
    let is_migration = (matches!(p.source, SourceConfig::Odbc(_)) && !odbc_windows)
        || matches!(p.source, SourceConfig::Access(_))
        || pg_database;
    // Whether an ODBC migration reads whole tables (known even when the
    // source has problems of its own, so sink checks still run).
    let odbc_tables = match &p.source {
        SourceConfig::Odbc(o) if is_migration => Some(o.tables.is_some()),
        SourceConfig::Access(_) => Some(true),
        _ if pg_database => Some(true),
        _ => None,
    };
    // The one table a windowed ODBC source reads, for `{table}` in sinks.
    let odbc_table = match &p.source {
        SourceConfig::Odbc(o) if odbc_windows => match o.tables.as_deref() {
            Some([t]) if t != "*" => Some(t.clone()),
            Some(_) => {
                c.add("source.tables", "time windows ([chunks] time_column) read one query or one table; name one table, or write a `query`");
                None
            }
            None => None,
        },
        _ => None,
    };
    let is_csv = matches!(p.source, SourceConfig::Csv(_));
    // A CSV source with [chunks] time_column runs time windows (per key
    // column when there is one) in place of byte ranges of its files.
    let csv_windows = is_csv
        && p.chunks
            .as_ref()
            .and_then(|c| c.time_column.as_deref())
            .is_some_and(|t| !t.trim().is_empty());
    let csv_ranges = is_csv && !csv_windows;
    let pg_whole = matches!(&p.source, SourceConfig::Postgres(_))
        && !pg_database
        && p.chunks
            .as_ref()
            .and_then(|c| c.time_column.as_deref())
            .is_none_or(|t| t.trim().is_empty());
    let parquet_files = matches!(&p.source, SourceConfig::Parquet(_))
        && p.chunks
            .as_ref()
            .and_then(|c| c.time_column.as_deref())
            .is_none_or(|t| t.trim().is_empty());
    Kind {
        pg_whole,
        parquet_files,
        odbc_windows,
        pg_database,
        is_migration,
        odbc_tables,
        odbc_table,
        is_csv,
        csv_windows,
        csv_ranges,
    }
}

/// `[[transforms]]`, in order.
fn transforms(
    c: &mut Collector<'_>,
    stages: Vec<TransformConfig>,
    key_column: Option<&String>,
    sinks: &[SinkConfig],
) -> Vec<ValidatedTransform> {
    let mut transforms = Vec::new();
    let mut pivots_before = 0;
    for (i, t) in stages.into_iter().enumerate() {
        match t {
            TransformConfig::Sql(t) => {
                let key = format!("transforms[{i}].query");
                if t.query.trim().is_empty() {
                    c.add(&key, "is empty; write a query over the table `input`");
                } else if let Err(e) = etl_transform::check_sql(&t.query) {
                    c.add(&key, e);
                }
                transforms.push(ValidatedTransform::Sql { query: t.query });
            }
            TransformConfig::Pivot(t) => {
                let first = pivots_before == 0;
                pivots_before += 1;
                transforms.push(pivot(c, i, t, first, key_column, sinks));
            }
        }
    }
    transforms
}

/// One `type = "pivot"` stage; `first`: no pivot came before it.
fn pivot(
    c: &mut Collector<'_>,
    i: usize,
    t: super::PivotTransformConfig,
    first: bool,
    key_column: Option<&String>,
    sinks: &[SinkConfig],
) -> ValidatedTransform {
    let key = |k: &str| format!("transforms[{i}].{k}");
    if !first {
        c.add(&key("type"), "a pipeline pivots once: a second pivot would read wide rows; remove it, or pivot in one stage with more values");
    }
    if t.index.is_empty() || t.index.iter().any(|c| c.trim().is_empty()) {
        c.add(
            &key("index"),
            "must list the wide table's key columns, like [\"created_time\"]",
        );
    }
    for (k, v) in [
        ("name_column", &t.name_column),
        ("format_column", &t.format_column),
    ] {
        if v.trim().is_empty() {
            c.add(&key(k), "is empty; name a column of the input");
        }
    }
    if t.values.is_empty() {
        c.add(
            &key("values"),
            "is empty; map each format to its value column, like { Decimal = \"double_v\" }",
        );
    }
    let limit = MAX_TABLE_COLUMNS.saturating_sub(t.index.len());
    if t.max_columns == 0 || t.max_columns > limit {
        c.add(&key("max_columns"), format!("{} is out of range; use 1 to {limit} (PostgreSQL allows {MAX_TABLE_COLUMNS} columns per table, {} of them the index)", t.max_columns, t.index.len()));
    }
    if let Some(k) = key_column {
        if !t.index.contains(k)
            && !sinks.iter().all(|s| match s {
                SinkConfig::Postgres(s) => s.table.contains("{key}"),
                SinkConfig::Parquet(_) | SinkConfig::Csv(_) => true,
            })
        {
            c.add(&key("index"), format!("chunks are per {k:?}, which is not in the index, so every sink table needs {{key}} (one wide table per key); or add {k:?} to index"));
        }
    }
    for (j, s) in sinks.iter().enumerate() {
        match s {
            SinkConfig::Parquet(_) | SinkConfig::Csv(_) => {}
            SinkConfig::Postgres(s) => {
                if s.primary_key.as_ref().is_some_and(|pk| *pk != t.index) {
                    c.add(
                        &format!("sinks[{j}].primary_key"),
                        "a pivot's tables are keyed by the pivot's index; leave primary_key out",
                    );
                }
            }
        }
    }
    ValidatedTransform::Pivot(PivotSpec {
        index: t.index,
        name_column: t.name_column,
        format_column: t.format_column,
        values: t.values.into_iter().collect(),
        text: t.column_types == super::ColumnTypes::Text,
        max_columns: t.max_columns,
        column_groups: t.column_groups.map(PathBuf::from),
    })
}

/// `[[checks]]`, against the validated sinks.
fn checks(
    c: &mut Collector<'_>,
    raw: Vec<super::CheckConfig>,
    sinks: &[ValidatedSink],
) -> Vec<crate::checks::Check> {
    // A check's default table: the first PostgreSQL sink's, when it names one table.
    let default_table = sinks.iter().find_map(|s| match s {
        ValidatedSink::Postgres(p) if !p.table.as_str().contains('{') => {
            Some(p.table.as_str().to_string())
        }
        _ => None,
    });
    let mut checks = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        match crate::checks::validate(i, raw, default_table.as_deref()) {
            Ok(mut found) => checks.append(&mut found),
            Err(problems) => {
                for (key, message) in problems {
                    c.add(&key, message);
                }
            }
        }
    }
    if !checks.is_empty()
        && !sinks
            .iter()
            .any(|s| matches!(s, ValidatedSink::Postgres(_)))
    {
        c.add(
            "checks",
            "run on PostgreSQL sinks, and this pipeline has none",
        );
    }

    checks
}

/// A file sink's `path`: placeholders only from the list, a file of its own
/// for every chunk.
fn file_path(c: &mut Collector<'_>, i: usize, path: &str, shape: &sink::Shape, ext: &str) {
    let per_key = shape.key_column || shape.csv_ranges || shape.parquet_files;
    let key = format!("sinks[{i}].path");
    // A migration's chunks are its tables' (`{table}`, the chunk's key),
    // whole or in ranges of their keys (`{start}`).
    if shape.is_migration {
        let table = path.contains("{table}") || path.contains("{key}");
        if !table || !path.contains("{start}") {
            c.add(&key, format!("{path:?}: a migration into files writes each table, and each range of a big table's key, to a file of its own: put {{table}} and {{start}} in the path, as \"out/{{table}}/{{start}}.{ext}\" ({{start}} reads \"all\" for a table read whole)"));
            return;
        }
    }
    let rest = ["{pipeline}", "{key}", "{start}", "{end}"]
        .iter()
        .chain(shape.is_migration.then_some(&"{table}"))
        .fold(path.to_string(), |r, p| r.replace(p, ""));
    if path.trim().is_empty() {
        c.add(
            &key,
            format!(
                "is empty; name the file of each chunk, like \"staging/{{key}}/{{start}}.{ext}\""
            ),
        );
    } else if rest.contains('{') || rest.contains('}') {
        c.add(
            &key,
            format!(
                "{path:?} holds a placeholder other than {{pipeline}}, {{key}}, {{start}}, {{end}}"
            ),
        );
    } else if !path.contains("{start}") && !path.contains("{end}") && !shape.one_chunk {
        c.add(
            &key,
            format!(
                "{path:?} has no {{start}} or {{end}}, so every chunk would write the same file"
            ),
        );
    } else if per_key && !path.contains("{key}") {
        c.add(&key, format!("{path:?} has no {{key}}, but chunks are per key (key_column, or a CSV or Parquet source's files): chunks of different keys would write the same file"));
    }
}

pub use crate::pg::TlsKeys;

fn endpoint(
    c: &mut Collector<'_>,
    key: &str,
    url: &str,
    password_env: Option<String>,
    keys: TlsKeys<'_>,
) -> Option<Endpoint> {
    match Endpoint::parse(url, password_env, keys) {
        Ok(endpoint) => Some(endpoint),
        Err(crate::pg::ParseError::SslMode(e)) => {
            c.add(&key.replace("url", "sslmode"), e);
            None
        }
        Err(crate::pg::ParseError::Url(e)) => {
            c.add(key, e);
            None
        }
    }
}

/// The 1-based line where `key` (like `sinks[0].table`) is written.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut span = None;
    let segments: Vec<&str> = key.split('.').collect();
    for (n, segment) in segments.iter().enumerate() {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (*segment, None),
        };
        let (k, item) = table.get_key_value(name)?;
        span = k.span().or_else(|| item.span());
        let last = n + 1 == segments.len();
        match index {
            Some(i) => {
                let t = item.as_array_of_tables()?.get(i)?;
                span = t.span().or(span);
                table = t;
            }
            None if !last => table = item.as_table_like()?,
            None => {}
        }
    }
    let offset = span?.start;
    Some(text[..offset.min(text.len())].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "ships-copy"

[source]
type = "postgres"
url = "postgresql://etl@127.0.0.1:5432/src"
table = "tenant.tbl_data_timeseries"

[chunks]
time_column = "created_time"
interval = "24h"
key_column = "ship_id"

[[sinks]]
type = "postgres"
url = "postgresql://etl@127.0.0.1:5432/dst"
table = "wide.t_{key}"
"#;

    fn problems(text: &str) -> Vec<String> {
        let p = crate::config::parse(text).unwrap();
        validate(p, text)
            .unwrap_err()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn good_pipeline_validates() {
        let p = validate(crate::config::parse(GOOD).unwrap(), GOOD).unwrap();
        assert_eq!(p.chunks.interval, 86_400_000_000);
        let ValidatedSink::Postgres(s) = &p.sinks[0] else {
            panic!("the first sink is postgres")
        };
        assert_eq!(
            s.table.render(Some("IMO 9\"1")).unwrap().to_string(),
            "\"wide\".\"t_IMO 9\"\"1\""
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        // Given three bad values on different lines
        let text = GOOD
            .replace("interval = \"24h\"", "interval = \"25x\"\nworkers = 0")
            .replace("table = \"wide.t_{key}\"", "table = \"wide.t_{ship}\"");
        // Then all three are named, each with its line
        assert_eq!(
            problems(&text),
            vec![
                "line 11, chunks.interval: \"25x\" is not an interval; use a whole number of s, m, h or d, like \"24h\"",
                "line 12, chunks.workers: 0 is out of range; use 1 to 256",
                "line 18, sinks[0].table: \"wide.t_{ship}\" holds a placeholder other than {key}",
            ]
        );
    }

    #[test]
    fn a_migration_vacuums_and_analyzes_by_default_a_pipeline_when_asked() {
        let database = GOOD
            .replace(
                "table = \"tenant.tbl_data_timeseries\"",
                "tables = [\"*\"]",
            )
            .replace("table = \"wide.t_{key}\"", "table = \"{schema}.{table}\"")
            .replace(
                "[chunks]\ntime_column = \"created_time\"\ninterval = \"24h\"\nkey_column = \"ship_id\"\n",
                "",
            );
        let after = |text: &str| {
            let p = validate(crate::config::parse(text).unwrap(), text).unwrap();
            let ValidatedSink::Postgres(s) = &p.sinks[0] else {
                panic!("the first sink is postgres")
            };
            s.after_load
        };
        assert_eq!(after(&database), AfterLoad::VacuumAnalyze);
        assert_eq!(
            after(&format!("{database}analyze_after = false\n")),
            AfterLoad::Nothing
        );
        assert_eq!(after(GOOD), AfterLoad::Nothing);
        assert_eq!(
            after(&format!("{GOOD}analyze_after = true\n")),
            AfterLoad::Analyze
        );
    }

    #[test]
    fn key_placeholder_needs_a_key_column() {
        let text = GOOD.replace("key_column = \"ship_id\"\n", "");
        assert_eq!(
            problems(&text),
            vec!["line 16, sinks[0].table: uses {key} but [chunks] has no key_column"]
        );
    }

    #[test]
    fn unknown_keys_are_parse_errors_with_a_line() {
        let text = GOOD.replace("interval = \"24h\"", "intervall = \"24h\"");
        let err = crate::config::parse(&text).unwrap_err();
        assert!(
            err.starts_with("TOML parse error at line 11, column 1"),
            "{err}"
        );
        assert!(err.contains("unknown field `intervall`"), "{err}");
    }
}
