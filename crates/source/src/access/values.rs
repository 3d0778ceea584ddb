//! Access values as Arrow: each jetdb `Value` into its column's builder,
//! exactly (dates from the stored day count to the microsecond, Currency
//! and Decimal from their digits, Single as real).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use encoding_rs::Encoding;
use jetdb::{ColumnDef, ColumnType, PageReader, RowPosition, TableDef, TableRows, Value};

use crate::odbc::Cast;
use crate::SourceCounts;
use etl_pg::error::EtlError;

/// Days from 1899-12-30 (Access's day 0) to 1970-01-01.
const EPOCH_DAYS: i64 = 25_569;
const DAY_MICROS: i64 = 86_400_000_000;

/// The Arrow type of a column of Access type `t`; `None` for types etl
/// cannot read.
pub fn arrow_type(t: ColumnType, c: &ColumnDef) -> Option<DataType> {
    Some(match t {
        ColumnType::Boolean => DataType::Boolean,
        // Byte is 0 to 255: a smallint holds it.
        ColumnType::Byte | ColumnType::Int => DataType::Int16,
        ColumnType::Long => DataType::Int32,
        ColumnType::BigInt => DataType::Int64,
        ColumnType::Money => DataType::Decimal128(19, 4),
        ColumnType::Float => DataType::Float32,
        ColumnType::Double => DataType::Float64,
        ColumnType::Numeric => DataType::Decimal128(c.precision.clamp(1, 38), c.scale as i8),
        ColumnType::Timestamp | ColumnType::DateTimeExtended => {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        }
        ColumnType::Text | ColumnType::Memo | ColumnType::Guid => DataType::Utf8,
        ColumnType::Binary | ColumnType::Ole => DataType::Binary,
        // The number that links a row to its values in the hidden tables.
        ColumnType::ComplexType => DataType::Int32,
        _ => return None,
    })
}

/// Access's name of a column's type, as its table designer shows it.
/// `size` is the size Access shows (characters for text).
pub fn access_type_name(t: ColumnType, c: &ColumnDef, size: u16) -> String {
    match t {
        ColumnType::Boolean => "Yes/No".into(),
        ColumnType::Byte => "Byte".into(),
        ColumnType::Int => "Integer".into(),
        ColumnType::Long if c.is_auto_number() => "AutoNumber".into(),
        ColumnType::Long => "Long Integer".into(),
        ColumnType::BigInt => "Large Number".into(),
        ColumnType::Money => "Currency".into(),
        ColumnType::Float => "Single".into(),
        ColumnType::Double => "Double".into(),
        ColumnType::Numeric => format!("Decimal({},{})", c.precision, c.scale),
        ColumnType::Timestamp => "Date/Time".into(),
        ColumnType::DateTimeExtended => "Date/Time Extended".into(),
        ColumnType::Text => format!("Text({size})"),
        ColumnType::Memo => "Long Text".into(),
        ColumnType::Guid => "Replication ID".into(),
        ColumnType::Binary => format!("Binary({size})"),
        ColumnType::Ole => "OLE Object".into(),
        ColumnType::ComplexType => "Complex (multi-value or attachment)".into(),
        other => format!("unknown type 0x{:02x}", other.to_byte()),
    }
}

/// An OLE date (days since 1899-12-30, the fraction the time of day; for
/// days before it the fraction counts forward from the day's midnight, as
/// Access stores them) as µs since 1970.
///
/// A double holds a time of day to about 1 µs today and 60 µs in year
/// 9999, so the time is the coarsest of whole seconds, milliseconds or
/// microseconds that gives back the very double stored (as the shortest
/// digits that read back are how a float is printed): 23:59:59 stays
/// 23:59:59, where plain rounding would add the double's error.
pub fn ole_date_micros(days: f64) -> Option<i64> {
    if !days.is_finite() || days.abs() > 3_000_000.0 {
        return None;
    }
    let whole = days.trunc();
    let fraction = (days - whole).abs();
    let exact = fraction * DAY_MICROS as f64;
    let back = |micros: i64| {
        let f = micros as f64 / DAY_MICROS as f64;
        if days < 0.0 {
            whole - f
        } else {
            whole + f
        }
    };
    let day_micros = [1_000_000i64, 1_000, 1]
        .iter()
        .map(|unit| (exact / *unit as f64).round() as i64 * unit)
        .find(|m| back(*m) == days)
        .unwrap_or_else(|| exact.round() as i64);
    Some((whole as i64 - EPOCH_DAYS) * DAY_MICROS + day_micros)
}

