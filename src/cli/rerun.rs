//! `etl rerun`: exactly the chunks of a failed-chunk CSV.

use std::path::Path;
use std::time::Duration;

use super::finish::{finish, rerun_csv_path};
use super::{is_migration, load, migration, Outcome};
use crate::plan::Chunk;
use crate::run::summary::render;
use crate::run::{failed_csv, RunOptions, Runner};
use etl_sink::spec::ValidatedSink;

/// `rerun --dry-run`: what would run, one item a line.
pub(super) fn would<'a, T: std::fmt::Display + 'a>(
    verb: &str,
    noun: &str,
    pipeline: &str,
    items: impl IntoIterator<Item = &'a T, IntoIter: ExactSizeIterator>,
) -> anyhow::Result<Outcome> {
    let items = items.into_iter();
    let n = items.len();
    out!(
        "Would {verb} {n} {noun}{} of pipeline {pipeline}:",
        if n == 1 { "" } else { "s" }
    );
    for item in items {
        out!("  {item}");
    }
    Ok(Outcome::Success)
}

pub(super) fn rerun(
    path: &Path,
    csv: &Path,
    dry_run: bool,
    keys: &[String],
    delay_secs: f64,
) -> anyhow::Result<Outcome> {
    let pipeline = load(path)?;
    let mut chunks = failed_csv::read(csv).map_err(anyhow::Error::msg)?;
    if !keys.is_empty() {
        chunks.retain(|c| c.key.as_ref().is_some_and(|k| keys.contains(k)));
    }
    if is_migration(&pipeline) {
        return migration::rerun(path, &pipeline, csv, &chunks, dry_run);
    }
    if pipeline.chunks.key_column.is_none() {
        if let Some(c) = chunks.iter().find(|c| c.key.is_some()) {
            anyhow::bail!(
                "{}: chunk {c} has a key, but pipeline {} has no [chunks] key_column; \
                 is this the CSV of another pipeline?",
                csv.display(),
                pipeline.name
            );
        }
    }
    if dry_run {
        return would("rerun", "chunk", &pipeline.name, &chunks);
    }
    if !(0.0..=86_400.0).contains(&delay_secs) {
        anyhow::bail!("--delay-secs {delay_secs} is out of range; use 0 to 86400");
    }
    let runner = Runner::build(pipeline)?;
    refuse_loaded(&runner, csv, &chunks)?;
    let delay = Duration::from_secs_f64(delay_secs);
    let options = RunOptions {
        workers: (!delay.is_zero()).then_some(1),
        delay,
        // A rerun runs exactly the listed chunks, done or not.
        redo: true,
        ..Default::default()
    };
    let report = runner.run(chunks, &options)?;
    out_raw!("{}", render(&runner.pipeline.name, &report));
    super::finish::record_peaks(
        &runner.pipeline.name,
        &super::finish::ledgers(&runner.pipeline),
        runner.pipeline.chunks.retry(),
    );
    let again = rerun_csv_path(csv);
    finish(path, &report, &again, Some(csv))
}

/// A rerun redoes its chunks in place. Where the target cannot find a
/// chunk's rows (ranges of the source table's blocks, a CSV file's byte
/// ranges), a chunk a PostgreSQL sink has loaded cannot be redone: each
/// would be refused as it began and its ledger row read failed while its
/// rows are there. So the rerun is refused before any chunk, naming them.
fn refuse_loaded(runner: &Runner, csv: &Path, chunks: &[Chunk]) -> anyhow::Result<()> {
    // A rerun never empties the target, mode "replace" included.
    let Some(what) = super::run::unfindable(&runner.pipeline) else {
        return Ok(());
    };
    // As the sink decides: a whole table's chunk replaces the table, and
    // a time window's rows are found by the time column.
    let ranges: Vec<Chunk> = chunks
        .iter()
        .filter(|c| !c.is_whole() && c.unit != etl_base::plan::Unit::Time)
        .cloned()
        .collect();
    if ranges.is_empty() {
        return Ok(());
    }
    let committed = runner.committed_by_sink(&ranges)?;
    let loaded: Vec<&Chunk> = ranges
        .iter()
        .filter(|c| {
            runner
                .pipeline
                .sinks
                .iter()
                .zip(&committed)
                .any(|(s, done)| matches!(s, ValidatedSink::Postgres(_)) && done.contains(c))
        })
        .collect();
    if loaded.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = loaded.iter().take(5).map(|c| c.to_string()).collect();
    anyhow::bail!(
        "{}: {} of its {} chunks {} loaded by an earlier run ({}{}), and {what} leave no column to find their rows by in the target, so they cannot be loaded again in place; \
         rerun the others (etl status lists what is not done), or load the table again: etl run --recreate, or mode = \"replace\"",
        csv.display(),
        loaded.len(),
        chunks.len(),
        if loaded.len() == 1 { "was" } else { "were" },
        shown.join("; "),
        if loaded.len() > shown.len() { "; ..." } else { "" }
    )
}
