//! Running statements on a target for `etl schema apply` and `rollback`:
//! what refuses them (statements that would fail, grades above
//! `--max-risk`, no confirmation), a backup first, the run itself through
//! [`crate::schema::apply`], what it reports, and TO compared with FROM
//! after.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use super::{header, make_plan, matches, open_change, read_with, Compared, Grading, Outcome, Pair};
use crate::schema::catalog;
use crate::schema::diff;
use crate::schema::plan::{self, Plan, Stage};
use crate::schema::targets;
use crate::schema::{apply, Risk, SchemaError};

/// What lets statements run: their grades, the user's yes, a backup first.
pub(super) struct Gate {
    pub max_risk: Risk,
    pub allow: Vec<String>,
    pub yes: bool,
    pub backup: Option<PathBuf>,
}

pub(super) fn apply(
    pair: &Pair,
    grading: &Grading,
    gate: &Gate,
    options: &apply::Options,
) -> anyhow::Result<Outcome> {
    let to = targets::resolve(&pair.to, pair.config.as_deref())?;
    let pool = crate::pg::Pool::new(to.endpoint.clone(), "etl schema");
    if let Some(open) = crate::pg::block_on(open_change(&pool))? {
        let stage = open.stage().map_or("contract", Stage::name);
        anyhow::bail!(
            "{} has a staged change open (etl.schema_change id {}, made {}, in stage {stage}): an apply without --phase would undo what its stages keep; finish it with etl schema apply FROM TO --phase {stage} (etl schema status {} tells what is left)",
            to.name,
            open.id,
            open.made_at,
            to.name
        );
    }
    let (c, plan) = crate::pg::block_on(make_plan(pair, grading, false))?;
    if plan.steps.is_empty() {
        out!(
            "{}",
            matches(
                format!(
                    "{} already matches {}: nothing to apply",
                    c.to.name, c.from.name
                ),
                &c.unread
            )
        );
        return Ok(Outcome::Success);
    }
    out_raw!("{}", plan.to_sql(&header(&c, "apply")));
    if would_fail(&plan, &c.to.name) {
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
        &apply::Scope::default(),
    ))?;
    if let Some(outcome) = reported(&report, plan.steps.len(), "apply")? {
        return Ok(outcome);
    }
    matches_after(&c)
}

/// After the last statement: TO must match FROM, and no index may be left
/// INVALID.
pub(super) fn matches_after(c: &Compared) -> anyhow::Result<Outcome> {
    let (left, invalid, unread) = crate::pg::block_on(async {
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
        Ok::<_, SchemaError>((diff::diff(&c.wanted, &have), invalid, have.unread))
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
    let by_hand = catalog::unread::differences(&c.wanted.unread, &unread);
    eprintln!(
        "{}",
        matches(
            format!("{} now matches {}", c.to.name, c.from.name),
            &by_hand
        )
    );
    Ok(Outcome::Success)
}

/// Says which statements would fail on TO's data; true when one would:
/// nothing runs.
pub(super) fn would_fail(plan: &Plan, to: &str) -> bool {
    let failing: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| {
            s.fails
                .as_ref()
                .map(|f| format!("[{}] {}: {f}", s.n, s.rule))
        })
        .collect();
    let s = if failing.len() == 1 { "" } else { "s" };
    refused(
        format!(
            "{} statement{s} would fail on the data of {to}; nothing was applied",
            failing.len()
        ),
        &failing,
    )
}

/// Says which statements are graded above `max_risk` (but for `allow`ed
/// rules), and what to do; true when there is one: nothing runs.
pub(super) fn above_max_risk(
    plan: &Plan,
    max_risk: Risk,
    allow: &[String],
    what_to_do: &str,
) -> bool {
    let above: Vec<String> = plan
        .steps
        .iter()
        .filter(|s| s.risk > max_risk && !allow.iter().any(|a| *a == s.rule))
        .map(|s| format!("[{}] {} {}: {}", s.n, s.risk, s.rule, s.reasons.join("; ")))
        .collect();
    let is = if above.len() == 1 { " is" } else { "s are" };
    refused(
        format!(
            "{} statement{is} above --max-risk {max_risk}; nothing was run; {what_to_do}",
            above.len()
        ),
        &above,
    )
}

/// Prints why nothing runs, one statement a line; true when `listed`
/// holds one.
pub(super) fn refused(head: String, listed: &[String]) -> bool {
    if !listed.is_empty() {
        eprintln!("etl: refused: {head}:\n  {}", listed.join("\n  "));
    }
    !listed.is_empty()
}

/// Whether to go on: `--yes`, or "yes" typed at the terminal.
pub(super) fn confirmed(
    yes: bool,
    command: &str,
    statements: usize,
    target: &str,
) -> anyhow::Result<bool> {
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
pub(super) fn reported(
    report: &apply::Report,
    statements: usize,
    command: &str,
) -> anyhow::Result<Option<Outcome>> {
    eprintln!(
        "{} of {} statements applied; history: {}",
        report.applied.len(),
        statements,
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
pub(super) fn rollback(
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
    let report = crate::pg::block_on(apply::apply(
        &plan,
        &target,
        &pool,
        options,
        &header,
        &apply::Scope::default(),
    ))?;
    if let Some(outcome) = reported(&report, plan.steps.len(), "rollback")? {
        return Ok(outcome);
    }
    Ok(match rollback.irreversible.is_empty() {
        true => Outcome::Success,
        false => Outcome::NotAllDone,
    })
}

/// `pg_dump -Fc` of the existing tables that high and very-high statements
/// touch, before anything runs.
pub(super) fn backup(c: &Compared, plan: &Plan, dir: &Path) -> anyhow::Result<()> {
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
