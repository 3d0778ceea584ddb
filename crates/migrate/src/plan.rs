//! What `etl plan` shows of a migration: the phases in order, each table
//! with its columns and chunks, the DDL, and what follows the data.

use super::{Migration, Origin};
use etl_base::plan::{Plan, PlannedChunk};
use etl_pg::error::EtlError;
use etl_pg::pg_binary::rows::CopyFormat;
use etl_run::estimate::{Pace, Recorded};
use etl_run::human::duration;
use etl_run::summary::{bytes, thousands};
use etl_source::odbc;

impl Migration {
    /// What `etl plan` shows: the phases in order, each table with its
    /// columns, counts and chunks, the DDL, and what follows the data.
    /// Reads only.
    pub fn plan_lines(&self) -> Result<Vec<String>, EtlError> {
        let mut lines = Vec::new();
        let files = self.file_path();
        lines.push(
            match (&self.origin, &files) {
                (_, Some(_)) => {
                    "Phases: discover, data (into files: no tables, keys or sequences to make)"
                }
                (Origin::Postgres(..), None) => {
                    "Phases: discover, pre-data, data, post-data, sequences, verify"
                }
                _ => "Phases: discover, create, data, constraints, sequences, verify",
            }
            .to_string(),
        );
        lines.extend(self.source_lines());
        if !self.tables.iter().all(|t| t.source == "query") {
            lines.push(format!("Keys from: {}", self.keys_from));
        }
        lines.push(format!(
            "Discover: tables in load order (parents first), {} of them:",
            self.tables.len()
        ));
        if self.sink.is_some() {
            // As a resumed run would cut them.
            etl_pg::block_on(
                self.step("reading the tables' cuts failed", || self.read_cuts(false)),
            )?;
            if matches!(self.origin, Origin::Postgres(..)) {
                lines.push("Rows as the source's statistics estimate them (counted for a table never analyzed), unless a first run kept its cut; the verify phase counts them".into());
            }
        }
        let all = self.chunks_of_all(true)?;
        let pace = self.pace(&all)?;
        let (total, chunks) = self.table_lines(&mut lines, &all)?;
        if !self.cycle.is_empty() {
            lines.push(format!(
                "Foreign keys form a cycle among {:?}: loaded after the others; constraints come after all data, so the cycle does not block",
                self.cycle
            ));
        }
        if !self.left_out.is_empty() {
            lines.push("Left out (not created):".into());
            for l in &self.left_out {
                lines.push(format!("  {l}"));
            }
        }
        lines.extend(self.estimate_lines(pace.as_ref(), &all));
        if let Some(path) = &files {
            lines.push(format!(
                "Data: {} rows in {chunks} chunks, {} at a time, each chunk the file {path} names (written under a temporary name, then renamed: the file is the chunk's record)",
                thousands(total),
                self.workers.max(self.readers()),
            ));
            return Ok(lines);
        }
        if matches!(self.origin, Origin::Postgres(..)) {
            return self.pg_plan_lines(lines, total, chunks);
        }
        self.create_lines(&mut lines)?;
        lines.push(format!(
            "Data: {} rows in {chunks} chunks, {} at a time, each in one transaction with its ledger row{}",
            thousands(total),
            self.workers.max(self.readers()),
            if self.readers() > 1 { ", each read by a child process (readers > 1)" } else { "" }
        ));
        lines.extend(self.after_load_line());
        lines.push("Constraints, once every chunk is done:".into());
        for (_, sql, _) in self.constraint_sql() {
            lines.push(format!("  {sql}"));
        }
        lines.push("Sequences:".into());
        for (column, _) in self.sequence_sql() {
            lines.push(format!("  sequence of {column} set to MAX({column})"));
        }
        lines.push(format!(
            "Verify: row counts per table against the source (etl verify: a checksum of every table too), orphan rows per foreign key ({}).",
            self.foreign_keys.len()
        ));
        Ok(lines)
    }

