//! The command line: `etl validate | plan | run | rerun`. Data flow lives
//! in the pipeline file; run-time knobs (verbosity, workers, the rerun
//! file) are flags.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

/// `println!` that returns the write error (a closed pipe) instead of
/// panicking; `main` turns a broken pipe into exit code 0.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

/// `print!` likewise.
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($arg)*)?
    }};
}

use crate::config::{self, ValidatedPipeline};
use crate::migrate::Migration;
use crate::plan::Chunk;
use crate::run::summary::{render, thousands};
use crate::run::{failed_csv, RunOptions, RunReport, Runner};
use crate::time::format_timestamp;

#[derive(Debug, Parser)]
#[command(
    name = "etl",
    version,
    about = "Move data into PostgreSQL fast and safely, driven by one pipeline file."
)]
pub struct Args {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check a pipeline file without connecting; reports every problem.
    Validate { pipeline: PathBuf },
    /// Show the chunks (key, start, end, rows) and the DDL a run would execute; writes nothing.
    Plan { pipeline: PathBuf },
    /// Run every chunk; failed chunks go to the failed-chunk CSV.
    Run {
        pipeline: PathBuf,
        /// Worker threads, overriding chunks.workers.
        #[arg(long)]
        workers: Option<usize>,
        /// Redo every chunk, also those an earlier run committed (reruns
        /// replace their windows, so nothing is duplicated).
        #[arg(long)]
        restart: bool,
        /// After the backfill below the cutoff, keep loading new rows from
        /// the cutoff onward every --interval-secs; Ctrl-C stops cleanly.
        #[arg(long)]
        follow: bool,
        /// Follow mode: seconds between loads.
        #[arg(long, default_value_t = 60.0, requires = "follow")]
        interval_secs: f64,
        /// Follow mode: each load re-reads this many seconds before the
        /// cutoff, so rows committed late are not missed.
        #[arg(long, default_value_t = 300.0, requires = "follow")]
        lag_secs: f64,
    },
    /// Per key: chunks done, failed, pending and running, and each failed
    /// chunk's last error, from the ledger in the target.
    Status {
        pipeline: PathBuf,
        /// Machine-readable output: every chunk's state.
        #[arg(long)]
        json: bool,
    },
    /// Compare source and targets per chunk (row count and an
    /// order-independent checksum); exit 1 if any chunk differs.
    Verify {
        pipeline: PathBuf,
        /// Check only this many chunks, picked at random.
        #[arg(long)]
        sample: Option<usize>,
    },
    /// Run exactly the chunks listed in a failed-chunk CSV (key,start,end).
    Rerun {
        pipeline: PathBuf,
        failed_csv: PathBuf,
        /// List the chunks that would run, and run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only chunks with this key.
        #[arg(long)]
        key: Option<String>,
        /// Wait this many seconds after each chunk (runs one chunk at a time).
        #[arg(long, default_value_t = 0.0)]
        delay_secs: f64,
    },
    /// Internal: one ODBC reader of a migration (a request on stdin, Arrow
    /// IPC on stdout); started by `etl run` for `readers` > 1.
    #[command(hide = true)]
    OdbcRead,
}

/// How the process ends.
pub enum Outcome {
    /// Every chunk done.
    Success,
    /// The run finished but chunks failed.
    ChunksFailed,
    /// Ctrl-C stopped the run before every chunk started; `etl run` resumes.
    Interrupted,
    /// Every chunk done, but a pivot left readings out (unknown format,
    /// NULL value, name or index); the summary counts them.
    RowsNotPivoted,
    /// Every table loaded, but some values did not load as they were
    /// (invalid dates from the driver, loaded as NULL); the summary counts them.
    ValuesChanged,
}

/// Follow mode's timing.
#[derive(Debug, Clone, Copy)]
pub struct Follow {
    pub interval_secs: f64,
    pub lag_secs: f64,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    match args.command {
        Command::Validate { pipeline } => validate(&pipeline),
        Command::Plan { pipeline } => plan(&pipeline),
        Command::Run {
            pipeline,
            workers,
            restart,
            follow,
            interval_secs,
            lag_secs,
        } => {
            let follow = follow.then_some(Follow {
                interval_secs,
                lag_secs,
            });
            run_all(&pipeline, workers, restart, follow)
        }
        Command::Status { pipeline, json } => status(&pipeline, json),
        Command::Verify { pipeline, sample } => verify(&pipeline, sample),
        Command::Rerun {
            pipeline,
            failed_csv,
            dry_run,
            key,
            delay_secs,
        } => rerun(&pipeline, &failed_csv, dry_run, key.as_deref(), delay_secs),
        Command::OdbcRead => {
            crate::source::odbc::process::child_main()?;
            Ok(Outcome::Success)
        }
    }
}

