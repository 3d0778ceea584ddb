//! `etl plan`: the chunks and the DDL a run would execute; writes nothing.

use std::path::Path;

use super::{is_migration, load_keys, migration, Outcome};
use crate::plan::Chunk;
use crate::run::human::duration;
use crate::run::summary::thousands;
use crate::run::Runner;
use crate::time::format_timestamp;

pub(super) fn plan(path: &Path, keys: &[String]) -> anyhow::Result<Outcome> {
    let pipeline = load_keys(path, keys)?;
    if is_migration(&pipeline) {
        return migration::plan(&pipeline);
    }
    let runner = Runner::build(pipeline)?;
    let plan = runner.plan()?;
    let p = &runner.pipeline;
    out!(
        "Pipeline {}: {} chunks, {} rows",
        p.name,
        plan.chunks.len(),
        thousands(plan.rows())
    );
    if let Some((start, end)) = plan.range {
        out!(
            "Range [{}, {}), interval {} s",
            format_timestamp(start),
            format_timestamp(end),
            p.chunks.interval / 1_000_000
        );
    }
    if let (true, Some(width)) = (p.chunks.by_blocks(), p.chunks.range_width) {
        out!(
            "Ranges of the table's heap blocks, {} blocks each, rows estimated from its statistics; each read in physical order (TID range scan): for a table nobody writes during the copy",
            thousands(width)
        );
    }
    let key_width = plan
        .chunks
        .iter()
        .map(|c| c.chunk.key.as_deref().unwrap_or("").len())
        .max()
        .unwrap_or(0)
        .max(3);
    out!("");
    out!(
        "{:key_width$}  {:26}  {:26}  {:>12}",
        "key",
        "start",
        "end",
        "rows"
    );
    for c in &plan.chunks {
        out!(
            "{:key_width$}  {:26}  {:26}  {:>12}",
            c.chunk.key.as_deref().unwrap_or(""),
            c.chunk.bound(c.chunk.start),
            c.chunk.bound(c.chunk.end),
            thousands(c.rows)
        );
    }
    if plan.rows_outside > 0 {
        out!(
            "\n{} source rows have a NULL {} or lie outside the range: no chunk holds them",
            thousands(plan.rows_outside),
            p.chunks.time_column
        );
    }
    estimate(&runner, &plan)?;
    let columns = runner.source().describe();
    if !columns.is_empty() {
        out!("\nSource columns:");
        for line in columns {
            out!("  {line}");
        }
    }
    let chunks: Vec<Chunk> = plan.chunks.iter().map(|c| c.chunk.clone()).collect();
    out!("\nTargets:");
    for line in runner.describe_sinks(&chunks)? {
        out!("  {line}");
    }
    Ok(Outcome::Success)
}

/// The time the chunks not done yet would take, in total and per key,
/// with what the pace is known from ([`crate::run::estimate`]).
fn estimate(runner: &Runner, plan: &crate::plan::Plan) -> anyhow::Result<()> {
    let workers = runner.pipeline.chunks.workers;
    let all: Vec<Chunk> = plan.chunks.iter().map(|c| c.chunk.clone()).collect();
    let by_sink = runner.committed_by_sink(&all)?;
    let left: Vec<&crate::plan::PlannedChunk> = plan
        .chunks
        .iter()
        .filter(|c| !by_sink.iter().all(|s| s.contains(&c.chunk)))
        .collect();
    let rows: u64 = left.iter().map(|c| c.rows).sum();
    let Some(pace) = runner.pace(plan, true)? else {
        out!("\nEstimate: none yet (no chunk of the plan holds rows to time)");
        return Ok(());
    };
    if left.is_empty() {
        out!(
            "\nEstimate: nothing left, every chunk is done (--restart would take {} on {workers} workers); basis: {}",
            duration(pace.secs(plan.rows(), plan.chunks.len(), workers)),
            pace.basis
        );
        return Ok(());
    }
    out!(
        "\nEstimate: {} for {} chunks ({} rows) left on {workers} workers; basis: {}",
        duration(pace.secs(rows, left.len(), workers)),
        left.len(),
        thousands(rows),
        pace.basis
    );
    let mut keys: std::collections::BTreeMap<&str, (usize, u64)> = Default::default();
    for c in &left {
        let k = keys
            .entry(c.chunk.key.as_deref().unwrap_or(""))
            .or_default();
        k.0 += 1;
        k.1 += c.rows;
    }
    if keys.len() > 1 {
        for (key, (chunks, rows)) in keys {
            out!(
                "  {key}: {} for {chunks} chunks ({} rows) on one worker",
                duration(pace.secs(rows, 1, 1)),
                thousands(rows)
            );
        }
    }
    Ok(())
}
