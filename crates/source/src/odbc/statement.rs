//! The ODBC calls under the reader: connecting, SQL text in the source's
//! code page, statements with typed parameters, cursors, and the catalog
//! functions (SQLTables, SQLPrimaryKeys, ...) read as rows.

use encoding_rs::Encoding;
use odbc_api::{Connection, ConnectionOptions, Cursor, ResultSetMetadata};

use etl_pg::error::EtlError;

/// An ODBC error, its SQLSTATE kept as data ([`EtlError::Odbc`]'s `state`).
pub fn odbc_error(context: impl Into<String>) -> impl FnOnce(odbc_api::Error) -> EtlError {
    let context = context.into();
    move |e| {
        let state = match &e {
            odbc_api::Error::Diagnostics { record, .. } => Some(record.state.as_str().to_string()),
            _ => None,
        };
        EtlError::Odbc {
            context,
            state,
            message: e.to_string(),
        }
    }
}

/// Connects to an ODBC data source; errors carry the driver's message.
pub fn connect(connection_string: &str) -> Result<Connection<'static>, EtlError> {
    let env = odbc_api::environment().map_err(odbc_error("starting ODBC"))?;
    // MDBTools reads past the last attribute's value when no `;` ends it
    // ("Unable to locate database nwind.mdbN").
    let terminated;
    let connection_string = if connection_string.trim_end().ends_with(';') {
        connection_string
    } else {
        terminated = format!("{};", connection_string.trim_end());
        &terminated
    };
    env.connect_with_connection_string(connection_string, ConnectionOptions::default())
        .map_err(odbc_error("connecting through ODBC"))
}

/// SQL text as the driver expects it: in the source's code page.
///
/// odbc-api's narrow calls pass Rust's UTF-8 through unchanged; a driver
/// whose client encoding is CP949 (psqlODBC ANSI with `client_encoding`
/// UHC) would read a Korean table name in them as other characters.
pub fn encode_sql<'a>(
    sql: &'a str,
    encoding: &'static Encoding,
) -> Result<std::borrow::Cow<'a, [u8]>, EtlError> {
    let (bytes, _, unmappable) = encoding.encode(sql);
    if unmappable {
        let bad: String = sql
            .chars()
            .filter(|c| {
                let mut buf = [0u8; 4];
                encoding.encode(c.encode_utf8(&mut buf)).2
            })
            .collect();
        return Err(EtlError::Config(format!(
            "the SQL {sql:?} holds characters that {} cannot encode ({bad:?}), so the source could not read it; rename the table or column, or change encoding",
            encoding.name()
        )));
    }
    Ok(bytes)
}

/// The outcome of a raw ODBC call, for odbc-api's diagnostics.
pub(super) fn sql_result(
    ret: odbc_api::sys::SqlReturn,
    function: &'static str,
) -> odbc_api::handles::SqlResult<()> {
    use odbc_api::handles::SqlResult;
    use odbc_api::sys::SqlReturn;
    match ret {
        SqlReturn::SUCCESS => SqlResult::Success(()),
        SqlReturn::SUCCESS_WITH_INFO => SqlResult::SuccessWithInfo(()),
        SqlReturn::NO_DATA => SqlResult::NoData,
        _ => SqlResult::Error { function },
    }
}

/// Makes a statement's pending result a cursor, or `None` when the call
/// produced no result set.
pub(super) fn into_cursor<S: odbc_api::handles::Statement>(
    statement: S,
    ret: odbc_api::sys::SqlReturn,
    function: &'static str,
) -> Result<Option<odbc_api::CursorImpl<S>>, odbc_api::Error> {
    if ret == odbc_api::sys::SqlReturn::NO_DATA {
        return Ok(None);
    }
    sql_result(ret, function).into_result(&statement)?;
    cursor_of(statement)
}

/// The cursor of a statement that ran, or `None` without result columns.
pub(super) fn cursor_of<S: odbc_api::handles::Statement>(
    statement: S,
) -> Result<Option<odbc_api::CursorImpl<S>>, odbc_api::Error> {
    // SAFETY: the call succeeded, so the statement is in cursor state if
    // it has result columns; without them it is dropped as a statement.
    let mut cursor = unsafe { odbc_api::CursorImpl::new(statement) };
    if cursor.num_result_cols()? == 0 {
        return Ok(None);
    }
    Ok(Some(cursor))
}

