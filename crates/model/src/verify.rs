//! `etl verify`: per chunk, the source and each sink are compared by row
//! count and an order-independent checksum of the rows as the sink stores
//! them. Database sinks compute both sides in SQL (the same expression on
//! the source and the target); file sinks compare Arrow rows, the source
//! read through etl's own decoder, the file read back.

use std::hash::{Hash, Hasher};

use arrow::array::RecordBatch;
use arrow::row::{RowConverter, SortField};

use etl_pg::error::EtlError;

/// Rows and their checksum (a sum of per-row hashes, so row order does not matter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub rows: u64,
    pub sum: String,
}

/// The SQL that computes a [`Checksum`] over `columns` of `from` where
/// `filter`: the sum of the first 64 bits of each row text's md5.
pub fn sql(columns: &[String], from: &str, filter: &str) -> String {
    let row = columns
        .iter()
        .map(|c| etl_base::sql::ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT count(*)::int8, coalesce(sum(('x' || substr(md5(ROW({row})::text), 1, 16))::bit(64)::int8::numeric), 0)::text \
         FROM {from} WHERE {filter}"
    )
}

/// Accumulates an Arrow-side [`Checksum`].
pub struct ArrowChecksum {
    converter: Option<RowConverter>,
    rows: u64,
    sum: u128,
}

impl Default for ArrowChecksum {
    fn default() -> Self {
        Self::new()
    }
}

impl ArrowChecksum {
    pub fn new() -> Self {
        ArrowChecksum {
            converter: None,
            rows: 0,
            sum: 0,
        }
    }

    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), EtlError> {
        let converter = match &mut self.converter {
            Some(c) => c,
            None => {
                let fields = batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect();
                self.converter.insert(
                    RowConverter::new(fields).map_err(|e| {
                        EtlError::Config(format!("cannot checksum these columns: {e}"))
                    })?,
                )
            }
        };
        let rows = converter
            .convert_columns(batch.columns())
            .map_err(|e| EtlError::Config(format!("cannot checksum these columns: {e}")))?;
        for row in rows.iter() {
            // SipHash with fixed keys: the same bytes hash the same in one process.
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new();
            row.as_ref().hash(&mut h);
            self.sum = self.sum.wrapping_add(h.finish() as u128);
            self.rows += 1;
        }
        Ok(())
    }

    pub fn finish(self) -> Checksum {
        Checksum {
            rows: self.rows,
            sum: self.sum.to_string(),
        }
    }
}

/// One chunk's comparison with one sink.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub source: Checksum,
    /// `None`: the sink has nothing for this chunk (no file, no rows).
    pub target: Option<Checksum>,
    /// Rows counted on both sides, no checksum: the source cannot compute
    /// one in SQL (an ODBC source).
    pub counts_only: bool,
}

impl Comparison {
    pub fn equal(&self) -> bool {
        self.target.as_ref() == Some(&self.source)
            || (self.source.rows == 0 && self.target.as_ref().is_none_or(|t| t.rows == 0))
    }
}

/// SQL a sink writes around the source's rows, given as a relation to
/// select from (`(SELECT * FROM <the source> WHERE <chunk>) AS rows`);
/// every value it selects is text.
pub type RowsQuery = std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>;

/// The rows of a [`RowsQuery`], each value as text.
pub type Rows = Vec<Vec<Option<String>>>;

/// What a sink compares one chunk by, and so what the runner reads of the
/// source: the sink never sees the source.
pub enum Basis {
    /// Count and checksum of these columns ([`sql`]) in the source; the
    /// source's count alone where it has no SQL.
    Sql { columns: Vec<String> },
    /// The rows of these queries over the chunk's rows in the source (a
    /// pivot's wide tables, compared cell by cell).
    Queries(Vec<RowsQuery>),
    /// A file the sink wrote: the runner reads it back and compares it
    /// with the source's batches as Arrow rows.
    File(WrittenFile),
}

/// A chunk's file as a file sink wrote it.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    pub path: std::path::PathBuf,
    /// The rows' schema as the sink wrote them.
    pub schema: arrow::datatypes::SchemaRef,
    pub format: FileFormat,
}

/// How a [`WrittenFile`] is read back.
#[derive(Debug, Clone)]
pub enum FileFormat {
    Parquet,
    /// Written as PostgreSQL's `COPY ... CSV` writes (quote `"`).
    Csv {
        encoding: &'static encoding_rs::Encoding,
        header: bool,
        delimiter: u8,
        null: String,
    },
}

/// The source's side of one chunk, as the runner read it for a [`Basis`].
#[derive(Debug, Clone)]
pub enum SourceSide {
    Checksum(Checksum),
    /// Rows counted; the source has no SQL to checksum them.
    Count(u64),
    /// Each query's rows, in the order of [`Basis::Queries`].
    Rows(Vec<Rows>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use std::sync::Arc;

    fn batch(ids: Vec<i64>, names: Vec<&str>) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("name", Arc::new(StringArray::from(names)) as ArrayRef),
        ])
        .unwrap()
    }

    #[test]
    fn order_does_not_matter_but_values_do() {
        let sum = |b: &[RecordBatch]| {
            let mut c = ArrowChecksum::new();
            for x in b {
                c.add(x).unwrap();
            }
            c.finish()
        };
        let a = sum(&[batch(vec![1, 2], vec!["a", "b"]), batch(vec![3], vec!["c"])]);
        let b = sum(&[batch(vec![3, 2, 1], vec!["c", "b", "a"])]);
        let c = sum(&[batch(vec![3, 2, 1], vec!["c", "b", "x"])]);
        assert_eq!(a, b);
        assert_eq!(a.rows, 3);
        assert_ne!(a, c);
    }
}
