//! The one executor ([`run_jobs`]): each runner's chunks on one pool of
//! workers, in the order given; each chunk's outcome tallied as it ends
//! ([`Tally`]); then the chunks a later chunk made stale run again, the
//! targets are analyzed, and the run's report is made.

use super::*;

/// A chunk and the runner that runs it.
type Job<'a> = (&'a Runner, &'a Chunk);

/// The one executor: runs each runner's chunks on one pool of workers, in
/// the order given (a migration's tables parents first, each table's
/// chunks in plan order); never stops on a chunk's failure. Each runner's
/// sinks prepare their targets (create, check, register the chunks)
/// before the first chunk starts.
pub fn run_jobs(
    groups: &[(&Runner, Vec<Chunk>)],
    options: &RunOptions,
) -> Result<RunReport, EtlError> {
    let started = Instant::now();
    prepare_targets(groups, options)?;
    let jobs: Vec<Job> = groups
        .iter()
        .flat_map(|(r, chunks)| chunks.iter().map(move |c| (*r, c)))
        .collect();
    let default_workers = groups.first().map_or(1, |(r, _)| r.pipeline.chunks.workers);
    let workers = options
        .workers
        .unwrap_or(default_workers)
        .clamp(1, jobs.len().max(1));
    // This thread waits for the workers: its idle connections would hold
    // slots of the pools they need.
    block_on(etl_pg::close_idle_here());
    let pool = worker_pool(workers, "etl-worker")?;
    let tally = Tally::default();
    let progress = summary::Progress::new(jobs.len(), options.expected_rows, options.prior);
    let name = groups.first().map_or("", |(r, _)| r.pipeline.name.as_str());
    tracing::info!(pipeline = %name, chunks = jobs.len(), workers, "Run started.");
    // A round runs `jobs` on the pool. The second ("again") runs chunks a
    // sink calls stale (wide cells to pivot again as text, see
    // sink::wide): they were counted once already.
    let round = |jobs: &[Job], again: bool| {
        let next = AtomicUsize::new(0);
        pool.scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|_| {
                    while !STOP.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        tally.run(*job, again, options, &progress);
                        if !options.delay.is_zero() {
                            std::thread::sleep(options.delay);
                        }
                    }
                });
            }
        });
    };
    etl_base::hooks::phase("data");
    round(&jobs, false);
    if !STOP.load(Ordering::SeqCst) {
        let stale = stale_chunks(groups, &tally.failed_chunks())?;
        if !stale.is_empty() {
            tracing::info!(
                chunks = stale.len(),
                "Chunks that wrote numbers into columns a later chunk widened to text run again, pivoted as text."
            );
            let again: Vec<Job> = stale.iter().map(|(r, c)| (*r, c)).collect();
            round(&again, true);
        }
    }
    progress.finish();
    if !options.skip_analyze {
        analyze_written(groups, &tally.failed_chunks())?;
    }
    let report = tally.report(groups, jobs.len(), started);
    tracing::info!(
        pipeline = %name,
        chunks_done = report.chunks_done,
        chunks_failed = report.failed.len(),
        rows = report.rows,
        elapsed_secs = report.elapsed.as_secs_f64(),
        "Run finished."
    );
    Ok(report)
}

/// Each runner's sinks prepare their targets for its chunks.
fn prepare_targets(groups: &[(&Runner, Vec<Chunk>)], options: &RunOptions) -> Result<(), EtlError> {
    etl_base::hooks::phase("create");
    for (runner, chunks) in groups.iter().filter(|(_, c)| !c.is_empty()) {
        block_on(async {
            for s in &runner.sinks {
                runner
                    .step("preparing the targets failed", || {
                        s.prepare(chunks, options.truncate)
                    })
                    .await?;
            }
            Ok::<_, EtlError>(())
        })?;
    }
    Ok(())
}

/// What the chunks of a run did, added up as each ends (on any worker).
#[derive(Default)]
struct Tally {
    rows: AtomicU64,
    bytes_written: AtomicU64,
    failed: Mutex<Vec<FailedChunk>>,
    done: AtomicUsize,
    elsewhere: AtomicUsize,
    pivot: Mutex<Option<etl_transform::pivot::PivotCounts>>,
}

