//! The pivot's kernel: two passes over a chunk's readings. Pass one
//! ([`Pivot::place`]) hashes each reading once into its (wide row, channel)
//! and learns the channels and their kinds, which is the chunk's wide
//! schema; pass two ([`fill`]) fills the cells, keeping the greatest of
//! repeated readings. [`super::pending`] runs pass two when the chunk is
//! read, or as a DataFusion operator planned with pass one's schema under
//! a SQL stage.

use super::*;

/// Index rows (as the row converter encodes them) in order, each with
/// its provisional id.
type IndexOrder = Vec<(Box<[u8]>, u32)>;

/// What pass one learned about a chunk, and what pass two needs.
pub(super) struct Placed {
    /// The stage's place in `[[transforms]]`, for errors.
    pub(super) stage: usize,
    /// The wide schema: the index, then one column per channel in name order.
    pub(super) schema: SchemaRef,
    pub(super) counts: PivotCounts,
    converter: RowConverter,
    /// Index rows in order, with their provisional ids.
    order: IndexOrder,
    /// Provisional id -> final row.
    row_of: Vec<u32>,
    /// Each channel's column kind, by channel id.
    kinds: Vec<Kind>,
    /// (channel, id) in name order.
    names: Vec<(String, u32)>,
    /// Per batch: each row's (time id, channel id); `u32::MAX` for a row
    /// without a value to place.
    placed: Vec<Vec<(u32, u32)>>,
    /// Per batch and row: the value column and its kind.
    formats: Vec<Vec<Option<(usize, Kind)>>>,
    /// The value columns, cast once per batch.
    value_columns: Vec<(usize, Kind)>,
}

/// One channel's cells in the chunk.
enum Cells {
    Bool(Vec<bool>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    Text(Vec<String>),
}

impl Cells {
    /// `n` empty cells of a column of `kind`.
    fn new(kind: Kind, n: usize) -> Self {
        match kind {
            Kind::Bool => Cells::Bool(vec![false; n]),
            Kind::Int => Cells::Int(vec![0; n]),
            Kind::Float => Cells::Float(vec![0.0; n]),
            Kind::Text => Cells::Text(vec![String::new(); n]),
        }
    }

    /// Puts the reading at `row` of `array` (of its format's `kind`) into
    /// cell `at`, converted to the column's kind; a `repeated` cell keeps
    /// the greater of the two, as PostgreSQL's `max` orders them.
    #[inline]
    fn put(&mut self, at: usize, repeated: bool, array: &ArrayRef, row: usize, kind: Kind) {
        match self {
            Cells::Bool(v) => {
                let x = array.as_boolean().value(row);
                v[at] = if repeated { v[at] || x } else { x };
            }
            Cells::Int(v) => {
                let x = match kind {
                    Kind::Bool => array.as_boolean().value(row) as i64,
                    _ => array.as_primitive::<Int64Type>().value(row),
                };
                v[at] = if repeated { v[at].max(x) } else { x };
            }
            Cells::Float(v) => {
                let x = match kind {
                    Kind::Bool => array.as_boolean().value(row) as i64 as f64,
                    Kind::Int => array.as_primitive::<Int64Type>().value(row) as f64,
                    _ => array.as_primitive::<Float64Type>().value(row),
                };
                if !repeated || float_greater(x, v[at]) {
                    v[at] = x;
                }
            }
            Cells::Text(v) => {
                let x = match kind {
                    Kind::Bool => array.as_boolean().value(row).to_string(),
                    Kind::Int => array.as_primitive::<Int64Type>().value(row).to_string(),
                    Kind::Float => pg_float_text(array.as_primitive::<Float64Type>().value(row)),
                    Kind::Text => array.as_string::<i32>().value(row).to_string(),
                };
                if !repeated || x.as_bytes() > v[at].as_bytes() {
                    v[at] = x;
                }
            }
        }
    }

