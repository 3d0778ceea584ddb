//! Complex columns (Access 2007 and later) as child tables: a multi-value
//! column, an attachment column or the version history of an append-only
//! Long Text column holds, in each row, only a number linking the row to
//! its values in hidden tables. Each such column becomes a table
//! `{table}_{column}` of one row per value: the parent's primary key, the
//! value's 1-based `ordinal` in the order Access stored them, then
//! - multi-value: `value`, typed as the column's values;
//! - attachment: `file_name`, `file_type` (the extension Access records)
//!   and `data` (the file's bytes, inflated);
//! - version history: `value` (the text of that version) and `modified`;
//!
//! keyed on (parent key, ordinal), with a foreign key to the parent that
//! cascades. The parent then loses the link column. A parent without a
//! primary key keeps the link number, and its child tables are keyed on it
//! instead (no foreign key: nothing in the parent is unique). jetdb reads
//! the hidden tables ([`jetdb::read_complex_column`]); etl only lays them
//! out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use jetdb::{
    ColumnType, ComplexColumn, ComplexKind, ComplexValues, PageReader, RowPosition, TableDef,
    TableRows, Value,
};

use super::values::{arrow_type, Builder};
use super::{file_error, open, table_def};
use crate::catalog::{Action, ForeignKey, Keys};
use crate::{BatchStream, Source, SourceCounts};
use etl_base::plan::{Chunk, Plan, PlannedChunk};
use etl_model::Chunking;
use etl_pg::error::EtlError;

/// The column of each row's position among the values of its parent row.
pub const ORDINAL: &str = "ordinal";

/// The complex columns of `def` etl lays out as child tables (their kind
/// is known), by name.
pub fn child_columns(
    reader: &mut PageReader,
    path: &Path,
    def: &TableDef,
) -> Result<Vec<(String, ComplexColumn)>, EtlError> {
    let catalog = jetdb::read_catalog(reader).map_err(file_error(path, "reading the catalog"))?;
    let mut out = Vec::new();
    for c in def.columns.iter().filter(|c| c.complex_id.is_some()) {
        let complex = jetdb::read_complex_column(reader, &catalog, def, c).map_err(file_error(
            path,
            &format!(
                "reading the values of complex column {:?} of {:?}",
                c.name, def.name
            ),
        ))?;
        if let Some(complex) = complex.filter(|x| x.kind() != ComplexKind::Unknown) {
            out.push((c.name.clone(), complex));
        }
    }
    Ok(out)
}

/// One complex column of an Access table, as a table.
pub struct AccessChild {
    /// `{table}_{column}`: the source name in the plan and the ledger.
    pub name: String,
    /// Access's name of each column's type, for the plan.
    pub access_types: Vec<String>,
    /// The primary key, and the foreign key to the parent (when the parent
    /// has a key).
    pub keys: Keys,
    pub foreign_key: Option<ForeignKey>,
    inner: Arc<Inner>,
}

/// What reading the child's batches needs.
struct Inner {
    path: PathBuf,
    name: String,
    parent: TableDef,
    calculated: HashMap<String, ColumnType>,
    complex: ComplexColumn,
    /// Where the link number is in the parent's columns.
    link: usize,
    /// The parent's columns that key a value to its row.
    key: Vec<usize>,
    schema: SchemaRef,
    /// The values of every row, counted when first asked (a pass over the
    /// parent's rows that reads every value, attachments inflated).
    rows: std::sync::OnceLock<u64>,
    batch_rows: usize,
    bytes_read: AtomicU64,
    counts: Mutex<SourceCounts>,
}

