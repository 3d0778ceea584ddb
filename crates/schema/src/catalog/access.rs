//! Who may do what: GRANTs (read with `--grants`) and row-level security
//! with its policies (`--policies`).

use tokio_postgres::Client;

use super::{not_extension, q, Catalog, Policy, USER_NS};
use crate::SchemaError;

/// Privileges that differ from the defaults of their object (what `GRANT`
/// and `REVOKE` changed): `KIND name TO grantee` for those granted beyond
/// the defaults, `KIND name FROM grantee` for defaults revoked; the
/// owner's own are left out, and so are extension members.
pub(super) async fn grants(client: &Client, c: &mut Catalog) -> Result<(), SchemaError> {
    let sql = format!(
        "WITH o AS ( \
           SELECT CASE WHEN k.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind, k.oid::regclass::text AS name, k.relowner AS owner, \
                  acldefault((CASE WHEN k.relkind = 'S' THEN 's' ELSE 'r' END)::\"char\", k.relowner) AS dflt, k.relacl AS acl \
             FROM pg_class k WHERE k.relkind IN ('r', 'p', 'v', 'm', 'S') AND k.relnamespace {USER_NS} AND NOT k.relispartition AND {} \
           UNION ALL SELECT 'SCHEMA', quote_ident(n.nspname), n.nspowner, acldefault('n', n.nspowner), n.nspacl \
             FROM pg_namespace n WHERE n.oid {USER_NS} \
           UNION ALL SELECT CASE WHEN p.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, p.oid::regprocedure::text, p.proowner, \
                  acldefault('f', p.proowner), p.proacl \
             FROM pg_proc p WHERE p.pronamespace {USER_NS} AND p.prokind IN ('f', 'p', 'w') AND {}), \
         have AS (SELECT o.kind, o.name, o.owner, a.grantee, a.privilege_type, a.is_grantable FROM o, LATERAL aclexplode(coalesce(o.acl, o.dflt)) a), \
         dflt AS (SELECT o.kind, o.name, o.owner, a.grantee, a.privilege_type, a.is_grantable FROM o, LATERAL aclexplode(o.dflt) a), \
         e AS ((SELECT 'TO' AS dir, * FROM have EXCEPT SELECT 'TO', * FROM dflt) \
               UNION ALL (SELECT 'FROM', * FROM dflt EXCEPT SELECT 'FROM', * FROM have)) \
         SELECT e.kind || ' ' || e.name || ' ' || e.dir || ' ' || CASE WHEN e.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(e.grantee)) END, \
                string_agg(e.privilege_type || CASE WHEN e.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END, ', ' ORDER BY e.privilege_type) \
         FROM e WHERE e.grantee <> e.owner GROUP BY 1",
        not_extension("pg_class", "k.oid"),
        not_extension("pg_proc", "p.oid")
    );
    for r in client.query(&sql, &[]).await.map_err(q("grants"))? {
        c.grants.insert(r.get(0), r.get(1));
    }
    Ok(())
}

pub(super) async fn policies(client: &Client, c: &mut Catalog) -> Result<(), SchemaError> {
    let sql = format!(
        "SELECT k.oid::regclass::text, k.relforcerowsecurity FROM pg_class k \
         WHERE k.relrowsecurity AND k.relnamespace {USER_NS}"
    );
    for r in client.query(&sql, &[]).await.map_err(q("row security"))? {
        if let Some(t) = c.tables.get_mut(&r.get::<_, String>(0)) {
            t.row_security = Some(r.get(1));
        }
    }
    let sql = format!(
        "SELECT p.polrelid::regclass::text, quote_ident(p.polname), p.polpermissive, \
         CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END, \
         ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END FROM unnest(p.polroles) r ORDER BY 1), \
         pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid) \
         FROM pg_policy p JOIN pg_class k ON k.oid = p.polrelid WHERE k.relnamespace {USER_NS}"
    );
    for r in client.query(&sql, &[]).await.map_err(q("policies"))? {
        let table: String = r.get(0);
        let name: String = r.get(1);
        c.policies.insert(
            format!("{table}.{name}"),
            Policy {
                name,
                table,
                permissive: r.get(2),
                command: r.get(3),
                roles: r.get(4),
                using: r.get(5),
                check: r.get(6),
            },
        );
    }
    Ok(())
}