    /// The column: a cell never `set` is NULL.
    fn into_array(self, set: Vec<bool>) -> ArrayRef {
        match self {
            Cells::Bool(v) => Arc::new(BooleanArray::new(v.into(), Some(set.into()))),
            Cells::Int(v) => Arc::new(Int64Array::new(v.into(), Some(set.into()))),
            Cells::Float(v) => Arc::new(Float64Array::new(v.into(), Some(set.into()))),
            Cells::Text(v) => Arc::new(StringArray::from_iter(
                v.into_iter().zip(set).map(|(s, ok)| ok.then_some(s)),
            )),
        }
    }
}

impl Pivot {
    /// Pass one: each reading's wide row and channel, the channels'
    /// kinds, and so the chunk's wide schema.
    ///
    /// `text_channels` are made text whatever their readings (their
    /// columns are text in the target already), so that repeated readings
    /// are compared as text.
    pub(super) fn place(
        &self,
        batches: &[RecordBatch],
        text_channels: &HashSet<String>,
    ) -> Result<Placed, EtlError> {
        let sort_fields = self
            .index_fields
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let converter = RowConverter::new(sort_fields).map_err(arrow_error)?;
        let mut gathered = Gathered::default();
        for batch in batches {
            self.gather(&converter, batch, &mut gathered)?;
        }
        let Gathered {
            mut counts,
            times,
            channels,
            kinds: mut channel_kinds,
            saw_bool,
            placed,
            formats,
        } = gathered;
        let (order, row_of) = ordered(times);
        let n = order.len();
        // Each channel's kind: text by the spec or the target, else the
        // widest of its readings'.
        let text = self.spec.text;
        let mut names: Vec<(String, u32)> = channels.into_iter().collect();
        names.sort_unstable();
        for (name, id) in &names {
            if text || text_channels.contains(name) {
                channel_kinds[*id as usize] = Kind::Text;
            }
        }
        let ambiguous = ambiguous(&channel_kinds, &saw_bool, &placed, n);
        // Columns in channel-name order.
        let mut fields: Vec<FieldRef> = self.index_fields.clone();
        for (name, id) in &names {
            fields.push(Arc::new(etl_model::wide::channel_field(
                name,
                channel_kinds[*id as usize].arrow(),
                &self.layout.index,
                ambiguous[*id as usize],
            )));
        }
        counts.wide_rows = n as u64;
        Ok(Placed {
            stage: self.index,
            schema: Arc::new(self.layout.mark(&Schema::new(fields))),
            counts,
            converter,
            order,
            row_of,
            kinds: channel_kinds,
            names,
            placed,
            formats,
            value_columns: self.formats.values().copied().collect(),
        })
    }

    /// Pass one over one batch: each reading's wide row and channel (or
    /// why it has none, counted with examples), the channels' kinds.
    fn gather(
        &self,
        converter: &RowConverter,
        batch: &RecordBatch,
        gathered: &mut Gathered,
    ) -> Result<(), EtlError> {
        let Gathered {
            counts,
            times,
            channels,
            kinds: channel_kinds,
            saw_bool,
            placed,
            formats,
        } = gathered;
        let at = |index: &[ArrayRef], row: usize| {
            index
                .iter()
                .map(|a| arrow::util::display::array_value_to_string(a, row).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", ")
        };
        counts.input_rows += batch.num_rows() as u64;
        let index: Vec<ArrayRef> = self
            .index_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = converter.convert_columns(&index).map_err(arrow_error)?;
        let names = utf8(batch.column(self.name_column))?;
        let fmts = utf8(batch.column(self.format_column))?;
        let mut batch_placed = Vec::with_capacity(batch.num_rows());
        let mut batch_formats: Vec<Option<(usize, Kind)>> = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            batch_formats.push(None);
            if index.iter().any(|a| a.is_null(row)) {
                counts.skip(Skip::NullIndex, || {
                    format!("a row with a NULL in {}", self.spec.index.join(", "))
                });
                batch_placed.push((u32::MAX, u32::MAX));
                continue;
            }
            let next = times.len() as u32;
            let time = *times.entry(rows.row(row).as_ref().into()).or_insert(next);
            let name = (!names.is_null(row)).then(|| names.value(row));
            let format = (!fmts.is_null(row)).then(|| fmts.value(row));
            let Some(name) = name else {
                counts.skip(Skip::NullName, || {
                    format!(
                        "a row at {} with a NULL {}",
                        at(&index, row),
                        self.spec.name_column
                    )
                });
                batch_placed.push((time, u32::MAX));
                continue;
            };
            let Some(&(value_column, kind)) = format.and_then(|f| self.formats.get(f)) else {
                counts.skip(Skip::UnknownFormat, || {
                    format!(
                        "{} {name:?} at {} has {} {}, which is not in values",
                        self.spec.name_column,
                        at(&index, row),
                        self.spec.format_column,
                        format.map_or("NULL".to_string(), |f| format!("{f:?}"))
                    )
                });
                batch_placed.push((time, u32::MAX));
                continue;
            };
            let channel = channel_id(channels, channel_kinds, saw_bool, name, kind);
            if batch.column(value_column).is_null(row) {
                counts.skip(Skip::NullValue, || {
                    format!(
                        "{} {name:?} at {} has a NULL {}",
                        self.spec.name_column,
                        at(&index, row),
                        self.spec
                            .values
                            .iter()
                            .find(|(f, _)| Some(f.as_str()) == format)
                            .map_or("", |(_, v)| v.as_str())
                    )
                });
                batch_placed.push((time, u32::MAX));
                continue;
            }
            batch_formats[row] = Some((value_column, kind));
            batch_placed.push((time, channel));
            if kind == Kind::Bool {
                saw_bool[channel as usize] = true;
            }
        }
        placed.push(batch_placed);
        formats.push(batch_formats);
        Ok(())
    }
}