impl AccessChild {
    /// The child table of column `column` of `parent`, keyed on the
    /// parent's `primary_key` (or, without one, on the link number).
    pub fn open(
        path: &Path,
        parent: &str,
        column: &str,
        complex: ComplexColumn,
        primary_key: &[String],
        options: &super::ReadOptions,
    ) -> Result<AccessChild, EtlError> {
        let mut reader = open(path)?;
        let (def, calculated) = table_def(&mut reader, path, parent)?;
        let index = |name: &str| def.columns.iter().position(|c| c.name == name);
        let link = index(column).ok_or_else(|| {
            EtlError::Bug(format!("complex column {column:?} is not in {parent:?}"))
        })?;
        let key: Vec<usize> = if primary_key.is_empty() {
            vec![link]
        } else {
            primary_key.iter().filter_map(|k| index(k)).collect()
        };
        let name = format!("{parent}_{column}");
        let mut fields = Vec::new();
        let mut access_types = Vec::new();
        for &i in &key {
            let c = &def.columns[i];
            let t = if i == link {
                DataType::Int32
            } else {
                arrow_type(c.col_type, c).unwrap_or(DataType::Utf8)
            };
            fields.push(Field::new(&c.name, t, false));
            access_types.push(format!("key of {parent:?}"));
        }
        fields.push(Field::new(ORDINAL, DataType::Int32, false));
        access_types.push("position among the row's values".into());
        let value_fields = value_fields(complex.kind(), || {
            value_type(&mut reader, path, complex.type_table())
        })?;
        for (n, t, a) in value_fields {
            if fields.iter().any(|f| f.name() == n) {
                return Err(EtlError::Config(format!(
                    "{}: the key of {parent:?} has a column named {n:?}, which child table {name:?} of complex column {column:?} also needs; exclude the table or rename the column in Access",
                    path.display()
                )));
            }
            fields.push(Field::new(n, t, true));
            access_types.push(a);
        }
        let key_names: Vec<String> = key.iter().map(|&i| def.columns[i].name.clone()).collect();
        let (keys, foreign_key) = child_keys(&name, parent, key_names, !primary_key.is_empty());
        let inner = Inner {
            path: path.to_path_buf(),
            name: name.clone(),
            parent: def,
            calculated,
            complex,
            link,
            key,
            schema: Arc::new(Schema::new(fields)),
            rows: std::sync::OnceLock::new(),
            batch_rows: options.batch_rows.max(1),
            bytes_read: AtomicU64::new(0),
            counts: Mutex::new(SourceCounts::default()),
        };
        Ok(AccessChild {
            name,
            access_types,
            keys,
            foreign_key,
            inner: Arc::new(inner),
        })
    }

    /// Its rows: the values of every parent row, counted on first use.
    pub fn rows(&self) -> Result<u64, EtlError> {
        if let Some(n) = self.inner.rows.get() {
            return Ok(*n);
        }
        let n = self.inner.count_values()?;
        Ok(*self.inner.rows.get_or_init(|| n))
    }

    fn chunk(&self) -> Chunk {
        Chunk::whole(Some(self.name.clone()))
    }
}

/// A child table's columns after its parent's key and the ordinal: a
/// multi-value's value (of the type `value_type` reads), an attachment's
/// name, type and content, or a Long Text's versions.
fn value_fields(
    kind: ComplexKind,
    value_type: impl FnOnce() -> Result<DataType, EtlError>,
) -> Result<Vec<(&'static str, DataType, String)>, EtlError> {
    Ok(match kind {
        ComplexKind::MultiValue => vec![("value", value_type()?, "multi-value".into())],
        ComplexKind::Attachment => vec![
            ("file_name", DataType::Utf8, "attachment name".into()),
            ("file_type", DataType::Utf8, "attachment type".into()),
            ("data", DataType::Binary, "attachment content".into()),
        ],
        _ => vec![
            ("value", DataType::Utf8, "version of a Long Text".into()),
            (
                "modified",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                "version written".into(),
            ),
        ],
    })
}

