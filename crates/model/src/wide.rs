//! The wide-rows contract between stages, sources and sinks.
//!
//! A batch whose schema carries the metadata [`WIDE_METADATA`] holds wide
//! rows: the columns the metadata names are the index (the wide tables'
//! key), and every other column is a value column, named as it is (a
//! pivot's channel, or a column a SQL stage after the pivot derived). The
//! set of value columns may change from chunk to chunk, so a sink learns
//! them from each batch's schema ([`WideLayout::columns`]), never from the
//! stage that made them. The pivot marks its output; a SQL stage after it
//! keeps the mark; a Parquet file a pivot staged keeps it in the Arrow
//! schema it stores, so etl's Parquet source loads such a folder back into
//! wide tables the same way.
//!
//! A channel whose name cannot be a field name beside the index (empty, or
//! an index column's name) gets a field name of its own, and its name in
//! the field's [`CHANNEL_METADATA`].
//!
//! [`KEY_METADATA`] carries a chunk's key in a staged file whose rows lack
//! the key column (a pivot keyed per ship writes the ship in the path and
//! here, not in the rows).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use serde::{Deserialize, Serialize};

use etl_pg::error::EtlError;

/// Schema metadata naming the index of wide rows (JSON, [`WideLayout`]).
pub const WIDE_METADATA: &str = "etl.wide";
/// Field metadata of a value column whose field name is not its channel's
/// name (an empty name, or one an index column has).
pub const CHANNEL_METADATA: &str = "etl.channel";
/// Field metadata of a bigint or double precision value column some of
/// whose cells may print otherwise as text than their values do: a
/// repeated reading kept by numeric order (10 of 9 and 10, where text
/// order keeps '9'), or a boolean reading (`true`, 1 as a number). Should
/// the column be, or become, text, the chunk must be pivoted again with
/// the channel as text.
pub const AMBIGUOUS_METADATA: &str = "etl.text_ambiguous";
/// Schema metadata of a staged chunk: its key column and key (JSON, [`ChunkKey`]).
pub const KEY_METADATA: &str = "etl.key";

/// A wide column's type, in widening order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Bool,
    Int,
    Float,
    Text,
}

impl Kind {
    /// The PostgreSQL column type.
    pub fn pg_type(self) -> &'static str {
        match self {
            Kind::Bool => "boolean",
            Kind::Int => "bigint",
            Kind::Float => "double precision",
            Kind::Text => "text",
        }
    }

    /// From a catalog type name (`format_type`); `None` for other types.
    pub fn from_pg(name: &str) -> Option<Kind> {
        Some(match name {
            "boolean" => Kind::Bool,
            "bigint" => Kind::Int,
            "double precision" => Kind::Float,
            "text" => Kind::Text,
            _ => return None,
        })
    }

    pub fn arrow(self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Text => DataType::Utf8,
        }
    }

    /// The kind of an Arrow type; `None` for types a wide column cannot hold.
    pub fn of(t: &DataType) -> Option<Kind> {
        Some(match t {
            DataType::Boolean => Kind::Bool,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => Kind::Int,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => Kind::Float,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text,
            _ => return None,
        })
    }
}

/// How wide rows are laid out: their index, and how value columns are
/// spread over a key's tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WideLayout {
    /// The index columns, in key order.
    pub index: Vec<String>,
    /// Value columns per table before a spill table is started.
    pub max_columns: usize,
    /// column -> group (`column_groups`): grouped columns go to their
    /// group's tables.
    #[serde(default)]
    pub groups: BTreeMap<String, String>,
}

/// One batch's columns by the contract.
#[derive(Debug, Clone)]
pub struct WideColumns {
    /// Positions of the index columns, in key order.
    pub index: Vec<usize>,
    /// (position, name, kind) of each value column, in batch order.
    pub values: Vec<(usize, String, Kind)>,
    /// Value columns marked [`AMBIGUOUS_METADATA`], by channel.
    pub ambiguous: Vec<String>,
}

impl WideLayout {
    /// The layout a schema carries, when its rows are wide.
    pub fn of(schema: &Schema) -> Result<Option<WideLayout>, EtlError> {
        let Some(text) = schema.metadata().get(WIDE_METADATA) else {
            return Ok(None);
        };
        serde_json::from_str(text).map(Some).map_err(|e| {
            EtlError::Changed(format!(
                "schema metadata {WIDE_METADATA} is not etl's ({e}): the data was not written by etl, or was changed since"
            ))
        })
    }

    /// `schema` marked as wide rows of this layout (other metadata kept).
    pub fn mark(&self, schema: &Schema) -> Schema {
        let mut metadata = schema.metadata().clone();
        metadata.insert(
            WIDE_METADATA.to_string(),
            serde_json::to_string(self).expect("a layout serialises"),
        );
        Schema::new_with_metadata(schema.fields().clone(), metadata)
    }

