//! Running a plan on a live database without blocking it.
//!
//! Each statement runs alone under a short `lock_timeout` (3 s unless
//! told), so a statement waiting behind a long transaction gives up before
//! the queries queued behind *it* pile up; and a `statement_timeout` (10 s)
//! for the ones that take a lock that blocks reads or writes. Statements
//! that only take SHARE UPDATE EXCLUSIVE (`CREATE INDEX CONCURRENTLY`,
//! `VALIDATE CONSTRAINT`) may run as long as they need.
//!
//! Before each statement the sessions holding locks on its tables are
//! named. A lock timeout or a lost session is retried through etl's one
//! retry helper ([`etl_pg::retry::retry_step`]: growing, jittered waits) on a
//! new session from the pool; a statement still blocked is skipped, with
//! the sessions in its way, and so are the statements after it that depend
//! on it; they are tried again in the next pass. Any other error stops the
//! apply. A statement whose session was lost is checked before it runs
//! again: a transactional one by its transaction's fate
//! (`pg_xact_status`, the session ended first if it still runs), a
//! `CONCURRENTLY` one by its cleanup and `IF EXISTS`.
//!
//! History: `migrate.<target>.<time>.sql` gets each statement as soon as it
//! has run (written and synced before the next starts), so after a kill it
//! holds exactly what ran; `skip.<target>.<time>.sql` what was skipped and
//! why; `rollback.<target>.<time>.sql` the statements that undo what ran,
//! newest first, where PostgreSQL has one. A killed apply resumes by
//! running `etl schema apply` again: the plan is made from the target as
//! it is, so what ran is not in it. A staged change ([`Scope`]) runs one
//! stage of the plan its first stage kept in the target, each statement
//! recorded there as run inside its own transaction.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use etl_pg::error::EtlError;
use etl_pg::Pool;

use super::plan::{Lock, Plan, Stage, Step};
use super::staged::Staged;
use super::targets::Target;
use super::SchemaError;

#[derive(Debug, Clone)]
pub struct Options {
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    /// Tries of a statement that hits the lock timeout, per pass.
    pub retries: u32,
    /// Passes over the statements skipped as blocked.
    pub passes: u32,
    pub pass_delay: Duration,
    pub history: PathBuf,
}

/// Which of a plan's statements an apply runs, and where it records them.
#[derive(Debug, Default)]
pub struct Scope<'a> {
    /// Taken as run already (an earlier stage's, or one that ran in an
    /// earlier try): not run again, and what waits on them may run.
    pub done: std::collections::BTreeSet<usize>,
    /// Only the statements of this stage run.
    pub stage: Option<Stage>,
    /// The staged change each statement that runs is recorded in, inside
    /// the statement's own transaction.
    pub staged: Option<&'a Staged>,
}

impl Scope<'_> {
    fn runs(&self, step: &Step) -> bool {
        !self.done.contains(&step.n) && (self.stage.is_none() || step.stage == self.stage)
    }
}

/// What an apply did.
#[derive(Debug, Default)]
pub struct Report {
    pub applied: Vec<usize>,
    /// Step number and why (the sessions in its way).
    pub skipped: Vec<(usize, String)>,
    /// The statement that failed, and the error.
    pub failed: Option<(usize, String)>,
    pub files: Vec<PathBuf>,
}

/// The history files of one apply.
struct History {
    migrate: std::fs::File,
    migrate_path: PathBuf,
    dir: PathBuf,
    stem: String,
}

