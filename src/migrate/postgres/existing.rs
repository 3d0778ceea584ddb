//! A whole PostgreSQL database into tables that exist on the target
//! (`create_table = false`, the way people use `pg_restore --data-only`):
//! no DDL is run but for the target's foreign keys, which meet the load as
//! `fk_handling` says:
//!
//! - `order`: one level of the foreign-key graph at a time, parents
//!   first (a run of the runner per level); the target's triggers fire.
//! - `replica-role`: every chunk's transaction with
//!   `session_replication_role = replica` (foreign keys and triggers do not
//!   fire); a superuser only, checked before anything is written.
//! - `drop-recreate`: each foreign key recorded in `etl.phase_log`, then
//!   dropped under the sink's `lock_timeout`; one that stays busy is kept
//!   (and named, with the sessions holding its tables), and the load keeps
//!   parents first for the keys that remain; the tables' user triggers are
//!   disabled by name the same way. After the data each trigger is on
//!   again and each dropped key added back `NOT VALID`, then validated.
//!
//! Either way, orphan rows are counted per foreign key after the load.

use std::collections::{BTreeMap, HashSet};

use tokio_postgres::Client;

use crate::config::FkHandling;
use crate::error::EtlError;
use crate::migrate::{Checks, Finish, Migration, Origin};

/// A foreign key on the target.
#[derive(Debug, Clone)]
pub struct TargetFk {
    pub name: String,
    /// `schema.table`, as the migration names its tables.
    pub table: String,
    pub parent: String,
    /// Both quoted, for SQL.
    pub table_sql: String,
    pub parent_sql: String,
    pub columns: Vec<String>,
    pub parent_columns: Vec<String>,
    /// `FOREIGN KEY (...) REFERENCES ... ON DELETE ...`
    pub definition: String,
}

impl TargetFk {
    fn add_sql(&self) -> String {
        format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID",
            self.table_sql,
            crate::sql::ident(&self.name),
            self.definition.trim_end_matches(" NOT VALID")
        )
    }

    fn item(&self) -> String {
        format!("{} {}", self.table, self.name)
    }
}

/// The target's foreign keys (not the copies partitions inherit).
pub async fn target_fks(client: &Client) -> Result<Vec<TargetFk>, EtlError> {
    let rows = client
        .query(
            "SELECT c.conname::text, format('%s.%s', cn.nspname, cl.relname), format('%s.%s', pn.nspname, pl.relname), \
             format('%I.%I', cn.nspname, cl.relname), format('%I.%I', pn.nspname, pl.relname), \
             array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i) \
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i), \
             array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i) \
                   JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i), \
             pg_get_constraintdef(c.oid) \
             FROM pg_constraint c \
             JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cl.relnamespace \
             JOIN pg_class pl ON pl.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pl.relnamespace \
             WHERE c.contype = 'f' AND c.conparentid = 0 AND cn.nspname <> 'etl' ORDER BY 2, 1",
            &[],
        )
        .await
        .map_err(EtlError::pg("reading the target's foreign keys"))?;
    Ok(rows
        .iter()
        .map(|r| TargetFk {
            name: r.get(0),
            table: r.get(1),
            parent: r.get(2),
            table_sql: r.get(3),
            parent_sql: r.get(4),
            columns: r.get(5),
            parent_columns: r.get(6),
            definition: r.get(7),
        })
        .collect())
}

impl Migration {
    fn fk_handling(&self) -> Option<FkHandling> {
        match &self.origin {
            Origin::Postgres(_) if !self.sink.create_table => Some(self.sink.fk_handling),
            _ => None,
        }
    }

    /// A table's name, or its partition root's: foreign keys name the root.
    fn root_of<'a>(&'a self, table: &'a str) -> &'a str {
        match &self.origin {
            Origin::Postgres(o) => o.roots.get(table).map_or(table, String::as_str),
            _ => table,
        }
    }

    /// Foreign keys that touch the tables of this migration.
    async fn our_fks(&self, client: &Client) -> Result<Vec<TargetFk>, EtlError> {
        let ours: HashSet<&str> = self
            .tables
            .iter()
            .map(|t| self.root_of(&t.source))
            .collect();
        Ok(target_fks(client)
            .await?
            .into_iter()
            .filter(|f| ours.contains(f.table.as_str()) || ours.contains(f.parent.as_str()))
            .collect())
    }