/// `YYYY-MM-DD[ hh:mm:ss[.fffffff]]` (Date/Time Extended) as µs since
/// 1970, 100 ns units rounded to the microsecond.
pub fn extended_micros(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(' ').unwrap_or((s, "00:00:00"));
    let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let time = chrono::NaiveTime::parse_from_str(hms, "%H:%M:%S").ok()?;
    let mut ticks: i64 = 0;
    for (i, c) in fraction.chars().take(7).enumerate() {
        ticks += i64::from(c.to_digit(10)?) * 10i64.pow(6 - i as u32);
    }
    let micros = (ticks + 5) / 10;
    Some(date.and_time(time).and_utc().timestamp_micros() + micros)
}

/// A fixed-point string (`-123.4500`) as the integer of scale `scale`;
/// more digits than the scale round half away from zero.
pub fn decimal(s: &str, scale: i8) -> Option<i128> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) || int.len() + frac.len() == 0 {
        return None;
    }
    let scale = scale.max(0) as usize;
    let mut digits: String = int.to_string();
    let kept: String = frac
        .chars()
        .chain(std::iter::repeat('0'))
        .take(scale)
        .collect();
    digits.push_str(&kept);
    let mut v: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    if frac.len() > scale && frac.as_bytes()[scale] >= b'5' {
        v += 1;
    }
    Some(if neg { -v } else { v })
}

/// Access 97 text decoded again in `source.encoding`: jetdb decodes it in
/// the header's code page (Latin-1 where it does not know it), which both
/// map back to the bytes stored.
#[derive(Debug, Clone, Copy)]
pub struct Recode {
    from: Option<&'static Encoding>,
    to: &'static Encoding,
    replace: bool,
}

impl Recode {
    /// `None` unless the file is Access 97 and `source.encoding` is set.
    pub fn new(reader: &PageReader, o: &super::ReadOptions) -> Option<Recode> {
        let code_page = reader.text_encoding().jet3_code_page()?;
        Some(Recode {
            from: codepage::to_encoding(code_page),
            to: o.encoding?,
            replace: o.replace_invalid,
        })
    }

    /// The bytes the file stores for text jetdb decoded as `s`.
    pub fn bytes(&self, s: &str) -> Vec<u8> {
        match self.from {
            Some(e) => e.encode(s).0.into_owned(),
            None => s.chars().map(|c| c as u32 as u8).collect(),
        }
    }

    /// `s` decoded in `source.encoding`; bytes not valid in it are an
    /// error, or U+FFFD counted in `replaced`.
    pub fn text(&self, s: &str, replaced: &mut u64) -> Result<String, String> {
        let bytes = self.bytes(s);
        let (out, had_errors) = self.to.decode_without_bom_handling(&bytes);
        if had_errors {
            if !self.replace {
                let bad: Vec<String> = bytes
                    .iter()
                    .filter(|b| **b >= 0x80)
                    .take(8)
                    .map(|b| format!("{b:02x}"))
                    .collect();
                return Err(format!(
                    "bytes that are not valid {} (among {}); set source.encoding to the file's code page, or on_invalid_text = \"replace\" to load them as U+FFFD",
                    self.to.name(),
                    bad.join(" ")
                ));
            }
            *replaced += out.matches('\u{FFFD}').count() as u64;
        }
        Ok(out.into_owned())
    }
}

