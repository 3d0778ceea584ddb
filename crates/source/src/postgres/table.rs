//! One table of a whole PostgreSQL database, handed over as COPY data:
//! `COPY table (columns) TO STDOUT` (or a range of its integer primary
//! key, or of its blocks, through `COPY (SELECT ...)`), the bytes forwarded to the target's
//! `COPY FROM STDIN` as they arrive ([`Source::copy_through`]). Binary when
//! every column's type reads back the same on another server (built-in
//! types, enums, domains over them), text otherwise: binary arrays and
//! composites carry their element types' OIDs, which differ between
//! databases.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;

use crate::{BatchStream, CopyOut, CopyStream, CopyThrough, Source};
use etl_base::plan::{Chunk, Plan, PlannedChunk, Unit};
use etl_base::sql::{ident, TableName};
use etl_model::Chunking;
use etl_pg::error::EtlError;
use etl_pg::pg_binary::rows::CopyFormat;
use etl_pg::Pool;

/// A source table of a whole-database migration.
pub struct PgTable {
    pool: Arc<Pool>,
    /// `schema.table` as written in the ledger and the failed-chunk CSV.
    pub name: String,
    pub table: TableName,
    columns: Vec<String>,
    format: CopyFormat,
    /// The columns as Utf8 fields: their names, for the sink and reports.
    schema: SchemaRef,
    /// A one-column integer primary key: a big table is cut into ranges
    /// of it; without one, into ranges of its blocks (TID range scans).
    pub range_key: Option<String>,
    range_rows: u64,
    min_parts: u64,
    /// Rows estimated from the table's statistics rather than counted
    /// ([`PgTable::estimated`], [`PgTable::count_rows`]).
    estimate: AtomicBool,
    /// The cut a first run kept, planned again as it is
    /// ([`PgTable::cut_text`]); or the one this run planned.
    kept: Mutex<Option<Vec<PlannedChunk>>>,
    bytes_read: Arc<AtomicU64>,
}

/// A table's cut as a run keeps it ([`PgTable::cut_text`]): the whole
/// table, or its ranges (of the key, or of blocks) `[start, end)` with the
/// rows estimated in each.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum KeptCut {
    Whole { rows: u64 },
    Ranges { ranges: Vec<(i64, i64, u64)> },
}

