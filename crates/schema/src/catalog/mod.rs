//! One database's schema, read from its catalog into plain values that
//! compare by name.
//!
//! The session reads with `search_path = ''`, so every name the server
//! prints (`format_type`, `pg_get_indexdef`, `pg_get_viewdef`,
//! `pg_get_functiondef`, `pg_get_triggerdef`, `pg_get_constraintdef`,
//! `pg_identify_object`) is schema-qualified and the text of the same
//! object is the same on both servers. Definitions are compared as the
//! server prints them (the way migra and pg_dump do): reparsing SQL by hand
//! would only add ways to be wrong. System schemas, etl's own `etl` schema
//! and objects that belong to an extension are left out.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::Client;

mod access;
mod depends;
mod objects;
pub mod unread;

use super::{Key, Kind, SchemaError};
use access::{grants, policies};

/// Skips system schemas and etl's own; `$n` is a namespace oid column.
const USER_NS: &str = "NOT IN (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema', 'etl', 'pg_toast') OR nspname LIKE 'pg\\_temp\\_%' OR nspname LIKE 'pg\\_toast\\_temp\\_%')";

/// Objects created by an extension (`CREATE EXTENSION` brings them).
fn not_extension(class: &str, oid: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{class}'::regclass AND e.objid = {oid} AND e.deptype = 'e')"
    )
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// `format_type`, with `COLLATE` when not the type's default.
    pub ty: String,
    pub not_null: bool,
    pub default: Option<String>,
    /// `a` (ALWAYS), `d` (BY DEFAULT), or none.
    pub identity: Option<char>,
    /// The expression of a `GENERATED ALWAYS AS (...) STORED` column.
    pub generated: Option<String>,
    /// Declared on this table (`attislocal`); false: only inherited from a
    /// parent, so a created child leaves it to `INHERITS`.
    pub local: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    pub name: String,
    /// `p`, `u`, `c`, `x`, `f`.
    pub kind: char,
    /// `pg_get_constraintdef` without a trailing ` NOT VALID`.
    pub def: String,
    pub validated: bool,
    /// The columns, in order (keys, uniques, foreign keys).
    pub columns: Vec<String>,
    /// A foreign key's table and columns.
    pub references: Option<(String, Vec<String>)>,
    /// The index behind a key or unique constraint, as `pg_get_indexdef`.
    pub index_def: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: String,
    pub partitioned_by: Option<String>,
    /// A partition's parent and bound (`FOR VALUES ...`, `DEFAULT`).
    pub partition_of: Option<(String, String)>,
    pub inherits: Vec<String>,
    pub unlogged: bool,
    pub columns: Vec<Column>,
    pub constraints: BTreeMap<String, Constraint>,
    /// From the catalog (`reltuples`, `pg_total_relation_size`): the size
    /// the risk of a statement is graded by. `rows` is -1 for a table never
    /// analyzed (the planner does not know): graded by its bytes alone.
    pub rows: i64,
    pub bytes: i64,
    /// Whether the table has a default partition (adding one scans it).
    pub has_default_partition: bool,
    /// Row-level security: on (and whether FORCEd), read with policies.
    pub row_security: Option<bool>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    pub name: String,
    pub table: String,
    pub def: String,
    pub valid: bool,
    pub unique: bool,
    /// On a partitioned table: `CONCURRENTLY` does not apply.
    pub on_partitioned: bool,
    /// Plain column names (expression parts are left out).
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TypeDef {
    Enum(Vec<String>),
    Domain {
        base: String,
        default: Option<String>,
        not_null: bool,
        checks: BTreeMap<String, String>,
    },
    Composite(Vec<(String, String)>),
    Range {
        subtype: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub name: String,
    pub ty: String,
    pub start: i64,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub cache: i64,
    pub cycle: bool,
    /// `table.column` of `OWNED BY` (a serial column's sequence).
    pub owned_by: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub name: String,
    pub materialized: bool,
    pub def: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    /// `schema.name(argument types)`.
    pub signature: String,
    pub procedure: bool,
    /// `CREATE OR REPLACE ...` as the server prints it.
    pub def: String,
    /// The result type and argument names: when they change, the function
    /// must be dropped first.
    pub result: String,
    pub arg_names: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub name: String,
    pub table: String,
    pub def: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub table: String,
    pub permissive: bool,
    /// ALL, SELECT, INSERT, UPDATE, DELETE.
    pub command: String,
    pub roles: Vec<String>,
    pub using: Option<String>,
    pub check: Option<String>,
}

/// What else to read besides the schema's objects.
#[derive(Debug, Clone, Copy, Default)]
pub struct Read {
    /// GRANTs on schemas, tables, views, sequences, functions.
    pub grants: bool,
    /// Row-level security: whether it is on per table, and the policies.
    pub policies: bool,
}

/// A whole database's schema.
#[derive(Debug, Default)]
pub struct Catalog {
    pub schemas: BTreeMap<String, ()>,
    /// name -> (schema, version)
    pub extensions: BTreeMap<String, (String, String)>,
    /// name -> the versions its update scripts on this server reach from
    /// the installed one.
    pub extension_updates: BTreeMap<String, Vec<String>>,
    pub types: BTreeMap<String, TypeDef>,
    pub sequences: BTreeMap<String, Sequence>,
    /// `public.ko` -> what `CREATE COLLATION public.ko` takes after the
    /// name (`(provider = icu, locale = 'ko-KR')`).
    pub collations: BTreeMap<String, String>,
    pub tables: BTreeMap<String, Table>,
    pub indexes: BTreeMap<String, Index>,
    pub views: BTreeMap<String, View>,
    pub functions: BTreeMap<String, Function>,
    pub triggers: BTreeMap<String, Trigger>,
    /// `COMMENT ON` target (`TABLE public.t`) -> text.
    pub comments: BTreeMap<String, String>,
    /// `TABLE public.t TO role` -> the privileges granted beyond the
    /// defaults, sorted (`INSERT, SELECT`); `FUNCTION public.f() FROM
    /// PUBLIC` -> the defaults revoked.
    pub grants: BTreeMap<String, String>,
    /// `public.t.policy` -> the policy.
    pub policies: BTreeMap<String, Policy>,
    /// The object each one needs (from `pg_depend`), by key.
    pub depends: BTreeMap<Key, Vec<Key>>,
    /// Objects of the kinds not made to match ([`unread::KINDS`]), by
    /// name, with their definitions: a plan names those that differ.
    pub unread: BTreeMap<String, String>,
}

impl Catalog {
    /// Every key the catalog holds.
    pub fn has(&self, key: &Key) -> bool {
        let n = &key.name;
        match key.kind {
            Kind::Schema => self.schemas.contains_key(n),
            Kind::Extension => self.extensions.contains_key(n),
            Kind::Collation => self.collations.contains_key(n),
            Kind::Type => self.types.contains_key(n),
            Kind::Sequence => self.sequences.contains_key(n),
            Kind::Table => self.tables.contains_key(n),
            Kind::Index => self.indexes.contains_key(n),
            Kind::View => self.views.contains_key(n),
            Kind::Function => self.functions.contains_key(n),
            Kind::Trigger => self.triggers.contains_key(n),
            Kind::Column | Kind::Constraint => {
                let (table, part) = split_member(n);
                self.tables.get(table).is_some_and(|t| match key.kind {
                    Kind::Column => t.column(part).is_some(),
                    _ => t.constraints.contains_key(part),
                })
            }
            Kind::Comment => self.comments.contains_key(n),
            Kind::Grant => self.grants.contains_key(n),
            Kind::Policy => self.policies.contains_key(n),
        }
    }

    /// The table a column, constraint, index or trigger key belongs to.
    pub fn table_of(&self, key: &Key) -> Option<String> {
        match key.kind {
            Kind::Table => Some(key.name.clone()),
            Kind::Column | Kind::Constraint | Kind::Trigger | Kind::Policy => {
                Some(split_member(&key.name).0.to_string())
            }
            Kind::Index => self.indexes.get(&key.name).map(|i| i.table.clone()),
            _ => None,
        }
    }
}

/// `public.t.c` -> (`public.t`, `c`): the member after the last dot that is
/// outside double quotes.
pub fn split_member(name: &str) -> (&str, &str) {
    let mut quoted = false;
    let mut last = None;
    for (i, ch) in name.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            '.' if !quoted => last = Some(i),
            _ => {}
        }
    }
    match last {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => ("", name),
    }
}

