//! A whole PostgreSQL database (or schemas, or a list of tables) as a
//! migration: the same phases around the same chunk runner as the other
//! origins, with the DDL taken from `pg_dump`:
//!
//! - **discover**: the source's tables from its catalog (partitioned
//!   parents hold no rows: their leaves are loaded; inheritance parents
//!   are read `ONLY`), each a [`PgTable`] handed over as COPY data.
//! - **pre-data** (the create phase): `pg_dump --section=pre-data` of the
//!   same selection, applied on the target in one transaction: schemas,
//!   extensions, types, domains, functions, tables with defaults,
//!   identity, generated columns and CHECKs, partitions, views,
//!   materialized views (without data), sequences, comments.
//! - **data**: the runner's chunks, COPY data forwarded table to table.
//! - **post-data** ([`dump`]): `pg_dump --section=post-data`, split into
//!   its entries, `workers` at a time, each as soon as the earlier ones
//!   on its tables are done ([`order`]): indexes, constraints, foreign
//!   keys, triggers (after the data: they do not fire on the load); then
//!   materialized views refreshed; each entry in its own transaction,
//!   recorded in `etl.phase_log`, so a killed run adds only what is missing.
//! - **sequences**: each set to the source's current value; then the
//!   database's large objects ([`large_objects`]), each with its oid.
//! - **verify**: row count and checksum of every table on both servers.
//!
//! Why `pg_dump` and not DDL generated from the catalog: pg_dump is the
//! one program that knows how to recreate every object kind of every
//! server version, in dependency order (pgcopydb makes the same choice);
//! etl's own part is the data, the parallelism, the resume and the checks.

pub mod dump;
mod existing;
mod large_objects;
mod order;
mod phases;

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use super::{Migration, Origin, Table, TableSource};
use etl_base::sql::TableName;
use etl_pg::block_on;
use etl_pg::error::EtlError;
use etl_pg::pg_binary::rows::CopyFormat;
use etl_pg::{Endpoint, Pool};
use etl_run::Runner;
use etl_run::ValidatedPipeline;
use etl_sink::spec::PostgresSinkSpec;
use etl_source::postgres::table::PgTable;
use etl_source::spec::PgDatabaseSpec;
use etl_source::Source;

/// A PostgreSQL database, and what pg_dump is to dump of it.
pub struct PgOrigin {
    pub spec: PgDatabaseSpec,
    pub selection: dump::Selection,
    /// Each partition's root table (`schema.table` to `schema.table`).
    pub roots: std::collections::HashMap<String, String>,
    /// The post-data section, dumped beside the pre-data one before the
    /// data (taken by the post-data phase; dumped then when absent).
    pub post_data: std::sync::Mutex<Option<dump::Dump>>,
}

/// A table as the source's catalog lists it.
#[derive(Debug, Clone)]
pub struct SourceTable {
    pub schema: String,
    pub name: String,
    /// Columns copied (generated columns are computed by the target).
    pub columns: Vec<String>,
    /// Every column's type reads back the same on another server in binary.
    pub portable: bool,
    /// Each column's type as `format_type` prints it (`numeric(12,2)`).
    pub types: Vec<String>,
    /// A one-column integer primary key.
    pub range_key: Option<String>,
    /// The planner's estimate of its rows.
    pub estimate: i64,
    /// `p`: a partitioned table (its rows are in its partitions).
    pub kind: String,
    /// A partition's root table, `schema.table`.
    pub root: Option<String>,
}

impl SourceTable {
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Whether a pattern of `tables` or `exclude` names it: patterns with
    /// a dot match `schema.table`, others the table's name in any schema.
    fn matches(&self, pattern: &str) -> bool {
        let p = glob::Pattern::new(pattern).ok();
        let subject = if pattern.contains('.') {
            self.qualified_name()
        } else {
            self.name.clone()
        };
        p.is_some_and(|p| p.matches(&subject))
    }
}

const TABLES_SQL: &str = "\
SELECT n.nspname::text, c.relname::text,
  array(SELECT a.attname::text FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
        ORDER BY a.attnum),
  NOT EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
          AND NOT (t.oid < 16384 OR t.typtype = 'e' OR (t.typtype = 'd' AND t.typbasetype < 16384))),
  (SELECT a.attname::text FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnatts = 1 AND a.atttypid IN (20, 21, 23)),
  greatest(c.reltuples, 0)::int8, c.relkind::text,
  CASE WHEN c.relispartition THEN (SELECT format('%s.%s', rn.nspname, r.relname)
        FROM pg_class r JOIN pg_namespace rn ON rn.oid = r.relnamespace
        WHERE r.oid = pg_partition_root(c.oid)) END,
  array(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
        ORDER BY a.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('information_schema', 'etl') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2";

/// The column types of the target's tables, by schema and table, as
/// `format_type` prints them.
type ColumnTypes = HashMap<(String, String), HashMap<String, String>>;

/// The column types of every table of the database at `endpoint`.
async fn target_types(endpoint: &Endpoint, pipeline: &str) -> Result<ColumnTypes, EtlError> {
    let pool = Pool::new(endpoint.clone(), &format!("etl {pipeline}"));
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('information_schema', 'pg_catalog')",
            &[],
        )
        .await
        .map_err(EtlError::pg("reading the target's column types"))?;
    pool.put(client);
    let mut types = ColumnTypes::new();
    for r in rows {
        types
            .entry((r.get(0), r.get(1)))
            .or_default()
            .insert(r.get(2), r.get(3));
    }
    Ok(types)
}

