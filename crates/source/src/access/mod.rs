//! MS Access files read natively through the `jetdb` crate (pure Rust,
//! Jet3 to ACE), beside the ODBC route through MDBTools: keys come from
//! the index types the file records, dates from the stored day counts,
//! Currency and Decimal exact.
//!
//! [`AccessTable`] is one table as a [`Source`]: a whole-table chunk whose
//! rows are read a batch at a time (`jetdb::TableRows` from the position
//! the previous batch ended at, so only one batch is in memory). A row
//! jetdb cannot decode fails the table: the rows read must be the count the
//! table's header records. [`catalog`] reads keys, AutoNumber columns,
//! indexes and enforced relationships for a migration.
//!
//! `[source] type = "access"` is a migration (`etl::migrate`) with one
//! `AccessTable` per table, and one [`AccessChild`] per complex column
//! (multi-value, attachment, version history). Not yet (issue 16): an
//! encoding override for Access 97, ranges of big tables.

mod complex;
pub mod config;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use jetdb::{ColumnType, PageReader, TableDef};

use super::{BatchStream, Source, SourceCounts};
use crate::catalog::{Action, Catalog, ForeignKey, Index, Keys};
use crate::odbc::Cast;
use etl_base::plan::{Chunk, Plan, PlannedChunk};
use etl_model::Chunking;
use etl_pg::error::EtlError;

pub use complex::{child_columns, AccessChild};
pub use values::arrow_type;
use values::Recode;

/// An Access file read natively, table by table.
#[derive(Debug, Clone)]
pub struct AccessSpec {
    pub path: PathBuf,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub options: ReadOptions,
}

/// An Access file's error: reading it failed (I/O, retried where any
/// I/O error would be: [`EtlError::is_transient`]), or its bytes are not
/// what the format says.
fn file_error(path: &Path, what: &str) -> impl FnOnce(jetdb::FileError) -> EtlError {
    let context = format!("{}: {what}", path.display());
    move |e| match e {
        jetdb::FileError::Io(source) => EtlError::Io { context, source },
        other => EtlError::Config(format!("{context}: {other}")),
    }
}

pub fn open(path: &Path) -> Result<PageReader, EtlError> {
    PageReader::open(path).map_err(file_error(path, "opening the Access file"))
}

/// The file's user tables, in the file's order.
pub fn table_names(path: &Path) -> Result<Vec<String>, EtlError> {
    let mut reader = open(path)?;
    jetdb::table_names(&mut reader).map_err(file_error(path, "reading the catalog"))
}

/// One table's definition, read from the file.
pub fn table_def(
    reader: &mut PageReader,
    path: &Path,
    name: &str,
) -> Result<(TableDef, HashMap<String, ColumnType>), EtlError> {
    let catalog = jetdb::read_catalog(reader).map_err(file_error(path, "reading the catalog"))?;
    let entry = jetdb::find_table(&catalog, name)
        .map_err(file_error(path, &format!("finding table {name:?}")))?;
    let def = jetdb::read_table_def(reader, &entry.name, entry.table_page).map_err(file_error(
        path,
        &format!("reading the definition of {name:?}"),
    ))?;
    let calculated = jetdb::calculated_column_types_in(&catalog, &def);
    Ok((def, calculated))
}

