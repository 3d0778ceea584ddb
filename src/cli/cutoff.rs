//! `etl cutoff show|set|clear`: the follow cutoff by hand. Backfill loads
//! below it, `run --follow` from it onward; setting it by hand decides
//! where one ends and the other begins.

use std::path::Path;

use super::{load, Outcome};
use crate::run::Runner;
use crate::time::{format_timestamp, parse_timestamp};
use etl_model::ledger::CutoffChange;

pub(super) fn show(path: &Path) -> anyhow::Result<Outcome> {
    let runner = Runner::build(load(path)?)?;
    match runner.cutoff()? {
        Some(c) => out!(
            "Cutoff of pipeline {}: {} UTC (a run backfills below it; run --follow loads from it onward)",
            runner.pipeline.name,
            format_timestamp(c)
        ),
        None => out!(
            "Pipeline {} has no cutoff: a run backfills everything; run --follow sets one at the time it starts",
            runner.pipeline.name
        ),
    }
    Ok(Outcome::Success)
}

pub(super) fn set(path: &Path, time: &str) -> anyhow::Result<Outcome> {
    let runner = Runner::build(load(path)?)?;
    let t = parse_timestamp(time).map_err(anyhow::Error::msg)?;
    let now = super::run::now_micros();
    if t > now {
        anyhow::bail!(
            "cutoff {} is in the future (now is {} UTC): rows up to it may not exist yet, and follow mode would skip those that arrive late; pick a time at or before now",
            format_timestamp(t),
            format_timestamp(now)
        );
    }
    let mut chunking = runner.pipeline.chunks.clone();
    chunking.start = None;
    chunking.end = None;
    let plan = match runner.plan_by_index(&chunking)? {
        Some(plan) => plan,
        None => runner.plan_with(&chunking)?,
    };
    if let Some(first) = plan.chunks.iter().map(|c| c.chunk.start).min() {
        if t < first {
            anyhow::bail!(
                "cutoff {} is before the source's data (its first window starts {}): the backfill would load nothing and follow mode would read everything as new; pick a time inside the data",
                format_timestamp(t),
                format_timestamp(first)
            );
        }
    }
    let before = runner.cutoff()?;
    runner.set_cutoff(CutoffChange::Exactly(t))?;
    out!(
        "Cutoff of pipeline {} set to {} UTC (was {})",
        runner.pipeline.name,
        format_timestamp(t),
        before.map_or("none".to_string(), format_timestamp)
    );
    Ok(Outcome::Success)
}

pub(super) fn clear(path: &Path) -> anyhow::Result<Outcome> {
    let runner = Runner::build(load(path)?)?;
    let before = runner.cutoff()?;
    runner.set_cutoff(CutoffChange::Clear)?;
    out!(
        "Cutoff of pipeline {} cleared (was {}): a run backfills everything",
        runner.pipeline.name,
        before.map_or("none".to_string(), format_timestamp)
    );
    Ok(Outcome::Success)
}
