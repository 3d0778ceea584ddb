//! `[[checks]]`: rules the loaded data must keep, run on every PostgreSQL
//! sink after a load and by `etl verify`. `not_null` (NULL or an empty
//! string), `unique` (NULLs excepted, as PostgreSQL's UNIQUE), or an SQL
//! query that must return no rows. Each failure reports how many rows
//! break the rule and a few of them.

use etl_base::env;
use etl_base::sql::{ident, TableName};
use etl_pg::error::EtlError;
use etl_sink::spec::PostgresSinkSpec;
use serde::Deserialize;

/// `[[checks]]`: exactly one of `not_null`, `unique` and `sql`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Shown in the report; default: the rule and table.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub name: Option<String>,
    /// `schema.table` for not_null and unique; default: the sink's table,
    /// when it names one table.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub table: Option<String>,
    /// Columns that must hold a value (NULL and the empty string fail).
    #[serde(default)]
    pub not_null: Option<Vec<String>>,
    /// Columns whose values together must be unique (rows with a NULL in
    /// them are not compared, as in PostgreSQL).
    #[serde(default)]
    pub unique: Option<Vec<String>>,
    /// A query (run on the target) returning the rows that break the rule;
    /// the check passes when it returns none.
    #[serde(default, deserialize_with = "env::opt_string")]
    pub sql: Option<String>,
}

/// Example rows shown per failed check.
const EXAMPLES: i64 = 5;

/// A check whose configuration makes sense.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub rule: Rule,
}

#[derive(Debug, Clone)]
pub enum Rule {
    NotNull {
        table: TableName,
        column: String,
    },
    Unique {
        table: TableName,
        columns: Vec<String>,
    },
    Sql(String),
}

