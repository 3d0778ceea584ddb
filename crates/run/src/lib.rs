//! Running chunks: a rayon pool of `workers` threads takes chunks in plan
//! order, and each worker drives its chunk end to end (source stream ->
//! every sink -> commit) on a current-thread tokio runtime of its own, so a
//! connection's task and the decoder reading it share one thread: no
//! cross-thread wake-up per COPY message. A chunk that fails is
//! rolled back (its writers are dropped uncommitted), recorded with its
//! error, and the run goes on.
//!
//! - [`Runner`] builds a pipeline's source, transforms and sinks, plans,
//!   claims, runs and verifies chunks; [`run_jobs`] runs several at once.
//! - [`failed_csv`] the failed-chunk file `etl rerun` reads;
//!   [`summary`] progress bars and the run's summary lines;
//!   [`checks`] the `[[checks]]` rules run on the targets after a load.
//! - `verify` reads the source for the sinks' comparisons (no sink sees a
//!   source).
//!
//! Must not know: the command line, a whole-database migration's phases
//! (they call this runner), the pipeline file's text.

pub mod checks;
mod chunk;
pub mod estimate;
pub mod failed_csv;
pub use etl_base::human;
mod jobs;
mod pipeline;
pub mod summary;
mod verify;

pub use jobs::run_jobs;
pub use pipeline::ValidatedPipeline;

use chunk::{add_counts, run_chunk};

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use futures_util::StreamExt;

use etl_base::plan::{Chunk, Plan};
use etl_ledger::{FileLedger, PgLedger};
use etl_model::ledger::{CutoffChange, Ledger};
use etl_pg::block_on;
use etl_pg::error::EtlError;
use etl_pg::retry::{retry_step, with_retries};
use etl_sink::spec::ValidatedSink;
use etl_sink::{self as sink, ChunkStats, Sink, SinkContext};
use etl_source::{self as source, Source};
use etl_transform::{ChunkNotes, Notes};

/// A pipeline with its connections made and its schema known.
pub struct Runner {
    pub pipeline: ValidatedPipeline,
    source: Arc<dyn Source>,
    transforms: Arc<Vec<Arc<dyn etl_transform::Transform>>>,
    sinks: Vec<Arc<dyn Sink>>,
    /// Each sink's ledger, in the order of `sinks`.
    ledgers: Vec<Arc<dyn Ledger>>,
}

/// A chunk that failed, with the error that failed it.
#[derive(Debug, Clone)]
pub struct FailedChunk {
    pub chunk: Chunk,
    pub error: String,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Chunks skipped because every sink had committed them already.
    pub chunks_skipped: usize,
    /// Chunks another process was running, or finished during this run.
    pub chunks_elsewhere: usize,
    pub chunks_total: usize,
    pub chunks_done: usize,
    pub failed: Vec<FailedChunk>,
    pub rows: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub elapsed: Duration,
    pub peak_memory_bytes: Option<u64>,
    /// What a pivot stage did in the committed chunks.
    pub pivot: Option<etl_transform::pivot::PivotCounts>,
    /// What the source counted (text replaced or cut, invalid dates).
    pub source: source::SourceCounts,
}

/// Knobs of one run that come from the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides `chunks.workers`.
    pub workers: Option<usize>,
    /// Pause each worker this long after each chunk.
    pub delay: Duration,
    /// Replace mode truncates its targets first: `etl run` only.
    pub truncate: bool,
    /// Run chunks even when the ledger says they are done (`etl rerun`, `--restart`).
    pub redo: bool,
    /// Chunks some sinks have and others lack: run again for all of them.
    pub redo_chunks: HashSet<Chunk>,
    /// Rows the plan expects, for the progress display.
    pub expected_rows: Option<u64>,
    /// The pace of earlier runs of these chunks ([`estimate::Recorded`])
    /// and the workers that will share them: the progress display's time
    /// left until the run has a pace of its own.
    pub prior: Option<(estimate::Recorded, usize)>,
    /// Follow mode's small loads leave ANALYZE (`analyze_after`) to autovacuum.
    pub skip_analyze: bool,
}

impl Runner {
    /// Connects the source and learns its schema; sinks connect lazily.
    pub fn build(pipeline: ValidatedPipeline) -> Result<Self, EtlError> {
        let chunking = &pipeline.chunks;
        let source = block_on(retry_step(
            chunking.retries,
            chunking.retry_backoff,
            "connecting the source and reading its schema failed",
            || source::build(&pipeline.source, chunking),
        ))?;
        Runner::with_source(pipeline, source, Vec::new())
    }