    /// What the source is and how it is read.
    fn source_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.origin {
            Origin::Odbc(spec) => {
                let o = &spec.options;
                out.push(format!(
                    "Source: ODBC, text decoded from {} ({}), invalid text: {}; batches of at most {} rows or {}; values longer than {} {}",
                    o.encoding.name(),
                    spec.encoding_label,
                    if o.replace_invalid { "replaced with U+FFFD and counted" } else { "an error" },
                    thousands(o.batch_rows as u64),
                    bytes(o.batch_bytes as u64),
                    bytes(o.max_text_bytes as u64),
                    if o.truncate_long { "are cut to it and counted" } else { "fail their table" }
                ));
                if odbc::catalog::is_mdbtools(&spec.connection_string) {
                    out.push(format!(
                        "MDBTools hands out UTF-8; it converts Access 97 text from {} (MDB_JET3_CHARSET)",
                        std::env::var("MDB_JET3_CHARSET").unwrap_or_else(|_| "CP1252".into())
                    ));
                }
            }
            Origin::Access(spec) => out.push(format!(
                "Source: Access file {} read natively (jetdb), batches of {} rows; each table's rows read must equal the count its header records; text: {}",
                spec.path.display(),
                thousands(spec.options.batch_rows as u64),
                etl_source::access::text_encoding(&spec.path, &spec.options)
                    .unwrap_or_else(|e| e.to_string())
            )),
            Origin::Csv(spec) => out.push(format!(
                "Source: CSV files {} ({}{}), each a table of its own with its own header and types, read as COPY ... CSV reads them, in byte ranges of about {} records",
                spec.pattern,
                spec.encoding.name(),
                if spec.header { ", with a header" } else { "" },
                thousands(self.runners.first().map_or(0, |r| r.pipeline.chunks.range_rows))
            )),
            Origin::Postgres(o) => out.push(format!(
                "Source: PostgreSQL {}, each table handed over as COPY data (binary where every column type reads back the same on another server, text otherwise); the objects around the data from pg_dump{}{}",
                o.spec.endpoint,
                if o.spec.owners { ", owners kept" } else { ", without owners" },
                if o.spec.grants { ", grants kept" } else { ", without grants" },
            )),
        }
        out
    }

    /// Each table in load order, its rows, chunks and columns (source
    /// type -> Arrow -> PostgreSQL); the rows and chunks in all.
    fn table_lines(
        &self,
        lines: &mut Vec<String>,
        all: &[Vec<PlannedChunk>],
    ) -> Result<(u64, usize), EtlError> {
        let files = self.file_path();
        let (mut total, mut chunks) = (0, 0);
        for ((i, t), planned) in self.tables.iter().enumerate().zip(all) {
            let rows: u64 = planned.iter().map(|c| c.rows).sum();
            total += rows;
            chunks += planned.len();
            let split = match (&t.range_key, planned.as_slice()) {
                (Some((k, kind)), [_, _, ..]) => format!(
                    ", {} chunks by ranges of {k:?}: {}",
                    planned.len(),
                    self.ranges(i, *kind, planned)?
                ),
                // A CSV file's byte ranges.
                (None, [_, _, ..]) => format!(", {} chunks by byte ranges", planned.len()),
                _ => String::new(),
            };
            let target = match (&files, planned.first()) {
                (Some(path), Some(first)) => {
                    etl_sink::file::render_path(path, &self.pipeline, &first.chunk)
                }
                _ => t.target.qualified(),
            };
            // A PostgreSQL table's COPY data: binary, or text for the
            // target to convert.
            let format = match self.sources.get(i) {
                Some(crate::TableSource::Postgres(s)) => match s.format() {
                    CopyFormat::Binary => ", binary COPY",
                    _ => ", text COPY (a type's binary form differs between servers, or the target's column types are not the source's)",
                },
                _ => "",
            };
            lines.push(format!(
                "  {:>3}. {} -> {target}: {} rows{split}{format}",
                i + 1,
                t.source,
                thousands(rows)
            ));
            for (field, odbc_type) in t.schema.fields().iter().zip(&t.source_types) {
                let pg = etl_pg::ddl::ddl_type(field).unwrap_or_else(|e| e);
                let mut notes = Vec::new();
                if t.keys.primary_key.contains(field.name()) {
                    notes.push("primary key");
                }
                if t.keys.identity.contains(field.name()) {
                    notes.push("identity, sequence reset to MAX after the load");
                }
                lines.push(format!(
                    "         {:30} {odbc_type} -> {} -> {pg}{}",
                    field.name(),
                    field.data_type(),
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", notes.join(", "))
                    }
                ));
            }
        }
        Ok((total, chunks))
    }

    /// The tables to create, or how existing ones are loaded into.
    fn create_lines(&self, lines: &mut Vec<String>) -> Result<(), EtlError> {
        match self.fk_handling() {
            Some(handling) => lines.push(format!(
                "Create: none (create_table = false: the tables exist on the target, with their own keys); foreign keys and triggers: fk_handling = \"{}\"{}",
                handling.as_str(),
                match &self.origin {
                    Origin::Csv(_) => "; each file's rows are added to its table",
                    _ => "; whole tables emptied with DELETE, children first, before any loads",
                }
            )),
            None => {
                lines.push("Create (tables that do not exist yet):".into());
                for t in &self.tables {
                    lines.push(format!(
                        "  {}",
                        etl_pg::ddl::create_table_sql(&t.target, &t.schema, &[], &t.keys.identity)?
                    ));
                }
            }
        }
        Ok(())
    }

    /// The data phase's time in total and per table (with rows), and what
    /// the pace is known from.
    fn estimate_lines(&self, pace: Option<&Pace>, all: &[Vec<PlannedChunk>]) -> Vec<String> {
        let Some(p) = pace else {
            return vec!["Estimate: none yet (a table of a whole PostgreSQL database is timed by its first run here)".into()];
        };
        let workers = self.workers.max(self.readers());
        let rows = |planned: &Vec<PlannedChunk>| planned.iter().map(|c| c.rows).sum::<u64>();
        let total: u64 = all.iter().map(rows).sum();
        let chunks: usize = all.iter().map(Vec::len).sum();
        let mut lines = vec![format!(
            "Estimate: {} for the data on {workers} workers; basis: {}",
            duration(p.secs(total, chunks, workers)),
            p.basis
        )];
        for (t, planned) in self.tables.iter().zip(all) {
            if rows(planned) > 0 {
                lines.push(format!(
                    "  {}: {} on one worker",
                    t.source,
                    duration(p.secs(rows(planned), 1, 1))
                ));
            }
        }
        lines
    }

    /// The pace of this migration here: its chunks the ledger has done,
    /// else a short read of the first table with rows (not a PostgreSQL
    /// database's tables: they hand over COPY data).
    fn pace(&self, all: &[Vec<PlannedChunk>]) -> Result<Option<Pace>, EtlError> {
        let plan_of = |planned: &Vec<PlannedChunk>| Plan {
            chunks: planned.clone(),
            ..Default::default()
        };
        let mut recorded = Recorded::default();
        for (runner, planned) in self.runners.iter().zip(all) {
            recorded.add(runner.recorded(&plan_of(planned))?);
        }
        if let Some(p) = recorded.pace() {
            return Ok(Some(p));
        }
        if matches!(self.origin, Origin::Postgres(..)) {
            return Ok(None);
        }
        match self
            .runners
            .iter()
            .zip(all)
            .find(|(_, planned)| planned.iter().any(|c| c.rows > 0))
        {
            Some((runner, planned)) => runner.sampled_pace(&plan_of(planned)),
            None => Ok(None),
        }
    }

    /// Into files: the file sink's path, as written.
    fn file_path(&self) -> Option<String> {
        if self.sink.is_some() {
            return None;
        }
        self.runners
            .first()
            .and_then(|r| r.pipeline.sinks.first())
            .and_then(|s| match s {
                etl_sink::spec::ValidatedSink::Csv(c) => Some(c.path.clone()),
                etl_sink::spec::ValidatedSink::Parquet(p) => Some(p.path.clone()),
                _ => None,
            })
    }

    /// What runs on each loaded table once the data is in, when anything.
    pub(crate) fn after_load_line(&self) -> Option<String> {
        match self.pg().after_load {
            etl_sink::spec::AfterLoad::Nothing => None,
            after => Some(format!(
                "After the data: {} of each table loaded (analyze_after = false leaves it to autovacuum)",
                after.as_str()
            )),
        }
    }

    /// Table `i`'s ranges as `etl plan` lists them.
    fn ranges(
        &self,
        i: usize,
        kind: odbc::KeyKind,
        planned: &[PlannedChunk],
    ) -> Result<String, EtlError> {
        if kind != odbc::KeyKind::Text {
            // A date's bounds are midnights: shown as dates.
            let bound = |v: i64| {
                let b = planned[0].chunk.bound(v);
                match kind {
                    odbc::KeyKind::Time(odbc::TimeKind::Date) => {
                        b.get(..10).unwrap_or(&b).to_string()
                    }
                    _ => b,
                }
            };
            return Ok(planned
                .iter()
                .map(|c| format!("[{}, {})", bound(c.chunk.start), bound(c.chunk.end)))
                .collect::<Vec<_>>()
                .join(", "));
        }
        let cuts = self.sources[i].odbc()?.cuts()?;
        let mut parts = Vec::new();
        for (p, cut) in cuts.iter().enumerate() {
            parts.push(match p {
                0 => format!("below {cut:?}"),
                _ => format!("[{:?}, {cut:?})", cuts[p - 1]),
            });
        }
        if let Some(last) = cuts.last() {
            parts.push(format!("from {last:?}"));
        }
        Ok(parts.join(", "))
    }
}
