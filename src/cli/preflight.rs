//! `etl preflight`: the pass/fail table of what a run needs, written
//! before anything is; exit 1 on any failure.

use std::path::Path;

use super::{is_migration, load, Outcome};
use crate::config::validate::ValidatedSource;
use crate::config::ValidatedSink;
use crate::preflight::{self, Finding, Verdict};

pub(super) fn preflight(path: &Path, json: bool) -> anyhow::Result<Outcome> {
    let pipeline = load(path)?;
    let mut findings = Vec::new();
    let (mut wide, mut types) = (false, Vec::new());
    let check = "connect and read columns";
    if is_migration(&pipeline) {
        match crate::migrate::Migration::discover(&pipeline) {
            Ok(m) => findings.push(Finding::new(
                Verdict::Pass,
                "connect and list tables",
                "source (ODBC)",
                format!("{} tables", m.tables.len()),
            )),
            Err(e) => findings.push(Finding::new(
                Verdict::Fail,
                "connect and list tables",
                "source (ODBC)",
                e.to_string(),
            )),
        }
    } else {
        match crate::run::Runner::build(pipeline.clone()) {
            Ok(runner) => {
                (wide, types) = runner.output_types();
                findings.push(Finding::new(
                    Verdict::Pass,
                    check,
                    "source",
                    format!("{} columns", runner.source().schema().fields().len()),
                ));
            }
            Err(e) => findings.push(Finding::new(Verdict::Fail, check, "source", e.to_string())),
        }
    }
    let mut estimate = None;
    if let ValidatedSource::Postgres {
        endpoint, relation, ..
    } = &pipeline.source
    {
        let place = format!("source {endpoint}");
        let found = crate::pg::block_on(async {
            match endpoint.connect("etl preflight").await {
                Ok(client) => Ok(preflight::postgres_source(&client, &place, relation).await),
                Err(e) => Err(e),
            }
        });
        // A connection failure is already the source's finding above.
        if let Ok((f, e)) = found {
            findings.extend(f);
            estimate = e;
        }
    }
    for (i, sink) in pipeline.sinks.iter().enumerate() {
        match sink {
            ValidatedSink::Postgres(spec) => {
                let place = format!("sinks[{i}] {}", spec.endpoint);
                let found = crate::pg::block_on(async {
                    let client = spec.endpoint.connect("etl preflight").await?;
                    Ok::<_, crate::pg::ConnectError>(
                        preflight::postgres_sink(&client, &place, spec, wide, &types, estimate)
                            .await,
                    )
                });
                match found {
                    Ok(f) => {
                        findings.push(Finding::new(Verdict::Pass, "connect", &place, "connected"));
                        findings.extend(f);
                    }
                    Err(e) => findings.push(Finding::new(
                        Verdict::Fail,
                        "connect",
                        &place,
                        e.to_string(),
                    )),
                }
            }
            ValidatedSink::Parquet(spec) => {
                let place = format!("sinks[{i}] parquet");
                findings.extend(preflight::file_sink(&place, &spec.path, estimate));
            }
            ValidatedSink::Csv(spec) => {
                let place = format!("sinks[{i}] csv");
                findings.extend(preflight::file_sink(&place, &spec.path, estimate));
            }
        }
    }
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "pipeline": pipeline.name,
                "checks": findings,
            }))?
        );
    } else {
        out_raw!("{}", preflight::render(&pipeline.name, &findings));
    }
    Ok(if findings.iter().any(|f| f.verdict == Verdict::Fail) {
        Outcome::ChecksFailed
    } else {
        Outcome::Success
    })
}
