//! The discover phase: a source's catalog read (the ODBC driver's, or
//! MDBTools' `mdb-schema`, or an Access file's through jetdb), its tables
//! selected and described, ordered parents first, each with the runner
//! that loads it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use super::{Migration, Origin, Table, TableSource};
use etl_pg::error::EtlError;
use etl_run::Runner;
use etl_run::ValidatedPipeline;
use etl_sink::spec::PostgresSinkSpec;
use etl_sink::spec::ValidatedSink;
use etl_source::access::{AccessChild, AccessTable};
use etl_source::catalog::{self, ForeignKey, Keys};
use etl_source::csv::{CsvSource, CsvSpec};
use etl_source::odbc::catalog as odbc_catalog;
use etl_source::odbc::{self, process, OdbcSource};
use etl_source::spec::{AccessSpec, OdbcRelation, OdbcSpec};
use etl_source::Source;

/// The table a source table `name` loads into: the PostgreSQL sink's
/// `table` rendered for it; into files, the name itself (for people: the
/// file sink renders its paths from the chunk's key).
fn target_name(
    sink: &Option<PostgresSinkSpec>,
    name: &str,
) -> Result<etl_base::sql::TableName, EtlError> {
    match sink {
        Some(sink) => sink
            .table
            .render(Some(name))
            .map_err(|e| EtlError::Config(format!("sinks.table for source table {name:?}: {e}"))),
        None => Ok(etl_base::sql::TableName {
            schema: None,
            name: name.to_string(),
        }),
    }
}

impl Migration {
    /// A discovered source: its tables in load order, each with its source
    /// and runner, and what its catalog says.
    pub(super) fn assemble(
        p: &ValidatedPipeline,
        origin: Origin,
        sink: Option<PostgresSinkSpec>,
        (tables, sources, runners): (Vec<Table>, Vec<TableSource>, Vec<Runner>),
        cycle: Vec<String>,
        catalog: catalog::Catalog,
    ) -> Migration {
        Migration {
            pipeline: p.name.clone(),
            origin,
            sink,
            workers: p.chunks.workers,
            tables,
            sources,
            runners,
            cycle,
            foreign_keys: catalog.foreign_keys,
            keys_from: catalog.keys_from,
            left_out: catalog.left_out,
        }
    }

    /// Reads the source's catalog and describes every table; writes nothing.
    pub fn discover(p: &ValidatedPipeline) -> Result<Migration, EtlError> {
        let sink = match p.sinks.as_slice() {
            [ValidatedSink::Postgres(s)] => Some(s.clone()),
            [ValidatedSink::Csv(_) | ValidatedSink::Parquet(_)] => None,
            _ => {
                return Err(EtlError::Config(
                    "a migration needs exactly one [[sinks]]: postgres, or csv or parquet (a file per table)".into(),
                ))
            }
        };
        let p = &into_existing(p);
        match &p.source {
            etl_source::spec::ValidatedSource::Odbc(spec) => Self::discover_odbc(p, spec, sink),
            etl_source::spec::ValidatedSource::Access(spec) => Self::discover_access(p, spec, sink),
            etl_source::spec::ValidatedSource::PostgresDatabase(spec) => {
                Self::discover_postgres(p, spec, sink)
            }
            etl_source::spec::ValidatedSource::Csv(spec) => Self::discover_csv(p, spec, sink),
            _ => Err(EtlError::Bug(
                "Migration::discover on a source that is not a database".into(),
            )),
        }
    }

