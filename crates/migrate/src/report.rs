//! A migration's summary: what each phase did, for people.

use std::fmt::Write;

use super::Migration;
use etl_run::summary::{bytes, thousands};
use etl_run::RunReport;
use etl_source::odbc::process::ReadStats;

/// What a migration's run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Tables whose chunks all loaded in this run.
    pub loaded: Vec<String>,
    /// Tables done in an earlier run (or by another process).
    pub skipped: Vec<String>,
    /// Tables with a failed chunk.
    pub failed_tables: Vec<String>,
    /// The data phase, as the chunk runner reports it.
    pub run: RunReport,
    /// Values replaced, cut or made NULL, per `Table.Column`.
    pub read: ReadStats,
    /// Phase 3, when it ran.
    pub finish: Option<Finish>,
}

/// Constraints, sequences and checks after the data.
#[derive(Debug, Default)]
pub struct Finish {
    pub added: Vec<String>,
    pub problems: Vec<String>,
    /// `"table"."column" = next value`.
    pub sequences: Vec<String>,
    pub checks: Checks,
}

/// Row counts and orphans.
#[derive(Debug, Default)]
pub struct Checks {
    /// (table, source rows, target rows)
    pub counts: Vec<(String, u64, u64)>,
    /// (foreign key, child table, orphan rows)
    pub orphans: Vec<(String, String, u64)>,
    /// (table, whether its checksum on the target equals the source's):
    /// `etl verify`, and a PostgreSQL source's run into existing tables.
    pub checksums: Vec<(String, bool)>,
    /// Sequences the target would hand out again: behind their column's MAX.
    pub sequences_behind: Vec<String>,
    /// Large objects on the source and on the target, where the source
    /// has any.
    pub large_objects: Option<(u64, u64)>,
}

impl Checks {
    pub fn ok(&self) -> bool {
        self.counts.iter().all(|(_, s, t)| s == t)
            && self.orphans.iter().all(|o| o.2 == 0)
            && self.checksums.iter().all(|c| c.1)
            && self.sequences_behind.is_empty()
            && self.large_objects.is_none_or(|(s, t)| s == t)
    }
}

impl Report {
    /// Values that did not load as they were: invalid dates made NULL,
    /// bytes replaced, NULs dropped.
    pub fn values_changed(&self) -> u64 {
        // An ODBC table's changes are in both (its read stats are what its
        // source counts); other origins count only in the runner's.
        self.read
            .values_changed()
            .max(self.run.source.values_changed)
    }
}

/// The end-of-run summary of a migration, for stdout.
pub fn render(m: &Migration, r: &Report) -> String {
    let mut s = String::new();
    let secs = r.run.elapsed.as_secs_f64();
    let status = status(m, r);
    let _ = writeln!(s, "\nMigration {} {status}", m.pipeline);
    let _ = writeln!(
        s,
        "  tables       {} loaded, {} skipped (done before), {} failed, of {}",
        r.loaded.len(),
        r.skipped.len(),
        r.failed_tables.len(),
        m.tables.len()
    );
    let _ = writeln!(
        s,
        "  chunks       {} done, {} failed, of {}",
        r.run.chunks_done,
        r.run.failed.len(),
        r.run.chunks_total
    );
    if r.run.chunks_skipped > 0 {
        let _ = writeln!(
            s,
            "  skipped      {} chunks done by an earlier run{}",
            r.run.chunks_skipped,
            match m.origin {
                // Byte ranges leave nothing to find their rows by.
                super::Origin::Csv(_) => "",
                _ => " (etl run --restart redoes them)",
            }
        );
    }
    let _ = writeln!(
        s,
        "  rows         {} ({} written) in {secs:.1} s, {} rows/s",
        thousands(r.run.rows),
        bytes(r.run.bytes_written),
        thousands((r.run.rows as f64 / secs.max(1e-3)) as u64)
    );
    if let super::Origin::Odbc(spec) = &m.origin {
        for line in etl_source::odbc::count_lines(&r.read, &spec.options) {
            let _ = writeln!(s, "  {line}");
        }
    }
    // What the other sources changed (NULs dropped, bytes replaced); an
    // ODBC source's lines are the ones above.
    if !matches!(m.origin, super::Origin::Odbc(_)) {
        for line in &r.run.source.lines {
            let _ = writeln!(s, "  {line}");
        }
    }
    match &r.finish {
        // Into files: the data phase is all there is.
        None if m.sink.is_none() => {}
        None if r.run.failed.is_empty() => {
            let _ = writeln!(
                s,
                "  constraints  waiting: not every table of the migration is loaded yet"
            );
        }
        None => {
            let _ = writeln!(
                s,
                "  constraints  not added: tables failed; rerun them, then constraints follow"
            );
        }
        Some(f) => finish_lines(&mut s, f),
    }
    if let Some(line) = etl_run::summary::connections_line() {
        s.push_str(&line);
    }
    if let Some(peak) = etl_run::summary::peak_memory_bytes() {
        let _ = writeln!(s, "  peak memory  {}", bytes(peak));
    }
    s
}

