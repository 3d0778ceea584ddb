//! What a person sees: a progress bar on a terminal (log lines otherwise)
//! while chunks run, and a summary at the end.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::RunReport;
pub use crate::human::{bytes, thousands};

/// Progress of a run: a bar on a terminal, else an INFO line at most every
/// ten seconds. Rows count as they are written, inside long chunks too.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    expected_rows: Option<u64>,
    chunks: AtomicUsize,
    failed: AtomicUsize,
    /// Rows of committed chunks.
    rows: AtomicU64,
    /// Rows written by chunks still running (gone again when they end).
    in_flight: AtomicU64,
    /// Earlier runs' pace of these chunks, and the workers sharing them.
    prior: Option<(crate::estimate::Recorded, usize)>,
    last_log: Mutex<Instant>,
    started: Instant,
}

impl Progress {
    pub fn new(
        total: usize,
        expected_rows: Option<u64>,
        prior: Option<(crate::estimate::Recorded, usize)>,
    ) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            // In the process's one set of bars, which log lines suspend.
            let bar = bars().add(ProgressBar::new(total as u64));
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} chunks {msg}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar
        });
        Progress {
            bar,
            total,
            expected_rows,
            prior,
            chunks: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            rows: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            last_log: Mutex::new(Instant::now()),
            started: Instant::now(),
        }
    }

    /// A running chunk wrote `rows` more.
    pub fn rows_written(&self, rows: u64) {
        self.in_flight.fetch_add(rows, Ordering::Relaxed);
        self.show(false);
    }

    /// A chunk ended: `rows` committed (0 when it failed or was skipped),
    /// `written` the rows it had reported while running.
    pub fn chunk_done(&self, rows: u64, failed: bool, written: u64) {
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.failed.fetch_add(failed as usize, Ordering::Relaxed);
        self.in_flight.fetch_sub(written, Ordering::Relaxed);
        self.rows.fetch_add(rows, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
        self.show(true);
    }

    fn show(&self, chunk_ended: bool) {
        let chunks = self.chunks.load(Ordering::Relaxed);
        let failures = self.failed.load(Ordering::Relaxed);
        let rows = self.rows.load(Ordering::Relaxed) + self.in_flight.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = rows as f64 / elapsed;
        let left = self.time_left(chunks, rows, elapsed);
        let message = || {
            format!(
                "{} rows{}, {}/s{}{}",
                thousands(rows),
                self.expected_rows
                    .map(|e| format!(" of {}", thousands(e)))
                    .unwrap_or_default(),
                thousands(rate as u64),
                left.map(|s| format!(", {} left", crate::human::duration(s)))
                    .unwrap_or_default(),
                if failures > 0 {
                    format!(", {failures} failed")
                } else {
                    String::new()
                }
            )
        };
        if let Some(bar) = &self.bar {
            bar.set_message(message());
            return;
        }
        let mut last = self
            .last_log
            .lock()
            .expect("no panic while holding the lock");
        let last_chunk = chunk_ended && chunks == self.total;
        if last.elapsed() >= log_interval() || last_chunk {
            *last = Instant::now();
            tracing::info!("Progress: {chunks}/{} chunks, {}.", self.total, message());
        }
    }

    /// Seconds left: by rows when the plan counted them, else by chunks;
    /// at the run's own pace once it has one (5 s in, something done),
    /// at the earlier runs' until then.
    fn time_left(&self, chunks: usize, rows: u64, elapsed: f64) -> Option<f64> {
        let own = elapsed >= 5.0;
        let chunks_left = self.total.saturating_sub(chunks) as f64;
        match self.expected_rows {
            Some(expected) => {
                let left = expected.saturating_sub(rows) as f64;
                match (own && rows > 0, &self.prior) {
                    (true, _) => Some(left * elapsed / rows as f64),
                    (false, Some((r, pool))) if r.rows > 0 && r.secs > 0.0 => {
                        Some(left * r.secs / r.rows as f64 / *pool as f64)
                    }
                    _ => None,
                }
            }
            None => match (own && chunks > 0, &self.prior) {
                (true, _) => Some(chunks_left * elapsed / chunks as f64),
                (false, Some((r, pool))) if r.chunks > 0 => {
                    Some(chunks_left * r.secs / r.chunks as f64 / *pool as f64)
                }
                _ => None,
            },
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            bars().remove(bar);
        }
    }
}

