//! `etl run`: the backfill below the cutoff, and with `--follow` new rows
//! from the cutoff onward at the same time.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::finish::{checks, finish};
use super::{is_migration, load_keys, migration, Follow, Outcome, RunFlags};
use crate::plan::Chunk;
use crate::run::summary::{render, thousands};
use crate::run::{RunOptions, Runner};
use crate::time::format_timestamp;

pub(super) fn run_all(path: &Path, keys: &[String], flags: RunFlags) -> anyhow::Result<Outcome> {
    let RunFlags {
        workers,
        restart,
        follow,
        ..
    } = flags;
    if let Some(f) = follow {
        if !(1.0..=86_400.0).contains(&f.interval_secs)
            || !(0.0..=30.0 * 86_400.0).contains(&f.lag_secs)
        {
            anyhow::bail!("--interval-secs must be 1 to 86400 and --lag-secs 0 to 2592000");
        }
    }
    crate::run::install_stop_signals();
    let pipeline = load_keys(path, keys)?;
    super::bound_connections(&pipeline, workers);
    refused(&pipeline, keys, flags)?;
    if let Some(yes) = flags.recreate {
        super::recreate::recreate(&pipeline, yes)?;
    }
    let failed_path = pipeline.chunks.failed_csv.clone();
    if is_migration(&pipeline) {
        if flags.ddl_only {
            return migration::create_only(&pipeline);
        }
        return migration::run(path, &pipeline, workers, restart, follow.is_some());
    }
    let runner = Runner::build(pipeline)?;
    if flags.ddl_only {
        return create_only(&runner);
    }
    if !keys.is_empty() && runner.truncates() {
        anyhow::bail!(
            "--key loads some keys, but mode = \"replace\" empties each target table first, which would drop the other keys' rows; use mode = \"append\" or \"upsert\" (chunks replace their own windows), or run without --key"
        );
    }
    // The cutoff splits the work: backfill below it, follow mode from it
    // onward. Follow mode sets it when there is none; a plain run stops at
    // one that exists, so backfill and follow never load the same rows twice.
    let cutoff = match (runner.cutoff()?, follow) {
        (Some(c), _) => Some(c),
        (None, Some(_)) => {
            let c = now_micros();
            runner.set_cutoff(etl_model::ledger::CutoffChange::Forward(c))?;
            Some(c)
        }
        (None, None) => None,
    };
    backfill_and_follow(
        path,
        &runner,
        cutoff,
        follow,
        workers,
        restart,
        &failed_path,
    )
}

/// The backfill below the cutoff and, with `--follow`, the follow loop
/// from it onward at the same time.
fn backfill_and_follow(
    path: &Path,
    runner: &Runner,
    cutoff: Option<i64>,
    follow: Option<Follow>,
    workers: Option<usize>,
    restart: bool,
    failed_path: &Path,
) -> anyhow::Result<Outcome> {
    // Follow mode loads from the cutoff onward while the backfill below
    // it runs: both share the ledger, whose window locks keep the overlap
    // (the lag re-read) from being loaded twice.
    std::thread::scope(|scope| {
        let follower = match (follow, cutoff) {
            (Some(f), Some(c)) => Some(scope.spawn(move || follow_loop(runner, f, c, workers))),
            _ => None,
        };
        let backfill = backfill(
            path,
            runner,
            cutoff,
            workers,
            restart,
            failed_path,
            follow.is_some(),
        );
        let Some(follower) = follower else {
            return backfill.map(|(outcome, _)| outcome);
        };
        match &backfill {
            Ok((_, true)) => tracing::warn!(
                "Backfill stopped (Ctrl-C or SIGTERM) before every chunk started; run the same command to resume it."
            ),
            Ok(_) => tracing::info!("Backfill done; following goes on until Ctrl-C or SIGTERM."),
            // The backfill could not run at all (no plan, no ledger): stop
            // following too and report it.
            Err(_) => crate::run::STOP.store(true, std::sync::atomic::Ordering::SeqCst),
        }
        let followed = follower
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the follow loop panicked")));
        let (outcome, _) = backfill?;
        followed?;
        Ok(match outcome {
            Outcome::Interrupted => Outcome::Success,
            other => other,
        })
    })
}