    /// An Access file through jetdb: its tables, keys and relationships as
    /// the file records them; each table one chunk.
    fn discover_access(
        p: &ValidatedPipeline,
        spec: &AccessSpec,
        sink: Option<PostgresSinkSpec>,
    ) -> Result<Migration, EtlError> {
        let path = &spec.path;
        let all = etl_source::access::table_names(path)?;
        let names = select_tables(&all, &spec.include, &spec.exclude)?;
        let mut catalog = etl_source::access::catalog(path, &names)?;
        // Complex columns become child tables: the parent reads without
        // them when it has a key to link them by.
        let mut children: BTreeMap<String, Arc<AccessChild>> = BTreeMap::new();
        let mut skip: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut reader = etl_source::access::open(path)?;
        for name in &names {
            let (def, _) = etl_source::access::table_def(&mut reader, path, name)?;
            let primary_key = catalog
                .keys
                .get(name)
                .map(|k| k.primary_key.clone())
                .unwrap_or_default();
            for (column, complex) in etl_source::access::child_columns(&mut reader, path, &def)? {
                let child =
                    AccessChild::open(path, name, &column, complex, &primary_key, &spec.options)?;
                if names.contains(&child.name) || children.contains_key(&child.name) {
                    return Err(EtlError::Config(format!(
                        "{}: complex column {column:?} of {name:?} becomes child table {:?}, which is also the name of a table in the file; exclude one of them (source.exclude) or rename it in Access",
                        path.display(),
                        child.name
                    )));
                }
                if !primary_key.is_empty() {
                    skip.entry(name.clone()).or_default().push(column);
                }
                catalog.keys.insert(child.name.clone(), child.keys.clone());
                catalog.foreign_keys.extend(child.foreign_key.clone());
                children.insert(child.name.clone(), Arc::new(child));
            }
        }
        // Access indexes the link column; it is the child's key now.
        for (table, columns) in &skip {
            if let Some(keys) = catalog.keys.get_mut(table) {
                keys.indexes
                    .retain(|i| !i.columns.iter().any(|c| columns.contains(c)));
            }
        }
        let all_names: Vec<String> = names.iter().chain(children.keys()).cloned().collect();
        let (order, cycle) = catalog::load_order(&all_names, &catalog.foreign_keys);
        let (mut described, mut sources, mut runners) = (Vec::new(), Vec::new(), Vec::new());
        for name in order {
            let target = target_name(&sink, &name)?;
            let (source, access_types, table): (Arc<dyn Source>, _, _) = match children.get(&name) {
                Some(child) => (
                    child.clone(),
                    child.access_types.clone(),
                    TableSource::AccessChild(child.clone()),
                ),
                None => {
                    let skip = skip.get(&name).map_or(&[][..], Vec::as_slice);
                    let t = Arc::new(AccessTable::open(path, &name, skip, &spec.options)?);
                    (t.clone(), t.access_types.clone(), TableSource::Access(t))
                }
            };
            let keys = catalog.keys.get(&name).cloned().unwrap_or_default();
            check_keys(&name, &source.schema(), &keys, &catalog.foreign_keys)?;
            runners.push(Runner::with_source(
                p.clone(),
                source.clone(),
                keys.identity.clone(),
            )?);
            described.push(Table {
                range_key: None,
                source: name,
                target,
                schema: source.schema(),
                source_types: access_types,
                keys,
            });
            sources.push(table);
        }
        Ok(Migration::assemble(
            p,
            Origin::Access(spec.clone()),
            sink,
            (described, sources, runners),
            cycle,
            catalog,
        ))
    }

    /// CSV files, each a table of its own: its header, its types (inferred
    /// from its own sample), its byte ranges; no keys, in name order.
    fn discover_csv(
        p: &ValidatedPipeline,
        spec: &CsvSpec,
        sink: Option<PostgresSinkSpec>,
    ) -> Result<Migration, EtlError> {
        let (mut described, mut sources, mut runners) = (Vec::new(), Vec::new(), Vec::new());
        for file in CsvSource::per_file(spec)? {
            let file = Arc::new(file);
            let name = file
                .paths()
                .next()
                .map(etl_source::csv::stem)
                .unwrap_or_default();
            let target = target_name(&sink, &name)?;
            runners.push(Runner::with_source(p.clone(), file.clone(), Vec::new())?);
            described.push(Table {
                range_key: None,
                source: name,
                target,
                schema: file.schema(),
                source_types: file.types_described(),
                keys: Keys::default(),
            });
            sources.push(TableSource::Csv(file));
        }
        let catalog = catalog::Catalog {
            keys_from: "none: CSV files have no keys".into(),
            ..Default::default()
        };
        Ok(Migration::assemble(
            p,
            Origin::Csv(spec.clone()),
            sink,
            (described, sources, runners),
            Vec::new(),
            catalog,
        ))
    }

