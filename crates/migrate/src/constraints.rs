//! The phases after the data: primary keys, indexes and foreign keys (from
//! the source's catalog), identity sequences set to the loaded maximum,
//! then the checks (row counts against the source, orphan rows per foreign
//! key).

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::{Checks, Finish, Migration};
use etl_base::sql::{ident, literal, TableName};
use etl_pg::error::EtlError;
use etl_source::catalog::ForeignKey;

/// `name` fitted to 63 bytes, apart from those `taken` (then taken).
fn fit(taken: &mut BTreeSet<String>, name: String) -> String {
    let n = etl_pg::text::fit_identifier(&name, &|n| taken.contains(n));
    taken.insert(n.clone());
    n
}

impl Migration {
    /// Primary keys, indexes and foreign keys, in that order: (what, SQL,
    /// a query that returns a row when it exists already).
    pub fn constraint_sql(&self) -> Vec<(String, String, Option<String>)> {
        let mut out = Vec::new();
        // Tables made beforehand keep the keys and indexes they were made with.
        if !self.pg().create_table {
            return out;
        }
        let mut taken = BTreeSet::new();
        for t in &self.tables {
            out.extend(self.keys_sql(t, &mut taken));
        }
        out.extend(
            self.foreign_keys
                .iter()
                .filter_map(|fk| self.foreign_key_sql(fk)),
        );
        out
    }

    /// A table's primary key and indexes, and an index for each foreign
    /// key no index leads with; names fitted to 63 bytes, apart from
    /// those `taken`.
    fn keys_sql(
        &self,
        t: &crate::Table,
        taken: &mut BTreeSet<String>,
    ) -> Vec<(String, String, Option<String>)> {
        let mut out = Vec::new();
        let target = qualified(&t.target);
        let pk = &t.keys.primary_key;
        if !pk.is_empty() {
            let name = fit(taken, format!("{}_pkey", t.target.name));
            out.push((
                format!("primary key of {target} ({})", pk.join(", ")),
                format!(
                    "ALTER TABLE {target} ADD CONSTRAINT {} PRIMARY KEY ({})",
                    ident(&name),
                    columns(pk)
                ),
                Some(format!(
                    "SELECT 1 FROM pg_constraint WHERE conrelid = {}::regclass AND contype = 'p'",
                    literal(&target)
                )),
            ));
        }
        let mut indexed: Vec<Vec<String>> = vec![pk.clone()];
        for ix in &t.keys.indexes {
            if ix.columns.is_empty() || indexed.contains(&ix.columns) {
                continue;
            }
            indexed.push(ix.columns.clone());
            let name = fit(taken, format!("{}_{}_idx", t.target.name, ix.name));
            out.push((
                format!(
                    "{}index {} on {target} ({})",
                    if ix.unique { "unique " } else { "" },
                    ix.name,
                    ix.columns.join(", ")
                ),
                format!(
                    "CREATE {}INDEX IF NOT EXISTS {} ON {target} ({})",
                    if ix.unique { "UNIQUE " } else { "" },
                    ident(&name),
                    columns(&ix.columns)
                ),
                None,
            ));
        }
        // Foreign key columns get an index when none leads with them.
        for fk in self.foreign_keys.iter().filter(|f| f.table == t.source) {
            if indexed.iter().any(|cols| cols.starts_with(&fk.columns)) {
                continue;
            }
            indexed.push(fk.columns.clone());
            let name = fit(
                taken,
                format!("{}_{}_idx", t.target.name, fk.columns.join("_")),
            );
            out.push((
                format!(
                    "index on {target} ({}) for foreign key {}",
                    fk.columns.join(", "),
                    fk.name
                ),
                format!(
                    "CREATE INDEX IF NOT EXISTS {} ON {target} ({})",
                    ident(&name),
                    columns(&fk.columns)
                ),
                None,
            ));
        }
        out
    }

    /// A foreign key between two migrated tables.
    fn foreign_key_sql(&self, fk: &ForeignKey) -> Option<(String, String, Option<String>)> {
        let (Some(child), Some(parent)) = (self.table(&fk.table), self.table(&fk.parent)) else {
            return None;
        };
        let target = qualified(&child.target);
        let name = fk_name(fk);
        Some((
            format!(
                "foreign key {} on {target} ({}) -> {} ({})",
                fk.name,
                fk.columns.join(", "),
                qualified(&parent.target),
                fk.parent_columns.join(", ")
            ),
            format!(
                "ALTER TABLE {target} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}){}{}",
                ident(&name),
                columns(&fk.columns),
                qualified(&parent.target),
                columns(&fk.parent_columns),
                fk.on_update
                    .sql()
                    .map(|a| format!(" ON UPDATE {a}"))
                    .unwrap_or_default(),
                fk.on_delete
                    .sql()
                    .map(|a| format!(" ON DELETE {a}"))
                    .unwrap_or_default(),
            ),
            Some(format!(
                "SELECT 1 FROM pg_constraint WHERE conrelid = {}::regclass AND conname = {}",
                literal(&target),
                literal(&name)
            )),
        ))
    }