/// Flags that do not go with each other or with this pipeline: what to
/// do instead.
fn refused(
    pipeline: &crate::config::validate::ValidatedPipeline,
    keys: &[String],
    flags: RunFlags,
) -> anyhow::Result<()> {
    let (restart, follow) = (flags.restart, flags.follow);
    if !keys.is_empty() && follow.is_some() {
        anyhow::bail!(
            "--key with --follow would move the pipeline's one cutoff past rows of the other keys; follow every key, or backfill one key at a time without --follow"
        );
    }
    if flags.recreate.is_some() && !keys.is_empty() {
        anyhow::bail!(
            "--recreate drops the pipeline's tables, with every key's rows; run it without --key"
        );
    }
    if follow.is_some()
        && matches!(
            pipeline.source,
            crate::config::validate::ValidatedSource::Csv(_)
                | crate::config::validate::ValidatedSource::Parquet { .. }
        )
    {
        anyhow::bail!(
            "--follow polls a database for rows newer than the cutoff, which files do not have: drop --follow, and load new files by a run whose source.path names them"
        );
    }
    if follow.is_some() && !is_migration(pipeline) && pipeline.chunks.time_column.is_empty() {
        anyhow::bail!(
            "--follow loads rows newer than the cutoff by [chunks] time_column, and this pipeline has none (its source is read whole); add time_column, or drop --follow"
        );
    }
    if let (true, Some(what)) = (restart, unfindable(pipeline)) {
        anyhow::bail!(
            "--restart redoes chunks in place, but {what} leave no column to find their rows by in the target; use --recreate (drops and reloads the tables this pipeline created) or mode = \"replace\" (empties the target as each run starts)"
        );
    }
    Ok(())
}

/// What a pipeline's chunks are, when a target cannot find their rows
/// again (so nothing can redo them in place: not --restart, not a rerun).
pub(super) fn unfindable(
    pipeline: &crate::config::validate::ValidatedPipeline,
) -> Option<&'static str> {
    match &pipeline.source {
        crate::config::validate::ValidatedSource::Csv(s) if s.windows.is_none() => {
            Some("a CSV file's byte ranges")
        }
        _ if pipeline.chunks.by_blocks() => Some("ranges of the source table's blocks"),
        _ => None,
    }
}

/// The backfill's plan, and whether its rows were counted.
fn planned(
    runner: &Runner,
    chunking: &etl_model::chunking::Chunking,
) -> anyhow::Result<(crate::plan::Plan, bool)> {
    // A table with an index on (key, time) is planned by index: no scan of
    // the whole table before the first chunk. `etl plan` still counts rows.
    crate::hooks::phase("plan");
    Ok(match runner.plan_by_index(chunking)? {
        Some(plan) => {
            tracing::info!(
                chunks = plan.chunks.len(),
                "Planned by index (rows are not counted first)."
            );
            (plan, false)
        }
        None => (runner.plan_with(chunking)?, true),
    })
}

/// The chunks every sink committed in an earlier run (skipped), and
/// those some sinks committed (run again for all).
fn committed(
    runner: &Runner,
    all: &[Chunk],
    restart: bool,
) -> anyhow::Result<(HashSet<Chunk>, HashSet<Chunk>)> {
    // A chunk is done when every sink has it; one that some sinks have and
    // others lack (a deleted staging file) runs again for all of them.
    Ok(if restart || runner.truncates() {
        Default::default()
    } else {
        let by_sink = runner.committed_by_sink(all)?;
        let done = all
            .iter()
            .filter(|c| by_sink.iter().all(|s| s.contains(c)))
            .cloned()
            .collect();
        let partly = all
            .iter()
            .filter(|c| by_sink.iter().any(|s| s.contains(c)))
            .cloned()
            .collect();
        (done, partly)
    })
}

/// Every planned chunk below the cutoff (all of them without one), skipping
/// what earlier runs committed. Returns the outcome and whether Ctrl-C
/// left chunks unstarted.
fn backfill(
    path: &Path,
    runner: &Runner,
    cutoff: Option<i64>,
    workers: Option<usize>,
    restart: bool,
    failed_path: &Path,
    following: bool,
) -> anyhow::Result<(Outcome, bool)> {
    let mut chunking = runner.pipeline.chunks.clone();
    if let Some(c) = cutoff {
        chunking.end = Some(chunking.end.map_or(c, |e| e.min(c)));
        tracing::info!(cutoff = %format_timestamp(c), "Backfill stops at the follow cutoff.");
    }
    let (plan, counted) = planned(runner, &chunking)?;
    if plan.rows_outside > 0 {
        tracing::warn!(
            rows = plan.rows_outside,
            "Source rows with a NULL {} or outside [chunks] start/end (or past the follow cutoff) are in no backfill chunk.",
            runner.pipeline.chunks.time_column
        );
    }
    // Resume: chunks every sink committed in an earlier run are skipped.
    // A replace-mode run truncates its targets, so it always starts over.
    let all: Vec<Chunk> = plan.chunks.iter().map(|c| c.chunk.clone()).collect();
    let (done, partly) = committed(runner, &all, restart)?;
    if !done.is_empty() {
        tracing::info!(
            chunks = done.len(),
            "Skipping chunks an earlier run committed; --restart redoes them."
        );
    }
    let todo: Vec<_> = plan
        .chunks
        .iter()
        .filter(|c| !done.contains(&c.chunk))
        .collect();
    // The pace of earlier runs of this plan, for the time left.
    let pool = workers
        .unwrap_or(runner.pipeline.chunks.workers)
        .min(todo.len())
        .max(1);
    let recorded = runner.recorded(&plan)?;
    let options = RunOptions {
        workers,
        truncate: true,
        redo: restart,
        redo_chunks: partly.difference(&done).cloned().collect(),
        expected_rows: counted.then(|| todo.iter().map(|c| c.rows).sum()),
        prior: (recorded.chunks > 0).then_some((recorded, pool)),
        ..Default::default()
    };
    let chunks = todo.into_iter().map(|c| c.chunk.clone()).collect();
    let mut report = runner.run(chunks, &options)?;
    report.chunks_skipped = done.len();
    out_raw!("{}", render(&runner.pipeline.name, &report));
    super::finish::record_peaks(
        &runner.pipeline.name,
        &super::finish::ledgers(&runner.pipeline),
        runner.pipeline.chunks.retry(),
    );
    if plan.rows_outside > 0 && cutoff.is_none() {
        out!(
            "  not loaded   {} rows outside the chunk range or with a NULL time",
            thousands(plan.rows_outside)
        );
    }
    let outcome = finish(path, &report, failed_path, None)?;
    let interrupted = report.chunks_not_started() > 0;
    // Checks read the whole target: after a backfill that ran to its end.
    let outcome = if interrupted {
        outcome
    } else {
        checks(&runner.pipeline, outcome)?
    };
    if interrupted && !following {
        out!(
            "Stopped (Ctrl-C or SIGTERM): {} chunks not started; run the same command to resume.",
            report.chunks_not_started()
        );
        return Ok((Outcome::Interrupted, true));
    }
    Ok((outcome, interrupted))
}