/// Every user table of the source (not an extension's, not etl's ledger).
pub async fn source_tables(client: &Client) -> Result<Vec<SourceTable>, EtlError> {
    let rows = client
        .query(TABLES_SQL, &[])
        .await
        .map_err(EtlError::pg("reading the source's tables from its catalog"))?;
    Ok(rows
        .iter()
        .map(|r| SourceTable {
            schema: r.get(0),
            name: r.get(1),
            columns: r.get(2),
            portable: r.get(3),
            range_key: r.get(4),
            estimate: r.get(5),
            kind: r.get(6),
            root: r.get(7),
            types: r.get(8),
        })
        .collect())
}

/// The tables `spec` selects, in the source's catalog order, and what
/// pg_dump is to dump (of the source's schemas, `namespaces`).
pub fn select(
    spec: &PgDatabaseSpec,
    all: Vec<SourceTable>,
    namespaces: &[String],
) -> Result<(Vec<SourceTable>, dump::Selection), EtlError> {
    let in_schemas = |t: &SourceTable| {
        spec.schemas.is_empty()
            || spec
                .schemas
                .iter()
                .any(|s| glob::Pattern::new(s).is_ok_and(|p| p.matches(&t.schema)))
    };
    // A partition comes with its root.
    let root_named = |t: &SourceTable| {
        t.root.as_ref().is_some_and(|r| {
            all.iter()
                .any(|x| x.qualified_name() == *r && spec.tables.iter().any(|p| x.matches(p)))
        })
    };
    let named = |t: &SourceTable| {
        spec.tables.is_empty() || spec.tables.iter().any(|p| t.matches(p)) || root_named(t)
    };
    for p in &spec.tables {
        if !all.iter().any(|t| t.matches(p)) {
            return Err(EtlError::Config(format!(
                "source.tables: {p:?} names no table of the source; its tables are: {:?}",
                all.iter()
                    .map(SourceTable::qualified_name)
                    .collect::<Vec<_>>()
            )));
        }
    }
    for s in &spec.schemas {
        let pattern = glob::Pattern::new(s).ok();
        if !all
            .iter()
            .any(|t| pattern.as_ref().is_some_and(|p| p.matches(&t.schema)))
        {
            tracing::warn!(schema = s, "source.schemas names a schema with no table.");
        }
    }
    let excluded = |t: &SourceTable| spec.exclude.iter().any(|p| t.matches(p));
    let chosen: Vec<SourceTable> = all
        .iter()
        .filter(|t| in_schemas(t) && named(t) && !excluded(t))
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(EtlError::Config(
            "the source has no tables left to move (check source.tables, source.schemas and source.exclude)".into(),
        ));
    }
    let name = |t: &SourceTable| TableName {
        schema: Some(t.schema.clone()),
        name: t.name.clone(),
    };
    let selection = dump::Selection {
        schemas: match spec.schemas.is_empty() {
            true => Vec::new(),
            false => namespaces
                .iter()
                .filter(|n| {
                    spec.schemas
                        .iter()
                        .any(|s| glob::Pattern::new(s).is_ok_and(|p| p.matches(n)))
                })
                .cloned()
                .collect(),
        },
        tables: match spec.tables.is_empty() {
            true => Vec::new(),
            false => chosen.iter().map(name).collect(),
        },
        excluded: all.iter().filter(|t| excluded(t)).map(name).collect(),
    };
    Ok((chosen, selection))
}

