//! A migration into tables that exist on the target (`create_table =
//! false`: a whole PostgreSQL database the way people use `pg_restore
//! --data-only`, or an Access file, ODBC tables or CSV files into a schema
//! made beforehand): no DDL is run but for the target's foreign keys,
//! which meet the load as `fk_handling` says:
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

use crate::{Checks, Finish, Migration, Origin};
use etl_pg::error::EtlError;
use etl_sink::spec::FkHandling;

/// A foreign key on the target, in the catalog's terms. `drop-recreate`
/// records it as JSON in `etl.phase_log` before dropping it, and a resumed
/// run renders the `ADD CONSTRAINT` from these fields again (identifiers
/// quoted, actions from a closed list): SQL text is never read back from
/// the target and run, since anyone who can write that table could make
/// etl run it with its role.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFk {
    pub name: String,
    pub schema: String,
    pub relname: String,
    pub parent_schema: String,
    pub parent_relname: String,
    pub columns: Vec<String>,
    pub parent_columns: Vec<String>,
    pub match_full: bool,
    pub on_update: FkAction,
    pub on_delete: FkAction,
    /// `ON DELETE SET NULL (these)`: empty for every column.
    pub delete_set: Vec<String>,
    pub deferrable: bool,
    pub deferred: bool,
}

/// `pg_constraint.confupdtype` / `confdeltype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FkAction {
    NoAction,
    Restrict,
    Cascade,
    SetNull,
    SetDefault,
}

impl FkAction {
    fn from_catalog(code: &str) -> Result<FkAction, EtlError> {
        Ok(match code {
            "a" => FkAction::NoAction,
            "r" => FkAction::Restrict,
            "c" => FkAction::Cascade,
            "n" => FkAction::SetNull,
            "d" => FkAction::SetDefault,
            other => {
                return Err(EtlError::Bug(format!(
                    "pg_constraint holds foreign-key action {other:?}, which etl does not know"
                )))
            }
        })
    }

    fn sql(self) -> &'static str {
        match self {
            FkAction::NoAction => "NO ACTION",
            FkAction::Restrict => "RESTRICT",
            FkAction::Cascade => "CASCADE",
            FkAction::SetNull => "SET NULL",
            FkAction::SetDefault => "SET DEFAULT",
        }
    }
}