/// Checks `raw` (the `i`-th `[[checks]]`); `default_table` is the sink's
/// table when it names one table. Problems are (key, message) pairs.
pub fn validate(
    i: usize,
    raw: CheckConfig,
    default_table: Option<&str>,
) -> Result<Vec<Check>, Vec<(String, String)>> {
    let key = |k: &str| format!("checks[{i}].{k}");
    let mut problems = Vec::new();
    let rules = [
        raw.not_null.is_some(),
        raw.unique.is_some(),
        raw.sql.is_some(),
    ];
    if rules.iter().filter(|r| **r).count() != 1 {
        return Err(vec![(
            format!("checks[{i}]"),
            "needs exactly one of not_null = [columns], unique = [columns] or sql = \"a query that must return no rows\"".into(),
        )]);
    }
    let table = || -> Result<TableName, (String, String)> {
        let Some(t) = raw.table.as_deref().or(default_table) else {
            return Err((
                key("table"),
                "is needed: the sink's table is not one table (it holds a placeholder), so name the table to check".into(),
            ));
        };
        TableName::parse(t).map_err(|e| (key("table"), e))
    };
    let mut out = Vec::new();
    if let Some(columns) = raw.not_null {
        if columns.is_empty() {
            problems.push((key("not_null"), "lists no column".into()));
        }
        match table() {
            Ok(t) => {
                for column in columns {
                    out.push(Check {
                        name: raw
                            .name
                            .clone()
                            .unwrap_or_else(|| format!("not_null {column} on {t}")),
                        rule: Rule::NotNull {
                            table: t.clone(),
                            column,
                        },
                    });
                }
            }
            Err(p) => problems.push(p),
        }
    } else if let Some(columns) = raw.unique {
        if columns.is_empty() {
            problems.push((key("unique"), "lists no column".into()));
        }
        match table() {
            Ok(t) => out.push(Check {
                name: raw
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("unique ({}) on {t}", columns.join(", "))),
                rule: Rule::Unique { table: t, columns },
            }),
            Err(p) => problems.push(p),
        }
    } else if let Some(sql) = raw.sql {
        let sql = sql.trim().trim_end_matches(';').trim().to_string();
        if sql.is_empty() {
            problems.push((
                key("sql"),
                "is empty; write a query that returns the rows that break the rule".into(),
            ));
        }
        if raw.table.is_some() {
            problems.push((
                key("table"),
                "is for not_null and unique; an sql check names its tables itself".into(),
            ));
        }
        out.push(Check {
            name: raw
                .name
                .clone()
                .unwrap_or_else(|| format!("sql check {}", i + 1)),
            rule: Rule::Sql(sql),
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// What one check found on one target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub check: String,
    pub target: String,
    /// Rows (for `unique`: duplicated values) that break the rule.
    pub failing: u64,
    /// For `unique`: the rows those values are in.
    pub rows: Option<u64>,
    pub examples: Vec<String>,
    /// The check could not run (a missing table or column, a bad query).
    pub error: Option<String>,
}

impl Finding {
    pub fn ok(&self) -> bool {
        self.failing == 0 && self.error.is_none()
    }
}

/// Runs every check on every PostgreSQL sink, each in a read-only
/// transaction under the sink's statement timeout, on a session of the
/// pool; a check whose session is lost is run again (`retry`: tries and
/// first wait), one the server refuses is reported with its error.
pub fn run(
    checks: &[Check],
    sinks: &[&PostgresSinkSpec],
    retry: (u32, std::time::Duration),
) -> Result<Vec<Finding>, EtlError> {
    if checks.is_empty() {
        return Ok(Vec::new());
    }
    etl_pg::block_on(async {
        let mut findings = Vec::new();
        for sink in sinks {
            for check in checks {
                let begin = &format!(
                    "BEGIN READ ONLY; SET LOCAL statement_timeout = {}",
                    (sink.timeouts.statement_timeout_secs * 1000.0).round() as u64
                );
                let (rule, name) = (&check.rule, &check.name);
                // Ok(Err): the server refused the check's query.
                let found = etl_pg::retry::on_session(
                    &sink.endpoint,
                    "etl checks",
                    retry,
                    &format!("check {:?} failed", check.name),
                    |client| async move {
                        let found = async {
                            client.batch_execute(begin).await?;
                            let found = one(&client, rule).await;
                            client.batch_execute("ROLLBACK").await?;
                            found
                        }
                        .await;
                        match found {
                            Err(e) if client.is_closed() => {
                                Err(EtlError::pg(format!("running check {name:?}"))(e))
                            }
                            Err(e) => {
                                let _ = client.batch_execute("ROLLBACK").await;
                                Ok(Err(e))
                            }
                            Ok(found) => Ok(Ok(found)),
                        }
                    },
                )
                .await?;
                let mut finding = Finding {
                    check: check.name.clone(),
                    target: sink.endpoint.to_string(),
                    failing: 0,
                    rows: None,
                    examples: Vec::new(),
                    error: None,
                };
                match found {
                    Ok((failing, rows, examples)) => {
                        finding.failing = failing;
                        finding.rows = rows;
                        finding.examples = examples;
                    }
                    Err(e) => finding.error = Some(etl_pg::error::pg_message(&e)),
                }
                findings.push(finding);
            }
        }
        Ok(findings)
    })
}

/// (failing, rows for unique, examples) of one rule.
async fn one(
    client: &tokio_postgres::Client,
    rule: &Rule,
) -> Result<(u64, Option<u64>, Vec<String>), tokio_postgres::Error> {
    let count = |sql: String| async move {
        let r = client.query_one(&sql, &[]).await?;
        Ok::<_, tokio_postgres::Error>(r)
    };
    let examples = |sql: String| async move {
        Ok::<_, tokio_postgres::Error>(
            client
                .query(&sql, &[])
                .await?
                .iter()
                .map(|r| shorten(r.get::<_, Option<String>>(0).unwrap_or_default()))
                .collect::<Vec<_>>(),
        )
    };
    match rule {
        Rule::NotNull { table, column } => {
            let c = ident(column);
            let bad = format!("{c} IS NULL OR {c}::text = ''");
            let n: i64 = count(format!("SELECT count(*) FROM {table} WHERE {bad}"))
                .await?
                .get(0);
            let ex = if n > 0 {
                examples(format!(
                    "SELECT t::text FROM {table} t WHERE {bad} LIMIT {EXAMPLES}"
                ))
                .await?
            } else {
                Vec::new()
            };
            Ok((n as u64, None, ex))
        }
        Rule::Unique { table, columns } => {
            let cols = columns
                .iter()
                .map(|c| ident(c))
                .collect::<Vec<_>>()
                .join(", ");
            let present = columns
                .iter()
                .map(|c| format!("{} IS NOT NULL", ident(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let dups = format!(
                "SELECT ROW({cols})::text AS v, count(*) AS n FROM {table} WHERE {present} GROUP BY {cols} HAVING count(*) > 1"
            );
            let r = count(format!(
                "SELECT count(*), coalesce(sum(n), 0)::int8 FROM ({dups}) d"
            ))
            .await?;
            let (values, rows): (i64, i64) = (r.get(0), r.get(1));
            let ex = if values > 0 {
                examples(format!(
                    "SELECT v || ' ×' || n FROM ({dups}) d ORDER BY n DESC, v LIMIT {EXAMPLES}"
                ))
                .await?
            } else {
                Vec::new()
            };
            Ok((values as u64, Some(rows as u64), ex))
        }
        Rule::Sql(sql) => {
            let n: i64 = count(format!("SELECT count(*) FROM ({sql}) q"))
                .await?
                .get(0);
            let ex = if n > 0 {
                examples(format!("SELECT q::text FROM ({sql}) q LIMIT {EXAMPLES}")).await?
            } else {
                Vec::new()
            };
            Ok((n as u64, None, ex))
        }
    }
}

fn shorten(s: String) -> String {
    if s.chars().count() <= 200 {
        return s;
    }
    let mut t: String = s.chars().take(200).collect();
    t.push_str(" ...");
    t
}

/// The findings for people; empty when there are none.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        return out;
    }
    let failed = findings.iter().filter(|f| !f.ok()).count();
    out.push_str(&format!(
        "Checks: {} passed, {failed} failed\n",
        findings.len() - failed
    ));
    for f in findings {
        let what = match (&f.error, f.rows) {
            (Some(e), _) => format!(": could not run: {e}"),
            (None, _) if f.failing == 0 => String::new(),
            (None, Some(rows)) => format!(
                ": {} duplicated values in {} rows",
                crate::summary::thousands(f.failing),
                crate::summary::thousands(rows)
            ),
            (None, None) => format!(": {} rows", crate::summary::thousands(f.failing)),
        };
        let state = if f.ok() { "ok    " } else { "FAILED" };
        out.push_str(&format!("  {state}  {}{what}  ({})\n", f.check, f.target));
        for e in &f.examples {
            out.push_str(&format!("            e.g. {e}\n"));
        }
    }
    out
}