/// A value read as `[source.casts]` says: text, or bytes (text as the
/// bytes the file stores).
pub(super) fn cast(v: Value, cast: Cast, recode: Option<&Recode>) -> Result<Value, String> {
    Ok(match (cast, v) {
        (_, Value::Null) => Value::Null,
        (Cast::Binary, Value::Binary(b)) => Value::Binary(b),
        (Cast::Binary, Value::Text(s)) => {
            Value::Binary(recode.map_or_else(|| s.clone().into_bytes(), |r| r.bytes(&s)))
        }
        (Cast::Binary, other) => {
            return Err(format!(
                "{other:?} cannot be read as bytes; cast the column to \"text\""
            ))
        }
        (Cast::Text, Value::Binary(_)) => {
            return Err("bytes cannot be read as text; cast the column to \"binary\"".into())
        }
        (Cast::Text, v) => Value::Text(match v {
            Value::Bool(b) => b.to_string(),
            Value::Byte(x) => x.to_string(),
            Value::Int(x) => x.to_string(),
            Value::Long(x) => x.to_string(),
            Value::BigInt(x) => x.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Double(x) => x.to_string(),
            Value::Timestamp(days) => {
                let micros = ole_date_micros(days)
                    .ok_or_else(|| format!("day count {days} is not a date"))?;
                chrono::DateTime::from_timestamp_micros(micros)
                    .ok_or_else(|| format!("day count {days} is not a date"))?
                    .naive_utc()
                    .format("%Y-%m-%d %H:%M:%S%.f")
                    .to_string()
            }
            Value::Text(s)
            | Value::Money(s)
            | Value::Numeric(s)
            | Value::Guid(s)
            | Value::DateTimeExtended(s) => s,
            other => format!("{other:?}"),
        }),
    })
}

/// One column's builder.
pub(super) enum Builder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder, u8, i8),
    Ts(TimestampMicrosecondBuilder),
    Text(StringBuilder),
    Bin(BinaryBuilder),
}

impl Builder {
    pub(super) fn new(t: &DataType) -> Builder {
        match t {
            DataType::Boolean => Builder::Bool(BooleanBuilder::new()),
            DataType::Int16 => Builder::I16(Int16Builder::new()),
            DataType::Int32 => Builder::I32(Int32Builder::new()),
            DataType::Int64 => Builder::I64(Int64Builder::new()),
            DataType::Float32 => Builder::F32(Float32Builder::new()),
            DataType::Float64 => Builder::F64(Float64Builder::new()),
            DataType::Decimal128(p, s) => Builder::Dec(Decimal128Builder::new(), *p, *s),
            DataType::Timestamp(..) => Builder::Ts(TimestampMicrosecondBuilder::new()),
            DataType::Binary => Builder::Bin(BinaryBuilder::new()),
            _ => Builder::Text(StringBuilder::new()),
        }
    }

    /// Appends `v`; `Err` says why it does not fit. NUL characters in text
    /// are dropped (PostgreSQL text cannot hold them) and counted in `nuls`.
    pub(super) fn append(&mut self, v: Value, nuls: &mut u64) -> Result<(), String> {
        if matches!(v, Value::Null) {
            match self {
                Builder::Bool(b) => b.append_null(),
                Builder::I16(b) => b.append_null(),
                Builder::I32(b) => b.append_null(),
                Builder::I64(b) => b.append_null(),
                Builder::F32(b) => b.append_null(),
                Builder::F64(b) => b.append_null(),
                Builder::Dec(b, ..) => b.append_null(),
                Builder::Ts(b) => b.append_null(),
                Builder::Text(b) => b.append_null(),
                Builder::Bin(b) => b.append_null(),
            }
            return Ok(());
        }
        match (self, v) {
            (Builder::Bool(b), Value::Bool(x)) => b.append_value(x),
            (Builder::I16(b), Value::Byte(x)) => b.append_value(i16::from(x)),
            (Builder::I16(b), Value::Int(x)) => b.append_value(x),
            (Builder::I32(b), Value::Long(x)) => b.append_value(x),
            (Builder::I64(b), Value::BigInt(x)) => b.append_value(x),
            (Builder::F32(b), Value::Float(x)) => b.append_value(x),
            (Builder::F64(b), Value::Double(x)) => b.append_value(x),
            (Builder::Dec(b, p, s), Value::Money(x) | Value::Numeric(x)) => {
                let d = decimal(&x, *s).ok_or_else(|| format!("{x:?} is not a number"))?;
                if d.unsigned_abs() >= 10u128.pow(u32::from(*p)) {
                    return Err(format!("{x:?} has more than {p} digits"));
                }
                b.append_value(d)
            }
            (Builder::Ts(b), Value::Timestamp(days)) => b.append_value(
                ole_date_micros(days).ok_or_else(|| format!("day count {days} is not a date"))?,
            ),
            (Builder::Ts(b), Value::DateTimeExtended(s)) => b.append_value(
                extended_micros(&s).ok_or_else(|| format!("{s:?} is not a date and time"))?,
            ),
            (Builder::Text(b), Value::Text(s) | Value::Guid(s)) => {
                if s.contains('\0') {
                    *nuls += s.matches('\0').count() as u64;
                    b.append_value(s.replace('\0', ""))
                } else {
                    b.append_value(s)
                }
            }
            (Builder::Bin(b), Value::Binary(x)) => b.append_value(x),
            (_, v) => {
                return Err(format!(
                    "a value {v:?} where the column's type holds another"
                ))
            }
        }
        Ok(())
    }