    /// An ODBC source: the driver's catalog (MDBTools': `mdb-schema`).
    fn discover_odbc(
        p: &ValidatedPipeline,
        spec: &OdbcSpec,
        sink: Option<PostgresSinkSpec>,
    ) -> Result<Migration, EtlError> {
        let spec = &odbc::prepare(spec);
        let encoding = spec.options.encoding;
        let connection = odbc::connect(&spec.connection_string)?;
        let quote = odbc::quote_char(&connection);
        let quote_name = |name: &str| odbc::quote_with(quote, name);
        let sqlite = connection
            .database_management_system_name()
            .is_ok_and(|n| n.to_ascii_lowercase().contains("sqlite"));
        let mut tables = Vec::new();
        let (names, catalog) = match &spec.relation {
            OdbcRelation::Query(q) => {
                tables.push(("query".to_string(), q.clone()));
                (Vec::new(), catalog::Catalog::default())
            }
            OdbcRelation::Tables { include, exclude } => {
                let all = odbc_catalog::user_tables(&connection, encoding)?;
                let names = select_tables(&all, include, exclude)?;
                let catalog = if odbc_catalog::is_mdbtools(&spec.connection_string) {
                    let file = odbc_catalog::dbq(&spec.connection_string).ok_or_else(|| {
                        EtlError::Config(
                            "the MDBTools connection string has no DBQ=<file>; etl reads the Access file's keys from it".into(),
                        )
                    })?;
                    odbc_catalog::from_mdb_schema(std::path::Path::new(&file), &names)?
                } else {
                    odbc_catalog::from_odbc(&connection, &names, encoding)?
                };
                (names, catalog)
            }
        };
        drop(connection);
        let (order, cycle) = catalog::load_order(&names, &catalog.foreign_keys);
        tables.extend(order.into_iter().map(|t| {
            let select = format!("SELECT * FROM {}", quote_name(&t));
            (t, select)
        }));
        // At least this many chunks of a big table at once.
        let min_parts = (p.chunks.workers as u64).max(spec.readers as u64);

        let tables_of = OdbcTables {
            p,
            spec,
            sink: &sink,
            catalog: &catalog,
            quote,
            sqlite,
            min_parts,
        };
        let mut described = Vec::new();
        let (mut sources, mut runners) = (Vec::new(), Vec::new());
        for (name, select) in tables {
            let (table, source, runner) = tables_of.table(name, select)?;
            runners.push(runner);
            sources.push(TableSource::Odbc(source));
            described.push(table);
        }
        Ok(Migration::assemble(
            p,
            Origin::Odbc(spec.clone()),
            sink,
            (described, sources, runners),
            cycle,
            catalog,
        ))
    }
}

/// What every table of an ODBC source is discovered with.
struct OdbcTables<'a> {
    p: &'a ValidatedPipeline,
    spec: &'a OdbcSpec,
    sink: &'a Option<PostgresSinkSpec>,
    catalog: &'a catalog::Catalog,
    /// The driver's identifier quote.
    quote: char,
    sqlite: bool,
    /// At least this many chunks of a big table at once.
    min_parts: u64,
}

impl OdbcTables<'_> {
    /// One table (or the query): its columns as the driver describes
    /// them, its keys, how a big one is cut (a one-column key of integers,
    /// times or text; a SQLite table's rowid), its source and runner.
    fn table(
        &self,
        name: String,
        select: String,
    ) -> Result<(Table, Arc<OdbcSource>, Runner), EtlError> {
        let OdbcTables {
            p,
            spec,
            sink,
            catalog,
            ..
        } = *self;
        let target = target_name(sink, &name)?;
        let mut options = spec.options.clone();
        options.batch_rows = 1;
        let table = (name != "query").then_some(name.as_str());
        let reader = process::ReadRequest::new(&spec.connection_string, &select, table, &options)
            .open()
            .map_err(|e| EtlError::Config(format!("source table {name:?}: {e}")))?;
        let mut keys = catalog.keys.get(&name).cloned().unwrap_or_default();
        for (field, auto) in reader.schema().fields().iter().zip(&reader.auto_unique) {
            if *auto && !keys.identity.contains(field.name()) {
                keys.identity.push(field.name().clone());
            }
        }
        check_keys(&name, &reader.schema(), &keys, &catalog.foreign_keys)?;
        let relation = match table {
            Some(t) => odbc::Relation::Table(t.to_string()),
            None => odbc::Relation::Query(select.clone()),
        };
        let (range_key, source) = self.cut(&relation, reader.schema(), &keys);
        let mut config = p.clone();
        // The sink finds a range's rows by its column; rowid is not
        // one, and a text part's rows are the source's to find.
        config.chunks.range_column = range_key
            .clone()
            .filter(|(k, kind)| {
                reader.schema().field_with_name(k).is_ok() && *kind != odbc::KeyKind::Text
            })
            .map(|(k, _)| k);
        let runner = Runner::with_source(config, source.clone(), keys.identity.clone())?;
        let table = Table {
            range_key,
            source: name,
            target,
            schema: reader.schema(),
            source_types: reader.odbc_types.clone(),
            keys,
        };
        Ok((table, source, runner))
    }

    /// How a big table is cut, and its source reading that way: by a
    /// one-column primary key of integers, times or text; a SQLite table
    /// without an integer key by its rowid (cheaper to cut and to read
    /// than a time or text key), unless it has none (WITHOUT ROWID).
    fn cut(
        &self,
        relation: &odbc::Relation,
        schema: SchemaRef,
        keys: &Keys,
    ) -> (Option<(String, odbc::KeyKind)>, Arc<OdbcSource>) {
        let row_by_row = self.spec.options.row_by_row;
        let mut range_key = match keys.primary_key.as_slice() {
            [k] if !row_by_row => schema
                .field_with_name(k)
                .ok()
                .and_then(|f| odbc::KeyKind::of(f.data_type()))
                .map(|kind| (k.clone(), kind)),
            _ => None,
        };
        let source_of = |split: Option<odbc::Split>| {
            Arc::new(OdbcSource::table(
                self.spec,
                relation,
                self.quote,
                schema.clone(),
                split,
                self.p.chunks.range_rows,
                self.min_parts,
            ))
        };
        let mut source = source_of(range_key.as_ref().map(|(k, kind)| odbc::Split {
            key: odbc::SplitKey::Column(k.clone()),
            kind: *kind,
        }));
        let integer = matches!(range_key, Some((_, odbc::KeyKind::Integer)));
        let table = matches!(relation, odbc::Relation::Table(_));
        if !integer && self.sqlite && table && !row_by_row {
            // The rowid unquoted: SQLite reads an unknown quoted name as a
            // string.
            let by_rowid = source_of(Some(odbc::Split {
                key: odbc::SplitKey::Rowid,
                kind: odbc::KeyKind::Integer,
            }));
            if by_rowid.has_rowid() {
                source = by_rowid;
                range_key = Some(("rowid".to_string(), odbc::KeyKind::Integer));
            } else if matches!(range_key, Some((_, odbc::KeyKind::Time(_)))) {
                // SQLite compares times as the text stored, which
                // bound timestamps do not match: read it whole.
                range_key = None;
                source = source_of(None);
            }
        }
        (range_key, source)
    }
}

