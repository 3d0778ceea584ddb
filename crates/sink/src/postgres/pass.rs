//! `etl verify` of a table that has no index on the chunks' columns (a
//! heap-only target): each chunk's own `SELECT ... WHERE <window>` would
//! scan the whole table again, so the table is read once and each row is
//! hashed into its chunk's sum, routed by its key and time. The read is
//! cut into ranges of the table's blocks, one per worker, each read by the
//! first chunk comparison free to while the others wait, so the table is
//! read on as many connections (and threads) as the copy wrote it with.
//! The sums are those of the per-chunk reads ([`CopyChecksum`],
//! [`ArrowChecksum`]), so a chunk compares the same either way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimestampMicrosecondType};

use super::*;
use etl_model::verify::{copy_field, copy_row_hash, ArrowChecksum, Checksum, CopyTuples, Sums};
use etl_pg::pg_binary::PG_EPOCH_MICROS;

/// The chunks `etl verify` will compare, told to the sink before the
/// first (a table read once serves them all), and the passes made.
#[derive(Default)]
pub(super) struct Passes {
    pub(super) chunks: std::sync::Mutex<Vec<Chunk>>,
    /// Per table and kind (`true`: COPY data): its one read, or `None`
    /// when the table is read chunk by chunk.
    made: tokio::sync::Mutex<HashMap<(String, bool), Pass>>,
}

/// Each chunk's sum in one table.
type Routed = HashMap<Chunk, Checksum>;

/// One table's read, set up by the first chunk that needs it.
type Pass = Arc<tokio::sync::OnceCell<Option<Arc<Reading>>>>;

/// A table read once, in parts (ranges of its blocks).
struct Reading {
    router: Router,
    /// Each part's condition (`ctid` bounds).
    parts: Vec<String>,
    /// Parts taken by a comparison so far.
    taken: AtomicUsize,
    sums: Vec<tokio::sync::OnceCell<Sums>>,
    routed: tokio::sync::OnceCell<Arc<Routed>>,
}

/// Where a row's time and key are among the columns read back; keys are
/// compared as bytes: a text key's own, an integer key's as a big-endian
/// `i64`.
#[derive(Clone, Copy)]
struct Columns {
    time: usize,
    key: Option<(usize, bool)>,
}

/// A window of a key: start, end, the chunk's index.
type Window = (i64, i64, usize);

/// Which chunk a row is in: its key's windows, by start.
struct Router {
    keys: HashMap<Vec<u8>, Vec<Window>>,
    /// The windows of the chunk of NULL keys (or of no key column).
    null: Vec<Window>,
    chunks: Vec<Chunk>,
}

impl Router {
    /// `int`: the key column is an integer (chunk keys are its values as
    /// text).
    fn new(chunks: Vec<Chunk>, int: bool) -> Self {
        let (mut keys, mut null) = (HashMap::<Vec<u8>, Vec<Window>>::new(), Vec::new());
        for (i, c) in chunks.iter().enumerate() {
            let window = (c.start, c.end, i);
            match &c.key {
                None => null.push(window),
                Some(k) => keys
                    .entry(match (int, k.parse::<i64>()) {
                        (true, Ok(v)) => v.to_be_bytes().to_vec(),
                        _ => k.as_bytes().to_vec(),
                    })
                    .or_default()
                    .push(window),
            }
        }
        for w in keys.values_mut().chain([&mut null]) {
            w.sort_unstable();
        }
        Router { keys, null, chunks }
    }

    fn finish(&self, sums: Sums) -> Routed {
        self.chunks.iter().cloned().zip(sums.finish()).collect()
    }
}

/// Routes rows in the order read, remembering the last key's windows
/// (rows of one key mostly come together).
struct Cursor<'a> {
    router: &'a Router,
    last: Option<(Option<Vec<u8>>, &'a [Window])>,
}

impl<'a> Cursor<'a> {
    fn new(router: &'a Router) -> Self {
        Cursor { router, last: None }
    }