/// How often progress is logged without a terminal: 10 s (a test build
/// may set another, [`etl_base::hooks::progress_secs`]).
fn log_interval() -> Duration {
    static SECS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    Duration::from_secs_f64(*SECS.get_or_init(|| etl_base::hooks::progress_secs().unwrap_or(10.0)))
}

/// The summary's line of the most connections open at once to each
/// endpoint (the pool's bound holds them), when any was made.
pub fn connections_line() -> Option<String> {
    let peaks = etl_pg::peaks();
    if peaks.is_empty() {
        return None;
    }
    let each: Vec<String> = peaks
        .iter()
        .map(|(endpoint, peak)| format!("{endpoint} peak {peak}"))
        .collect();
    Some(format!(
        "  connections  {} (at most {} each)\n",
        each.join(", "),
        etl_pg::limit()
    ))
}

/// The process's peak resident memory (VmHWM), where the OS tells it.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The end-of-run summary, for stdout.
pub fn render(pipeline: &str, report: &RunReport) -> String {
    let secs = report.elapsed.as_secs_f64();
    let status = if !report.failed.is_empty() {
        "finished with failed chunks"
    } else if report.chunks_elsewhere > 0 {
        "done here; other chunks ran in another etl process (etl status shows whether they are done)"
    } else {
        "done"
    };
    let mut s = format!("Pipeline {pipeline}: {status}\n");
    s.push_str(&format!(
        "  chunks       {} done, {} failed, of {}\n",
        report.chunks_done,
        report.failed.len(),
        report.chunks_total
    ));
    if report.chunks_skipped > 0 {
        s.push_str(&format!(
            "  skipped      {} chunks done by an earlier run (etl run --restart redoes them)\n",
            report.chunks_skipped
        ));
    }
    if report.chunks_elsewhere > 0 {
        s.push_str(&format!(
            "  elsewhere    {} chunks were running or done in another etl process\n",
            report.chunks_elsewhere
        ));
    }
    match &report.pivot {
        Some(p) => {
            s.push_str(&format!(
                "  rows         {} wide rows from {} readings\n",
                thousands(report.rows),
                thousands(p.input_rows)
            ));
            if p.not_pivoted() > 0 {
                s.push_str(&format!(
                    "  not pivoted  {} readings: {} unknown format, {} NULL value, {} NULL name, {} NULL index (examples in the log)\n",
                    thousands(p.not_pivoted()),
                    thousands(p.unknown_format),
                    thousands(p.null_value),
                    thousands(p.null_name),
                    thousands(p.null_index)
                ));
                for (_, e) in &p.examples {
                    s.push_str(&format!("               e.g. {e}\n"));
                }
            }
            if p.duplicates > 0 {
                s.push_str(&format!(
                    "  duplicates   {} readings repeated a (row, channel) cell; the greatest value was kept\n",
                    thousands(p.duplicates)
                ));
            }
        }
        None => s.push_str(&format!("  rows         {}\n", thousands(report.rows))),
    }
    for line in &report.source.lines {
        s.push_str(&format!("  {line}\n"));
    }
    s.push_str(&format!(
        "  bytes        {} read, {} written\n",
        bytes(report.bytes_read),
        bytes(report.bytes_written)
    ));
    // A pivot's rate is in readings: its wide rows are far fewer.
    let (rate_rows, what) = match &report.pivot {
        Some(p) => (p.input_rows, "readings"),
        None => (report.rows, "rows"),
    };
    s.push_str(&format!(
        "  elapsed      {secs:.1} s ({} {what}/s)\n",
        thousands((rate_rows as f64 / secs.max(1e-3)) as u64)
    ));
    if let Some(line) = connections_line() {
        s.push_str(&line);
    }
    if let Some(peak) = report.peak_memory_bytes {
        s.push_str(&format!("  peak memory  {}\n", bytes(peak)));
    }
    s
}

/// Every progress bar of the process (a backfill's and follow mode's
/// loads run at once): log lines are written with the bars suspended.
pub fn bars() -> &'static indicatif::MultiProgress {
    static BARS: std::sync::OnceLock<indicatif::MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(|| {
        indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())
    })
}