fn load(path: &Path) -> anyhow::Result<ValidatedPipeline> {
    Ok(config::load_validated(path)?)
}

fn validate(path: &Path) -> anyhow::Result<Outcome> {
    let p = load(path)?;
    out!(
        "{}: pipeline {:?} is valid ({} sink{})",
        path.display(),
        p.name,
        p.sinks.len(),
        if p.sinks.len() == 1 { "" } else { "s" }
    );
    Ok(Outcome::Success)
}

/// An ODBC source without time windows: a migration, one chunk per table
/// (or one for its query). With `[chunks] time_column` an ODBC source runs
/// through the chunk runner like every other source.
fn is_migration(p: &ValidatedPipeline) -> bool {
    matches!(p.source, config::validate::ValidatedSource::Odbc(_))
        && p.chunks.time_column.is_empty()
}

fn plan(path: &Path) -> anyhow::Result<Outcome> {
    let pipeline = load(path)?;
    if is_migration(&pipeline) {
        let m = Migration::discover(&pipeline)?;
        out!(
            "Pipeline {}: {} tables from an ODBC source",
            m.pipeline,
            m.tables.len()
        );
        for line in m.plan_lines()? {
            out!("{line}");
        }
        out!("Nothing was written.");
        return Ok(Outcome::Success);
    }
    let runner = Runner::build(pipeline)?;
    let plan = runner.plan()?;
    let p = &runner.pipeline;
    out!(
        "Pipeline {}: {} chunks, {} rows",
        p.name,
        plan.chunks.len(),
        thousands(plan.rows())
    );
    if let Some((start, end)) = plan.range {
        out!(
            "Range [{}, {}), interval {} s",
            format_timestamp(start),
            format_timestamp(end),
            p.chunks.interval / 1_000_000
        );
    }
    let key_width = plan
        .chunks
        .iter()
        .map(|c| c.chunk.key.as_deref().unwrap_or("").len())
        .max()
        .unwrap_or(0)
        .max(3);
    out!("");
    out!(
        "{:key_width$}  {:26}  {:26}  {:>12}",
        "key",
        "start",
        "end",
        "rows"
    );
    for c in &plan.chunks {
        out!(
            "{:key_width$}  {:26}  {:26}  {:>12}",
            c.chunk.key.as_deref().unwrap_or(""),
            format_timestamp(c.chunk.start),
            format_timestamp(c.chunk.end),
            thousands(c.rows)
        );
    }
    if plan.rows_outside > 0 {
        out!(
            "\n{} source rows have a NULL {} or lie outside the range: no chunk holds them",
            thousands(plan.rows_outside),
            p.chunks.time_column
        );
    }
    let chunks: Vec<Chunk> = plan.chunks.iter().map(|c| c.chunk.clone()).collect();
    out!("\nTargets:");
    for line in runner.describe_sinks(&chunks)? {
        out!("  {line}");
    }
    Ok(Outcome::Success)
}