    /// Before the data into existing tables: `replica-role` checked,
    /// `drop-recreate`'s keys dropped. Returns the levels the tables load
    /// in (indexes into `tables`): one level but for `order`, and for
    /// `drop-recreate` keys that stayed.
    pub(crate) async fn prepare_existing(
        &self,
        client: &Client,
    ) -> Result<Vec<Vec<usize>>, EtlError> {
        let all = vec![(0..self.tables.len()).collect::<Vec<_>>()];
        let Some(handling) = self.fk_handling() else {
            return Ok(all);
        };
        if handling == FkHandling::ReplicaRole {
            let superuser: bool = client
                .query_one(
                    "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                    &[],
                )
                .await
                .map_err(EtlError::pg("reading the target role's attributes"))?
                .get(0);
            if !superuser {
                return Err(EtlError::Schema(format!(
                    "fk_handling = \"replica-role\" loads with session_replication_role = replica, which only a superuser may set, and the user etl connects as on {} is not one: connect as a superuser, or use fk_handling = \"order\" or \"drop-recreate\"",
                    self.sink.endpoint
                )));
            }
        }
        crate::sink::ledger::ensure(client)
            .await
            .map_err(EtlError::pg("creating the ledger"))?
            .map_err(EtlError::Schema)?;
        match handling {
            FkHandling::ReplicaRole => Ok(all),
            FkHandling::Order => Ok(self.levels(&self.our_fks(client).await?)),
            FkHandling::DropRecreate => {
                let fks = self.our_fks(client).await?;
                let mut kept = Vec::new();
                for fk in fks {
                    // Recorded first: a run killed after the drop adds it back.
                    self.record(
                        client,
                        "fk-drop",
                        &fk.item(),
                        &fk.add_sql(),
                        Some("dropped, not added back yet"),
                    )
                    .await?;
                    let sql = format!(
                        "SET lock_timeout = {}; ALTER TABLE {} DROP CONSTRAINT {}",
                        (self.sink.timeouts.lock_timeout_secs * 1000.0).round() as u64,
                        fk.table_sql,
                        crate::sql::ident(&fk.name)
                    );
                    match client.batch_execute(&sql).await {
                        Ok(()) => {
                            tracing::info!(foreign_key = %fk.item(), "Dropped until the data is in.")
                        }
                        Err(e) => {
                            let e = EtlError::pg(format!("dropping foreign key {}", fk.item()))(e);
                            let busy = crate::sink::postgres::explain_busy(
                                client,
                                &fk.table_sql,
                                &self.sink.timeouts,
                                e,
                            )
                            .await;
                            tracing::warn!(error = %busy, "Foreign key kept: its table stayed busy; its tables load parents first.");
                            self.record(
                                client,
                                "fk-drop",
                                &fk.item(),
                                "",
                                Some(&format!("kept: {busy}")),
                            )
                            .await?;
                            kept.push(fk);
                        }
                    }
                }
                self.triggers_off(client).await?;
                client
                    .batch_execute("RESET lock_timeout")
                    .await
                    .map_err(EtlError::pg("resetting lock_timeout"))?;
                Ok(self.levels(&kept))
            }
        }
    }