fn idents(names: &[String]) -> String {
    names
        .iter()
        .map(|n| etl_base::sql::ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

impl TargetFk {
    /// `schema.table`, as the migration names its tables.
    pub fn table(&self) -> String {
        format!("{}.{}", self.schema, self.relname)
    }

    pub fn parent(&self) -> String {
        format!("{}.{}", self.parent_schema, self.parent_relname)
    }

    pub fn table_sql(&self) -> String {
        format!(
            "{}.{}",
            etl_base::sql::ident(&self.schema),
            etl_base::sql::ident(&self.relname)
        )
    }

    pub fn parent_sql(&self) -> String {
        format!(
            "{}.{}",
            etl_base::sql::ident(&self.parent_schema),
            etl_base::sql::ident(&self.parent_relname)
        )
    }

    /// The key added back, rendered from its fields.
    pub fn add_sql(&self) -> String {
        let mut sql = format!(
            "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({})",
            self.table_sql(),
            etl_base::sql::ident(&self.name),
            idents(&self.columns),
            self.parent_sql(),
            idents(&self.parent_columns)
        );
        if self.match_full {
            sql.push_str(" MATCH FULL");
        }
        sql.push_str(" ON UPDATE ");
        sql.push_str(self.on_update.sql());
        sql.push_str(" ON DELETE ");
        sql.push_str(self.on_delete.sql());
        if !self.delete_set.is_empty() {
            sql.push_str(&format!(" ({})", idents(&self.delete_set)));
        }
        if self.deferrable {
            sql.push_str(" DEFERRABLE");
            if self.deferred {
                sql.push_str(" INITIALLY DEFERRED");
            }
        }
        sql.push_str(" NOT VALID");
        sql
    }

    fn item(&self) -> String {
        format!("{} {}", self.table(), self.name)
    }
}

/// The target's foreign keys (not the copies partitions inherit).
pub async fn target_fks(client: &Client) -> Result<Vec<TargetFk>, EtlError> {
    let rows = client
        .query(
            "SELECT c.conname::text, cn.nspname::text, cl.relname::text, pn.nspname::text, pl.relname::text, \
             array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i) \
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i), \
             array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i) \
                   JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i), \
             c.confmatchtype = 'f', c.confupdtype::text, c.confdeltype::text, \
             array(SELECT a.attname::text FROM unnest(c.confdelsetcols) WITH ORDINALITY k(n, i) \
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i), \
             c.condeferrable, c.condeferred \
             FROM pg_constraint c \
             JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cl.relnamespace \
             JOIN pg_class pl ON pl.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pl.relnamespace \
             WHERE c.contype = 'f' AND c.conparentid = 0 AND cn.nspname <> 'etl' ORDER BY 2, 3, 1",
            &[],
        )
        .await
        .map_err(EtlError::pg("reading the target's foreign keys"))?;
    rows.iter()
        .map(|r| {
            Ok(TargetFk {
                name: r.get(0),
                schema: r.get(1),
                relname: r.get(2),
                parent_schema: r.get(3),
                parent_relname: r.get(4),
                columns: r.get(5),
                parent_columns: r.get(6),
                match_full: r.get(7),
                on_update: FkAction::from_catalog(r.get(8))?,
                on_delete: FkAction::from_catalog(r.get(9))?,
                delete_set: r.get(10),
                deferrable: r.get(11),
                deferred: r.get(12),
            })
        })
        .collect()
}

impl Migration {
    pub(crate) fn fk_handling(&self) -> Option<FkHandling> {
        (!self.pg().create_table).then_some(self.pg().fk_handling)
    }

    /// Table `i`'s target as the target's foreign keys name it
    /// (`schema.table`; a partition's root, which the keys name).
    fn fk_name(&self, i: usize) -> String {
        let t = &self.tables[i];
        match &self.origin {
            Origin::Postgres(o) => o.roots.get(&t.source).unwrap_or(&t.source).to_string(),
            _ => format!(
                "{}.{}",
                t.target.schema.as_deref().unwrap_or("public"),
                t.target.name
            ),
        }
    }

    /// Every table's [`Migration::fk_name`].
    fn fk_names(&self) -> HashSet<String> {
        (0..self.tables.len()).map(|i| self.fk_name(i)).collect()
    }

    /// Foreign keys that touch the tables of this migration.
    async fn our_fks(&self, client: &Client) -> Result<Vec<TargetFk>, EtlError> {
        let ours = self.fk_names();
        Ok(target_fks(client)
            .await?
            .into_iter()
            .filter(|f| ours.contains(&f.table()) || ours.contains(&f.parent()))
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
                return Err(EtlError::Config(format!(
                    "fk_handling = \"replica-role\" loads with session_replication_role = replica, which only a superuser may set, and the user etl connects as on {} is not one: connect as a superuser, or use fk_handling = \"order\" or \"drop-recreate\"",
                    self.pg().endpoint
                )));
            }
        }
        etl_ledger::sql::ensure(self.ledger(client))
            .await
            .map_err(EtlError::pg("creating the ledger"))?
            .map_err(EtlError::Config)?;
        match handling {
            FkHandling::ReplicaRole => Ok(all),
            FkHandling::Order => Ok(self.levels(&self.our_fks(client).await?)),
            FkHandling::DropRecreate => {
                let fks = self.our_fks(client).await?;
                let mut kept = Vec::new();
                for fk in fks {
                    // Recorded first: a run killed after the drop adds it back.
                    let json = serde_json::to_string(&fk)
                        .map_err(|e| EtlError::Bug(format!("foreign key as JSON: {e}")))?;
                    self.record(
                        client,
                        "fk-drop",
                        &fk.item(),
                        &json,
                        Some("dropped, not added back yet"),
                    )
                    .await?;
                    let sql = format!(
                        "SET lock_timeout = {}; ALTER TABLE {} DROP CONSTRAINT {}",
                        (self.pg().timeouts.lock_timeout_secs * 1000.0).round() as u64,
                        fk.table_sql(),
                        etl_base::sql::ident(&fk.name)
                    );
                    match client.batch_execute(&sql).await {
                        Ok(()) => {
                            tracing::info!(foreign_key = %fk.item(), "Dropped until the data is in.")
                        }
                        Err(e) => {
                            let e = EtlError::pg(format!("dropping foreign key {}", fk.item()))(e);
                            let busy = etl_pg::ddl::explain_busy(
                                client,
                                &fk.table_sql(),
                                self.pg().timeouts.lock_timeout_secs,
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
        let rows = self
            .ledger(client)
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
                etl_base::sql::ident(&name)
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
                etl_base::sql::ident(&name)
            );
            if let Err(e) = client.batch_execute(&off).await {
                let e = EtlError::pg(format!("disabling trigger {item}"))(e);
                let busy = etl_pg::ddl::explain_busy(
                    client,
                    &table,
                    self.pg().timeouts.lock_timeout_secs,
                    e,
                )
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

    /// The triggers `triggers_off` disabled, on again: found in the
    /// catalog (disabled, on a table of this migration, and recorded as
    /// disabled by etl), the statement rendered from the catalog's names.
    pub(crate) async fn triggers_on(
        &self,
        client: &Client,
        finish: &mut Finish,
    ) -> Result<(), EtlError> {
        let tables: Vec<String> = self.tables.iter().map(|t| t.target.qualified()).collect();
        let rows = self
            .ledger(client)
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname), t.tgname::text FROM pg_trigger t \
                 JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE NOT t.tgisinternal AND t.tgenabled = 'D' AND t.tgparentid = 0 \
                 AND c.oid IN (SELECT to_regclass(x) FROM unnest($2::text[]) x) \
                 AND format('%I.%I', n.nspname, c.relname) || ' ' || t.tgname IN ( \
                     SELECT item FROM etl.phase_log WHERE pipeline = $1 AND phase = 'trigger-off' \
                     AND status = 'failed' AND statement <> '') ORDER BY 1, 2",
                &[&self.pipeline, &tables],
            )
            .await
            .map_err(EtlError::pg("reading the triggers etl disabled"))?;
        for r in rows {
            let (table, name): (String, String) = (r.get(0), r.get(1));
            let item = format!("{table} {name}");
            let on = format!(
                "ALTER TABLE {table} ENABLE TRIGGER {}",
                etl_base::sql::ident(&name)
            );
            match client.batch_execute(&on).await {
                Ok(()) => {
                    self.record(client, "trigger-off", &item, &on, None).await?;
                    finish.added.push(format!("trigger {item} on again"));
                }
                Err(e) => {
                    let e = EtlError::pg(format!("enabling trigger {item}"))(e);
                    if e.is_connection_lost() {
                        return Err(e);
                    }
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
                .filter(|i| self.fk_name(*i) == name)
                .collect()
        };
        // Longest path from a root, at most one pass per table (a cycle
        // stops growing there).
        for _ in 0..self.tables.len() {
            let mut changed = false;
            for fk in fks.iter().filter(|f| f.table() != f.parent()) {
                let parent = index_of(&fk.parent()).iter().map(|i| level[i]).max();
                let Some(parent) = parent else { continue };
                for child in index_of(&fk.table()) {
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
        let rows = self
            .ledger(client)
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
        let names = self.fk_names();
        let ours: HashSet<&str> = names.iter().map(String::as_str).collect();
        for r in rows {
            let (item, recorded): (String, String) = (r.get(0), r.get(1));
            let fk = match recorded_fk(&item, &recorded, &ours) {
                Ok(fk) => fk,
                Err(why) => {
                    finish.problems.push(format!(
                        "etl.phase_log's record of dropped foreign key {item:?} (pipeline {:?}, phase 'fk-drop') {why}; the log was changed by something other than etl, so etl does not add it back: add the key yourself and delete that row",
                        self.pipeline
                    ));
                    continue;
                }
            };
            let add = fk.add_sql();
            let validate = format!(
                "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                fk.table_sql(),
                etl_base::sql::ident(&fk.name)
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
                    if e.is_connection_lost() {
                        // Tried again: a key added already is only validated.
                        return Err(e);
                    }
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
                &fk.table_sql(),
                &fk.parent_sql(),
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
                .push((fk.name.clone(), fk.table(), orphans as u64));
        }
        Ok(())
    }
}

/// A dropped key as `drop-recreate` recorded it: JSON of its fields, under
/// the item it would be recorded as, on a table of this migration.
fn recorded_fk(item: &str, recorded: &str, ours: &HashSet<&str>) -> Result<TargetFk, String> {
    let fk: TargetFk = serde_json::from_str(recorded)
        .map_err(|e| format!("is not a foreign key as etl records one ({e})"))?;
    if fk.item() != item {
        return Err(format!("describes key {:?} instead", fk.item()));
    }
    if !ours.contains(fk.table().as_str()) && !ours.contains(fk.parent().as_str()) {
        return Err(format!(
            "joins {} to {}, neither a table of this pipeline",
            fk.table(),
            fk.parent()
        ));
    }
    if fk.columns.is_empty() || fk.columns.len() != fk.parent_columns.len() {
        return Err("names no columns, or unequal numbers of them on each side".into());
    }
    Ok(fk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fk() -> TargetFk {
        TargetFk {
            name: "orders_customer_fkey".into(),
            schema: "sales".into(),
            relname: "orders".into(),
            parent_schema: "sales".into(),
            parent_relname: "customers".into(),
            columns: vec!["customer".into()],
            parent_columns: vec!["id".into()],
            match_full: false,
            on_update: FkAction::NoAction,
            on_delete: FkAction::Cascade,
            delete_set: vec![],
            deferrable: true,
            deferred: true,
        }
    }

    #[test]
    fn a_recorded_key_is_rendered_from_its_fields_and_nothing_else() {
        let ours: HashSet<&str> = ["sales.orders"].into();
        let json = serde_json::to_string(&fk()).unwrap();
        let back = recorded_fk("sales.orders orders_customer_fkey", &json, &ours).unwrap();
        assert_eq!(back, fk());
        assert_eq!(
            back.add_sql(),
            "ALTER TABLE \"sales\".\"orders\" ADD CONSTRAINT \"orders_customer_fkey\" FOREIGN KEY (\"customer\") \
             REFERENCES \"sales\".\"customers\" (\"id\") ON UPDATE NO ACTION ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED NOT VALID"
        );
        // A name carrying SQL stays a name.
        let mut evil = fk();
        evil.name = "x\"; DROP TABLE sales.customers; --".into();
        assert!(evil
            .add_sql()
            .contains("\"x\"\"; DROP TABLE sales.customers; --\""));
    }

    #[test]
    fn a_record_changed_by_hand_is_refused_with_the_reason() {
        let ours: HashSet<&str> = ["sales.orders"].into();
        let item = "sales.orders orders_customer_fkey";
        let sql = "ALTER TABLE sales.orders ADD CONSTRAINT x FOREIGN KEY (a) REFERENCES b (c); DROP TABLE sales.customers";
        assert!(recorded_fk(item, sql, &ours)
            .unwrap_err()
            .starts_with("is not a foreign key as etl records one"));
        let mut other = fk();
        other.name = "other".into();
        let json = serde_json::to_string(&other).unwrap();
        assert!(recorded_fk(item, &json, &ours)
            .unwrap_err()
            .contains("describes key"));
        let mut elsewhere = fk();
        elsewhere.schema = "secret".into();
        elsewhere.parent_schema = "secret".into();
        let json = serde_json::to_string(&elsewhere).unwrap();
        assert!(recorded_fk(&elsewhere.item(), &json, &ours)
            .unwrap_err()
            .contains("neither a table of this pipeline"));
        let mut extra = serde_json::to_value(fk()).unwrap();
        extra["statement"] = "DROP TABLE x".into();
        assert!(recorded_fk(item, &extra.to_string(), &ours).is_err());
    }
}
