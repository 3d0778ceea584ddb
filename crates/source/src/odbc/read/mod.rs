//! Reading an ODBC query into Arrow batches, with narrow text decoded from
//! a configured code page: the reader behind `[source] type = "odbc"`
//! (one chunk's SELECT, its bounds bound as typed parameters).
//!
//! Rows come in row arrays bound to columnar buffers, or, for drivers that
//! refuse them (MDBTools), one row at a time through SQLGetData, each value
//! as text parsed into its column's type. Batches hold at most `batch_rows`
//! rows and `batch_bytes` of fetch buffers.
//!
//! Every text column is fetched narrow (`SQL_C_CHAR`), as raw bytes: a
//! driver that would report it as wide (SQLite3) or convert it (psqlODBC
//! ANSI with `ConnSettings=SET client_encoding TO 'UHC'`) hands over the
//! bytes of its client encoding, and etl decodes them with encoding_rs from
//! `encoding` (any WHATWG label: `cp949`, `euc-kr`, `windows-1252`,
//! `utf-8`). An invalid sequence is an error naming the column, the row and
//! the bytes, or with `replace` becomes U+FFFD and is counted per column.
//! Text or binary longer than `max_text_bytes` is an error naming the
//! column and row, or with `on_long_value = "truncate"` is cut to it (text
//! on a whole character) and counted per column; never cut silently.
//! SQL text (queries, table names for the catalog functions) goes to the
//! driver in the same code page.
//!
//! | ODBC | Arrow | PostgreSQL (created tables) |
//! |---|---|---|
//! | BIT | Boolean | boolean |
//! | TINYINT, SMALLINT | Int16 | smallint |
//! | INTEGER | Int32 | integer |
//! | BIGINT | Int64 | bigint |
//! | REAL | Float32 | real |
//! | FLOAT (any precision: its C type is a double), DOUBLE | Float64 | double precision |
//! | DECIMAL(p,s), NUMERIC(p,s), p <= 38 | Decimal128(p,s) (read as text) | numeric(p,s) |
//! | CHAR, VARCHAR, LONGVARCHAR and their W forms | Utf8 (decoded) | text |
//! | BINARY, VARBINARY, LONGVARBINARY | Binary | bytea |
//! | DATE | Date32 (invalid: NULL, counted) | date |
//! | TIME(0) | Time64(µs) | time |
//! | TIME(p > 0), SQL Server time(n) (SS_TIME2) | Time64(µs), read as text (the TIME struct has no fraction), rounded | time |
//! | TIMESTAMP, SQL Server datetime, datetime2 | Timestamp(µs), fractions rounded to the nearest µs, ties to even, as PostgreSQL rounds text; invalid: NULL, counted | timestamp |
//! | SQL Server datetimeoffset (SS_TIMESTAMPOFFSET) | Timestamp(µs, UTC), read as text | timestamptz |
//! | GUID (SQL Server uniqueidentifier, psqlODBC uuid) | FixedSizeBinary(16), `arrow.uuid`, read as text | uuid |
//! | MDBTools Currency, described DECIMAL(8,0) | Decimal128(19,4) | numeric(19,4) |
//!
//! Any other type is an error naming the column and the `[source.casts]`
//! entry (`text` or `binary`) that reads it anyway.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanBuilder, Date32Builder, RecordBatch, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use encoding_rs::Encoding;
use odbc_api::buffers::{BufferDesc, ColumnarDynBuffer};
use odbc_api::{BlockCursor, Connection, Cursor, OwnedCursor, ResultSetMetadata};

mod block;
mod rows;
mod types;

use super::statement::*;
use super::values::*;
use etl_pg::error::EtlError;

/// How to read: text encoding and its policy, and the batch limits.
#[derive(Debug, Clone)]
pub struct OdbcOptions {
    pub encoding: &'static Encoding,
    /// Invalid text becomes U+FFFD (counted) instead of an error.
    pub replace_invalid: bool,
    pub batch_rows: usize,
    /// Bytes of fetch buffers per batch: fewer rows per batch when a row's
    /// buffers are wide.
    pub batch_bytes: usize,
    /// The longest text or binary value, in bytes.
    pub max_text_bytes: usize,
    /// A longer value is cut to `max_text_bytes` (on a character
    /// boundary) and counted, instead of an error.
    pub truncate_long: bool,
    /// Columns read another way (`[source.casts]`), by `Table.Column` or
    /// `Column`.
    pub casts: BTreeMap<String, Cast>,
    /// Fetch one row at a time with SQLGetData, for drivers that refuse
    /// row arrays (MDBTools answers SQL_ATTR_ROW_ARRAY_SIZE with HY092).
    pub row_by_row: bool,
    /// Fetch buffer sizes learned for long text or binary columns, by
    /// column name: see [`ADAPTIVE_BYTES`].
    pub text_buffers: BTreeMap<String, usize>,
}

