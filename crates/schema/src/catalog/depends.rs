//! Dependencies between the objects a catalog holds, from `pg_depend`: a
//! view on its tables, a default on its sequence, a foreign key on the
//! table it references. A serial's sequence does not need the table that
//! owns it (`OWNED BY`, a step of its own after the table): the table's
//! default needs the sequence first.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::Client;

use super::q;
use crate::{Key, SchemaError};

/// For each object (by key), the objects it needs; `oids` maps each
/// object read, by (catalog, oid), to its key.
pub(super) async fn read(
    client: &Client,
    oids: &HashMap<(&'static str, u32), Key>,
) -> Result<BTreeMap<Key, Vec<Key>>, SchemaError> {
    let mut depends: BTreeMap<Key, Vec<Key>> = BTreeMap::new();
    let rewrites: HashMap<u32, u32> = client
        .query("SELECT oid, ev_class FROM pg_rewrite", &[])
        .await
        .map_err(q("views"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let attrdefs: HashMap<u32, u32> = client
        .query("SELECT oid, adrelid FROM pg_attrdef", &[])
        .await
        .map_err(q("defaults"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let resolve = |class: &str, oid: u32| -> Option<Key> {
        let (class, oid) = match class {
            "pg_rewrite" => ("pg_class", *rewrites.get(&oid)?),
            "pg_attrdef" => ("pg_class", *attrdefs.get(&oid)?),
            other => (other, oid),
        };
        let class: &'static str = match class {
            "pg_class" => "pg_class",
            "pg_type" => "pg_type",
            "pg_proc" => "pg_proc",
            "pg_constraint" => "pg_constraint",
            "pg_trigger" => "pg_trigger",
            "pg_namespace" => "pg_namespace",
            "pg_extension" => "pg_extension",
            "pg_collation" => "pg_collation",
            _ => return None,
        };
        oids.get(&(class, oid)).cloned()
    };
    for r in client
        .query(
            "SELECT d.classid::regclass::text, d.objid, d.refclassid::regclass::text, d.refobjid \
             FROM pg_depend d WHERE d.deptype IN ('n', 'a') AND d.refobjid >= 16384 \
             AND NOT (d.deptype = 'a' AND d.classid = 'pg_class'::regclass AND d.refobjsubid <> 0 \
               AND EXISTS (SELECT 1 FROM pg_class s WHERE s.oid = d.objid AND s.relkind = 'S'))",
            &[],
        )
        .await
        .map_err(q("dependencies"))?
    {
        let class: String = r.get(0);
        let ref_class: String = r.get(2);
        let strip = |s: &str| s.trim_start_matches("pg_catalog.").to_string();
        let (Some(from), Some(to)) = (
            resolve(&strip(&class), r.get(1)),
            resolve(&strip(&ref_class), r.get(3)),
        ) else {
            continue;
        };
        if from != to {
            let list = depends.entry(from).or_default();
            if !list.contains(&to) {
                list.push(to);
            }
        }
    }
    Ok(depends)
}
