//! `[[transforms]] type = "pivot"`: narrow EAV readings become wide rows.
//!
//! Input rows are `(index..., name, format, value columns...)`; the output
//! has one row per distinct index value (sorted) and one column per name,
//! whose value comes from the value column that the row's format names.
//! This is the in-database query
//! `SELECT index, max(value) FILTER (WHERE name = 'x') AS "x", ... GROUP BY index`,
//! computed in one hand-written pass per chunk instead of one aggregate per
//! channel: a chunk's readings are hashed once into (row, channel) cells.
//!
//! The rules, which `etl verify` and the tests rely on:
//! - Every input row with a non-NULL index makes its wide row, even when it
//!   carries no usable value (as `GROUP BY` does).
//! - A channel gets a column once one of its rows has a known format (even
//!   with a NULL value). Its type is the widest of its formats' value types
//!   in the order boolean < bigint < double precision < text (`column_types
//!   = "text"`: always text). Narrower values are converted as PostgreSQL's
//!   casts do: `true` -> 1, integers to doubles, and to text as PostgreSQL
//!   prints them (`true`, `42`, `1e+20`).
//! - A (index, channel) pair seen more than once keeps the greatest value
//!   (PostgreSQL's `max`: `true` over `false`, NaN over every number, text
//!   in byte order, i.e. `COLLATE "C"`); each extra reading is counted as a
//!   duplicate.
//! - Rows not pivoted are counted by reason, with examples: a NULL index,
//!   a NULL name, a format not in `values`, a NULL in the named value column.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, FieldRef, Float64Type, Int64Type, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use futures_util::StreamExt;

use super::{Flow, Notes, Transform};

#[cfg(feature = "sql")]
pub(crate) mod exec;
mod kernel;
mod pending;
use crate::spec::PivotSpec;
use etl_model::wide::WideLayout;
use etl_pg::error::EtlError;
pub use pending::Pending;

/// Wide rows per output batch.
const OUTPUT_ROWS: usize = 65_536;
/// Examples logged per reason a row was not pivoted.
const EXAMPLES: usize = 3;

pub use etl_model::wide::Kind;
pub use etl_pg::text::pg_float_text;

/// PostgreSQL's order of doubles: NaN above everything.
fn float_greater(a: f64, b: f64) -> bool {
    if a.is_nan() {
        !b.is_nan()
    } else {
        !b.is_nan() && a > b
    }
}

/// What a chunk's pivot did, for the summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PivotCounts {
    pub input_rows: u64,
    pub wide_rows: u64,
    pub null_index: u64,
    pub null_name: u64,
    pub unknown_format: u64,
    pub null_value: u64,
    pub duplicates: u64,
    /// A few rows of each kind (reason, row), for the log and the summary.
    pub examples: Vec<(&'static str, String)>,
}

impl PivotCounts {
    pub fn not_pivoted(&self) -> u64 {
        self.null_index + self.null_name + self.unknown_format + self.null_value
    }
}

pub struct Pivot {
    /// The stage's place in `[[transforms]]`, for its errors.
    index: usize,
    spec: PivotSpec,
    index_columns: Vec<usize>,
    index_fields: Vec<FieldRef>,
    name_column: usize,
    format_column: usize,
    /// format -> (value column, its kind).
    formats: HashMap<String, (usize, Kind)>,
    /// How sinks lay out the wide rows (the output's schema metadata).
    layout: WideLayout,
}

