//! `etl schema apply FROM TO --phase expand|backfill|contract` and `etl
//! schema status TO`: a change applied in stages, the application deployed
//! between them. The expand stage makes the plan and keeps it in TO
//! ([`Staged`]); the later stages run that plan's statements of their
//! stage, whatever the database looks like by then, and the contract stage
//! ends with TO compared to FROM.

use super::{
    above_max_risk, backup, checked, compare, confirmed, header, matches, matches_after,
    open_change, read_with, reported, would_fail, Compared, Gate, Grading, Outcome, Pair,
};
use crate::schema::plan::{Plan, Stage};
use crate::schema::staged::Staged;
use crate::schema::{apply as run, targets};

/// What the people who deploy do once a stage is done.
fn between(stage: Stage) -> &'static str {
    match stage {
        Stage::Expand => {
            "deploy the application that uses the new schema (old and new names both work now)"
        }
        Stage::Backfill => "once nothing uses the old names or types any more",
        Stage::Contract => "",
    }
}

pub(super) fn apply(
    pair: &Pair,
    grading: &Grading,
    gate: &Gate,
    options: &run::Options,
    stage: Stage,
) -> anyhow::Result<Outcome> {
    let Some((c, change, fresh)) = change_to_run(pair, grading, stage)? else {
        return Ok(Outcome::Success);
    };
    // Held until this stage ends: one `--phase` apply on TO at a time.
    let _lock = crate::pg::block_on(one_at_a_time(&c, fresh))?;
    if earlier_unfinished(&change, stage) {
        return Ok(Outcome::Refused);
    }
    let steps: Vec<_> = change.left(stage).into_iter().cloned().collect();
    let command = format!("apply --phase {stage}");
    if steps.is_empty() {
        eprintln!(
            "stage {stage} of staged change {}: nothing left to run",
            change.id
        );
        return finished(&c, &change, stage);
    }
    let plan = crate::pg::block_on(checked(&c.pool, Plan { steps, pace: None }))?;
    out_raw!("{}", plan.to_sql(&header(&c, &command)));
    if would_fail(&plan, &c.to.name)
        || above_max_risk(
            &plan,
            gate.max_risk,
            &gate.allow,
            "raise --max-risk or --allow RULE for each",
        )
        || !confirmed(gate.yes, "apply", plan.steps.len(), &c.to.name)?
    {
        return Ok(Outcome::Refused);
    }
    if let Some(dir) = &gate.backup {
        backup(&c, &plan, dir)?;
    }
    // A new change is kept in TO only once its first stage is let run.
    let change = match fresh {
        true => crate::pg::block_on(async {
            Staged::begin(&*c.pool.get().await?, &change.plan, &change.wanted).await
        })?,
        false => change,
    };
    let scope = run::Scope {
        done: change.ran.clone(),
        stage: Some(stage),
        staged: Some(&change),
    };
    let report = crate::pg::block_on(run::apply(
        &change.plan,
        &c.to,
        &c.pool,
        options,
        &header(&c, &command),
        &scope,
    ))?;
    if let Some(outcome) = reported(&report, plan.steps.len(), &command)? {
        return Ok(outcome);
    }
    finished(&c, &change, stage)
}

/// The change a stage runs: TO's open one, or for the expand stage a new
/// one planned now (not yet kept in TO: `true`); `None` when TO already
/// matches FROM.
fn change_to_run(
    pair: &Pair,
    grading: &Grading,
    stage: Stage,
) -> anyhow::Result<Option<(Compared, Staged, bool)>> {
    // The renames are the first stage's: by the next, the old names are
    // twins and views.
    let bare = Pair {
        rename: Vec::new(),
        ..pair.clone()
    };
    let c = crate::pg::block_on(compare(&bare))?;
    let wanted = c.from.endpoint.to_string();
    match crate::pg::block_on(open_change(&c.pool))? {
        Some(open) if open.wanted != wanted => anyhow::bail!(
            "{}'s open staged change (id {}, made {}) wants the schema of {}, not {wanted}: finish it with that FROM (etl schema status {} tells what is left)",
            c.to.name,
            open.id,
            open.made_at,
            open.wanted,
            c.to.name
        ),
        Some(open) => Ok(Some((c, open, false))),
        None if stage == Stage::Expand => {
            let c = match pair.rename.is_empty() {
                true => c,
                false => crate::pg::block_on(compare(pair))?,
            };
            let plan = Plan::build(
                &c.wanted,
                &c.have,
                &c.diffs,
                &c.renames,
                grading.options(true),
            );
            if plan.steps.is_empty() {
                out!("{}", matches(format!("{} already matches {}: nothing to apply", c.to.name, c.from.name), &c.unread));
                return Ok(None);
            }
            let change = Staged {
                id: 0,
                wanted,
                made_at: String::new(),
                closed_at: None,
                abandoned: false,
                plan,
                ran: Default::default(),
            };
            Ok(Some((c, change, true)))
        }
        None => anyhow::bail!(
            "{} has no staged change open: start one with etl schema apply FROM TO --phase expand",
            c.to.name
        ),
    }
}

/// Says which statements of the stages before `stage` have not run; true
/// when one has not: nothing runs.
fn earlier_unfinished(change: &Staged, stage: Stage) -> bool {
    for earlier in Stage::ALL.into_iter().filter(|&s| s < stage) {
        let left = change.left(earlier);
        if !left.is_empty() {
            let named: Vec<String> = left
                .iter()
                .map(|s| format!("[{}] {}", s.n, s.rule))
                .collect();
            eprintln!(
                "etl: refused: stage {earlier} of staged change {} has {} statement{} not run ({}); run etl schema apply FROM TO --phase {earlier} first",
                change.id,
                left.len(),
                if left.len() == 1 { "" } else { "s" },
                named.join(", ")
            );
            return true;
        }
    }
    false
}

