//! `etl status`: per key, the chunks' states from the ledger.

use std::path::Path;

use super::{load_keys, Outcome};
use crate::run::summary::thousands;
use crate::time::format_timestamp;

pub(super) fn status(path: &Path, keys: &[String], json: bool) -> anyhow::Result<Outcome> {
    use crate::sink::ledger;
    let pipeline = load_keys(path, keys)?;
    let mut reports = Vec::new();
    for sink in &pipeline.sinks {
        // Only database sinks keep a ledger; a Parquet sink's record is its files.
        let crate::config::ValidatedSink::Postgres(spec) = sink else {
            continue;
        };
        let endpoint = spec.endpoint.clone();
        let (states, cutoff, phases) = crate::run::block_on(async {
            let client = endpoint.connect("etl status").await?;
            let context = format!("reading etl.chunk_ledger on {endpoint}");
            if !ledger::exists(&client)
                .await
                .map_err(crate::error::EtlError::pg(context.clone()))?
            {
                return Ok::<_, crate::error::EtlError>((Vec::new(), None, Vec::new()));
            }
            let mut states = ledger::states(&client, &pipeline.name)
                .await
                .map_err(crate::error::EtlError::pg(context.clone()))?;
            if let Some(keys) = &pipeline.chunks.only_keys {
                states.retain(|s| s.key.as_ref().is_some_and(|k| keys.contains(k)));
            }
            let cutoff = ledger::cutoff(&client, &pipeline.name)
                .await
                .map_err(crate::error::EtlError::pg(context.clone()))?;
            let phases = ledger::phases(&client, &pipeline.name)
                .await
                .map_err(crate::error::EtlError::pg(context))?;
            Ok((states, cutoff, phases))
        })?;
        reports.push((
            endpoint.to_string(),
            states,
            cutoff.map(format_timestamp),
            phases,
        ));
    }
    if json {
        let value: Vec<_> = reports
            .iter()
            .map(|(endpoint, states, cutoff, phases)| {
                serde_json::json!({ "ledger": endpoint, "cutoff": cutoff, "chunks": states, "keys": by_key(states), "phases": phases })
            })
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "pipeline": pipeline.name, "sinks": value })
            )?
        );
        return Ok(Outcome::Success);
    }
    for (endpoint, states, cutoff, phases) in &reports {
        out!("Pipeline {}, ledger on {endpoint}", pipeline.name);
        match cutoff {
            Some(c) => out!("  cutoff {c}: backfill below it, follow mode from it on"),
            None => out!("  no cutoff: follow mode has not run"),
        }
        if states.is_empty() {
            out!("  no chunk recorded yet: etl run has not started on this target");
            continue;
        }
        let keys = by_key(states);
        let width = keys.iter().map(|k| k.key.len()).max().unwrap_or(0).max(5);
        out!(
            "  {:width$}  {:>7}  {:>7}  {:>7}  {:>7}  {:>14}",
            "key",
            "done",
            "failed",
            "pending",
            "running",
            "rows"
        );
        for k in &keys {
            out!(
                "  {:width$}  {:>7}  {:>7}  {:>7}  {:>7}  {:>14}",
                k.key,
                k.done,
                k.failed,
                k.pending,
                k.running,
                thousands(k.rows)
            );
        }
        let failed: Vec<_> = states.iter().filter(|s| s.status == "failed").collect();
        if !failed.is_empty() {
            out!("  Failed chunks:");
            for f in failed {
                out!(
                    "    {} [{}, {}) after {} attempt{}: {}",
                    f.key.as_deref().unwrap_or(""),
                    f.start,
                    f.end,
                    f.attempts,
                    if f.attempts == 1 { "" } else { "s" },
                    f.last_error.as_deref().unwrap_or("")
                );
            }
        }
        // A migration's phases after the data, as its last run left them.
        let mut names: Vec<&str> = phases.iter().map(|p| p.phase.as_str()).collect();
        names.dedup();
        for name in names {
            let steps: Vec<_> = phases.iter().filter(|p| p.phase == name).collect();
            let failed: Vec<_> = steps.iter().filter(|p| p.status == "failed").collect();
            out!(
                "  {name}: {} done, {} failed",
                steps.len() - failed.len(),
                failed.len()
            );
            for f in failed {
                out!("    {}: {}", f.item, f.error.as_deref().unwrap_or(""));
            }
        }
    }
    Ok(Outcome::Success)
}

/// Chunk counts of one key, for `etl status`.
#[derive(serde::Serialize)]
struct KeyStatus {
    key: String,
    done: usize,
    failed: usize,
    pending: usize,
    running: usize,
    rows: u64,
}

fn by_key(states: &[crate::sink::ledger::ChunkState]) -> Vec<KeyStatus> {
    let mut keys: Vec<KeyStatus> = Vec::new();
    for s in states {
        let key = s.key.clone().unwrap_or_default();
        if keys.last().is_none_or(|k| k.key != key) {
            keys.push(KeyStatus {
                key,
                done: 0,
                failed: 0,
                pending: 0,
                running: 0,
                rows: 0,
            });
        }
        let k = keys.last_mut().expect("pushed above");
        match s.status.as_str() {
            "done" => {
                k.done += 1;
                k.rows += s.rows.unwrap_or(0) as u64;
            }
            "failed" => k.failed += 1,
            "running" => k.running += 1,
            _ => k.pending += 1,
        }
    }
    keys
}
