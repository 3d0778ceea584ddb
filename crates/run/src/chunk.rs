//! One chunk end to end on a worker: a reader thread streams its batches
//! (at most a few in flight, so memory is bounded by batches, not by the
//! chunk), the transforms run, every sink writes them, then all commit;
//! any error drops the writers uncommitted.

use super::*;
use etl_pg::pg_binary::rows::CsvCopy;

/// What a worker's reader thread sends for a chunk.
enum Msg {
    Batch(RecordBatch),
    /// COPY data forwarded as is, and the rows it completes.
    Copy(bytes::Bytes, u64),
    Failed(EtlError),
    Done,
}

/// One chunk for the reader thread: stream it into `tx`.
struct ReadJob {
    source: Arc<dyn Source>,
    transforms: Arc<Vec<Arc<dyn etl_transform::Transform>>>,
    chunk: Chunk,
    notes: Notes,
    /// Forward the source's COPY data, no batches: in its own format, or
    /// as the CSV the writers asked for.
    copy: Option<Option<CsvCopy>>,
    tx: tokio::sync::mpsc::Sender<Msg>,
}

/// Batches in flight between a worker's reader and writer: with the batch
/// being decoded and the one being encoded, a worker holds at most four.
const BATCHES_IN_FLIGHT: usize = 2;

thread_local! {
    /// The reader thread that serves this worker thread, started on its first chunk.
    static READER: std::sync::mpsc::Sender<ReadJob> = start_reader();
}

/// A long-lived thread that reads chunks from the source for one worker,
/// so that reading (source backend, decoding) and writing (encoding, sink
/// backend) overlap. It keeps its own runtime and source connections; it
/// ends when its worker thread does (the job sender is dropped).
fn start_reader() -> std::sync::mpsc::Sender<ReadJob> {
    let (jobs_tx, jobs) = std::sync::mpsc::channel::<ReadJob>();
    let name = format!("{}-reader", std::thread::current().name().unwrap_or("etl"));
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            while let Ok(job) = jobs.recv() {
                // A panic drops `tx` without `Done`; the writer reports it as a bug.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    block_on(read_chunk(job))
                }));
            }
        })
        .expect("the OS can start a reader thread");
    jobs_tx
}

async fn read_chunk(job: ReadJob) {
    let ReadJob {
        source,
        transforms,
        chunk,
        notes,
        copy,
        tx,
    } = job;
    if let Some(csv) = copy {
        return read_copy(&*source, &chunk, csv.as_ref(), tx).await;
    }
    let mut stream = match open_flow(&*source, &transforms, &chunk, notes).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Msg::Failed(e)).await;
            return;
        }
    };
    while let Some(item) = stream.next().await {
        let msg = match item {
            Ok(batch) => Msg::Batch(batch),
            Err(e) => Msg::Failed(e),
        };
        let failed = matches!(msg, Msg::Failed(_));
        // A closed channel means the writer gave up on the chunk: stop reading.
        if tx.send(msg).await.is_err() || failed {
            return;
        }
    }
    let _ = tx.send(Msg::Done).await;
}

/// A chunk's rows as the sinks get them: the source's batches through
/// every stage of the pipeline.
pub(super) async fn open_flow(
    source: &dyn Source,
    transforms: &[Arc<dyn etl_transform::Transform>],
    chunk: &Chunk,
    notes: Notes,
) -> Result<etl_model::BatchStream, EtlError> {
    let mut flow = etl_transform::Flow::Stream(source.open(chunk).await?);
    for t in transforms {
        flow = t.apply(flow, notes.clone()).await?;
    }
    Ok(flow.into_stream())
}

/// COPY data gathered into pieces of about this size before they cross
/// to the writer (the server sends a message per row).
const COPY_PIECE: usize = 1 << 20;

/// A chunk as COPY data: the server's messages gathered into pieces,
/// their rows counted, the stream checked whole before `Done`.
async fn read_copy(
    source: &dyn Source,
    chunk: &Chunk,
    csv: Option<&CsvCopy>,
    tx: tokio::sync::mpsc::Sender<Msg>,
) {
    let Some(copy_out) = source.copy_out() else {
        return;
    };
    let format = csv.map_or(copy_out.through().format, CsvCopy::format);
    let mut walker = etl_pg::pg_binary::rows::RowWalker::new(format);
    let read = async {
        let mut stream = copy_out.open_copy(chunk, csv).await?;
        let mut piece = bytes::BytesMut::with_capacity(COPY_PIECE + 64 * 1024);
        let mut rows = 0;
        while let Some(data) = stream.next().await {
            let data = data?;
            rows += walker.feed(&data)?;
            piece.extend_from_slice(&data);
            if piece.len() >= COPY_PIECE {
                let full = piece.split().freeze();
                if tx
                    .send(Msg::Copy(full, std::mem::take(&mut rows)))
                    .await
                    .is_err()
                {
                    return Ok(false);
                }
            }
        }
        walker.finish()?;
        if !piece.is_empty() && tx.send(Msg::Copy(piece.freeze(), rows)).await.is_err() {
            return Ok(false);
        }
        Ok::<_, EtlError>(true)
    };
    match read.await {
        Ok(true) => {
            let _ = tx.send(Msg::Done).await;
        }
        // The writer gave up on the chunk.
        Ok(false) => {}
        Err(e) => {
            let _ = tx.send(Msg::Failed(e)).await;
        }
    }
}

