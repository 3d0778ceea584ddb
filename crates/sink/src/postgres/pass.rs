//! `etl verify` of a table that has no index on the chunks' columns (a
//! heap-only target): each chunk's own `SELECT ... WHERE <window>` would
//! scan the whole table again, so the table is read once and each row is
//! hashed into its chunk's sum, routed by its key and time. The sums are
//! those of the per-chunk reads ([`CopyChecksum`], [`ArrowChecksum`]), so a
//! chunk compares the same either way.

use std::collections::HashMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};

use super::*;
use etl_model::verify::{copy_field, copy_row_hash, ArrowChecksum, Checksum, CopyTuples, Sums};
use etl_pg::pg_binary::PG_EPOCH_MICROS;

/// The chunks `etl verify` will compare, told to the sink before the
/// first (a table read once serves them all), and the passes made.
#[derive(Default)]
pub(super) struct Passes {
    pub(super) chunks: std::sync::Mutex<Vec<Chunk>>,
    /// Per table and kind (`true`: COPY data): each chunk's sum, or `None`
    /// when the table is read chunk by chunk.
    made: tokio::sync::Mutex<HashMap<(String, bool), Pass>>,
}

/// Each chunk's sum in one table.
type Routed = HashMap<Chunk, Checksum>;

/// One table's read, made by the first chunk that needs it.
type Pass = Arc<tokio::sync::OnceCell<Option<Arc<Routed>>>>;

/// Which chunk a row is in: its key's windows, by start.
struct Router {
    windows: HashMap<Option<String>, Vec<(i64, i64, usize)>>,
    chunks: Vec<Chunk>,
}

impl Router {
    fn new(chunks: Vec<Chunk>) -> Self {
        let mut windows: HashMap<Option<String>, Vec<(i64, i64, usize)>> = HashMap::new();
        for (i, c) in chunks.iter().enumerate() {
            windows
                .entry(c.key.clone())
                .or_default()
                .push((c.start, c.end, i));
        }
        for w in windows.values_mut() {
            w.sort_unstable();
        }
        Router { windows, chunks }
    }

    fn route(&self, key: Option<&str>, time: i64) -> Option<usize> {
        let windows = self.windows.get(&key.map(str::to_string))?;
        let after = windows.partition_point(|w| w.0 <= time);
        let (start, end, i) = *windows.get(after.checked_sub(1)?)?;
        (start <= time && time < end).then_some(i)
    }

    fn finish(self, sums: Sums) -> Routed {
        self.chunks.into_iter().zip(sums.finish()).collect()
    }
}

impl PostgresSink {
    /// The checksum of the chunk's rows in the table: from one read of the
    /// whole table shared by every chunk verified in it, when the table has
    /// no index to find a chunk's rows by; else from the chunk's own read.
    /// `stored`: the rows decoded in this schema and hashed as Arrow rows;
    /// `None`: the COPY data hashed row by row.
    pub(super) async fn target_sum(
        &self,
        table: &TableName,
        columns: &[CatalogColumn],
        chunk: &Chunk,
        filter: &str,
        stored: Option<SchemaRef>,
    ) -> Result<Checksum, EtlError> {
        if let Some(routed) = self.one_pass(table, columns, chunk, stored.clone()).await? {
            return Ok(routed.get(chunk).cloned().unwrap_or(Checksum {
                rows: 0,
                sum: "0".into(),
            }));
        }
        match stored {
            None => {
                let mut sum = etl_model::verify::CopyChecksum::new();
                self.read_back(table, columns, filter, |piece| sum.feed(piece))
                    .await?;
                sum.finish()
            }
            Some(schema) => self.read_back_rows(table, columns, schema, filter).await,
        }
    }

    /// The sums of one read of the table, made once per table and kind;
    /// `None` when the chunk is better read alone.
    async fn one_pass(
        &self,
        table: &TableName,
        columns: &[CatalogColumn],
        chunk: &Chunk,
        stored: Option<SchemaRef>,
    ) -> Result<Option<Arc<Routed>>, EtlError> {
        let time = &self.ctx.chunking.time_column;
        if time.is_empty()
            || chunk.unit != etl_base::plan::Unit::Time
            || chunk.is_whole()
            || self.ctx.chunking.range_column.is_some()
        {
            return Ok(None);
        }
        let cell = {
            let mut made = self.passes.made.lock().await;
            made.entry((table.qualified(), stored.is_none()))
                .or_default()
                .clone()
        };
        let routed = cell
            .get_or_try_init(|| async {
                let chunks: Vec<Chunk> = self
                    .passes
                    .chunks
                    .lock()
                    .expect("no panic while holding the lock")
                    .iter()
                    .filter(|c| self.table_for(c).is_ok_and(|t| t == *table))
                    .cloned()
                    .collect();
                if chunks.len() < 2 || self.indexed(table).await? {
                    return Ok::<_, EtlError>(None);
                }
                let routed = self
                    .read_routed(table, columns, Router::new(chunks), stored)
                    .await?;
                Ok(routed.map(Arc::new))
            })
            .await?;
        Ok(routed.clone())
    }