/// Child table `name`'s primary key (its parent's key and the ordinal)
/// and, when the parent has a primary key (`keyed`), its foreign key to
/// the parent, cascading.
fn child_keys(
    name: &str,
    parent: &str,
    key_names: Vec<String>,
    keyed: bool,
) -> (Keys, Option<ForeignKey>) {
    let keys = Keys {
        primary_key: key_names
            .iter()
            .cloned()
            .chain([ORDINAL.to_string()])
            .collect(),
        ..Default::default()
    };
    let foreign_key = keyed.then(|| ForeignKey {
        name: format!("{name}_parent"),
        table: name.to_string(),
        columns: key_names.clone(),
        parent: parent.to_string(),
        parent_columns: key_names,
        on_update: Action::Cascade,
        on_delete: Action::Cascade,
    });
    (keys, foreign_key)
}

impl Inner {
    /// The values of every row: the child's row count.
    fn count_values(&self) -> Result<u64, EtlError> {
        let mut reader = open(&self.path)?;
        let mut rows = TableRows::new(&self.parent, &self.calculated);
        let mut n = 0u64;
        while let Some(row) = rows.next_row(&mut reader).map_err(file_error(
            &self.path,
            &format!("reading table {:?}", self.parent.name),
        ))? {
            if let Value::Long(link) = row.values[self.link] {
                n += values_len(&self.complex.values(&mut reader, link).map_err(file_error(
                    &self.path,
                    &format!("reading the values of {:?}", self.name),
                ))?) as u64;
            }
        }
        Ok(n)
    }
}

/// The type of a multi-value column's values: the one column of its type
/// table (`MSysComplexType_*`).
fn value_type(
    reader: &mut PageReader,
    path: &Path,
    type_table: &str,
) -> Result<DataType, EtlError> {
    let (def, _) = table_def(reader, path, type_table)?;
    def.columns
        .first()
        .and_then(|c| arrow_type(c.col_type, c))
        .ok_or_else(|| {
            EtlError::Config(format!(
                "{}: multi-value type table {type_table:?} holds a type etl cannot read; exclude the table",
                path.display()
            ))
        })
}

fn values_len(v: &ComplexValues) -> usize {
    match v {
        ComplexValues::MultiValue(x) => x.len(),
        ComplexValues::Attachment(x) => x.len(),
        ComplexValues::VersionHistory(x) => x.len(),
        _ => 0,
    }
}

#[async_trait]
impl Source for AccessChild {
    fn schema(&self) -> SchemaRef {
        self.inner.schema.clone()
    }

    fn primary_key(&self) -> &[String] {
        &[]
    }

    async fn plan(&self, _chunking: &Chunking) -> Result<Plan, EtlError> {
        Ok(Plan {
            chunks: vec![PlannedChunk {
                chunk: self.chunk(),
                rows: self.rows()?,
            }],
            ..Default::default()
        })
    }

    async fn open(&self, chunk: &Chunk) -> Result<BatchStream, EtlError> {
        if chunk != &self.chunk() {
            return Err(EtlError::Changed(format!(
                "chunk {chunk} is not child table {:?} of {} read whole",
                self.name,
                self.inner.path.display()
            )));
        }
        let batches = ChildBatches {
            reader: open(&self.inner.path)?,
            child: self.inner.clone(),
            position: RowPosition::default(),
            read: 0,
            empty_files: 0,
            nuls: 0,
        };
        Ok(Box::pin(futures_util::stream::iter(crate::Batches::new(
            batches,
        ))))
    }

    fn bytes_read(&self) -> u64 {
        self.inner.bytes_read.load(Ordering::Relaxed)
    }

    fn counts(&self) -> SourceCounts {
        self.inner
            .counts
            .lock()
            .expect("no panic while holding the lock")
            .clone()
    }
}

/// The child's rows as batches, read from the parent's rows in order.
struct ChildBatches {
    reader: PageReader,
    child: Arc<Inner>,
    position: RowPosition,
    /// Values read.
    read: u64,
    /// Attachments with a name but no content Access stored or jetdb could
    /// inflate.
    empty_files: u64,
    nuls: u64,
}

impl crate::BatchReader for ChildBatches {
    fn batch(&mut self) -> Result<Option<RecordBatch>, EtlError> {
        ChildBatches::batch(self)
    }

