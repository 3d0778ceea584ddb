//! Large objects (`lo_create`, `lo_put`): pg_dump's schema sections leave
//! them out, and they are no table's rows, so the data phase does not move
//! them. After the post-data phase each is copied with its oid (columns of
//! type `oid` keep pointing at it), in 1 MiB pieces, each object in one
//! target transaction with its comment (and owner and grants when asked,
//! as for every other object): an object that exists on the target is
//! whole, and a killed run copies only those that do not.

use std::collections::HashSet;

use tokio_postgres::Client;

use super::super::{Finish, Migration};
use etl_pg::error::EtlError;

/// Bytes read and written per round trip.
const PIECE: i32 = 1 << 20;

/// Each large object: oid, owner, comment, and its grants to roles other
/// than its owner as statements (`PUBLIC` for grantee 0).
const OBJECTS: &str = "SELECT m.oid, pg_get_userbyid(m.lomowner)::text, \
    obj_description(m.oid, 'pg_largeobject'), \
    ARRAY(SELECT format('GRANT %s ON LARGE OBJECT %s TO %s%s', a.privilege_type, m.oid, \
        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
        CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) \
      FROM aclexplode(m.lomacl) a WHERE a.grantee <> m.lomowner ORDER BY 1) \
    FROM pg_largeobject_metadata m ORDER BY m.oid";

impl Migration {
    pub(crate) async fn copy_large_objects(
        &self,
        client: &Client,
        finish: &mut Finish,
    ) -> Result<(), EtlError> {
        let (spec, _) = self.pg_origin()?;
        if !spec.large_objects {
            return Ok(());
        }
        let source = self.pg_source().await?;
        let objects = source
            .query(OBJECTS, &[])
            .await
            .map_err(EtlError::pg("listing the source's large objects"))?;
        if objects.is_empty() {
            return Ok(());
        }
        let there: HashSet<u32> = client
            .query("SELECT oid FROM pg_largeobject_metadata", &[])
            .await
            .map_err(EtlError::pg("listing the target's large objects"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let (mut copied, mut bytes, mut kept) = (0u64, 0i64, 0u64);
        for r in objects {
            let oid: u32 = r.get(0);
            if there.contains(&oid) {
                kept += 1;
                continue;
            }
            let mut around: Vec<String> = Vec::new();
            if let Some(comment) = r.get::<_, Option<String>>(2) {
                around.push(format!(
                    "COMMENT ON LARGE OBJECT {oid} IS {}",
                    etl_base::sql::literal(&comment)
                ));
            }
            if spec.owners {
                let owner: String = r.get(1);
                around.push(format!(
                    "ALTER LARGE OBJECT {oid} OWNER TO {}",
                    etl_base::sql::ident(&owner)
                ));
            }
            if spec.grants {
                around.extend(r.get::<_, Vec<String>>(3));
            }
            match copy_one(&source, client, oid, &around).await {
                Ok(n) => {
                    copied += 1;
                    bytes += n;
                }
                Err(e) if e.is_connection_lost() => return Err(e),
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    tracing::error!(oid, error = %e, "A large object could not be copied.");
                    finish.problems.push(format!("large object {oid}: {e}"));
                }
            }
        }
        tracing::info!(copied, bytes, kept, "Large objects copied.");
        finish.added.push(format!(
            "{copied} large objects ({bytes} bytes){}",
            if kept > 0 {
                format!("; {kept} already there")
            } else {
                String::new()
            }
        ));
        Ok(())
    }

    /// The large objects of both servers, counted (`etl verify`).
    pub(crate) async fn count_large_objects(
        &self,
        client: &Client,
        checks: &mut crate::Checks,
    ) -> Result<(), EtlError> {
        let (spec, _) = self.pg_origin()?;
        if !spec.large_objects {
            return Ok(());
        }
        let source = self.pg_source().await?;
        let sql = "SELECT count(*) FROM pg_largeobject_metadata";
        let on_source: i64 = source
            .query_one(sql, &[])
            .await
            .map_err(EtlError::pg("counting the source's large objects"))?
            .get(0);
        if on_source == 0 {
            return Ok(());
        }
        let on_target: i64 = client
            .query_one(sql, &[])
            .await
            .map_err(EtlError::pg("counting the target's large objects"))?
            .get(0);
        checks.large_objects = Some((on_source as u64, on_target as u64));
        Ok(())
    }
}

async fn copy_one(
    source: &Client,
    target: &Client,
    oid: u32,
    around: &[String],
) -> Result<i64, EtlError> {
    let context = |what: &str| format!("{what} large object {oid}");
    target
        .batch_execute("BEGIN")
        .await
        .map_err(EtlError::pg(context("beginning")))?;
    target
        .query_one("SELECT lo_create($1)", &[&oid])
        .await
        .map_err(EtlError::pg(context("creating")))?;
    let mut offset: i64 = 0;
    loop {
        let piece: Vec<u8> = source
            .query_one("SELECT lo_get($1, $2, $3)", &[&oid, &offset, &PIECE])
            .await
            .map_err(EtlError::pg(context("reading")))?
            .get(0);
        if !piece.is_empty() {
            target
                .query_one("SELECT lo_put($1, $2, $3)", &[&oid, &offset, &piece])
                .await
                .map_err(EtlError::pg(context("writing")))?;
        }
        offset += piece.len() as i64;
        if piece.len() < PIECE as usize {
            break;
        }
    }
    for sql in around {
        target
            .batch_execute(sql)
            .await
            .map_err(EtlError::pg(format!(
                "running {sql:?} for large object {oid}"
            )))?;
    }
    target
        .batch_execute("COMMIT")
        .await
        .map_err(EtlError::pg(context("committing")))?;
    Ok(offset)
}