    /// A step around the chunks (planning, the ledger, DDL, ANALYZE,
    /// verify...) through the one retry helper, with the pipeline's
    /// `retries` and `retry_backoff_secs`; each attempt takes its
    /// connections from the pool afresh.
    pub async fn step<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, EtlError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, EtlError>>,
    {
        let chunking = &self.pipeline.chunks;
        retry_step(chunking.retries, chunking.retry_backoff, what, attempt).await
    }

    /// A runner of `source`, built already, through the pipeline's stages
    /// into its sinks; `identity` names the columns created tables number
    /// themselves (a migration's tables).
    pub fn with_source(
        pipeline: ValidatedPipeline,
        source: Arc<dyn Source>,
        identity: Vec<String>,
    ) -> Result<Self, EtlError> {
        let transforms = Arc::new(block_on(etl_transform::build(
            &pipeline.transforms,
            source.schema(),
        ))?);
        let schema = transforms
            .last()
            .map_or_else(|| source.schema(), |t| t.output_schema());
        let wide = wide_spec(&schema, &transforms)?;
        let context = Arc::new(SinkContext {
            pipeline: pipeline.name.clone(),
            schema,
            source_primary_key: source.primary_key().to_vec(),
            identity,
            chunking: pipeline.chunks.clone(),
            wide,
            copy: source
                .copy_out()
                .filter(|_| transforms.is_empty())
                .map(|c| c.through()),
        });
        let (sinks, ledgers) = pipeline
            .sinks
            .iter()
            .map(|s| build_sink(s, &context))
            .unzip();
        Ok(Runner {
            pipeline,
            source,
            transforms,
            sinks,
            ledgers,
        })
    }

    /// Each sink with its ledger.
    fn outputs(&self) -> impl Iterator<Item = (&Arc<dyn Sink>, &Arc<dyn Ledger>)> {
        self.sinks.iter().zip(&self.ledgers)
    }

    pub fn source(&self) -> &dyn Source {
        self.source.as_ref()
    }

    /// The index-driven plan for `etl run`, when the source has one.
    pub fn plan_by_index(&self, chunking: &etl_model::Chunking) -> Result<Option<Plan>, EtlError> {
        let plan = block_on(self.step("planning by the source's index failed", || {
            self.source.plan_by_index(chunking)
        }))?;
        Ok(plan.map(|p| only_keys(p, chunking)))
    }

    /// Plans with other chunk settings (follow mode's windows).
    pub fn plan_with(&self, chunking: &etl_model::Chunking) -> Result<Plan, EtlError> {
        block_on(self.plan_async(chunking))
    }

    /// [`Runner::plan_with`] on the caller's runtime (a migration plans
    /// its tables a few at a time).
    pub async fn plan_async(&self, chunking: &etl_model::Chunking) -> Result<Plan, EtlError> {
        let plan = self
            .step("planning the chunks failed", || self.source.plan(chunking))
            .await?;
        Ok(only_keys(plan, chunking))
    }

    /// The pipeline's cutoff: the earliest of the sinks'.
    pub fn cutoff(&self) -> Result<Option<i64>, EtlError> {
        block_on(async {
            let mut cutoff: Option<i64> = None;
            for l in &self.ledgers {
                let found = self
                    .step("reading the cutoff failed", || l.cutoff())
                    .await?;
                if let Some(c) = found {
                    cutoff = Some(cutoff.map_or(c, |m| m.min(c)));
                }
            }
            Ok(cutoff)
        })
    }

    pub fn set_cutoff(&self, change: CutoffChange) -> Result<(), EtlError> {
        block_on(async {
            for l in &self.ledgers {
                self.step("setting the cutoff failed", || l.set_cutoff(change))
                    .await?;
            }
            Ok(())
        })
    }

    pub fn plan(&self) -> Result<Plan, EtlError> {
        self.plan_with(&self.pipeline.chunks)
    }

    /// For each sink, the chunks among `chunks` it has committed for this
    /// pipeline. A chunk is done when every sink has it.
    pub fn committed_by_sink(&self, chunks: &[Chunk]) -> Result<Vec<HashSet<Chunk>>, EtlError> {
        block_on(async {
            let mut all = Vec::with_capacity(self.sinks.len());
            for (s, l) in self.outputs() {
                let entries = chunks
                    .iter()
                    .map(|c| Ok((s.target(c)?, c.clone())))
                    .collect::<Result<Vec<_>, EtlError>>()?;
                let done = self
                    .step("reading the ledger failed", || l.committed(&entries))
                    .await?;
                all.push(done);
            }
            Ok(all)
        })
    }

