//! Binary COPY bytes -> Arrow record batches.
//!
//! Feed the bytes of `COPY ... TO STDOUT (FORMAT binary)` in pieces of any
//! size with [`CopyDecoder::feed`]; complete batches come out of
//! [`CopyDecoder::next_batch`] as soon as `batch_rows` rows (or `batch_bytes`
//! bytes of field data) are in. Memory is one batch plus one partial row.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    FixedSizeBinaryBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, IntervalMonthDayNanoBuilder, ListArray, NullBufferBuilder, RecordBatch,
    RecordBatchOptions, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{IntervalMonthDayNano, SchemaRef};
use bytes::{Buf, BytesMut};

use super::{numeric, PgType, HEADER_LEN, PG_EPOCH_DAYS, PG_EPOCH_MICROS, SIGNATURE};

/// A value that could not be decoded, with where it was.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the stream does not start with the binary COPY signature")]
    BadSignature,
    #[error("row {row} has {found} fields, the query has {expected} columns")]
    FieldCount {
        row: u64,
        found: i16,
        expected: usize,
    },
    #[error("column {column:?} (index {index}), row {row}: {reason}")]
    Value {
        column: String,
        index: usize,
        row: u64,
        reason: String,
    },
    #[error("the stream ended inside a row ({0} bytes left over)")]
    Truncated(usize),
    #[error("the stream ended without its end-of-data marker")]
    MissingTrailer,
    /// COPY data walked row by row ([`super::rows::RowWalker`]) is cut or bent.
    #[error("the source's COPY data is not whole: {0}")]
    Broken(String),
    #[error("building the record batch failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Streams binary COPY bytes into record batches of one schema.
pub struct CopyDecoder {
    schema: SchemaRef,
    columns: Vec<ColumnDecoder>,
    buf: BytesMut,
    header_done: bool,
    finished: bool,
    rows_in_batch: usize,
    bytes_in_batch: usize,
    rows_total: u64,
    batch_rows: usize,
    batch_bytes: usize,
}

impl CopyDecoder {
    /// `types` are the columns' codecs in the order of `schema`'s fields.
    pub fn new(schema: SchemaRef, types: &[PgType], batch_rows: usize, batch_bytes: usize) -> Self {
        let columns = types
            .iter()
            .map(|t| ColumnDecoder::new(t, batch_rows))
            .collect();
        CopyDecoder {
            schema,
            columns,
            buf: BytesMut::with_capacity(64 * 1024),
            header_done: false,
            finished: false,
            rows_in_batch: 0,
            bytes_in_batch: 0,
            rows_total: 0,
            batch_rows: batch_rows.max(1),
            batch_bytes: batch_bytes.max(1),
        }
    }

    /// Rows decoded so far.
    pub fn rows(&self) -> u64 {
        self.rows_total
    }

