//! The relations and routines of a catalog, one reader each, called in
//! order by [`super::read`]: tables (with columns and constraints),
//! indexes, views, sequences, functions, triggers. Each records the oid of
//! what it reads in `oids`, for the dependencies read last.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::Client;

use super::{
    not_extension, q, Catalog, Column, Constraint, Function, Index, Sequence, Table, Trigger, View,
    USER_NS,
};
use crate::{Key, Kind, SchemaError};

type Oids = HashMap<(&'static str, u32), Key>;

/// Tables (plain and partitioned), with their columns and constraints;
/// returns each table's name by its oid.
pub(super) async fn tables(
    client: &Client,
    c: &mut Catalog,
    oids: &mut Oids,
) -> Result<HashMap<u32, String>, SchemaError> {
    for r in client
        .query(
            &format!(
                "SELECT k.oid, k.oid::regclass::text, k.relkind::text, k.relpersistence = 'u', \
                 CASE WHEN k.relkind = 'p' THEN pg_get_partkeydef(k.oid) END, \
                 CASE WHEN k.relispartition THEN (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = k.oid) END, \
                 CASE WHEN k.relispartition THEN pg_get_expr(k.relpartbound, k.oid) END, \
                 (SELECT array_agg(i.inhparent::regclass::text ORDER BY i.inhseqno) FROM pg_inherits i WHERE i.inhrelid = k.oid AND NOT k.relispartition), \
                 (CASE WHEN k.reltuples < 0 THEN -1 ELSE k.reltuples END)::int8, pg_total_relation_size(k.oid), k.reltype, \
                 EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid WHERE i.inhparent = k.oid AND pg_get_expr(p.relpartbound, p.oid) = 'DEFAULT') \
                 FROM pg_class k WHERE k.relkind IN ('r', 'p') AND k.relnamespace {USER_NS} AND {}",
                not_extension("pg_class", "k.oid")
            ),
            &[],
        )
        .await
        .map_err(q("tables"))?
    {
        let name: String = r.get(1);
        let key = Key::new(Kind::Table, &name);
        oids.insert(("pg_class", r.get(0)), key.clone());
        oids.insert(("pg_type", r.get(10)), key);
        let parent: Option<String> = r.get(5);
        c.tables.insert(
            name.clone(),
            Table {
                name,
                unlogged: r.get(3),
                partitioned_by: r.get(4),
                partition_of: parent.map(|p| (p, r.get::<_, Option<String>>(6).unwrap_or_default())),
                inherits: r.get::<_, Option<Vec<String>>>(7).unwrap_or_default(),
                rows: r.get(8),
                bytes: r.get(9),
                has_default_partition: r.get(11),
                row_security: None,
                columns: Vec::new(),
                constraints: BTreeMap::new(),
            },
        );
    }
    let by_oid: HashMap<u32, String> = oids
        .iter()
        .filter(|((class, _), k)| *class == "pg_class" && k.kind == Kind::Table)
        .map(|((_, oid), k)| (*oid, k.name.clone()))
        .collect();
    columns(client, c, &by_oid).await?;
    constraints(client, c, oids, &by_oid).await?;
    Ok(by_oid)
}

/// Each table's columns, in order.
async fn columns(
    client: &Client,
    c: &mut Catalog,
    by_oid: &HashMap<u32, String>,
) -> Result<(), SchemaError> {
    for r in client
        .query(
            "SELECT a.attrelid, quote_ident(a.attname), format_type(a.atttypid, a.atttypmod) || \
             CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0 THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END, \
             a.attnotnull, CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END, \
             nullif(a.attidentity::text, ''), CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END, \
             a.attislocal, k.relispartition \
             FROM pg_attribute a JOIN pg_class k ON k.oid = a.attrelid JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE k.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum",
            &[],
        )
        .await
        .map_err(q("columns"))?
    {
        let Some(table) = by_oid.get(&r.get::<_, u32>(0)) else {
            continue;
        };
        let t = c.tables.get_mut(table).expect("listed above");
        t.columns.push(Column {
            name: r.get(1),
            ty: r.get(2),
            not_null: r.get(3),
            default: r.get(4),
            identity: r.get::<_, Option<String>>(5).and_then(|s| s.chars().next()),
            generated: r.get(6),
            local: r.get(7),
        });
    }
    Ok(())
}

/// Each table's keys, checks, exclusions and foreign keys (its own, not
/// those a partition inherits).
async fn constraints(
    client: &Client,
    c: &mut Catalog,
    oids: &mut Oids,
    by_oid: &HashMap<u32, String>,
) -> Result<(), SchemaError> {
    for r in client
        .query(
            "SELECT c.oid, c.conrelid, quote_ident(c.conname), c.contype::text, pg_get_constraintdef(c.oid), c.convalidated, \
             (SELECT array_agg(quote_ident(a.attname) ORDER BY array_position(c.conkey, a.attnum)) FROM pg_attribute a \
                WHERE a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)), \
             CASE WHEN c.contype = 'f' THEN c.confrelid::regclass::text END, \
             (SELECT array_agg(quote_ident(a.attname) ORDER BY array_position(c.confkey, a.attnum)) FROM pg_attribute a \
                WHERE a.attrelid = c.confrelid AND a.attnum = ANY(c.confkey)), \
             CASE WHEN c.contype IN ('p', 'u', 'x') THEN pg_get_indexdef(c.conindid) END, c.conindid \
             FROM pg_constraint c WHERE c.conrelid <> 0 AND c.contype IN ('p', 'u', 'c', 'x', 'f') \
             AND (c.conislocal OR c.coninhcount = 0) AND c.conparentid = 0",
            &[],
        )
        .await
        .map_err(q("constraints"))?
    {
        let Some(table) = by_oid.get(&r.get::<_, u32>(1)) else {
            continue;
        };
        let name: String = r.get(2);
        let def: String = r.get(4);
        let key = Key::new(Kind::Constraint, &format!("{table}.{name}"));
        oids.insert(("pg_constraint", r.get(0)), key.clone());
        if r.get::<_, u32>(10) != 0 {
            oids.insert(("pg_class", r.get(10)), key);
        }
        let t = c.tables.get_mut(table).expect("listed above");
        t.constraints.insert(
            name.clone(),
            Constraint {
                name,
                kind: r.get::<_, String>(3).chars().next().unwrap_or('c'),
                def: def.trim_end_matches(" NOT VALID").to_string(),
                validated: r.get(5),
                columns: r.get::<_, Option<Vec<String>>>(6).unwrap_or_default(),
                references: r
                    .get::<_, Option<String>>(7)
                    .map(|t| (t, r.get::<_, Option<Vec<String>>>(8).unwrap_or_default())),
                index_def: r.get(9),
            },
        );
    }
    Ok(())
}

/// Indexes not behind a constraint, and not a partition's copy of its parent's index.
pub(super) async fn indexes(
    client: &Client,
    c: &mut Catalog,
    oids: &mut Oids,
) -> Result<(), SchemaError> {
    for r in client
        .query(
            &format!(
                "SELECT i.indexrelid, i.indexrelid::regclass::text, i.indrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indisvalid, \
                 i.indisunique, t.relkind = 'p', \
                 (SELECT array_agg(quote_ident(a.attname) ORDER BY array_position(i.indkey::int2[], a.attnum)) FROM pg_attribute a \
                    WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])) \
                 FROM pg_index i JOIN pg_class k ON k.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid \
                 WHERE k.relnamespace {USER_NS} AND t.relkind IN ('r', 'p', 'm') \
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x')) \
                 AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid) AND {}",
                not_extension("pg_class", "i.indexrelid")
            ),
            &[],
        )
        .await
        .map_err(q("indexes"))?
    {
        let name: String = r.get(1);
        let key = Key::new(Kind::Index, &name);
        oids.insert(("pg_class", r.get(0)), key);
        c.indexes.insert(
            name.clone(),
            Index {
                name,
                table: r.get(2),
                def: r.get(3),
                valid: r.get(4),
                unique: r.get(5),
                on_partitioned: r.get(6),
                columns: r.get::<_, Option<Vec<String>>>(7).unwrap_or_default(),
            },
        );
    }
    Ok(())
}

/// Views and materialized views.
pub(super) async fn views(
    client: &Client,
    c: &mut Catalog,
    oids: &mut Oids,
) -> Result<(), SchemaError> {
    for r in client
        .query(
            &format!(
                "SELECT k.oid, k.oid::regclass::text, k.relkind = 'm', pg_get_viewdef(k.oid, true), k.reltype, \
                 (SELECT array_agg(quote_ident(a.attname) ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = k.oid AND a.attnum > 0 AND NOT a.attisdropped) \
                 FROM pg_class k WHERE k.relkind IN ('v', 'm') AND k.relnamespace {USER_NS} AND {}",
                not_extension("pg_class", "k.oid")
            ),
            &[],
        )
        .await
        .map_err(q("views"))?
    {
        let name: String = r.get(1);
        let key = Key::new(Kind::View, &name);
        oids.insert(("pg_class", r.get(0)), key.clone());
        oids.insert(("pg_type", r.get(4)), key);
        c.views.insert(
            name.clone(),
            View {
                name,
                materialized: r.get(2),
                def: r.get(3),
                columns: r.get::<_, Option<Vec<String>>>(5).unwrap_or_default(),
            },
        );
    }
    Ok(())
}

/// Sequences (identity columns' sequences go with their column).
pub(super) async fn sequences(
    client: &Client,
    c: &mut Catalog,
    oids: &mut Oids,
) -> Result<(), SchemaError> {
    for r in client
        .query(
            &format!(
                "SELECT k.oid, k.oid::regclass::text, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle, \
                 (SELECT d.refobjid::regclass::text || ' ' || quote_ident(a.attname) FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = k.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a') \
                 FROM pg_class k JOIN pg_sequence s ON s.seqrelid = k.oid WHERE k.relnamespace {USER_NS} AND {} \
                 AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = k.oid AND d.deptype = 'i')",
                not_extension("pg_class", "k.oid")
            ),
            &[],
        )
        .await
        .map_err(q("sequences"))?
    {
        let name: String = r.get(1);
        oids.insert(("pg_class", r.get(0)), Key::new(Kind::Sequence, &name));
        let owned: Option<String> = r.get(9);
        c.sequences.insert(
            name.clone(),
            Sequence {
                name,
                ty: r.get(2),
                start: r.get(3),
                increment: r.get(4),
                min: r.get(5),
                max: r.get(6),
                cache: r.get(7),
                cycle: r.get(8),
                owned_by: owned.and_then(|o| {
                    o.rsplit_once(' ')
                        .map(|(t, c)| (t.to_string(), c.to_string()))
                }),
            },
        );
    }
    Ok(())
}

/// Functions and procedures (aggregates: unread.rs).
pub(super) async fn functions(
    client: &Client,
    c: &mut Catalog,
    oids: &mut Oids,
) -> Result<(), SchemaError> {
    for r in client
        .query(
            &format!(
                "SELECT p.oid, p.oid::regprocedure::text, p.prokind = 'p', pg_get_functiondef(p.oid), \
                 coalesce(pg_get_function_result(p.oid), ''), coalesce(array_to_string(p.proargnames, ','), '') \
                 FROM pg_proc p WHERE p.pronamespace {USER_NS} AND p.prokind IN ('f', 'p', 'w') AND {}",
                not_extension("pg_proc", "p.oid")
            ),
            &[],
        )
        .await
        .map_err(q("functions"))?
    {
        let signature: String = r.get(1);
        oids.insert(("pg_proc", r.get(0)), Key::new(Kind::Function, &signature));
        c.functions.insert(
            signature.clone(),
            Function {
                signature,
                procedure: r.get(2),
                def: r.get::<_, String>(3).trim_end().to_string(),
                result: r.get(4),
                arg_names: r.get(5),
            },
        );
    }
    Ok(())
}

/// Triggers (not the internal ones of foreign keys, nor a partition's clone of its parent's).
pub(super) async fn triggers(
    client: &Client,
    c: &mut Catalog,
    oids: &mut Oids,
    by_oid: &HashMap<u32, String>,
) -> Result<(), SchemaError> {
    for r in client
        .query(
            "SELECT g.oid, g.tgrelid::regclass::text, quote_ident(g.tgname), pg_get_triggerdef(g.oid, true), g.tgrelid \
             FROM pg_trigger g WHERE NOT g.tgisinternal AND g.tgparentid = 0",
            &[],
        )
        .await
        .map_err(q("triggers"))?
    {
        if !by_oid.contains_key(&r.get::<_, u32>(4))
            && !oids.contains_key(&("pg_class", r.get::<_, u32>(4)))
        {
            continue;
        }
        let table: String = r.get(1);
        let name: String = r.get(2);
        let id = format!("{table}.{name}");
        oids.insert(("pg_trigger", r.get(0)), Key::new(Kind::Trigger, &id));
        c.triggers.insert(
            id,
            Trigger {
                name,
                table,
                def: r.get(3),
            },
        );
    }
    Ok(())
}