    /// Statements that set each identity column's sequence to the loaded
    /// maximum: (column, SQL returning the next value or no row).
    pub fn sequence_sql(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for t in &self.tables {
            let target = qualified(&t.target);
            for c in &t.keys.identity {
                out.push((
                    format!("{target}.{}", ident(c)),
                    format!(
                        "SELECT setval(s, m) + 1 FROM (SELECT pg_get_serial_sequence({}, {}) AS s, \
                         (SELECT max({}) FROM {target}) AS m) x WHERE s IS NOT NULL AND m IS NOT NULL",
                        literal(&target),
                        literal(c),
                        ident(c)
                    ),
                ));
            }
        }
        out
    }

    /// The phases after the data: constraints (each one added unless the
    /// catalog has it, a failure reported with its statement while the
    /// others go on), sequences, checks; each step recorded in
    /// `etl.phase_log` with its statement (and error), which `etl status`
    /// shows.
    pub async fn finish(&self) -> Result<Finish, EtlError> {
        etl_base::hooks::phase("post-data");
        let client = self.client().await?;
        let mut finish = Finish::default();
        // One process finishes at a time (several may share the plan and
        // reach this together); the next finds what it added done. The
        // lock is the session's: it goes with the session.
        client
            .batch_execute(&format!(
                "SELECT pg_advisory_lock(hashtext({}))",
                etl_base::sql::literal(&format!("etl finish {}", self.pipeline))
            ))
            .await
            .map_err(EtlError::pg(
                "waiting for another process's constraints phase",
            ))?;
        client
            .batch_execute(&format!(
                "SET lock_timeout = {}; SET statement_timeout = {}",
                (self.pg().timeouts.lock_timeout_secs * 1000.0).round() as u64,
                (self.pg().timeouts.statement_timeout_secs * 1000.0).round() as u64
            ))
            .await
            .map_err(EtlError::pg("setting timeouts"))?;
        if matches!(self.origin, super::Origin::Postgres(..)) {
            self.post_data(&client, &mut finish).await?;
        }
        // drop-recreate's keys back, its triggers on (existing tables).
        self.restore_fks(&client, &mut finish).await?;
        self.add_constraints(&client, &mut finish).await?;
        etl_base::hooks::phase("sequences");
        self.reset_sequences(&client, &mut finish).await?;
        etl_base::hooks::phase("verify");
        finish.checks = self.checks(&client, false).await?;
        self.record_checks(&client, &finish.checks).await?;
        Ok(finish)
    }

    /// Each key, check and foreign key not there yet, recorded in the
    /// phase log; one that fails is a problem of the finish, not an error.
    async fn add_constraints(&self, client: &Client, finish: &mut Finish) -> Result<(), EtlError> {
        for (what, sql, exists) in self.constraint_sql() {
            if let Some(q) = exists {
                let found = client
                    .query_opt(&q, &[])
                    .await
                    .map_err(EtlError::pg(format!("looking for the {what}")))?;
                if found.is_some() {
                    continue;
                }
            }
            match client.batch_execute(&sql).await {
                Ok(()) => {
                    tracing::info!(what, "Added.");
                    self.record(client, "constraints", &what, &sql, None)
                        .await?;
                    finish.added.push(what);
                }
                Err(e) => {
                    let e = EtlError::pg(format!("adding the {what}"))(e);
                    if e.is_connection_lost() {
                        // The phase is tried again; this one is looked for first.
                        return Err(e);
                    }
                    tracing::error!(error = %e, "A constraint could not be added.");
                    self.record(client, "constraints", &what, &sql, Some(&e.to_string()))
                        .await?;
                    finish.problems.push(format!("{e}; statement: {sql}"));
                }
            }
        }
        Ok(())
    }

    /// Each identity or serial column's sequence set past its MAX.
    async fn reset_sequences(&self, client: &Client, finish: &mut Finish) -> Result<(), EtlError> {
        for (column, sql) in self.sequence_sql() {
            let next: Option<i64> = client
                .query_opt(&sql, &[])
                .await
                .map_err(EtlError::pg(format!("resetting the sequence of {column}")))?
                .map(|r| r.get(0));
            match next {
                Some(n) => {
                    self.record(client, "sequences", &column, &sql, None)
                        .await?;
                    finish.sequences.push(format!("{column} next {n}"));
                }
                None => tracing::info!(
                    column,
                    "No sequence to reset (an empty table, or a target column without identity)."
                ),
            }
        }
        Ok(())
    }

    /// The verify phase's counts, checksums and orphans in the phase log.
    async fn record_checks(&self, client: &Client, checks: &crate::Checks) -> Result<(), EtlError> {
        for (table, equal) in &checks.checksums {
            let differs = (!equal).then_some("checksum differs from the source's");
            self.record(
                client,
                "verify",
                &format!("checksum of {table}"),
                "",
                differs,
            )
            .await?;
        }
        for (table, source, target) in &checks.counts {
            let differs =
                (source != target).then(|| format!("source {source} rows, target {target}"));
            self.record(
                client,
                "verify",
                &format!("row count of {table}"),
                "",
                differs.as_deref(),
            )
            .await?;
        }
        for (fk, table, orphans) in &checks.orphans {
            let found = (*orphans > 0).then(|| format!("{orphans} rows of {table} have no parent"));
            self.record(
                client,
                "verify",
                &format!("orphans of {fk}"),
                "",
                found.as_deref(),
            )
            .await?;
        }
        Ok(())
    }

