//! One fetched block of rows (columnar buffers bound to row arrays) as
//! Arrow arrays: a function per kind of column, each naming the column and
//! the row of a value it cannot take, and counting what it replaces,
//! truncates or leaves out into the reader's tallies.

use arrow::array::{ArrowPrimitiveType, PrimitiveBuilder};
use arrow::datatypes::{Float32Type, Float64Type, Int16Type, Int32Type, Int64Type};
use odbc_api::buffers::AnyColumnBufferSlice;
use odbc_api::Pod;

use super::*;

/// A column of the block: its name, where the block starts (rows read
/// before it) and how many rows it has.
#[derive(Clone, Copy)]
struct At<'a> {
    name: &'a str,
    first_row: u64,
    rows: usize,
}

impl At<'_> {
    fn bad(&self, what: &str) -> EtlError {
        EtlError::Config(format!("column {:?}: {what}", self.name))
    }

    /// The 1-based number of the block's row `r` in the result.
    fn row(&self, r: usize) -> u64 {
        self.first_row + r as u64 + 1
    }
}

impl OdbcReader {
    /// The next block of rows, `None` at the end.
    pub(super) fn next_block(&mut self) -> Result<Option<RecordBatch>, EtlError> {
        let Fetch::Block(cursor) = &mut self.fetch else {
            return Err(EtlError::Bug(
                "a block of rows asked of a row-by-row fetch".into(),
            ));
        };
        let Some(buffer) = cursor.fetch().map_err(odbc_error("fetching rows"))? else {
            return Ok(None);
        };
        let rows = buffer.num_rows();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (i, col) in self.columns.iter().enumerate() {
            let at = At {
                name: self.schema.field(i).name(),
                first_row: self.rows_read,
                rows,
            };
            let slice = buffer.column(i);
            let (buffer, adaptive) = (self.value_bytes[i], self.adaptive[i]);
            arrays.push(match col {
                Col::Bool => bools(slice, at)?,
                Col::I16 => narrow::<Int16Type>(slice, at, "SMALLINT")?,
                Col::I32 => narrow::<Int32Type>(slice, at, "INTEGER")?,
                Col::I64 => same::<Int64Type>(slice, at, "BIGINT")?,
                Col::F32 => same::<Float32Type>(slice, at, "REAL")?,
                Col::F64 => same::<Float64Type>(slice, at, "DOUBLE")?,
                Col::Decimal(p, s) => decimal(slice, at, *p, *s)?,
                Col::Text => {
                    let text = slice.as_text().ok_or_else(|| at.bad("not a text buffer"))?;
                    fits(
                        text.has_truncated_values(),
                        at,
                        adaptive,
                        buffer,
                        self.options.max_text_bytes,
                    )?;
                    decode_texts(
                        &self.options,
                        &mut self.replaced,
                        &mut self.truncated,
                        at.name,
                        at.first_row,
                        text.iter(),
                    )?
                }
                Col::Binary => {
                    let bin = slice
                        .as_binary()
                        .ok_or_else(|| at.bad("not a binary buffer"))?;
                    fits(
                        bin.has_truncated_values(),
                        at,
                        adaptive,
                        buffer,
                        self.options.max_text_bytes,
                    )?;
                    capped_binaries(
                        &self.options,
                        &mut self.truncated,
                        at.name,
                        at.first_row,
                        bin.iter(),
                    )?
                }
                Col::Uuid | Col::TimeText | Col::TimestampTzText => {
                    let text = slice.as_text().ok_or_else(|| at.bad("not a text buffer"))?;
                    parse_texts(
                        *col,
                        &mut self.invalid_dates,
                        at.name,
                        at.first_row,
                        text.iter(),
                    )?
                }
                Col::Date => dates(slice, at, &mut self.invalid_dates)?,
                Col::Time => times(slice, at)?,
                Col::Timestamp => timestamps(slice, at, &mut self.invalid_dates)?,
            });
        }
        self.rows_read += rows as u64;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map(Some)
            .map_err(|e| EtlError::Bug(format!("building an ODBC batch: {e}")))
    }
}

/// Whether the block's text or binary values fit their buffer: a value
/// longer than an adaptive buffer grows it (an error asking for a read
/// again); one longer than a buffer sized from the declared length means
/// the driver declared the column too short.
fn fits(
    truncated: Option<odbc_api::buffers::Indicator>,
    at: At,
    adaptive: bool,
    buffer: usize,
    max_text_bytes: usize,
) -> Result<(), EtlError> {
    let Some(needed) = truncated else {
        return Ok(());
    };
    grow(adaptive, buffer, max_text_bytes, at.name, needed)?;
    match buffer <= max_text_bytes {
        true => Err(at.bad(&declared_too_short(at.first_row, at.rows, buffer))),
        false => Ok(()),
    }
}

fn bools(slice: AnyColumnBufferSlice, at: At) -> Result<ArrayRef, EtlError> {
    let mut b = BooleanBuilder::with_capacity(at.rows);
    for v in slice
        .as_nullable_slice::<odbc_api::Bit>()
        .ok_or_else(|| at.bad("not a BIT buffer"))?
    {
        b.append_option(v.map(|v| v.as_bool()));
    }
    Ok(Arc::new(b.finish()))
}