    pub(super) fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Dec(b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*p, *s)
                    .expect("precision and scale from arrow_type"),
            ),
            Builder::Ts(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Bin(b) => Arc::new(b.finish()),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Builder::Bool(b) => b.len(),
            Builder::I16(b) => b.len(),
            Builder::I32(b) => b.len(),
            Builder::I64(b) => b.len(),
            Builder::F32(b) => b.len(),
            Builder::F64(b) => b.len(),
            Builder::Dec(b, ..) => b.len(),
            Builder::Ts(b) => b.len(),
            Builder::Text(b) => b.len(),
            Builder::Bin(b) => b.len(),
        }
    }
}

/// A table's rows as batches, each read from where the last one ended.
pub struct Batches {
    pub reader: PageReader,
    pub path: PathBuf,
    pub def: TableDef,
    pub calculated: HashMap<String, ColumnType>,
    pub schema: SchemaRef,
    /// The table's columns read, by position (complex columns read as
    /// child tables are left out), and their casts.
    pub columns: Vec<(usize, Option<Cast>)>,
    pub recode: Option<Recode>,
    pub batch_rows: usize,
    pub position: RowPosition,
    pub read: u64,
    pub nuls: u64,
    /// Bytes not valid in `source.encoding`, loaded as U+FFFD.
    pub replaced: u64,
    pub counts: Arc<Mutex<SourceCounts>>,
}

impl crate::BatchReader for Batches {
    fn batch(&mut self) -> Result<Option<RecordBatch>, EtlError> {
        Batches::batch(self)
    }

    fn finish(&mut self) -> Result<(), EtlError> {
        Batches::finish(self)
    }
}