/// Keys, AutoNumber columns and indexes of `tables`, and the relationships
/// between them that Access enforces (the others are notes, not
/// constraints).
pub fn catalog(path: &Path, tables: &[String]) -> Result<Catalog, EtlError> {
    let mut reader = open(path)?;
    let mut out = Catalog {
        keys_from: "the Access file (jetdb: index types and relationships as stored)".into(),
        ..Default::default()
    };
    for name in tables {
        let (def, _) = table_def(&mut reader, path, name)?;
        let column = |num: u16| {
            def.columns
                .iter()
                .find(|c| c.col_num == num)
                .map(|c| c.name.clone())
        };
        let mut keys = Keys {
            identity: def
                .columns
                .iter()
                .filter(|c| c.is_auto_number() && c.col_type == ColumnType::Long)
                .map(|c| c.name.clone())
                .collect(),
            ..Default::default()
        };
        for index in &def.indexes {
            let columns: Option<Vec<String>> =
                index.columns.iter().map(|c| column(c.col_num)).collect();
            let Some(columns) = columns.filter(|c| !c.is_empty()) else {
                continue;
            };
            if index.index_type == jetdb::index_type::PRIMARY {
                keys.primary_key = columns;
            } else if index.index_type == jetdb::index_type::ORDINARY {
                keys.indexes.push(Index {
                    name: index.name.clone(),
                    unique: index.flags & jetdb::index_flags::UNIQUE != 0,
                    columns,
                });
            }
        }
        out.keys.insert(name.clone(), keys);
    }
    let relationships = jetdb::read_relationships(&mut reader)
        .map_err(file_error(path, "reading the relationships"))?;
    for r in relationships {
        if !tables.contains(&r.from_table) || !tables.contains(&r.to_table) {
            continue;
        }
        if !r.has_referential_integrity() {
            let columns = |f: fn(&jetdb::RelationshipColumn) -> &String| {
                r.columns
                    .iter()
                    .map(f)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.left_out.push(format!(
                "relationship {:?}: {:?} ({}) -> {:?} ({}): Access does not enforce it (its rows need not match), so no foreign key is made",
                r.name,
                r.from_table,
                columns(|c| &c.from_column),
                r.to_table,
                columns(|c| &c.to_column)
            ));
            continue;
        }
        out.foreign_keys.push(ForeignKey {
            name: r.name.clone(),
            table: r.from_table.clone(),
            columns: r.columns.iter().map(|c| c.from_column.clone()).collect(),
            parent: r.to_table.clone(),
            parent_columns: r.columns.iter().map(|c| c.to_column.clone()).collect(),
            on_update: action(r.flags & jetdb::relationship_flags::CASCADE_UPDATE),
            on_delete: action(r.flags & jetdb::relationship_flags::CASCADE_DELETE),
        });
    }
    Ok(out)
}

/// A relationship's cascade flag as the foreign key's action.
fn action(flag: u32) -> Action {
    if flag != 0 {
        Action::Cascade
    } else {
        Action::NoAction
    }
}

/// How an Access file's tables are read.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub batch_rows: usize,
    /// Access 97 files: the code page of their text, over the header's.
    pub encoding: Option<&'static encoding_rs::Encoding>,
    /// Bytes not valid in `encoding` as U+FFFD (counted), not an error.
    pub replace_invalid: bool,
    /// `Table.Column` or `Column`: read as text or bytes.
    pub casts: BTreeMap<String, Cast>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            batch_rows: 10_000,
            encoding: None,
            replace_invalid: false,
            casts: BTreeMap::new(),
        }
    }
}

/// How the file's text is decoded, for the plan; an error when
/// `source.encoding` is set on a file that stores Unicode.
pub fn text_encoding(path: &Path, options: &ReadOptions) -> Result<String, EtlError> {
    text_encoding_of(&open(path)?, path, options)
}

/// [`text_encoding`] of a file already open.
fn text_encoding_of(
    reader: &PageReader,
    path: &Path,
    options: &ReadOptions,
) -> Result<String, EtlError> {
    Ok(match (reader.text_encoding().jet3_code_page(), options.encoding) {
        (None, None) => "Unicode (Access 2000 and later)".into(),
        (None, Some(_)) => {
            return Err(EtlError::Config(format!(
                "{}: source.encoding applies to Access 97 (Jet3) files, whose text is in a code page; this file stores Unicode: remove source.encoding",
                path.display()
            )))
        }
        (Some(cp), None) => match codepage::to_encoding(cp) {
            Some(e) => format!("code page {cp} ({}) as the file's header names it; set source.encoding if the text reads wrong", e.name()),
            None => format!("code page {cp}, which etl does not know: read as Latin-1; set source.encoding to the file's code page"),
        },
        (Some(cp), Some(e)) => format!(
            "{} (source.encoding; the header names code page {cp})",
            e.name()
        ),
    })
}

/// One table of an Access file.
pub struct AccessTable {
    path: PathBuf,
    def: TableDef,
    calculated: HashMap<String, ColumnType>,
    schema: SchemaRef,
    /// The columns read, by position in the table, and how (a cast).
    columns: Vec<(usize, Option<Cast>)>,
    recode: Option<Recode>,
    /// Access's name of each column's type, for the plan.
    pub access_types: Vec<String>,
    batch_rows: usize,
    bytes_read: Arc<AtomicU64>,
    counts: Arc<Mutex<SourceCounts>>,
}

