//! `etl verify`: per chunk, the source and each sink are compared by row
//! count and an order-independent checksum of the rows as the sink stores
//! them. Database sinks compute both sides in SQL (the same expression on
//! the source and the target); file sinks compare Arrow rows, the source
//! read through etl's own decoder, the file read back.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::row::{RowConverter, SortField};

use etl_pg::error::EtlError;

/// Rows and their checksum (a sum of per-row hashes, so row order does not matter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub rows: u64,
    pub sum: String,
}

impl Checksum {
    /// Adds another part's rows and sum (sums of row hashes add up);
    /// `None` when a sum is not a number this etl wrote.
    pub fn plus(&self, other: &Checksum) -> Option<Checksum> {
        let a: u128 = self.sum.parse().ok()?;
        let b: u128 = other.sum.parse().ok()?;
        Some(Checksum {
            rows: self.rows + other.rows,
            sum: a.wrapping_add(b).to_string(),
        })
    }
}

/// The [`Checksum`] of the COPY data `sql` (a `COPY ... TO STDOUT` in
/// `format`: binary or text) gives on `client`: row by row, as
/// [`CopyChecksum`] hashes it. `what` names the table in an error.
pub async fn copy_checksum(
    client: &tokio_postgres::Client,
    sql: &str,
    format: etl_pg::pg_binary::rows::CopyFormat,
    what: &str,
) -> Result<Checksum, EtlError> {
    use futures_util::StreamExt;
    let mut sum = CopyChecksum::of(format)?;
    let stream = client
        .copy_out(sql)
        .await
        .map_err(EtlError::pg(format!("checksumming {what}")))?;
    let mut stream = std::pin::pin!(stream);
    while let Some(piece) = stream.next().await {
        sum.feed(&piece.map_err(EtlError::pg(format!("checksumming {what}")))?)?;
    }
    sum.finish()
}

/// Accumulates an Arrow-side [`Checksum`]: each row in Arrow's row format
/// hashed with xxh3 (a fixed, documented hash: the same rows give the same
/// sum in any process and any later etl built on the same Arrow row
/// format; `tests::a_known_batch_has_a_known_checksum` pins it), the
/// hashes summed. `jsonb` columns (field metadata) are hashed as their
/// canonical text (keys sorted, no spaces), so the text a source gave and
/// the text the server prints back hash the same.
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
        for h in self.row_hashes(batch)? {
            self.sum = self.sum.wrapping_add(h as u128);
            self.rows += 1;
        }
        Ok(())
    }

    /// Each row's hash, in order, as [`ArrowChecksum::add`] would sum it
    /// (for rows summed into several checksums: [`Sums`]).
    pub fn row_hashes(&mut self, batch: &RecordBatch) -> Result<Vec<u64>, EtlError> {
        let failed = |e: arrow::error::ArrowError| {
            EtlError::Config(format!("cannot checksum these columns: {e}"))
        };
        let converter = match &mut self.converter {
            Some(c) => c,
            None => {
                let fields = batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect();
                self.converter
                    .insert(RowConverter::new(fields).map_err(failed)?)
            }
        };
        let columns = canonical_json(batch).map_err(failed)?;
        let rows = converter.convert_columns(&columns).map_err(failed)?;
        Ok(rows
            .iter()
            .map(|row| twox_hash::XxHash3_64::oneshot(row.as_ref()))
            .collect())
    }

    pub fn finish(self) -> Checksum {
        Checksum {
            rows: self.rows,
            sum: self.sum.to_string(),
        }
    }
}

/// `batch`'s columns, those a field's metadata calls `jsonb` rewritten as
/// canonical JSON text (a value that does not parse is kept as it is).
fn canonical_json(batch: &RecordBatch) -> Result<Vec<ArrayRef>, arrow::error::ArrowError> {
    let schema = batch.schema();
    let mut columns = batch.columns().to_vec();
    for (i, field) in schema.fields().iter().enumerate() {
        let jsonb = field
            .metadata()
            .get(etl_pg::pg_binary::PG_TYPE_METADATA)
            .is_some_and(|t| t == "jsonb");
        if !jsonb || field.data_type() != &arrow::datatypes::DataType::Utf8 {
            continue;
        }
        let texts = columns[i].as_string::<i32>();
        let canonical: StringArray = texts
            .iter()
            .map(|v| {
                v.map(
                    |text| match serde_json::from_str::<serde_json::Value>(text) {
                        Ok(value) => value.to_string(),
                        Err(_) => text.to_string(),
                    },
                )
            })
            .collect();
        columns[i] = Arc::new(canonical);
    }
    Ok(columns)
}

