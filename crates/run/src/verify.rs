//! `etl verify` and `etl plan` read the source for the sinks: a sink says
//! what it compares a chunk by ([`Basis`]) or what query it plans with
//! ([`etl_sink::WideTables::source_query`]); the runner reads that of the source and hands
//! the sink the answer, so no sink sees a source. A file sink's chunk is
//! compared here: the source's batches against the file read back.
//! [`super::Runner::verify`] runs the comparisons on the worker pool
//! (`--quick`: against the checksums recorded at load);
//! [`super::Runner::verify_whole`] compares a migration's tables whole.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::worker_pool;
use etl_pg::block_on;

use etl_base::plan::Chunk;
use etl_model::verify::{ArrowChecksum, Basis, Comparison, Rows, SourceSide, WrittenFile};
use etl_pg::error::EtlError;
use etl_sink::Sink;
use etl_source::Source;

/// Sources each verify worker reads at a time.
const READS_PER_WORKER: usize = 2;

/// One chunk of one sink compared with the source: the source's COPY data
/// where the sink's table takes it as is; else the chunk's rows as a run
/// gives them to the sink (the source read through the pipeline's stages),
/// which the sink hashes as it stores them.
///
/// `read` is the worker's permit to read the source: let go when the
/// source's side has been read, so a chunk that then waits for its
/// table's one read does not keep the worker from the next chunk.
async fn compare(
    source: &dyn Source,
    transforms: &[Arc<dyn etl_transform::Transform>],
    sink: &dyn Sink,
    chunk: &Chunk,
    read: OwnedSemaphorePermit,
) -> Result<Comparison, EtlError> {
    let Some(verifiable) = sink.verifiable() else {
        return Err(EtlError::Config(format!(
            "{} cannot be compared with the source: etl verify checks PostgreSQL, Parquet and CSV sinks",
            sink.name()
        )));
    };
    let side = match verifiable.basis(chunk).await? {
        Basis::File(file) => return compare_file(source, transforms, chunk, &file).await,
        Basis::Copy if transforms.is_empty() && source.copy_out().is_some() => {
            let copy = source.copy_out().expect("checked just above");
            SourceSide::Copy(Box::pin(Permitted::new(
                copy.open_copy(chunk, None).await?,
                read,
            )))
        }
        Basis::Rows | Basis::Copy => SourceSide::Batches(Box::pin(Permitted::new(
            super::chunk::open_flow(source, transforms, chunk, Default::default()).await?,
            read,
        ))),
        Basis::Queries(queries) => {
            let mut answers = Vec::with_capacity(queries.len());
            for query in queries {
                let sql = source.sql().ok_or_else(|| {
                    EtlError::Config(format!(
                        "{} compares chunks by SQL over the source's rows (a pivot's wide tables); this source has no SQL: verify a pivot read from PostgreSQL",
                        sink.name()
                    ))
                })?;
                answers.push(sql.sql_rows(Some(chunk), &*query).await?);
            }
            drop(read);
            SourceSide::Rows(answers)
        }
    };
    match sink.tables() {
        Some(tables) => tables.verify(chunk, side).await,
        None => Err(EtlError::Bug(format!(
            "chunk {chunk}: {} compares by rows but has no tables to compare them in",
            sink.name()
        ))),
    }
}

/// A source's stream holding its worker's read permit until it ends.
struct Permitted<S> {
    inner: S,
    read: Option<OwnedSemaphorePermit>,
}

impl<S> Permitted<S> {
    fn new(inner: S, read: OwnedSemaphorePermit) -> Self {
        Permitted {
            inner,
            read: Some(read),
        }
    }
}

impl<S: futures_util::Stream + Unpin> futures_util::Stream for Permitted<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        let next = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if let std::task::Poll::Ready(None) = next {
            self.read = None;
        }
        next
    }
}

/// `etl verify --quick`: the chunk in the sink against the checksum its
/// writer recorded (chunks the table cannot tell apart: together, against
/// the whole table); `None` when one recorded none.
async fn compare_recorded(
    sink: &dyn Sink,
    chunks: &[Chunk],
) -> Result<Option<Comparison>, EtlError> {
    match sink.tables() {
        Some(tables) => tables.verify_recorded(chunks).await,
        None => Err(EtlError::Config(format!(
            "etl verify --quick compares a PostgreSQL target's rows with the checksums recorded in its ledger; {} keeps no ledger of checksums: run etl verify without --quick",
            sink.name()
        ))),
    }
}

