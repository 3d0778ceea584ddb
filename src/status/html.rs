//! `etl status --html report.html`: one self-contained page (inline CSS and
//! SVG, no script, nothing fetched) with a picture of the run: a grid of
//! chunks, keys by windows, coloured by state; the throughput over time
//! from the ledger's finish times; the per-key table; the failed chunks
//! with their errors. Written by hand: it is a few hundred bytes of markup
//! per part, and a template engine would add more than it saves.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{duration, LedgerStatus};
use crate::run::summary::thousands;
use etl_ledger::sql::ChunkState;

/// A state's colour, shared by the grid and its legend.
pub const DONE: &str = "#2e7d32";
pub const FAILED: &str = "#c62828";
pub const RUNNING: &str = "#1565c0";
pub const PENDING: &str = "#bdbdbd";
/// The throughput bars: a colour no state uses.
pub const THROUGHPUT: &str = "#546e7a";

fn colour(status: &str) -> &'static str {
    match status {
        "done" => DONE,
        "failed" => FAILED,
        "running" => RUNNING,
        _ => PENDING,
    }
}

/// `&`, `<`, `>`, `"` and `'` escaped for text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page for `pipeline`, one section per ledger.
pub fn page(pipeline: &str, generated: &str, ledgers: &[LedgerStatus]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>etl status: {p}</title><style>\
         body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}}\
         h1{{font-size:20px}} h2{{font-size:16px;margin-top:28px}}\
         table{{border-collapse:collapse}} td,th{{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}} .err{{text-align:left;font-family:monospace;white-space:pre-wrap}}\
         .legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 14px;vertical-align:middle}}\
         </style></head><body>\n<h1>Pipeline {p}</h1>\n<p>Status at {g} UTC, from the ledger.</p>\n",
        p = escape(pipeline),
        g = escape(generated)
    );
    for l in ledgers {
        section(&mut h, l);
    }
    h.push_str("</body></html>\n");
    h
}

fn section(h: &mut String, l: &LedgerStatus) {
    let t = &l.total;
    let _ = write!(
        h,
        "<h2>Ledger {}</h2>\n<p>{} of {} chunks done, {} failed, {} pending, {} running; {} rows{}{}. {}</p>\n",
        escape(&l.ledger),
        t.done,
        t.done + t.failed + t.pending + t.running,
        t.failed,
        t.pending,
        t.running,
        thousands(t.rows),
        t.rows_per_sec
            .map(|r| format!(", {} rows/s", thousands(r as u64)))
            .unwrap_or_default(),
        t.eta_secs
            .filter(|_| t.pending + t.running > 0)
            .map(|e| format!(", about {} to go", duration(e)))
            .unwrap_or_default(),
        match &l.cutoff {
            Some(c) => format!("Cutoff {} UTC.", escape(c)),
            None => "No cutoff.".into(),
        }
    );
    if !l.connections.is_empty() {
        let each: Vec<String> = l
            .connections
            .iter()
            .map(|c| format!("{} {}", escape(&c.endpoint), escape(&c.peak)))
            .collect();
        h.push_str(&format!(
            "<p>Connections of the last run: {}.</p>\n",
            each.join(", ")
        ));
    }
    if l.chunks.is_empty() {
        h.push_str("<p>No chunk recorded yet.</p>\n");
        return;
    }
    h.push_str("<h3>Chunks</h3>\n<p class=\"legend\">");
    for (name, c) in [
        ("done", DONE),
        ("failed", FAILED),
        ("running", RUNNING),
        ("pending", PENDING),
    ] {
        let _ = write!(h, "<span style=\"background:{c}\"></span>{name}");
    }
    h.push_str("</p>\n");
    grid(h, &l.chunks);
    h.push_str("<h3>Throughput</h3>\n");
    throughput(h, &l.chunks);
    keys_table(h, l);
    tables_table(h, l);
    failed_table(h, l);
}

/// Per key: chunks by state, rows, pace, time left, size.
fn keys_table(h: &mut String, l: &LedgerStatus) {
    h.push_str("<h3>Keys</h3>\n<table><tr><th>key</th><th>done</th><th>failed</th><th>pending</th><th>running</th><th>rows</th><th>rows/s</th><th>rows/h</th><th>eta</th><th>size</th></tr>\n");
    for k in &l.keys {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&k.key),
            k.done,
            k.failed,
            k.pending,
            k.running,
            thousands(k.rows),
            k.rows_per_sec.map(|r| thousands(r as u64)).unwrap_or_default(),
            k.rows_per_sec
                .map(|r| thousands((r * 3600.0) as u64))
                .unwrap_or_default(),
            k.eta_secs.map(duration).unwrap_or_default(),
            k.bytes.map(etl_base::human::bytes).unwrap_or_default(),
        );
    }
    h.push_str("</table>\n");
}

/// The target tables: size, rows estimated, keys.
fn tables_table(h: &mut String, l: &LedgerStatus) {
    if !l.tables.is_empty() {
        h.push_str("<h3>Target tables</h3>\n<table><tr><th>table</th><th>size</th><th>rows (estimate)</th><th>keys</th></tr>\n");
        for t in &l.tables {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&t.table),
                etl_base::human::bytes(t.bytes),
                if t.rows_estimate < 0.0 {
                    "not analyzed".into()
                } else {
                    thousands(t.rows_estimate as u64)
                },
                t.keys
            );
        }
        h.push_str("</table>\n");
    }
}

