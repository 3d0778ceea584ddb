//! How each ODBC column type is read (the table in the module's header):
//! its kind of column, Arrow type and fetch buffer, the buffers of text
//! and binary columns sized from their declared length.

use super::*;

/// Sizes a text or binary column's fetch buffer: from its declared length,
/// at most one byte over `max_text_bytes` (a value that fills it is
/// longer); a long column starts small (or at what an earlier chunk
/// learned) and grows ([`ADAPTIVE_BYTES`]).
pub(super) struct Sizing {
    over_cap: usize,
    learned: Option<usize>,
    /// Whether the buffer starts small and grows.
    pub(super) adaptive: bool,
}

impl Sizing {
    pub(super) fn new(options: &OdbcOptions, column: &str) -> Self {
        Sizing {
            over_cap: options.max_text_bytes + 1,
            learned: options.text_buffers.get(column).copied(),
            adaptive: false,
        }
    }

    fn sized(&mut self, declared: usize) -> usize {
        if declared > ADAPTIVE_BYTES {
            self.adaptive = true;
            self.learned.unwrap_or(ADAPTIVE_BYTES).clamp(1, declared)
        } else {
            declared.max(1)
        }
    }

    /// A text column of `length` characters: a character may take up to
    /// 4 bytes in the client encoding.
    fn text(&mut self, length: Option<std::num::NonZeroUsize>) -> usize {
        let declared = length
            .map_or(self.over_cap, |l| {
                l.get().saturating_mul(4).min(self.over_cap)
            })
            .max(1);
        self.sized(declared)
    }

    fn binary(&mut self, length: Option<std::num::NonZeroUsize>) -> usize {
        let declared = length.map_or(self.over_cap, |l| l.get().min(self.over_cap));
        self.sized(declared)
    }
}

/// How a column of ODBC type `t` is read: its kind, Arrow type and fetch
/// buffer; `None` for a type etl cannot map. `row_by_row`: the driver is
/// read through SQLGetData (MDBTools).
pub(super) fn mapping(
    t: odbc_api::DataType,
    row_by_row: bool,
    sizing: &mut Sizing,
) -> Option<(Col, DataType, BufferDesc)> {
    use odbc_api::DataType as T;
    Some(match t {
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
        T::Float { .. } | T::Double => (
            Col::F64,
            DataType::Float64,
            BufferDesc::F64 { nullable: true },
        ),
        // MDBTools describes Access Currency (a 64-bit count of
        // 1/10,000 units) as DECIMAL(8,0): read it as numeric(19,4).
        T::Decimal {
            precision: 8,
            scale: 0,
        } if row_by_row => (
            Col::Decimal(19, 4),
            DataType::Decimal128(19, 4),
            BufferDesc::Text { max_str_len: 21 },
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
                max_str_len: sizing.text(length),
            },
        ),
        T::WChar { length } | T::WVarchar { length } | T::WLongVarchar { length } => (
            Col::Text,
            DataType::Utf8,
            BufferDesc::Text {
                max_str_len: sizing.text(length),
            },
        ),
        T::Binary { length } | T::Varbinary { length } | T::LongVarbinary { length } => (
            Col::Binary,
            DataType::Binary,
            BufferDesc::Binary {
                max_bytes: sizing.binary(length),
            },
        ),
        T::Date => (
            Col::Date,
            DataType::Date32,
            BufferDesc::Date { nullable: true },
        ),
        T::Time { precision: 0 } => (
            Col::Time,
            DataType::Time64(TimeUnit::Microsecond),
            BufferDesc::Time { nullable: true },
        ),
        // SQL_SS_TIME2: SQL Server's time(n).
        T::Time { .. }
        | T::Other {
            data_type: odbc_api::sys::SqlDataType(-154),
            ..
        } => (
            Col::TimeText,
            DataType::Time64(TimeUnit::Microsecond),
            BufferDesc::Text { max_str_len: 32 },
        ),
        // SQL_SS_TIMESTAMPOFFSET: SQL Server's datetimeoffset.
        T::Other {
            data_type: odbc_api::sys::SqlDataType(-155),
            ..
        } => (
            Col::TimestampTzText,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            BufferDesc::Text { max_str_len: 48 },
        ),
        // SQL_GUID: SQL Server's uniqueidentifier, psqlODBC's uuid.
        T::Other {
            data_type: odbc_api::sys::SqlDataType(-11),
            ..
        } => (
            Col::Uuid,
            DataType::FixedSizeBinary(16),
            BufferDesc::Text { max_str_len: 40 },
        ),
        T::Timestamp { .. } => (
            Col::Timestamp,
            DataType::Timestamp(TimeUnit::Microsecond, None),
            BufferDesc::Timestamp { nullable: true },
        ),
        _ => return None,
    })
}