/// One chunk's comparison with one sink.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub source: Checksum,
    /// `None`: the sink has nothing for this chunk (no file, no rows).
    pub target: Option<Checksum>,
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
    /// The chunk's rows as the run gives them ([`SourceSide::Batches`]),
    /// which the sink hashes as it stores them ([`ArrowChecksum`]).
    Rows,
    /// The source's COPY data as is ([`SourceSide::Copy`]): the target's
    /// columns are of the source's types, so the same values are the same
    /// bytes on both servers ([`CopyChecksum`]).
    Copy,
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
pub enum SourceSide {
    /// The chunk's rows as the run gives them to the sink (the source read
    /// through the pipeline's stages): the sink hashes them as it would
    /// store them, beside its own rows read back.
    Batches(crate::BatchStream),
    /// The source's binary COPY data of the chunk, hashed row by row
    /// beside the target's.
    Copy(crate::CopyStream),
    /// Each query's rows, in the order of [`Basis::Queries`].
    Rows(Vec<Rows>),
}

/// The checksum of what a chunk's writer committed, as the ledger keeps
/// it (`etl verify --quick` hashes the target's rows again the same way):
/// `rows1 <rows> <sum>` for record batches as the table stores them
/// ([`ArrowChecksum`]), `copy1 <rows> <sum>` for the source's COPY data
/// ([`CopyChecksum`]). The digit names the format; a later etl that hashes
/// otherwise names a new one and reads the old ones as not comparable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Rows(Checksum),
    Copy(Checksum),
}

impl Recorded {
    pub fn text(&self) -> String {
        let (kind, c) = match self {
            Recorded::Rows(c) => ("rows1", c),
            Recorded::Copy(c) => ("copy1", c),
        };
        format!("{kind} {} {}", c.rows, c.sum)
    }

    /// `None` for a text of a format this etl does not hash.
    pub fn parse(text: &str) -> Option<Recorded> {
        let mut parts = text.split(' ');
        let kind = parts.next()?;
        let rows = parts.next()?.parse().ok()?;
        let sum = parts.next()?.to_string();
        let checksum = Checksum { rows, sum };
        match kind {
            "rows1" => Some(Recorded::Rows(checksum)),
            "copy1" => Some(Recorded::Copy(checksum)),
            _ => None,
        }
    }

    pub fn checksum(&self) -> &Checksum {
        match self {
            Recorded::Rows(c) | Recorded::Copy(c) => c,
        }
    }

    /// The record of several chunks together (a table whose rows cannot
    /// be told apart by chunk): `None` when their kinds differ.
    pub fn plus(&self, other: &Recorded) -> Option<Recorded> {
        match (self, other) {
            (Recorded::Rows(a), Recorded::Rows(b)) => a.plus(b).map(Recorded::Rows),
            (Recorded::Copy(a), Recorded::Copy(b)) => a.plus(b).map(Recorded::Copy),
            _ => None,
        }
    }
}

/// Row hashes summed into several checksums at once (rows of one table
/// read once, each row to its chunk's sum).
#[derive(Debug, Clone)]
pub struct Sums(Vec<(u64, u128)>);

impl Sums {
    pub fn new(n: usize) -> Self {
        Sums(vec![(0, 0); n])
    }

    pub fn add(&mut self, i: usize, hash: u64) {
        let (rows, sum) = &mut self.0[i];
        *rows += 1;
        *sum = sum.wrapping_add(hash as u128);
    }

    /// Adds `other`'s sums (of other rows of the same chunks) to these.
    pub fn merge(&mut self, other: &Sums) {
        for ((rows, sum), (more, plus)) in self.0.iter_mut().zip(&other.0) {
            *rows += more;
            *sum = sum.wrapping_add(*plus);
        }
    }

    pub fn finish(self) -> Vec<Checksum> {
        self.0
            .into_iter()
            .map(|(rows, sum)| Checksum {
                rows,
                sum: sum.to_string(),
            })
            .collect()
    }
}

/// One binary COPY tuple's hash as [`CopyChecksum`] sums it.
pub fn copy_row_hash(tuple: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(tuple)
}