/// A text or binary column declared longer than this (TEXT, memo,
/// nvarchar(max), a generous VARCHAR) starts with fetch buffers of this
/// many bytes per value, not its declared length or `max_text_bytes`:
/// filling a 65,536-byte buffer per value (SQLite declares TEXT so) is
/// most of a load's time and memory when values are short. A value that
/// does not fit makes the reader stop with [`EtlError::ReadAgain`] and the
/// size it needs; the chunk (rolled back) is read again with larger
/// buffers, which later chunks keep. Values longer than `max_text_bytes`
/// follow the same rules as before: error, or cut and counted.
pub const ADAPTIVE_BYTES: usize = 1024;

/// How a column named in `[source.casts]` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cast {
    /// Fetched as narrow text (decoded like any text): a text column.
    Text,
    /// Fetched as raw bytes: a bytea column.
    Binary,
}

impl Cast {
    pub fn parse(s: &str) -> Result<Cast, String> {
        match s {
            "text" => Ok(Cast::Text),
            "binary" => Ok(Cast::Binary),
            other => Err(format!(
                "{other:?} is not a cast; use \"text\" (read as text) or \"binary\" (read as bytes)"
            )),
        }
    }
}

impl OdbcOptions {
    /// Options for an encoding label (`cp949`, `utf-8`, ...).
    pub fn new(encoding: &str) -> Result<Self, EtlError> {
        let encoding = crate::encoding_for(encoding).map_err(EtlError::Config)?;
        Ok(OdbcOptions {
            encoding,
            replace_invalid: false,
            batch_rows: 10_000,
            batch_bytes: 32 << 20,
            max_text_bytes: 65_536,
            truncate_long: false,
            casts: BTreeMap::new(),
            row_by_row: false,
            text_buffers: BTreeMap::new(),
        })
    }