    /// Whether any sink truncates its targets when a run starts; such a run
    /// cannot resume, it starts over.
    pub fn truncates(&self) -> bool {
        self.pipeline.sinks.iter().any(|s| match s {
            etl_sink::spec::ValidatedSink::Postgres(p) => {
                p.mode == etl_sink::spec::SinkMode::Replace
            }
            etl_sink::spec::ValidatedSink::Parquet(_) | etl_sink::spec::ValidatedSink::Csv(_) => {
                false
            }
        })
    }

    /// Each sink's account of what it would do for these chunks.
    pub fn describe_sinks(&self, chunks: &[Chunk]) -> Result<Vec<String>, EtlError> {
        block_on(async {
            let mut lines = Vec::new();
            for s in &self.sinks {
                let said = self
                    .step("describing the sinks failed", || async {
                        let rows = verify::source_rows(self.source.as_ref(), s.as_ref()).await?;
                        s.describe(chunks, rows.as_ref()).await
                    })
                    .await?;
                lines.extend(said);
            }
            Ok(lines)
        })
    }

    /// What the last stage writes: whether it is a pivot (wide tables,
    /// columns per channel), and else the column types created tables get.
    pub fn output_types(&self) -> (bool, Vec<String>) {
        let schema = self
            .transforms
            .last()
            .map_or_else(|| self.source.schema(), |t| t.output_schema());
        if etl_model::wide::WideLayout::of(&schema).is_ok_and(|w| w.is_some()) {
            return (true, Vec::new());
        }
        let mut types: Vec<String> = schema
            .fields()
            .iter()
            .filter_map(|f| etl_pg::ddl::ddl_type(f).ok())
            .collect();
        types.sort();
        types.dedup();
        (false, types)
    }

    /// `etl run --ddl-only`: every sink creates and checks the targets of
    /// `chunks` and what their data would add; nothing is loaded.
    pub fn create_only(&self, chunks: &[Chunk]) -> Result<Vec<String>, EtlError> {
        block_on(async {
            let mut lines = Vec::new();
            for s in &self.sinks {
                let created = self
                    .step("creating the targets failed", || async {
                        s.prepare(chunks, false).await?;
                        let Some(tables) = s.tables() else {
                            return Ok(vec![format!(
                                "{}: one file per chunk, written with its data; nothing to create ahead",
                                s.name()
                            )]);
                        };
                        let rows = verify::source_rows(self.source.as_ref(), s.as_ref()).await?;
                        tables.create_ahead(chunks, rows.as_ref()).await
                    })
                    .await?;
                lines.extend(created);
            }
            Ok(lines)
        })
    }

    /// Runs `chunks`; never stops on a chunk's failure.
    pub fn run(&self, chunks: Vec<Chunk>, options: &RunOptions) -> Result<RunReport, EtlError> {
        run_jobs(&[(self, chunks)], options)
    }
}

/// A sink of the pipeline with its ledger: a PostgreSQL target keeps it in
/// its database and its writers join it in each chunk's transaction; a
/// file sink's is its files, and its cutoff beside them.
fn build_sink(
    spec: &ValidatedSink,
    context: &Arc<SinkContext>,
) -> (Arc<dyn Sink>, Arc<dyn Ledger>) {
    let pipeline = &context.pipeline;
    match spec {
        ValidatedSink::Postgres(spec) => {
            let ledger = PgLedger::new(spec.endpoint.clone(), pipeline, spec.ledger_schema.clone());
            let sink =
                sink::postgres::PostgresSink::new(spec.clone(), context.clone(), ledger.clone());
            (Arc::new(sink), ledger)
        }
        ValidatedSink::Parquet(s) => (
            Arc::new(sink::file::FileSink::parquet(s.clone(), context.clone())),
            ledger(spec, pipeline),
        ),
        ValidatedSink::Csv(s) => (
            Arc::new(sink::file::FileSink::csv(s.clone(), context.clone())),
            ledger(spec, pipeline),
        ),
    }
}

/// The ledger of one sink of `pipeline`, as [`build_sink`] gives it, for
/// what needs no source (`etl forget`).
pub fn ledger(spec: &ValidatedSink, pipeline: &str) -> Arc<dyn Ledger> {
    match spec {
        ValidatedSink::Postgres(s) => {
            PgLedger::new(s.endpoint.clone(), pipeline, s.ledger_schema.clone())
        }
        ValidatedSink::Parquet(s) => Arc::new(FileLedger::new(&s.path, pipeline)),
        ValidatedSink::Csv(s) => Arc::new(FileLedger::new(&s.path, pipeline)),
    }
}

/// A rayon pool of `threads` threads named `{name}-{i}`.
fn worker_pool(threads: usize, name: &'static str) -> Result<rayon::ThreadPool, EtlError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("{name}-{i}"))
        .build()
        .map_err(|e| EtlError::Io {
            context: "starting the worker pool".into(),
            source: std::io::Error::other(e),
        })
}

