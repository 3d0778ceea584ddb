//! The phases of a whole PostgreSQL database around the data: pre-data
//! before it, then post-data, sequences and the checks.

use std::collections::HashSet;

use futures_util::StreamExt;

use tokio_postgres::Client;

use super::dump::{self, Dump, Entry, Section};
use crate::{Finish, Migration, Origin, TableSource};
use etl_pg::error::EtlError;

/// A post-data session: index builds sort in memory up to this much
/// (the server's default, 64 MB, spills big indexes to disk); commits do
/// not wait for the WAL to reach disk (each entry's record commits with
/// it, so a server crash loses both and the next run redoes the entry;
/// [`durable`] after the entries makes them all durable before etl says
/// they are done).
const SESSION: &str = "SET maintenance_work_mem = '256MB'; SET synchronous_commit = off";

/// `etl.phase_log`'s item for the pre-data section.
const PRE_DATA_ITEM: &str = "schema";

impl Migration {
    /// `etl plan`'s phases after discover for a PostgreSQL source: what
    /// pg_dump would create before and after the data, by kind, and what
    /// the target cannot take (extensions it does not have).
    pub(crate) fn pg_plan_lines(
        &self,
        mut lines: Vec<String>,
        rows: u64,
        chunks: usize,
    ) -> Result<Vec<String>, EtlError> {
        let by_kind = |d: &Dump| {
            let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
            for e in &d.entries {
                *kinds.entry(e.kind.as_str()).or_default() += 1;
            }
            kinds
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let pre = self.pg_dump(Section::PreData)?;
        let post = self.pg_dump(Section::PostData)?;
        if self.pg().create_table {
            lines.push(format!(
                "Pre-data (pg_dump --section=pre-data, in one transaction before the data): {}",
                by_kind(&pre)
            ));
            let missing = etl_pg::block_on(self.missing_extensions(&pre))?;
            if !missing.is_empty() {
                lines.push(
                    "Cannot be created on the target (install these extensions there first):"
                        .into(),
                );
                for m in missing {
                    lines.push(format!("  extension {m}"));
                }
            }
        } else {
            lines.push(format!(
                "Pre-data: none (create_table = false: the tables exist on the target); foreign keys and triggers: fk_handling = \"{}\"",
                self.pg().fk_handling.as_str()
            ));
            let missing = etl_pg::block_on(self.missing_on_target())?;
            if !missing.is_empty() {
                lines.push("Cannot be loaded (create them on the target first, or leave them out with source.exclude):".into());
                for m in missing {
                    lines.push(format!("  {m}"));
                }
            }
        }
        lines.push(format!(
            "Data: {} rows in {chunks} chunks, {} at a time, each in one transaction with its ledger row",
            etl_run::summary::thousands(rows),
            self.workers
        ));
        lines.extend(self.after_load_line());
        if self.pg().create_table {
            lines.push(format!(
                "Post-data (pg_dump --section=post-data, once every chunk is done; indexes {} at a time): {}",
                self.workers,
                by_kind(&post)
            ));
        }
        lines.push("Sequences: each set to the source's current value".into());
        lines.push("Verify: row count and checksum of every table on both servers; every owned sequence at or past its column's MAX".into());
        Ok(lines)
    }

    /// Into existing tables: the tables, and the columns of a table, the
    /// target lacks.
    async fn missing_on_target(&self) -> Result<Vec<String>, EtlError> {
        let client = self.client().await?;
        let mut missing = Vec::new();
        for t in &self.tables {
            let columns = etl_pg::ddl::read_columns(&client, &t.target).await?;
            let Some(columns) = columns else {
                missing.push(format!(
                    "table {} does not exist on the target",
                    t.target.qualified()
                ));
                continue;
            };
            let absent: Vec<&String> = t
                .schema
                .fields()
                .iter()
                .map(|f| f.name())
                .filter(|name| !columns.iter().any(|c| c.name == **name))
                .collect();
            if !absent.is_empty() {
                missing.push(format!(
                    "table {} has no column {absent:?}",
                    t.target.qualified()
                ));
            }
        }
        Ok(missing)
    }

    /// Extensions pre-data creates that the target server does not offer.
    async fn missing_extensions(&self, pre: &Dump) -> Result<Vec<String>, EtlError> {
        let wanted: Vec<String> = pre
            .entries
            .iter()
            .filter(|e| e.kind == "EXTENSION")
            .filter_map(|e| e.name.split_whitespace().last().map(str::to_string))
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let rows = client
            .query("SELECT name::text FROM pg_available_extensions", &[])
            .await
            .map_err(EtlError::pg("reading the target's available extensions"))?;
        let offered: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        Ok(wanted
            .into_iter()
            .filter(|w| !offered.contains(w))
            .collect())
    }

    pub(super) fn pg_origin(
        &self,
    ) -> Result<(&etl_source::spec::PgDatabaseSpec, &dump::Selection), EtlError> {
        match &self.origin {
            Origin::Postgres(o) => Ok((&o.spec, &o.selection)),
            _ => Err(EtlError::Bug("a PostgreSQL phase on another origin".into())),
        }
    }

    /// A connection to the source database, for a phase that reads it.
    pub(super) async fn pg_source(&self) -> Result<etl_pg::Conn, EtlError> {
        let (spec, _) = self.pg_origin()?;
        let pool = etl_pg::Pool::new(spec.endpoint.clone(), &format!("etl {}", self.pipeline));
        Ok(pool.get().await?)
    }

    /// pg_dump's section of this migration's selection.
    pub(crate) fn pg_dump(&self, section: Section) -> Result<Dump, EtlError> {
        let (spec, selection) = self.pg_origin()?;
        dump::run_pg_dump(spec, selection, section)
    }

    /// Before the data, with `create_table`: the pre-data section applied
    /// on the target in one transaction (all of it or nothing), recorded
    /// in `etl.phase_log`; a run after that skips it.
    pub(crate) async fn pre_data(&self, client: &Client) -> Result<(), EtlError> {
        if !self.pg().create_table {
            return Ok(());
        }
        etl_ledger::sql::ensure(self.ledger(client))
            .await
            .map_err(EtlError::pg("creating the ledger"))?
            .map_err(EtlError::Config)?;
        let done = dump::done_items(self.ledger(client), &self.pipeline, "pre-data").await?;
        if done.contains(PRE_DATA_ITEM) {
            tracing::info!("The pre-data objects were created by an earlier run.");
            return Ok(());
        }
        // Both sections at once: the post-data one is kept for after the data.
        let (spec, selection) = self.pg_origin()?;
        let (dump, post) = std::thread::scope(|s| {
            let post = s.spawn(|| dump::run_pg_dump(spec, selection, Section::PostData));
            (self.pg_dump(Section::PreData), post.join())
        });
        let dump = dump?;
        if let (Origin::Postgres(o), Ok(Ok(post))) = (&self.origin, post) {
            *o.post_data.lock().expect("never held across a panic") = Some(post);
        }
        let script = dump.script();
        tracing::info!(
            objects = dump.entries.len(),
            "Creating the source's schemas, types, functions and tables (pg_dump --section=pre-data)."
        );
        // Several processes may share the plan and start together: one
        // applies the section, the others wait for it here and find it done.
        let lock = format!("etl pre-data {}", self.pipeline);
        let applied = async {
            client.batch_execute("BEGIN").await?;
            client
                .execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock])
                .await?;
            let done = self
                .ledger(client)
                .query_opt(
                    "SELECT 1 FROM etl.phase_log WHERE pipeline = $1 AND phase = 'pre-data' AND item = $2 AND status = 'done'",
                    &[&self.pipeline, &PRE_DATA_ITEM],
                )
                .await?;
            if done.is_some() {
                tracing::info!(
                    "The pre-data objects were created by another process sharing the plan."
                );
                return client.batch_execute("COMMIT").await;
            }
            client.batch_execute(&script).await?;
            // pg_dump's preamble empties search_path for the session.
            client.batch_execute("RESET search_path").await?;
            etl_ledger::sql::record_phase(
                self.ledger(client),
                &self.pipeline,
                "pre-data",
                PRE_DATA_ITEM,
                &script,
                None,
            )
            .await?;
            client.batch_execute("COMMIT").await
        };
        if let Err(e) = applied.await {
            let _ = client.batch_execute("ROLLBACK").await;
            let e = EtlError::pg(format!(
                "creating the source's objects on {} (pg_dump --section=pre-data, in one transaction: nothing was created)",
                self.pg().endpoint
            ))(e);
            if e.is_transient() {
                // Tried again by the caller.
                return Err(e);
            }
            return Err(EtlError::Config(format!(
                "{e}\n  the target must not have these objects yet: use an empty database, or create them yourself and set create_table = false in [[sinks]]"
            )));
        }
        Ok(())
    }

    /// After the data: pg_dump's post-data entries (each skipped when an
    /// earlier run recorded it), runs of indexes several at a time; then
    /// the sequences. A failed entry is reported with its statement and
    /// the others go on.
    pub(crate) async fn post_data(
        &self,
        client: &Client,
        finish: &mut Finish,
    ) -> Result<(), EtlError> {
        if self.pg().create_table {
            let kept = match &self.origin {
                Origin::Postgres(o) => o
                    .post_data
                    .lock()
                    .expect("never held across a panic")
                    .take(),
                _ => None,
            };
            let dump = match kept {
                Some(d) => d,
                None => self.pg_dump(Section::PostData)?,
            };
            let done = dump::done_items(self.ledger(client), &self.pipeline, "post-data").await?;
            let todo: Vec<&Entry> = dump
                .entries
                .iter()
                .filter(|e| !done.contains(&e.item()))
                .collect();
            let workers = self.workers.max(1);
            let preamble = dump.preamble.as_str();
            // `workers` entries at once, each as soon as the earlier ones
            // on its tables are done (`order`); of those ready, the one
            // heading the longest chain of work first (a table's size, a
            // GIN counting several times), so the last to finish is small.
            let waits = super::order::waits(&todo);
            let mut sizes = Vec::with_capacity(todo.len());
            for e in &todo {
                sizes.push(self.entry_size(client, e).await * super::order::weight(e));
            }
            let priority = super::order::critical_paths(&sizes, &waits);
            // Entries ready to start, and how many unfinished entries each
            // other one still waits for: a finish updates only its waiters.
            let mut left: Vec<usize> = waits.iter().map(Vec::len).collect();
            let mut waiters = vec![Vec::new(); todo.len()];
            for (k, w) in waits.iter().enumerate() {
                for &j in w {
                    waiters[j].push(k);
                }
            }
            let mut ready: Vec<usize> = (0..todo.len()).filter(|&k| left[k] == 0).collect();
            // The workers' sessions, kept from one entry to the next.
            let idle = std::sync::Mutex::new(Vec::new());
            let mut running = futures_util::stream::FuturesUnordered::new();
            loop {
                while running.len() < workers && !ready.is_empty() {
                    let (at, _) = ready
                        .iter()
                        .enumerate()
                        .max_by_key(|(_, &k)| (priority[k], std::cmp::Reverse(k)))
                        .expect("not empty");
                    let k = ready.remove(at);
                    let e = todo[k];
                    let idle = &idle;
                    running.push(async move {
                        (k, e.item(), self.apply_entry(idle, preamble, e).await)
                    });
                }
                let Some((k, item, r)) = running.next().await else {
                    break;
                };
                for &w in &waiters[k] {
                    left[w] -= 1;
                    if left[w] == 0 {
                        ready.push(w);
                    }
                }
                match r? {
                    Ok(()) => finish.added.push(item),
                    Err(problem) => finish.problems.push(problem),
                }
            }
            durable(client).await?;
        }
        // Into existing tables too: a data-only restore fills them.
        let done = dump::done_items(self.ledger(client), &self.pipeline, "post-data").await?;
        self.refresh_views(client, &done, finish).await?;
        etl_base::hooks::phase("sequences");
        self.set_sequences(client, finish).await?;
        self.copy_large_objects(client, finish).await
    }

    /// The materialized views the source has populated, refreshed on the
    /// target (pg_dump's schema sections leave them empty), oldest first
    /// so a view built on another comes after it.
    async fn refresh_views(
        &self,
        client: &Client,
        done: &HashSet<String>,
        finish: &mut Finish,
    ) -> Result<(), EtlError> {
        let source = self.pg_source().await?;
        let rows = source
            .query(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'm' AND c.relispopulated ORDER BY c.oid",
                &[],
            )
            .await
            .map_err(EtlError::pg("reading the source's materialized views"))?;
        for r in rows {
            let (schema, name): (String, String) = (r.get(0), r.get(1));
            let item = format!("MATERIALIZED VIEW DATA {schema} {name}");
            let view = format!(
                "{}.{}",
                etl_base::sql::ident(&schema),
                etl_base::sql::ident(&name)
            );
            if done.contains(&item) {
                continue;
            }
            let exists: bool = client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&view])
                .await
                .map_err(EtlError::pg(format!("looking for {view} on the target")))?
                .get(0);
            if !exists {
                continue;
            }
            let sql = format!("REFRESH MATERIALIZED VIEW {view}");
            tracing::info!(view = %view, "Refreshing.");
            match client.batch_execute(&sql).await {
                Ok(()) => {
                    self.record(client, "post-data", &item, &sql, None).await?;
                    finish.added.push(item);
                }
                Err(e) => {
                    let e = EtlError::pg(format!("refreshing {view}"))(e);
                    if e.is_connection_lost() {
                        return Err(e);
                    }
                    self.record(client, "post-data", &item, &sql, Some(&e.to_string()))
                        .await?;
                    finish.problems.push(format!("{e}; statement: {sql}"));
                }
            }
        }
        Ok(())
    }

    /// The size of the table an index, key or foreign key is built on (0
    /// when the entry names none the target has).
    async fn entry_size(&self, client: &Client, e: &Entry) -> i64 {
        let Some(table) = super::order::entry_table(e) else {
            return 0;
        };
        client
            .query_one(
                "SELECT coalesce(pg_relation_size(to_regclass($1)), 0)::int8",
                &[&table],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0)
    }

    /// One post-data entry in its own transaction with its record, on a
    /// session from `idle` (a new one when none is) given back after; its
    /// error (with the statement) when the server refuses it. A transient
    /// failure tries it again on a new session (through the retry helper),
    /// unless the log shows the attempt before committed it.
    async fn apply_entry(
        &self,
        idle: &std::sync::Mutex<Vec<etl_pg::Conn>>,
        preamble: &str,
        e: &Entry,
    ) -> Result<Result<(), String>, EtlError> {
        let mut again = false;
        let tried = self
            .step(&format!("adding {} failed", e.item()), || {
                let retry = std::mem::replace(&mut again, true);
                self.try_entry(idle, preamble, e, retry)
            })
            .await;
        match tried {
            // Still busy (a lock timeout every try): reported like a
            // refusal, and the other entries go on.
            Err(err) if !err.is_connection_lost() => {
                let item = e.item();
                tracing::error!(error = %err, "A post-data object could not be added.");
                let client = self.client().await?;
                self.record(&client, "post-data", &item, &e.sql, Some(&err.to_string()))
                    .await?;
                Ok(Err(format!("{err}; statement: {}", e.sql)))
            }
            other => other,
        }
    }

    async fn try_entry(
        &self,
        idle: &std::sync::Mutex<Vec<etl_pg::Conn>>,
        preamble: &str,
        e: &Entry,
        retry: bool,
    ) -> Result<Result<(), String>, EtlError> {
        let kept = match retry {
            true => None,
            false => idle.lock().expect("never held across a panic").pop(),
        };
        let client = match kept {
            Some(c) if !c.is_closed() => c,
            _ => {
                let c = self.client().await?;
                c.batch_execute(SESSION)
                    .await
                    .map_err(EtlError::pg("setting up a post-data session"))?;
                c
            }
        };
        let item = e.item();
        if retry
            && etl_ledger::sql::phase_statement(
                self.ledger(&client),
                &self.pipeline,
                "post-data",
                &item,
            )
            .await
            .map_err(EtlError::pg("reading etl.phase_log"))?
            .is_some()
        {
            idle.lock().expect("never held across a panic").push(client);
            return Ok(Ok(()));
        }
        tracing::info!(item = %item, "Adding.");
        let run = async {
            client.batch_execute(preamble).await?;
            client.batch_execute("BEGIN").await?;
            client.batch_execute(&e.sql).await?;
            etl_base::hooks::in_post_data();
            client.batch_execute("RESET search_path").await?;
            etl_ledger::sql::record_phase(
                self.ledger(&client),
                &self.pipeline,
                "post-data",
                &item,
                &e.sql,
                None,
            )
            .await?;
            client.batch_execute("COMMIT").await
        };
        let done = match run.await {
            Ok(()) => Ok(()),
            Err(err) => {
                let _ = client.batch_execute("ROLLBACK; RESET search_path").await;
                let err = EtlError::pg(format!("adding {item}"))(err);
                if err.is_transient() {
                    return Err(err);
                }
                tracing::error!(error = %err, "A post-data object could not be added.");
                self.record(&client, "post-data", &item, &e.sql, Some(&err.to_string()))
                    .await?;
                Err(format!("{err}; statement: {}", e.sql))
            }
        };
        idle.lock().expect("never held across a panic").push(client);
        Ok(done)
    }

    /// Every sequence of the selection set to the source's current value
    /// (one never used keeps the start pre-data gave it).
    async fn set_sequences(&self, client: &Client, finish: &mut Finish) -> Result<(), EtlError> {
        let source = self.pg_source().await?;
        let rows = source
            .query(
                "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences \
                 WHERE schemaname NOT IN ('etl', 'information_schema') AND schemaname NOT LIKE 'pg\\_%' \
                 AND last_value IS NOT NULL ORDER BY 1",
                &[],
            )
            .await
            .map_err(EtlError::pg("reading the source's sequences"))?;
        for r in rows {
            let (name, value): (String, i64) = (r.get(0), r.get(1));
            let sql = format!(
                "SELECT setval({}, {value}, true) FROM (SELECT to_regclass({}) AS r) s WHERE r IS NOT NULL",
                etl_base::sql::literal(&name),
                etl_base::sql::literal(&name)
            );
            let set = client
                .query_opt(&sql, &[])
                .await
                .map_err(EtlError::pg(format!("setting sequence {name}")))?;
            if set.is_some() {
                self.record(client, "sequences", &name, &sql, None).await?;
                finish.sequences.push(format!("{name} at {value}"));
            }
        }
        Ok(())
    }

    /// Row count and checksum of every table on both servers; sequences
    /// behind their column's MAX on the target.
    /// (`thorough`, `etl verify`: checksums too; the run's own verify
    /// counts, its data having gone through byte for byte, each chunk's
    /// rows counted on the way and by the target's COPY.)
    pub(crate) async fn pg_checks(
        &self,
        client: &Client,
        checks: &mut crate::Checks,
        thorough: bool,
    ) -> Result<(), EtlError> {
        for (t, source) in self.tables.iter().zip(&self.sources) {
            let TableSource::Postgres(source) = source else {
                continue;
            };
            let target = format!("ONLY {}", t.target.qualified());
            if !thorough {
                // Both servers count at once.
                let count = format!("SELECT count(*) FROM {target}");
                let (on_source, on_target) =
                    tokio::join!(source.rows(), client.query_one(&count, &[]));
                let on_target: i64 = on_target
                    .map_err(EtlError::pg(format!("counting the rows of {}", t.target)))?
                    .get(0);
                checks
                    .counts
                    .push((t.source.clone(), on_source?, on_target as u64));
                continue;
            }
            // Both tables' COPY data, read at once, hashed row by row.
            let (copy, what) = (
                source.copy_all(&t.target),
                format!("target table {}", t.target),
            );
            let (on_source, on_target) = tokio::join!(
                source.checksum(),
                etl_model::verify::copy_checksum(client, &copy, source.format(), &what)
            );
            let (on_source, on_target) = (on_source?, on_target?);
            checks
                .counts
                .push((t.source.clone(), on_source.rows, on_target.rows));
            checks
                .checksums
                .push((t.source.clone(), on_source == on_target));
        }
        self.count_large_objects(client, checks).await?;
        // A sequence owned by a column must be at or past the column's MAX.
        let loaded: HashSet<String> = self.tables.iter().map(|t| t.target.qualified()).collect();
        let behind = etl_pg::sequences::behind(client, |t| loaded.contains(t))
            .await
            .map_err(EtlError::pg("reading the target's sequences"))?;
        checks
            .sequences_behind
            .extend(behind.iter().map(ToString::to_string));
        Ok(())
    }
}

/// One synchronous commit that writes: the server flushes the WAL up to
/// it, so every commit before it (the post-data sessions commit without
/// waiting) is on disk too.
async fn durable(client: &Client) -> Result<(), EtlError> {
    client
        .batch_execute("BEGIN; SET LOCAL synchronous_commit = on; SELECT txid_current(); COMMIT")
        .await
        .map_err(EtlError::pg("flushing the post-data commits to disk"))
}
