//! `etl schema diff|plan|apply FROM TO`: FROM is the schema wanted, TO the
//! database to change; each a URL or a target of the targets file. A
//! change applied in stages (`--phase`) and `etl schema status`: [`staged`].

mod running;
mod staged;

use running::{
    above_max_risk, apply, backup, confirmed, matches_after, reported, rollback, would_fail, Gate,
};

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use super::Outcome;
use crate::schema::catalog::{self, Catalog};
use crate::schema::diff::{self, Difference};
use crate::schema::plan::{self, Pace, Plan, Stage};
use crate::schema::rename::Rename;
use crate::schema::staged::Staged;
use crate::schema::targets::{self, Target};
use crate::schema::{apply, Risk, SchemaError};

#[derive(Debug, Clone, Args)]
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

impl Grading {
    fn options(&self, staged: bool) -> plan::Options {
        plan::Options {
            large_rows: self.large_rows,
            small_rows: self.small_rows,
            phased: self.phased || staged,
            staged,
        }
    }
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
        /// The plan of `apply --phase`: each statement with its stage
        /// (expand, backfill, contract).
        #[arg(long)]
        stages: bool,
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
        /// Apply in stages, the application deployed between them: expand
        /// (adds; old and new names both work), backfill (fills and
        /// validates), contract (drops, swaps). The change is kept in TO
        /// (etl.schema_change); `etl schema status TO` tells its stage.
        #[arg(long, value_parser = stage_parser())]
        phase: Option<Stage>,
    },
    /// The staged changes of a database (`apply --phase`): the stage each
    /// is in, the statements that ran and those left, what to run next.
    Status {
        /// The database: a URL or a target's name.
        target: String,
        /// The targets file, as for apply.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Close this open staged change without running the rest of it
        /// (what ran stays; its applies' rollback files undo it).
        #[arg(long, value_name = "ID")]
        abandon: Option<i64>,
        /// Abandon without asking.
        #[arg(long, requires = "abandon")]
        yes: bool,
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
            stages,
        } => plan(&pair, &grading, output.as_deref(), json, stages),
        SchemaAction::Apply {
            pair,
            grading,
            max_risk,
            allow,
            yes,
            running,
            backup,
            phase,
        } => {
            let options = running.options()?;
            let gate = Gate {
                max_risk,
                allow,
                yes,
                backup,
            };
            match phase {
                Some(stage) => staged::apply(&pair, &grading, &gate, &options, stage),
                None => apply(&pair, &grading, &gate, &options),
            }
        }
        SchemaAction::Status {
            target,
            config,
            json,
            abandon,
            yes,
        } => staged::status(
            &target,
            config.as_deref(),
            json,
            abandon.map(|id| (id, yes)),
        ),
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
    /// (`+ aggregate public.total(integer)`).
    unread: Vec<String>,
    read: catalog::Read,
    /// Sessions of TO.
    pool: std::sync::Arc<crate::pg::Pool>,
}

/// `said` ("TO now matches FROM"), then the objects of the kinds etl does
/// not make that still differ (`by_hand`), never left unsaid.
fn matches(said: String, by_hand: &[String]) -> String {
    match by_hand.is_empty() {
        true => said,
        false => format!(
            "{said}, but for objects of the kinds etl does not make ({}), which differ; make them by hand:\n  {}",
            catalog::unread::KINDS,
            by_hand.join("\n  ")
        ),
    }
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

/// TO's staged change not closed yet, if any.
async fn open_change(pool: &crate::pg::Pool) -> Result<Option<Staged>, SchemaError> {
    read_with("reading TO's staged changes failed", || async {
        Staged::open(&*pool.get().await?).await
    })
    .await
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

async fn make_plan(
    pair: &Pair,
    grading: &Grading,
    staged: bool,
) -> Result<(Compared, Plan), SchemaError> {
    let c = compare(pair).await?;
    let plan = Plan::build(
        &c.wanted,
        &c.have,
        &c.diffs,
        &c.renames,
        grading.options(staged),
    );
    let plan = checked(&c.pool, plan).await?;
    Ok((c, plan))
}

/// `plan` with the rows that would make its statements fail counted on TO.
async fn checked(pool: &crate::pg::Pool, plan: Plan) -> Result<Plan, SchemaError> {
    read_with("checking the plan against TO's data failed", || {
        let mut plan = plan.clone();
        async move {
            let client = pool.get().await?;
            plan.check(&client).await?;
            Ok(plan)
        }
    })
    .await
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
    stages: bool,
) -> anyhow::Result<Outcome> {
    let (c, mut plan) = crate::pg::block_on(make_plan(pair, grading, stages))?;
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

/// `--phase`: one of the stages, by name.
fn stage_parser() -> impl clap::builder::TypedValueParser<Value = Stage> {
    by_name(&Stage::ALL, Stage::name)
}

/// `--max-risk`: one of the grades, by name.
fn risk_parser() -> impl clap::builder::TypedValueParser<Value = Risk> {
    by_name(&Risk::ALL, Risk::name)
}

/// One of `all`, by its `name` (the schema crate knows no clap).
fn by_name<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(all.iter().map(|&v| name(v))).map(move |chosen| {
        *all.iter()
            .find(|&&v| name(v) == chosen)
            .expect("one of the possible values")
    })
}
