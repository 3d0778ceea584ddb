//! One chunk's COPY into the target: rows encoded in binary and sent in
//! pieces of about a megabyte, then the ledger row and the commit in the
//! chunk's transaction.

use super::*;
use etl_model::verify::{ArrowChecksum, CopyChecksum, Recorded};

pub(super) struct PostgresChunkWriter {
    pub(super) client: etl_pg::Conn,
    pub(super) pool: Arc<Pool>,
    pub(super) sink: Pin<Box<CopyInSink<Bytes>>>,
    pub(super) buf: BytesMut,
    pub(super) target: Arc<Target>,
    pub(super) chunk: Chunk,
    pub(super) ledger: Arc<dyn InTransaction>,
    pub(super) bytes: u64,
    /// Taking the source's COPY data as is ([`ChunkWriter::start_copy`]).
    pub(super) raw: bool,
    /// The checksum of what the chunk writes, recorded in its ledger row.
    pub(super) sum: Sum,
}

/// A chunk's checksum as its writer computes it ([`Recorded`]).
pub(super) enum Sum {
    /// Record batches as the table stores them.
    Rows(ArrowChecksum),
    /// The source's COPY data, row by row.
    Copy(CopyChecksum),
    /// COPY data in text form: nothing recorded.
    None,
}

/// The largest COPY data message sent to the target.
const MESSAGE_BYTES: usize = 64 * 1024;

impl PostgresChunkWriter {
    fn context(&self, what: &str) -> String {
        format!(
            "{what} for chunk {} into {}",
            self.chunk, self.target.qualified
        )
    }

    async fn send(&mut self) -> Result<(), EtlError> {
        let data = self.buf.split().freeze();
        self.send_bytes(data).await
    }

    async fn send_bytes(&mut self, data: Bytes) -> Result<(), EtlError> {
        let first = self.bytes == 0;
        self.bytes += data.len() as u64;
        // Messages of at most MESSAGE_BYTES (slices, no copy): the server
        // reads a message whole into one buffer, and a megabyte of it
        // leaves its caches.
        let mut data = data;
        while !data.is_empty() {
            let piece = data.split_to(data.len().min(MESSAGE_BYTES));
            if let Err(e) = self.sink.feed(piece).await {
                return Err(EtlError::pg(self.context("sending rows"))(e));
            }
        }
        if let Err(e) = self.sink.flush().await {
            return Err(EtlError::pg(self.context("sending rows"))(e));
        }
        if first {
            etl_base::hooks::after_first_send();
        }
        Ok(())
    }
}

#[async_trait]
impl ChunkWriter for PostgresChunkWriter {
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), EtlError> {
        let Some(encoder) = self.target.encoder.as_ref().filter(|_| !self.raw) else {
            return Err(EtlError::Bug(
                "record batches sent to a target that takes COPY data as is".into(),
            ));
        };
        // Written and hashed as the table stores it, the columns cast once.
        let stored = encoder.write_batch_stored(batch, &mut self.buf)?;
        if let Sum::Rows(sum) = &mut self.sum {
            sum.add(&stored)?;
        }
        if self.buf.len() >= SEND_BYTES {
            self.send().await?;
        }
        Ok(())
    }

    fn can_copy(&self) -> bool {
        self.target.copy_ok
    }

    fn start_copy(&mut self) {
        // The source's data brings its own header and trailer.
        self.buf.clear();
        self.raw = true;
        self.sum = Sum::Copy(CopyChecksum::new());
    }

    async fn write_copy(&mut self, data: Bytes) -> Result<(), EtlError> {
        if !self.raw && self.target.encoder.is_some() {
            return Err(EtlError::Bug(
                "COPY data sent to a target that encodes record batches".into(),
            ));
        }
        if let Sum::Copy(sum) = &mut self.sum {
            // Text COPY data (a migration's table of types the binary form
            // cannot carry across servers) is not hashed.
            let head = &data[..data.len().min(etl_pg::pg_binary::SIGNATURE.len())];
            if self.bytes == 0 && !etl_pg::pg_binary::SIGNATURE.starts_with(head) {
                self.sum = Sum::None;
            } else {
                sum.feed(&data)?;
            }
        }
        self.send_bytes(data).await
    }

    async fn commit(mut self: Box<Self>) -> Result<ChunkStats, EtlError> {
        if self.target.encoder.is_some() && !self.raw {
            CopyEncoder::write_footer(&mut self.buf);
        }
        if !self.buf.is_empty() {
            self.send().await?;
        }
        let context = self.context("finishing COPY");
        let mut rows = self
            .sink
            .as_mut()
            .finish()
            .await
            .map_err(EtlError::pg(context))?;
        if let Some(insert) = &self.target.merge_sql {
            let context = self.context("merging staged rows on the primary key");
            rows = self
                .client
                .execute(insert, &[])
                .await
                .map_err(EtlError::pg(context))?;
        }
        let recorded = match std::mem::replace(&mut self.sum, Sum::None) {
            Sum::Rows(sum) => Some(Recorded::Rows(sum.finish())),
            Sum::Copy(sum) => Some(Recorded::Copy(sum.finish()?)),
            Sum::None => None,
        };
        self.ledger
            .commit_done(
                &self.client,
                &self.target.qualified,
                &self.chunk,
                rows,
                recorded.map(|r| r.text()).as_deref(),
            )
            .await?;
        let PostgresChunkWriter {
            client,
            pool,
            bytes,
            ..
        } = *self;
        pool.put(client);
        Ok(ChunkStats { rows, bytes })
    }
}
