//! `etl verify`: source and targets compared per chunk; `--quick`: the
//! targets against the checksums their chunks recorded when loaded.

use std::path::Path;

use super::finish::checks;
use super::run::now_micros;
use super::{is_migration, load_keys, migration, Outcome};
use crate::plan::Chunk;
use crate::run::summary::thousands;
use crate::run::Runner;

pub(super) fn verify(
    path: &Path,
    keys: &[String],
    sample: Option<usize>,
    quick: bool,
) -> anyhow::Result<Outcome> {
    let pipeline = load_keys(path, keys)?;
    if is_migration(&pipeline) {
        anyhow::ensure!(
            !quick,
            "etl verify --quick compares a pipeline's chunks with the checksums they recorded; a migration's tables are checked whole: run etl verify without --quick"
        );
        return migration::verify(&pipeline);
    }
    let runner = Runner::build(pipeline)?;
    let plan = runner.plan()?;
    let mut chunks: Vec<Chunk> = plan.chunks.into_iter().map(|c| c.chunk).collect();
    if let Some(n) = sample {
        chunks = sampled(chunks, n)?;
    }
    let results = runner.verify(&chunks, quick)?;
    let unrecorded = results.iter().filter(|(_, _, c)| c.is_none()).count();
    let results: Vec<_> = results
        .into_iter()
        .filter_map(|(chunk, sink, c)| c.map(|c| (chunk, sink, c)))
        .collect();
    let differ: Vec<_> = results.iter().filter(|(_, _, c)| !c.equal()).collect();
    out!(
        "Verified {} chunk{} of pipeline {} against {} sink{}: {} equal, {} differ",
        chunks.len(),
        if chunks.len() == 1 { "" } else { "s" },
        runner.pipeline.name,
        runner.pipeline.sinks.len(),
        if runner.pipeline.sinks.len() == 1 {
            ""
        } else {
            "s"
        },
        results.len() - differ.len(),
        differ.len()
    );
    let together: Vec<_> = results.iter().filter(|(c, _, _)| c.is_whole()).collect();
    if !together.is_empty() {
        out!(
            "Chunks the target cannot tell apart (files read whole, byte ranges of a file, ranges of a table's blocks) were compared together, table by table: {}.",
            together
                .iter()
                .map(|(c, _, _)| c.key.as_deref().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if quick {
        out!("The target's rows were compared with the checksums recorded when their chunks were loaded; the source was not read.");
    }
    if unrecorded > 0 {
        out!(
            "{unrecorded} chunk{} recorded no checksum (not loaded yet, or loaded by an etl before checksums were recorded): run etl verify without --quick for {}.",
            if unrecorded == 1 { "" } else { "s" },
            if unrecorded == 1 { "it" } else { "them" }
        );
    }
    if differ.is_empty() {
        // Chunks with nothing to compare with are not verified.
        let outcome = match unrecorded {
            0 => Outcome::Success,
            _ => Outcome::ChunksFailed,
        };
        return checks(&runner.pipeline, outcome);
    }
    print_differing(&differ)?;
    checks(&runner.pipeline, Outcome::ChunksFailed)
}

/// A random pick of `n` chunks (xorshift seeded by the clock), reported
/// with its seed, in the plan's order.
fn sampled(mut chunks: Vec<Chunk>, n: usize) -> anyhow::Result<Vec<Chunk>> {
    let total = chunks.len();
    let mut seed = (now_micros() as u64) | 1;
    out!("Sampling {} of {total} chunks (seed {seed})", n.min(total));
    for i in (1..chunks.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        chunks.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    chunks.truncate(n);
    chunks.sort_by(|a, b| (a.start, &a.key).cmp(&(b.start, &b.key)));
    Ok(chunks)
}

/// The chunks that differ, one line each: bounds, rows on each side, the
/// checksum, the sink.
fn print_differing(
    differ: &[&(Chunk, String, etl_model::verify::Comparison)],
) -> anyhow::Result<()> {
    let key_width = differ
        .iter()
        .map(|(c, _, _)| c.key.as_deref().unwrap_or("").len())
        .max()
        .unwrap_or(0)
        .max(3);
    out!("");
    out!(
        "{:key_width$}  {:26}  {:26}  {:>12}  {:>12}  {:8}  sink",
        "key",
        "start",
        "end",
        "source rows",
        "target rows",
        "checksum"
    );
    for (chunk, sink, c) in differ {
        out!(
            "{:key_width$}  {:26}  {:26}  {:>12}  {:>12}  {:8}  {sink}",
            chunk.key.as_deref().unwrap_or(""),
            if chunk.is_whole() {
                "whole table".to_string()
            } else {
                chunk.bound(chunk.start)
            },
            if chunk.is_whole() {
                String::new()
            } else {
                chunk.bound(chunk.end)
            },
            thousands(c.source.rows),
            c.target
                .as_ref()
                .map(|t| thousands(t.rows))
                .unwrap_or_else(|| "missing".into()),
            if c.target.as_ref().is_some_and(|t| t.sum == c.source.sum) {
                "equal"
            } else {
                "differs"
            },
        );
    }
    Ok(())
}
