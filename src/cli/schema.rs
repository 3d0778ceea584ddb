//! `etl schema diff|plan|apply FROM TO`: FROM is the schema wanted, TO the
//! database to change; each a URL or a target of the targets file.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use super::Outcome;
use crate::schema::catalog::{self, Catalog};
use crate::schema::diff::{self, Difference};
use crate::schema::plan::{self, Pace, Plan};
use crate::schema::rename::Rename;
use crate::schema::targets::{self, Target};
use crate::schema::{apply, Risk, SchemaError};

#[derive(Debug, Args)]
pub struct Pair {
    /// The schema wanted: a postgresql:// URL or a target's name.
    pub from: String,
    /// The database to change: a URL or a target's name.
    pub to: String,
    /// The targets file ([targets.NAME] url = ...); default $ETL_TARGETS,
    /// else etl-targets.toml in the working directory.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// TO's OLD is FROM's NEW, renamed (repeatable): a table
    /// (public.orders=public.purchases) or a column
    /// (public.orders.amount=total); otherwise a rename is a drop and an add.
    #[arg(long, value_name = "OLD=NEW")]
    pub rename: Vec<String>,
    /// Also compare GRANTs (schemas, tables, views, sequences, functions).
    #[arg(long)]
    pub grants: bool,
    /// Also compare row-level security and its policies.
    #[arg(long)]
    pub policies: bool,
}

impl Pair {
    fn read(&self) -> catalog::Read {
        catalog::Read {
            grants: self.grants,
            policies: self.policies,
        }
    }
}

#[derive(Debug, Args)]
pub struct Grading {
    /// A table with at least this many rows (or 1 GiB) is large: a
    /// statement that rewrites or scans it is graded one higher.
    #[arg(long, default_value_t = 10_000_000)]
    pub large_rows: i64,
    /// Under this many rows (and 100 MiB) a table is small: one lower.
    #[arg(long, default_value_t = 100_000)]
    pub small_rows: i64,
    /// A column type change as expand / backfill in batches / contract
    /// steps, instead of one rewrite under ACCESS EXCLUSIVE.
    #[arg(long)]
    pub phased: bool,
}

