//! Reading an ODBC query into Arrow batches, with narrow text decoded from
//! a configured code page. Groundwork for `[source] type = "odbc"`: the
//! reader works and is tested against real drivers (SQLite3, psqlODBC with
//! a CP949 client encoding), but no pipeline uses it yet.
//!
//! Every text column is fetched narrow (`SQL_C_CHAR`), as raw bytes: a
//! driver that would report it as wide (SQLite3) or convert it (psqlODBC
//! ANSI with `ConnSettings=SET client_encoding TO 'UHC'`) hands over the
//! bytes of its client encoding, and etl decodes them with encoding_rs from
//! `encoding` (any WHATWG label: `cp949`, `euc-kr`, `windows-1252`,
//! `utf-8`). An invalid sequence is an error naming the column, the row and
//! the bytes, or with `replace` becomes U+FFFD and is counted per column.
//! Text longer than `max_text_bytes` is an error naming the column and the
//! setting, never cut silently.
//!
//! | ODBC | Arrow | PostgreSQL (created tables) |
//! |---|---|---|
//! | BIT | Boolean | boolean |
//! | TINYINT, SMALLINT | Int16 | smallint |
//! | INTEGER | Int32 | integer |
//! | BIGINT | Int64 | bigint |
//! | REAL, FLOAT(p <= 24) | Float32 | real |
//! | FLOAT, DOUBLE | Float64 | double precision |
//! | DECIMAL(p,s), NUMERIC(p,s), p <= 38 | Decimal128(p,s) (read as text) | numeric(p,s) |
//! | CHAR, VARCHAR, LONGVARCHAR and their W forms | Utf8 (decoded) | text |
//! | BINARY, VARBINARY, LONGVARBINARY | Binary | bytea |
//! | DATE | Date32 | date |
//! | TIME | Time64(µs) | time |
//! | TIMESTAMP | Timestamp(µs) (fractions below a µs truncated) | timestamp |
//!
//! Any other type is an error naming the column and asking for a cast in
//! the query.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use encoding_rs::Encoding;
use odbc_api::buffers::{BufferDesc, ColumnarDynBuffer};
use odbc_api::{
    BlockCursor, Connection, ConnectionOptions, Cursor, OwnedCursor, ResultSetMetadata,
};

use crate::error::EtlError;

/// How to read: text encoding and its policy, and the batch limits.
#[derive(Debug, Clone)]
pub struct OdbcOptions {
    pub encoding: &'static Encoding,
    /// Invalid text becomes U+FFFD (counted) instead of an error.
    pub replace_invalid: bool,
    pub batch_rows: usize,
    /// The longest text or binary value, in bytes.
    pub max_text_bytes: usize,
}

