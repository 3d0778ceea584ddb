//! The row-by-row path, for drivers that refuse row arrays (MDBTools): one
//! row at a time through SQLGetData, each value as text parsed into its
//! column's type, under the same batch limits and value rules.

use super::*;

impl OdbcReader {
    /// The next batch, one row at a time: each value fetched as text (or
    /// bytes) through SQLGetData, then parsed into its column's type.
    pub(super) fn next_rows(&mut self) -> Result<Option<RecordBatch>, EtlError> {
        let Fetch::Rows {
            cursor,
            batch_rows,
            ended,
        } = &mut self.fetch
        else {
            unreachable!("only called for row-by-row fetching")
        };
        let n = self.columns.len();
        let mut values: Vec<Vec<Option<Vec<u8>>>> = vec![Vec::new(); n];
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
        if rows == 0 {
            return Ok(None);
        }
        let first_row = self.rows_read;
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(n);
        for (i, col) in self.columns.iter().enumerate() {
            let field = self.schema.field(i).clone();
            let name = field.name();
            let column = &values[i];
            let array: ArrayRef = match col {
                Col::Text => decode_texts(
                    &self.options,
                    &mut self.replaced,
                    &mut self.truncated,
                    name,
                    first_row,
                    column.iter().map(|v| v.as_deref()),
                )?,
                Col::Uuid | Col::TimeText | Col::TimestampTzText => parse_texts(
                    *col,
                    &mut self.invalid_dates,
                    name,
                    first_row,
                    column.iter().map(|v| v.as_deref()),
                )?,
                Col::Binary => {
                    let mut b = BinaryBuilder::with_capacity(rows, rows * 16);
                    for (r, v) in column.iter().enumerate() {
                        let row = first_row + r as u64 + 1;
                        b.append_option(
                            v.as_deref()
                                .map(|v| {
                                    cap_value(
                                        &self.options,
                                        &mut self.truncated,
                                        name,
                                        row,
                                        v,
                                        None,
                                    )
                                })
                                .transpose()?,
                        );
                    }
                    Arc::new(b.finish())
                }
                _ => {
                    // The driver's text for the value, parsed as its type.
                    let text: arrow::array::StringArray = column
                        .iter()
                        .map(|v| {
                            v.as_deref()
                                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                        })
                        .collect();
                    if let Col::Decimal(_, scale) = col {
                        check_scale(&text, name, *scale, first_row)?;
                    }
                    let options = arrow::compute::CastOptions {
                        safe: true,
                        ..Default::default()
                    };
                    let parsed =
                        arrow::compute::cast_with_options(&text, field.data_type(), &options)
                            .map_err(|e| EtlError::Data(format!("column {name:?}: {e}")))?;
                    for r in 0..rows {
                        if text.is_valid(r) && parsed.is_null(r) {
                            let row = first_row + r as u64 + 1;
                            if matches!(col, Col::Date | Col::Timestamp | Col::Time) {
                                invalid_date(&mut self.invalid_dates, name, row, text.value(r));
                            } else {
                                return Err(EtlError::Data(format!(
                                    "column {name:?}: row {row} holds {:?}, which is not a {}",
                                    text.value(r),
                                    field.data_type()
                                )));
                            }
                        }
                    }
                    parsed
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
