//! How a run ends: the failed-chunk CSV, what to do next, the exit code.

use std::path::{Path, PathBuf};

use super::Outcome;
use crate::plan::Chunk;
use crate::run::{failed_csv, RunReport};

/// `failed.csv` -> `failed.rerun-20261122T031500.csv`, beside it.
pub(super) fn rerun_csv_path(csv: &Path) -> PathBuf {
    let stem = csv
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "failed".into());
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    csv.with_file_name(format!("{stem}.rerun-{stamp}.csv"))
}

/// The run's peak connections per server, kept in each PostgreSQL
/// sink's ledger for `etl status`; a failure to write them is a warning.
pub(super) fn record_peaks(
    pipeline: &str,
    ledgers: &[&etl_sink::spec::PostgresSinkSpec],
    retry: (u32, std::time::Duration),
) {
    let peaks = crate::pg::peaks();
    if peaks.is_empty() {
        return;
    }
    let (peaks, limit) = (&peaks, crate::pg::limit());
    for spec in ledgers {
        let schema = &spec.ledger_schema;
        let recorded = crate::pg::block_on(crate::retry::on_session(
            &spec.endpoint,
            "etl run",
            retry,
            "recording the peak connections failed",
            |client| async move {
                let db = etl_model::ledger::SchemaClient::new(&client, schema);
                etl_ledger::sql::record_connections(db, pipeline, peaks, limit)
                    .await
                    .map_err(crate::error::EtlError::pg(format!(
                        "recording the peak connections in {}",
                        schema.table("phase_log")
                    )))
            },
        ));
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "The peak connections are not in the ledger; etl status will not show them.");
        }
    }
}

/// The PostgreSQL sinks' endpoints: where a pipeline's ledgers are.
pub(super) fn ledgers(
    pipeline: &crate::config::ValidatedPipeline,
) -> Vec<&etl_sink::spec::PostgresSinkSpec> {
    pipeline
        .sinks
        .iter()
        .filter_map(|s| match s {
            crate::config::ValidatedSink::Postgres(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// `[[checks]]` on every PostgreSQL sink, printed; `ChecksFailed` when
/// any failed, else `outcome`.
pub(super) fn checks(
    pipeline: &crate::config::ValidatedPipeline,
    outcome: Outcome,
) -> anyhow::Result<Outcome> {
    let sinks: Vec<_> = pipeline
        .sinks
        .iter()
        .filter_map(|s| match s {
            crate::config::ValidatedSink::Postgres(p) => Some(p),
            _ => None,
        })
        .collect();
    let findings = crate::checks::run(&pipeline.checks, &sinks, pipeline.chunks.retry())?;
    out_raw!("{}", crate::checks::render(&findings));
    if findings.iter().all(|f| f.ok()) {
        return Ok(outcome);
    }
    Ok(match outcome {
        Outcome::Success | Outcome::RowsNotPivoted | Outcome::ValuesChanged => {
            Outcome::ChecksFailed
        }
        other => other,
    })
}

pub(super) fn finish(
    pipeline: &Path,
    report: &RunReport,
    failed_path: &Path,
    rerun_of: Option<&Path>,
) -> anyhow::Result<Outcome> {
    if report.failed.is_empty() {
        if rerun_of.is_none() && failed_path.exists() {
            out!(
                "  note         {} is from an earlier run; no chunk failed in this one",
                failed_path.display()
            );
        }
        if report.pivot.as_ref().is_some_and(|p| p.not_pivoted() > 0) {
            return Ok(Outcome::RowsNotPivoted);
        }
        if report.source.values_changed > 0 || report.source.rows_rejected > 0 {
            return Ok(Outcome::ValuesChanged);
        }
        return Ok(Outcome::Success);
    }
    let chunks: Vec<Chunk> = report.failed.iter().map(|f| f.chunk.clone()).collect();
    failed_csv::write(failed_path, &chunks).map_err(|e| {
        anyhow::anyhow!(
            "cannot write the failed-chunk CSV {}: {e}",
            failed_path.display()
        )
    })?;
    out!(
        "\nFailed chunks ({}), written to {}:",
        report.failed.len(),
        failed_path.display()
    );
    for f in report.failed.iter().take(10) {
        out!("  {}: {}", f.chunk, f.error);
    }
    if report.failed.len() > 10 {
        out!("  ... and {} more (see the log)", report.failed.len() - 10);
    }
    out!(
        "Fix the cause, then: etl rerun {} {}",
        pipeline.display(),
        failed_path.display()
    );
    Ok(Outcome::ChunksFailed)
}