/// Accumulates a [`Checksum`] of binary COPY data fed piece by piece: each
/// row's bytes (field count, lengths, values) hashed with xxh3, the hashes
/// summed. Two servers print equal values of one built-in type as equal
/// bytes, so this compares a source and a target of the same column types
/// without decoding either. Text COPY data (of types whose binary form
/// differs between servers) is hashed line by line alike.
#[derive(Debug, Default)]
pub struct CopyChecksum {
    tuples: CopyTuples,
    /// Text data: the line split across pieces.
    text: Option<Vec<u8>>,
    rows: u64,
    sum: u128,
}

impl CopyChecksum {
    /// Of binary COPY data.
    pub fn new() -> Self {
        Self::default()
    }

    /// Of COPY data in `format`: binary or text (CSV is refused: a quoted
    /// value may hold a line break).
    pub fn of(format: etl_pg::pg_binary::rows::CopyFormat) -> Result<Self, EtlError> {
        use etl_pg::pg_binary::rows::CopyFormat;
        match format {
            CopyFormat::Binary => Ok(Self::new()),
            CopyFormat::Text => Ok(CopyChecksum {
                text: Some(Vec::new()),
                ..Self::default()
            }),
            CopyFormat::Csv { .. } => Err(EtlError::Bug(
                "CSV COPY data is not checksummed row by row".into(),
            )),
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), EtlError> {
        let (rows, sum) = (&mut self.rows, &mut self.sum);
        let mut add = |row: &[u8]| {
            *sum = sum.wrapping_add(copy_row_hash(row) as u128);
            *rows += 1;
            Ok(())
        };
        match &mut self.text {
            None => self.tuples.feed(bytes, add),
            // A text row is one line: line breaks in values are escaped.
            Some(pending) => {
                let mut rest = bytes;
                while let Some(end) = rest.iter().position(|b| *b == b'\n') {
                    match pending.is_empty() {
                        true => add(&rest[..end])?,
                        false => {
                            pending.extend_from_slice(&rest[..end]);
                            add(pending)?;
                            pending.clear();
                        }
                    }
                    rest = &rest[end + 1..];
                }
                pending.extend_from_slice(rest);
                Ok(())
            }
        }
    }

    /// After the last piece: fails unless the data ended with its trailer
    /// (binary) or a line break (text).
    pub fn finish(self) -> Result<Checksum, EtlError> {
        match &self.text {
            Some(pending) if !pending.is_empty() => {
                return Err(EtlError::Bug(
                    "text COPY data to checksum ends inside a row".into(),
                ))
            }
            Some(_) => {}
            None => self.tuples.finish()?,
        }
        Ok(Checksum {
            rows: self.rows,
            sum: self.sum.to_string(),
        })
    }
}

/// The tuples of binary COPY data fed piece by piece, each handed whole
/// (field count, lengths, values) to the caller.
#[derive(Debug, Default)]
pub struct CopyTuples {
    /// A tuple (or the header) split across pieces.
    pending: Vec<u8>,
    header_done: bool,
    ended: bool,
}

impl CopyTuples {
    pub fn feed(
        &mut self,
        bytes: &[u8],
        mut tuple: impl FnMut(&[u8]) -> Result<(), EtlError>,
    ) -> Result<(), EtlError> {
        if self.pending.is_empty() {
            let used = self.walk(bytes, &mut tuple)?;
            self.pending.extend_from_slice(&bytes[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(bytes);
            let used = self.walk(&pending, &mut tuple)?;
            pending.drain(..used);
            self.pending = pending;
        }
        Ok(())
    }

    /// Hands over the whole tuples at the start of `bytes`; the bytes used.
    fn walk(
        &mut self,
        bytes: &[u8],
        tuple: &mut impl FnMut(&[u8]) -> Result<(), EtlError>,
    ) -> Result<usize, EtlError> {
        use etl_pg::pg_binary::{HEADER_LEN, SIGNATURE};
        let broken = |what: &str| EtlError::Bug(format!("COPY data to checksum {what}"));
        let mut at = 0;
        if !self.header_done {
            if bytes.len() < HEADER_LEN {
                return Ok(0);
            }
            if &bytes[..SIGNATURE.len()] != SIGNATURE {
                return Err(broken("does not start with the binary COPY signature"));
            }
            let ext = u32::from_be_bytes(bytes[15..19].try_into().expect("4 bytes")) as usize;
            if bytes.len() < HEADER_LEN + ext {
                return Ok(0);
            }
            at = HEADER_LEN + ext;
            self.header_done = true;
        }
        while at < bytes.len() {
            if self.ended {
                return Err(broken("goes on after its trailer"));
            }
            if bytes[at..].starts_with(&[0xff, 0xff]) {
                self.ended = true;
                at += 2;
                continue;
            }
            match etl_pg::pg_binary::rows::whole_tuple(&bytes[at..]) {
                Some(len) => {
                    tuple(&bytes[at..at + len])?;
                    at += len;
                }
                None => break,
            }
        }
        Ok(at)
    }

    /// After the last piece: fails unless the data ended with its trailer.
    pub fn finish(&self) -> Result<(), EtlError> {
        if !self.ended || !self.pending.is_empty() {
            return Err(EtlError::Bug(
                "COPY data to checksum ended inside a row or before its trailer".into(),
            ));
        }
        Ok(())
    }
}

/// Field `index` of a binary COPY tuple: `None` when NULL (or missing).
pub fn copy_field(tuple: &[u8], index: usize) -> Option<&[u8]> {
    let mut at = 2;
    for i in 0..=index {
        let len = i32::from_be_bytes(tuple.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            if i == index {
                return None;
            }
            continue;
        }
        let len = len as usize;
        if i == index {
            return tuple.get(at..at + len);
        }
        at += len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use etl_pg::pg_binary::rows::CopyFormat;
    use std::sync::Arc;

    #[test]
    fn text_copy_data_sums_its_lines_however_it_is_cut() {
        let data = b"1\ta\n2\t\\N\n3\tline\\nbreak\n";
        let whole = {
            let mut sum = CopyChecksum::of(CopyFormat::Text).unwrap();
            sum.feed(data).unwrap();
            sum.finish().unwrap()
        };
        assert_eq!(whole.rows, 3);
        for cut in 0..data.len() {
            let mut sum = CopyChecksum::of(CopyFormat::Text).unwrap();
            sum.feed(&data[..cut]).unwrap();
            sum.feed(&data[cut..]).unwrap();
            assert_eq!(sum.finish().unwrap(), whole, "cut at {cut}");
        }
        // The rows in another order sum the same; a changed value does not.
        let mut other = CopyChecksum::of(CopyFormat::Text).unwrap();
        other.feed(b"3\tline\\nbreak\n1\ta\n2\t\\N\n").unwrap();
        assert_eq!(other.finish().unwrap(), whole);
        let mut changed = CopyChecksum::of(CopyFormat::Text).unwrap();
        changed.feed(b"1\tb\n2\t\\N\n3\tline\\nbreak\n").unwrap();
        assert_ne!(changed.finish().unwrap().sum, whole.sum);
        // Data that stops inside a row is an error.
        let mut cut = CopyChecksum::of(CopyFormat::Text).unwrap();
        cut.feed(b"1\ta\n2").unwrap();
        assert!(cut.finish().is_err());
        assert!(CopyChecksum::of(CopyFormat::Csv { header: false }).is_err());
    }

    fn batch(ids: Vec<i64>, names: Vec<&str>) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("name", Arc::new(StringArray::from(names)) as ArrayRef),
        ])
        .unwrap()
    }

