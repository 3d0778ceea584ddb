//! The kinds of object `etl schema` does not make match: aggregates,
//! operators with their classes and families, default
//! privileges (`ALTER DEFAULT PRIVILEGES`), and owners. They are read all
//! the same, each by its name and a text of its definition, so that a diff
//! and a plan name every one that differs between the two databases
//! (to be made by hand) instead of passing over it in silence. Owners are
//! not read: roles differ between servers by design, and the plan's
//! header says so.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::{not_extension, q, USER_NS};
use crate::SchemaError;

/// The kinds named in a plan's header as not made to match.
pub const KINDS: &str =
    "aggregates, operators and their classes and families, default privileges, owners";

/// `aggregate public.total(integer)` -> its definition, for each object of the kinds
/// above (not those of extensions, nor of system schemas).
pub async fn read(client: &Client) -> Result<BTreeMap<String, String>, SchemaError> {
    let queries = [
        (
            "aggregates",
            format!(
                "SELECT 'aggregate ' || a.aggfnoid::regprocedure::text, \
                 concat_ws(' ', a.aggkind, a.aggtransfn::regprocedure, a.aggfinalfn::regprocedure, \
                   a.aggcombinefn::regprocedure, a.aggtranstype::regtype, a.agginitval, a.aggsortop::regoperator) \
                 FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid \
                 WHERE p.pronamespace {USER_NS} AND {}",
                not_extension("pg_proc", "p.oid")
            ),
        ),
        (
            "operators",
            format!(
                "SELECT 'operator ' || o.oid::regoperator::text, \
                 concat_ws(' ', o.oprcode::regprocedure, o.oprcom::regoperator, o.oprnegate::regoperator, \
                   o.oprrest::regprocedure, o.oprjoin::regprocedure, o.oprcanhash, o.oprcanmerge) \
                 FROM pg_operator o WHERE o.oprnamespace {USER_NS} AND {}",
                not_extension("pg_operator", "o.oid")
            ),
        ),
        (
            "operator classes",
            format!(
                "SELECT 'operator class ' || quote_ident(n.nspname) || '.' || quote_ident(c.opcname) || ' USING ' || m.amname, \
                 concat_ws(' ', c.opcintype::regtype, c.opcdefault, c.opckeytype::regtype) \
                 FROM pg_opclass c JOIN pg_namespace n ON n.oid = c.opcnamespace JOIN pg_am m ON m.oid = c.opcmethod \
                 WHERE c.opcnamespace {USER_NS} AND {}",
                not_extension("pg_opclass", "c.oid")
            ),
        ),
        (
            "operator families",
            format!(
                "SELECT 'operator family ' || quote_ident(n.nspname) || '.' || quote_ident(f.opfname) || ' USING ' || m.amname, '' \
                 FROM pg_opfamily f JOIN pg_namespace n ON n.oid = f.opfnamespace JOIN pg_am m ON m.oid = f.opfmethod \
                 WHERE f.opfnamespace {USER_NS} AND {}",
                not_extension("pg_opfamily", "f.oid")
            ),
        ),
        (
            "default privileges",
            "SELECT 'default privileges of ' || d.defaclrole::regrole::text \
               || coalesce(' in schema ' || d.defaclnamespace::regnamespace::text, '') \
               || ' on ' || CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' \
                  WHEN 'f' THEN 'functions' WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' END, \
             d.defaclacl::text FROM pg_default_acl d"
                .to_string(),
        ),
    ];
    let mut found = BTreeMap::new();
    for (what, sql) in queries {
        for r in client.query(&sql, &[]).await.map_err(q(what))? {
            found.insert(r.get(0), r.get(1));
        }
    }
    Ok(found)
}

/// Each object of these kinds that differs, as a line: `+ aggregate
/// public.total(integer)` (in FROM only), `- ...` (in TO only), `~ ...` (defined
/// otherwise).
pub fn differences(
    wanted: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, def) in wanted {
        match have.get(name) {
            None => lines.push(format!("+ {name}")),
            Some(other) if other != def => lines.push(format!("~ {name}")),
            Some(_) => {}
        }
    }
    lines.extend(
        have.keys()
            .filter(|name| !wanted.contains_key(*name))
            .map(|name| format!("- {name}")),
    );
    lines
}