/// A value bound to a `?` of a query: chunk bounds and keys go to the
/// driver as typed parameters, never spliced into SQL text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Param {
    /// µs since 1970-01-01, bound as an SQL TIMESTAMP.
    Timestamp(i64),
    /// Days since 1970-01-01, bound as an SQL DATE.
    Date(i32),
    /// Bound as an SQL BIGINT.
    Int(i64),
    /// Bound as VARCHAR, in the source's code page.
    Text(String),
}

impl std::fmt::Display for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Param::Timestamp(t) => f.write_str(&etl_base::time::format_timestamp(*t)),
            Param::Date(d) => {
                f.write_str(&etl_base::time::format_timestamp(*d as i64 * 86_400_000_000)[..10])
            }
            Param::Int(i) => write!(f, "{i}"),
            Param::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// The ODBC buffers of `params`, which must live until the statement ran.
pub(super) fn parameter_buffers(
    params: &[Param],
    encoding: &'static Encoding,
) -> Result<Vec<Box<dyn odbc_api::parameter::InputParameter>>, EtlError> {
    use odbc_api::parameter::{InputParameter, VarCharBox, WithDataType};
    use odbc_api::sys::{Date, Timestamp};
    use odbc_api::DataType as SqlType;
    let date = |days: i64| {
        let d = chrono::DateTime::from_timestamp(days * 86_400, 0)
            .ok_or_else(|| EtlError::Bug(format!("day {days} out of range")))?
            .date_naive();
        use chrono::Datelike;
        Ok::<_, EtlError>(Date {
            year: d.year() as i16,
            month: d.month() as u16,
            day: d.day() as u16,
        })
    };
    params
        .iter()
        .map(|p| {
            Ok(match p {
                Param::Timestamp(us) => {
                    let t = chrono::DateTime::from_timestamp_micros(*us)
                        .ok_or_else(|| EtlError::Bug(format!("timestamp {us} out of range")))?
                        .naive_utc();
                    use chrono::{Datelike, Timelike};
                    let value = Timestamp {
                        year: t.year() as i16,
                        month: t.month() as u16,
                        day: t.day() as u16,
                        hour: t.hour() as u16,
                        minute: t.minute() as u16,
                        second: t.second() as u16,
                        fraction: t.nanosecond(),
                    };
                    // Precision 0 when the bound is a whole second: drivers
                    // that compare timestamps as text (SQLite) then see
                    // "2025-06-01 00:00:00", as the data is written.
                    let precision = if t.nanosecond() == 0 { 0 } else { 6 };
                    Box::new(WithDataType::new(value, SqlType::Timestamp { precision }))
                        as Box<dyn InputParameter>
                }
                Param::Date(days) => {
                    Box::new(WithDataType::new(date(*days as i64)?, SqlType::Date))
                }
                Param::Int(i) => Box::new(*i),
                Param::Text(t) => {
                    Box::new(VarCharBox::from_vec(encode_sql(t, encoding)?.into_owned()))
                }
            })
        })
        .collect()
}

/// Runs `sql` on `statement`, sent narrow in the source's code page, with
/// `params` bound to its `?` markers.
pub fn execute<S: odbc_api::handles::Statement>(
    mut statement: S,
    sql: &str,
    params: &[Param],
    encoding: &'static Encoding,
) -> Result<Option<odbc_api::CursorImpl<S>>, EtlError> {
    let bytes = encode_sql(sql, encoding)?;
    let length = i32::try_from(bytes.len())
        .map_err(|_| EtlError::Config(format!("the SQL {sql:?} is too long for ODBC")))?;
    let buffers = parameter_buffers(params, encoding)?;
    let failed = |e: odbc_api::Error| {
        let bound: Vec<String> = params.iter().map(|p| p.to_string()).collect();
        odbc_error(if bound.is_empty() {
            format!("running the ODBC query {sql:?}")
        } else {
            format!(
                "running the ODBC query {sql:?} with parameters [{}]",
                bound.join(", ")
            )
        })(e)
    };
    for (i, b) in buffers.iter().enumerate() {
        // SAFETY: `buffers` outlives the execution below, and the bindings
        // are reset before it is dropped.
        unsafe { statement.bind_input_parameter(i as u16 + 1, b.as_ref()) }
            .into_result(&statement)
            .map_err(failed)?;
    }
    // SAFETY: a valid statement handle and a buffer of `length` bytes that
    // outlives the call.
    let ret = unsafe { odbc_api::sys::SQLExecDirect(statement.as_sys(), bytes.as_ptr(), length) };
    // The diagnostics first: the reset below would clear them.
    let ran = match ret {
        odbc_api::sys::SqlReturn::NO_DATA => Ok(false),
        _ => sql_result(ret, "SQLExecDirect")
            .into_result(&statement)
            .map(|_| true),
    };
    if !buffers.is_empty() {
        // Input parameters are read during execution; unbind them before
        // their buffers go.
        let _ = statement.reset_parameters();
    }
    if !ran.map_err(failed)? {
        return Ok(None);
    }
    cursor_of(statement).map_err(failed)
}

