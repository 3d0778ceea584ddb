//! `etl status`: per key the chunks' states, rate, ETA and target size,
//! from the ledger ([`crate::status`]); `--watch` redraws it, `--html`
//! writes the page.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{load_keys, Outcome};
use crate::run::summary::thousands;
use crate::status::{duration, LedgerStatus};

pub(super) fn status(
    path: &Path,
    keys: &[String],
    json: bool,
    watch: Option<f64>,
    html: Option<&Path>,
) -> anyhow::Result<Outcome> {
    let pipeline = load_keys(path, keys)?;
    if let Some(secs) = watch {
        if !(0.5..=86_400.0).contains(&secs) {
            anyhow::bail!("--watch takes 0.5 to 86400 seconds");
        }
        crate::run::install_stop_signals();
    }
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        let ledgers = read(&pipeline)?;
        if let Some(file) = html {
            let page = crate::status::html::page(
                &pipeline.name,
                &crate::time::format_timestamp(super::run::now_micros()),
                &ledgers,
            );
            // Written whole, then renamed: a browser reloading it never
            // sees half a page.
            let tmp = file.with_extension("html.tmp");
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            }
            std::fs::write(&tmp, page)
                .and_then(|_| std::fs::rename(&tmp, file))
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
        }
        if watch.is_some() && terminal {
            // Clear the screen and draw from the top.
            out_raw!("\x1b[2J\x1b[H");
        }
        if json {
            let value: Vec<_> = ledgers
                .iter()
                .map(|l| serde_json::to_value(l).unwrap_or_default())
                .collect();
            out!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "pipeline": pipeline.name, "sinks": value })
                )?
            );
        } else {
            for l in &ledgers {
                text(&pipeline.name, l)?;
            }
            if let Some(file) = html {
                out!("Wrote {}", file.display());
            }
        }
        let Some(secs) = watch else {
            return Ok(Outcome::Success);
        };
        std::io::Write::flush(&mut std::io::stdout())?;
        let until = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < until {
            if crate::run::STOP.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(Outcome::Success);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Every PostgreSQL sink's ledger (a Parquet sink's record is its files).
fn read(pipeline: &crate::config::ValidatedPipeline) -> anyhow::Result<Vec<LedgerStatus>> {
    let mut out = Vec::new();
    for sink in &pipeline.sinks {
        let crate::config::ValidatedSink::Postgres(spec) = sink else {
            continue;
        };
        let ledger = format!(
            "{} on {}",
            spec.ledger_schema.table("chunk_ledger"),
            spec.endpoint
        );
        let (ledger, name, keys) = (&ledger, &pipeline.name, pipeline.chunks.only_keys.as_ref());
        let schema = &spec.ledger_schema;
        out.push(crate::pg::block_on(crate::retry::on_session(
            &spec.endpoint,
            "etl status",
            pipeline.chunks.retry(),
            "reading the ledger failed",
            |client| async move {
                let db = etl_model::ledger::SchemaClient::new(&client, schema);
                crate::status::read(db, ledger, name, keys).await
            },
        ))?);
    }
    Ok(out)
}

fn text(pipeline: &str, l: &LedgerStatus) -> anyhow::Result<()> {
    out!("Pipeline {pipeline}, ledger {}", l.ledger);
    match &l.cutoff {
        Some(c) => out!("  cutoff {c}: backfill below it, follow mode from it on"),
        None => out!("  no cutoff: follow mode has not run"),
    }
    if let Some(last) = l.connections.first() {
        let each: Vec<String> = l
            .connections
            .iter()
            .map(|c| format!("{} {}", c.endpoint, c.peak))
            .collect();
        out!(
            "  connections  last run (ended {} UTC): {}",
            last.at,
            each.join(", ")
        );
    }
    if l.chunks.is_empty() {
        out!("  no chunk recorded yet: etl run has not started on this target");
        return Ok(());
    }
    keys_text(l)?;
    for t in &l.tables {
        out!(
            "  target {}: {}, {}, {} key{}",
            t.table,
            etl_base::human::bytes(t.bytes),
            if t.rows_estimate < 0.0 {
                "rows not estimated yet (no ANALYZE)".to_string()
            } else {
                format!("~{} rows (estimate)", thousands(t.rows_estimate as u64))
            },
            t.keys,
            if t.keys == 1 { "" } else { "s" }
        );
    }
    failures_text(l)
}

/// The table of chunks per key, and their total.
fn keys_text(l: &LedgerStatus) -> anyhow::Result<()> {
    let width = l.keys.iter().map(|k| k.key.len()).max().unwrap_or(0).max(5);
    out!(
        "  {:width$}  {:>7}  {:>7}  {:>7}  {:>7}  {:>14}  {:>10}  {:>13}  {:>8}  {:>9}",
        "key",
        "done",
        "failed",
        "pending",
        "running",
        "rows",
        "rows/s",
        "rows/h",
        "eta",
        "size"
    );
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for k in l.keys.iter().chain(std::iter::once(&l.total)) {
        out!(
            "  {:width$}  {:>7}  {:>7}  {:>7}  {:>7}  {:>14}  {:>10}  {:>13}  {:>8}  {:>9}",
            k.key,
            k.done,
            k.failed,
            k.pending,
            k.running,
            thousands(k.rows),
            or_dash(k.rows_per_sec.map(|r| thousands(r as u64))),
            or_dash(k.rows_per_sec.map(|r| thousands((r * 3600.0) as u64))),
            or_dash(k.eta_secs.map(duration)),
            or_dash(k.bytes.map(etl_base::human::bytes)),
        );
    }
    Ok(())
}

/// The failed chunks, and a migration's phases after the data as its
/// last run left them.
fn failures_text(l: &LedgerStatus) -> anyhow::Result<()> {
    let failed: Vec<_> = l.chunks.iter().filter(|s| s.status == "failed").collect();
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
    let mut names: Vec<&str> = l.phases.iter().map(|p| p.phase.as_str()).collect();
    names.dedup();
    for name in names {
        let steps: Vec<_> = l.phases.iter().filter(|p| p.phase == name).collect();
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
    Ok(())
}
