//! The commands on a migration (an ODBC source without time windows):
//! the phases around the runner, from [`crate::migrate`].

use std::path::Path;

use super::finish::{checks, finish, rerun_csv_path};
use super::rerun::would;
use super::Outcome;
use crate::config::ValidatedPipeline;
use crate::migrate::Migration;
use crate::plan::Chunk;
use crate::run::summary::thousands;

/// `etl plan`: the phases, each table with its chunks, the DDL.
pub(super) fn plan(pipeline: &ValidatedPipeline) -> anyhow::Result<Outcome> {
    let m = Migration::discover(pipeline)?;
    out!(
        "Pipeline {}: {} tables from {}",
        m.pipeline,
        m.tables.len(),
        match m.origin {
            crate::migrate::Origin::Odbc(_) => "an ODBC source",
            crate::migrate::Origin::Access(_) => "an Access file",
            crate::migrate::Origin::Postgres(..) => "a PostgreSQL database",
            crate::migrate::Origin::Csv(_) => "CSV files",
        }
    );
    for line in m.plan_lines()? {
        out!("{line}");
    }
    out!("Nothing was written.");
    Ok(Outcome::Success)
}

/// `etl run`: every phase; the data phase skips the chunks done before.
pub(super) fn run(
    path: &Path,
    pipeline: &ValidatedPipeline,
    workers: Option<usize>,
    restart: bool,
    follow: bool,
) -> anyhow::Result<Outcome> {
    if follow {
        anyhow::bail!("--follow needs [chunks] time_column; without it an ODBC source is migrated table by table");
    }
    let m = Migration::discover(pipeline)?;
    let report = m.run(None, restart, workers)?;
    out_raw!("{}", crate::migrate::render(&m, &report));
    super::finish::record_peaks(
        &pipeline.name,
        &super::finish::ledgers(pipeline),
        pipeline.chunks.retry(),
    );
    let outcome = end(path, &report, &pipeline.chunks.failed_csv, None)?;
    if matches!(outcome, Outcome::Interrupted) {
        return Ok(outcome);
    }
    checks(pipeline, outcome)
}

/// `etl run --ddl-only`: every table created, nothing loaded.
pub(super) fn create_only(pipeline: &ValidatedPipeline) -> anyhow::Result<Outcome> {
    let m = Migration::discover(pipeline)?;
    let lines = m.create_only()?;
    let after = match m.origin {
        etl_migrate::Origin::Postgres(..) if m.sink.as_ref().is_some_and(|s| s.create_table) => {
            "the source's indexes, keys and triggers made too"
        }
        _ => "constraints, indexes and sequences come after the data",
    };
    out!(
        "Pipeline {}: {} tables created; nothing loaded (--ddl-only); {after}",
        m.pipeline,
        m.tables.len()
    );
    for line in lines {
        out!("  {line}");
    }
    Ok(Outcome::Success)
}

/// `etl rerun`: the chunks listed, then the phases after the data.
pub(super) fn rerun(
    path: &Path,
    pipeline: &ValidatedPipeline,
    csv: &Path,
    chunks: &[Chunk],
    dry_run: bool,
) -> anyhow::Result<Outcome> {
    crate::run::install_stop_signals();
    if dry_run {
        return would("reload", "chunk", &pipeline.name, chunks);
    }
    let m = Migration::discover(pipeline)?;
    let report = m.run(Some(chunks), true, None)?;
    out_raw!("{}", crate::migrate::render(&m, &report));
    super::finish::record_peaks(
        &pipeline.name,
        &super::finish::ledgers(pipeline),
        pipeline.chunks.retry(),
    );
    end(path, &report, &rerun_csv_path(csv), Some(csv))
}

/// `etl verify`: row counts (and checksums, from a PostgreSQL source) per
/// table, orphans per foreign key, sequences behind their column.
pub(super) fn verify(pipeline: &ValidatedPipeline) -> anyhow::Result<Outcome> {
    let m = Migration::discover(pipeline)?;
    let checks = m.verify()?;
    out!(
        "{:40}  {:>12}  {:>12}  result",
        "table",
        "source rows",
        "target rows"
    );
    for (t, src, dst) in &checks.counts {
        // Where both servers checksum every row, equal counts are not enough.
        let checksum = checks.checksums.iter().find(|c| c.0 == *t).map(|c| c.1);
        out!(
            "{t:40}  {:>12}  {:>12}  {}",
            thousands(*src),
            thousands(*dst),
            match (src == dst, checksum) {
                (false, _) => "differs",
                (true, Some(false)) => "differs (checksum)",
                (true, Some(true)) => "equal (checksum)",
                (true, None) => "equal",
            }
        );
    }
    if let Some((src, dst)) = checks.large_objects {
        out!(
            "{:40}  {:>12}  {:>12}  {}",
            "large objects",
            thousands(src),
            thousands(dst),
            if src == dst { "equal" } else { "differs" }
        );
    }
    for s in &checks.sequences_behind {
        out!("sequence {s}  differs");
    }
    for (fk, t, n) in &checks.orphans {
        out!(
            "foreign key {fk} on {t}: {} orphan rows{}",
            thousands(*n),
            if *n == 0 { "" } else { "  differs" }
        );
    }
    let outcome = if checks.ok() {
        Outcome::Success
    } else {
        Outcome::ChunksFailed
    };
    super::finish::checks(pipeline, outcome)
}

/// How a migration ends: its failed chunks as every run's (exit 1); then
/// constraints that could not be added or checks that differ (exit 1);
/// invalid dates loaded as NULL (exit 3).
fn end(
    path: &Path,
    report: &crate::migrate::Report,
    failed_path: &Path,
    rerun_of: Option<&Path>,
) -> anyhow::Result<Outcome> {
    let outcome = finish(path, &report.run, failed_path, rerun_of)?;
    if !matches!(outcome, Outcome::Success | Outcome::ValuesChanged) {
        return Ok(outcome);
    }
    if crate::run::STOP.load(std::sync::atomic::Ordering::SeqCst) {
        out!("Stopped (Ctrl-C or SIGTERM); run the same command to resume.");
        return Ok(Outcome::Interrupted);
    }
    if let Some(f) = &report.finish {
        if !f.problems.is_empty() || !f.checks.ok() {
            return Ok(Outcome::ChunksFailed);
        }
    }
    // Values the source changed or lines it left out (counted by the
    // runner's summary, or by the ODBC readers').
    if outcome == Outcome::ValuesChanged || report.values_changed() > 0 {
        return Ok(Outcome::ValuesChanged);
    }
    Ok(Outcome::Success)
}
