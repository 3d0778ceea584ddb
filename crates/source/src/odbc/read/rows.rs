//! The row-by-row path, for drivers that refuse row arrays (MDBTools): one
//! row at a time through SQLGetData, each value as text parsed into its
//! column's type, under the same batch limits and value rules.

use super::*;

/// A column's values as the driver gave them, NULL as `None`.
type Column = Vec<Option<Vec<u8>>>;

impl OdbcReader {
    /// The next batch, one row at a time: each value fetched as text (or
    /// bytes) through SQLGetData, then parsed into its column's type.
    pub(super) fn next_rows(&mut self) -> Result<Option<RecordBatch>, EtlError> {
        let (values, rows) = self.fetch_rows()?;
        if rows == 0 {
            return Ok(None);
        }
        let first_row = self.rows_read;
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(values.len());
        for (i, (col, column)) in self.columns.iter().zip(&values).enumerate() {
            let field = self.schema.field(i);
            let name = field.name();
            let column = column.iter().map(|v| v.as_deref());
            arrays.push(match col {
                Col::Text => decode_texts(
                    &self.options,
                    &mut self.replaced,
                    &mut self.truncated,
                    name,
                    first_row,
                    column,
                )?,
                Col::Uuid | Col::TimeText | Col::TimestampTzText => {
                    parse_texts(*col, &mut self.invalid_dates, name, first_row, column)?
                }
                Col::Binary => {
                    capped_binaries(&self.options, &mut self.truncated, name, first_row, column)?
                }
                _ => parse_as(field, *col, first_row, column, &mut self.invalid_dates)?,
            });
        }
        self.rows_read += rows as u64;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map(Some)
            .map_err(|e| EtlError::Bug(format!("building an ODBC batch: {e}")))
    }

    /// Up to a batch of rows, each value's bytes by column, and how many
    /// rows; none at the end.
    fn fetch_rows(&mut self) -> Result<(Vec<Column>, usize), EtlError> {
        let Fetch::Rows {
            cursor,
            batch_rows,
            ended,
        } = &mut self.fetch
        else {
            return Err(EtlError::Bug(
                "rows asked one at a time of a block fetch".into(),
            ));
        };
        let n = self.columns.len();
        let mut values: Vec<Column> = vec![Vec::new(); n];
        let mut bytes = 0usize;
        let mut rows = 0usize;
        // One SQLGetData call per value into a buffer one byte longer than
        // max_text_bytes (and its terminating zero): MDBTools does not hand
        // out a long value in parts; a value that fills it is too long.
        let over_cap = self.options.max_text_bytes + 1;
        let mut buf = vec![0u8; over_cap + 1];
        while !*ended && rows < *batch_rows && bytes < self.options.batch_bytes {
            let Some(mut row) = cursor.next_row().map_err(odbc_error("fetching a row"))? else {
                *ended = true;
                break;
            };
            for (i, col) in self.columns.iter().enumerate() {
                let number = i as u16 + 1;
                let row_number = self.rows_read + rows as u64 + 1;
                let fetch_error = |e: odbc_api::Error| {
                    EtlError::Data(format!(
                        "column {:?}, row {row_number}: {e}",
                        self.schema.field(i).name()
                    ))
                };
                let value = if matches!(col, Col::Binary) {
                    let mut target = odbc_api::parameter::VarBinarySliceMut::from_buffer(
                        &mut buf[..over_cap],
                        odbc_api::buffers::Indicator::NoTotal,
                    );
                    row.get_data(number, &mut target).map_err(fetch_error)?;
                    target.as_bytes().map(<[u8]>::to_vec)
                } else {
                    let mut target = odbc_api::parameter::VarCharSliceMut::from_buffer(
                        &mut buf[..],
                        odbc_api::buffers::Indicator::NoTotal,
                    );
                    row.get_data(number, &mut target).map_err(fetch_error)?;
                    target.as_bytes().map(<[u8]>::to_vec)
                };
                bytes += value.as_ref().map_or(0, Vec::len) + 8;
                values[i].push(value);
            }
            rows += 1;
        }
        Ok((values, rows))
    }
}

/// The driver's text for each value of a column, parsed as the column's
/// type: a value that is not one is an error naming its row; an invalid
/// date or time is NULL, counted.
fn parse_as<'a>(
    field: &Field,
    col: Col,
    first_row: u64,
    values: impl Iterator<Item = Option<&'a [u8]>>,
    invalid_dates: &mut BTreeMap<String, (u64, u64)>,
) -> Result<ArrayRef, EtlError> {
    let name = field.name();
    let text: arrow::array::StringArray = values
        .map(|v| v.map(|b| String::from_utf8_lossy(b).trim().to_string()))
        .collect();
    if let Col::Decimal(_, scale) = col {
        check_scale(&text, name, scale, first_row)?;
    }
    let options = arrow::compute::CastOptions {
        safe: true,
        ..Default::default()
    };
    let parsed = arrow::compute::cast_with_options(&text, field.data_type(), &options)
        .map_err(|e| EtlError::Data(format!("column {name:?}: {e}")))?;
    for r in 0..text.len() {
        if text.is_valid(r) && parsed.is_null(r) {
            let row = first_row + r as u64 + 1;
            if matches!(col, Col::Date | Col::Timestamp | Col::Time) {
                invalid_date(invalid_dates, name, row, text.value(r));
            } else {
                return Err(EtlError::Data(format!(
                    "column {name:?}: row {row} holds {:?}, which is not a {}",
                    text.value(r),
                    field.data_type()
                )));
            }
        }
    }
    Ok(parsed)
}