/// The source's schemas (not the system's, not etl's ledger).
async fn namespaces(client: &Client) -> Result<Vec<String>, EtlError> {
    let rows = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' \
             AND nspname NOT IN ('information_schema', 'etl') ORDER BY 1",
            &[],
        )
        .await
        .map_err(EtlError::pg("reading the source's schemas"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

impl Migration {
    /// A PostgreSQL source: its catalog's tables, each handed over as COPY
    /// data; the objects around them are pg_dump's (the pre- and
    /// post-data phases).
    pub(super) fn discover_postgres(
        p: &ValidatedPipeline,
        spec: &PgDatabaseSpec,
        sink: Option<PostgresSinkSpec>,
    ) -> Result<Migration, EtlError> {
        let pool = Pool::new(spec.endpoint.clone(), &format!("etl {}", p.name));
        let (all, namespaces) = block_on(async {
            let client = pool.get().await?;
            let tables = source_tables(&client).await?;
            let namespaces = namespaces(&client).await?;
            pool.put(client);
            Ok::<_, EtlError>((tables, namespaces))
        })?;
        let (mut chosen, selection) = select(spec, all, &namespaces)?;
        // Into existing tables: their column types, to tell which take
        // the source's binary COPY data as is.
        let existing = match &sink {
            Some(s) if !s.create_table => Some(block_on(target_types(&s.endpoint, &p.name))?),
            _ => None,
        };
        // Biggest first: the last table to finish is then a small one.
        chosen.sort_by_key(|t| std::cmp::Reverse(t.estimate));
        let min_parts = p.chunks.workers as u64;
        let (mut described, mut sources, mut runners) = (Vec::new(), Vec::new(), Vec::new());
        let mut partitioned = Vec::new();
        let roots = chosen
            .iter()
            .filter_map(|t| Some((t.qualified_name(), t.root.clone()?)))
            .collect();
        for t in chosen {
            if t.kind == "p" {
                partitioned.push(t.qualified_name());
                continue;
            }
            let format = copy_format(&t, existing.as_ref(), sink.is_some());
            let (table, source, runner) = Self::postgres_table(p, &pool, &t, format, min_parts)?;
            runners.push(runner);
            described.push(table);
            sources.push(source);
        }
        let mut catalog = etl_source::catalog::Catalog {
            keys_from: "pg_dump --section=post-data".into(),
            ..Default::default()
        };
        if !partitioned.is_empty() {
            catalog.keys_from.push_str(&format!(
                "; partitioned tables created with their partitions, their rows loaded into the partitions: {}",
                partitioned.join(", ")
            ));
        }
        Ok(Migration::assemble(
            p,
            Origin::Postgres(Box::new(PgOrigin {
                spec: spec.clone(),
                selection,
                roots,
                post_data: Default::default(),
            })),
            sink,
            (described, sources, runners),
            Vec::new(),
            catalog,
        ))
    }

    /// One table of the source: what the migration describes of it, its
    /// source (COPY of its rows, by key or block ranges) and its runner.
    fn postgres_table(
        p: &ValidatedPipeline,
        pool: &Arc<Pool>,
        t: &SourceTable,
        format: CopyFormat,
        min_parts: u64,
    ) -> Result<(Table, TableSource, Runner), EtlError> {
        let table = TableName {
            schema: Some(t.schema.clone()),
            name: t.name.clone(),
        };
        let source = PgTable::new(
            pool.clone(),
            table.clone(),
            t.columns.clone(),
            format,
            t.range_key.clone(),
            p.chunks.range_rows,
            min_parts,
        );
        // Into a database, whose phase log keeps the cut a first run
        // planned: rows estimated, no table scanned to count them. Files
        // keep no cut: their tables are counted, the same cut each run.
        let source = Arc::new(match p.sinks.as_slice() {
            [etl_sink::spec::ValidatedSink::Postgres(_)] => source.estimated(),
            _ => source,
        });
        let mut config = p.clone();
        config.chunks.range_column = t.range_key.clone();
        if let [etl_sink::spec::ValidatedSink::Postgres(s)] = config.sinks.as_mut_slice() {
            // The tables are pre-data's to create, not the sink's
            // (existing tables meet the load as `into_existing` set).
            s.create_table = false;
            s.table = etl_sink::spec::TableTemplate::fixed(&table);
        }
        let runner = Runner::with_source(config, source.clone(), Vec::new())?;
        let described = Table {
            source: source.name.clone(),
            target: table,
            schema: source.schema(),
            source_types: Vec::new(),
            keys: Default::default(),
            // Without an integer key, ranges of its blocks (ctid).
            range_key: Some((
                t.range_key.clone().unwrap_or_else(|| "ctid".into()),
                etl_source::odbc::KeyKind::Integer,
            )),
        };
        Ok((described, TableSource::Postgres(source), runner))
    }
}

/// Binary COPY into the tables pre-data creates, of the same types, and
/// into existing tables whose columns are of the source's types; text
/// lets the server convert into tables of other (compatible) types.
fn copy_format(t: &SourceTable, existing: Option<&ColumnTypes>, sink: bool) -> CopyFormat {
    let same_types = match existing {
        Some(existing) => existing
            .get(&(t.schema.clone(), t.name.clone()))
            .is_some_and(|columns| {
                t.columns
                    .iter()
                    .zip(&t.types)
                    .all(|(c, ty)| columns.get(c) == Some(ty))
            }),
        None => sink,
    };
    match t.portable && same_types {
        true => CopyFormat::Binary,
        false => CopyFormat::Text,
    }
}