impl PgTable {
    pub fn new(
        pool: Arc<Pool>,
        table: TableName,
        columns: Vec<String>,
        format: CopyFormat,
        range_key: Option<String>,
        range_rows: u64,
        min_parts: u64,
    ) -> PgTable {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(c, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        PgTable {
            pool,
            name: format!("{}.{}", table.schema_or_public(), table.name),
            table,
            columns,
            format,
            schema,
            range_key,
            range_rows: range_rows.max(1),
            min_parts: min_parts.max(1),
            estimate: AtomicBool::new(false),
            kept: Mutex::new(None),
            bytes_read: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Plans from the table's statistics instead of counting its rows (a
    /// scan of the whole table): for a run that keeps its cut
    /// ([`PgTable::cut_text`]), since an estimate moves with ANALYZE and a
    /// resumed run must cut the same ranges.
    pub fn estimated(self) -> PgTable {
        self.estimate.store(true, Ordering::Relaxed);
        self
    }

    /// Plans by counting the rows after all: the table's cut was made by
    /// counting (by an etl that kept no cut) and chunks of it are loaded.
    pub fn count_rows(&self) {
        self.estimate.store(false, Ordering::Relaxed);
    }

    /// The table's cut as text to keep (JSON), planned now unless set.
    pub async fn cut_text(&self) -> Result<String, EtlError> {
        let chunks = self.chunks().await?;
        let cut = match chunks.as_slice() {
            [one] if one.chunk.unit != Unit::Key => KeptCut::Whole { rows: one.rows },
            _ => KeptCut::Ranges {
                ranges: chunks
                    .iter()
                    .map(|c| (c.chunk.start, c.chunk.end, c.rows))
                    .collect(),
            },
        };
        serde_json::to_string(&cut).map_err(|e| EtlError::Bug(format!("keeping a cut: {e}")))
    }

    /// Plans the cut `text` holds ([`PgTable::cut_text`] of an earlier
    /// run) from now on; what is wrong with it if it is not one.
    pub fn set_cut_text(&self, text: &str) -> Result<(), String> {
        let chunks = match serde_json::from_str::<KeptCut>(text).map_err(|e| e.to_string())? {
            KeptCut::Whole { rows } => vec![PlannedChunk {
                chunk: Chunk::whole(Some(self.name.clone())),
                rows,
            }],
            KeptCut::Ranges { ranges } => ranges
                .into_iter()
                .map(|(lo, hi, rows)| PlannedChunk {
                    chunk: Chunk::range(Some(self.name.clone()), lo, hi),
                    rows,
                })
                .collect(),
        };
        if chunks.is_empty() {
            return Err("no chunk in it".into());
        }
        *self.kept.lock().expect("no panic while holding the lock") = Some(chunks);
        Ok(())
    }

    pub fn format(&self) -> CopyFormat {
        self.format
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The rows of `chunk`, as a condition on the key, or on the blocks
    /// that hold them (a table without an integer key: `[start, end)` are
    /// block numbers, the last range open-ended).
    fn filter(&self, chunk: &Chunk) -> String {
        match (&self.range_key, chunk.unit) {
            (Some(k), Unit::Key) => {
                etl_base::plan::range_condition(&ident(k), chunk, |v| v.to_string())
            }
            (None, Unit::Key) => etl_base::plan::block_condition(chunk),
            _ => "true".into(),
        }
    }

    /// The kept cut, or the table cut now (and kept): rows added after
    /// the plan, in new blocks or past the highest key, are in the last
    /// range (unbounded above).
    async fn chunks(&self) -> Result<Vec<PlannedChunk>, EtlError> {
        if let Some(kept) = &*self.kept.lock().expect("no panic while holding the lock") {
            return Ok(kept.clone());
        }
        let (min, max, count) = self.bounds().await?;
        let parts = count
            .div_ceil(self.range_rows)
            .max(self.min_parts.min(count / 65_536));
        let chunks = match (min, max) {
            (Some(min), Some(max)) if parts > 1 && max > min => {
                etl_base::plan::integer_ranges(&self.name, min, max, count, parts)
            }
            _ => Vec::new(),
        };
        let chunks = match chunks.is_empty() {
            false => chunks,
            true => vec![PlannedChunk {
                chunk: Chunk::whole(Some(self.name.clone())),
                rows: count,
            }],
        };
        // The same cut for the rest of this run, and to keep.
        *self.kept.lock().expect("no panic while holding the lock") = Some(chunks.clone());
        Ok(chunks)
    }

    /// The lowest and highest key (through its index), or the first and
    /// last block; and the rows. Those are estimated when
    /// [`PgTable::estimated`] ([`super::ESTIMATED_ROWS`]), counted
    /// otherwise or when the table has no statistics yet.
    async fn bounds(&self) -> Result<(Option<i64>, Option<i64>, u64), EtlError> {
        let from = format!("ONLY {}", self.table.qualified());
        let (min, max) = match &self.range_key {
            Some(k) => (
                format!("(SELECT min({}) FROM {from})::int8", ident(k)),
                format!("(SELECT max({}) FROM {from})::int8", ident(k)),
            ),
            // Without a key: the table's blocks, 0 to the last.
            None => (
                "0::int8".into(),
                "pg_relation_size(c.oid) / current_setting('block_size')::int8 - 1".into(),
            ),
        };
        let estimate = match self.estimate.load(Ordering::Relaxed) {
            true => super::ESTIMATED_ROWS,
            false => "NULL::int8",
        };
        let client = self.pool.get().await?;
        let failed = || EtlError::pg(format!("planning the chunks of source table {}", self.name));
        let row = client
            .query_one(
                &format!("SELECT {min}, {max}, {estimate} FROM pg_class c WHERE c.oid = $1::text::regclass"),
                &[&self.table.qualified()],
            )
            .await
            .map_err(failed())?;
        let (min, max, estimated): (Option<i64>, Option<i64>, Option<i64>) =
            (row.get(0), row.get(1), row.get(2));
        let rows = match estimated {
            Some(rows) => rows,
            None => client
                .query_one(&format!("SELECT count(*) FROM {from}"), &[])
                .await
                .map_err(failed())?
                .get(0),
        };
        self.pool.put(client);
        Ok((min, max, rows.max(0) as u64))
    }

    /// The number of the table's own rows.
    pub async fn rows(&self) -> Result<u64, EtlError> {
        let client = self.pool.get().await?;
        let n: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM ONLY {}", self.table.qualified()),
                &[],
            )
            .await
            .map_err(EtlError::pg(format!(
                "counting the rows of source table {}",
                self.name
            )))?
            .get(0);
        self.pool.put(client);
        Ok(n as u64)
    }

    /// `COPY` of the table's own rows (not its children's), all columns
    /// in the table's format; of `table`: this table's twin elsewhere.
    pub fn copy_all(&self, table: &TableName) -> String {
        format!(
            "COPY (SELECT {} FROM ONLY {}) TO STDOUT (FORMAT {})",
            self.column_list(),
            table.qualified(),
            self.format.sql()
        )
    }

    /// The table's own rows: count and checksum of their COPY data
    /// ([`etl_model::verify::copy_checksum`]).
    pub async fn checksum(&self) -> Result<etl_model::verify::Checksum, EtlError> {
        let client = self.pool.get().await?;
        let sum = etl_model::verify::copy_checksum(
            &client,
            &self.copy_all(&self.table),
            self.format,
            &format!("source table {}", self.name),
        )
        .await?;
        self.pool.put(client);
        Ok(sum)
    }
}

#[async_trait]
impl Source for PgTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn primary_key(&self) -> &[String] {
        &[]
    }

    /// The whole table, or equal-width ranges of its key between MIN and
    /// MAX, or of its blocks: about `range_rows` rows each, at least one
    /// per worker when the table is big enough. The cut kept by a first
    /// run when there is one ([`PgTable::cut_text`]).
    async fn plan(&self, _chunking: &Chunking) -> Result<Plan, EtlError> {
        Ok(Plan {
            chunks: self.chunks().await?,
            rows_outside: 0,
            range: None,
        })
    }

    async fn open(&self, _chunk: &Chunk) -> Result<BatchStream, EtlError> {
        Err(EtlError::Bug(format!(
            "source table {} hands over COPY data, not record batches",
            self.name
        )))
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    fn copy_out(&self) -> Option<&dyn CopyOut> {
        Some(self)
    }
}

#[async_trait]
impl CopyOut for PgTable {
    fn through(&self) -> CopyThrough {
        CopyThrough {
            format: self.format,
            columns: self.columns.clone(),
            oids: Vec::new(),
        }
    }
    async fn open_copy(
        &self,
        chunk: &Chunk,
        csv: Option<&crate::CsvCopy>,
    ) -> Result<CopyStream, EtlError> {
        let client = self.pool.get().await?;
        client
            .batch_execute("SET jit = off; SET max_parallel_workers_per_gather = 0")
            .await
            .map_err(EtlError::pg("setting up the source session"))?;
        let options = csv.map_or_else(|| format!("FORMAT {}", self.format.sql()), |c| c.options());
        let sql = match chunk.unit {
            Unit::Key => format!(
                "COPY (SELECT {} FROM ONLY {} WHERE {}) TO STDOUT ({options})",
                self.column_list(),
                self.table.qualified(),
                self.filter(chunk)
            ),
            // COPY of a table reads its own rows, not its children's.
            _ => format!(
                "COPY {} ({}) TO STDOUT ({options})",
                self.table.qualified(),
                self.column_list()
            ),
        };
        super::copy_bytes(
            &self.pool,
            client,
            &sql,
            &self.bytes_read,
            format!("source table {} for chunk {chunk}", self.name),
        )
        .await
    }
}