    /// `drop-recreate`: the enabled user triggers of the tables about to
    /// load disabled by name (each recorded first, so a killed run turns
    /// it back on), under the lock_timeout set by the caller; one whose
    /// table stays busy keeps firing, with a warning naming the holders.
    async fn triggers_off(&self, client: &Client) -> Result<(), EtlError> {
        let tables: Vec<String> = self.tables.iter().map(|t| t.target.qualified()).collect();
        let rows = client
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname), t.tgname::text FROM pg_trigger t \
                 JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND t.tgparentid = 0 \
                 AND c.oid IN (SELECT to_regclass(x) FROM unnest($1::text[]) x) ORDER BY 1, 2",
                &[&tables],
            )
            .await
            .map_err(EtlError::pg("reading the target's triggers"))?;
        for r in rows {
            let (table, name): (String, String) = (r.get(0), r.get(1));
            let item = format!("{table} {name}");
            let on = format!(
                "ALTER TABLE {table} ENABLE TRIGGER {}",
                crate::sql::ident(&name)
            );
            self.record(
                client,
                "trigger-off",
                &item,
                &on,
                Some("disabled for the load"),
            )
            .await?;
            let off = format!(
                "ALTER TABLE {table} DISABLE TRIGGER {}",
                crate::sql::ident(&name)
            );
            if let Err(e) = client.batch_execute(&off).await {
                let e = EtlError::pg(format!("disabling trigger {item}"))(e);
                let busy =
                    crate::sink::postgres::explain_busy(client, &table, &self.sink.timeouts, e)
                        .await;
                tracing::warn!(error = %busy, "Trigger left on: its table stayed busy; it fires on the load.");
                self.record(
                    client,
                    "trigger-off",
                    &item,
                    "",
                    Some(&format!("kept: {busy}")),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// The triggers `triggers_off` disabled, on again.
    pub(crate) async fn triggers_on(
        &self,
        client: &Client,
        finish: &mut Finish,
    ) -> Result<(), EtlError> {
        let rows = client
            .query(
                "SELECT item, statement FROM etl.phase_log WHERE pipeline = $1 AND phase = 'trigger-off' \
                 AND status = 'failed' AND statement <> '' ORDER BY item",
                &[&self.pipeline],
            )
            .await
            .map_err(EtlError::pg("reading the disabled triggers from etl.phase_log"))?;
        for r in rows {
            let (item, on): (String, String) = (r.get(0), r.get(1));
            match client.batch_execute(&on).await {
                Ok(()) => {
                    self.record(client, "trigger-off", &item, &on, None).await?;
                    finish.added.push(format!("trigger {item} on again"));
                }
                Err(e) => {
                    let e = EtlError::pg(format!("enabling trigger {item}"))(e);
                    finish.problems.push(format!("{e}; statement: {on}"));
                }
            }
        }
        Ok(())
    }

    /// The tables in levels of the foreign-key graph: a table after every
    /// table it references (self-references aside); tables in a cycle last.
    fn levels(&self, fks: &[TargetFk]) -> Vec<Vec<usize>> {
        let mut level: BTreeMap<usize, usize> = (0..self.tables.len()).map(|i| (i, 0)).collect();
        let index_of = |name: &str| -> Vec<usize> {
            (0..self.tables.len())
                .filter(|i| self.root_of(&self.tables[*i].source) == name)
                .collect()
        };
        // Longest path from a root, at most one pass per table (a cycle
        // stops growing there).
        for _ in 0..self.tables.len() {
            let mut changed = false;
            for fk in fks.iter().filter(|f| f.table != f.parent) {
                let parent = index_of(&fk.parent).iter().map(|i| level[i]).max();
                let Some(parent) = parent else { continue };
                for child in index_of(&fk.table) {
                    if level[&child] < parent + 1 {
                        level.insert(child, parent + 1);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut levels: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, l) in level {
            levels.entry(l).or_default().push(i);
        }
        levels.into_values().collect()
    }

    /// After the data: the keys `drop-recreate` dropped, added back `NOT
    /// VALID` and then validated (the table stays writable meanwhile).
    pub(crate) async fn restore_fks(
        &self,
        client: &Client,
        finish: &mut Finish,
    ) -> Result<(), EtlError> {
        if self.fk_handling() != Some(FkHandling::DropRecreate) {
            return Ok(());
        }
        self.triggers_on(client, finish).await?;
        let rows = client
            .query(
                "SELECT item, statement FROM etl.phase_log WHERE pipeline = $1 AND phase = 'fk-drop' \
                 AND status = 'failed' AND statement <> '' ORDER BY item",
                &[&self.pipeline],
            )
            .await
            .map_err(EtlError::pg("reading the dropped foreign keys from etl.phase_log"))?;
        let present: HashSet<String> = target_fks(client)
            .await?
            .iter()
            .map(TargetFk::item)
            .collect();
        for r in rows {
            let (item, add): (String, String) = (r.get(0), r.get(1));
            let (table, name) = item.split_once(' ').unwrap_or((&item, ""));
            let validate = format!(
                "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                table_sql(table),
                crate::sql::ident(name)
            );
            let run = async {
                if !present.contains(&item) {
                    client.batch_execute(&add).await?;
                }
                client.batch_execute(&validate).await
            };
            match run.await {
                Ok(()) => {
                    self.record(client, "fk-drop", &item, &add, None).await?;
                    finish.added.push(format!("foreign key {item}"));
                }
                Err(e) => {
                    let e = EtlError::pg(format!("adding back foreign key {item}"))(e);
                    finish
                        .problems
                        .push(format!("{e}; statements: {add}; {validate}"));
                }
            }
        }
        Ok(())
    }

    /// Orphan rows per foreign key that touches a loaded table.
    pub(crate) async fn fk_orphans(
        &self,
        client: &Client,
        checks: &mut Checks,
    ) -> Result<(), EtlError> {
        for fk in self.our_fks(client).await? {
            let sql = super::super::constraints::orphans_sql(
                &fk.table_sql,
                &fk.parent_sql,
                &fk.columns,
                &fk.parent_columns,
            );
            let orphans: i64 = client
                .query_one(&sql, &[])
                .await
                .map_err(EtlError::pg(format!(
                    "counting orphan rows of foreign key {}",
                    fk.item()
                )))?
                .get(0);
            checks
                .orphans
                .push((fk.name.clone(), fk.table.clone(), orphans as u64));
        }
        Ok(())
    }
}

/// `schema.table` (as recorded) quoted for SQL.
fn table_sql(name: &str) -> String {
    let (schema, table) = name.split_once('.').unwrap_or(("public", name));
    format!("{}.{}", crate::sql::ident(schema), crate::sql::ident(table))
}
