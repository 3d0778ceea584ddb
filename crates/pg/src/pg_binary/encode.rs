//! Arrow record batches -> binary COPY bytes.
//!
//! [`CopyEncoder::new`] matches each incoming Arrow field with its target
//! column's [`PgType`] once per chunk, choosing a value encoder and, where
//! the Arrow type differs (Int32 into `bigint`, say), a cast that fails
//! rather than loses a value. [`CopyEncoder::write_batch`] then writes rows
//! into a `BytesMut` that the sink hands to `COPY ... FROM STDIN`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    FixedSizeBinaryArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    IntervalMonthDayNanoArray, ListArray, RecordBatch, StringArray, Time64MicrosecondArray,
    TimestampMicrosecondArray,
};
use arrow::buffer::NullBuffer;
use arrow::compute::{can_cast_types, cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use arrow::util::display::FormatOptions;
use bytes::{BufMut, BytesMut};

use super::{numeric, PgType, PG_EPOCH_DAYS, PG_EPOCH_MICROS, SIGNATURE};

/// A value that could not be encoded, with where it was.
#[derive(Debug, thiserror::Error)]
#[error("column {column:?} (index {index}), row {row} of the batch: {reason}")]
pub struct EncodeError {
    pub column: String,
    pub index: usize,
    pub row: usize,
    pub reason: String,
}

/// Casts that fail rather than turn a value into NULL.
const CAST: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: FormatOptions::new(),
};

/// How one column's values are written.
#[derive(Debug, Clone, PartialEq)]
enum ValueEncoder {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    NumericDecimal,
    NumericText,
    Text,
    Jsonb,
    Bytea,
    Date,
    Time,
    Timestamp,
    Interval,
    Uuid,
    Array {
        element: Box<ValueEncoder>,
        element_oid: u32,
    },
}

/// One column's plan: the encoder and, if the batch's type differs from
/// what the encoder reads, the type to cast to first.
#[derive(Debug, Clone)]
struct ColumnPlan {
    name: String,
    encoder: ValueEncoder,
    cast_to: Option<DataType>,
}

/// Writes batches of one schema as binary COPY rows.
#[derive(Debug, Clone)]
pub struct CopyEncoder {
    columns: Vec<ColumnPlan>,
    /// Each column as the target gives it back ([`PgType::arrow_field`]).
    stored: arrow::datatypes::SchemaRef,
}

impl CopyEncoder {
    /// Plans each `(field, target type)` pair. Fails with the column name
    /// and both types when a field cannot be written to its column.
    pub fn new(pairs: &[(&Field, &PgType)]) -> Result<Self, String> {
        let columns = pairs
            .iter()
            .map(|(field, target)| {
                let (encoder, cast_to) = plan(field.data_type(), target).map_err(|why| {
                    format!(
                        "column {:?}: Arrow type {} cannot be written to a PostgreSQL {} column{}",
                        field.name(),
                        field.data_type(),
                        describe(target),
                        why.map(|w| format!(" ({w})")).unwrap_or_default()
                    )
                })?;
                Ok(ColumnPlan {
                    name: field.name().clone(),
                    encoder,
                    cast_to,
                })
            })
            .collect::<Result<_, String>>()?;
        let stored = Arc::new(arrow::datatypes::Schema::new(
            pairs
                .iter()
                .map(|(field, target)| target.arrow_field(field.name()))
                .collect::<Vec<_>>(),
        ));
        Ok(CopyEncoder { columns, stored })
    }

    /// The schema of [`CopyEncoder::stored`]: the target's columns as
    /// [`super::decode::CopyDecoder`] reads them back.
    pub fn stored_schema(&self) -> arrow::datatypes::SchemaRef {
        self.stored.clone()
    }

    /// `batch` as the target stores it and gives it back: each column cast
    /// as [`CopyEncoder::write_batch`] casts it, then carried in the Arrow
    /// type the target's column decodes to (a numeric's scale, a time's
    /// zone). `etl verify` hashes this beside the rows read back, so the
    /// comparison is of what the target holds, not of how it got there.
    pub fn stored(&self, batch: &RecordBatch) -> Result<RecordBatch, EncodeError> {
        self.stored_from(self.cast(batch)?)
    }