#[derive(Debug, Subcommand)]
pub enum SchemaAction {
    /// What differs, one line per object; exit 0 when equal, 1 when not.
    Diff {
        #[command(flatten)]
        pair: Pair,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The ordered SQL that makes TO match FROM, each statement with its
    /// risk grade, rule and reasons; applies nothing.
    Plan {
        #[command(flatten)]
        pair: Pair,
        #[command(flatten)]
        grading: Grading,
        /// Write the plan here instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run the plan on TO under short lock timeouts, skipping what stays
    /// blocked (exit 5), refusing what is above --max-risk (exit 4).
    Apply {
        #[command(flatten)]
        pair: Pair,
        #[command(flatten)]
        grading: Grading,
        /// Refuse a plan with a statement graded above this, unless its
        /// rule is --allow'ed.
        #[arg(long, default_value = "high", value_parser = risk_parser())]
        max_risk: Risk,
        /// A rule id allowed above --max-risk (repeatable): drop-column.
        #[arg(long, value_name = "RULE")]
        allow: Vec<String>,
        /// Apply without asking.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        running: Running,
        /// First pg_dump the tables that high and very-high statements
        /// touch into this folder.
        #[arg(long, value_name = "DIR")]
        backup: Option<PathBuf>,
    },
    /// Run a rollback file that apply wrote (history/rollback.*.sql) on
    /// TARGET, as apply runs a plan (lock timeouts, skips, history); what
    /// no statement undoes is named before anything runs.
    Rollback {
        /// The rollback file.
        file: PathBuf,
        /// The database to run it on: a URL or a target's name.
        target: String,
        /// The targets file, as for apply.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Refuse a file with a statement graded above this.
        #[arg(long, default_value = "high", value_parser = risk_parser())]
        max_risk: Risk,
        /// Run without asking.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        running: Running,
    },
}

/// How statements run on the target, for apply and rollback.
#[derive(Debug, Args)]
pub struct Running {
    /// Seconds each statement waits for its lock before trying again.
    #[arg(long, default_value_t = 3.0)]
    lock_timeout: f64,
    /// Seconds a statement holding a lock that blocks reads or writes
    /// may run.
    #[arg(long, default_value_t = 10.0)]
    statement_timeout: f64,
    /// Tries of a statement that stays blocked, per pass.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Passes over the statements skipped as blocked.
    #[arg(long, default_value_t = 3)]
    passes: u32,
    /// Seconds between passes.
    #[arg(long, default_value_t = 10.0)]
    pass_delay: f64,
    /// Where the migrate/skip/rollback files go.
    #[arg(long, value_name = "DIR", default_value = "history")]
    history: PathBuf,
}

impl Running {
    fn options(self) -> anyhow::Result<apply::Options> {
        Ok(apply::Options {
            lock_timeout: secs(self.lock_timeout, "--lock-timeout")?,
            statement_timeout: secs(self.statement_timeout, "--statement-timeout")?,
            retries: self.retries,
            passes: self.passes,
            pass_delay: secs(self.pass_delay, "--pass-delay")?,
            history: self.history,
        })
    }
}

pub(super) fn schema(action: SchemaAction) -> anyhow::Result<Outcome> {
    match action {
        SchemaAction::Diff { pair, json } => diff(&pair, json),
        SchemaAction::Plan {
            pair,
            grading,
            output,
            json,
        } => plan(&pair, &grading, output.as_deref(), json),
        SchemaAction::Apply {
            pair,
            grading,
            max_risk,
            allow,
            yes,
            running,
            backup,
        } => {
            let options = running.options()?;
            let gate = Gate {
                max_risk,
                allow,
                yes,
                backup,
            };
            apply(&pair, &grading, &gate, &options)
        }
        SchemaAction::Rollback {
            file,
            target,
            config,
            max_risk,
            yes,
            running,
        } => rollback(
            &file,
            &target,
            config.as_deref(),
            max_risk,
            yes,
            &running.options()?,
        ),
    }
}

fn secs(v: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("{flag} {v}: give seconds, 0 or more"))
}

struct Compared {
    from: Target,
    to: Target,
    wanted: Catalog,
    have: Catalog,
    diffs: Vec<Difference>,
    renames: Vec<Rename>,
    /// Objects of the kinds etl schema does not make match that differ
    /// (`+ collation public.ko`).
    unread: Vec<String>,
    read: catalog::Read,
    /// Sessions of TO.
    pool: std::sync::Arc<crate::pg::Pool>,
}

/// The catalog reads around an apply go through the retry helper with
/// these (the statements themselves take `--retries`).
const READ_RETRIES: u32 = 3;
const READ_BACKOFF: Duration = Duration::from_secs(1);

/// A read of TO (or FROM), tried again on a new session after a
/// transient failure.
async fn read_with<T, F, Fut>(what: &str, attempt: F) -> Result<T, SchemaError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SchemaError>>,
{
    let mut attempt = attempt;
    crate::retry::retry_step(READ_RETRIES, READ_BACKOFF, what, || {
        let tried = attempt();
        async move { tried.await.map_err(crate::error::EtlError::from) }
    })
    .await
    .map_err(SchemaError::from)
}

async fn compare(pair: &Pair) -> Result<Compared, SchemaError> {
    let from = targets::resolve(&pair.from, pair.config.as_deref())?;
    let to = targets::resolve(&pair.to, pair.config.as_deref())?;
    let source = crate::pg::Pool::new(from.endpoint.clone(), "etl schema");
    let pool = crate::pg::Pool::new(to.endpoint.clone(), "etl schema");
    let wanted = read_with("reading the catalog of FROM failed", || async {
        catalog::read(&*source.get().await?, pair.read()).await
    })
    .await?;
    let mut have = read_with("reading the catalog of TO failed", || async {
        catalog::read(&*pool.get().await?, pair.read()).await
    })
    .await?;
    let mut renames = Vec::new();
    for text in &pair.rename {
        let r = Rename::parse(text, &have)?;
        r.rewrite(&mut have);
        renames.push(r);
    }
    let mut diffs = diff::diff(&wanted, &have);
    for r in &renames {
        let (key, detail) = r.shown();
        match diffs.iter_mut().find(|d| d.key == key) {
            Some(d) => d.detail.insert(0, detail),
            None => diffs.push(Difference {
                key,
                change: diff::Change::Changed,
                detail: vec![detail],
            }),
        }
    }
    let unread = catalog::unread::differences(&wanted.unread, &have.unread);
    Ok(Compared {
        from,
        to,
        wanted,
        have,
        diffs,
        renames,
        unread,
        read: pair.read(),
        pool,
    })
}

fn diff(pair: &Pair, json: bool) -> anyhow::Result<Outcome> {
    let c = crate::pg::block_on(compare(pair))?;
    if json {
        out!(
            "{}",
            serde_json::json!({
                "from": c.from.endpoint.to_string(),
                "to": c.to.endpoint.to_string(),
                "equal": c.diffs.is_empty() && c.unread.is_empty(),
                "differences": c.diffs,
                "not_made_to_match": c.unread,
            })
        );
    } else if c.diffs.is_empty() && c.unread.is_empty() {
        out!("{} matches {}", c.to.name, c.from.name);
    } else {
        for d in &c.diffs {
            out!("{d}");
        }
        out!(
            "{} difference{} ({} has + and lacks -, relative to {})",
            c.diffs.len(),
            if c.diffs.len() == 1 { "" } else { "s" },
            c.from.name,
            c.to.name
        );
        if !c.unread.is_empty() {
            out!(
                "{} of the kinds etl schema does not make match ({}) differ{}; make them by hand:",
                c.unread.len(),
                catalog::unread::KINDS,
                if c.unread.len() == 1 { "s" } else { "" }
            );
            for line in &c.unread {
                out!("  {line}");
            }
        }
    }
    Ok(match c.diffs.is_empty() && c.unread.is_empty() {
        true => Outcome::Success,
        false => Outcome::ChecksFailed,
    })
}

fn options(g: &Grading) -> plan::Options {
    plan::Options {
        large_rows: g.large_rows,
        small_rows: g.small_rows,
        phased: g.phased,
    }
}

async fn make_plan(pair: &Pair, grading: &Grading) -> Result<(Compared, Plan), SchemaError> {
    let c = compare(pair).await?;
    let plan = Plan::build(&c.wanted, &c.have, &c.diffs, &c.renames, options(grading));
    let plan = read_with("checking the plan against TO's data failed", || {
        let mut plan = plan.clone();
        let pool = &c.pool;
        async move {
            let client = pool.get().await?;
            plan.check(&client).await?;
            Ok(plan)
        }
    })
    .await?;
    Ok((c, plan))
}

/// The plan's first comment lines: what is made to match what, when, and
/// what is not made to match (each such object that differs named).
fn header(c: &Compared, what: &str) -> String {
    let mut text = format!(
        "etl schema {what}: make {} ({}) match {} ({}), {}\n-- not made to match: {}{}",
        c.to.name,
        c.to.endpoint,
        c.from.name,
        c.from.endpoint,
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
        catalog::unread::KINDS,
        match (c.read.grants, c.read.policies) {
            (true, true) => "",
            (false, true) => ", grants (--grants compares them)",
            (true, false) => ", row-level security (--policies compares it)",
            (false, false) => ", grants and row-level security (--grants, --policies compare them)",
        }
    );
    if !c.unread.is_empty() {
        text.push_str("\n-- of which these differ (make them by hand):");
        for line in &c.unread {
            text.push_str(&format!("\n--   {line}"));
        }
    }
    text
}

fn plan(
    pair: &Pair,
    grading: &Grading,
    output: Option<&Path>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let (c, mut plan) = crate::pg::block_on(make_plan(pair, grading))?;
    // The estimates are the plan's alone: apply does not write a sample
    // table on the target it is about to change.
    if plan.steps.iter().any(|s| !s.work.is_empty()) {
        let pool = &c.pool;
        let pace =
            crate::pg::block_on(read_with("measuring the target's pace failed", || async {
                Pace::measure(&*pool.get().await?).await
            }))?;
        plan.estimate(pace);
    }
    let text = match json {
        true => serde_json::to_string_pretty(&plan.steps)? + "\n",
        false => plan.to_sql(&header(&c, "plan")),
    };
    match output {
        Some(path) => {
            std::fs::write(path, &text)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            out!(
                "{}: {} statement{}{}",
                path.display(),
                plan.steps.len(),
                if plan.steps.len() == 1 { "" } else { "s" },
                plan.highest()
                    .map_or(String::new(), |r| format!(", highest risk {r}"))
            );
        }
        None => out_raw!("{text}"),
    }
    Ok(Outcome::Success)
}

struct Gate {
    max_risk: Risk,
    allow: Vec<String>,
    yes: bool,
    backup: Option<PathBuf>,
}

fn apply(
    pair: &Pair,
    grading: &Grading,
    gate: &Gate,
    options: &apply::Options,
) -> anyhow::Result<Outcome> {
    let (c, plan) = crate::pg::block_on(make_plan(pair, grading))?;
    if plan.steps.is_empty() {
        out!(
            "{} already matches {}: nothing to apply",
            c.to.name,
            c.from.name
        );
        return Ok(Outcome::Success);
    }
    out_raw!("{}", plan.to_sql(&header(&c, "apply")));
    let failing: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| {
            s.fails
                .as_ref()
                .map(|f| format!("[{}] {}: {f}", s.n, s.rule))
        })
        .collect();
    if !failing.is_empty() {
        eprintln!(
            "etl: refused: {} statement{} would fail on the data of {}; nothing was applied:\n  {}",
            failing.len(),
            if failing.len() == 1 { "" } else { "s" },
            c.to.name,
            failing.join("\n  ")
        );
        return Ok(Outcome::Refused);
    }
    if above_max_risk(
        &plan,
        gate.max_risk,
        &gate.allow,
        "raise --max-risk or --allow RULE for each",
    ) {
        return Ok(Outcome::Refused);
    }
    if !confirmed(gate.yes, "apply", plan.steps.len(), &c.to.name)? {
        return Ok(Outcome::Refused);
    }
    if let Some(dir) = &gate.backup {
        backup(&c, &plan, dir)?;
    }
    let report = crate::pg::block_on(apply::apply(
        &plan,
        &c.to,
        &c.pool,
        options,
        &header(&c, "apply"),
    ))?;
    if let Some(outcome) = reported(&report, &plan, "apply")? {
        return Ok(outcome);
    }
    // The result must match, and no index may be left INVALID.
    let (left, invalid) = crate::pg::block_on(async {
        let have = read_with(
            "reading the catalog of TO after the apply failed",
            || async { catalog::read(&*c.pool.get().await?, c.read).await },
        )
        .await?;
        let invalid: Vec<String> = have
            .indexes
            .values()
            .filter(|i| !i.valid)
            .map(|i| i.name.clone())
            .collect();
        Ok::<_, SchemaError>((diff::diff(&c.wanted, &have), invalid))
    })?;
    if !invalid.is_empty() {
        anyhow::bail!("indexes left INVALID on {}: {invalid:?}; run etl schema apply again to build them anew", c.to.name);
    }
    if !left.is_empty() {
        let lines: Vec<String> = left.iter().map(ToString::to_string).collect();
        eprintln!(
            "etl: {} still differs from {} after the apply:\n  {}",
            c.to.name,
            c.from.name,
            lines.join("\n  ")
        );
        return Ok(Outcome::ChecksFailed);
    }
    eprintln!("{} now matches {}", c.to.name, c.from.name);
    let _ = &c.have;
    Ok(Outcome::Success)
}