impl Batches {
    fn batch(&mut self) -> Result<Option<RecordBatch>, EtlError> {
        let mut builders: Vec<Builder> = self
            .schema
            .fields()
            .iter()
            .map(|f| Builder::new(f.data_type()))
            .collect();
        let mut rows = TableRows::new(&self.def, &self.calculated).starting_at(self.position);
        let table = &self.def.name;
        while builders.first().map_or(0, Builder::len) < self.batch_rows {
            let row = rows.next_row(&mut self.reader).map_err(super::file_error(
                &self.path,
                &format!("table {table:?}, after row {}", self.read),
            ))?;
            let Some(row) = row else { break };
            self.read += 1;
            let mut values = row.values;
            for (b, &(i, how)) in builders.iter_mut().zip(&self.columns) {
                let (mut v, c) = (
                    std::mem::replace(&mut values[i], Value::Null),
                    &self.def.columns[i],
                );
                let replaced = &mut self.replaced;
                let read = (|| {
                    if let (Some(r), Value::Text(s), false) =
                        (&self.recode, &v, how == Some(Cast::Binary))
                    {
                        v = Value::Text(r.text(s, replaced)?);
                    }
                    match how {
                        Some(how) => cast(v, how, self.recode.as_ref()),
                        None => Ok(v),
                    }
                })();
                read.and_then(|v| b.append(v, &mut self.nuls))
                    .map_err(|why| {
                        EtlError::Data(format!(
                            "{}: table {table:?}, row {}, column {:?}: {why}",
                            self.path.display(),
                            self.read,
                            c.name
                        ))
                    })?;
            }
            if builders.is_empty() && self.read % self.batch_rows as u64 == 0 {
                break;
            }
        }
        if rows.skipped_rows() > 0 {
            return Err(EtlError::Data(format!(
                "{}: table {table:?}: {} row(s) could not be decoded (near row {}); the file may be damaged: compact and repair it in Access, or read it through the MDBTools ODBC route",
                self.path.display(),
                rows.skipped_rows(),
                self.read
            )));
        }
        self.position = rows.position();
        let n = builders.first().map_or(0, Builder::len);
        if n == 0 {
            return Ok(None);
        }
        let arrays = builders.iter_mut().map(Builder::finish).collect();
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map(Some)
            .map_err(|e| EtlError::Bug(format!("an Access batch does not fit its schema: {e}")))
    }

    /// At the end: the rows read against the table header's count.
    fn finish(&mut self) -> Result<(), EtlError> {
        let recorded = u64::from(self.def.num_rows);
        if self.read != recorded {
            return Err(EtlError::Data(format!(
                "{}: table {:?}: read {} rows where its header records {recorded}; the file may be damaged: compact and repair it in Access",
                self.path.display(),
                self.def.name,
                self.read
            )));
        }
        if self.nuls > 0 {
            let mut counts = self.counts.lock().expect("no panic while holding the lock");
            counts.values_changed += self.nuls;
            counts.lines.push(format!(
                "dropped {} NUL characters from the text of {}",
                self.nuls, self.def.name
            ));
        }
        if self.replaced > 0 {
            let mut counts = self.counts.lock().expect("no panic while holding the lock");
            counts.values_changed += self.replaced;
            counts.lines.push(format!(
                "replaced {} invalid byte sequences in {} with U+FFFD",
                self.replaced, self.def.name
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
            .unwrap()
            .and_utc()
            .timestamp_micros()
    }

    #[test]
    fn ole_dates_read_exactly_before_1900_and_up_to_9999() {
        assert_eq!(ole_date_micros(0.0), Some(ts("1899-12-30 00:00:00")));
        assert_eq!(ole_date_micros(2.25), Some(ts("1900-01-01 06:00:00")));
        // Before day 0 the fraction counts forward from that day's midnight.
        assert_eq!(ole_date_micros(-1.25), Some(ts("1899-12-29 06:00:00")));
        assert_eq!(ole_date_micros(-36522.5), Some(ts("1800-01-01 12:00:00")));
        assert_eq!(
            ole_date_micros(2958465.0 + 86_399.0 / 86_400.0),
            Some(ts("9999-12-31 23:59:59"))
        );
        assert_eq!(ole_date_micros(f64::NAN), None);
        // A time with microseconds today keeps them.
        let t = ts("2024-02-29 13:45:10.123456");
        let days = (t as f64 / DAY_MICROS as f64) + EPOCH_DAYS as f64;
        assert_eq!(ole_date_micros(days), Some(t));
    }

    #[test]
    fn extended_dates_and_decimals_are_exact() {
        assert_eq!(
            extended_micros("0001-01-01 00:00:00.0000005"),
            Some(ts("0001-01-01 00:00:00.000001"))
        );
        assert_eq!(
            extended_micros("9999-12-31"),
            Some(ts("9999-12-31 00:00:00"))
        );
        assert_eq!(decimal("12345.6789", 4), Some(123_456_789));
        assert_eq!(decimal("-0.15", 4), Some(-1_500));
        assert_eq!(decimal("1.23456", 4), Some(12_346));
        assert_eq!(decimal("12x", 2), None);
    }
}