fn q<E>(what: &'static str) -> impl FnOnce(E) -> SchemaError
where
    E: Into<tokio_postgres::Error>,
{
    move |e| SchemaError::Read {
        what,
        source: e.into(),
    }
}

/// Reads the schema of the database `client` is connected to.
pub async fn read(client: &Client, what: Read) -> Result<Catalog, SchemaError> {
    client
        .batch_execute("SET search_path = ''")
        .await
        .map_err(q("setting search_path"))?;
    let mut c = Catalog::default();
    // (class, oid) -> key, for pg_depend.
    let mut oids: HashMap<(&'static str, u32), Key> = HashMap::new();

    schemas(client, &mut c, &mut oids).await?;
    types(client, &mut c, &mut oids).await?;
    collations(client, &mut c, &mut oids).await?;
    let by_oid = objects::tables(client, &mut c, &mut oids).await?;
    objects::indexes(client, &mut c, &mut oids).await?;
    objects::views(client, &mut c, &mut oids).await?;
    objects::sequences(client, &mut c, &mut oids).await?;
    objects::functions(client, &mut c, &mut oids).await?;
    objects::triggers(client, &mut c, &mut oids, &by_oid).await?;
    comments(client, &mut c).await?;
    if what.grants {
        grants(client, &mut c).await?;
    }
    if what.policies {
        policies(client, &mut c).await?;
    }
    c.unread = unread::read(client).await?;

    c.depends = depends::read(client, &oids).await?;
    client
        .batch_execute("RESET search_path")
        .await
        .map_err(q("resetting search_path"))?;
    Ok(c)
}

/// The user's collations (not those of extensions), each as `CREATE
/// COLLATION` takes it.
async fn collations(
    client: &Client,
    c: &mut Catalog,
    oids: &mut HashMap<(&'static str, u32), Key>,
) -> Result<(), SchemaError> {
    let sql = format!(
        "SELECT c.oid, c.oid::regcollation::text, \
           '(provider = ' || CASE c.collprovider WHEN 'i' THEN 'icu' ELSE 'libc' END \
           || CASE WHEN c.collprovider = 'i' THEN ', locale = ' || quote_literal(c.colliculocale) \
              ELSE ', lc_collate = ' || quote_literal(c.collcollate) || ', lc_ctype = ' || quote_literal(c.collctype) END \
           || CASE WHEN c.collisdeterministic THEN '' ELSE ', deterministic = false' END || ')' \
         FROM pg_collation c WHERE c.collnamespace {USER_NS} AND {}",
        not_extension("pg_collation", "c.oid")
    );
    for r in client.query(&sql, &[]).await.map_err(q("collations"))? {
        let name: String = r.get(1);
        oids.insert(("pg_collation", r.get(0)), Key::new(Kind::Collation, &name));
        c.collations.insert(name, r.get(2));
    }
    Ok(())
}

/// The user's schemas and the extensions installed.
async fn schemas(
    client: &Client,
    c: &mut Catalog,
    oids: &mut HashMap<(&'static str, u32), Key>,
) -> Result<(), SchemaError> {
    for r in client
        .query(
            &format!(
                "SELECT oid, quote_ident(nspname) FROM pg_namespace WHERE oid {USER_NS} AND {}",
                not_extension("pg_namespace", "oid")
            ),
            &[],
        )
        .await
        .map_err(q("schemas"))?
    {
        let name: String = r.get(1);
        oids.insert(("pg_namespace", r.get(0)), Key::new(Kind::Schema, &name));
        c.schemas.insert(name, ());
    }
    for r in client
        .query(
            "SELECT e.oid, quote_ident(e.extname), quote_ident(n.nspname), e.extversion, \
             ARRAY(SELECT u.target FROM pg_extension_update_paths(e.extname) u \
               WHERE u.source = e.extversion AND u.path IS NOT NULL ORDER BY u.target) \
             FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql'",
            &[],
        )
        .await
        .map_err(q("extensions"))?
    {
        let name: String = r.get(1);
        oids.insert(("pg_extension", r.get(0)), Key::new(Kind::Extension, &name));
        c.extensions.insert(name.clone(), (r.get(2), r.get(3)));
        c.extension_updates.insert(name, r.get(4));
    }
    Ok(())
}

/// Enums, domains, composite and range types.
async fn types(
    client: &Client,
    c: &mut Catalog,
    oids: &mut HashMap<(&'static str, u32), Key>,
) -> Result<(), SchemaError> {
    for r in client
        .query(
            &format!(
                "SELECT t.oid, t.oid::regtype::text, t.typtype::text, \
                 (SELECT array_agg(enumlabel::text ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid), \
                 format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault, \
                 (SELECT array_agg(quote_ident(conname) || ' ' || pg_get_constraintdef(oid) ORDER BY conname) FROM pg_constraint WHERE contypid = t.oid), \
                 (SELECT array_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) \
                    FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped), \
                 (SELECT format_type(rngsubtype, NULL) FROM pg_range WHERE rngtypid = t.oid), t.typarray \
                 FROM pg_type t LEFT JOIN pg_class k ON k.oid = t.typrelid \
                 WHERE t.typnamespace {USER_NS} AND {} \
                 AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND k.relkind = 'c'))",
                not_extension("pg_type", "t.oid")
            ),
            &[],
        )
        .await
        .map_err(q("types"))?
    {
        let name: String = r.get(1);
        let def = type_def(&r);
        let key = Key::new(Kind::Type, &name);
        oids.insert(("pg_type", r.get(0)), key.clone());
        oids.insert(("pg_type", r.get(10)), key);
        c.types.insert(name, def);
    }
    Ok(())
}

/// `name definition` lines as pairs (a domain's checks, a composite's
/// attributes).
fn pairs(lines: Option<Vec<String>>) -> Vec<(String, String)> {
    lines
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            let (n, d) = s.split_once(' ').unwrap_or((&s, ""));
            (n.to_string(), d.to_string())
        })
        .collect()
}

/// A type's definition from its row of the types query.
fn type_def(r: &tokio_postgres::Row) -> TypeDef {
    let kind: String = r.get(2);
    match kind.as_str() {
        "e" => TypeDef::Enum(r.get::<_, Option<Vec<String>>>(3).unwrap_or_default()),
        "d" => TypeDef::Domain {
            base: r.get(4),
            not_null: r.get(5),
            default: r.get(6),
            checks: pairs(r.get(7)).into_iter().collect(),
        },
        "c" => TypeDef::Composite(pairs(r.get(8))),
        _ => TypeDef::Range {
            subtype: r.get::<_, Option<String>>(9).unwrap_or_default(),
        },
    }
}

/// Comments on what is compared.
async fn comments(client: &Client, c: &mut Catalog) -> Result<(), SchemaError> {
    for r in client
        .query(
            "SELECT o.type, o.identity, d.description FROM pg_description d, \
             LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) o \
             WHERE o.schema IS NULL OR o.schema NOT IN ('pg_catalog', 'information_schema', 'etl', 'pg_toast')",
            &[],
        )
        .await
        .map_err(q("comments"))?
    {
        let (ty, identity, text): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        if let Some(target) = comment_target(&ty, &identity) {
            if ty == "schema" && !c.schemas.contains_key(&identity) {
                continue;
            }
            c.comments.insert(target, text);
        }
    }
    Ok(())
}

/// `COMMENT ON` target for an object `pg_identify_object` names, for the
/// kinds that are compared.
fn comment_target(ty: &str, identity: &str) -> Option<String> {
    let keyword = match ty {
        "schema" => "SCHEMA",
        "table" => "TABLE",
        "table column" | "view column" | "materialized view column" => "COLUMN",
        "view" => "VIEW",
        "materialized view" => "MATERIALIZED VIEW",
        "index" => "INDEX",
        "sequence" => "SEQUENCE",
        "type" => "TYPE",
        "domain" => "DOMAIN",
        "function" => "FUNCTION",
        "procedure" => "PROCEDURE",
        "table constraint" | "trigger" => {
            let (name, on) = identity.split_once(" on ")?;
            let keyword = if ty == "trigger" {
                "TRIGGER"
            } else {
                "CONSTRAINT"
            };
            return Some(format!("{keyword} {name} ON {on}"));
        }
        _ => return None,
    };
    Some(format!("{keyword} {identity}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_splits_at_the_last_unquoted_dot() {
        assert_eq!(split_member("public.t.c"), ("public.t", "c"));
        assert_eq!(
            split_member("public.\"a.b\".\"c.d\""),
            ("public.\"a.b\"", "\"c.d\"")
        );
    }

    #[test]
    fn comments_name_their_object_as_comment_on_wants() {
        assert_eq!(
            comment_target("table column", "public.t.c").as_deref(),
            Some("COLUMN public.t.c")
        );
        assert_eq!(
            comment_target("table constraint", "t_pkey on public.t").as_deref(),
            Some("CONSTRAINT t_pkey ON public.t")
        );
        assert_eq!(comment_target("role", "x"), None);
    }
}