impl Pivot {
    /// Checks the stage against its input's schema.
    pub fn build(index: usize, spec: &PivotSpec, input: SchemaRef) -> Result<Self, EtlError> {
        let fail = |message: String| EtlError::Transform { index, message };
        let column = |name: &str, role: &str| {
            input.index_of(name).map_err(|_| {
                fail(format!(
                    "{role} {name:?} is not a column of the pivot's input (columns: {})",
                    input
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        };
        let mut index_columns = Vec::new();
        for c in &spec.index {
            index_columns.push(column(c, "index column")?);
        }
        let text_column = |name: &str, role: &str| {
            let i = column(name, role)?;
            match input.field(i).data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(i),
                other => Err(fail(format!(
                    "{role} {name:?} is {other}, not text; cast it in a SQL stage before the pivot"
                ))),
            }
        };
        let name_column = text_column(&spec.name_column, "name_column")?;
        let format_column = text_column(&spec.format_column, "format_column")?;
        let mut formats = HashMap::new();
        for (format, value) in &spec.values {
            let i = column(value, &format!("values.{format}"))?;
            let kind = Kind::of(input.field(i).data_type()).ok_or_else(|| {
                fail(format!(
                    "values.{format} names column {value:?} of type {}; a pivot takes boolean, integer, floating point or text values: cast it in a SQL stage before the pivot",
                    input.field(i).data_type()
                ))
            })?;
            formats.insert(format.clone(), (i, kind));
        }
        let index_fields = index_columns
            .iter()
            .map(|&i| Arc::new(input.field(i).clone().with_nullable(false)))
            .collect();
        let layout = WideLayout {
            index: spec.index.clone(),
            max_columns: spec.max_columns,
            groups: match &spec.column_groups {
                Some(path) => read_column_groups(path)?,
                None => Default::default(),
            },
        };
        Ok(Pivot {
            index,
            spec: spec.clone(),
            index_columns,
            index_fields,
            name_column,
            format_column,
            formats,
            layout,
        })
    }

    pub fn spec(&self) -> &PivotSpec {
        &self.spec
    }

    /// (format, value column, its kind), in `values` order.
    pub fn formats(&self) -> Vec<(String, String, Kind)> {
        self.spec
            .values
            .iter()
            .map(|(f, c)| (f.clone(), c.clone(), self.formats[f].1))
            .collect()
    }

    /// The index columns, as every wide table starts.
    pub fn index_fields(&self) -> &[FieldRef] {
        &self.index_fields
    }

    /// Pivots one chunk's rows: the wide batch (index columns, then one
    /// column per channel in name order; `None` without rows) and counts.
    pub fn pivot(
        &self,
        batches: &[RecordBatch],
    ) -> Result<(Option<RecordBatch>, PivotCounts), EtlError> {
        // Errors name this stage's place, whatever it is.
        let placed = self.place(batches, &HashSet::new()).map_err(|e| match e {
            EtlError::Transform { message, .. } => EtlError::Transform {
                index: self.index,
                message,
            },
            other => other,
        })?;
        kernel::fill(batches, placed)
    }
}

/// `column_groups`: `channel,group` lines (a header line `channel,group`
/// is allowed; a channel with a comma or quote is written CSV-quoted).
pub fn read_column_groups(
    path: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, String>, EtlError> {
    let text = std::fs::read_to_string(path).map_err(|e| EtlError::Io {
        context: format!("reading column_groups file {}", path.display()),
        source: e,
    })?;
    let mut groups = std::collections::BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |what: &str| {
            EtlError::Config(format!(
                "column_groups file {}, line {}: {what}; write `channel,group`",
                path.display(),
                n + 1
            ))
        };
        if line.trim().is_empty() || (n == 0 && line.trim() == "channel,group") {
            continue;
        }
        let fields = etl_base::csv_line::split(line).map_err(|e| bad(&e))?;
        let [Some(channel), Some(group)] = fields.as_slice() else {
            return Err(bad(&format!(
                "expected two non-empty fields, found {:?}",
                fields
            )));
        };
        if let Some(before) = groups.insert(channel.clone(), group.clone()) {
            if before != *group {
                return Err(bad(&format!(
                    "channel {channel:?} is also in group {before:?}"
                )));
            }
        }
    }
    Ok(groups)
}

fn arrow_error(e: arrow::error::ArrowError) -> EtlError {
    EtlError::Transform {
        index: 0,
        message: format!("pivot: {e}"),
    }
}

/// A text column as `StringArray` (other string layouts are cast).
fn utf8(array: &ArrayRef) -> Result<std::borrow::Cow<'_, StringArray>, EtlError> {
    match array.as_string_opt::<i32>() {
        Some(a) => Ok(std::borrow::Cow::Borrowed(a)),
        None => {
            let cast = cast(array, &DataType::Utf8).map_err(arrow_error)?;
            Ok(std::borrow::Cow::Owned(cast.as_string::<i32>().clone()))
        }
    }
}

#[async_trait]
impl Transform for Pivot {
    /// The index only: channel columns are known per chunk.
    fn output_schema(&self) -> SchemaRef {
        Arc::new(self.layout.mark(&Schema::new(self.index_fields.clone())))
    }

    fn pivot_rules(&self) -> Option<etl_model::wide::PivotRules> {
        Some(etl_model::wide::PivotRules {
            name_column: self.spec.name_column.clone(),
            format_column: self.spec.format_column.clone(),
            formats: self.formats(),
            text: self.spec.text,
            only_stage: false,
        })
    }

    /// Pass one here; pass two when what it returns is read (as the
    /// sinks' stream, or as the table a SQL stage after this one reads).
    async fn apply(&self, input: Flow, notes: Notes) -> Result<Flow, EtlError> {
        // The whole chunk is needed before any wide row is complete.
        let mut input = input.into_stream();
        let mut batches = Vec::new();
        while let Some(b) = input.next().await {
            batches.push(b?);
        }
        let text_channels = notes
            .lock()
            .expect("no panic while holding the lock")
            .text_channels
            .clone();
        let placed = self.place(&batches, &text_channels).map_err(|e| match e {
            EtlError::Transform { message, .. } => EtlError::Transform {
                index: self.index,
                message,
            },
            other => other,
        })?;
        Ok(Flow::Pivoted(Box::new(Pending::new(
            batches, placed, notes,
        ))))
    }
}

/// Logs what a chunk's pivot left out or found repeated.
fn log_counts(counts: &PivotCounts) {
    if counts.not_pivoted() > 0 || counts.duplicates > 0 {
        tracing::warn!(
            not_pivoted = counts.not_pivoted(),
            duplicates = counts.duplicates,
            examples = %counts.examples.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>().join("; "),
            "Some readings were not pivoted, or repeated a (row, channel) cell (the greatest value is kept)."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, TimeUnit};

    fn spec(text: bool) -> PivotSpec {
        PivotSpec {
            index: vec!["t".into()],
            name_column: "ch".into(),
            format_column: "fmt".into(),
            values: vec![
                ("B".into(), "b".into()),
                ("D".into(), "d".into()),
                ("I".into(), "i".into()),
                ("S".into(), "s".into()),
            ],
            text,
            max_columns: 10,
            column_groups: None,
        }
    }

    #[allow(clippy::type_complexity)]
    fn narrow(
        rows: &[(
            Option<i64>,
            Option<&str>,
            Option<&str>,
            Option<bool>,
            Option<f64>,
            Option<i64>,
            Option<&str>,
        )],
    ) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("ch", DataType::Utf8, true),
            Field::new("fmt", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("d", DataType::Float64, true),
            Field::new("i", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let t = arrow::array::TimestampMicrosecondArray::from(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        )
        .with_timezone("UTC");
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(t),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                Arc::new(BooleanArray::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.4).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.5).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.6).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    #[test]
    fn errors_name_the_stage_by_its_place() {
        // Given a pivot that is the third stage, and a chunk whose decimal
        // column arrives as bytes (no cast to a double exists)
        let b = narrow(&[(Some(20), Some("a"), Some("D"), None, Some(1.5), None, None)]);
        let p = Pivot::build(2, &spec(false), b.schema()).unwrap();
        let mut columns = b.columns().to_vec();
        columns[4] = Arc::new(arrow::array::BinaryArray::from(vec![Some(b"x".as_ref())]));
        let mut fields: Vec<Field> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[4] = Field::new("d", DataType::Binary, true);
        let bad = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        // When pivoted, then the error names transforms[2] (it said [0])
        let err = p.pivot(&[bad]).unwrap_err().to_string();
        assert!(err.starts_with("transforms[2]: pivot: "), "{err}");
    }

    #[test]
    fn pivots_widens_keeps_the_greatest_and_counts_what_it_skips() {
        let b = narrow(&[
            (Some(20), Some("a"), Some("D"), None, Some(1.5), None, None),
            (Some(10), Some("a"), Some("D"), None, Some(2.5), None, None),
            (Some(10), Some("a"), Some("D"), None, Some(0.5), None, None), // duplicate: 2.5 stays
            (Some(10), Some("m"), Some("B"), Some(true), None, None, None),
            (Some(20), Some("m"), Some("I"), None, None, Some(7), None), // m widens to bigint
            (Some(30), Some("z"), Some("X"), None, None, None, None), // unknown format: row 30 exists
            (Some(30), Some("s"), Some("S"), None, None, None, None), // NULL value: column s exists
            (None, Some("a"), Some("D"), None, Some(9.0), None, None), // NULL index
            (Some(20), None, Some("D"), None, Some(9.0), None, None), // NULL name
        ]);
        let p = Pivot::build(0, &spec(false), b.schema()).unwrap();
        let (wide, counts) = p.pivot(&[b.slice(0, 4), b.slice(4, 5)]).unwrap();
        let wide = wide.unwrap();
        let names: Vec<_> = wide
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["t", "a", "m", "s"]);
        assert_eq!(
            wide.column(1)
                .as_primitive::<Float64Type>()
                .iter()
                .collect::<Vec<_>>(),
            [Some(2.5), Some(1.5), None]
        );
        assert_eq!(
            wide.column(2)
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>(),
            [Some(1), Some(7), None]
        );
        assert_eq!(wide.column(3).null_count(), 3);
        assert_eq!(
            counts,
            PivotCounts {
                input_rows: 9,
                wide_rows: 3,
                null_index: 1,
                null_name: 1,
                unknown_format: 1,
                null_value: 1,
                duplicates: 1,
                examples: counts.examples.clone(),
            }
        );
        assert!(
            counts.examples.iter().any(|(_, e)| e.contains(
                "\"z\" at 1970-01-01T00:00:00.000030Z has fmt \"X\", which is not in values"
            )),
            "{:?}",
            counts.examples
        );
    }

    #[test]
    fn text_columns_take_postgresql_spellings_and_byte_order() {
        let b = narrow(&[
            (Some(1), Some("x"), Some("D"), None, Some(1e20), None, None),
            (
                Some(1),
                Some("x"),
                Some("S"),
                None,
                None,
                None,
                Some("Zeta"),
            ),
            (Some(2), Some("x"), Some("B"), Some(false), None, None, None),
            (Some(3), Some("x"), Some("S"), None, None, None, Some("가")),
            (Some(3), Some("x"), Some("S"), None, None, None, Some("z")),
        ]);
        let p = Pivot::build(0, &spec(true), b.schema()).unwrap();
        let (wide, counts) = p.pivot(&[b]).unwrap();
        let x = wide
            .unwrap()
            .column(1)
            .as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_string))
            .collect::<Vec<_>>();
        // "Zeta" > "1e+20" in bytes; "가" (0xEA...) > "z".
        assert_eq!(
            x,
            [Some("Zeta".into()), Some("false".into()), Some("가".into())]
        );
        assert_eq!(counts.duplicates, 2);
    }

