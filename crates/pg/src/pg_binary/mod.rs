//! PostgreSQL binary COPY codecs, sans I/O.
//!
//! The source side decodes the bytes of `COPY ... TO STDOUT (FORMAT binary)`
//! into Arrow record batches ([`decode::CopyDecoder`]); the sink side encodes
//! record batches into the bytes `COPY ... FROM STDIN (FORMAT binary)` reads
//! ([`encode::CopyEncoder`]). Neither touches a socket: the callers feed and
//! drain byte buffers, which keeps the codecs testable and benchable alone.
//!
//! [`PgType`] is the one place that says how a PostgreSQL type maps to Arrow.
//! The mapping (PostgreSQL -> Arrow -> PostgreSQL):
//!
//! | PostgreSQL | Arrow | notes |
//! |---|---|---|
//! | boolean | Boolean | |
//! | smallint, integer, bigint | Int16, Int32, Int64 | |
//! | real, double precision | Float32, Float64 | |
//! | numeric(p,s), p <= 38 | Decimal128(p,s) | NaN/Infinity are errors naming the row |
//! | numeric, unconstrained or p > 38 | Utf8, every digit kept | field metadata `etl.pg_type = numeric` |
//! | text, varchar, bpchar, name, enums | Utf8 | enums load as text into created tables |
//! | json, jsonb | Utf8 | metadata keeps json/jsonb for created tables |
//! | bytea | Binary | |
//! | date | Date32 | `infinity`/`-infinity` are `i32::MAX`/`i32::MIN` |
//! | time | Time64(µs) | |
//! | timestamp | Timestamp(µs) | `infinity`/`-infinity` are `i64::MAX`/`i64::MIN` |
//! | timestamptz | Timestamp(µs, "UTC") | same sentinels |
//! | interval | Interval(MonthDayNano) | nanoseconds are whole microseconds |
//! | uuid | FixedSizeBinary(16), extension `arrow.uuid` | |
//! | one-dimensional arrays of the above | List | lower bounds other than 1 are not kept |

pub mod decode;
pub mod encode;
pub mod numeric;
pub mod rows;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};

/// The 11-byte signature that opens every binary COPY stream.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Signature, flags (i32) and header extension length (i32).
pub const HEADER_LEN: usize = 19;

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
pub const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Field metadata key that keeps the source's PostgreSQL type name, so a
/// created target table gets `jsonb` rather than `text`, `numeric(12,2)`
/// rather than a guess.
pub const PG_TYPE_METADATA: &str = "etl.pg_type";
/// Arrow's canonical extension name key.
pub const EXTENSION_NAME: &str = "ARROW:extension:name";

/// Type OIDs from `pg_type.dat`; stable across PostgreSQL versions.
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// A PostgreSQL column type as etl understands it: what it decodes from,
/// encodes to, and which Arrow type carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `numeric(p,s)` with `p <= 38`: exact in a Decimal128.
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// Unconstrained `numeric` (or `p > 38`): carried as its decimal text.
    NumericText,
    /// text, varchar, bpchar, name, enum labels, json.
    Text,
    Jsonb,
    Bytea,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Uuid,
    /// A one-dimensional array; `element_oid` is written into every encoded
    /// array value, and PostgreSQL checks it against the column's element type.
    Array {
        element: Box<PgType>,
        element_oid: u32,
    },
}

/// A column type that etl cannot carry, with the name PostgreSQL gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("type {type_name} (oid {oid}) is not supported")]
pub struct UnsupportedType {
    pub type_name: String,
    pub oid: u32,
}

/// What the catalog says of one type, enough to pick a [`PgType`].
#[derive(Debug, Clone)]
pub struct TypeInfo {
    pub oid: u32,
    pub name: String,
    /// `atttypmod`: -1 when unconstrained.
    pub typmod: i32,
    /// `true` for enum types (`typtype = 'e'`).
    pub is_enum: bool,
    /// Element type of an array type.
    pub element: Option<Box<TypeInfo>>,
}

