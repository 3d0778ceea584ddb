//! Files etl's sinks wrote, read back for `etl verify`: a Parquet file as
//! it is, a CSV file through the CSV source's reader in the types the sink
//! wrote (the runner compares them with the source's rows).

use std::fs::File;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use etl_model::verify::{FileFormat, WrittenFile};
use etl_pg::error::EtlError;

use crate::csv::types::ColType;

/// The batches of a file a sink wrote, in the sink's schema.
pub fn read_back(
    file: &WrittenFile,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch, EtlError>> + Send>, EtlError> {
    let path = &file.path;
    match &file.format {
        FileFormat::Parquet => {
            let io = |e: parquet::errors::ParquetError| EtlError::Io {
                context: format!("reading {}", path.display()),
                source: std::io::Error::other(e),
            };
            let opened = File::open(path).map_err(|e| EtlError::Io {
                context: format!("opening {}", path.display()),
                source: e,
            })?;
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(opened)
                    .and_then(|b| b.build())
                    .map_err(io)?;
            let path = path.clone();
            Ok(Box::new(reader.map(move |b| {
                b.map_err(|e| EtlError::Io {
                    context: format!("reading {}", path.display()),
                    source: std::io::Error::other(e),
                })
            })))
        }
        FileFormat::Csv {
            encoding,
            header,
            delimiter,
            null,
        } => Ok(Box::new(read_csv(
            path,
            &file.schema,
            encoding,
            *header,
            *delimiter,
            null,
        )?)),
    }
}

/// The CSV source type that reads a column back, or `None` when the
/// column's type has no CSV form here.
fn col_type(t: &DataType) -> Option<ColType> {
    Some(match t {
        DataType::Boolean => ColType::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ColType::Smallint,
        DataType::Int32 | DataType::UInt16 => ColType::Integer,
        DataType::Int64 | DataType::UInt32 => ColType::Bigint,
        DataType::Float32 => ColType::Real,
        DataType::Float64 => ColType::Double,
        DataType::Decimal128(p, s) if *s >= 0 => ColType::Numeric {
            precision: *p,
            scale: *s,
        },
        DataType::Date32 => ColType::Date,
        DataType::Timestamp(_, None) => ColType::Timestamp,
        DataType::Timestamp(_, Some(_)) => ColType::Timestamptz,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColType::Text,
        _ => return None,
    })
}

/// A CSV file the sink wrote, in the sink's exact types.
fn read_csv(
    path: &Path,
    schema: &SchemaRef,
    encoding: &'static encoding_rs::Encoding,
    header: bool,
    delimiter: u8,
    null: &str,
) -> Result<impl Iterator<Item = Result<RecordBatch, EtlError>> + Send, EtlError> {
    let types = schema
        .fields()
        .iter()
        .map(|f| {
            col_type(f.data_type()).ok_or_else(|| {
                EtlError::Config(format!(
                    "column {} ({}) has no CSV form to read back",
                    f.name(),
                    f.data_type()
                ))
            })
        })
        .collect::<Result<Vec<ColType>, _>>()?;
    let read = crate::csv::read_file(path, encoding, header, delimiter, null, &types)?;
    let schema = schema.clone();
    // Read back in the CSV source's types, then in the sink's exact ones
    // (an Int8 column reads back as smallint).
    Ok(read.map(move |batch| {
        let batch = batch?;
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                arrow::compute::cast(c, f.data_type())
                    .map_err(|e| EtlError::Config(format!("reading column {} back: {e}", f.name())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| {
            EtlError::Bug(format!("a CSV file read back does not fit its schema: {e}"))
        })
    }))
}