impl OdbcOptions {
    /// Options for an encoding label (`cp949`, `utf-8`, ...).
    pub fn new(encoding: &str) -> Result<Self, EtlError> {
        // Windows code page names that WHATWG labels lack; encoding_rs's
        // EUC-KR is the whole of CP949 (UHC), with 똠 and 펲.
        let label = match encoding.to_ascii_lowercase().as_str() {
            "cp949" | "uhc" | "ms949" | "windows949" => "windows-949".to_string(),
            other => other.to_string(),
        };
        let encoding = Encoding::for_label(label.as_bytes()).ok_or_else(|| {
            EtlError::Schema(format!(
                "encoding {encoding:?} is not a known label; use one like \"cp949\", \"euc-kr\", \"windows-1252\" or \"utf-8\""
            ))
        })?;
        Ok(OdbcOptions {
            encoding,
            replace_invalid: false,
            batch_rows: 10_000,
            max_text_bytes: 65_536,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Col {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Decimal(u8, i8),
    Text,
    Binary,
    Date,
    Time,
    Timestamp,
}

/// A query's rows, batch by batch.
pub struct OdbcReader {
    cursor: BlockCursor<OwnedCursor<Connection<'static>>, ColumnarDynBuffer>,
    schema: SchemaRef,
    columns: Vec<Col>,
    options: OdbcOptions,
    rows_read: u64,
    /// Values replaced with U+FFFD, per column name.
    pub replaced: BTreeMap<String, u64>,
}

fn odbc_error(context: impl Into<String>) -> impl FnOnce(odbc_api::Error) -> EtlError {
    let context = context.into();
    move |e| EtlError::Schema(format!("{context}: {e}"))
}

/// Connects, runs `query` and describes its columns.
pub fn open(
    connection_string: &str,
    query: &str,
    options: OdbcOptions,
) -> Result<OdbcReader, EtlError> {
    let env = odbc_api::environment().map_err(odbc_error("starting ODBC"))?;
    let connection = env
        .connect_with_connection_string(connection_string, ConnectionOptions::default())
        .map_err(odbc_error("connecting through ODBC"))?;
    let mut cursor = connection
        .into_cursor(query, (), None)
        .map_err(|e| EtlError::Schema(format!("running the ODBC query {query:?}: {}", e.error)))?
        .ok_or_else(|| {
            EtlError::Schema(format!(
                "the ODBC query {query:?} returns no rows (is it a SELECT?)"
            ))
        })?;
    let n = cursor
        .num_result_cols()
        .map_err(odbc_error("describing the query"))? as u16;
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    let mut descs = Vec::new();
    let mut problems = Vec::new();
    for i in 1..=n {
        let name = cursor
            .col_name(i)
            .map_err(odbc_error("describing the query"))?;
        let t = cursor
            .col_data_type(i)
            .map_err(odbc_error("describing the query"))?;
        let text_len = |len: Option<std::num::NonZeroUsize>| {
            // A character may take up to 4 bytes in the client encoding.
            len.map_or(options.max_text_bytes, |l| {
                l.get().saturating_mul(4).min(options.max_text_bytes)
            })
            .max(1)
        };
        use odbc_api::DataType as T;
        let (col, arrow, desc) = match t {
            T::Bit => (
                Col::Bool,
                DataType::Boolean,
                BufferDesc::Bit { nullable: true },
            ),
            // Narrow integers are fetched 64 bits wide and checked here:
            // SQLite3's driver declares INTEGER but holds 64-bit values, and
            // cuts them silently when asked for 32 bits.
            T::TinyInt | T::SmallInt => (
                Col::I16,
                DataType::Int16,
                BufferDesc::I64 { nullable: true },
            ),
            T::Integer => (
                Col::I32,
                DataType::Int32,
                BufferDesc::I64 { nullable: true },
            ),
            // SQLite3's driver reports BIGINT as SQL_C_SBIGINT (-25).
            T::BigInt => (
                Col::I64,
                DataType::Int64,
                BufferDesc::I64 { nullable: true },
            ),
            T::Other { data_type, .. } if data_type.0 == -25 => (
                Col::I64,
                DataType::Int64,
                BufferDesc::I64 { nullable: true },
            ),
            T::Real => (
                Col::F32,
                DataType::Float32,
                BufferDesc::F32 { nullable: true },
            ),
            T::Float { precision } if precision <= 24 => (
                Col::F32,
                DataType::Float32,
                BufferDesc::F32 { nullable: true },
            ),
            T::Float { .. } | T::Double => (
                Col::F64,
                DataType::Float64,
                BufferDesc::F64 { nullable: true },
            ),
            T::Decimal { precision, scale } | T::Numeric { precision, scale }
                if (1..=38).contains(&precision) =>
            {
                (
                    Col::Decimal(precision as u8, scale as i8),
                    DataType::Decimal128(precision as u8, scale as i8),
                    BufferDesc::Text {
                        max_str_len: precision + 2,
                    },
                )
            }
            T::Char { length } | T::Varchar { length } | T::LongVarchar { length } => (
                Col::Text,
                DataType::Utf8,
                BufferDesc::Text {
                    max_str_len: text_len(length),
                },
            ),
            T::WChar { length } | T::WVarchar { length } | T::WLongVarchar { length } => (
                Col::Text,
                DataType::Utf8,
                BufferDesc::Text {
                    max_str_len: text_len(length),
                },
            ),
            T::Binary { length } | T::Varbinary { length } | T::LongVarbinary { length } => (
                Col::Binary,
                DataType::Binary,
                BufferDesc::Binary {
                    max_bytes: length.map_or(options.max_text_bytes, |l| {
                        l.get().min(options.max_text_bytes)
                    }),
                },
            ),
            T::Date => (
                Col::Date,
                DataType::Date32,
                BufferDesc::Date { nullable: true },
            ),
            T::Time { .. } => (
                Col::Time,
                DataType::Time64(TimeUnit::Microsecond),
                BufferDesc::Time { nullable: true },
            ),
            T::Timestamp { .. } => (
                Col::Timestamp,
                DataType::Timestamp(TimeUnit::Microsecond, None),
                BufferDesc::Timestamp { nullable: true },
            ),
            other => {
                problems.push(format!(
                    "column {name:?} has ODBC type {other:?}, which etl cannot map; cast it in the query (to VARCHAR, say)"
                ));
                continue;
            }
        };
        fields.push(Field::new(name, arrow, true));
        columns.push(col);
        descs.push(desc);
    }
    if !problems.is_empty() {
        return Err(EtlError::Schema(problems.join("\n  ")));
    }
    let buffer = ColumnarDynBuffer::try_from_descs(options.batch_rows, descs)
        .map_err(odbc_error("allocating the ODBC fetch buffers"))?;
    let cursor = cursor
        .bind_buffer(buffer)
        .map_err(odbc_error("binding the fetch buffers"))?;
    Ok(OdbcReader {
        cursor,
        schema: Arc::new(Schema::new(fields)),
        columns,
        options,
        rows_read: 0,
        replaced: BTreeMap::new(),
    })
}

impl OdbcReader {
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The next batch, `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, EtlError> {
        let Some(buffer) = self.cursor.fetch().map_err(odbc_error("fetching rows"))? else {
            return Ok(None);
        };
        let rows = buffer.num_rows();
        let first_row = self.rows_read;
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (i, col) in self.columns.iter().enumerate() {
            let name = self.schema.field(i).name();
            let slice = buffer.column(i);
            let bad = |what: &str| EtlError::Schema(format!("column {name:?}: {what}"));
            let array: ArrayRef = match col {
                Col::Bool => {
                    let mut b = BooleanBuilder::with_capacity(rows);
                    for v in slice
                        .as_nullable_slice::<odbc_api::Bit>()
                        .ok_or_else(|| bad("not a BIT buffer"))?
                    {
                        b.append_option(v.map(|v| v.as_bool()));
                    }
                    Arc::new(b.finish())
                }
                Col::I16 | Col::I32 => {
                    let values = slice
                        .as_nullable_slice::<i64>()
                        .ok_or_else(|| bad("not an integer buffer"))?;
                    let too_big = |r: usize, v: i64, t: &str| {
                        bad(&format!(
                            "row {} holds {v}, which does not fit the driver's declared type {t}; cast the column to BIGINT in the query",
                            first_row + r as u64 + 1
                        ))
                    };
                    if matches!(col, Col::I16) {
                        let mut b = Int16Builder::with_capacity(rows);
                        for (r, v) in values.enumerate() {
                            b.append_option(
                                v.map(|&v| i16::try_from(v).map_err(|_| too_big(r, v, "SMALLINT")))
                                    .transpose()?,
                            );
                        }
                        Arc::new(b.finish())
                    } else {
                        let mut b = Int32Builder::with_capacity(rows);
                        for (r, v) in values.enumerate() {
                            b.append_option(
                                v.map(|&v| i32::try_from(v).map_err(|_| too_big(r, v, "INTEGER")))
                                    .transpose()?,
                            );
                        }
                        Arc::new(b.finish())
                    }
                }
                Col::I64 => {
                    let mut b = Int64Builder::with_capacity(rows);
                    for v in slice
                        .as_nullable_slice::<i64>()
                        .ok_or_else(|| bad("not a BIGINT buffer"))?
                    {
                        b.append_option(v.copied());
                    }
                    Arc::new(b.finish())
                }
                Col::F32 => {
                    let mut b = Float32Builder::with_capacity(rows);
                    for v in slice
                        .as_nullable_slice::<f32>()
                        .ok_or_else(|| bad("not a REAL buffer"))?
                    {
                        b.append_option(v.copied());
                    }
                    Arc::new(b.finish())
                }
                Col::F64 => {
                    let mut b = Float64Builder::with_capacity(rows);
                    for v in slice
                        .as_nullable_slice::<f64>()
                        .ok_or_else(|| bad("not a DOUBLE buffer"))?
                    {
                        b.append_option(v.copied());
                    }
                    Arc::new(b.finish())
                }
                Col::Decimal(p, s) => {
                    let text = slice.as_text().ok_or_else(|| bad("not a text buffer"))?;
                    let mut b = StringBuilder::with_capacity(rows, rows * 8);
                    for v in text.iter() {
                        b.append_option(v.map(|v| String::from_utf8_lossy(v).trim().to_string()));
                    }
                    let strings: ArrayRef = Arc::new(b.finish());
                    arrow::compute::cast(&strings, &DataType::Decimal128(*p, *s)).map_err(|e| {
                        bad(&format!(
                            "rows {first_row} to {}: {e}",
                            first_row + rows as u64
                        ))
                    })?
                }
                Col::Text => {
                    let text = slice.as_text().ok_or_else(|| bad("not a text buffer"))?;
                    if text.has_truncated_values().is_some() {
                        return Err(bad(&format!(
                            "a value in rows {} to {} is longer than max_text_bytes = {}; raise it",
                            first_row + 1,
                            first_row + rows as u64,
                            self.options.max_text_bytes
                        )));
                    }
                    let mut b = StringBuilder::with_capacity(rows, rows * 16);
                    for (r, v) in text.iter().enumerate() {
                        let Some(bytes) = v else {
                            b.append_null();
                            continue;
                        };
                        let encoding = self.options.encoding;
                        match encoding.decode_without_bom_handling_and_without_replacement(bytes) {
                            Some(s) => b.append_value(s),
                            None if self.options.replace_invalid => {
                                let (s, _) = encoding.decode_without_bom_handling(bytes);
                                *self.replaced.entry(name.clone()).or_default() += 1;
                                b.append_value(s);
                            }
                            None => {
                                let shown: Vec<String> =
                                    bytes.iter().take(32).map(|b| format!("{b:02x}")).collect();
                                return Err(bad(&format!(
                                    "row {} holds bytes that are not valid {} ({}{}); set on_invalid_text = \"replace\" to load them as U+FFFD, or fix encoding",
                                    first_row + r as u64 + 1,
                                    encoding.name(),
                                    shown.join(" "),
                                    if bytes.len() > 32 { " ..." } else { "" }
                                )));
                            }
                        }
                    }
                    Arc::new(b.finish())
                }
                Col::Binary => {
                    let bin = slice
                        .as_binary()
                        .ok_or_else(|| bad("not a binary buffer"))?;
                    if bin.has_truncated_values().is_some() {
                        return Err(bad(&format!(
                            "a value in rows {} to {} is longer than max_text_bytes = {}; raise it",
                            first_row + 1,
                            first_row + rows as u64,
                            self.options.max_text_bytes
                        )));
                    }
                    let mut b = BinaryBuilder::with_capacity(rows, rows * 16);
                    for v in bin.iter() {
                        b.append_option(v);
                    }
                    Arc::new(b.finish())
                }
                Col::Date => {
                    let mut b = Date32Builder::with_capacity(rows);
                    for (r, v) in slice
                        .as_nullable_slice::<odbc_api::sys::Date>()
                        .ok_or_else(|| bad("not a DATE buffer"))?
                        .enumerate()
                    {
                        match v {
                            None => b.append_null(),
                            Some(d) => {
                                let day = chrono::NaiveDate::from_ymd_opt(
                                    d.year as i32,
                                    d.month as u32,
                                    d.day as u32,
                                )
                                .ok_or_else(|| {
                                    bad(&format!(
                                        "row {} holds an invalid date {:04}-{:02}-{:02}",
                                        first_row + r as u64 + 1,
                                        d.year,
                                        d.month,
                                        d.day
                                    ))
                                })?;
                                b.append_value(
                                    (day - chrono::NaiveDate::default()).num_days() as i32
                                );
                            }
                        }
                    }
                    Arc::new(b.finish())
                }
                Col::Time => {
                    let mut b = Time64MicrosecondBuilder::with_capacity(rows);
                    for v in slice
                        .as_nullable_slice::<odbc_api::sys::Time>()
                        .ok_or_else(|| bad("not a TIME buffer"))?
                    {
                        b.append_option(v.map(|t| {
                            (t.hour as i64 * 3600 + t.minute as i64 * 60 + t.second as i64)
                                * 1_000_000
                        }));
                    }
                    Arc::new(b.finish())
                }
                Col::Timestamp => {
                    let mut b = TimestampMicrosecondBuilder::with_capacity(rows);
                    for (r, v) in slice
                        .as_nullable_slice::<odbc_api::sys::Timestamp>()
                        .ok_or_else(|| bad("not a TIMESTAMP buffer"))?
                        .enumerate()
                    {
                        match v {
                            None => b.append_null(),
                            Some(t) => {
                                let at = chrono::NaiveDate::from_ymd_opt(
                                    t.year as i32,
                                    t.month as u32,
                                    t.day as u32,
                                )
                                .and_then(|d| {
                                    d.and_hms_opt(t.hour as u32, t.minute as u32, t.second as u32)
                                })
                                .ok_or_else(|| {
                                    bad(&format!(
                                        "row {} holds an invalid timestamp {t:?}",
                                        first_row + r as u64 + 1
                                    ))
                                })?;
                                b.append_value(
                                    at.and_utc().timestamp_micros() + (t.fraction / 1000) as i64,
                                );
                            }
                        }
                    }
                    Arc::new(b.finish())
                }
            };
            arrays.push(array);
        }
        self.rows_read += rows as u64;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map(Some)
            .map_err(|e| EtlError::Bug(format!("building an ODBC batch: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_found_by_label() {
        assert_eq!(OdbcOptions::new("cp949").unwrap().encoding.name(), "EUC-KR");
        assert_eq!(OdbcOptions::new("UTF-8").unwrap().encoding.name(), "UTF-8");
        let e = OdbcOptions::new("klingon").unwrap_err().to_string();
        assert!(e.contains("\"klingon\" is not a known label"), "{e}");
    }
}
