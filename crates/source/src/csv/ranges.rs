//! A CSV source's byte ranges: one scan of each file that respects quotes
//! cuts it at record boundaries, counting the records of each range; and
//! the records a migration expects in the target (less the reject file's
//! lines).

use std::fs::File;
use std::io::{Seek, SeekFrom};

use super::parse::Scanner;
use super::types::ColType;
use super::{each_block, io, newlines, open_read, read_file, CsvSource, OnBadLine};
use etl_base::plan::{Chunk, Plan, PlannedChunk};
use etl_pg::error::EtlError;

impl CsvSource {
    /// The records of every file the target should hold, for a
    /// migration's count of the source: as the plan counts them, less the
    /// lines the reject file holds for these files (`on_bad_line =
    /// "skip"`; each line once, however often its range ran).
    pub fn records(&self) -> Result<u64, EtlError> {
        let records: u64 = self.ranges(u64::MAX)?.chunks.iter().map(|c| c.rows).sum();
        Ok(records.saturating_sub(self.rejected_lines()?))
    }

    /// The distinct lines of these files in the reject file.
    fn rejected_lines(&self) -> Result<u64, EtlError> {
        let path = &self.spec.rejects;
        if self.spec.on_bad_line != OnBadLine::Skip || !path.is_file() {
            return Ok(0);
        }
        let mine: std::collections::HashSet<String> = self
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        let types = [ColType::Text, ColType::Bigint, ColType::Text, ColType::Text];
        let mut seen = std::collections::HashSet::new();
        for batch in read_file(path, encoding_rs::UTF_8, true, b',', "", &types)? {
            let batch = batch?;
            let files = arrow::array::AsArray::as_string::<i32>(batch.column(0));
            let lines =
                arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(batch.column(1));
            for row in 0..batch.num_rows() {
                if mine.contains(files.value(row)) {
                    seen.insert((files.value(row).to_string(), lines.value(row)));
                }
            }
        }
        Ok(seen.len() as u64)
    }

    /// One scan of each file: a range ends at the record boundary after
    /// every `range_rows` records; a compressed file is one range.
    pub(super) fn ranges(&self, range_rows: u64) -> Result<Plan, EtlError> {
        let mut plan = Plan::default();
        for file in &self.files {
            if file.compressed {
                // One chunk: the whole file, its records counted.
                let mut f = open_read(&file.path)?;
                let mut scanner = Scanner::new(self.spec.dialect);
                let (mut rows, mut last) = (0u64, b'\n');
                each_block(&mut f, &file.path, |block| {
                    scanner.scan(block, |_| rows += 1);
                    last = block[block.len() - 1];
                })?;
                rows += u64::from(last != b'\n');
                rows = rows.saturating_sub(u64::from(self.spec.header));
                if file.size > 0 {
                    plan.chunks.push(PlannedChunk {
                        chunk: Chunk::range(Some(file.stem.clone()), 0, file.size as i64),
                        rows,
                    });
                }
                continue;
            }
            let mut f =
                File::open(&file.path).map_err(io(format!("opening {}", file.path.display())))?;
            f.seek(SeekFrom::Start(file.data_start))
                .map_err(io(format!("reading {}", file.path.display())))?;
            let mut scanner = Scanner::new(self.spec.dialect);
            let (mut pos, mut start, mut rows, mut line) =
                (file.data_start, file.data_start, 0u64, file.data_line);
            let mut cuts: Vec<(u64, u64, u64, u64)> = Vec::new();
            let mut start_line = line;
            let mut last_byte = b'\n';
            each_block(&mut f, &file.path, |block| {
                scanner.scan(block, |i| {
                    rows += 1;
                    if rows == range_rows {
                        let end = pos + i as u64 + 1;
                        cuts.push((start, end, rows, start_line));
                        start = end;
                        rows = 0;
                        start_line = line + newlines(&block[..=i]);
                    }
                });
                line += newlines(block);
                last_byte = block[block.len() - 1];
                pos += block.len() as u64;
            })?;
            // A last record without its newline.
            if pos > start && last_byte != b'\n' {
                rows += 1;
            }
            if pos > start {
                cuts.push((start, pos, rows, start_line));
            }
            let mut lines = self.lines.lock().expect("no panic while holding the lock");
            for (s, e, rows, l) in cuts {
                lines.insert((file.stem.clone(), s as i64), l);
                plan.chunks.push(PlannedChunk {
                    chunk: Chunk::range(Some(file.stem.clone()), s as i64, e as i64),
                    rows,
                });
            }
        }
        Ok(plan)
    }
}