/// The run's one-word outcome, as its first line says it.
fn status(m: &Migration, r: &Report) -> &'static str {
    if !r.run.failed.is_empty() {
        "finished with failed tables"
    } else if r
        .finish
        .as_ref()
        .is_some_and(|f| !f.problems.is_empty() || !f.checks.ok())
    {
        "loaded, but checks found problems"
    } else if m.sink.is_none() {
        "done: every table in its files"
    } else if r.finish.is_none() && r.run.chunks_elsewhere > 0 {
        // The last process to load a chunk adds the constraints.
        "not done: this process loaded its chunks, another etl process still loads the others (etl status shows them)"
    } else if r.finish.is_none() {
        "loaded, constraints waiting"
    } else {
        "done"
    }
}

/// What happened after the data: constraints, sequences and the checks.
fn finish_lines(s: &mut String, f: &Finish) {
    let _ = writeln!(
        s,
        "  constraints  {} added{}",
        f.added.len(),
        if f.problems.is_empty() {
            String::new()
        } else {
            format!(", {} failed:", f.problems.len())
        }
    );
    for p in &f.problems {
        let _ = writeln!(s, "               {p}");
    }
    if !f.sequences.is_empty() {
        let _ = writeln!(
            s,
            "  sequences    {} reset: {}",
            f.sequences.len(),
            f.sequences.join(", ")
        );
    }
    let equal = f.checks.counts.iter().filter(|c| c.1 == c.2).count();
    let _ = writeln!(
        s,
        "  verify       {equal} of {} tables have the source's row count; {} foreign keys, {} orphan rows",
        f.checks.counts.len(),
        f.checks.orphans.len(),
        f.checks.orphans.iter().map(|o| o.2).sum::<u64>()
    );
    if let Some((on_source, on_target)) = f.checks.large_objects {
        let _ = writeln!(
            s,
            "               {on_target} of {on_source} large objects on the target"
        );
    }
    if !f.checks.checksums.is_empty() {
        let equal = f.checks.checksums.iter().filter(|c| c.1).count();
        let _ = writeln!(
            s,
            "               {equal} of {} tables have the source's checksum (every column, every row)",
            f.checks.checksums.len()
        );
        for (t, _) in f.checks.checksums.iter().filter(|c| !c.1) {
            let _ = writeln!(s, "               {t}: checksum differs from the source's");
        }
    }
    for b in &f.checks.sequences_behind {
        let _ = writeln!(s, "               sequence {b}");
    }
    for (t, src, dst) in f.checks.counts.iter().filter(|c| c.1 != c.2) {
        let _ = writeln!(s, "               {t}: source {src} rows, target {dst}");
    }
    for (fk, t, n) in f.checks.orphans.iter().filter(|o| o.2 > 0) {
        let _ = writeln!(
            s,
            "               {t}: {n} rows have no parent under foreign key {fk}"
        );
    }
}