impl History {
    fn open(dir: &Path, target: &str, header: &str) -> Result<History, SchemaError> {
        std::fs::create_dir_all(dir).map_err(SchemaError::io(format!(
            "creating history folder {}",
            dir.display()
        )))?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let stem = format!("{target}.{stamp}");
        let migrate_path = dir.join(format!("migrate.{stem}.sql"));
        let mut migrate = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&migrate_path)
            .map_err(SchemaError::io(format!(
                "creating {}",
                migrate_path.display()
            )))?;
        writeln!(migrate, "-- {header}").map_err(SchemaError::io(format!(
            "writing {}",
            migrate_path.display()
        )))?;
        Ok(History {
            migrate,
            migrate_path,
            dir: dir.to_path_buf(),
            stem,
        })
    }

    /// Appends a statement that ran, synced before the next one starts.
    fn ran(&mut self, step: &Step, took: Duration) -> Result<(), SchemaError> {
        let text = format!(
            "\n-- [{}] {} {} (ran {}, {:.2} s)\n{};\n",
            step.n,
            step.risk,
            step.rule,
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
            took.as_secs_f64(),
            step.sql
        );
        let context = format!("writing {}", self.migrate_path.display());
        self.migrate
            .write_all(text.as_bytes())
            .map_err(SchemaError::io(context.clone()))?;
        self.migrate.sync_data().map_err(SchemaError::io(context))
    }

    /// The statements skipped, each with why, in a file of their own to
    /// run again; none when none was.
    fn skipped(
        &self,
        plan: &Plan,
        header: &str,
        skipped: &[(usize, String)],
    ) -> Result<Option<PathBuf>, SchemaError> {
        if skipped.is_empty() {
            return Ok(None);
        }
        let mut text = format!("-- {header}\n-- skipped: run `etl schema apply` again once the sessions named are gone\n");
        for (n, why) in skipped {
            let step = &plan.steps[n - 1];
            text.push_str(&format!(
                "\n-- [{n}] {} {}: skipped: {why}\n{};\n",
                step.risk, step.rule, step.sql
            ));
        }
        self.write("skip", &text).map(Some)
    }

    /// What undoes the statements `applied`, newest first (or says that
    /// nothing does), for a person to run after reading it; none when
    /// none ran.
    fn rollback(
        &self,
        plan: &Plan,
        header: &str,
        applied: &[usize],
    ) -> Result<Option<PathBuf>, SchemaError> {
        if applied.is_empty() {
            return Ok(None);
        }
        let mut text = format!(
            "-- {header}\n-- undoes what ran, newest first (run it by hand, after reading it)\n"
        );
        for n in applied.iter().rev() {
            let step = &plan.steps[n - 1];
            match &step.rollback {
                Some(sql) => text.push_str(&format!("\n-- undoes [{n}] {}\n{sql};\n", step.rule)),
                None => text.push_str(&format!(
                    "\n-- [{n}] {}: no statement undoes it (restore from a --backup): {}\n",
                    step.rule,
                    step.sql.lines().next().unwrap_or("")
                )),
            }
        }
        self.write("rollback", &text).map(Some)
    }

    fn write(&self, kind: &str, text: &str) -> Result<PathBuf, SchemaError> {
        let path = self.dir.join(format!("{kind}.{}.sql", self.stem));
        std::fs::write(&path, text)
            .map_err(SchemaError::io(format!("writing {}", path.display())))?;
        Ok(path)
    }
}

/// Runs the plan's statements on `target`, each on a session of `pool`.
pub async fn apply(
    plan: &Plan,
    target: &Target,
    pool: &Pool,
    options: &Options,
    header: &str,
    scope: &Scope<'_>,
) -> Result<Report, SchemaError> {
    let mut history = History::open(&options.history, &target.name, header)?;
    let mut report = Report {
        files: vec![history.migrate_path.clone()],
        ..Report::default()
    };
    let mut pending: Vec<&Step> = plan.steps.iter().filter(|s| scope.runs(s)).collect();
    let mut reasons: std::collections::HashMap<usize, String> = Default::default();
    for pass in 1..=options.passes.max(1) {
        if pass > 1 {
            tracing::info!(
                pass,
                waiting = pending.len(),
                "Trying the skipped statements again in {:.0} s.",
                options.pass_delay.as_secs_f64()
            );
            tokio::time::sleep(options.pass_delay).await;
        }
        let mut still = Vec::new();
        for step in pending {
            if let Some(&k) = step
                .after
                .iter()
                .find(|k| !report.applied.contains(k) && !scope.done.contains(k))
            {
                reasons.insert(step.n, format!("waits on statement [{k}], not run yet"));
                still.push(step);
                continue;
            }
            let record = scope.staged.map(|s| s.ran_sql(step.n));
            match run_step(pool, step, options, record.as_deref()).await {
                Ok(took) => {
                    history.ran(step, took)?;
                    report.applied.push(step.n);
                    reasons.remove(&step.n);
                    tracing::info!(n = step.n, rule = %step.rule, risk = %step.risk, seconds = format!("{:.2}", took.as_secs_f64()), "Applied.");
                    etl_base::hooks::after_statement();
                }
                Err(Outcome::Blocked(why)) => {
                    tracing::warn!(n = step.n, rule = %step.rule, "Skipped for now: {why}");
                    reasons.insert(step.n, why);
                    still.push(step);
                }
                Err(Outcome::Failed(why)) => {
                    report.failed = Some((step.n, why));
                    break;
                }
                Err(Outcome::Error(e)) => return Err(e),
            }
        }
        pending = still;
        if pending.is_empty() || report.failed.is_some() {
            break;
        }
    }
    report.skipped = pending
        .iter()
        .map(|s| (s.n, reasons.get(&s.n).cloned().unwrap_or_default()))
        .collect();
    if let Some(path) = history.skipped(plan, header, &report.skipped)? {
        report.files.push(path);
    }
    if let Some(path) = history.rollback(plan, header, &report.applied)? {
        report.files.push(path);
    }
    Ok(report)
}

