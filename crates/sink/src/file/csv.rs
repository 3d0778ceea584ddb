//! CSV files as PostgreSQL's `COPY ... TO ... CSV` writes them: values in
//! PostgreSQL's text output (`t`/`f`, `2025-06-01 00:00:00+00`, floats
//! shortest-exact), a field quoted when it holds the delimiter, a quote or
//! a line break, or when it is an empty string and NULL is written empty;
//! then encoded in the sink's code page, where a character the code page
//! lacks is an error naming the row and column. Readable back by `\copy`
//! and by etl's CSV source, which `etl verify` reads it back with.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt8Type,
};

use crate::spec::CsvSinkSpec;
use etl_pg::error::EtlError;

/// Whether the writer has a CSV form for a column of this type.
fn writable(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::UInt8
            | DataType::Int32
            | DataType::UInt16
            | DataType::Int64
            | DataType::UInt32
            | DataType::Float32
            | DataType::Float64
            | DataType::Date32
            | DataType::Timestamp(_, _)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
    ) || matches!(t, DataType::Decimal128(_, s) if *s >= 0)
}

/// Refuses, naming them, the columns a CSV file cannot hold here.
pub fn check_schema(schema: &SchemaRef) -> Result<(), EtlError> {
    let bad: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| !writable(f.data_type()))
        .map(|f| format!("{} ({})", f.name(), f.data_type()))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(EtlError::Config(format!(
        "the CSV sink writes text, numbers, booleans, dates, timestamps and bytes; these columns are none of them: {}; cast them in a SQL stage (CAST(x AS VARCHAR))",
        bad.join(", ")
    )))
}

/// Where the bytes go: the file, or a compressor in front of it (by the
/// file name's extension, `.gz` or `.zst`).
enum Out {
    Plain(BufWriter<File>),
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<File>>),
}

impl Out {
    fn new(file: File, path: &Path) -> Result<Out, EtlError> {
        use etl_base::compression::Compression;
        let file = BufWriter::with_capacity(1 << 20, file);
        Ok(match Compression::of(path) {
            Compression::None => Out::Plain(file),
            Compression::Gzip => Out::Gzip(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::default(),
            )),
            Compression::Zstd => Out::Zstd(zstd::stream::write::Encoder::new(file, 3).map_err(
                |e| EtlError::Io {
                    context: format!("starting zstd for {}", path.display()),
                    source: e,
                },
            )?),
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Plain(w) => w.write_all(bytes),
            Out::Gzip(w) => w.write_all(bytes),
            Out::Zstd(w) => w.write_all(bytes),
        }
    }

    fn finish(self) -> std::io::Result<File> {
        let buffered = match self {
            Out::Plain(w) => w,
            Out::Gzip(w) => w.finish()?,
            Out::Zstd(w) => w.finish()?,
        };
        buffered.into_inner().map_err(|e| e.into_error())
    }
}

/// One chunk's file as it is written.
pub struct CsvEncoder {
    spec: CsvSinkSpec,
    out: Out,
    path: PathBuf,
    header_done: bool,
    rows: u64,
    line: String,
    field: String,
}

impl CsvEncoder {
    pub fn new(spec: CsvSinkSpec, file: File, path: PathBuf) -> Result<Self, EtlError> {
        Ok(CsvEncoder {
            spec,
            out: Out::new(file, &path)?,
            path,
            header_done: false,
            rows: 0,
            line: String::new(),
            field: String::new(),
        })
    }

    fn header(&mut self, schema: &SchemaRef) -> Result<(), EtlError> {
        if self.header_done {
            return Ok(());
        }
        self.header_done = true;
        if !self.spec.header {
            return Ok(());
        }
        self.line.clear();
        for (i, f) in schema.fields().iter().enumerate() {
            if i > 0 {
                self.line.push(self.spec.delimiter as char);
            }
            push_field(
                &mut self.line,
                f.name(),
                self.spec.delimiter,
                &self.spec.null,
            );
        }
        self.line.push('\n');
        let line = std::mem::take(&mut self.line);
        self.emit(&line, schema, None)?;
        self.line = line;
        Ok(())
    }

    /// The chunk comes as the server's CSV, its header included (when the
    /// file has one): nothing more to add.
    pub fn start_copy(&mut self) {
        self.header_done = true;
    }

