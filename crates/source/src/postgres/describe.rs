//! Describing a PostgreSQL source before its first chunk: its columns
//! and the Arrow type each is carried in (those of types etl carries in
//! none read as text where every sink is a file), the type names a created
//! target uses, NOT NULL columns, the primary key, the `[chunks]` columns
//! checked against it, and whether an index finds a window's rows.

use super::*;

/// The columns of a query as etl carries them.
struct Described {
    fields: Vec<arrow::datatypes::Field>,
    types: Vec<PgType>,
    oids: Vec<u32>,
    /// Each column's type (oid, typmod) in a created target.
    ddl: (Vec<u32>, Vec<i32>),
    /// What a chunk selects: `*`, or the columns with those read as text cast.
    select: String,
}

impl PostgresSource {
    /// Connects and describes the query's columns.
    pub async fn build(
        endpoint: &Endpoint,
        relation: &Relation,
        batch_rows: usize,
        batch_bytes: usize,
        uncarried_as_text: bool,
        chunking: &Chunking,
    ) -> Result<Self, EtlError> {
        let pool = Pool::new(endpoint.clone(), "etl source");
        let client = pool.get().await?;
        let from = match relation {
            Relation::Query(q) => format!("({q}) AS src"),
            Relation::Table(t) => t.to_string(),
        };
        let what = match relation {
            Relation::Query(_) => format!("describing source.query on {endpoint}"),
            Relation::Table(t) => format!("describing source table {t} on {endpoint}"),
        };
        let statement = client
            .prepare(&format!("SELECT * FROM {from}"))
            .await
            .map_err(EtlError::pg(what))?;
        let described = describe(statement.columns(), uncarried_as_text)?;
        let fields = type_names(&client, described.fields, &described.ddl).await?;
        // A table's NOT NULL columns stay NOT NULL in created targets.
        let not_null = match relation {
            Relation::Table(t) => not_null(&client, t).await?,
            Relation::Query(_) => Default::default(),
        };
        let fields: Vec<_> = fields
            .into_iter()
            .map(|f| {
                let required = not_null.contains(f.name());
                f.with_nullable(!required)
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let types = described.types;
        // Without a time column the relation is read whole, one chunk.
        let whole = chunking.time_column.is_empty();
        let time_has_zone = match whole {
            true => false,
            false => time_zone(&schema, &types, &chunking.time_column)?,
        };
        check_chunk_columns(&schema, chunking)?;
        if chunking.by_blocks() {
            check_blocks(&client, relation).await?;
        }
        let (primary_key, indexed) = match relation {
            Relation::Table(t) => (
                etl_pg::primary_key(&client, &t.qualified())
                    .await
                    .map_err(EtlError::pg(format!(
                        "reading the primary key of source table {t}"
                    )))?,
                !whole && indexed(&client, t, chunking).await?,
            ),
            Relation::Query(_) => (Vec::new(), false),
        };
        pool.put(client);

        Ok(PostgresSource {
            indexed,
            pool,
            from,
            select: described.select,
            schema,
            types,
            primary_key,
            time_column: chunking.time_column.clone(),
            time_has_zone,
            key_column: chunking.key_column.clone(),
            batch_rows,
            batch_bytes,
            bytes_read: Arc::default(),
            oids: described.oids,
            range: chunking.range_column.clone().zip(chunking.range_width),
        })
    }
}

/// Each column's Arrow field and type; `uncarried_as_text`: a column of a
/// type etl carries in no Arrow type is read as its text, else refused
/// (as is a name that appears twice), every problem named at once.
fn describe(
    columns: &[tokio_postgres::Column],
    uncarried_as_text: bool,
) -> Result<Described, EtlError> {
    let mut described = Described {
        fields: Vec::new(),
        types: Vec::new(),
        oids: Vec::new(),
        ddl: (Vec::new(), Vec::new()),
        select: "*".to_string(),
    };
    let mut problems = Vec::new();
    let mut as_text = Vec::new();
    for (index, column) in columns.iter().enumerate() {
        let info = type_info(column.type_(), column.type_modifier());
        let (t, oid, ddl) = match PgType::from_type_info(&info) {
            Ok(t) => (
                t,
                info.oid,
                ddl_type(column.type_(), column.type_modifier()),
            ),
            Err(_) if uncarried_as_text => {
                as_text.push(index);
                (PgType::Text, Type::TEXT.oid(), (Type::TEXT.oid(), -1))
            }
            Err(e) => {
                problems.push(format!(
                    "column {:?} (index {index}) is of type {}, which etl cannot carry; cast it in `query`, for example SELECT {}::text",
                    column.name(),
                    e.type_name,
                    ident(column.name())
                ));
                continue;
            }
        };
        described.oids.push(oid);
        described.fields.push(t.arrow_field(column.name()));
        described.types.push(t);
        described.ddl.0.push(ddl.0);
        described.ddl.1.push(ddl.1);
    }
    let mut seen = std::collections::HashSet::new();
    for column in columns {
        if !seen.insert(column.name()) {
            problems.push(format!(
                "column {:?} appears more than once; give each an alias in `query` (SELECT a.id AS a_id, ...)",
                column.name()
            ));
        }
    }
    if !problems.is_empty() {
        return Err(EtlError::Config(format!(
            "the source has columns etl cannot carry:\n  {}",
            problems.join("\n  ")
        )));
    }
    if !as_text.is_empty() {
        described.select = columns
            .iter()
            .enumerate()
            .map(|(i, c)| match as_text.contains(&i) {
                true => format!("{0}::text AS {0}", ident(c.name())),
                false => ident(c.name()),
            })
            .collect::<Vec<_>>()
            .join(", ");
    }
    Ok(described)
}

/// The fields with the type names a created target table should use:
/// `numeric(12,2)`, `character varying(20)`, `jsonb`; enums become text
/// (the target has no such type), domains their base type.
async fn type_names(
    client: &tokio_postgres::Client,
    fields: Vec<arrow::datatypes::Field>,
    (oids, typmods): &(Vec<u32>, Vec<i32>),
) -> Result<Vec<arrow::datatypes::Field>, EtlError> {
    let rows = client
        .query(
            "SELECT format_type(o, NULLIF(m, -1)) FROM unnest($1::oid[], $2::int4[]) WITH ORDINALITY AS u(o, m, n) ORDER BY n",
            &[oids, typmods],
        )
        .await
        .map_err(EtlError::pg("reading the source's column type names"))?;
    Ok(fields
        .into_iter()
        .zip(rows)
        .map(|(f, row)| {
            let name: String = row.get(0);
            let mut metadata = f.metadata().clone();
            metadata.insert(PG_TYPE_METADATA.to_string(), name);
            f.with_metadata(metadata)
        })
        .collect())
}

/// The NOT NULL columns of source table `t`.
async fn not_null(
    client: &tokio_postgres::Client,
    t: &TableName,
) -> Result<std::collections::HashSet<String>, EtlError> {
    Ok(client
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass \
             AND attnum > 0 AND NOT attisdropped AND attnotnull",
            &[&t.qualified()],
        )
        .await
        .map_err(EtlError::pg(format!(
            "reading the NOT NULL columns of source table {t}"
        )))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// `[chunks] range_column` must be an integer column of the source, and
/// `key_column` a column of it.
fn check_chunk_columns(schema: &Schema, chunking: &Chunking) -> Result<(), EtlError> {
    if let Some(r) = chunking
        .range_column
        .as_ref()
        .filter(|_| !chunking.by_blocks())
    {
        let integer = schema
            .field_with_name(r)
            .ok()
            .map(|f| f.data_type().is_integer());
        if integer != Some(true) {
            return Err(EtlError::Config(format!(
                "chunks.range_column {r:?} is {} of the source; name an integer column (smallint, integer, bigint) of: {}",
                match integer {
                    Some(_) => "not an integer column",
                    None => "not a column",
                },
                column_list(schema)
            )));
        }
    }
    if let Some(key) = &chunking.key_column {
        if schema.index_of(key).is_err() {
            return Err(EtlError::Config(format!(
                "chunks.key_column {key:?} is not a column of the source; its columns are: {}",
                column_list(schema)
            )));
        }
    }
    Ok(())
}

/// `[chunks] range_column = "ctid"` cuts a table's heap (or a partitioned
/// table's partitions') into ranges of blocks: a query or a view has none.
async fn check_blocks(
    client: &tokio_postgres::Client,
    relation: &Relation,
) -> Result<(), EtlError> {
    let kind: Option<i8> = match relation {
        Relation::Query(_) => None,
        Relation::Table(t) => client
            .query_one(
                "SELECT relkind FROM pg_class WHERE oid = $1::text::regclass",
                &[&t.qualified()],
            )
            .await
            .map_err(EtlError::pg(format!(
                "reading what kind of relation {t} is"
            )))?
            .get(0),
    };
    match kind.map(|k| k as u8) {
        Some(b'r' | b'm' | b'p') => Ok(()),
        _ => Err(EtlError::Config(format!(
            "chunks.range_column \"ctid\" cuts a table into ranges of its heap blocks, which {} has not; read a table (or a materialized view) by blocks, or name an integer column",
            match relation {
                Relation::Query(_) => "source.query".to_string(),
                Relation::Table(t) => format!("{t} (a view or a foreign table)"),
            }
        ))),
    }
}

/// Whether a valid, whole btree index of source table `t` leads with
/// (key, time), or with time alone without a key column, and the time
/// column is NOT NULL: [`Source::plan_by_index`] then works.
async fn indexed(
    client: &tokio_postgres::Client,
    t: &TableName,
    chunking: &Chunking,
) -> Result<bool, EtlError> {
    Ok(client
        .query_one(
            "SELECT coalesce((SELECT attnotnull FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = $2), false) \
             AND EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam \
               WHERE i.indrelid = $1::text::regclass AND i.indisvalid AND i.indpred IS NULL AND am.amname = 'btree' \
               AND CASE WHEN $3::text IS NULL \
                 THEN i.indkey[0] = (SELECT attnum FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = $2) \
                 ELSE i.indkey[0] = (SELECT attnum FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = $3) \
                  AND i.indkey[1] = (SELECT attnum FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = $2) END)",
            &[&t.qualified(), &chunking.time_column, &chunking.key_column],
        )
        .await
        .map_err(EtlError::pg(format!("looking for an index on source table {t}")))?
        .get(0))
}

fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the catalog says of a type, as tokio-postgres already looked it up.
fn type_info(t: &Type, typmod: i32) -> TypeInfo {
    match t.kind() {
        Kind::Domain(base) => type_info(base, -1),
        Kind::Array(element) => TypeInfo {
            oid: t.oid(),
            name: t.name().to_string(),
            typmod,
            is_enum: false,
            element: Some(Box::new(type_info(element, typmod))),
        },
        kind => TypeInfo {
            oid: t.oid(),
            name: t.name().to_string(),
            typmod,
            is_enum: matches!(kind, Kind::Enum(_)),
            element: None,
        },
    }
}

/// The type (oid, typmod) a created target column should have.
fn ddl_type(t: &Type, typmod: i32) -> (u32, i32) {
    match t.kind() {
        Kind::Domain(base) => ddl_type(base, -1),
        Kind::Enum(_) => (etl_pg::pg_binary::oid::TEXT, -1),
        Kind::Array(element) if matches!(element.kind(), Kind::Enum(_)) => (1009, -1), // text[]
        Kind::Array(element) if matches!(element.kind(), Kind::Domain(_)) => match element.kind() {
            Kind::Domain(base) => (array_oid_of(base).unwrap_or(1009), -1),
            _ => unreachable!("matched Domain above"),
        },
        _ => (t.oid(), typmod),
    }
}

/// The array type of a built-in element type, for domains over them.
fn array_oid_of(t: &Type) -> Option<u32> {
    use etl_pg::pg_binary::oid;
    Some(match t.oid() {
        oid::BOOL => 1000,
        oid::INT2 => 1005,
        oid::INT4 => 1007,
        oid::INT8 => 1016,
        oid::TEXT => 1009,
        oid::FLOAT4 => 1021,
        oid::FLOAT8 => 1022,
        oid::NUMERIC => 1231,
        oid::VARCHAR => 1015,
        oid::DATE => 1182,
        oid::TIMESTAMP => 1115,
        oid::TIMESTAMPTZ => 1185,
        oid::UUID => 2951,
        _ => return None,
    })
}

/// Whether `time_column` of the source is a `timestamptz` (true) or a
/// `timestamp` (false); refused when it is missing or another type.
fn time_zone(schema: &Schema, types: &[PgType], time_column: &str) -> Result<bool, EtlError> {
    let time_index = schema.index_of(time_column).map_err(|_| {
        EtlError::Config(format!(
            "chunks.time_column {time_column:?} is not a column of the source; its columns are: {}",
            column_list(schema)
        ))
    })?;
    match &types[time_index] {
        PgType::Timestamptz => Ok(true),
        PgType::Timestamp => Ok(false),
        other => Err(EtlError::Config(format!(
            "chunks.time_column {time_column:?} is {other:?}; chunks are cut on a timestamp or timestamptz column"
        ))),
    }
}