    /// Takes more bytes of the stream. Decodes whole rows as long as the
    /// current batch has room; only what is left (a partial row, or rows
    /// waiting for room) is copied into the decoder's buffer.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            let used = self.decode_slice(bytes)?;
            self.buf.extend_from_slice(&bytes[used..]);
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        self.decode_rows()
    }

    /// A full batch, when one is ready.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, DecodeError> {
        if self.batch_full() {
            let batch = self.flush()?;
            // The buffer may hold more whole rows that waited for room.
            self.decode_rows()?;
            return Ok(Some(batch));
        }
        Ok(None)
    }

    /// Ends the stream: returns the last, partial batch (if any rows) and
    /// fails if the stream stopped inside a row or before its trailer.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, DecodeError> {
        self.decode_rows()?;
        if self.batch_full() {
            return self.flush().map(Some);
        }
        if !self.buf.is_empty() {
            return Err(DecodeError::Truncated(self.buf.len()));
        }
        if !self.finished {
            return Err(DecodeError::MissingTrailer);
        }
        if self.rows_in_batch == 0 {
            return Ok(None);
        }
        self.flush().map(Some)
    }

    fn batch_full(&self) -> bool {
        self.rows_in_batch >= self.batch_rows || self.bytes_in_batch >= self.batch_bytes
    }

    fn flush(&mut self) -> Result<RecordBatch, DecodeError> {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(|c| c.finish()).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows_in_batch));
        self.rows_in_batch = 0;
        self.bytes_in_batch = 0;
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &options,
        )?)
    }

    fn decode_rows(&mut self) -> Result<(), DecodeError> {
        let mut buf = std::mem::take(&mut self.buf);
        let used = self.decode_slice(&buf);
        if let Ok(used) = used {
            buf.advance(used);
        }
        self.buf = buf;
        used.map(|_| ())
    }

    /// Decodes whole rows from `data`; returns how many bytes were used.
    fn decode_slice(&mut self, data: &[u8]) -> Result<usize, DecodeError> {
        let mut pos = 0usize;
        if !self.header_done {
            if data.len() < HEADER_LEN {
                return Ok(0);
            }
            if &data[..11] != SIGNATURE {
                return Err(DecodeError::BadSignature);
            }
            let ext_len = i32::from_be_bytes([data[15], data[16], data[17], data[18]]);
            let total = HEADER_LEN + ext_len.max(0) as usize;
            if data.len() < total {
                return Ok(0);
            }
            pos = total;
            self.header_done = true;
        }
        while !self.finished && !self.batch_full() {
            let Some(row_len) = self.complete_row_len(&data[pos..])? else {
                break;
            };
            let row = &data[pos..pos + row_len];
            if row_len == 2 && row == [0xff, 0xff] {
                self.finished = true;
                pos += row_len;
                break;
            }
            let mut p = 2usize;
            for (index, column) in self.columns.iter_mut().enumerate() {
                let len = i32::from_be_bytes([row[p], row[p + 1], row[p + 2], row[p + 3]]);
                p += 4;
                let value = if len < 0 {
                    None
                } else {
                    let v = &row[p..p + len as usize];
                    p += len as usize;
                    Some(v)
                };
                column.append(value).map_err(|reason| DecodeError::Value {
                    column: self.schema.field(index).name().clone(),
                    index,
                    row: self.rows_total + 1,
                    reason,
                })?;
            }
            self.bytes_in_batch += row_len;
            self.rows_in_batch += 1;
            self.rows_total += 1;
            pos += row_len;
        }
        Ok(pos)
    }

    /// The length of the row at the start of `b` if all its bytes are there.
    fn complete_row_len(&self, b: &[u8]) -> Result<Option<usize>, DecodeError> {
        if b.len() < 2 {
            return Ok(None);
        }
        let count = i16::from_be_bytes([b[0], b[1]]);
        if count == -1 {
            return Ok(Some(2));
        }
        if count < 0 || count as usize != self.columns.len() {
            return Err(DecodeError::FieldCount {
                row: self.rows_total + 1,
                found: count,
                expected: self.columns.len(),
            });
        }
        let mut p = 2usize;
        for _ in 0..count {
            if b.len() < p + 4 {
                return Ok(None);
            }
            let len = i32::from_be_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]]);
            p += 4 + len.max(0) as usize;
            if b.len() < p {
                return Ok(None);
            }
        }
        Ok(Some(p))
    }
}

/// One column's builder, picked once per schema.
enum ColumnDecoder {
    Bool(BooleanBuilder),
    Int2(Int16Builder),
    Int4(Int32Builder),
    Int8(Int64Builder),
    Float4(Float32Builder),
    Float8(Float64Builder),
    Decimal {
        builder: Decimal128Builder,
        precision: u8,
        scale: i8,
    },
    NumericText {
        builder: StringBuilder,
        scratch: String,
    },
    Text(StringBuilder),
    Jsonb(StringBuilder),
    Bytea(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp {
        builder: TimestampMicrosecondBuilder,
        tz: Option<Arc<str>>,
    },
    Interval(IntervalMonthDayNanoBuilder),
    Uuid(FixedSizeBinaryBuilder),
    List {
        element: Box<ColumnDecoder>,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        field: arrow::datatypes::FieldRef,
    },
}

type ValueResult = Result<(), String>;

fn fixed<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], String> {
    v.try_into()
        .map_err(|_| format!("{what} value has {} bytes, expected {N}", v.len()))
}