impl AccessTable {
    /// Table `name`, without the columns in `skip` (complex columns read
    /// as child tables).
    pub fn open(
        path: &Path,
        name: &str,
        skip: &[String],
        options: &ReadOptions,
    ) -> Result<AccessTable, EtlError> {
        let mut reader = open(path)?;
        text_encoding_of(&reader, path, options)?;
        let recode = Recode::new(&reader, options);
        let (def, calculated) = table_def(&mut reader, path, name)?;
        let mut fields = Vec::new();
        let mut access_types = Vec::new();
        let mut columns = Vec::new();
        for (i, c) in def.columns.iter().enumerate() {
            if skip.contains(&c.name) {
                continue;
            }
            let t = calculated.get(&c.name).copied().unwrap_or(c.col_type);
            let cast = options
                .casts
                .get(&format!("{name}.{}", c.name))
                .or_else(|| options.casts.get(&c.name))
                .copied();
            columns.push((i, cast));
            let arrow = match cast {
                Some(Cast::Text) => Some(arrow::datatypes::DataType::Utf8),
                Some(Cast::Binary) => Some(arrow::datatypes::DataType::Binary),
                None => arrow_type(t, c),
            };
            let arrow = arrow.ok_or_else(|| {
                EtlError::Config(format!(
                    "{}: table {name:?} column {:?} has an Access type etl cannot read ({t:?}); read it as bytes with [source.casts] \"{name}.{}\" = \"binary\", exclude the table, or read it through the MDBTools ODBC route",
                    path.display(),
                    c.name,
                    c.name
                ))
            })?;
            fields.push(Field::new(&c.name, arrow, true));
            access_types.push(values::access_type_name(t, c, def.shown_size(c)));
        }
        Ok(AccessTable {
            path: path.to_path_buf(),
            def,
            calculated,
            schema: Arc::new(Schema::new(fields)),
            columns,
            recode,
            access_types,
            batch_rows: options.batch_rows.max(1),
            bytes_read: Arc::new(AtomicU64::new(0)),
            counts: Arc::new(Mutex::new(SourceCounts::default())),
        })
    }

    /// The rows the table's header records.
    pub fn rows(&self) -> u64 {
        u64::from(self.def.num_rows)
    }

    fn chunk(&self) -> Chunk {
        Chunk::whole(Some(self.def.name.clone()))
    }
}

#[async_trait]
impl Source for AccessTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn primary_key(&self) -> &[String] {
        &[]
    }

    async fn plan(&self, _chunking: &Chunking) -> Result<Plan, EtlError> {
        Ok(Plan {
            chunks: vec![PlannedChunk {
                chunk: self.chunk(),
                rows: self.rows(),
            }],
            ..Default::default()
        })
    }

    async fn open(&self, chunk: &Chunk) -> Result<BatchStream, EtlError> {
        if chunk != &self.chunk() {
            return Err(EtlError::Changed(format!(
                "chunk {chunk} is not table {:?} of {} read whole",
                self.def.name,
                self.path.display()
            )));
        }
        let reader = open(&self.path)?;
        // Its data pages (4 KiB from Jet4 on, 2 KiB in Jet3: an estimate).
        self.bytes_read
            .fetch_add(self.def.data_pages.len() as u64 * 4096, Ordering::Relaxed);
        let batches = values::Batches {
            reader,
            path: self.path.clone(),
            def: self.def.clone(),
            calculated: self.calculated.clone(),
            schema: self.schema.clone(),
            columns: self.columns.clone(),
            recode: self.recode,
            batch_rows: self.batch_rows,
            position: Default::default(),
            read: 0,
            nuls: 0,
            replaced: 0,
            counts: self.counts.clone(),
        };
        Ok(Box::pin(futures_util::stream::iter(crate::Batches::new(
            batches,
        ))))
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    fn counts(&self) -> SourceCounts {
        self.counts
            .lock()
            .expect("no panic while holding the lock")
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_cannot_be_read_is_retried_a_broken_one_is_not() {
        let path = Path::new("db.accdb");
        let lost = file_error(path, "reading table \"t\"")(jetdb::FileError::Io(
            std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        ));
        assert!(lost.is_transient(), "{lost:?}");
        assert!(
            lost.to_string()
                .starts_with("db.accdb: reading table \"t\""),
            "{lost}"
        );
        let missing = file_error(path, "opening the Access file")(jetdb::FileError::Io(
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
        assert!(!missing.is_transient());
        let broken = file_error(path, "reading the catalog")(jetdb::FileError::TableNotFound {
            name: "x".into(),
        });
        assert!(!broken.is_transient());
    }
}