/// A channel's id, given to it when first seen; its kind widened to
/// `kind`.
fn channel_id(
    channels: &mut HashMap<String, u32>,
    kinds: &mut Vec<Kind>,
    saw_bool: &mut Vec<bool>,
    name: &str,
    kind: Kind,
) -> u32 {
    let channel = match channels.get(name) {
        Some(&c) => c,
        None => {
            let c = channels.len() as u32;
            channels.insert(name.to_string(), c);
            kinds.push(kind);
            saw_bool.push(false);
            c
        }
    };
    let k = &mut kinds[channel as usize];
    *k = (*k).max(kind);
    channel
}

/// Why a reading is not pivoted.
#[derive(Debug, Clone, Copy)]
enum Skip {
    NullIndex,
    NullName,
    UnknownFormat,
    NullValue,
}

impl PivotCounts {
    /// Counts a reading not pivoted, keeping the first few examples of
    /// each reason (`what` is written only for those).
    fn skip(&mut self, why: Skip, what: impl FnOnce() -> String) {
        let (count, reason) = match why {
            Skip::NullIndex => (&mut self.null_index, "null_index"),
            Skip::NullName => (&mut self.null_name, "null_name"),
            Skip::UnknownFormat => (&mut self.unknown_format, "unknown_format"),
            Skip::NullValue => (&mut self.null_value, "null_value"),
        };
        *count += 1;
        if self.examples.iter().filter(|(r, _)| *r == reason).count() < EXAMPLES {
            self.examples.push((reason, what()));
        }
    }
}

/// What pass one gathers, batch by batch.
#[derive(Default)]
struct Gathered {
    counts: PivotCounts,
    /// Each index row's provisional id.
    times: HashMap<Box<[u8]>, u32>,
    /// Each channel's id.
    channels: HashMap<String, u32>,
    /// Each channel's widest kind, by id.
    kinds: Vec<Kind>,
    /// Per channel: whether a boolean reading was placed.
    saw_bool: Vec<bool>,
    /// Per batch: each row's (time id, channel id), `u32::MAX` for a row
    /// without a value to place.
    placed: Vec<Vec<(u32, u32)>>,
    /// Per batch and row: the value column and its kind.
    formats: Vec<Vec<Option<(usize, Kind)>>>,
}

/// Wide rows in index order, and each provisional id's final row.
fn ordered(times: HashMap<Box<[u8]>, u32>) -> (IndexOrder, Vec<u32>) {
    // Wide rows in index order: provisional id -> final row.
    let mut order: Vec<(Box<[u8]>, u32)> = times.into_iter().collect();
    order.sort_unstable();
    let n = order.len();
    let mut row_of = vec![0u32; n];
    for (final_row, (_, id)) in order.iter().enumerate() {
        row_of[*id as usize] = final_row as u32;
    }
    (order, row_of)
}