    #[cfg(feature = "sql")]
    #[test]
    fn a_sql_stage_after_the_pivot_plans_over_its_operator() {
        // Given a chunk pivoted by the stage (pass one) into a table
        let b = narrow(&[
            (Some(10), Some("a"), Some("D"), None, Some(2.5), None, None),
            (Some(20), Some("a"), Some("D"), None, Some(0.5), None, None),
            (Some(10), Some("m"), Some("I"), None, None, Some(7), None),
            (Some(10), Some("s"), Some("S"), None, None, None, Some("x")),
        ]);
        let p = Pivot::build(0, &spec(false), b.schema()).unwrap();
        let notes = Notes::default();
        let pass_one = || {
            etl_pg::block_on(p.apply(
                Flow::Stream(Box::pin(futures_util::stream::iter(vec![Ok(b.clone())]))),
                notes.clone(),
            ))
            .unwrap()
        };
        let Flow::Pivoted(pending) = pass_one() else {
            panic!("the pivot hands on its chunk after pass one")
        };
        let table: Arc<dyn datafusion::catalog::TableProvider> =
            Arc::new(exec::PivotTable::new(*pending));
        // Its schema is the chunk's channels with their kinds, before any cell is filled
        let fields: Vec<String> = table
            .schema()
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect();
        assert_eq!(fields[1..], ["a Float64", "m Int64", "s Utf8"]);
        assert!(notes.lock().unwrap().pivot.is_none());

        // When a query over it is planned and run
        let sql = crate::sql::SqlTransform::build(
            1,
            "SELECT t, a * 2 AS x FROM input WHERE a > 1",
            table.schema(),
        );
        let sql = etl_pg::block_on(sql).unwrap();
        let ctx = crate::sql::context();
        ctx.register_table("input", table.clone()).unwrap();
        let plan = etl_pg::block_on(async {
            ctx.sql("EXPLAIN SELECT t, a * 2 AS x FROM input WHERE a > 1")
                .await?
                .collect()
                .await
        })
        .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&plan)
            .unwrap()
            .to_string();
        // Then the physical plan is one DataFusion plan with the pivot as its
        // leaf, reading only the columns the query needs (t and a)
        assert!(text.contains("FilterExec"), "{text}");
        assert!(text.contains("PivotExec: 2 wide columns"), "{text}");
        let again = pass_one();
        let out = etl_pg::block_on(async {
            let mut s = sql.apply(again, notes.clone()).await.unwrap().into_stream();
            let mut rows = Vec::new();
            while let Some(b) = s.next().await {
                rows.push(b.unwrap());
            }
            rows
        });
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0]
                .column(1)
                .as_primitive::<Float64Type>()
                .values()
                .to_vec(),
            [5.0]
        );
        // And the counts were noted when pass two ran
        assert_eq!(
            notes.lock().unwrap().pivot.as_ref().map(|c| c.wide_rows),
            Some(2)
        );
    }
}