    /// [`CopyEncoder::write_batch`], returning the batch as
    /// [`CopyEncoder::stored`] gives it: the columns are cast once for both.
    pub fn write_batch_stored(
        &self,
        batch: &RecordBatch,
        out: &mut BytesMut,
    ) -> Result<RecordBatch, EncodeError> {
        let casted = self.cast(batch)?;
        self.write_casted(&casted, batch.num_rows(), out)?;
        self.stored_from(casted)
    }

    /// Each column cast to the type its value encoder reads.
    fn cast(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>, EncodeError> {
        let mut casted: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (index, (plan, array)) in self.columns.iter().zip(batch.columns()).enumerate() {
            casted.push(match &plan.cast_to {
                Some(t) => cast_with_options(array, t, &CAST).map_err(|e| EncodeError {
                    column: plan.name.clone(),
                    index,
                    row: 0,
                    reason: format!("cast to {t} failed: {e}"),
                })?,
                None => array.clone(),
            });
        }
        Ok(casted)
    }

    /// Cast columns ([`CopyEncoder::cast`]) in the Arrow types the target's
    /// columns decode to.
    fn stored_from(&self, casted: Vec<ArrayRef>) -> Result<RecordBatch, EncodeError> {
        let mut columns = Vec::with_capacity(casted.len());
        for (index, ((plan, array), field)) in self
            .columns
            .iter()
            .zip(casted)
            .zip(self.stored.fields())
            .enumerate()
        {
            if array.data_type() == field.data_type() {
                columns.push(array);
                continue;
            }
            columns.push(match (array.data_type(), field.data_type()) {
                // The encoder writes a time's microseconds as they are,
                // whatever zone the Arrow type names.
                (DataType::Timestamp(TimeUnit::Microsecond, _), DataType::Timestamp(_, zone)) => {
                    Arc::new(
                        array
                            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                            .clone()
                            .with_timezone_opt(zone.clone()),
                    )
                }
                _ => cast_with_options(&array, field.data_type(), &CAST).map_err(|e| {
                    EncodeError {
                        column: plan.name.clone(),
                        index,
                        row: 0,
                        reason: format!("cast to {} failed: {e}", field.data_type()),
                    }
                })?,
            });
        }
        RecordBatch::try_new(self.stored.clone(), columns).map_err(|e| EncodeError {
            column: String::new(),
            index: 0,
            row: 0,
            reason: e.to_string(),
        })
    }

    /// The 19-byte header: signature, flags, no extension.
    pub fn write_header(out: &mut BytesMut) {
        out.put_slice(SIGNATURE);
        out.put_i32(0);
        out.put_i32(0);
    }

    /// The trailer that ends the stream.
    pub fn write_footer(out: &mut BytesMut) {
        out.put_i16(-1);
    }

    /// Appends every row of `batch`; its columns are in planning order.
    pub fn write_batch(&self, batch: &RecordBatch, out: &mut BytesMut) -> Result<(), EncodeError> {
        let casted = self.cast(batch)?;
        self.write_casted(&casted, batch.num_rows(), out)
    }

    /// Appends `rows` rows of columns cast by [`CopyEncoder::cast`].
    fn write_casted(
        &self,
        casted: &[ArrayRef],
        rows: usize,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let bound: Vec<(Option<&NullBuffer>, Bound<'_>)> = self
            .columns
            .iter()
            .zip(casted)
            .map(|(plan, array)| (array.nulls(), Bound::new(&plan.encoder, array.as_ref())))
            .collect();
        let ncols = bound.len() as i16;
        // Every value's bytes plus its 4-byte length, and 2 bytes per row:
        // reserved once, so the buffer does not regrow (and copy) mid-batch.
        let data: usize = casted.iter().map(|a| a.get_buffer_memory_size()).sum();
        out.reserve(data + rows * (2 + 4 * bound.len()));
        for row in 0..rows {
            out.put_i16(ncols);
            for (index, (nulls, b)) in bound.iter().enumerate() {
                if nulls.is_some_and(|n| n.is_null(row)) {
                    out.put_i32(-1);
                    continue;
                }
                b.write_value(row, out).map_err(|reason| EncodeError {
                    column: self.columns[index].name.clone(),
                    index,
                    row,
                    reason,
                })?;
            }
        }
        Ok(())
    }
}

fn describe(t: &PgType) -> String {
    match t {
        PgType::Array { element, .. } => format!("{}[]", describe(element)),
        PgType::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_int(t: &DataType) -> bool {
    t.is_integer()
}

/// Picks the encoder for writing Arrow `source` into PostgreSQL `target`.
fn plan(
    source: &DataType,
    target: &PgType,
) -> Result<(ValueEncoder, Option<DataType>), Option<String>> {
    use DataType as D;
    let want: DataType = target.arrow_type();
    let cast = |ok: bool, encoder: ValueEncoder, to: DataType| {
        if !ok {
            return Err(None);
        }
        Ok((encoder, if *source == to { None } else { Some(to) }))
    };
    match target {
        PgType::Bool => cast(*source == D::Boolean, ValueEncoder::Bool, want),
        PgType::Int2 => cast(is_int(source), ValueEncoder::Int2, want),
        PgType::Int4 => cast(is_int(source), ValueEncoder::Int4, want),
        PgType::Int8 => cast(is_int(source), ValueEncoder::Int8, want),
        PgType::Float4 => cast(
            matches!(source, D::Float16 | D::Float32),
            ValueEncoder::Float4,
            want,
        ),
        PgType::Float8 => cast(
            source.is_floating() || is_int(source),
            ValueEncoder::Float8,
            want,
        ),
        PgType::Decimal { .. } | PgType::NumericText => match source {
            D::Decimal128(_, _) => Ok((ValueEncoder::NumericDecimal, None)),
            s if is_text(s) || is_int(s) || matches!(s, D::Decimal256(_, _)) => {
                cast(true, ValueEncoder::NumericText, D::Utf8)
            }
            _ => Err(None),
        },
        PgType::Text => cast(is_text(source), ValueEncoder::Text, D::Utf8),
        PgType::Jsonb => cast(is_text(source), ValueEncoder::Jsonb, D::Utf8),
        PgType::Bytea => cast(
            matches!(
                source,
                D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_)
            ),
            ValueEncoder::Bytea,
            D::Binary,
        ),
        PgType::Date => cast(
            matches!(source, D::Date32 | D::Date64),
            ValueEncoder::Date,
            want,
        ),
        PgType::Time => cast(
            matches!(source, D::Time32(_) | D::Time64(_)),
            ValueEncoder::Time,
            want,
        ),
        PgType::Timestamp | PgType::Timestamptz => match source {
            D::Timestamp(_, tz) => cast(
                true,
                ValueEncoder::Timestamp,
                D::Timestamp(TimeUnit::Microsecond, tz.clone()),
            ),
            _ => Err(None),
        },
        PgType::Interval => {
            let to = D::Interval(IntervalUnit::MonthDayNano);
            let ok = matches!(source, D::Interval(_))
                || can_cast_types(source, &to) && matches!(source, D::Duration(_));
            cast(ok, ValueEncoder::Interval, to)
        }
        PgType::Uuid => cast(*source == D::FixedSizeBinary(16), ValueEncoder::Uuid, want),
        PgType::Array {
            element,
            element_oid,
        } => plan_array(source, element, *element_oid),
    }
}

/// The encoder of a PostgreSQL array of `element` from an Arrow list
/// (`source`), its items encoded as [`plan`] picks for them, and the list
/// type to cast to when it is another.
fn plan_array(
    source: &DataType,
    element: &PgType,
    element_oid: u32,
) -> Result<(ValueEncoder, Option<DataType>), Option<String>> {
    use DataType as D;
    let source_item = match source {
        D::List(f) | D::LargeList(f) | D::ListView(f) | D::LargeListView(f) => f,
        _ => return Err(None),
    };
    let (inner, inner_cast) = plan(source_item.data_type(), element).map_err(|w| {
        Some(w.unwrap_or_else(|| format!("element type {}", source_item.data_type())))
    })?;
    let item_type = inner_cast.unwrap_or_else(|| source_item.data_type().clone());
    let to = D::List(Arc::new(Field::new("item", item_type, true)));
    let encoder = ValueEncoder::Array {
        element: Box::new(inner),
        element_oid,
    };
    if matches!(source, D::List(_)) && to == *source {
        Ok((encoder, None))
    } else {
        Ok((encoder, Some(to)))
    }
}

/// A column's array, downcast once per batch.
enum Bound<'a> {
    Bool(&'a BooleanArray),
    Int2(&'a Int16Array),
    Int4(&'a Int32Array),
    Int8(&'a Int64Array),
    Float4(&'a Float32Array),
    Float8(&'a Float64Array),
    NumericDecimal(&'a Decimal128Array, i8),
    NumericText(&'a StringArray),
    Text(&'a StringArray),
    Jsonb(&'a StringArray),
    Bytea(&'a BinaryArray),
    Date(&'a Date32Array),
    Time(&'a Time64MicrosecondArray),
    Timestamp(&'a TimestampMicrosecondArray),
    Interval(&'a IntervalMonthDayNanoArray),
    Uuid(&'a FixedSizeBinaryArray),
    Array {
        list: &'a ListArray,
        element: Box<Bound<'a>>,
        element_oid: u32,
    },
}

impl<'a> Bound<'a> {
    /// `array` has the type the planner cast it to, so the downcasts hold.
    fn new(encoder: &ValueEncoder, array: &'a dyn Array) -> Bound<'a> {
        match encoder {
            ValueEncoder::Bool => Bound::Bool(array.as_boolean()),
            ValueEncoder::Int2 => Bound::Int2(array.as_primitive()),
            ValueEncoder::Int4 => Bound::Int4(array.as_primitive()),
            ValueEncoder::Int8 => Bound::Int8(array.as_primitive()),
            ValueEncoder::Float4 => Bound::Float4(array.as_primitive()),
            ValueEncoder::Float8 => Bound::Float8(array.as_primitive()),
            ValueEncoder::NumericDecimal => {
                let a: &Decimal128Array = array.as_primitive();
                Bound::NumericDecimal(a, a.scale())
            }
            ValueEncoder::NumericText => Bound::NumericText(array.as_string()),
            ValueEncoder::Text => Bound::Text(array.as_string()),
            ValueEncoder::Jsonb => Bound::Jsonb(array.as_string()),
            ValueEncoder::Bytea => Bound::Bytea(array.as_binary()),
            ValueEncoder::Date => Bound::Date(array.as_primitive()),
            ValueEncoder::Time => Bound::Time(array.as_primitive()),
            ValueEncoder::Timestamp => Bound::Timestamp(array.as_primitive()),
            ValueEncoder::Interval => Bound::Interval(array.as_primitive()),
            ValueEncoder::Uuid => Bound::Uuid(array.as_fixed_size_binary()),
            ValueEncoder::Array {
                element,
                element_oid,
            } => {
                let list = array.as_list::<i32>();
                Bound::Array {
                    list,
                    element: Box::new(Bound::new(element, list.values().as_ref())),
                    element_oid: *element_oid,
                }
            }
        }
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            Bound::Bool(a) => a.is_null(row),
            Bound::Int2(a) => a.is_null(row),
            Bound::Int4(a) => a.is_null(row),
            Bound::Int8(a) => a.is_null(row),
            Bound::Float4(a) => a.is_null(row),
            Bound::Float8(a) => a.is_null(row),
            Bound::NumericDecimal(a, _) => a.is_null(row),
            Bound::NumericText(a) | Bound::Text(a) | Bound::Jsonb(a) => a.is_null(row),
            Bound::Bytea(a) => a.is_null(row),
            Bound::Date(a) => a.is_null(row),
            Bound::Time(a) => a.is_null(row),
            Bound::Timestamp(a) => a.is_null(row),
            Bound::Interval(a) => a.is_null(row),
            Bound::Uuid(a) => a.is_null(row),
            Bound::Array { list, .. } => list.is_null(row),
        }
    }

    /// Writes a non-NULL value's length prefix and bytes.
    fn write_value(&self, row: usize, out: &mut BytesMut) -> Result<(), String> {
        match self {
            Bound::Bool(a) => {
                out.put_i32(1);
                out.put_u8(a.value(row) as u8);
            }
            Bound::Int2(a) => {
                out.put_i32(2);
                out.put_i16(a.value(row));
            }
            Bound::Int4(a) => {
                out.put_i32(4);
                out.put_i32(a.value(row));
            }
            Bound::Int8(a) => {
                out.put_i32(8);
                out.put_i64(a.value(row));
            }
            Bound::Float4(a) => {
                out.put_i32(4);
                out.put_f32(a.value(row));
            }
            Bound::Float8(a) => {
                out.put_i32(8);
                out.put_f64(a.value(row));
            }
            Bound::NumericDecimal(a, scale) => numeric::write_i128(a.value(row), *scale, out),
            Bound::NumericText(a) => {
                numeric::write_text(a.value(row), out).map_err(|e| e.to_string())?
            }
            Bound::Text(a) => write_text(a.value(row).as_bytes(), out)?,
            Bound::Jsonb(a) => write_jsonb(a.value(row).as_bytes(), out)?,
            Bound::Bytea(a) => write_bytes(a.value(row), out)?,
            Bound::Date(a) => write_date(a.value(row), out)?,
            Bound::Time(a) => {
                out.put_i32(8);
                out.put_i64(a.value(row));
            }
            Bound::Timestamp(a) => write_timestamp(a.value(row), out)?,
            Bound::Interval(a) => {
                let v = a.value(row);
                out.put_i32(16);
                // PostgreSQL keeps microseconds; sub-microsecond parts are truncated.
                out.put_i64(v.nanoseconds / 1000);
                out.put_i32(v.days);
                out.put_i32(v.months);
            }
            Bound::Uuid(a) => {
                out.put_i32(16);
                out.put_slice(a.value(row));
            }
            Bound::Array {
                list,
                element,
                element_oid,
            } => {
                let offsets = list.value_offsets();
                let range = offsets[row] as usize..offsets[row + 1] as usize;
                element.write_array(range, *element_oid, out)?
            }
        }
        Ok(())
    }

    /// One array value of these elements (`range` of them): PostgreSQL's
    /// one-dimensional array, its length patched in once written.
    fn write_array(
        &self,
        range: std::ops::Range<usize>,
        element_oid: u32,
        out: &mut BytesMut,
    ) -> Result<(), String> {
        let at = out.len();
        out.put_i32(0); // length, patched below
        if range.is_empty() {
            out.put_i32(0);
            out.put_i32(0);
            out.put_u32(element_oid);
        } else {
            let has_nulls = range.clone().any(|i| self.is_null(i));
            out.put_i32(1);
            out.put_i32(has_nulls as i32);
            out.put_u32(element_oid);
            out.put_i32(range.len() as i32);
            out.put_i32(1);
            for i in range {
                if self.is_null(i) {
                    out.put_i32(-1);
                    continue;
                }
                self.write_value(i, out)
                    .map_err(|e| format!("array element {}: {e}", i + 1))?;
            }
        }
        let len = out.len() - at - 4;
        let len = i32::try_from(len).map_err(|_| "array value is over 2 GiB")?;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

/// A date: days since PostgreSQL's epoch (2000-01-01); infinities kept.
#[inline]
fn write_date(d: i32, out: &mut BytesMut) -> Result<(), String> {
    let pg = match d {
        i32::MAX | i32::MIN => d,
        d => d
            .checked_sub(PG_EPOCH_DAYS)
            .ok_or("date is out of PostgreSQL's range")?,
    };
    out.put_i32(4);
    out.put_i32(pg);
    Ok(())
}

/// A timestamp: microseconds since PostgreSQL's epoch; infinities kept.
#[inline]
fn write_timestamp(t: i64, out: &mut BytesMut) -> Result<(), String> {
    let pg = match t {
        i64::MAX | i64::MIN => t,
        t => t
            .checked_sub(PG_EPOCH_MICROS)
            .ok_or("timestamp is out of PostgreSQL's range")?,
    };
    out.put_i32(8);
    out.put_i64(pg);
    Ok(())
}

/// jsonb: its version byte (1), then the text.
fn write_jsonb(v: &[u8], out: &mut BytesMut) -> Result<(), String> {
    if v.contains(&0) {
        return Err(NUL_MESSAGE.into());
    }
    out.put_i32(v.len() as i32 + 1);
    out.put_u8(1);
    out.put_slice(v);
    Ok(())
}

const NUL_MESSAGE: &str = "text contains a NUL byte (0x00), which PostgreSQL text cannot store; strip it in `query` or load the column as bytea";

fn write_text(v: &[u8], out: &mut BytesMut) -> Result<(), String> {
    if v.contains(&0) {
        return Err(NUL_MESSAGE.into());
    }
    write_bytes(v, out)
}

fn write_bytes(v: &[u8], out: &mut BytesMut) -> Result<(), String> {
    let len =
        i32::try_from(v.len()).map_err(|_| "value is over 2 GiB, PostgreSQL's field limit")?;
    out.put_i32(len);
    out.put_slice(v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg_binary::decode::CopyDecoder;
    use arrow::array::{Int32Array, ListBuilder, StringBuilder};
    use arrow::datatypes::Schema;

    fn round_trip(batch: &RecordBatch, types: &[PgType]) -> RecordBatch {
        let fields: Vec<(&Field, &PgType)> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.as_ref())
            .zip(types)
            .collect();
        let encoder = CopyEncoder::new(&fields).unwrap();
        let mut out = BytesMut::new();
        CopyEncoder::write_header(&mut out);
        encoder.write_batch(batch, &mut out).unwrap();
        CopyEncoder::write_footer(&mut out);
        let schema = Arc::new(Schema::new(
            batch
                .schema()
                .fields()
                .iter()
                .zip(types)
                .map(|(f, t)| t.arrow_field(f.name()))
                .collect::<Vec<_>>(),
        ));
        let mut d = CopyDecoder::new(schema, types, 1024, usize::MAX);
        d.feed(&out).unwrap();
        d.finish().unwrap().unwrap()
    }

    #[test]
    fn int32_widens_into_bigint() {
        // Given an Int32 column written to an int8 column
        let batch = RecordBatch::try_from_iter([(
            "n",
            Arc::new(Int32Array::from(vec![Some(1), None, Some(i32::MIN)])) as ArrayRef,
        )])
        .unwrap();
        // When it is encoded and decoded as int8
        let back = round_trip(&batch, &[PgType::Int8]);
        // Then values survive, widened
        let col: &Int64Array = back.column(0).as_primitive();
        assert_eq!(
            col.iter().collect::<Vec<_>>(),
            vec![Some(1), None, Some(i32::MIN as i64)]
        );
    }

    #[test]
    fn text_arrays_keep_nulls_and_empties() {
        // Given a list column with a NULL list, an empty list and a list holding a NULL
        let mut b = ListBuilder::new(StringBuilder::new());
        b.append_null();
        b.append(true);
        b.values().append_value("a'b\"c");
        b.values().append_null();
        b.append(true);
        let batch =
            RecordBatch::try_from_iter([("tags", Arc::new(b.finish()) as ArrayRef)]).unwrap();
        let t = PgType::Array {
            element: Box::new(PgType::Text),
            element_oid: crate::pg_binary::oid::TEXT,
        };
        // When round-tripped
        let back = round_trip(&batch, &[t]);
        // Then the three shapes survive
        let list = back.column(0).as_list::<i32>();
        assert!(list.is_null(0));
        assert_eq!(list.value(1).len(), 0);
        let inner = list.value(2);
        let inner = inner.as_string::<i32>();
        assert_eq!(inner.value(0), "a'b\"c");
        assert!(inner.is_null(1));
    }

    #[test]
    fn nul_bytes_in_text_name_the_column_and_row() {
        let batch = RecordBatch::try_from_iter([(
            "note",
            Arc::new(StringArray::from(vec!["ok", "bad\0"])) as ArrayRef,
        )])
        .unwrap();
        let field = batch.schema_ref().field(0).clone();
        let encoder = CopyEncoder::new(&[(&field, &PgType::Text)]).unwrap();
        let err = encoder
            .write_batch(&batch, &mut BytesMut::new())
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "column \"note\" (index 0), row 1 of the batch: text contains a NUL byte"
            ),
            "{err}"
        );
    }

    #[test]
    fn mismatched_types_are_refused_when_planning() {
        let field = Field::new("flag", DataType::Boolean, true);
        let err = CopyEncoder::new(&[(&field, &PgType::Int8)]).unwrap_err();
        assert_eq!(
            err,
            "column \"flag\": Arrow type Boolean cannot be written to a PostgreSQL int8 column"
        );
    }

    #[test]
    fn narrowing_that_overflows_fails_instead_of_nulling() {
        let batch = RecordBatch::try_from_iter([(
            "n",
            Arc::new(Int64Array::from(vec![1i64, 1 << 40])) as ArrayRef,
        )])
        .unwrap();
        let field = batch.schema_ref().field(0).clone();
        let encoder = CopyEncoder::new(&[(&field, &PgType::Int4)]).unwrap();
        let err = encoder
            .write_batch(&batch, &mut BytesMut::new())
            .unwrap_err();
        assert!(err.reason.contains("cast to Int32 failed"), "{err}");
    }
}