    pub(super) async fn record(
        &self,
        client: &Client,
        phase: &str,
        item: &str,
        statement: &str,
        error: Option<&str>,
    ) -> Result<(), EtlError> {
        etl_ledger::sql::record_phase(
            self.ledger(client),
            &self.pipeline,
            phase,
            item,
            statement,
            error,
        )
        .await
        .map_err(EtlError::pg(format!(
            "recording the {phase} step {item:?} in etl.phase_log"
        )))
    }

    /// Row counts against the source, orphans per foreign key.
    ///
    /// A PostgreSQL database (`thorough`: `etl verify`): counts, and with
    /// `thorough` a checksum of every table on both servers; orphans per
    /// foreign key after a load into existing tables and with `thorough`
    /// (keys post-data added were validated as they were added).
    pub async fn checks(&self, client: &Client, thorough: bool) -> Result<Checks, EtlError> {
        let mut checks = Checks::default();
        if matches!(self.origin, super::Origin::Postgres(..)) {
            // Into existing tables, triggers and defaults may change rows:
            // the run checksums them too.
            self.pg_checks(client, &mut checks, thorough || !self.pg().create_table)
                .await?;
            if thorough || !self.pg().create_table {
                self.fk_orphans(client, &mut checks).await?;
            }
            return Ok(checks);
        }
        // Into existing tables: the target's own foreign keys.
        if !self.pg().create_table {
            self.fk_orphans(client, &mut checks).await?;
        }
        for (t, source) in self.tables.iter().zip(&self.sources) {
            let source = source.count()?;
            let target: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM {}", qualified(&t.target)),
                    &[],
                )
                .await
                .map_err(EtlError::pg(format!("counting the rows of {}", t.target)))?
                .get(0);
            checks
                .counts
                .push((t.source.clone(), source, target as u64));
        }
        for fk in self.foreign_keys.iter().filter(|_| self.pg().create_table) {
            let (Some(child), Some(parent)) = (self.table(&fk.table), self.table(&fk.parent))
            else {
                continue;
            };
            let sql = orphans_sql(
                &qualified(&child.target),
                &qualified(&parent.target),
                &fk.columns,
                &fk.parent_columns,
            );
            let orphans: i64 = client
                .query_one(&sql, &[])
                .await
                .map_err(EtlError::pg(format!(
                    "counting orphan rows of foreign key {}",
                    fk.name
                )))?
                .get(0);
            checks
                .orphans
                .push((fk.name.clone(), fk.table.clone(), orphans as u64));
        }
        Ok(checks)
    }

    /// Drops this migration's foreign keys that touch a table about to be
    /// (re)loaded: a whole table's chunk truncates it, which a referencing
    /// key forbids. The constraints phase adds them back.
    pub(super) async fn drop_foreign_keys(
        &self,
        client: &Client,
        loading: &BTreeSet<&str>,
    ) -> Result<(), EtlError> {
        // Tables made beforehand: their keys are the target's, handled as
        // fk_handling says, never dropped here.
        if !self.pg().create_table {
            return Ok(());
        }
        for fk in &self.foreign_keys {
            if !(loading.contains(fk.table.as_str()) || loading.contains(fk.parent.as_str())) {
                continue;
            }
            let Some(child) = self.table(&fk.table) else {
                continue;
            };
            let target = qualified(&child.target);
            let sql = format!(
                "DO $$ BEGIN IF to_regclass({}) IS NOT NULL THEN ALTER TABLE {target} DROP CONSTRAINT IF EXISTS {}; END IF; END $$",
                literal(&target),
                ident(&fk_name(fk))
            );
            client
                .batch_execute(&sql)
                .await
                .map_err(EtlError::pg(format!(
                    "dropping foreign key {} before reloading",
                    fk.name
                )))?;
        }
        Ok(())
    }
}

fn fk_name(fk: &ForeignKey) -> String {
    etl_pg::text::fit_identifier(&fk.name, &|_| false)
}

fn qualified(t: &TableName) -> String {
    format!("{}.{}", ident(t.schema_or_public()), ident(&t.name))
}

fn columns(cols: &[String]) -> String {
    cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ")
}

/// Rows of `child` whose key (all of `columns` set) has no row in `parent`.
pub(super) fn orphans_sql(
    child: &str,
    parent: &str,
    columns: &[String],
    parent_columns: &[String],
) -> String {
    let not_null: Vec<String> = columns
        .iter()
        .map(|c| format!("c.{} IS NOT NULL", ident(c)))
        .collect();
    let matches: Vec<String> = columns
        .iter()
        .zip(parent_columns)
        .map(|(c, p)| format!("p.{} = c.{}", ident(p), ident(c)))
        .collect();
    format!(
        "SELECT count(*) FROM {child} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {})",
        not_null.join(" AND "),
        matches.join(" AND ")
    )
}