/// The session holding TO's staged-change lock (a session-level
/// advisory lock, let go when the session ends); refused while another
/// `--phase` apply holds it, or when one opened a change since this one
/// looked.
async fn one_at_a_time(c: &Compared, fresh: bool) -> anyhow::Result<crate::pg::Conn> {
    let conn = c.pool.get().await?;
    let got: bool = conn
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('etl schema apply --phase'))",
            &[],
        )
        .await
        .map_err(|e| anyhow::anyhow!("taking the staged-change lock on {}: {e}", c.to.name))?
        .get(0);
    anyhow::ensure!(
        got,
        "another etl schema apply --phase is running on {}: wait for it (etl schema status {} tells what it did)",
        c.to.name,
        c.to.name
    );
    if fresh && open_change(&c.pool).await?.is_some() {
        anyhow::bail!(
            "a staged change was opened on {} since this apply looked: run it again",
            c.to.name
        );
    }
    Ok(conn)
}

/// A stage all run: what comes next; after the contract, the change is
/// closed and TO compared to FROM.
fn finished(c: &Compared, change: &Staged, stage: Stage) -> anyhow::Result<Outcome> {
    match stage.next() {
        Some(next) => {
            eprintln!(
                "stage {stage} of staged change {} done on {}; {}, then: etl schema apply FROM TO --phase {next}",
                change.id,
                c.to.name,
                between(stage)
            );
            Ok(Outcome::Success)
        }
        None => {
            crate::pg::block_on(async { change.close(&*c.pool.get().await?).await })?;
            eprintln!("staged change {} closed", change.id);
            matches_after(c)
        }
    }
}

/// `etl schema status TARGET`: the latest staged changes, newest first;
/// with `abandon`, that open change closed first.
pub(super) fn status(
    target: &str,
    config: Option<&std::path::Path>,
    json: bool,
    abandon: Option<(i64, bool)>,
) -> anyhow::Result<Outcome> {
    let target = targets::resolve(target, config)?;
    let pool = crate::pg::Pool::new(target.endpoint.clone(), "etl schema");
    if let Some((id, yes)) = abandon {
        if !yes {
            anyhow::bail!("--abandon {id} closes staged change {id} on {} without running the rest of it; confirm with --yes", target.name);
        }
        let closed =
            crate::pg::block_on(read_with("abandoning the staged change failed", || async {
                Staged::abandon(&*pool.get().await?, id).await
            }))?;
        anyhow::ensure!(
            closed,
            "{} has no open staged change {id} (etl schema status {} lists them)",
            target.name,
            target.name
        );
        eprintln!(
            "staged change {id} abandoned; what its stages ran stays: the history's rollback files of those applies undo it (etl schema rollback FILE {})",
            target.name
        );
    }
    let changes = crate::pg::block_on(read_with("reading the staged changes failed", || async {
        Staged::latest(&*pool.get().await?, 10).await
    }))?;
    if json {
        out!("{}", serde_json::to_string_pretty(&as_json(&changes))?);
        return Ok(Outcome::Success);
    }
    if changes.is_empty() {
        out!(
            "{}: no staged change (etl schema apply FROM TO --phase expand starts one)",
            target.name
        );
        return Ok(Outcome::Success);
    }
    for ch in &changes {
        let state = match (&ch.closed_at, ch.stage()) {
            (Some(at), _) if ch.abandoned => format!("abandoned {at}"),
            (Some(at), _) => format!("closed {at}"),
            (None, Some(stage)) => format!("open, in stage {stage}"),
            (None, None) => {
                "open, every statement ran: etl schema apply FROM TO --phase contract closes it"
                    .into()
            }
        };
        out!(
            "staged change {} on {}, made {} to match {}: {state}",
            ch.id,
            target.name,
            ch.made_at,
            ch.wanted
        );
        for stage in Stage::ALL {
            let of = ch.of(stage).count();
            let left = ch.left(stage);
            let mut line = format!("  {:<9} {} of {of} ran", stage.name(), of - left.len());
            if !left.is_empty() && ch.closed_at.is_none() {
                let named: Vec<String> = left
                    .iter()
                    .map(|s| format!("[{}] {}", s.n, s.rule))
                    .collect();
                line.push_str(&format!("; left: {}", named.join(", ")));
            }
            out!("{line}");
        }
        if let (None, Some(stage)) = (&ch.closed_at, ch.stage()) {
            out!(
                "  next: etl schema apply FROM {} --phase {stage}",
                target.name
            );
        }
    }
    Ok(Outcome::Success)
}

/// The changes as `etl schema status --json` lists them.
fn as_json(changes: &[Staged]) -> Vec<serde_json::Value> {
    changes
        .iter()
        .map(|ch| {
            let stages: serde_json::Map<String, serde_json::Value> = Stage::ALL
                .into_iter()
                .map(|s| {
                    let of: Vec<usize> = ch.of(s).map(|x| x.n).collect();
                    let left: Vec<usize> = ch.left(s).iter().map(|x| x.n).collect();
                    (
                        s.name().to_string(),
                        serde_json::json!({ "statements": of, "left": left }),
                    )
                })
                .collect();
            serde_json::json!({
                "id": ch.id,
                "wanted": ch.wanted,
                "made_at": ch.made_at,
                "closed_at": ch.closed_at,
                "stage": ch.closed_at.is_none().then(|| ch.stage().unwrap_or(Stage::Contract)),
                "stages": stages,
            })
        })
        .collect()
}