fn run_all(
    path: &Path,
    workers: Option<usize>,
    restart: bool,
    follow: Option<Follow>,
) -> anyhow::Result<Outcome> {
    if let Some(f) = follow {
        if !(1.0..=86_400.0).contains(&f.interval_secs)
            || !(0.0..=30.0 * 86_400.0).contains(&f.lag_secs)
        {
            anyhow::bail!("--interval-secs must be 1 to 86400 and --lag-secs 0 to 2592000");
        }
    }
    crate::run::install_ctrl_c();
    let pipeline = load(path)?;
    let failed_path = pipeline.chunks.failed_csv.clone();
    if is_migration(&pipeline) {
        if follow.is_some() {
            anyhow::bail!("--follow needs a time column; an ODBC source loads whole tables");
        }
        let m = Migration::discover(&pipeline)?;
        let report = m.run(None, restart, workers)?;
        out_raw!("{}", crate::migrate::render(&m, &report));
        return finish_migration(path, &report, &failed_path, None);
    }
    let runner = Runner::build(pipeline)?;
    // The cutoff splits the work: backfill below it, follow mode from it
    // onward. Follow mode sets it when there is none; a plain run stops at
    // one that exists, so backfill and follow never load the same rows twice.
    let cutoff = match (runner.cutoff()?, follow) {
        (Some(c), _) => Some(c),
        (None, Some(_)) => {
            let c = now_micros();
            runner.set_cutoff(c)?;
            Some(c)
        }
        (None, None) => None,
    };
    let mut chunking = runner.pipeline.chunks.clone();
    if let Some(c) = cutoff {
        chunking.end = Some(chunking.end.map_or(c, |e| e.min(c)));
        tracing::info!(cutoff = %format_timestamp(c), "Backfill stops at the follow cutoff.");
    }
    // A table with an index on (key, time) is planned by index: no scan of
    // the whole table before the first chunk. `etl plan` still counts rows.
    let (plan, counted) = match runner.plan_by_index(&chunking)? {
        Some(plan) => {
            tracing::info!(
                chunks = plan.chunks.len(),
                "Planned by index (rows are not counted first)."
            );
            (plan, false)
        }
        None => (runner.plan_with(&chunking)?, true),
    };
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
    // A chunk is done when every sink has it; one that some sinks have and
    // others lack (a deleted staging file) runs again for all of them.
    let (done, partly): (HashSet<Chunk>, HashSet<Chunk>) = if restart || runner.truncates() {
        Default::default()
    } else {
        let by_sink = runner.committed_by_sink(&all)?;
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
    };
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
    let options = RunOptions {
        workers,
        truncate: true,
        redo: restart,
        redo_chunks: partly.difference(&done).cloned().collect(),
        expected_rows: counted.then(|| todo.iter().map(|c| c.rows).sum()),
        ..Default::default()
    };
    let chunks = todo.into_iter().map(|c| c.chunk.clone()).collect();
    let mut report = runner.run(chunks, &options)?;
    report.chunks_skipped = done.len();
    out_raw!("{}", render(&runner.pipeline.name, &report));
    if plan.rows_outside > 0 && cutoff.is_none() {
        out!(
            "  not loaded   {} rows outside the chunk range or with a NULL time",
            thousands(plan.rows_outside)
        );
    }
    let outcome = finish(path, &report, &failed_path, None)?;
    match (follow, cutoff) {
        (Some(f), Some(c)) if !crate::run::STOP.load(std::sync::atomic::Ordering::SeqCst) => {
            follow_loop(&runner, f, c, workers)
        }
        (Some(_), _) => Ok(Outcome::Success),
        (None, _) if report.chunks_not_started() > 0 => {
            out!(
                "Stopped by Ctrl-C: {} chunks not started; run the same command to resume.",
                report.chunks_not_started()
            );
            Ok(Outcome::Interrupted)
        }
        (None, _) => Ok(outcome),
    }
}

fn now_micros() -> i64 {
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
                ..Default::default()
            };
            runner.run(chunks, &options)
        });
        match tick {
            Ok(report) if report.failed.is_empty() && report.chunks_not_started() == 0 => {
                runner.set_cutoff(now)?;
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
        "Follow stopped by Ctrl-C; cutoff {}",
        format_timestamp(cutoff)
    );
    Ok(Outcome::Success)
}