/// One chunk end to end: the worker's reader streams the source while this
/// thread writes every batch to every sink; the chunk counts as done only
/// when every sink has committed it. Returning early drops the channel (the
/// reader stops) and the uncommitted writers (their transactions roll back).
pub(super) async fn run_chunk(
    source: &Arc<dyn Source>,
    transforms: &Arc<Vec<Arc<dyn etl_transform::Transform>>>,
    sinks: &[Arc<dyn Sink>],
    chunk: &Chunk,
    redo: bool,
    written: &(dyn Fn(u64) + Sync),
) -> Result<Option<(ChunkStats, ChunkNotes)>, EtlError> {
    // Claim the chunk in every sink before reading anything: another
    // process may hold it, or have finished it.
    let mut writers = Vec::with_capacity(sinks.len());
    for s in sinks {
        match s.begin(chunk, redo).await? {
            Some(w) => writers.push(w),
            None => return Ok(None),
        }
    }
    // The source's COPY data goes through as it comes when every writer
    // takes it (same columns, same types) and nothing transforms it.
    let csv = writers.first().and_then(|w| w.copy_csv());
    let copy = source.copy_out().is_some()
        && transforms.is_empty()
        && writers.iter().all(|w| w.can_copy() && w.copy_csv() == csv);
    if copy {
        tracing::debug!(chunk = %chunk, "The source's COPY data goes through as it comes.");
        for w in writers.iter_mut() {
            w.start_copy();
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(BATCHES_IN_FLIGHT);
    let notes = Notes::default();
    if transforms.iter().any(|t| t.pivot_rules().is_some()) {
        // Channels the targets have as text are pivoted as text.
        let mut text = std::collections::HashSet::new();
        for w in sinks.iter().filter_map(|s| s.wide()) {
            text.extend(w.text_channels(chunk).await?);
        }
        notes
            .lock()
            .expect("no panic while holding the lock")
            .text_channels = text;
    }
    let job = ReadJob {
        source: source.clone(),
        transforms: transforms.clone(),
        chunk: chunk.clone(),
        notes: notes.clone(),
        copy: copy.then_some(csv),
        tx,
    };
    if !READER.with(|reader| reader.send(job).is_ok()) {
        return Err(EtlError::Bug("the worker's reader thread is gone".into()));
    }
    let mut rows = 0u64;
    loop {
        match rx.recv().await {
            Some(Msg::Batch(batch)) => {
                rows += batch.num_rows() as u64;
                for w in writers.iter_mut() {
                    w.write(&batch).await?;
                }
                written(batch.num_rows() as u64);
            }
            Some(Msg::Copy(data, n)) => {
                rows += n;
                for w in writers.iter_mut() {
                    w.write_copy(data.clone()).await?;
                }
                written(n);
            }
            Some(Msg::Failed(e)) => return Err(e),
            Some(Msg::Done) => break,
            None => {
                return Err(EtlError::Bug(
                    "the reader stopped before the end of the chunk".into(),
                ))
            }
        }
    }
    let mut bytes = 0;
    for w in writers {
        bytes += w.commit().await?.bytes;
    }
    etl_base::hooks::after_commit(chunk.key.as_deref());
    let notes = notes
        .lock()
        .expect("no panic while holding the lock")
        .clone();
    Ok(Some((ChunkStats { rows, bytes }, notes)))
}

/// Adds one chunk's pivot counts to the run's.
pub(super) fn add_counts(
    total: &mut etl_transform::pivot::PivotCounts,
    c: &etl_transform::pivot::PivotCounts,
) {
    total.input_rows += c.input_rows;
    total.wide_rows += c.wide_rows;
    total.null_index += c.null_index;
    total.null_name += c.null_name;
    total.unknown_format += c.unknown_format;
    total.null_value += c.null_value;
    total.duplicates += c.duplicates;
    // One example per reason is enough for the summary.
    for (reason, e) in &c.examples {
        if !total.examples.iter().any(|(r, _)| r == reason) {
            total.examples.push((reason, e.clone()));
        }
    }
}
