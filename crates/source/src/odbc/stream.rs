//! One chunk's rows as a stream: the reader (a thread or a child process)
//! sends batches on a channel; each batch is checked against the chunk's
//! bounds; at the end the reader's counts join the source's; a value
//! longer than its fetch buffer records the size the next read needs.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimeUnit};
use futures_util::Stream;

use super::process::ReadStats;
use super::source::micros_at;
use etl_base::plan::{Chunk, Unit};
use etl_pg::error::EtlError;

/// One chunk's rows from its reader (thread or process). At the end the
/// reader's counts join the source's; a reader's error ends the stream.
pub(super) struct ReaderStream {
    /// The checked column's index and the chunk: every row must lie in it.
    pub(super) bounds: Option<(usize, Chunk)>,
    /// Who the rows belong to, for errors.
    pub(super) label: String,
    pub(super) rx: tokio::sync::mpsc::Receiver<Result<RecordBatch, EtlError>>,
    pub(super) handle: Option<std::thread::JoinHandle<Result<ReadStats, EtlError>>>,
    pub(super) failed: bool,
    pub(super) stats: Arc<Mutex<ReadStats>>,
    pub(super) buffers: Arc<Mutex<BTreeMap<String, usize>>>,
    pub(super) bytes: Arc<AtomicU64>,
}

impl ReaderStream {
    fn fail(&mut self, e: EtlError) -> Poll<Option<Result<RecordBatch, EtlError>>> {
        self.failed = true;
        if let EtlError::ReadAgain { column, bytes } = &e {
            // The chunk is read again (the runner does it at once) with
            // buffers that hold the value; later chunks keep them.
            let mut buffers = self
                .buffers
                .lock()
                .expect("no panic while holding the lock");
            let size = buffers.entry(column.clone()).or_default();
            *size = (*size).max(*bytes);
        }
        Poll::Ready(Some(Err(e.in_context(&self.label))))
    }
}

impl Stream for ReaderStream {
    type Item = Result<RecordBatch, EtlError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(batch))) => {
                this.bytes
                    .fetch_add(batch.get_array_memory_size() as u64, Ordering::Relaxed);
                if let Some((column, chunk)) = &this.bounds {
                    if let Err(e) = check_bounds(&batch, *column, chunk) {
                        return this.fail(e);
                    }
                }
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(e),
            // Every sender is gone: the reader has ended (or is ending).
            Poll::Ready(None) => {
                let Some(handle) = this.handle.take() else {
                    return Poll::Ready(None);
                };
                let result = handle.join().unwrap_or_else(|_| {
                    Err(EtlError::Bug("an ODBC reader thread panicked".into()))
                });
                match result {
                    Ok(stats) if !this.failed => {
                        this.stats
                            .lock()
                            .expect("no panic while holding the lock")
                            .add(stats);
                        Poll::Ready(None)
                    }
                    Err(e) if !this.failed => this.fail(e),
                    _ => Poll::Ready(None),
                }
            }
        }
    }
}

/// Every row the driver returned for a chunk lies in its bounds: a driver
/// that compares values other than etl does (times stored as text in
/// another format, another time zone) would otherwise put rows in the
/// wrong chunk, or in none, silently.
fn check_bounds(batch: &RecordBatch, column: usize, chunk: &Chunk) -> Result<(), EtlError> {
    let values = batch.column(column);
    let outside = |found: Option<i64>| {
        EtlError::Data(format!(
            "chunk {chunk}: the driver returned a row whose {} is {}, outside the chunk; it compares values differently from etl (times stored as text in another format?). Cast the column in `query` so the driver compares real values",
            if chunk.unit == Unit::Time { "time" } else { "key" },
            found.map_or("NULL".to_string(), |v| chunk.bound(v))
        ))
    };
    let inside = |v: i64| chunk.holds(v);
    match chunk.unit {
        Unit::Key => {
            let keys = arrow::compute::cast(values, &DataType::Int64)
                .map_err(|e| EtlError::Bug(format!("reading the key column as integers: {e}")))?;
            let keys = keys.as_primitive::<arrow::datatypes::Int64Type>();
            for i in 0..keys.len() {
                let v = (!keys.is_null(i)).then(|| keys.value(i));
                if !v.is_some_and(inside) {
                    return Err(outside(v));
                }
            }
        }
        // Parts of a text key are the driver's to order.
        Unit::Part => {}
        // Timestamps compared in place; dates and text through micros_at.
        Unit::Time => match values.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                let times = values.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
                for i in 0..times.len() {
                    let v = (!times.is_null(i)).then(|| times.value(i));
                    if !v.is_some_and(inside) {
                        return Err(outside(v));
                    }
                }
            }
            _ => {
                for i in 0..batch.num_rows() {
                    let v = micros_at(values, i)?;
                    if !v.is_some_and(inside) {
                        return Err(outside(v));
                    }
                }
            }
        },
    }
    Ok(())
}