/// The pipeline as each table's runner loads it: into existing tables
/// (`create_table = false`), a whole table's chunk empties its table with
/// DELETE (TRUNCATE refuses a table another's foreign key references), and
/// with `fk_handling = "replica-role"` each chunk runs with
/// `session_replication_role = replica`.
pub(super) fn into_existing(p: &ValidatedPipeline) -> ValidatedPipeline {
    let mut p = p.clone();
    if let [ValidatedSink::Postgres(s)] = p.sinks.as_mut_slice() {
        s.whole_by_delete = !s.create_table;
        s.replica_role =
            !s.create_table && s.fk_handling == etl_sink::spec::FkHandling::ReplicaRole;
    }
    p
}

/// The tables `include` names (`*`: all of them) but `exclude`, checked
/// against those the source has.
pub(super) fn select_tables(
    all: &[String],
    include: &[String],
    exclude: &[String],
) -> Result<Vec<String>, EtlError> {
    let mut names: Vec<String> = if include.iter().any(|t| t == "*") {
        all.to_vec()
    } else {
        let missing: Vec<&String> = include.iter().filter(|t| !all.contains(t)).collect();
        if !missing.is_empty() {
            return Err(EtlError::Config(format!(
                "source.tables names {missing:?}, which the source does not have; its tables are: {all:?}"
            )));
        }
        include.to_vec()
    };
    for x in exclude {
        if !all.contains(x) {
            tracing::warn!(
                table = x,
                "source.exclude names a table the source does not have."
            );
        }
    }
    names.retain(|t| !exclude.contains(t));
    if names.is_empty() {
        return Err(EtlError::Config(
            "the source has no user tables left to load (check source.tables and source.exclude)"
                .into(),
        ));
    }
    Ok(names)
}

/// A key's columns must be columns of the table.
fn check_keys(
    table: &str,
    schema: &SchemaRef,
    keys: &Keys,
    fks: &[ForeignKey],
) -> Result<(), EtlError> {
    let has = |c: &String| schema.field_with_name(c).is_ok();
    let mut missing: Vec<String> = keys
        .primary_key
        .iter()
        .chain(&keys.identity)
        .chain(keys.indexes.iter().flat_map(|i| &i.columns))
        .chain(
            fks.iter()
                .filter(|f| f.table == table)
                .flat_map(|f| &f.columns),
        )
        .filter(|c| !has(c))
        .cloned()
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    Err(EtlError::Config(format!(
        "source table {table:?}: its keys name columns {missing:?}, which its SELECT * does not return"
    )))
}