    /// A checksum recorded by one etl is compared by a later one: a change
    /// of Arrow's row format or of the hash fails here first (then give
    /// recorded checksums a new kind rather than misreport old ones).
    #[test]
    fn a_known_batch_has_a_known_checksum() {
        let json = arrow::datatypes::Field::new("doc", arrow::datatypes::DataType::Utf8, true)
            .with_metadata(
                [(
                    etl_pg::pg_binary::PG_TYPE_METADATA.to_string(),
                    "jsonb".to_string(),
                )]
                .into(),
            );
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, true),
            arrow::datatypes::Field::new("name", arrow::datatypes::DataType::Utf8, true),
            json,
        ]));
        let sum = |docs: Vec<Option<&str>>| {
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(vec![Some(1), None, Some(-3)])) as ArrayRef,
                    Arc::new(StringArray::from(vec![Some("가나"), Some(""), None])),
                    Arc::new(StringArray::from(docs)),
                ],
            )
            .unwrap();
            let mut c = ArrowChecksum::new();
            c.add(&batch).unwrap();
            c.finish()
        };
        let given = sum(vec![
            Some(r#"{"b": 1, "a": [1, 2]}"#),
            None,
            Some("not json"),
        ]);
        assert_eq!(given.rows, 3);
        assert_eq!(given.sum, "26554825445192990961");
        // jsonb as the server prints it back (keys sorted, spaced) hashes the same
        let printed = sum(vec![Some(r#"{"a":[1,2],"b":1}"#), None, Some("not json")]);
        assert_eq!(printed, given);
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