enum Outcome {
    /// Stayed blocked past the lock timeout on every try.
    Blocked(String),
    /// Any other error of the statement.
    Failed(String),
    Error(SchemaError),
}

/// Runs one statement; `record`, when given, runs in its transaction (or
/// right after a statement that has none).
async fn run_step(
    pool: &Pool,
    step: &Step,
    options: &Options,
    record: Option<&str>,
) -> Result<Duration, Outcome> {
    let blocks_others = matches!(
        step.lock,
        Some(Lock::AccessExclusive | Lock::ShareRowExclusive | Lock::Share)
    );
    let statement_timeout = match blocks_others || step.lock.is_none() {
        true => options.statement_timeout.as_millis(),
        false => 0,
    };
    let settings = format!(
        "SET lock_timeout = '{}ms'; SET statement_timeout = '{statement_timeout}ms'",
        options.lock_timeout.as_millis()
    );
    if blocks_others {
        if let Ok(client) = pool.get().await {
            if let Ok(holders) = holders(&client, &step.tables).await {
                if !holders.is_empty() {
                    tracing::warn!(
                        n = step.n,
                        "{} on {} waits for: {}",
                        step.lock.map_or("", Lock::name),
                        step.tables.join(", "),
                        holders
                    );
                }
            }
        }
    }
    // The transaction (and its backend) of a try whose session was lost.
    let lost: std::sync::Mutex<Option<(String, i32)>> = Default::default();
    let ran = etl_pg::retry::retry_step(
        options.retries.max(1) - 1,
        Duration::from_millis(500),
        &format!("statement [{}] was stopped", step.n),
        || try_step(pool, step, &settings, &lost, record),
    )
    .await;
    let last = match ran {
        Ok(took) => return Ok(took),
        Err(EtlError::Retried { last, .. }) => *last,
        Err(e) => e,
    };
    match &last {
        EtlError::Postgres { source, .. } if source.code().map(|c| c.code()) == Some("55P03") => {
            let who = match pool.get().await {
                Ok(client) => holders(&client, &step.tables).await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let who = if who.is_empty() {
                "a session gone before etl could look".to_string()
            } else {
                who
            };
            Err(Outcome::Blocked(format!(
                "lock_timeout {} ms passed {} times; blocked by {who}",
                options.lock_timeout.as_millis(),
                options.retries.max(1)
            )))
        }
        e if e.is_transient() => Err(Outcome::Error(SchemaError::Etl(last))),
        EtlError::Postgres { source, .. } => {
            let mut why = etl_pg::error::pg_message(source);
            if source.code().map(|c| c.code()) == Some("57014") {
                why.push_str(&format!(
                    " (statement_timeout {} ms: give a longer --statement-timeout, or --phased for a type change)",
                    statement_timeout
                ));
            }
            Err(Outcome::Failed(why))
        }
        _ => Err(Outcome::Error(SchemaError::Etl(last))),
    }
}

/// One try of a statement on a session from the pool: its time, or the
/// error for the retry helper to judge.
async fn try_step(
    pool: &Pool,
    step: &Step,
    settings: &str,
    lost: &std::sync::Mutex<Option<(String, i32)>>,
    record: Option<&str>,
) -> Result<Duration, EtlError> {
    let client = pool.get().await?;
    client
        .batch_execute(settings)
        .await
        .map_err(EtlError::pg("setting the timeouts"))?;
    let earlier = lost.lock().expect("never held across a panic").clone();
    if let Some((xid, pid)) = earlier {
        let done = committed(&client, &xid, pid).await?;
        lost.lock().expect("never held across a panic").take();
        if done {
            tracing::info!(
                n = step.n,
                "The statement had committed before its session was lost."
            );
            return Ok(Duration::ZERO);
        }
    }
    let started = Instant::now();
    // What an earlier try may have left (an INVALID index) goes first,
    // under the same lock timeout.
    if let Some(cleanup) = &step.cleanup {
        client
            .batch_execute(cleanup)
            .await
            .map_err(EtlError::pg(format!(
                "cleaning up before statement [{}]",
                step.n
            )))?;
    }
    let context = || format!("statement [{}]", step.n);
    let recorded = || format!("recording statement [{}] as run", step.n);
    if !step.transactional {
        client
            .batch_execute(&step.sql)
            .await
            .map_err(EtlError::pg(context()))?;
        if let Some(record) = record {
            client
                .batch_execute(record)
                .await
                .map_err(EtlError::pg(recorded()))?;
        }
        return Ok(started.elapsed());
    }
    let run = async {
        client.batch_execute("BEGIN").await?;
        let row = client
            .query_one("SELECT pg_current_xact_id()::text, pg_backend_pid()", &[])
            .await?;
        *lost.lock().expect("never held across a panic") = Some((row.get(0), row.get(1)));
        client.batch_execute(&step.sql).await?;
        if let Some(record) = record {
            client.batch_execute(record).await?;
        }
        etl_base::hooks::before_schema_commit();
        client.batch_execute("COMMIT").await
    };
    match run.await {
        Ok(()) => {
            lost.lock().expect("never held across a panic").take();
            Ok(started.elapsed())
        }
        Err(e) => {
            if !client.is_closed() {
                // The server refused it: nothing committed.
                let _ = client.batch_execute("ROLLBACK").await;
                lost.lock().expect("never held across a panic").take();
            }
            Err(EtlError::pg(context())(e))
        }
    }
}

/// Whether the transaction `xid` of a lost session committed: one still
/// running (its backend `pid` not gone yet) is ended first, so it cannot
/// commit after etl looked.
async fn committed(client: &Client, xid: &str, pid: i32) -> Result<bool, EtlError> {
    if xact_status(client, xid).await?.as_deref() == Some("in progress") {
        client
            .query_one("SELECT pg_terminate_backend($1, 10000)", &[&pid])
            .await
            .map_err(EtlError::pg("ending the lost session"))?;
    }
    Ok(xact_status(client, xid).await?.as_deref() == Some("committed"))
}

async fn xact_status(client: &Client, xid: &str) -> Result<Option<String>, EtlError> {
    client
        .query_one("SELECT pg_xact_status($1::text::xid8)::text", &[&xid])
        .await
        .map(|r| r.get(0))
        .map_err(EtlError::pg(
            "reading the fate of the lost session's transaction",
        ))
}

/// The sessions holding locks on `tables`: pid, application, state, how
/// long, what they run.
pub async fn holders(client: &Client, tables: &[String]) -> Result<String, tokio_postgres::Error> {
    if tables.is_empty() {
        return Ok(String::new());
    }
    let rows = client
        .query(
            "SELECT a.pid, coalesce(nullif(a.application_name, ''), '-'), coalesce(a.state, '?'), \
             coalesce(extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))::int8, 0), \
             left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 80) \
             FROM pg_stat_activity a WHERE a.pid <> pg_backend_pid() AND a.pid IN ( \
               SELECT l.pid FROM pg_locks l WHERE l.granted AND l.relation IN ( \
                 SELECT to_regclass(x) FROM unnest($1::text[]) x)) ORDER BY a.pid",
            &[&tables],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (pid, app, state, secs, query): (i32, String, String, i64, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            format!("pid {pid} ({app}, {state} for {secs} s: {query})")
        })
        .collect::<Vec<_>>()
        .join(", "))
}