impl Tally {
    /// Runs one chunk (with its retries) and counts its outcome; `again`:
    /// a stale chunk run a second time, counted once already.
    fn run(
        &self,
        (runner, chunk): Job,
        again: bool,
        options: &RunOptions,
        progress: &summary::Progress,
    ) {
        let span = tracing::info_span!("chunk", key = chunk.key.as_deref().unwrap_or(""), start = %chunk.start_label());
        let _guard = span.enter();
        let began = Instant::now();
        let redo = again || options.redo || options.redo_chunks.contains(chunk);
        let written = AtomicU64::new(0);
        let result = runner.run_with_retries(chunk, redo, &|n| {
            written.fetch_add(n, Ordering::Relaxed);
            if !again {
                progress.rows_written(n);
            }
        });
        let written = written.into_inner();
        match result {
            Ok(None) => {
                tracing::debug!("Chunk is done or running in another process; skipped.");
                self.elsewhere.fetch_add(1, Ordering::Relaxed);
                if !again {
                    progress.chunk_done(0, false, written);
                }
            }
            Ok(Some(_)) if again => {
                tracing::info!(
                    "Chunk pivoted again with text columns (a later chunk widened them)."
                );
            }
            Ok(Some((stats, notes))) => {
                if let Some(c) = notes.pivot {
                    let mut pivot = self.pivot.lock().expect("no panic while holding the lock");
                    add_counts(pivot.get_or_insert_with(Default::default), &c);
                }
                tracing::debug!(
                    rows = stats.rows,
                    elapsed_ms = began.elapsed().as_millis() as u64,
                    "Chunk committed."
                );
                self.rows.fetch_add(stats.rows, Ordering::Relaxed);
                self.bytes_written.fetch_add(stats.bytes, Ordering::Relaxed);
                self.done.fetch_add(1, Ordering::Relaxed);
                progress.chunk_done(stats.rows, false, written);
            }
            Err(e) => {
                if again {
                    self.done.fetch_sub(1, Ordering::Relaxed);
                }
                let error = e.to_string();
                tracing::error!(chunk = %chunk, error = %error, "Chunk failed and was rolled back.");
                self.failed
                    .lock()
                    .expect("no panic while holding the lock")
                    .push(FailedChunk {
                        chunk: chunk.clone(),
                        error,
                    });
                if !again {
                    progress.chunk_done(0, true, written);
                }
            }
        }
    }

    fn failed_chunks(&self) -> HashSet<Chunk> {
        self.failed
            .lock()
            .expect("no panic while holding the lock")
            .iter()
            .map(|f| f.chunk.clone())
            .collect()
    }

    /// The run's report: the tallies, failures in time order, and what the
    /// sources read and counted.
    fn report(self, groups: &[(&Runner, Vec<Chunk>)], total: usize, started: Instant) -> RunReport {
        let mut failed = self
            .failed
            .into_inner()
            .expect("no panic while holding the lock");
        failed.sort_by(|a, b| (a.chunk.start, &a.chunk.key).cmp(&(b.chunk.start, &b.chunk.key)));
        let mut counts = source::SourceCounts::default();
        let mut bytes_read = 0;
        for (runner, _) in groups {
            let c = runner.source.counts();
            counts.lines.extend(c.lines);
            counts.values_changed += c.values_changed;
            counts.rows_rejected += c.rows_rejected;
            bytes_read += runner.source.bytes_read();
        }
        RunReport {
            chunks_skipped: 0,
            chunks_elsewhere: self.elsewhere.into_inner(),
            chunks_total: total,
            chunks_done: self.done.into_inner(),
            failed,
            rows: self.rows.into_inner(),
            bytes_read,
            bytes_written: self.bytes_written.into_inner(),
            elapsed: started.elapsed(),
            peak_memory_bytes: summary::peak_memory_bytes(),
            pivot: self
                .pivot
                .into_inner()
                .expect("no panic while holding the lock"),
            source: counts,
        }
    }
}

/// The chunks (not failed) that wrote numbers into wide columns a later
/// chunk widened to text, each once, to pivot again as text.
fn stale_chunks<'a>(
    groups: &[(&'a Runner, Vec<Chunk>)],
    failed: &HashSet<Chunk>,
) -> Result<Vec<(&'a Runner, Chunk)>, EtlError> {
    let mut stale = Vec::new();
    for (runner, chunks) in groups {
        let ok = not_failed(chunks, failed);
        let mut found: Vec<Chunk> = Vec::new();
        for w in runner.sinks.iter().filter_map(|s| s.wide()) {
            let chunks =
                block_on(runner.step("reading the widened columns failed", || w.stale(&ok)))?;
            for c in chunks {
                if !found.contains(&c) {
                    found.push(c);
                }
            }
        }
        stale.extend(found.into_iter().map(|c| (*runner, c)));
    }
    Ok(stale)
}

/// ANALYZE (or VACUUM (ANALYZE)) of the tables the chunks that did not
/// fail wrote, as each sink's `analyze_after` says.
fn analyze_written(
    groups: &[(&Runner, Vec<Chunk>)],
    failed: &HashSet<Chunk>,
) -> Result<(), EtlError> {
    etl_base::hooks::phase("analyze");
    for (runner, chunks) in groups {
        let written = not_failed(chunks, failed);
        for t in runner.sinks.iter().filter_map(|s| s.tables()) {
            let tables = block_on(runner.step("ANALYZE failed", || t.analyze(&written)))?;
            if !tables.is_empty() {
                tracing::info!(
                    tables = tables.len(),
                    "ANALYZE or VACUUM (ANALYZE) done (analyze_after)."
                );
                tracing::debug!(tables = %tables.join(", "), "Analyzed.");
            }
        }
    }
    Ok(())
}

/// The chunks of `chunks` that did not fail.
fn not_failed(chunks: &[Chunk], failed: &HashSet<Chunk>) -> Vec<Chunk> {
    chunks
        .iter()
        .filter(|c| !failed.contains(*c))
        .cloned()
        .collect()
}