/// An integer column declared narrower than BIGINT, fetched as BIGINT:
/// each value must fit the declared type.
fn narrow<T>(slice: AnyColumnBufferSlice, at: At, declared: &str) -> Result<ArrayRef, EtlError>
where
    T: ArrowPrimitiveType,
    T::Native: TryFrom<i64>,
{
    let values = slice
        .as_nullable_slice::<i64>()
        .ok_or_else(|| at.bad("not an integer buffer"))?;
    let mut b = PrimitiveBuilder::<T>::with_capacity(at.rows);
    for (r, v) in values.enumerate() {
        let value = v.map(|&v| {
            T::Native::try_from(v).map_err(|_| {
                at.bad(&format!(
                    "row {} holds {v}, which does not fit the driver's declared type {declared}; cast the column to BIGINT in the query",
                    at.row(r)
                ))
            })
        });
        b.append_option(value.transpose()?);
    }
    Ok(Arc::new(b.finish()))
}

/// A column fetched as the Arrow type's own values (BIGINT, REAL, DOUBLE).
fn same<T>(slice: AnyColumnBufferSlice, at: At, declared: &str) -> Result<ArrayRef, EtlError>
where
    T: ArrowPrimitiveType,
    T::Native: Pod,
{
    let mut b = PrimitiveBuilder::<T>::with_capacity(at.rows);
    for v in slice
        .as_nullable_slice::<T::Native>()
        .ok_or_else(|| at.bad(&format!("not a {declared} buffer")))?
    {
        b.append_option(v.copied());
    }
    Ok(Arc::new(b.finish()))
}

/// DECIMAL and NUMERIC, fetched as text: each value's scale checked, then
/// cast to Decimal128(p, s).
fn decimal(slice: AnyColumnBufferSlice, at: At, p: u8, s: i8) -> Result<ArrayRef, EtlError> {
    let text = slice.as_text().ok_or_else(|| at.bad("not a text buffer"))?;
    let mut b = StringBuilder::with_capacity(at.rows, at.rows * 8);
    for v in text.iter() {
        b.append_option(v.map(|v| String::from_utf8_lossy(v).trim().to_string()));
    }
    let strings = b.finish();
    check_scale(&strings, at.name, s, at.first_row)?;
    arrow::compute::cast(&strings, &DataType::Decimal128(p, s)).map_err(|e| {
        at.bad(&format!(
            "rows {} to {}: {e}",
            at.first_row,
            at.first_row + at.rows as u64
        ))
    })
}

/// DATE: an invalid date (a driver's 0000-00-00) is NULL, counted.
fn dates(
    slice: AnyColumnBufferSlice,
    at: At,
    invalid: &mut BTreeMap<String, (u64, u64)>,
) -> Result<ArrayRef, EtlError> {
    let mut b = Date32Builder::with_capacity(at.rows);
    let values = slice
        .as_nullable_slice::<odbc_api::sys::Date>()
        .ok_or_else(|| at.bad("not a DATE buffer"))?;
    for (r, v) in values.enumerate() {
        let Some(d) = v else {
            b.append_null();
            continue;
        };
        match chrono::NaiveDate::from_ymd_opt(d.year as i32, d.month as u32, d.day as u32) {
            Some(day) => b.append_value((day - chrono::NaiveDate::default()).num_days() as i32),
            None => {
                let text = format!("{:04}-{:02}-{:02}", d.year, d.month, d.day);
                invalid_date(invalid, at.name, at.row(r), &text);
                b.append_null();
            }
        }
    }
    Ok(Arc::new(b.finish()))
}

fn times(slice: AnyColumnBufferSlice, at: At) -> Result<ArrayRef, EtlError> {
    let mut b = Time64MicrosecondBuilder::with_capacity(at.rows);
    for v in slice
        .as_nullable_slice::<odbc_api::sys::Time>()
        .ok_or_else(|| at.bad("not a TIME buffer"))?
    {
        b.append_option(
            v.map(|t| (t.hour as i64 * 3600 + t.minute as i64 * 60 + t.second as i64) * 1_000_000),
        );
    }
    Ok(Arc::new(b.finish()))
}

/// TIMESTAMP, fractions rounded to the microsecond; an invalid one is
/// NULL, counted.
fn timestamps(
    slice: AnyColumnBufferSlice,
    at: At,
    invalid: &mut BTreeMap<String, (u64, u64)>,
) -> Result<ArrayRef, EtlError> {
    let mut b = TimestampMicrosecondBuilder::with_capacity(at.rows);
    let values = slice
        .as_nullable_slice::<odbc_api::sys::Timestamp>()
        .ok_or_else(|| at.bad("not a TIMESTAMP buffer"))?;
    for (r, v) in values.enumerate() {
        let Some(t) = v else {
            b.append_null();
            continue;
        };
        let valid = chrono::NaiveDate::from_ymd_opt(t.year as i32, t.month as u32, t.day as u32)
            .and_then(|d| d.and_hms_opt(t.hour as u32, t.minute as u32, t.second as u32))
            .filter(|_| t.fraction < 1_000_000_000);
        match valid {
            Some(time) => {
                b.append_value(time.and_utc().timestamp_micros() + round_to_micros(t.fraction))
            }
            None => {
                let text = format!(
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:09}",
                    t.year, t.month, t.day, t.hour, t.minute, t.second, t.fraction
                );
                invalid_date(invalid, at.name, at.row(r), &text);
                b.append_null();
            }
        }
    }
    Ok(Arc::new(b.finish()))
}