impl PgType {
    /// Picks the codec for a catalog type.
    pub fn from_type_info(info: &TypeInfo) -> Result<PgType, UnsupportedType> {
        if let Some(element) = &info.element {
            if element.element.is_some() {
                return Err(UnsupportedType {
                    type_name: info.name.clone(),
                    oid: info.oid,
                });
            }
            let inner = PgType::from_type_info(element).map_err(|_| UnsupportedType {
                type_name: info.name.clone(),
                oid: info.oid,
            })?;
            return Ok(PgType::Array {
                element: Box::new(inner),
                element_oid: element.oid,
            });
        }
        if info.is_enum {
            return Ok(PgType::Text);
        }
        Ok(match info.oid {
            oid::BOOL => PgType::Bool,
            oid::INT2 => PgType::Int2,
            oid::INT4 => PgType::Int4,
            oid::INT8 => PgType::Int8,
            oid::FLOAT4 => PgType::Float4,
            oid::FLOAT8 => PgType::Float8,
            oid::NUMERIC => numeric_from_typmod(info.typmod),
            oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::JSON => PgType::Text,
            oid::JSONB => PgType::Jsonb,
            oid::BYTEA => PgType::Bytea,
            oid::DATE => PgType::Date,
            oid::TIME => PgType::Time,
            oid::TIMESTAMP => PgType::Timestamp,
            oid::TIMESTAMPTZ => PgType::Timestamptz,
            oid::INTERVAL => PgType::Interval,
            oid::UUID => PgType::Uuid,
            other => {
                return Err(UnsupportedType {
                    type_name: info.name.clone(),
                    oid: other,
                });
            }
        })
    }

    /// The Arrow type that carries values of this type.
    pub fn arrow_type(&self) -> DataType {
        match self {
            PgType::Bool => DataType::Boolean,
            PgType::Int2 => DataType::Int16,
            PgType::Int4 => DataType::Int32,
            PgType::Int8 => DataType::Int64,
            PgType::Float4 => DataType::Float32,
            PgType::Float8 => DataType::Float64,
            PgType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            PgType::NumericText | PgType::Text | PgType::Jsonb => DataType::Utf8,
            PgType::Bytea => DataType::Binary,
            PgType::Date => DataType::Date32,
            PgType::Time => DataType::Time64(TimeUnit::Microsecond),
            PgType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            PgType::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
            PgType::Uuid => DataType::FixedSizeBinary(16),
            PgType::Array { element, .. } => DataType::List(Arc::new(element.arrow_field("item"))),
        }
    }

    /// An Arrow field of this type, nullable, with the metadata that lets a
    /// sink tell `jsonb` from `text` and a UUID from 16 opaque bytes.
    pub fn arrow_field(&self, name: &str) -> Field {
        let mut metadata = HashMap::new();
        match self {
            PgType::Uuid => {
                metadata.insert(EXTENSION_NAME.to_string(), "arrow.uuid".to_string());
            }
            PgType::NumericText => {
                metadata.insert(PG_TYPE_METADATA.to_string(), "numeric".to_string());
            }
            PgType::Jsonb => {
                metadata.insert(PG_TYPE_METADATA.to_string(), "jsonb".to_string());
            }
            _ => {}
        }
        Field::new(name, self.arrow_type(), true).with_metadata(metadata)
    }
}

fn numeric_from_typmod(typmod: i32) -> PgType {
    // typmod = ((precision << 16) | scale) + VARHDRSZ; scale may be negative
    // (PostgreSQL 15+) and is stored in the low 11 bits, sign-extended.
    if typmod < 4 {
        return PgType::NumericText;
    }
    let packed = typmod - 4;
    let precision = (packed >> 16) & 0xffff;
    let scale = ((packed & 0x7ff) ^ 1024) - 1024;
    if precision <= 38 && (-38..=38).contains(&scale) {
        PgType::Decimal {
            precision: precision as u8,
            scale: scale as i8,
        }
    } else {
        PgType::NumericText
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_typmod_picks_decimal_or_text() {
        // Given typmods as PostgreSQL computes them: numeric(12,2), numeric(50,10), numeric
        let n12_2 = ((12 << 16) | 2) + 4;
        let n50 = ((50 << 16) | 10) + 4;
        // Then
        assert_eq!(
            numeric_from_typmod(n12_2),
            PgType::Decimal {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(numeric_from_typmod(n50), PgType::NumericText);
        assert_eq!(numeric_from_typmod(-1), PgType::NumericText);
    }

    #[test]
    fn negative_scale_is_sign_extended() {
        // Given numeric(5,-2), allowed since PostgreSQL 15
        let typmod = ((5 << 16) | (-2i32 & 0x7ff)) + 4;
        assert_eq!(
            numeric_from_typmod(typmod),
            PgType::Decimal {
                precision: 5,
                scale: -2
            }
        );
    }
}