    /// The cast for a column of `table`, if one is configured.
    fn cast_for(&self, table: Option<&str>, column: &str) -> Option<Cast> {
        table
            .and_then(|t| self.casts.get(&format!("{t}.{column}")))
            .or_else(|| self.casts.get(column))
            .copied()
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Col {
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
    /// Fetched as text and parsed by etl: a GUID (uniqueidentifier).
    Uuid,
    /// Fetched as text: a time with fractions of a second (the TIME
    /// struct has none), SQL Server's time(7).
    TimeText,
    /// Fetched as text: SQL Server's datetimeoffset, as UTC.
    TimestampTzText,
}

enum Fetch {
    /// Row arrays bound to columnar buffers: one driver call per batch.
    Block(BlockCursor<OwnedCursor<Connection<'static>>, ColumnarDynBuffer>),
    /// One row at a time, each value through SQLGetData.
    Rows {
        cursor: OwnedCursor<Connection<'static>>,
        batch_rows: usize,
        /// SQLFetch said SQL_NO_DATA: MDBTools starts over if asked again.
        ended: bool,
    },
}

/// A query's rows, batch by batch.
pub struct OdbcReader {
    fetch: Fetch,
    schema: SchemaRef,
    columns: Vec<Col>,
    /// Each column's fetch buffer for one value, in bytes (text, binary).
    value_bytes: Vec<usize>,
    /// Columns whose buffers start small and grow ([`ADAPTIVE_BYTES`]).
    adaptive: Vec<bool>,
    options: OdbcOptions,
    rows_read: u64,
    /// Values replaced with U+FFFD, per column name.
    pub replaced: BTreeMap<String, u64>,
    /// Values longer than `max_text_bytes` cut to it (`truncate_long`):
    /// per column name, with the first row seen.
    pub truncated: BTreeMap<String, (u64, u64)>,
    /// Dates and timestamps the driver returned invalid (MDBTools does),
    /// loaded as NULL: per column name, with the first row seen.
    pub invalid_dates: BTreeMap<String, (u64, u64)>,
    /// Columns the driver says are auto-numbered (SQL_DESC_AUTO_UNIQUE_VALUE).
    pub auto_unique: Vec<bool>,
    /// The driver's type of each column, as etl read it, for plans.
    pub odbc_types: Vec<String>,
}

/// Connects, runs `query` and describes its columns.
pub fn open(
    connection_string: &str,
    query: &str,
    options: OdbcOptions,
) -> Result<OdbcReader, EtlError> {
    open_table(connect(connection_string)?, query, &[], options, None)
}

/// Runs `query` on `connection` and describes its columns; `table` names
/// the source table for `[source.casts]`.
pub fn open_table(
    connection: Connection<'static>,
    query: &str,
    params: &[Param],
    options: OdbcOptions,
    table: Option<&str>,
) -> Result<OdbcReader, EtlError> {
    let statement = connection
        .into_preallocated()
        .map_err(odbc_error("allocating an ODBC statement"))?
        .into_handle();
    let mut cursor = execute(statement, query, params, options.encoding)?.ok_or_else(|| {
        EtlError::Config(format!(
            "the ODBC query {query:?} returns no rows (is it a SELECT?)"
        ))
    })?;
    let n = cursor
        .num_result_cols()
        .map_err(odbc_error("describing the query"))? as u16;
    let Described {
        fields,
        columns,
        descs,
        auto_unique,
        odbc_types,
        adaptive,
    } = describe(&mut cursor, n, &options, table)?;
    let batch_rows = batch_rows(&options, &descs);
    let value_bytes = descs
        .iter()
        .map(|d| match d {
            BufferDesc::Text { max_str_len } => *max_str_len,
            BufferDesc::Binary { max_bytes } => *max_bytes,
            _ => 0,
        })
        .collect();
    let fetch = if options.row_by_row {
        Fetch::Rows {
            cursor,
            batch_rows,
            ended: false,
        }
    } else {
        let buffer = ColumnarDynBuffer::try_from_descs(batch_rows, descs)
            .map_err(odbc_error("allocating the ODBC fetch buffers"))?;
        Fetch::Block(
            cursor
                .bind_buffer(buffer)
                .map_err(odbc_error("binding the fetch buffers"))?,
        )
    };
    Ok(OdbcReader {
        fetch,
        schema: Arc::new(Schema::new(fields)),
        columns,
        value_bytes,
        adaptive,
        options,
        rows_read: 0,
        replaced: BTreeMap::new(),
        truncated: BTreeMap::new(),
        invalid_dates: BTreeMap::new(),
        auto_unique,
        odbc_types,
    })
}

impl OdbcReader {
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The next batch, `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, EtlError> {
        match self.fetch {
            Fetch::Rows { .. } => self.next_rows(),
            Fetch::Block(_) => self.next_block(),
        }
    }
}

/// What the query's columns are read as.
#[derive(Default)]
struct Described {
    fields: Vec<Field>,
    columns: Vec<Col>,
    descs: Vec<BufferDesc>,
    /// Whether the driver calls each column auto-unique (an identity).
    auto_unique: Vec<bool>,
    /// The ODBC type each column was described with.
    odbc_types: Vec<String>,
    /// Whether each column's buffer grows as longer values come.
    adaptive: Vec<bool>,
}

/// Each of the `n` columns of the query: its name in the source's code
/// page, its ODBC type (or the cast asked for it), the Arrow type and
/// buffer it is read into; a column etl cannot map is a problem named
/// with what to write instead.
fn describe<C>(
    cursor: &mut C,
    n: u16,
    options: &OdbcOptions,
    table: Option<&str>,
) -> Result<Described, EtlError>
where
    C: odbc_api::ResultSetMetadata + odbc_api::handles::AsStatementRef,
{
    let mut d = Described::default();
    let mut problems = Vec::new();
    for i in 1..=n {
        // SQLDescribeCol, not SQLColAttribute: MDBTools lacks the latter.
        // Names come narrow, in the source's code page, like its text.
        let mut description = odbc_api::ColumnDescription::default();
        cursor
            .describe_col(i, &mut description)
            .map_err(odbc_error("describing the query"))?;
        let name = decode_name(&description.name, options.encoding)
            .map_err(|e| EtlError::Config(format!("column {i}: {e}")))?;
        let t = description.data_type;
        d.auto_unique.push(is_auto_unique(cursor, i));
        d.odbc_types.push(format!("{t:?}"));
        let t = match options.cast_for(table, &name) {
            None => t,
            Some(Cast::Text) => odbc_api::DataType::LongVarchar { length: None },
            Some(Cast::Binary) => odbc_api::DataType::LongVarbinary { length: None },
        };
        let mut sizing = types::Sizing::new(options, &name);
        let Some((col, arrow, desc)) = types::mapping(t, options.row_by_row, &mut sizing) else {
            let key = match table {
                Some(t) => format!("{t}.{name}"),
                None => name.clone(),
            };
            problems.push(format!(
                "column {name:?} has ODBC type {t:?}, which etl cannot map; read it as text or bytes with [source.casts] \"{key}\" = \"text\" (or \"binary\"), or cast it in the query"
            ));
            continue;
        };
        let mut field = Field::new(name, arrow, true);
        if matches!(col, Col::Uuid) {
            field = field.with_metadata(
                [(
                    etl_pg::pg_binary::EXTENSION_NAME.to_string(),
                    "arrow.uuid".to_string(),
                )]
                .into(),
            );
        }
        d.fields.push(field);
        d.columns.push(col);
        d.descs.push(desc);
        d.adaptive.push(sizing.adaptive);
    }
    if !problems.is_empty() {
        return Err(EtlError::Config(problems.join("\n  ")));
    }
    Ok(d)
}

/// Rows per batch: batch_rows, or fewer when a row's buffers are wide.
fn batch_rows(options: &OdbcOptions, descs: &[BufferDesc]) -> usize {
    let row_bytes: usize = descs
        .iter()
        .map(|d| d.bytes_per_row() + std::mem::size_of::<isize>())
        .sum::<usize>()
        .max(1);
    options
        .batch_rows
        .min(options.batch_bytes / row_bytes)
        .max(1)
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