/// A catalog function's result (`SQLPrimaryKeys`, `SQLForeignKeys`) read
/// as text, its names sent and decoded in the source's code page. `call`
/// gets the statement handle and the encoded arguments (pointer, length),
/// `None` for a null argument.
pub fn catalog_rows(
    connection: &Connection<'_>,
    function: &'static str,
    arguments: &[Option<&str>],
    columns: &[u16],
    encoding: &'static Encoding,
    call: impl FnOnce(odbc_api::sys::HStmt, &[(*const u8, i16)]) -> odbc_api::sys::SqlReturn,
) -> Result<Vec<Vec<String>>, EtlError> {
    let context = |e: odbc_api::Error| odbc_error(format!("calling {function}"))(e);
    let encoded = arguments
        .iter()
        .map(|a| a.map(|a| encode_sql(a, encoding)).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let pointers: Vec<(*const u8, i16)> = encoded
        .iter()
        .map(|a| match a {
            None => Ok((std::ptr::null(), 0)),
            // An empty slice's pointer dangles: pass null, as odbc-api does.
            Some(b) if b.is_empty() => Ok((std::ptr::null(), 0)),
            Some(b) => i16::try_from(b.len())
                .map(|l| (b.as_ptr(), l))
                .map_err(|_| EtlError::Config(format!("a name for {function} is too long"))),
        })
        .collect::<Result<_, _>>()?;
    let statement = connection.preallocate().map_err(context)?.into_handle();
    use odbc_api::handles::Statement;
    let ret = call(statement.as_sys(), &pointers);
    let Some(mut cursor) = into_cursor(statement, ret, function).map_err(context)? else {
        return Ok(Vec::new());
    };
    // Row by row with SQLGetData: MDBTools refuses row arrays.
    let mut rows = Vec::new();
    let mut buf = Vec::new();
    while let Some(mut row) = cursor.next_row().map_err(context)? {
        let mut values = Vec::with_capacity(columns.len());
        for &c in columns {
            buf.clear();
            let value = if row.get_text(c, &mut buf).map_err(context)? {
                encoding.decode_without_bom_handling(&buf).0.into_owned()
            } else {
                String::new()
            };
            values.push(value);
        }
        rows.push(values);
    }
    Ok(rows)
}

/// Whether the driver says the column is numbered automatically (an Access
/// AutoNumber, a SQL Server identity, SQLite's INTEGER PRIMARY KEY ...).
/// Drivers that do not say (MDBTools) answer false.
pub(super) fn is_auto_unique(
    cursor: &mut impl odbc_api::handles::AsStatementRef,
    column: u16,
) -> bool {
    use odbc_api::handles::{SqlResult, Statement};
    let mut stmt = cursor.as_stmt_ref();
    // SAFETY: AUTO_UNIQUE_VALUE is a numeric attribute.
    match unsafe { stmt.numeric_col_attribute(odbc_api::sys::Desc::AutoUniqueValue, column) } {
        SqlResult::Success(v) | SqlResult::SuccessWithInfo(v) => v == 1,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_goes_out_in_the_code_page_or_names_what_it_cannot_encode() {
        let cp949 = super::super::OdbcOptions::new("cp949").unwrap().encoding;
        // 똠 is one of the syllables only CP949 (UHC) has.
        assert_eq!(
            &encode_sql("SELECT \"똠\"", cp949).unwrap()[..],
            b"SELECT \"\x8c\x63\""
        );
        let e = encode_sql("SELECT * FROM \"표🙂\"", cp949)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot encode (\"🙂\")"), "{e}");
    }
}
