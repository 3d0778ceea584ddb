//! `etl forget pipeline.toml`: a finished pipeline taken out of its
//! targets' ledgers (a clone of production then carries nothing of etl's),
//! after the user types the pipeline's name or passes `--yes`. The data
//! stays; `etl run --recreate` is what drops tables.

use std::path::Path;

use super::{load, Outcome};

pub(super) fn forget(path: &Path, yes: bool) -> anyhow::Result<Outcome> {
    let pipeline = load(path)?;
    let name = &pipeline.name;
    let (retries, backoff) = pipeline.chunks.retry();
    let ledgers: Vec<_> = pipeline
        .sinks
        .iter()
        .map(|s| crate::run::ledger(s, name))
        .collect();
    let mut held = Vec::new();
    for ledger in &ledgers {
        let lines = crate::pg::block_on(crate::retry::retry_step(
            retries,
            backoff,
            "reading the ledger failed",
            || ledger.forget(false),
        ))?;
        if !lines.is_empty() {
            held.push((ledger, lines));
        }
    }
    if held.is_empty() {
        out!("Pipeline {name} has nothing in its ledgers; nothing to forget.");
        return Ok(Outcome::Success);
    }
    out!("Pipeline {name}: etl forget deletes what its ledgers hold (the loaded data stays; a next run starts over):");
    for (ledger, lines) in &held {
        out!("  {}:", ledger.name());
        for line in lines {
            out!("    {line}");
        }
    }
    if !yes {
        super::confirm_by_name(name, "forget it", "etl forget")?;
    }
    for (ledger, _) in &held {
        // One transaction per target: tried again whole after a lost session.
        let done = crate::pg::block_on(crate::retry::retry_step(
            retries,
            backoff,
            "forgetting the pipeline failed",
            || ledger.forget(true),
        ))?;
        out!("  {}:", ledger.name());
        for line in done {
            out!("    {line}");
        }
    }
    Ok(Outcome::Success)
}