    /// The index and value columns of a batch's schema: every column that
    /// is not the index is a value column. A value column must be boolean,
    /// integer, floating point or text; `what` names the batch's origin in
    /// the error.
    pub fn columns(&self, schema: &Schema, what: &str) -> Result<WideColumns, EtlError> {
        let mut index = Vec::with_capacity(self.index.len());
        for name in &self.index {
            index.push(schema.index_of(name).map_err(|_| {
                EtlError::Config(format!(
                    "{what}: wide rows lack the index column {name:?} (columns: {}); a SQL stage after the pivot must keep {}",
                    names(schema),
                    self.index.join(", ")
                ))
            })?);
        }
        let mut values = Vec::new();
        let mut ambiguous = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if index.contains(&i) {
                continue;
            }
            let kind = Kind::of(f.data_type()).ok_or_else(|| {
                EtlError::Config(format!(
                    "{what}: wide column {:?} is {}; wide tables take boolean, bigint, double precision or text columns: cast it in the SQL stage (CAST(... AS DOUBLE) or AS VARCHAR)",
                    f.name(),
                    f.data_type()
                ))
            })?;
            let name = f.metadata().get(CHANNEL_METADATA).unwrap_or(f.name());
            if f.metadata().contains_key(AMBIGUOUS_METADATA) {
                ambiguous.push(name.clone());
            }
            values.push((i, name.clone(), kind));
        }
        Ok(WideColumns {
            index,
            values,
            ambiguous,
        })
    }
}

/// Values as a wide column of `kind`: widened as PostgreSQL's casts would
/// (`true` -> 1), numbers to text as PostgreSQL prints them (`1e+20`).
pub fn conform(array: &ArrayRef, kind: Kind) -> Result<ArrayRef, EtlError> {
    let wrap = |e: arrow::error::ArrowError| {
        EtlError::Data(format!(
            "converting a column's values to {}: {e}",
            kind.pg_type()
        ))
    };
    match (array.data_type(), kind) {
        (t, k) if *t == k.arrow() => Ok(array.clone()),
        (DataType::Float16 | DataType::Float32 | DataType::Float64, Kind::Text) => {
            let doubles = cast(array, &DataType::Float64).map_err(wrap)?;
            Ok(Arc::new(
                doubles
                    .as_primitive::<Float64Type>()
                    .iter()
                    .map(|v| v.map(etl_pg::text::pg_float_text))
                    .collect::<StringArray>(),
            ))
        }
        (DataType::Boolean, Kind::Float) => {
            let ints = cast(array, &DataType::Int64).map_err(wrap)?;
            cast(&ints, &DataType::Float64).map_err(wrap)
        }
        _ => cast(array, &kind.arrow()).map_err(wrap),
    }
}

/// The field of a channel's values beside the index `index`; `ambiguous`
/// marks it [`AMBIGUOUS_METADATA`].
pub fn channel_field(
    channel: &str,
    data_type: DataType,
    index: &[String],
    ambiguous: bool,
) -> Field {
    let mut metadata = std::collections::HashMap::new();
    if ambiguous {
        metadata.insert(AMBIGUOUS_METADATA.to_string(), "true".to_string());
    }
    let name = if !channel.is_empty() && !index.iter().any(|i| i == channel) {
        channel.to_string()
    } else {
        metadata.insert(CHANNEL_METADATA.to_string(), channel.to_string());
        etl_pg::text::fit_identifier(channel, &|n| index.iter().any(|i| i == n))
    };
    Field::new(name, data_type, true).with_metadata(metadata)
}

fn names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{:?}", f.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key of the chunk a staged file holds, when its rows lack the key column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkKey {
    pub column: String,
    /// `None`: the NULL key.
    pub value: Option<String>,
}

impl ChunkKey {
    pub fn of(schema: &Schema) -> Result<Option<ChunkKey>, EtlError> {
        let Some(text) = schema.metadata().get(KEY_METADATA) else {
            return Ok(None);
        };
        serde_json::from_str(text).map(Some).map_err(|e| {
            EtlError::Changed(format!(
                "schema metadata {KEY_METADATA} is not etl's ({e}): the file was not written by etl, or was changed since"
            ))
        })
    }

    pub fn mark(&self, schema: &Schema) -> Schema {
        let mut metadata = schema.metadata().clone();
        metadata.insert(
            KEY_METADATA.to_string(),
            serde_json::to_string(self).expect("a key serialises"),
        );
        Schema::new_with_metadata(schema.fields().clone(), metadata)
    }
}

/// What a pivot reads from the narrow source.
#[derive(Debug)]
pub struct PivotRules {
    pub name_column: String,
    pub format_column: String,
    /// (format, value column, its kind).
    pub formats: Vec<(String, String, Kind)>,
    /// `column_types = "text"`.
    pub text: bool,
    /// Whether the pivot reads the source's rows as they are and nothing
    /// follows it: `etl verify` can then compare its tables with them.
    pub only_stage: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_schema_names_its_index_and_value_columns() {
        let layout = WideLayout {
            index: vec!["t".into()],
            max_columns: 3,
            groups: [("b".to_string(), "g".to_string())].into(),
        };
        let schema = layout.mark(&Schema::new(vec![
            Field::new("a", DataType::Float64, true),
            Field::new("t", DataType::Int64, false),
            Field::new("b", DataType::Utf8, true),
        ]));
        assert_eq!(WideLayout::of(&schema).unwrap(), Some(layout.clone()));
        let c = layout.columns(&schema, "chunk").unwrap();
        assert_eq!(c.index, [1]);
        assert_eq!(
            c.values,
            [
                (0, "a".to_string(), Kind::Float),
                (2, "b".into(), Kind::Text)
            ]
        );
        let bad = Schema::new(vec![Field::new("a", DataType::Float64, true)]);
        let e = layout
            .columns(&bad, "transforms[1]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lack the index column \"t\""), "{e}");
        let bad = Schema::new(vec![
            Field::new("t", DataType::Int64, false),
            Field::new("d", DataType::Date32, true),
        ]);
        let e = layout
            .columns(&bad, "transforms[1]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wide column \"d\" is Date32"), "{e}");
        assert_eq!(WideLayout::of(&bad).unwrap(), None);
    }
}