/// Every chunk of `chunks` (all of one table) against the sink's whole
/// table: the chunks' rows as a run gives them, one after another, hashed
/// into one sum (a sum of row hashes adds up over chunks) beside the
/// table's rows. For chunks the table cannot tell apart (a migration's
/// parts of a text key, a file read whole).
async fn compare_whole(
    source: Arc<dyn Source>,
    transforms: Arc<Vec<Arc<dyn etl_transform::Transform>>>,
    sink: &dyn Sink,
    chunks: Vec<Chunk>,
) -> Result<Comparison, EtlError> {
    use futures_util::TryStreamExt;
    let Some(tables) = sink.tables() else {
        return Err(EtlError::Config(format!(
            "{} has no tables to compare whole",
            sink.name()
        )));
    };
    let whole = Chunk::whole(chunks.first().and_then(|c| c.key.clone()));
    let rows = futures_util::stream::iter(chunks)
        .then(move |chunk| {
            let (source, transforms) = (source.clone(), transforms.clone());
            async move {
                super::chunk::open_flow(&*source, &transforms, &chunk, Default::default()).await
            }
        })
        .try_flatten();
    tables
        .verify(&whole, SourceSide::Batches(Box::pin(rows)))
        .await
}

/// The chunk's rows as a run gives them against the file a sink wrote,
/// both as Arrow rows; no file: nothing in the target.
async fn compare_file(
    source: &dyn Source,
    transforms: &[Arc<dyn etl_transform::Transform>],
    chunk: &Chunk,
    file: &WrittenFile,
) -> Result<Comparison, EtlError> {
    let mut expected = ArrowChecksum::new();
    let mut stream = super::chunk::open_flow(source, transforms, chunk, Default::default()).await?;
    while let Some(batch) = stream.next().await {
        expected.add(&batch?)?;
    }
    let target = if file.path.is_file() {
        let mut sum = ArrowChecksum::new();
        for batch in etl_source::read_back(file)? {
            sum.add(&batch?)?;
        }
        Some(sum.finish())
    } else {
        None
    };
    Ok(Comparison {
        source: expected.finish(),
        target,
    })
}

/// The rows of the sink's [`etl_sink::WideTables::source_query`] over all the source's
/// rows; `None` when it has none or the source has no SQL.
pub(super) async fn source_rows(
    source: &dyn Source,
    sink: &dyn Sink,
) -> Result<Option<Rows>, EtlError> {
    match sink.wide().and_then(|w| w.source_query()) {
        Some(query) => match source.sql() {
            Some(sql) => Ok(Some(sql.sql_rows(None, &*query).await?)),
            None => Ok(None),
        },
        None => Ok(None),
    }
}

/// A chunk (or a table's chunks together), the sink, and their comparison
/// (`None`: `--quick` found no recorded checksum).
pub type Verified = (Chunk, String, Option<Comparison>);