/// Per channel: a number column whose cells could print otherwise as
/// text (repeated readings: numeric and text order differ; or booleans).
fn ambiguous(
    channel_kinds: &[Kind],
    saw_bool: &[bool],
    placed: &[Vec<(u32, u32)>],
    n: usize,
) -> Vec<bool> {
    // A number column whose cells could print otherwise as text:
    // repeated readings (numeric and text order differ), or booleans.
    let numeric = |k: Kind| matches!(k, Kind::Int | Kind::Float);
    let mut ambiguous: Vec<bool> = channel_kinds
        .iter()
        .zip(saw_bool)
        .map(|(k, b)| numeric(*k) && *b)
        .collect();
    if channel_kinds.iter().any(|k| numeric(*k)) {
        let width = channel_kinds.len();
        // One bit per (row, channel): a chunk of 1,440 rows and 250
        // channels takes 45 KB.
        let mut seen = vec![0u64; (n * width).div_ceil(64)];
        for &(time, channel) in placed.iter().flatten() {
            if channel == u32::MAX || !numeric(channel_kinds[channel as usize]) {
                continue;
            }
            let bit = time as usize * width + channel as usize;
            let (word, mask) = (bit / 64, 1u64 << (bit % 64));
            if seen[word] & mask != 0 {
                ambiguous[channel as usize] = true;
            }
            seen[word] |= mask;
        }
    }
    ambiguous
}

/// Pass two: the cells filled from the readings, the wide batch built in
/// the schema pass one gave (`None` without rows), and the counts.
pub(super) fn fill(
    batches: &[RecordBatch],
    placed: Placed,
) -> Result<(Option<RecordBatch>, PivotCounts), EtlError> {
    let Placed {
        stage,
        schema,
        mut counts,
        converter,
        order,
        row_of,
        kinds,
        names,
        placed,
        formats,
        value_columns,
    } = placed;
    let stage_error = |e: EtlError| match e {
        EtlError::Transform { message, .. } => EtlError::Transform {
            index: stage,
            message,
        },
        other => other,
    };
    let n = order.len();
    if n == 0 {
        return Ok((None, counts));
    }
    let mut cells: Vec<(Cells, Vec<bool>)> = kinds
        .iter()
        .map(|&k| (Cells::new(k, n), vec![false; n]))
        .collect();
    for ((batch, batch_placed), batch_formats) in batches.iter().zip(&placed).zip(&formats) {
        // Value columns in their canonical types, cast once per batch,
        // by column position (no lookup per reading).
        let mut values: Vec<Option<ArrayRef>> = vec![None; batch.num_columns()];
        for (column, kind) in &value_columns {
            values[*column] = Some(
                cast(batch.column(*column), &kind.arrow())
                    .map_err(arrow_error)
                    .map_err(stage_error)?,
            );
        }
        for (row, &(time, channel)) in batch_placed.iter().enumerate() {
            if channel == u32::MAX {
                continue;
            }
            let (column, kind) = batch_formats[row].expect("placed rows have a format");
            let at = row_of[time as usize] as usize;
            let (cells, set) = &mut cells[channel as usize];
            let repeated = set[at];
            set[at] = true;
            if repeated {
                counts.duplicates += 1;
            }
            let array = values[column].as_ref().expect("cast above");
            cells.put(at, repeated, array, row, kind);
        }
    }
    let parser = converter.parser();
    let mut columns: Vec<ArrayRef> = converter
        .convert_rows(order.iter().map(|(bytes, _)| parser.parse(bytes)))
        .map_err(arrow_error)
        .map_err(stage_error)?;
    let mut cells: Vec<Option<(Cells, Vec<bool>)>> = cells.into_iter().map(Some).collect();
    for (_, id) in names {
        let (c, set) = cells[id as usize].take().expect("each channel once");
        columns.push(c.into_array(set));
    }
    let batch = RecordBatch::try_new(schema, columns)
        .map_err(arrow_error)
        .map_err(stage_error)?;
    Ok((Some(batch), counts))
}