/// The failed chunks, each with its window, attempts and last error.
fn failed_table(h: &mut String, l: &LedgerStatus) {
    let failed: Vec<&ChunkState> = l.chunks.iter().filter(|c| c.status == "failed").collect();
    if !failed.is_empty() {
        let _ = writeln!(
            h,
            "<h3>Failed chunks ({})</h3>\n<table><tr><th>key</th><th>window</th><th>attempts</th><th>error</th></tr>",
            failed.len()
        );
        for f in failed {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>[{}, {})</td><td>{}</td><td class=\"err\">{}</td></tr>",
                escape(f.key.as_deref().unwrap_or("")),
                escape(&f.start),
                escape(&f.end),
                f.attempts,
                escape(f.last_error.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</table>\n");
    }
}

/// Keys down, windows across. Windows shared by the keys (time windows)
/// are columns by start; otherwise (a migration's ranges) by position.
fn grid(h: &mut String, chunks: &[ChunkState]) {
    let mut keys: BTreeMap<&str, Vec<&ChunkState>> = BTreeMap::new();
    for c in chunks {
        keys.entry(c.key.as_deref().unwrap_or(""))
            .or_default()
            .push(c);
    }
    let starts: std::collections::BTreeSet<i64> = chunks.iter().map(|c| c.start_us).collect();
    let widest = keys.values().map(Vec::len).max().unwrap_or(1);
    let by_start = starts.len() <= 4 * widest;
    let columns = if by_start { starts.len() } else { widest };
    let column_of: BTreeMap<i64, usize> = starts.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let cell_w = (1000 / columns.max(1)).clamp(2, 24) as f64;
    let cell_h = (600 / keys.len().max(1)).clamp(4, 20) as f64;
    let label_w = if cell_h >= 10.0 {
        keys.keys()
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(0)
            .min(40) as f64
            * 7.5
            + 10.0
    } else {
        0.0
    };
    let width = label_w + cell_w * columns as f64 + 2.0;
    let height = cell_h * keys.len() as f64 + 2.0;
    let _ = writeln!(
        h,
        "<svg id=\"grid\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-size=\"11\">"
    );
    for (row, (key, mine)) in keys.iter().enumerate() {
        let y = row as f64 * cell_h + 1.0;
        if label_w > 0.0 {
            let _ = writeln!(
                h,
                "<text x=\"0\" y=\"{}\">{}</text>",
                y + cell_h * 0.75,
                escape(key)
            );
        }
        for (i, c) in mine.iter().enumerate() {
            let col = if by_start { column_of[&c.start_us] } else { i };
            let _ = writeln!(
                h,
                "<rect x=\"{}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{} [{}, {}) {}</title></rect>",
                label_w + col as f64 * cell_w,
                (cell_w - 1.0).max(1.0),
                (cell_h - 1.0).max(1.0),
                colour(&c.status),
                escape(key),
                escape(&c.start),
                escape(&c.end),
                escape(&c.status)
            );
        }
    }
    h.push_str("</svg>\n");
}

/// Rows committed per bucket of time, from the finish times of done chunks.
fn throughput(h: &mut String, chunks: &[ChunkState]) {
    let done: Vec<(i64, u64)> = chunks
        .iter()
        .filter(|c| c.status == "done")
        .filter_map(|c| Some((c.finished_us?, c.rows.unwrap_or(0) as u64)))
        .collect();
    let (Some(first), Some(last)) = (
        done.iter().map(|d| d.0).min(),
        done.iter().map(|d| d.0).max(),
    ) else {
        h.push_str("<p>No chunk finished yet.</p>\n");
        return;
    };
    const BUCKETS: usize = 60;
    let span = (last - first).max(1_000_000);
    let mut rows = [0u64; BUCKETS];
    for (t, r) in &done {
        let b = (((t - first) as f64 / span as f64) * (BUCKETS - 1) as f64).round() as usize;
        rows[b.min(BUCKETS - 1)] += r;
    }
    let bucket_secs = span as f64 / 1e6 / (BUCKETS - 1) as f64;
    let peak = rows.iter().copied().max().unwrap_or(1).max(1);
    let (w, hgt) = (900.0, 160.0);
    let bar = w / BUCKETS as f64;
    let _ = writeln!(
        h,
        "<p>Rows committed per {} from {} to {} UTC; the tallest bar is {} rows/s.</p>\n<svg id=\"throughput\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\">",
        if bucket_secs < 1.0 {
            format!("{:.0} ms", bucket_secs * 1000.0)
        } else {
            duration(bucket_secs)
        },
        escape(&crate::time::format_timestamp(first)),
        escape(&crate::time::format_timestamp(last)),
        thousands((peak as f64 / bucket_secs.max(1e-3)) as u64),
        hgt + 2.0
    );
    for (i, r) in rows.iter().enumerate() {
        let bh = *r as f64 / peak as f64 * hgt;
        let _ = writeln!(
            h,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{bh}\" fill=\"{THROUGHPUT}\"><title>{} rows</title></rect>",
            i as f64 * bar,
            hgt - bh + 1.0,
            (bar - 1.0).max(1.0),
            thousands(*r)
        );
    }
    h.push_str("</svg>\n");
}