    /// Whether an index of the table leads with the time or key column (a
    /// chunk's rows are then found without reading the others).
    async fn indexed(&self, table: &TableName) -> Result<bool, EtlError> {
        let mut leading = vec![self.ctx.chunking.time_column.clone()];
        leading.extend(self.ctx.chunking.key_column.clone());
        let client = self.pool.get().await?;
        let found = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
                   ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                 WHERE i.indrelid = $1::text::regclass AND a.attname = ANY($2))",
                &[&table.qualified(), &leading],
            )
            .await
            .map_err(EtlError::pg(format!("reading the indexes of {table}")))?;
        self.pool.put(client);
        Ok(found.get(0))
    }

    /// Reads the table once, each row hashed into its chunk's sum; `None`
    /// when its key or time column is of a type not routed here.
    async fn read_routed(
        &self,
        table: &TableName,
        columns: &[CatalogColumn],
        router: Router,
        stored: Option<SchemaRef>,
    ) -> Result<Option<Routed>, EtlError> {
        let names: Vec<&String> = self.ctx.schema.fields().iter().map(|f| f.name()).collect();
        let position = |name: &str| names.iter().position(|n| *n == name);
        let type_of = |name: &str| {
            columns
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| PgType::from_type_info(&c.info).ok())
        };
        let time_name = &self.ctx.chunking.time_column;
        let key_name = self.ctx.chunking.key_column.as_deref();
        let (Some(time_at), true) = (
            position(time_name),
            matches!(
                type_of(time_name),
                Some(PgType::Timestamp | PgType::Timestamptz)
            ),
        ) else {
            return Ok(None);
        };
        // A chunk's key is the key column's value as text.
        let key_at = match key_name {
            None => None,
            Some(k) => match (position(k), type_of(k)) {
                (
                    Some(at),
                    Some(t @ (PgType::Text | PgType::Int2 | PgType::Int4 | PgType::Int8)),
                ) => Some((at, t)),
                _ => return Ok(None),
            },
        };
        tracing::debug!(
            table = %table,
            chunks = router.chunks.len(),
            "No index finds one chunk's rows: the table is read once for all of them."
        );
        let mut sums = Sums::new(router.chunks.len());
        match stored {
            None => {
                let mut tuples = CopyTuples::default();
                self.read_back(table, columns, "true", |piece| {
                    tuples.feed(piece, |tuple| {
                        let Some(t) = copy_field(tuple, time_at) else {
                            return Ok(());
                        };
                        let time = i64::from_be_bytes(t.try_into().map_err(|_| {
                            EtlError::Bug(format!("a time of {table} is not 8 bytes"))
                        })?) + PG_EPOCH_MICROS;
                        // A NULL key is the chunk of NULL keys (key None).
                        let key = match &key_at {
                            Some((k, t)) => copy_field(tuple, *k).map(|v| key_text(t, v)),
                            None => None,
                        };
                        if let Some(i) = router.route(key.as_deref(), time) {
                            sums.add(i, copy_row_hash(tuple));
                        }
                        Ok(())
                    })
                })
                .await?;
                tuples.finish()?;
            }
            Some(schema) => {
                let mut decoder = super::verify::read_back_decoder(table, columns, schema)?;
                let mut hasher = ArrowChecksum::new();
                let decoded = |e: etl_pg::pg_binary::decode::DecodeError| {
                    EtlError::Bug(format!("reading back {table}: {e}"))
                };
                let mut route_batch = |batch: arrow::array::RecordBatch| -> Result<(), EtlError> {
                    let hashes = hasher.row_hashes(&batch)?;
                    let times = batch
                        .column(time_at)
                        .as_primitive::<TimestampMicrosecondType>();
                    let keys = match &key_at {
                        Some((k, _)) => Some(
                            arrow::compute::cast(
                                batch.column(*k),
                                &arrow::datatypes::DataType::Utf8,
                            )
                            .map_err(|e| EtlError::Bug(format!("a key of {table} as text: {e}")))?,
                        ),
                        None => None,
                    };
                    let keys = keys.as_ref().map(|k| k.as_string::<i32>());
                    for (row, h) in hashes.into_iter().enumerate() {
                        if times.is_null(row) {
                            continue;
                        }
                        let key = keys.and_then(|k| (!k.is_null(row)).then(|| k.value(row)));
                        if let Some(i) = router.route(key, times.value(row)) {
                            sums.add(i, h);
                        }
                    }
                    Ok(())
                };
                self.read_back(table, columns, "true", |piece| {
                    decoder.feed(piece).map_err(decoded)?;
                    while let Some(batch) = decoder.next_batch().map_err(decoded)? {
                        route_batch(batch)?;
                    }
                    Ok(())
                })
                .await?;
                while let Some(batch) = decoder.finish().map_err(decoded)? {
                    route_batch(batch)?;
                }
            }
        }
        Ok(Some(router.finish(sums)))
    }
}

/// A key column's binary value as the text a chunk's key holds.
fn key_text(t: &PgType, value: &[u8]) -> String {
    let int = |bytes: &[u8]| -> Option<i64> {
        Some(match bytes.len() {
            2 => i16::from_be_bytes(bytes.try_into().ok()?) as i64,
            4 => i32::from_be_bytes(bytes.try_into().ok()?) as i64,
            8 => i64::from_be_bytes(bytes.try_into().ok()?),
            _ => return None,
        })
    };
    match t {
        PgType::Int2 | PgType::Int4 | PgType::Int8 => {
            int(value).map_or_else(String::new, |v| v.to_string())
        }
        _ => String::from_utf8_lossy(value).into_owned(),
    }
}