/// `rerun --dry-run`: what would run, one item a line.
fn would<'a, T: std::fmt::Display + 'a>(
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

fn rerun(
    path: &Path,
    csv: &Path,
    dry_run: bool,
    key: Option<&str>,
    delay_secs: f64,
) -> anyhow::Result<Outcome> {
    let pipeline = load(path)?;
    let mut chunks = failed_csv::read(csv).map_err(anyhow::Error::msg)?;
    if let Some(k) = key {
        chunks.retain(|c| c.key.as_deref() == Some(k));
    }
    if is_migration(&pipeline) {
        crate::run::install_ctrl_c();
        if dry_run {
            return would("reload", "chunk", &pipeline.name, &chunks);
        }
        let m = Migration::discover(&pipeline)?;
        let report = m.run(Some(&chunks), true, None)?;
        out_raw!("{}", crate::migrate::render(&m, &report));
        return finish_migration(path, &report, &rerun_csv_path(csv), Some(csv));
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
    let again = rerun_csv_path(csv);
    finish(path, &report, &again, Some(csv))
}

fn verify(path: &Path, sample: Option<usize>) -> anyhow::Result<Outcome> {
    let pipeline = load(path)?;
    if is_migration(&pipeline) {
        let m = Migration::discover(&pipeline)?;
        let checks = m.verify()?;
        out!(
            "{:40}  {:>12}  {:>12}  result",
            "table",
            "source rows",
            "target rows"
        );
        for (t, src, dst) in &checks.counts {
            out!(
                "{t:40}  {:>12}  {:>12}  {}",
                thousands(*src),
                thousands(*dst),
                if src == dst { "equal" } else { "differs" }
            );
        }
        for (fk, t, n) in &checks.orphans {
            out!(
                "foreign key {fk} on {t}: {} orphan rows{}",
                thousands(*n),
                if *n == 0 { "" } else { "  differs" }
            );
        }
        return Ok(if checks.ok() {
            Outcome::Success
        } else {
            Outcome::ChunksFailed
        });
    }
    let runner = Runner::build(pipeline)?;
    let plan = runner.plan()?;
    let mut chunks: Vec<Chunk> = plan.chunks.into_iter().map(|c| c.chunk).collect();
    let total = chunks.len();
    if let Some(n) = sample {
        // A random pick (xorshift seeded by the clock), reported with its seed.
        let mut seed = (now_micros() as u64) | 1;
        out!("Sampling {} of {total} chunks (seed {seed})", n.min(total));
        for i in (1..chunks.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunks.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        chunks.truncate(n);
        chunks.sort_by(|a, b| (a.start, &a.key).cmp(&(b.start, &b.key)));
    }
    let results = runner.verify(&chunks)?;
    let differ: Vec<_> = results.iter().filter(|(_, _, c)| !c.equal()).collect();
    out!(
        "Verified {} chunk{} of pipeline {} against {} sink{}: {} equal, {} differ",
        chunks.len(),
        if chunks.len() == 1 { "" } else { "s" },
        runner.pipeline.name,
        runner.pipeline.sinks.len(),
        if runner.pipeline.sinks.len() == 1 {
            ""
        } else {
            "s"
        },
        results.len() - differ.len(),
        differ.len()
    );
    if differ.is_empty() {
        return Ok(Outcome::Success);
    }
    let key_width = differ
        .iter()
        .map(|(c, _, _)| c.key.as_deref().unwrap_or("").len())
        .max()
        .unwrap_or(0)
        .max(3);
    out!("");
    out!(
        "{:key_width$}  {:26}  {:26}  {:>12}  {:>12}  {:8}  sink",
        "key",
        "start",
        "end",
        "source rows",
        "target rows",
        "checksum"
    );
    for (chunk, sink, c) in &differ {
        out!(
            "{:key_width$}  {:26}  {:26}  {:>12}  {:>12}  {:8}  {sink}",
            chunk.key.as_deref().unwrap_or(""),
            format_timestamp(chunk.start),
            format_timestamp(chunk.end),
            thousands(c.source.rows),
            c.target
                .as_ref()
                .map(|t| thousands(t.rows))
                .unwrap_or_else(|| "missing".into()),
            if c.target.as_ref().is_some_and(|t| t.sum == c.source.sum) {
                "equal"
            } else {
                "differs"
            },
        );
    }
    Ok(Outcome::ChunksFailed)
}

fn status(path: &Path, json: bool) -> anyhow::Result<Outcome> {
    use crate::sink::ledger;
    let pipeline = load(path)?;
    let mut reports = Vec::new();
    for sink in &pipeline.sinks {
        // Only database sinks keep a ledger; a Parquet sink's record is its files.
        let crate::config::ValidatedSink::Postgres(spec) = sink else {
            continue;
        };
        let endpoint = spec.endpoint.clone();
        let (states, cutoff) = crate::run::block_on(async {
            let client = endpoint.connect("etl status").await?;
            let context = format!("reading etl.chunk_ledger on {endpoint}");
            if !ledger::exists(&client)
                .await
                .map_err(crate::error::EtlError::pg(context.clone()))?
            {
                return Ok::<_, crate::error::EtlError>((Vec::new(), None));
            }
            let states = ledger::states(&client, &pipeline.name)
                .await
                .map_err(crate::error::EtlError::pg(context.clone()))?;
            let cutoff = ledger::cutoff(&client, &pipeline.name)
                .await
                .map_err(crate::error::EtlError::pg(context))?;
            Ok((states, cutoff))
        })?;
        reports.push((endpoint.to_string(), states, cutoff.map(format_timestamp)));
    }
    if json {
        let value: Vec<_> = reports
            .iter()
            .map(|(endpoint, states, cutoff)| {
                serde_json::json!({ "ledger": endpoint, "cutoff": cutoff, "chunks": states, "keys": by_key(states) })
            })
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "pipeline": pipeline.name, "sinks": value })
            )?
        );
        return Ok(Outcome::Success);
    }
    for (endpoint, states, cutoff) in &reports {
        out!("Pipeline {}, ledger on {endpoint}", pipeline.name);
        match cutoff {
            Some(c) => out!("  cutoff {c}: backfill below it, follow mode from it on"),
            None => out!("  no cutoff: follow mode has not run"),
        }
        if states.is_empty() {
            out!("  no chunk recorded yet: etl run has not started on this target");
            continue;
        }
        let keys = by_key(states);
        let width = keys.iter().map(|k| k.key.len()).max().unwrap_or(0).max(5);
        out!(
            "  {:width$}  {:>7}  {:>7}  {:>7}  {:>7}  {:>14}",
            "key",
            "done",
            "failed",
            "pending",
            "running",
            "rows"
        );
        for k in &keys {
            out!(
                "  {:width$}  {:>7}  {:>7}  {:>7}  {:>7}  {:>14}",
                k.key,
                k.done,
                k.failed,
                k.pending,
                k.running,
                thousands(k.rows)
            );
        }
        let failed: Vec<_> = states.iter().filter(|s| s.status == "failed").collect();
        if !failed.is_empty() {
            out!("  Failed chunks:");
            for f in failed {
                out!(
                    "    {} [{}, {}) after {} attempt{}: {}",
                    f.key.as_deref().unwrap_or(""),
                    f.start,
                    f.end,
                    f.attempts,
                    if f.attempts == 1 { "" } else { "s" },
                    f.last_error.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(Outcome::Success)
}

/// Chunk counts of one key, for `etl status`.
#[derive(serde::Serialize)]
struct KeyStatus {
    key: String,
    done: usize,
    failed: usize,
    pending: usize,
    running: usize,
    rows: u64,
}

fn by_key(states: &[crate::sink::ledger::ChunkState]) -> Vec<KeyStatus> {
    let mut keys: Vec<KeyStatus> = Vec::new();
    for s in states {
        let key = s.key.clone().unwrap_or_default();
        if keys.last().is_none_or(|k| k.key != key) {
            keys.push(KeyStatus {
                key,
                done: 0,
                failed: 0,
                pending: 0,
                running: 0,
                rows: 0,
            });
        }
        let k = keys.last_mut().expect("pushed above");
        match s.status.as_str() {
            "done" => {
                k.done += 1;
                k.rows += s.rows.unwrap_or(0) as u64;
            }
            "failed" => k.failed += 1,
            "running" => k.running += 1,
            _ => k.pending += 1,
        }
    }
    keys
}

/// `failed.csv` -> `failed.rerun-20261122T031500.csv`, beside it.
/// Exit status of a migration: failed tables go to the CSV (exit 1), as do
/// constraints that could not be added or checks that differ; invalid dates
/// loaded as NULL give exit 3.
fn finish_migration(
    pipeline: &Path,
    report: &crate::migrate::Report,
    failed_path: &Path,
    rerun_of: Option<&Path>,
) -> anyhow::Result<Outcome> {
    let failed = &report.run.failed;
    if !failed.is_empty() {
        let chunks: Vec<Chunk> = failed.iter().map(|f| f.chunk.clone()).collect();
        failed_csv::write(failed_path, &chunks).map_err(|e| {
            anyhow::anyhow!(
                "cannot write the failed-chunk CSV {}: {e}",
                failed_path.display()
            )
        })?;
        out!(
            "\nFailed chunks ({}), written to {}:",
            failed.len(),
            failed_path.display()
        );
        for f in failed {
            // A whole table's chunk is named by its table.
            match &f.chunk.key {
                Some(table) if f.chunk.is_whole() => out!("  {table}: {}", f.error),
                _ => out!("  {}: {}", f.chunk, f.error),
            }
        }
        out!(
            "Fix the cause, then: etl rerun {} {}",
            pipeline.display(),
            failed_path.display()
        );
        return Ok(Outcome::ChunksFailed);
    }
    if rerun_of.is_none() && failed_path.exists() {
        out!(
            "  note         {} is from an earlier run; no table failed in this one",
            failed_path.display()
        );
    }
    if crate::run::STOP.load(std::sync::atomic::Ordering::SeqCst) {
        out!("Stopped by Ctrl-C; run the same command to resume.");
        return Ok(Outcome::Interrupted);
    }
    if let Some(f) = &report.finish {
        if !f.problems.is_empty() || !f.checks.ok() {
            return Ok(Outcome::ChunksFailed);
        }
    }
    if report.values_changed() > 0 {
        return Ok(Outcome::ValuesChanged);
    }
    Ok(Outcome::Success)
}

fn rerun_csv_path(csv: &Path) -> PathBuf {
    let stem = csv
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "failed".into());
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    csv.with_file_name(format!("{stem}.rerun-{stamp}.csv"))
}

fn finish(
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
        if report.source.values_changed > 0 {
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