/// The sinks' view of wide rows: the layout the last stage's schema
/// carries, with the rules of the pipeline's pivot when it has one.
fn wide_spec(
    schema: &arrow::datatypes::Schema,
    transforms: &[Arc<dyn etl_transform::Transform>],
) -> Result<Option<Arc<sink::wide::WideSpec>>, EtlError> {
    let Some(layout) = etl_model::wide::WideLayout::of(schema)? else {
        return Ok(None);
    };
    let columns = layout.columns(schema, "the wide rows' schema")?;
    let index = columns
        .index
        .iter()
        .map(|&i| Arc::new(schema.field(i).clone().with_nullable(false)))
        .collect();
    let pivot =
        transforms
            .iter()
            .find_map(|t| t.pivot_rules())
            .map(|p| etl_model::wide::PivotRules {
                only_stage: transforms.len() == 1,
                ..p
            });
    Ok(Some(Arc::new(sink::wide::WideSpec {
        index,
        layout,
        pivot,
    })))
}

/// Set by Ctrl-C, SIGTERM or SIGHUP: workers finish the chunks in flight
/// and take no more.
pub static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Ctrl-C (SIGINT), SIGTERM (a service manager stopping `etl run
/// --follow`, `kill`) or SIGHUP once: stop after the chunks in flight
/// (they commit or roll back whole). Twice: exit at once; open
/// transactions roll back on the server.
pub fn install_stop_signals() {
    let result = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("etl: stopped at once; chunks in flight are rolled back");
            std::process::exit(130);
        }
        eprintln!(
            "etl: stopping after the chunks in flight (Ctrl-C or SIGTERM again to stop at once)"
        );
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "The Ctrl-C and SIGTERM handler is not installed.");
    }
}

impl RunReport {
    /// Adds a later run's report (a migration's next level of tables).
    pub fn absorb(&mut self, other: RunReport) {
        self.chunks_skipped += other.chunks_skipped;
        self.chunks_elsewhere += other.chunks_elsewhere;
        self.chunks_total += other.chunks_total;
        self.chunks_done += other.chunks_done;
        self.failed.extend(other.failed);
        self.rows += other.rows;
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.elapsed += other.elapsed;
        self.peak_memory_bytes = self.peak_memory_bytes.max(other.peak_memory_bytes);
        self.source.lines.extend(other.source.lines);
        self.source.values_changed += other.source.values_changed;
        self.source.rows_rejected += other.source.rows_rejected;
    }

    /// Chunks of the run that no worker took (Ctrl-C).
    pub fn chunks_not_started(&self) -> usize {
        self.chunks_total
            .saturating_sub(self.chunks_done + self.failed.len() + self.chunks_elsewhere)
    }
}

impl Runner {
    /// Notes a failed attempt in every sink's ledger; a sink that cannot be
    /// reached just now is logged, the chunk's error is what counts.
    fn record_failure(&self, chunk: &Chunk, error: &EtlError) {
        let message = error.to_string();
        for (s, l) in self.outputs() {
            let recorded = block_on(
                self.step("recording a failed chunk in the ledger failed", || async {
                    l.record_failure(&s.target(chunk)?, chunk, &message).await
                }),
            );
            if let Err(e) = recorded {
                tracing::warn!(chunk = %chunk, error = %e, "Could not record the failure in the ledger.");
            }
        }
    }

    /// Runs a chunk, trying again after transient failures; a permanent
    /// error fails it at once. A panic is a bug in etl; it fails this
    /// chunk, not the run.
    fn run_with_retries(
        &self,
        chunk: &Chunk,
        redo: bool,
        written: &(dyn Fn(u64) + Sync),
    ) -> Result<Option<(ChunkStats, ChunkNotes)>, EtlError> {
        let chunking = &self.pipeline.chunks;
        with_retries(chunking.retries, chunking.retry_backoff, || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                block_on(run_chunk(
                    &self.source,
                    &self.transforms,
                    &self.sinks,
                    chunk,
                    redo,
                    written,
                ))
            }))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(EtlError::Bug(format!("panic: {what}")))
            });
            if let Err(e) = &result {
                self.record_failure(chunk, e);
            }
            result
        })
    }
}

/// The plan's chunks of the keys `--key` names, when it names any.
fn only_keys(mut plan: Plan, chunking: &etl_model::Chunking) -> Plan {
    if let Some(keys) = &chunking.only_keys {
        plan.chunks
            .retain(|c| c.chunk.key.as_ref().is_some_and(|k| keys.contains(k)));
    }
    plan
}