/// `--ddl-only`: the targets of every planned chunk created and widened,
/// nothing loaded.
fn create_only(runner: &Runner) -> anyhow::Result<Outcome> {
    let chunking = &runner.pipeline.chunks;
    let plan = match runner.plan_by_index(chunking)? {
        Some(plan) => plan,
        None => runner.plan_with(chunking)?,
    };
    let chunks: Vec<Chunk> = plan.chunks.into_iter().map(|c| c.chunk).collect();
    let lines = runner.create_only(&chunks)?;
    out!(
        "Pipeline {}: targets created for {} chunks; nothing loaded (--ddl-only)",
        runner.pipeline.name,
        chunks.len()
    );
    for line in lines {
        out!("  {line}");
    }
    Ok(Outcome::Success)
}

pub(super) fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Every `interval`, loads `[cutoff - lag, now)` per key (re-reading the
/// lag so late rows land; windows are replaced, never doubled), then moves
/// the cutoff to `now` if every chunk committed. Ctrl-C ends it after the
/// chunk in flight, with exit code 0.
fn follow_loop(
    runner: &Runner,
    f: Follow,
    mut cutoff: i64,
    workers: Option<usize>,
) -> anyhow::Result<Outcome> {
    use std::sync::atomic::Ordering;
    let lag = (f.lag_secs * 1e6) as i64;
    tracing::info!(interval_secs = f.interval_secs, lag_secs = f.lag_secs, cutoff = %format_timestamp(cutoff), "Following.");
    while !crate::run::STOP.load(Ordering::SeqCst) {
        let now = now_micros();
        let mut chunking = runner.pipeline.chunks.clone();
        chunking.start = Some(cutoff - lag);
        chunking.end = Some(now);
        // One window per key over the whole range, in whole seconds.
        chunking.interval = ((now - (cutoff - lag) + 999_999) / 1_000_000).max(1) * 1_000_000;
        let tick = runner.plan_with(&chunking).and_then(|plan| {
            let chunks: Vec<Chunk> = plan.chunks.into_iter().map(|c| c.chunk).collect();
            let options = RunOptions {
                workers,
                redo: true,
                skip_analyze: true,
                ..Default::default()
            };
            runner.run(chunks, &options)
        });
        match tick {
            Ok(report) if report.failed.is_empty() && report.chunks_not_started() == 0 => {
                runner.set_cutoff(etl_model::ledger::CutoffChange::Forward(now))?;
                cutoff = now;
                tracing::info!(
                    rows = report.rows,
                    chunks = report.chunks_done,
                    cutoff = %format_timestamp(cutoff),
                    "Follow: loaded; cutoff moved."
                );
            }
            Ok(report) => {
                for f in &report.failed {
                    tracing::error!(chunk = %f.chunk, error = %f.error, "Follow: chunk failed; the cutoff stays, the next load retries it.");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "Follow: this load failed; the next one retries it.")
            }
        }
        let until = std::time::Instant::now() + Duration::from_secs_f64(f.interval_secs);
        while std::time::Instant::now() < until && !crate::run::STOP.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    out!(
        "Follow stopped (Ctrl-C or SIGTERM); cutoff {}",
        format_timestamp(cutoff)
    );
    Ok(Outcome::Success)
}