    fn finish(&mut self) -> Result<(), EtlError> {
        ChildBatches::finish(self)
    }
}

impl ChildBatches {
    fn batch(&mut self) -> Result<Option<RecordBatch>, EtlError> {
        let child = self.child.clone();
        let err = |what: String| file_error(&child.path, &what);
        let mut builders: Vec<Builder> = child
            .schema
            .fields()
            .iter()
            .map(|f| Builder::new(f.data_type()))
            .collect();
        let mut rows = TableRows::new(&child.parent, &child.calculated).starting_at(self.position);
        while builders[0].len() < child.batch_rows {
            let Some(mut row) = rows
                .next_row(&mut self.reader)
                .map_err(err(format!("reading table {:?}", child.parent.name)))?
            else {
                break;
            };
            let Value::Long(link) = row.values[child.link] else {
                continue;
            };
            let values = child
                .complex
                .values(&mut self.reader, link)
                .map_err(err(format!("reading the values of {:?}", child.name)))?;
            let key: Vec<Value> = child
                .key
                .iter()
                .map(|&i| std::mem::replace(&mut row.values[i], Value::Null))
                .collect();
            let items: Vec<Vec<Value>> = match values {
                ComplexValues::MultiValue(x) => x.into_iter().map(|v| vec![v]).collect(),
                ComplexValues::Attachment(x) => x
                    .into_iter()
                    .map(|a| {
                        if matches!(a.data, Value::Null) && !matches!(a.name, Value::Null) {
                            self.empty_files += 1;
                        }
                        vec![a.name, a.file_type, a.data]
                    })
                    .collect(),
                ComplexValues::VersionHistory(x) => {
                    x.into_iter().map(|v| vec![v.value, v.modified]).collect()
                }
                _ => Vec::new(),
            };
            for (ordinal, item) in items.into_iter().enumerate() {
                self.read += 1;
                let ordinal = Value::Long(ordinal as i32 + 1);
                let cells = key.iter().cloned().chain([ordinal]).chain(item);
                for ((b, v), f) in builders.iter_mut().zip(cells).zip(child.schema.fields()) {
                    b.append(v, &mut self.nuls).map_err(|why| {
                        EtlError::Data(format!(
                            "{}: child table {:?}, value {}, column {:?}: {why}",
                            child.path.display(),
                            child.name,
                            self.read,
                            f.name()
                        ))
                    })?;
                }
            }
        }
        self.position = rows.position();
        if builders[0].len() == 0 {
            return Ok(None);
        }
        let arrays = builders.iter_mut().map(Builder::finish).collect();
        RecordBatch::try_new(child.schema.clone(), arrays)
            .map(Some)
            .map_err(|e| EtlError::Bug(format!("a child batch does not fit its schema: {e}")))
    }

    /// At the end: the values read against the count the plan made.
    fn finish(&mut self) -> Result<(), EtlError> {
        let child = self.child.clone();
        // Against the count, when a plan made it (counting here would read
        // every value a second time).
        if let Some(&planned) = child.rows.get() {
            if self.read != planned {
                return Err(EtlError::Changed(format!(
                    "{}: child table {:?}: read {} values where the plan counted {planned}; the file changed since",
                    child.path.display(),
                    child.name,
                    self.read
                )));
            }
        }
        child.bytes_read.fetch_add(
            child.parent.data_pages.len() as u64 * 4096,
            Ordering::Relaxed,
        );
        if self.empty_files > 0 || self.nuls > 0 {
            let mut counts = child
                .counts
                .lock()
                .expect("no panic while holding the lock");
            if self.empty_files > 0 {
                counts.lines.push(format!(
                    "{} attachment(s) of {} have a name but no content (Access stored none, or it could not be inflated); loaded with data NULL",
                    self.empty_files, child.name
                ));
            }
            if self.nuls > 0 {
                counts.values_changed += self.nuls;
                counts.lines.push(format!(
                    "dropped {} NUL characters from the text of {}",
                    self.nuls, child.name
                ));
            }
        }
        Ok(())
    }
}
