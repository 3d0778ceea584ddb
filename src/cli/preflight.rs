//! `etl preflight`: the pass/fail table of what a run needs, written
//! before anything is; exit 1 on any failure.

use std::path::Path;

use super::{is_migration, load, Outcome};
use crate::config::validate::ValidatedSource;
use crate::config::{ValidatedPipeline, ValidatedSink};
use crate::preflight::{self, Finding, Verdict};

pub(super) fn preflight(path: &Path, json: bool) -> anyhow::Result<Outcome> {
    let pipeline = load(path)?;
    let (mut findings, wide, types) = source_findings(&pipeline);
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
        findings.extend(sink_findings(i, sink, wide, &types, estimate));
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

/// Whether the source answers: a migration's tables listed, or a run's
/// source opened with its columns; and, for a run, whether its output is a
/// pivot's wide rows and the types of its columns.
fn source_findings(pipeline: &ValidatedPipeline) -> (Vec<Finding>, bool, Vec<String>) {
    if is_migration(pipeline) {
        let check = "connect and list tables";
        let finding = match crate::migrate::Migration::discover(pipeline) {
            Ok(m) => Finding::new(
                Verdict::Pass,
                check,
                "source (ODBC)",
                format!("{} tables", m.tables.len()),
            ),
            Err(e) => Finding::new(Verdict::Fail, check, "source (ODBC)", e.to_string()),
        };
        return (vec![finding], false, Vec::new());
    }
    let check = "connect and read columns";
    match crate::run::Runner::build(pipeline.clone()) {
        Ok(runner) => {
            let (wide, types) = runner.output_types();
            let columns = runner.source().schema().fields().len();
            let finding =
                Finding::new(Verdict::Pass, check, "source", format!("{columns} columns"));
            (vec![finding], wide, types)
        }
        Err(e) => (
            vec![Finding::new(Verdict::Fail, check, "source", e.to_string())],
            false,
            Vec::new(),
        ),
    }
}

/// What sink `i` needs: a PostgreSQL target connected and its table and
/// privileges checked; a file sink's directory writable and its room.
fn sink_findings(
    i: usize,
    sink: &ValidatedSink,
    wide: bool,
    types: &[String],
    estimate: Option<u64>,
) -> Vec<Finding> {
    let spec = match sink {
        ValidatedSink::Postgres(spec) => spec,
        ValidatedSink::Parquet(spec) => {
            return preflight::file_sink(&format!("sinks[{i}] parquet"), &spec.path, estimate)
        }
        ValidatedSink::Csv(spec) => {
            return preflight::file_sink(&format!("sinks[{i}] csv"), &spec.path, estimate)
        }
    };
    let place = format!("sinks[{i}] {}", spec.endpoint);
    let found = crate::pg::block_on(async {
        let client = spec.endpoint.connect("etl preflight").await?;
        Ok::<_, crate::pg::ConnectError>(
            preflight::postgres_sink(&client, &place, spec, wide, types, estimate).await,
        )
    });
    match found {
        Ok(f) => std::iter::once(Finding::new(Verdict::Pass, "connect", &place, "connected"))
            .chain(f)
            .collect(),
        Err(e) => vec![Finding::new(
            Verdict::Fail,
            "connect",
            &place,
            e.to_string(),
        )],
    }
}