/// Says which statements are graded above `max_risk` (but for `allow`ed
/// rules), and what to do; true when there is one: nothing runs.
fn above_max_risk(plan: &Plan, max_risk: Risk, allow: &[String], what_to_do: &str) -> bool {
    let above: Vec<String> = plan
        .steps
        .iter()
        .filter(|s| s.risk > max_risk && !allow.iter().any(|a| a == s.rule))
        .map(|s| format!("[{}] {} {}: {}", s.n, s.risk, s.rule, s.reasons.join("; ")))
        .collect();
    if !above.is_empty() {
        eprintln!(
            "etl: refused: {} statement{} above --max-risk {max_risk}; nothing was run; {what_to_do}:\n  {}",
            above.len(),
            if above.len() == 1 { " is" } else { "s are" },
            above.join("\n  ")
        );
    }
    !above.is_empty()
}

/// Whether to go on: `--yes`, or "yes" typed at the terminal.
fn confirmed(yes: bool, command: &str, statements: usize, target: &str) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "etl schema {command} changes {target}; confirm with --yes (stdin is not a terminal to ask on)"
        );
    }
    eprint!("Run {statements} statements on {target}? Type yes: ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        eprintln!("etl: nothing run");
        return Ok(false);
    }
    Ok(true)
}

/// What ran, where its history is, and the outcome when not all ran: a
/// failed statement is an error, statements skipped as blocked exit 5.
fn reported(report: &apply::Report, plan: &Plan, command: &str) -> anyhow::Result<Option<Outcome>> {
    eprintln!(
        "{} of {} statements applied; history: {}",
        report.applied.len(),
        plan.steps.len(),
        report
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some((n, why)) = &report.failed {
        anyhow::bail!(
            "statement [{n}] failed: {why}\nthe statements before it ran (see the history); fix the cause and run etl schema {command} again"
        );
    }
    if !report.skipped.is_empty() {
        for (n, why) in &report.skipped {
            eprintln!("  skipped [{n}]: {why}");
        }
        eprintln!(
            "etl: {} statement{} skipped as blocked; run etl schema {command} again once the sessions named are gone",
            report.skipped.len(),
            if report.skipped.len() == 1 { "" } else { "s" }
        );
        return Ok(Some(Outcome::Blocked));
    }
    Ok(None)
}

/// `etl schema rollback FILE TARGET`: the file read back as a plan, what it
/// cannot undo named first, then run as apply runs a plan.
fn rollback(
    file: &Path,
    target: &str,
    config: Option<&Path>,
    max_risk: Risk,
    yes: bool,
    options: &apply::Options,
) -> anyhow::Result<Outcome> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
    let rollback = plan::Rollback::parse(&text, &file.display().to_string())?;
    let target = targets::resolve(target, config)?;
    let header = format!(
        "etl schema rollback {} on {} ({}), {}",
        file.display(),
        target.name,
        target.endpoint,
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    );
    if !rollback.irreversible.is_empty() {
        eprintln!(
            "etl: {} statement{} of that apply no statement undoes; restore {} from a --backup or by hand:\n  {}",
            rollback.irreversible.len(),
            if rollback.irreversible.len() == 1 { "" } else { "s" },
            match rollback.irreversible.len() {
                1 => "it",
                _ => "them",
            },
            rollback.irreversible.join("\n  ")
        );
    }
    let plan = rollback.plan;
    if plan.steps.is_empty() {
        eprintln!("etl: nothing in {} to run", file.display());
        return Ok(Outcome::NotAllDone);
    }
    out_raw!("{}", plan.to_sql(&header));
    if above_max_risk(&plan, max_risk, &[], "raise --max-risk to run them") {
        return Ok(Outcome::Refused);
    }
    if !confirmed(yes, "rollback", plan.steps.len(), &target.name)? {
        return Ok(Outcome::Refused);
    }
    let pool = crate::pg::Pool::new(target.endpoint.clone(), "etl schema");
    let report = crate::pg::block_on(apply::apply(&plan, &target, &pool, options, &header))?;
    if let Some(outcome) = reported(&report, &plan, "rollback")? {
        return Ok(outcome);
    }
    Ok(match rollback.irreversible.is_empty() {
        true => Outcome::Success,
        false => Outcome::NotAllDone,
    })
}

