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
//! named. A lock timeout is retried with growing, jittered waits; a
//! statement still blocked is skipped, with the sessions in its way, and so
//! are the statements after it that depend on it; they are tried again in
//! the next pass. Any other error stops the apply.
//!
//! History: `migrate.<target>.<time>.sql` gets each statement as soon as it
//! has run (written and synced before the next starts), so after a kill it
//! holds exactly what ran; `skip.<target>.<time>.sql` what was skipped and
//! why; `rollback.<target>.<time>.sql` the statements that undo what ran,
//! newest first, where PostgreSQL has one. A killed apply resumes by
//! running `etl schema apply` again: the plan is made from the target as
//! it is, so what ran is not in it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::plan::{Lock, Plan, Step};
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

    fn write(&self, kind: &str, text: &str) -> Result<PathBuf, SchemaError> {
        let path = self.dir.join(format!("{kind}.{}.sql", self.stem));
        std::fs::write(&path, text)
            .map_err(SchemaError::io(format!("writing {}", path.display())))?;
        Ok(path)
    }
}

/// Runs the plan's statements on `client` (connected to `target`).
pub async fn apply(
    plan: &Plan,
    target: &Target,
    client: &Client,
    options: &Options,
    header: &str,
) -> Result<Report, SchemaError> {
    let mut history = History::open(&options.history, &target.name, header)?;
    let mut report = Report {
        files: vec![history.migrate_path.clone()],
        ..Report::default()
    };
    let mut pending: Vec<&Step> = plan.steps.iter().collect();
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
            if let Some(&k) = step.after.iter().find(|k| !report.applied.contains(k)) {
                reasons.insert(step.n, format!("waits on statement [{k}], not run yet"));
                still.push(step);
                continue;
            }
            match run_step(client, step, options).await {
                Ok(took) => {
                    history.ran(step, took)?;
                    report.applied.push(step.n);
                    reasons.remove(&step.n);
                    tracing::info!(n = step.n, rule = step.rule, risk = %step.risk, seconds = format!("{:.2}", took.as_secs_f64()), "Applied.");
                    crate::run::pause::after_statement();
                }
                Err(Outcome::Blocked(why)) => {
                    tracing::warn!(n = step.n, rule = step.rule, "Skipped for now: {why}");
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
    if !report.skipped.is_empty() {
        let mut text = format!("-- {header}\n-- skipped: run `etl schema apply` again once the sessions named are gone\n");
        for (n, why) in &report.skipped {
            let step = &plan.steps[n - 1];
            text.push_str(&format!(
                "\n-- [{n}] {} {}: skipped: {why}\n{};\n",
                step.risk, step.rule, step.sql
            ));
        }
        report.files.push(history.write("skip", &text)?);
    }
    if !report.applied.is_empty() {
        let mut text = format!(
            "-- {header}\n-- undoes what ran, newest first (run it by hand, after reading it)\n"
        );
        for n in report.applied.iter().rev() {
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
        report.files.push(history.write("rollback", &text)?);
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

async fn run_step(client: &Client, step: &Step, options: &Options) -> Result<Duration, Outcome> {
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
    client
        .batch_execute(&settings)
        .await
        .map_err(|e| Outcome::Error(SchemaError::pg("setting the timeouts")(e)))?;
    if blocks_others {
        if let Ok(holders) = holders(client, &step.tables).await {
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
    let tries = options.retries.max(1);
    for attempt in 1..=tries {
        let started = Instant::now();
        // What an earlier try may have left (an INVALID index) goes first,
        // under the same lock timeout.
        let cleaned = match &step.cleanup {
            Some(cleanup) => client.batch_execute(cleanup).await,
            None => Ok(()),
        };
        let ran = match cleaned {
            Ok(()) => client.batch_execute(&step.sql).await,
            Err(e) => Err(e),
        };
        match ran {
            Ok(()) => return Ok(started.elapsed()),
            Err(e) if e.code().map(|c| c.code()) == Some("55P03") => {
                if attempt == tries {
                    let who = holders(client, &step.tables).await.unwrap_or_default();
                    let who = if who.is_empty() {
                        "a session gone before etl could look".to_string()
                    } else {
                        who
                    };
                    return Err(Outcome::Blocked(format!(
                        "lock_timeout {} ms passed {tries} times; blocked by {who}",
                        options.lock_timeout.as_millis()
                    )));
                }
                let wait = backoff(attempt);
                tracing::info!(
                    n = step.n,
                    attempt,
                    "Lock timeout; trying again in {:.1} s.",
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                let mut why = crate::error::pg_message(&e);
                if e.code().map(|c| c.code()) == Some("57014") {
                    why.push_str(&format!(
                        " (statement_timeout {} ms: give a longer --statement-timeout, or --phased for a type change)",
                        statement_timeout
                    ));
                }
                return Err(Outcome::Failed(why));
            }
        }
    }
    unreachable!("the last try returns")
}

/// 0.5 s, 1 s, 2 s, ... up to 8 s, each plus up to half again.
fn backoff(attempt: u32) -> Duration {
    let base = 500u64 << (attempt - 1).min(4);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    Duration::from_millis(base + nanos % (base / 2 + 1))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_and_stay_bounded() {
        assert!(
            backoff(1) >= Duration::from_millis(500) && backoff(1) <= Duration::from_millis(750)
        );
        assert!(backoff(10) <= Duration::from_millis(12_000));
    }
}