impl ColumnDecoder {
    fn new(t: &PgType, capacity: usize) -> Self {
        match t {
            PgType::Bool => ColumnDecoder::Bool(BooleanBuilder::with_capacity(capacity)),
            PgType::Int2 => ColumnDecoder::Int2(Int16Builder::with_capacity(capacity)),
            PgType::Int4 => ColumnDecoder::Int4(Int32Builder::with_capacity(capacity)),
            PgType::Int8 => ColumnDecoder::Int8(Int64Builder::with_capacity(capacity)),
            PgType::Float4 => ColumnDecoder::Float4(Float32Builder::with_capacity(capacity)),
            PgType::Float8 => ColumnDecoder::Float8(Float64Builder::with_capacity(capacity)),
            PgType::Decimal { precision, scale } => ColumnDecoder::Decimal {
                builder: Decimal128Builder::with_capacity(capacity),
                precision: *precision,
                scale: *scale,
            },
            PgType::NumericText => ColumnDecoder::NumericText {
                builder: StringBuilder::with_capacity(capacity, capacity * 8),
                scratch: String::new(),
            },
            PgType::Text => {
                ColumnDecoder::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            PgType::Jsonb => {
                ColumnDecoder::Jsonb(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            PgType::Bytea => {
                ColumnDecoder::Bytea(BinaryBuilder::with_capacity(capacity, capacity * 16))
            }
            PgType::Date => ColumnDecoder::Date(Date32Builder::with_capacity(capacity)),
            PgType::Time => ColumnDecoder::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            PgType::Timestamp => ColumnDecoder::Timestamp {
                builder: TimestampMicrosecondBuilder::with_capacity(capacity),
                tz: None,
            },
            PgType::Timestamptz => ColumnDecoder::Timestamp {
                builder: TimestampMicrosecondBuilder::with_capacity(capacity),
                tz: Some("UTC".into()),
            },
            PgType::Interval => {
                ColumnDecoder::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity))
            }
            PgType::Uuid => {
                ColumnDecoder::Uuid(FixedSizeBinaryBuilder::with_capacity(capacity, 16))
            }
            PgType::Array { element, .. } => {
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                ColumnDecoder::List {
                    element: Box::new(ColumnDecoder::new(element, capacity)),
                    offsets,
                    nulls: NullBufferBuilder::new(capacity),
                    field: Arc::new(element.arrow_field("item")),
                }
            }
        }
    }

    fn append(&mut self, value: Option<&[u8]>) -> ValueResult {
        let Some(v) = value else {
            self.append_null();
            return Ok(());
        };
        match self {
            ColumnDecoder::Bool(b) => b.append_value(fixed::<1>(v, "boolean")?[0] != 0),
            ColumnDecoder::Int2(b) => b.append_value(i16::from_be_bytes(fixed(v, "smallint")?)),
            ColumnDecoder::Int4(b) => b.append_value(i32::from_be_bytes(fixed(v, "integer")?)),
            ColumnDecoder::Int8(b) => b.append_value(i64::from_be_bytes(fixed(v, "bigint")?)),
            ColumnDecoder::Float4(b) => b.append_value(f32::from_be_bytes(fixed(v, "real")?)),
            ColumnDecoder::Float8(b) => {
                b.append_value(f64::from_be_bytes(fixed(v, "double precision")?))
            }
            ColumnDecoder::Decimal { builder, scale, .. } => {
                builder.append_value(numeric::to_i128(v, *scale).map_err(|e| e.to_string())?)
            }
            ColumnDecoder::NumericText { builder, scratch } => {
                scratch.clear();
                numeric::to_text(v, scratch).map_err(|e| e.to_string())?;
                builder.append_value(&*scratch);
            }
            ColumnDecoder::Text(b) => b.append_value(utf8(v)?),
            ColumnDecoder::Jsonb(b) => match v.split_first() {
                Some((1, json)) => b.append_value(utf8(json)?),
                _ => return Err("jsonb value does not start with format version 1".into()),
            },
            ColumnDecoder::Bytea(b) => b.append_value(v),
            ColumnDecoder::Date(b) => {
                let days = i32::from_be_bytes(fixed(v, "date")?);
                b.append_value(match days {
                    i32::MAX | i32::MIN => days,
                    // PostgreSQL's dates end in 5874897 AD, well inside.
                    d => d
                        .checked_add(PG_EPOCH_DAYS)
                        .filter(|d| *d != i32::MAX)
                        .ok_or("date is out of PostgreSQL's range")?,
                })
            }
            ColumnDecoder::Time(b) => b.append_value(i64::from_be_bytes(fixed(v, "time")?)),
            ColumnDecoder::Timestamp { builder, .. } => {
                let micros = i64::from_be_bytes(fixed(v, "timestamp")?);
                builder.append_value(match micros {
                    i64::MAX | i64::MIN => micros,
                    // i64::MAX in Arrow stands for `infinity`; the one real
                    // microsecond that lands there is refused, not changed.
                    m => m.checked_add(PG_EPOCH_MICROS).filter(|t| *t != i64::MAX).ok_or(
                        "timestamp is at or after 294247-01-10 04:00:54.775807, the latest Arrow can hold \
                         (PostgreSQL allows up to 294276 AD); filter or cast it in `query`",
                    )?,
                })
            }
            ColumnDecoder::Interval(b) => {
                let raw = fixed::<16>(v, "interval")?;
                let micros = i64::from_be_bytes(raw[0..8].try_into().expect("8 of 16 bytes"));
                let days = i32::from_be_bytes(raw[8..12].try_into().expect("4 of 16 bytes"));
                let months = i32::from_be_bytes(raw[12..16].try_into().expect("4 of 16 bytes"));
                let nanos = micros
                    .checked_mul(1000)
                    .ok_or("interval's time part does not fit in nanoseconds (over ±292 years)")?;
                b.append_value(IntervalMonthDayNano::new(months, days, nanos))
            }
            ColumnDecoder::Uuid(b) => b
                .append_value(fixed::<16>(v, "uuid")?)
                .map_err(|e| e.to_string())?,
            ColumnDecoder::List {
                element,
                offsets,
                nulls,
                ..
            } => {
                let count = decode_array(v, element)?;
                let last = *offsets.last().expect("offsets start with 0");
                offsets.push(
                    last.checked_add(count)
                        .ok_or("more array elements in one batch than Arrow's list offsets hold; lower batch_rows")?,
                );
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            ColumnDecoder::Bool(b) => b.append_null(),
            ColumnDecoder::Int2(b) => b.append_null(),
            ColumnDecoder::Int4(b) => b.append_null(),
            ColumnDecoder::Int8(b) => b.append_null(),
            ColumnDecoder::Float4(b) => b.append_null(),
            ColumnDecoder::Float8(b) => b.append_null(),
            ColumnDecoder::Decimal { builder, .. } => builder.append_null(),
            ColumnDecoder::NumericText { builder, .. } => builder.append_null(),
            ColumnDecoder::Text(b) | ColumnDecoder::Jsonb(b) => b.append_null(),
            ColumnDecoder::Bytea(b) => b.append_null(),
            ColumnDecoder::Date(b) => b.append_null(),
            ColumnDecoder::Time(b) => b.append_null(),
            ColumnDecoder::Timestamp { builder, .. } => builder.append_null(),
            ColumnDecoder::Interval(b) => b.append_null(),
            ColumnDecoder::Uuid(b) => b.append_null(),
            ColumnDecoder::List { offsets, nulls, .. } => {
                let last = *offsets.last().expect("offsets start with 0");
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnDecoder::Bool(b) => Arc::new(b.finish()),
            ColumnDecoder::Int2(b) => Arc::new(b.finish()),
            ColumnDecoder::Int4(b) => Arc::new(b.finish()),
            ColumnDecoder::Int8(b) => Arc::new(b.finish()),
            ColumnDecoder::Float4(b) => Arc::new(b.finish()),
            ColumnDecoder::Float8(b) => Arc::new(b.finish()),
            ColumnDecoder::Decimal {
                builder,
                precision,
                scale,
            } => Arc::new(
                builder
                    .finish()
                    .with_precision_and_scale(*precision, *scale)
                    .expect("precision <= 38 was checked when the type was picked"),
            ),
            ColumnDecoder::NumericText { builder, .. } => Arc::new(builder.finish()),
            ColumnDecoder::Text(b) | ColumnDecoder::Jsonb(b) => Arc::new(b.finish()),
            ColumnDecoder::Bytea(b) => Arc::new(b.finish()),
            ColumnDecoder::Date(b) => Arc::new(b.finish()),
            ColumnDecoder::Time(b) => Arc::new(b.finish()),
            ColumnDecoder::Timestamp { builder, tz } => {
                Arc::new(builder.finish().with_timezone_opt(tz.clone()))
            }
            ColumnDecoder::Interval(b) => Arc::new(b.finish()),
            ColumnDecoder::Uuid(b) => Arc::new(b.finish()),
            ColumnDecoder::List {
                element,
                offsets,
                nulls,
                field,
            } => {
                let values = element.finish();
                let offs = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                Arc::new(
                    ListArray::try_new(field.clone(), offs, values, nulls.finish())
                        .expect("offsets and nulls are built in step with the values"),
                )
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        use arrow::array::ArrayBuilder;
        match self {
            ColumnDecoder::Bool(b) => b.len(),
            ColumnDecoder::Int8(b) => b.len(),
            _ => 0,
        }
    }
}

fn utf8(v: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(v).map_err(|e| format!("text is not valid UTF-8 ({e})"))
}

/// Decodes one array value into the element builder; returns the element count.
fn decode_array(v: &[u8], element: &mut ColumnDecoder) -> Result<i32, String> {
    let mut b = v;
    let header = |b: &mut &[u8]| -> Result<i32, String> {
        if b.len() < 4 {
            return Err("array value is truncated".to_string());
        }
        Ok(b.get_i32())
    };
    let ndim = header(&mut b)?;
    let _has_nulls = header(&mut b)?;
    let _element_oid = header(&mut b)?;
    match ndim {
        0 => return Ok(0),
        1 => {}
        n => {
            return Err(format!(
                "{n}-dimensional arrays are not supported; unnest or cast the column to text in `query`"
            ))
        }
    }
    let count = header(&mut b)?;
    let _lower_bound = header(&mut b)?;
    // Each element takes at least its 4-byte length.
    if count < 0 || count as usize > b.len() / 4 {
        return Err(format!(
            "array value claims {count} elements in {} bytes",
            b.len()
        ));
    }
    for _ in 0..count {
        let len = header(&mut b)?;
        if len < 0 {
            element.append(None)?;
        } else {
            let len = len as usize;
            if b.len() < len {
                return Err("array element is truncated".to_string());
            }
            element.append(Some(&b[..len]))?;
            b = &b[len..];
        }
    }
    if !b.is_empty() {
        return Err(format!(
            "array value has {} bytes after its {count} elements",
            b.len()
        ));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, Schema};
    use bytes::BufMut;

    fn stream(rows: &[Option<i64>]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(SIGNATURE);
        out.extend_from_slice(&[0; 8]);
        for r in rows {
            out.put_i16(1);
            match r {
                Some(v) => {
                    out.put_i32(8);
                    out.put_i64(*v);
                }
                None => out.put_i32(-1),
            }
        }
        out.put_i16(-1);
        out
    }

    fn decoder(batch_rows: usize) -> CopyDecoder {
        let schema = Arc::new(Schema::new(vec![PgType::Int8.arrow_field("n")]));
        CopyDecoder::new(schema, &[PgType::Int8], batch_rows, usize::MAX)
    }

    #[test]
    fn bytes_split_anywhere_decode_the_same() {
        // Given a stream of five rows fed one byte at a time
        let bytes = stream(&[Some(1), None, Some(-3), Some(i64::MAX), Some(5)]);
        let mut d = decoder(2);
        let mut batches = Vec::new();
        for b in &bytes {
            d.feed(std::slice::from_ref(b)).unwrap();
            while let Some(batch) = d.next_batch().unwrap() {
                batches.push(batch);
            }
        }
        while let Some(batch) = d.finish().unwrap() {
            batches.push(batch);
        }
        // Then batches hold at most two rows and every value, NULL included
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        let first = batches[0].column(0).as_primitive::<Int64Type>();
        assert_eq!(first.value(0), 1);
        assert!(first.is_null(1));
        assert_eq!(
            batches[1].column(0).as_primitive::<Int64Type>().value(1),
            i64::MAX
        );
        assert_eq!(d.rows(), 5);
    }

    #[test]
    fn a_stream_cut_inside_a_row_is_an_error() {
        // Given a stream that stops two bytes into a value
        let bytes = stream(&[Some(1)]);
        let mut d = decoder(10);
        d.feed(&bytes[..HEADER_LEN + 8]).unwrap();
        // Then finish says how much was left
        assert!(matches!(d.finish(), Err(DecodeError::Truncated(8))));
    }

    #[test]
    fn a_wrong_length_names_column_and_row() {
        // Given an int8 column whose second value has 4 bytes
        let mut bytes = stream(&[Some(1)]);
        bytes.truncate(bytes.len() - 2);
        bytes.put_i16(1);
        bytes.put_i32(4);
        bytes.put_i32(7);
        bytes.put_i16(-1);
        let mut d = decoder(10);
        let err = d.feed(&bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column \"n\" (index 0), row 2: bigint value has 4 bytes, expected 8"
        );
        assert_eq!(d.columns[0].len(), 1);
    }

    #[test]
    fn bad_signature_is_reported() {
        let mut d = decoder(10);
        assert!(matches!(
            d.feed(b"not a copy stream at all"),
            Err(DecodeError::BadSignature)
        ));
    }
}