impl super::Runner {
    /// Compares each chunk with each sink: `(chunk, sink name,
    /// comparison)`. `quick`: with the checksum each chunk's writer
    /// recorded, the source unread (`None`: none recorded).
    pub fn verify(&self, chunks: &[Chunk], quick: bool) -> Result<Vec<Verified>, EtlError> {
        etl_base::hooks::phase("verify");
        // On the worker pool: each thread checks chunks with its own runtime
        // and connections; results keep the chunks' order.
        let pool = worker_pool(
            self.pipeline.chunks.workers.clamp(1, chunks.len().max(1)),
            "etl-verify",
        )?;
        // Each chunk with each sink; chunks a table cannot tell apart (files
        // read whole, byte ranges) together, one comparison per table.
        let mut jobs = Vec::new();
        let mut together: Vec<(usize, String, Vec<Chunk>)> = Vec::new();
        for chunk in chunks {
            for (i, s) in self.sinks.iter().enumerate() {
                match s.tables() {
                    Some(t) if !t.selects(chunk) => {
                        let table = s.target(chunk)?;
                        match together.iter_mut().find(|(j, n, _)| *j == i && *n == table) {
                            Some((_, _, c)) => c.push(chunk.clone()),
                            None => together.push((i, table, vec![chunk.clone()])),
                        }
                    }
                    _ => jobs.push((i, vec![chunk.clone()], None)),
                }
            }
        }
        jobs.extend(together.into_iter().map(|(i, t, c)| (i, c, Some(t))));
        for t in self.sinks.iter().filter_map(|s| s.tables()) {
            t.will_verify(chunks);
        }
        // Each worker reads the source of two chunks at a time (a permit
        // each); a chunk whose source is read lets its permit go, so one
        // waiting for its table's single read (a target without an index)
        // does not hold the worker: the next chunk's source is read
        // meanwhile. A job is taken only with a permit in hand, so the
        // workers share the jobs evenly.
        let workers = pool.current_num_threads();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done: std::sync::Mutex<Vec<Option<Result<Verified, EtlError>>>> =
            std::sync::Mutex::new((0..jobs.len()).map(|_| None).collect());
        use futures_util::StreamExt;
        use rayon::prelude::*;
        pool.install(|| {
            (0..workers).into_par_iter().for_each(|_| {
                let reads = Arc::new(Semaphore::new(READS_PER_WORKER));
                let (next, jobs) = (&next, &jobs);
                let mine = futures_util::stream::unfold(reads.clone(), move |reads| async move {
                    let read = reads.clone().acquire_owned().await.ok()?;
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    (i < jobs.len()).then_some(((i, read), reads))
                });
                block_on(
                    mine.map(|(i, read)| {
                        let (job, reads) = (&jobs[i], reads.clone());
                        async move { (i, self.verify_job(job, quick, reads, read).await) }
                    })
                    .buffer_unordered(jobs.len().max(1))
                    .for_each(|(i, r)| {
                        done.lock().expect("no panic while holding the lock")[i] = Some(r);
                        async {}
                    }),
                );
            })
        });
        done.into_inner()
            .expect("no panic while holding the lock")
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(EtlError::Bug("a verify job did not run".into()))))
            .collect()
    }

    /// One comparison: a chunk with a sink, or chunks a table cannot tell
    /// apart with the whole table (`table`).
    ///
    /// `read`: the worker's permit to read, held for the whole comparison
    /// but a chunk's, which lets it go once the source's side is read; a
    /// second attempt takes another from `reads`.
    async fn verify_job(
        &self,
        (i, chunks, table): &(usize, Vec<Chunk>, Option<String>),
        quick: bool,
        reads: Arc<Semaphore>,
        read: OwnedSemaphorePermit,
    ) -> Result<Verified, EtlError> {
        let first = std::sync::Mutex::new(Some(read));
        let s = &self.sinks[*i];
        let what = match table {
            Some(table) => format!("comparing {table} whole failed"),
            None => format!("comparing chunk {} failed", chunks[0]),
        };
        let compared = self
            .step(&what, || async {
                let taken = first
                    .lock()
                    .expect("no panic while holding the lock")
                    .take();
                let read =
                    match taken {
                        Some(read) => read,
                        None => reads.clone().acquire_owned().await.map_err(|_| {
                            EtlError::Bug("the worker's read permits are gone".into())
                        })?,
                    };
                match (quick, table) {
                    (true, _) => compare_recorded(s.as_ref(), chunks).await,
                    (false, Some(_)) => compare_whole(
                        self.source.clone(),
                        self.transforms.clone(),
                        s.as_ref(),
                        chunks.clone(),
                    )
                    .await
                    .map(Some),
                    (false, None) => compare(
                        self.source.as_ref(),
                        &self.transforms,
                        s.as_ref(),
                        &chunks[0],
                        read,
                    )
                    .await
                    .map(Some),
                }
            })
            .await?;
        // A table compared whole is named as a whole chunk.
        let chunk = match table {
            Some(t) => Chunk::whole(Some(format!("{t} ({} chunks)", chunks.len()))),
            None => chunks[0].clone(),
        };
        Ok((chunk, s.name(), compared))
    }

    /// Every planned chunk together against each sink's whole table, one
    /// comparison per sink: for a table loaded whole by one pipeline (a
    /// migration's table), whatever cut its chunks.
    pub fn verify_whole(&self) -> Result<Vec<(String, etl_model::verify::Comparison)>, EtlError> {
        etl_base::hooks::phase("verify");
        let chunks: Vec<Chunk> = self.plan()?.chunks.into_iter().map(|c| c.chunk).collect();
        let mut out = Vec::with_capacity(self.sinks.len());
        for s in &self.sinks {
            let compared = block_on(self.step(
                &format!("comparing {} whole failed", s.name()),
                || {
                    compare_whole(
                        self.source.clone(),
                        self.transforms.clone(),
                        s.as_ref(),
                        chunks.clone(),
                    )
                },
            ))?;
            out.push((s.name(), compared));
        }
        Ok(out)
    }
}