    /// The server's CSV bytes, into the file as they are.
    pub fn write_copy(&mut self, data: &[u8]) -> Result<(), EtlError> {
        self.out.write_all(data).map_err(|e| EtlError::Io {
            context: format!("writing {}", self.path.display()),
            source: e,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), EtlError> {
        self.header(&batch.schema())?;
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            self.line.clear();
            for (i, column) in batch.columns().iter().enumerate() {
                if i > 0 {
                    self.line.push(self.spec.delimiter as char);
                }
                if column.is_null(row) {
                    self.line.push_str(&self.spec.null);
                    continue;
                }
                self.field.clear();
                text(column.as_ref(), row, &mut self.field)?;
                push_field(
                    &mut self.line,
                    &self.field,
                    self.spec.delimiter,
                    &self.spec.null,
                );
            }
            self.line.push('\n');
            self.rows += 1;
            let line = std::mem::take(&mut self.line);
            let done = self.emit(&line, &schema, Some(batch_row(batch, row)));
            self.line = line;
            done?;
        }
        Ok(())
    }

    /// Encodes one line into the file; a character the code page lacks is
    /// an error naming the row and the column.
    fn emit(
        &mut self,
        line: &str,
        schema: &SchemaRef,
        row: Option<Vec<String>>,
    ) -> Result<(), EtlError> {
        let io = |e| EtlError::Io {
            context: format!("writing {}", self.path.display()),
            source: e,
        };
        if self.spec.encoding == encoding_rs::UTF_8 {
            return self.out.write_all(line.as_bytes()).map_err(io);
        }
        let (bytes, _, unmappable) = self.spec.encoding.encode(line);
        if unmappable {
            let encoding = self.spec.encoding;
            let lacks = |s: &str| encoding.encode(s).2;
            let (what, value) = match &row {
                None => {
                    let name = schema.fields().iter().find(|f| lacks(f.name()));
                    (
                        format!(
                            "the header's column name {:?}",
                            name.map(|f| f.name().as_str()).unwrap_or("")
                        ),
                        String::new(),
                    )
                }
                Some(values) => {
                    let i = values.iter().position(|v| lacks(v)).unwrap_or(0);
                    (
                        format!(
                            "row {} of the chunk, column {:?}",
                            self.rows,
                            schema.field(i).name()
                        ),
                        values[i].chars().take(60).collect(),
                    )
                }
            };
            let c = line
                .chars()
                .find(|c| lacks(c.encode_utf8(&mut [0; 4])))
                .unwrap_or('?');
            return Err(EtlError::Data(format!(
                "{}: {what} holds {c:?} (U+{:04X}), which {} cannot write{}; write the file in utf-8, or replace the character in a SQL stage",
                self.path.display(),
                c as u32,
                encoding.name(),
                if value.is_empty() { String::new() } else { format!(" (value {value:?})") }
            )));
        }
        self.out.write_all(&bytes).map_err(io)
    }

    /// Writes the header of an empty chunk, flushes, and hands back the file.
    pub fn finish(mut self, schema: &SchemaRef) -> Result<File, EtlError> {
        self.header(schema)?;
        let path = self.path.clone();
        self.out.finish().map_err(|e| EtlError::Io {
            context: format!("writing {}", path.display()),
            source: e,
        })
    }
}

/// A row's values as text, to find which one the code page lacks.
fn batch_row(batch: &RecordBatch, row: usize) -> Vec<String> {
    batch
        .columns()
        .iter()
        .map(|c| {
            let mut s = String::new();
            if !c.is_null(row) {
                let _ = text(c.as_ref(), row, &mut s);
            }
            s
        })
        .collect()
}

/// Appends `value`, quoted when it must be.
fn push_field(line: &mut String, value: &str, delimiter: u8, null: &str) {
    let needs = value == null
        || value
            .bytes()
            .any(|b| b == delimiter || b == b'"' || b == b'\n' || b == b'\r');
    if !needs {
        line.push_str(value);
        return;
    }
    line.push('"');
    for c in value.chars() {
        if c == '"' {
            line.push('"');
        }
        line.push(c);
    }
    line.push('"');
}

/// One value as PostgreSQL prints it.
/// Bytes as PostgreSQL's hex bytea: `\x0aff`.
fn hex(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(2 + 2 * bytes.len());
    out.push_str("\\x");
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
}

fn text(a: &dyn Array, row: usize, out: &mut String) -> Result<(), EtlError> {
    use std::fmt::Write as _;
    match a.data_type() {
        DataType::Utf8 => out.push_str(a.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => out.push_str(a.as_string::<i64>().value(row)),
        DataType::Utf8View => out.push_str(a.as_string_view().value(row)),
        DataType::Boolean => out.push(if a.as_boolean().value(row) { 't' } else { 'f' }),
        // As PostgreSQL prints bytea (bytea_output = hex): `\x` and hex.
        DataType::Binary => hex(a.as_binary::<i32>().value(row), out),
        DataType::LargeBinary => hex(a.as_binary::<i64>().value(row), out),
        DataType::Int8 => {
            write!(out, "{}", a.as_primitive::<Int8Type>().value(row)).expect("a string")
        }
        DataType::Int16 => {
            write!(out, "{}", a.as_primitive::<Int16Type>().value(row)).expect("a string")
        }
        DataType::Int32 => {
            write!(out, "{}", a.as_primitive::<Int32Type>().value(row)).expect("a string")
        }
        DataType::Int64 => {
            write!(out, "{}", a.as_primitive::<Int64Type>().value(row)).expect("a string")
        }
        DataType::UInt8 => {
            write!(out, "{}", a.as_primitive::<UInt8Type>().value(row)).expect("a string")
        }
        DataType::UInt16 => {
            write!(out, "{}", a.as_primitive::<UInt16Type>().value(row)).expect("a string")
        }
        DataType::UInt32 => {
            write!(out, "{}", a.as_primitive::<UInt32Type>().value(row)).expect("a string")
        }
        DataType::Float32 => {
            let v = a.as_primitive::<Float32Type>().value(row);
            out.push_str(&float_text(v as f64, v.is_finite().then(|| v.to_string())))
        }
        DataType::Float64 => out.push_str(&etl_pg::text::pg_float_text(
            a.as_primitive::<Float64Type>().value(row),
        )),
        DataType::Decimal128(_, s) => {
            let v = a.as_primitive::<Decimal128Type>().value(row);
            out.push_str(&decimal_text(v, *s))
        }
        DataType::Date32 => {
            let days = a.as_primitive::<Date32Type>().value(row);
            let d = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
                .expect("a date")
                .checked_add_signed(chrono::Duration::days(days as i64))
                .ok_or_else(|| {
                    EtlError::Data(format!("date {days} days from 1970 is out of range"))
                })?;
            write!(out, "{}", d.format("%Y-%m-%d")).expect("a string")
        }
        DataType::Timestamp(unit, tz) => {
            let micros = match unit {
                TimeUnit::Second => a
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .saturating_mul(1_000_000),
                TimeUnit::Millisecond => a
                    .as_primitive::<TimestampMillisecondType>()
                    .value(row)
                    .saturating_mul(1_000),
                TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value(row),
                TimeUnit::Nanosecond => a
                    .as_primitive::<TimestampNanosecondType>()
                    .value(row)
                    .div_euclid(1_000),
            };
            out.push_str(&etl_base::time::format_timestamp(micros));
            if tz.is_some() {
                out.push_str("+00");
            }
        }
        other => {
            return Err(EtlError::Config(format!(
                "a {other} value has no CSV form here; cast it in a SQL stage"
            )))
        }
    }
    Ok(())
}

fn float_text(v: f64, finite: Option<String>) -> String {
    match finite {
        Some(s) => s,
        None if v.is_nan() => "NaN".into(),
        None if v > 0.0 => "Infinity".into(),
        None => "-Infinity".into(),
    }
}

/// A scaled integer as numeric text: `1250`, scale 2 -> `12.50`.
fn decimal_text(v: i128, scale: i8) -> String {
    let s = scale.max(0) as usize;
    let digits = v.unsigned_abs().to_string();
    let digits = format!("{digits:0>width$}", width = s + 1);
    let (int, frac) = digits.split_at(digits.len() - s);
    let sign = if v < 0 { "-" } else { "" };
    if s == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_as_copy_quotes_them() {
        let mut line = String::new();
        for v in ["plain", "a,b", "say \"hi\"", "two\nlines", "", " spaced "] {
            push_field(&mut line, v, b',', "");
            line.push('|');
        }
        assert_eq!(
            line,
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"|\"\"| spaced |"
        );
    }

    #[test]
    fn decimals_keep_their_scale() {
        assert_eq!(decimal_text(1250, 2), "12.50");
        assert_eq!(decimal_text(-5, 3), "-0.005");
        assert_eq!(decimal_text(42, 0), "42");
    }
}