/// `pg_dump -Fc` of the existing tables that high and very-high statements
/// touch, before anything runs.
fn backup(c: &Compared, plan: &Plan, dir: &Path) -> anyhow::Result<()> {
    let mut tables: Vec<&String> = plan
        .steps
        .iter()
        .filter(|s| s.risk >= Risk::High)
        .flat_map(|s| s.tables.iter())
        .filter(|t| c.have.tables.contains_key(*t))
        .collect();
    tables.sort();
    tables.dedup();
    if tables.is_empty() {
        eprintln!("--backup: no existing table is touched by a high or very-high statement; nothing to dump");
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let file = dir.join(format!(
        "backup.{}.{}.dump",
        c.to.name,
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    ));
    let mut cmd = std::process::Command::new("pg_dump");
    cmd.arg("-Fc").arg("--file").arg(&file);
    for t in &tables {
        cmd.arg("-t").arg(t.as_str());
    }
    cmd.envs(c.to.endpoint.libpq_env("etl schema backup")?);
    let status = cmd.status().map_err(|e| {
        anyhow::anyhow!("running pg_dump for --backup: {e}; install the PostgreSQL client")
    })?;
    if !status.success() {
        anyhow::bail!("pg_dump for --backup failed ({status}); nothing was applied");
    }
    eprintln!("backup of {} tables: {}", tables.len(), file.display());
    Ok(())
}

/// `--max-risk`: one of the grades, by name (the schema crate knows no clap).
fn risk_parser() -> impl clap::builder::TypedValueParser<Value = Risk> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Risk::ALL.map(Risk::name))
        .map(|name| Risk::named(&name).expect("one of the possible values"))
}