    fn route(&mut self, key: Option<&[u8]>, time: i64) -> Option<usize> {
        let windows = match &self.last {
            Some((k, w)) if k.as_deref() == key => *w,
            _ => {
                let w: &[Window] = match key {
                    None => &self.router.null,
                    Some(k) => self.router.keys.get(k).map_or(&[], Vec::as_slice),
                };
                self.last = Some((key.map(<[u8]>::to_vec), w));
                w
            }
        };
        let after = windows.partition_point(|w| w.0 <= time);
        let (start, end, i) = *windows.get(after.checked_sub(1)?)?;
        (start <= time && time < end).then_some(i)
    }
}

/// The conditions reading a table of `blocks` blocks in `n` parts: the
/// ranges of blocks of [`etl_base::plan::split_range`] (as a migration
/// cuts a table without a key), the last open-ended.
fn parts(blocks: i64, n: usize) -> Vec<String> {
    let ranges = etl_base::plan::split_range(0, blocks - 1, n as u64, 1);
    if ranges.is_empty() {
        return vec!["true".to_string()];
    }
    ranges
        .into_iter()
        .map(|(lo, hi)| {
            etl_base::plan::range_condition("ctid", &Chunk::range(None, lo, hi), |v| {
                format!("'({v},0)'::tid")
            })
        })
        .collect()
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
    /// `None` when the chunk is better read alone. The parts no comparison
    /// reads yet are read here, then the others' awaited.
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
            || self.ctx.chunking.target_range_column().is_some()
        {
            return Ok(None);
        }
        let cell = {
            let mut made = self.passes.made.lock().await;
            made.entry((table.qualified(), stored.is_none()))
                .or_default()
                .clone()
        };
        let reading = cell
            .get_or_try_init(|| self.reading(table, columns))
            .await?;
        let Some(reading) = reading.clone() else {
            return Ok(None);
        };
        let Some(at) = self.routed_columns(columns) else {
            return Err(EtlError::Bug(format!(
                "{table} is read once but its key or time column is not routed"
            )));
        };
        let read = |i: usize| {
            let (reading, stored) = (&reading, stored.clone());
            async move {
                reading.sums[i]
                    .get_or_try_init(|| self.read_part(table, columns, at, reading, i, stored))
                    .await
                    .cloned()
            }
        };
        loop {
            let i = reading.taken.fetch_add(1, Ordering::SeqCst);
            if i >= reading.parts.len() {
                break;
            }
            read(i).await?;
        }
        let routed = reading
            .routed
            .get_or_try_init(|| async {
                let mut total = Sums::new(reading.router.chunks.len());
                for i in 0..reading.parts.len() {
                    total.merge(&read(i).await?);
                }
                Ok::<_, EtlError>(Arc::new(reading.router.finish(total)))
            })
            .await?;
        Ok(Some(routed.clone()))
    }

    /// The table's one read for the chunks `etl verify` compares in it,
    /// cut into a part per worker; `None` when each chunk is better read
    /// alone (an index finds its rows, or fewer than two chunks, or a key
    /// or time column of a type not routed here).
    async fn reading(
        &self,
        table: &TableName,
        columns: &[CatalogColumn],
    ) -> Result<Option<Arc<Reading>>, EtlError> {
        let chunks: Vec<Chunk> = self
            .passes
            .chunks
            .lock()
            .expect("no panic while holding the lock")
            .iter()
            .filter(|c| self.table_for(c).is_ok_and(|t| t == *table))
            .cloned()
            .collect();
        let Some(at) = self.routed_columns(columns) else {
            return Ok(None);
        };
        if chunks.len() < 2 || self.indexed(table).await? {
            return Ok(None);
        }
        let client = self.pool.get().await?;
        let size = client
            .query_one(
                "SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint, \
                        current_setting('server_version_num')::int",
                &[&table.qualified()],
            )
            .await
            .map_err(EtlError::pg(format!("reading the size of {table}")))?;
        self.pool.put(client);
        let (blocks, version): (i64, i32) = (size.get(0), size.get(1));
        // Ranges of blocks are read by a TID range scan from PostgreSQL
        // 14; a small table is read in one go.
        let parts = match version >= 140_000 && blocks >= 1024 {
            true => parts(blocks, self.ctx.chunking.workers),
            false => vec!["true".to_string()],
        };
        let n = parts.len();
        tracing::debug!(
            table = %table,
            chunks = chunks.len(),
            parts = n,
            "No index finds one chunk's rows: the table is read once for all of them."
        );
        Ok(Some(Arc::new(Reading {
            router: Router::new(chunks, at.key.is_some_and(|(_, int)| int)),
            parts,
            taken: AtomicUsize::new(0),
            sums: (0..n).map(|_| Default::default()).collect(),
            routed: Default::default(),
        })))
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

    /// Where the time and key are among the sink's columns; `None` when
    /// either is of a type not routed here (times: timestamps; keys: text
    /// and integers).
    fn routed_columns(&self, columns: &[CatalogColumn]) -> Option<Columns> {
        let names: Vec<&String> = self.ctx.schema.fields().iter().map(|f| f.name()).collect();
        let position = |name: &str| names.iter().position(|n| *n == name);
        let type_of = |name: &str| {
            columns
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| PgType::from_type_info(&c.info).ok())
        };
        let time_name = &self.ctx.chunking.time_column;
        if !matches!(
            type_of(time_name),
            Some(PgType::Timestamp | PgType::Timestamptz)
        ) {
            return None;
        }
        let key = match self.ctx.chunking.key_column.as_deref() {
            None => None,
            Some(k) => match type_of(k)? {
                PgType::Text => Some((position(k)?, false)),
                PgType::Int2 | PgType::Int4 | PgType::Int8 => Some((position(k)?, true)),
                _ => return None,
            },
        };
        Some(Columns {
            time: position(time_name)?,
            key,
        })
    }

    /// Part `i` of the table's one read, each row hashed into its chunk's
    /// sum: as COPY data, or decoded into the `stored` schema when the
    /// checksum is of the values.
    async fn read_part(
        &self,
        table: &TableName,
        columns: &[CatalogColumn],
        at: Columns,
        reading: &Reading,
        i: usize,
        stored: Option<SchemaRef>,
    ) -> Result<Sums, EtlError> {
        let (filter, router) = (&reading.parts[i], &reading.router);
        let mut cursor = Cursor::new(router);
        let mut sums = Sums::new(router.chunks.len());
        match stored {
            None => {
                let read = (table, columns, filter.as_str());
                self.hash_tuples(read, at, &mut cursor, &mut sums).await?
            }
            Some(schema) => {
                let read = (table, columns, filter.as_str());
                self.hash_values(read, schema, at, &mut cursor, &mut sums)
                    .await?
            }
        }
        Ok(sums)
    }

    /// Each COPY tuple of `filter`'s rows hashed as it is into its chunk's
    /// sum.
    async fn hash_tuples(
        &self,
        (table, columns, filter): (&TableName, &[CatalogColumn], &str),
        at: Columns,
        cursor: &mut Cursor<'_>,
        sums: &mut Sums,
    ) -> Result<(), EtlError> {
        let mut tuples = CopyTuples::default();
        let mut int = [0u8; 8];
        self.read_back(table, columns, filter, |piece| {
            tuples.feed(piece, |tuple| {
                let Some(t) = copy_field(tuple, at.time) else {
                    return Ok(());
                };
                let time = i64::from_be_bytes(
                    t.try_into()
                        .map_err(|_| EtlError::Bug(format!("a time of {table} is not 8 bytes")))?,
                ) + PG_EPOCH_MICROS;
                // A NULL key is the chunk of NULL keys (key None).
                let key = match at.key {
                    Some((k, false)) => copy_field(tuple, k),
                    Some((k, true)) => copy_field(tuple, k).map(|v| {
                        int = int_value(v).to_be_bytes();
                        &int[..]
                    }),
                    None => None,
                };
                if let Some(i) = cursor.route(key, time) {
                    sums.add(i, copy_row_hash(tuple));
                }
                Ok(())
            })
        })
        .await?;
        tuples.finish()?;
        Ok(())
    }

    /// `filter`'s rows of `table` decoded into `schema`, each row's values
    /// hashed into its chunk's sum.
    async fn hash_values(
        &self,
        (table, columns, filter): (&TableName, &[CatalogColumn], &str),
        schema: SchemaRef,
        at: Columns,
        cursor: &mut Cursor<'_>,
        sums: &mut Sums,
    ) -> Result<(), EtlError> {
        let mut decoder = super::verify::read_back_decoder(table, columns, schema)?;
        let mut hasher = ArrowChecksum::new();
        let decoded = |e: etl_pg::pg_binary::decode::DecodeError| {
            EtlError::Bug(format!("reading back {table}: {e}"))
        };
        let mut route_batch = |batch: arrow::array::RecordBatch| -> Result<(), EtlError> {
            let hashes = hasher.row_hashes(&batch)?;
            let times = batch
                .column(at.time)
                .as_primitive::<TimestampMicrosecondType>();
            let key_as = |k: usize, t: &DataType| {
                arrow::compute::cast(batch.column(k), t)
                    .map_err(|e| EtlError::Bug(format!("a key of {table} as {t}: {e}")))
            };
            let keys = match at.key {
                Some((k, false)) => Some(key_as(k, &DataType::Utf8)?),
                Some((k, true)) => Some(key_as(k, &DataType::Int64)?),
                None => None,
            };
            for (row, h) in hashes.into_iter().enumerate() {
                if times.is_null(row) {
                    continue;
                }
                let int;
                let key = match (&keys, at.key) {
                    (Some(k), _) if k.is_null(row) => None,
                    (Some(k), Some((_, true))) => {
                        int = k.as_primitive::<Int64Type>().value(row).to_be_bytes();
                        Some(&int[..])
                    }
                    (Some(k), _) => Some(k.as_string::<i32>().value(row).as_bytes()),
                    (None, _) => None,
                };
                if let Some(i) = cursor.route(key, times.value(row)) {
                    sums.add(i, h);
                }
            }
            Ok(())
        };
        self.read_back(table, columns, filter, |piece| {
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
        Ok(())
    }
}

/// An integer key column's binary value (2, 4 or 8 bytes) as an `i64`.
fn int_value(bytes: &[u8]) -> i64 {
    match bytes.len() {
        2 => i16::from_be_bytes([bytes[0], bytes[1]]) as i64,
        4 => i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as i64,
        _ => bytes.try_into().map(i64::from_be_bytes).unwrap_or(i64::MIN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_go_to_their_keys_window_and_nowhere_else() {
        let chunks = vec![
            Chunk::window(Some("7".into()), 0, 10),
            Chunk::window(Some("7".into()), 10, 20),
            Chunk::window(Some("x".into()), 0, 10),
            Chunk::window(None, 0, 10),
        ];
        let ints = Router::new(chunks.clone(), true);
        let mut cursor = Cursor::new(&ints);
        let seven = 7i64.to_be_bytes();
        assert_eq!(cursor.route(Some(&seven), 0), Some(0));
        assert_eq!(cursor.route(Some(&seven), 9), Some(0));
        assert_eq!(cursor.route(Some(&seven), 10), Some(1));
        assert_eq!(cursor.route(Some(&seven), 20), None);
        assert_eq!(cursor.route(Some(&seven), -1), None);
        assert_eq!(cursor.route(None, 5), Some(3));
        assert_eq!(cursor.route(Some(&8i64.to_be_bytes()), 5), None);
        // The last key remembered does not answer for the next one.
        assert_eq!(cursor.route(Some(&seven), 15), Some(1));
        let text = Router::new(chunks, false);
        let mut cursor = Cursor::new(&text);
        assert_eq!(cursor.route(Some(b"x"), 3), Some(2));
        assert_eq!(cursor.route(Some(b"7"), 3), Some(0));
        assert_eq!(cursor.route(Some(b"y"), 3), None);
    }

    #[test]
    fn a_table_is_read_in_block_ranges_that_leave_no_block_out() {
        assert_eq!(
            parts(10_000, 2),
            [
                "ctid < '(5000,0)'::tid".to_string(),
                "ctid >= '(5000,0)'::tid".to_string()
            ]
        );
        assert_eq!(parts(10_000, 3).len(), 3);
        assert_eq!(
            parts(10_000, 3)[1],
            "ctid >= '(3334,0)'::tid AND ctid < '(6668,0)'::tid"
        );
        assert_eq!(parts(10_000, 1), ["true".to_string()]);
    }
}
