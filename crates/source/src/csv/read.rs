//! Reading a chunk: [`RangeReader`] decodes the records of a byte range of
//! one file; [`ChunkBatches`] turns them into Arrow batches of the source's
//! types, moving through a window's spans and keeping its rows, with bad
//! lines failing the chunk or kept for the reject file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use encoding_rs::{Decoder, DecoderResult};

use super::parse::{Found, Parser, Record};
use super::types::{self, Builder, ColType};
use super::{io, open_read, windows, Compression, CsvSpec, OnBadLine, BLOCK};
use crate::SourceCounts;
use etl_pg::error::EtlError;

/// Decoded records of `[start, end)` of one file.
pub(super) struct RangeReader {
    pub(super) path: PathBuf,
    pub(super) file: Box<dyn Read + Send>,
    pub(super) left: u64,
    pub(super) decoder: Decoder,
    pub(super) replace_invalid: bool,
    /// Decoded text not parsed yet, from `at`.
    pub(super) text: String,
    pub(super) at: usize,
    pub(super) eof: bool,
    pub(super) parser: Parser,
    pub(super) buf: Vec<u8>,
    pub(super) replaced: u64,
    /// Bytes not valid in the code page, met after the decoded text.
    pub(super) invalid: Option<EtlError>,
    /// The record read last, its buffers reused, and where its text is.
    pub(super) record: Record,
    pub(super) last: (usize, usize),
}

impl RangeReader {
    pub(super) fn new(
        spec: &CsvSpec,
        path: &Path,
        start: u64,
        end: u64,
        line: u64,
    ) -> Result<Self, EtlError> {
        // A compressed file is read whole, from its start, to its end.
        let (file, left): (Box<dyn Read + Send>, u64) = if Compression::of(path)
            != Compression::None
        {
            (open_read(path)?, u64::MAX)
        } else {
            let mut file = File::open(path).map_err(io(format!("opening {}", path.display())))?;
            file.seek(SeekFrom::Start(start))
                .map_err(io(format!("reading {}", path.display())))?;
            (Box::new(file), end - start)
        };
        // A BOM is only honoured at the start of the file.
        let decoder = if start == 0 {
            spec.encoding.new_decoder_with_bom_removal()
        } else {
            spec.encoding.new_decoder_without_bom_handling()
        };
        Ok(RangeReader {
            path: path.to_path_buf(),
            file,
            left,
            decoder,
            replace_invalid: spec.replace_invalid,
            text: String::new(),
            at: 0,
            eof: false,
            parser: Parser::new(spec.dialect, line),
            buf: vec![0u8; BLOCK],
            replaced: 0,
            invalid: None,
            record: Record::default(),
            last: (0, 0),
        })
    }

    /// Reads and decodes the next block; false at the end of the range.
    fn fill(&mut self) -> Result<bool, EtlError> {
        if let Some(e) = self.invalid.take() {
            return Err(e);
        }
        if self.eof {
            return Ok(false);
        }
        let want = self.left.min(BLOCK as u64) as usize;
        let n = if want == 0 {
            0
        } else {
            self.file
                .read(&mut self.buf[..want])
                .map_err(io(format!("reading {}", self.path.display())))?
        };
        self.left -= n as u64;
        let last = n == 0 || self.left == 0;
        if self.at > 0 {
            self.text.drain(..self.at);
            self.at = 0;
        }
        let mut input = &self.buf[..n];
        loop {
            self.text.reserve(
                self.decoder
                    .max_utf8_buffer_length_without_replacement(input.len())
                    .unwrap_or(input.len() * 3 + 16),
            );
            let (result, read) =
                self.decoder
                    .decode_to_string_without_replacement(input, &mut self.text, last);
            input = &input[read..];
            match result {
                DecoderResult::InputEmpty => break,
                DecoderResult::OutputFull => continue,
                DecoderResult::Malformed(bad, _) => {
                    if !self.replace_invalid {
                        // The records decoded before the bytes are read
                        // first: the error comes when the reader reaches
                        // them, so a sample stops short of it.
                        let line = self.parser.line()
                            + self.text.bytes().filter(|b| *b == b'\n').count() as u64;
                        self.invalid = Some(EtlError::Data(format!(
                            "{}, line {line}: bytes that are not valid {} (after {:?}); set source.encoding to the file's code page, or on_invalid_text = \"replace\" to load them as U+FFFD",
                            self.path.display(),
                            self.decoder.encoding().name(),
                            tail_of_line(&self.text)
                        )));
                        return Ok(true);
                    }
                    let _ = bad;
                    self.text.push('\u{FFFD}');
                    self.replaced += 1;
                }
            }
        }
        if last {
            self.eof = true;
        }
        Ok(n > 0 || !self.text.is_empty())
    }

    /// The next record and its raw text, or `None` at the end of the range.
    pub(super) fn next_record(&mut self) -> Result<Option<(Record, String)>, EtlError> {
        Ok(self
            .advance()?
            .then(|| (self.record.clone(), self.raw().to_string())))
    }

    /// The text of the record [`RangeReader::advance`] read last.
    fn raw(&self) -> &str {
        &self.text[self.last.0..self.last.1]
    }

    /// Reads the next record into `self.record`; false at the end.
    pub(super) fn advance(&mut self) -> Result<bool, EtlError> {
        loop {
            let rest = &self.text[self.at..];
            let (found, used) = self.parser.next_into(rest, self.eof, &mut self.record);
            match found {
                Found::Record => {
                    self.last = (self.at, self.at + used);
                    self.at += used;
                    return Ok(true);
                }
                Found::Comment => self.at += used,
                Found::NeedMore => {
                    if self.eof {
                        if self.at < self.text.len() {
                            let line = self.parser.line();
                            return Err(EtlError::Data(format!(
                                "{}, line {line}: a quoted field is not closed before the end of the file (or of the range planned); close the quote, or check source.quote",
                                self.path.display()
                            )));
                        }
                        return Ok(false);
                    }
                    self.fill()?;
                }
            }
        }
    }
}

/// The reject file, opened at the first bad line, and the lines written to
/// it by this run: a chunk read again (a retry) adds no line twice.
#[derive(Default)]
pub(super) struct Rejects {
    file: Option<File>,
    written: std::collections::HashSet<(String, u64)>,
    /// Chunks whose replaced bytes are counted already.
    replaced_in: std::collections::HashSet<String>,
}

/// The batches of one chunk.
pub(super) struct ChunkBatches {
    pub(super) reader: RangeReader,
    /// The chunk read, for counting its replacements once per run.
    pub(super) chunk: String,
    pub(super) spec: CsvSpec,
    pub(super) schema: SchemaRef,
    pub(super) types: Vec<ColType>,
    pub(super) stem: String,
    /// (file, line, reason, text) of each line kept aside.
    pub(super) rejected: Vec<(String, u64, String, String)>,
    pub(super) counts: Arc<Mutex<SourceCounts>>,
    pub(super) rejects: Arc<Mutex<Rejects>>,
    /// One row's values, reused.
    pub(super) values: Vec<Option<types::Value>>,
    pub(super) window: Option<WindowReads>,
}

/// A window chunk's spans still to read, and which records it keeps.
pub(super) struct WindowReads {
    pub(super) filter: windows::Filter,
    /// The file of the span being read.
    pub(super) file: usize,
    pub(super) spans: VecDeque<(windows::Span, PathBuf, bool)>,
    /// Invalid bytes replaced in spans read before this one.
    pub(super) replaced: u64,
}

/// A reader of one span (past a compressed file's header).
pub(super) fn span_reader(
    spec: &CsvSpec,
    span: windows::Span,
    path: &Path,
    header: bool,
) -> Result<RangeReader, EtlError> {
    let mut reader = RangeReader::new(spec, path, span.start, span.end, span.line)?;
    if header {
        reader.next_record()?;
    }
    Ok(reader)
}

impl crate::BatchReader for ChunkBatches {
    fn batch(&mut self) -> Result<Option<RecordBatch>, EtlError> {
        ChunkBatches::batch(self)
    }

    fn finish(&mut self) -> Result<(), EtlError> {
        ChunkBatches::finish(self)
    }
}

impl ChunkBatches {
    /// Moves a window chunk on to its next span; false after the last.
    fn next_span(&mut self) -> Result<bool, EtlError> {
        let Some(w) = &mut self.window else {
            return Ok(false);
        };
        let Some((span, path, header)) = w.spans.pop_front() else {
            return Ok(false);
        };
        w.replaced += self.reader.replaced;
        w.file = span.file;
        self.reader = span_reader(&self.spec, span, &path, header)?;
        Ok(true)
    }

    fn batch(&mut self) -> Result<Option<RecordBatch>, EtlError> {
        let mut builders: Vec<Builder> = self
            .types
            .iter()
            .map(|t| Builder::new(*t, self.spec.batch_rows.min(65_536)))
            .collect();
        let mut rows = 0;
        while rows < self.spec.batch_rows {
            if !self.reader.advance()? {
                if self.next_span()? {
                    continue;
                }
                break;
            }
            if let Some(w) = &self.window {
                if !w.filter.keeps(w.file, &self.reader.record) {
                    continue;
                }
            }
            // Taken out for the row (no copy), put back for the next.
            let record = std::mem::take(&mut self.reader.record);
            let added = self.add(&record, &mut builders);
            self.reader.record = record;
            rows += usize::from(added?);
        }
        if rows == 0 {
            return Ok(None);
        }
        let arrays = builders.iter_mut().map(Builder::finish).collect();
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map(Some)
            .map_err(|e| EtlError::Bug(format!("a CSV batch does not fit its schema: {e}")))
    }

    /// Adds one record to the builders; false when it was a bad line kept
    /// aside (an error when bad lines fail).
    fn add(&mut self, record: &Record, builders: &mut [Builder]) -> Result<bool, EtlError> {
        if let Err(why) = self.check(record) {
            self.bad(record.line, why)?;
            return Ok(false);
        }
        // Every value of the row is read before any is appended: a bad
        // value leaves the batch as it was.
        self.values.clear();
        let mut failed = None;
        for (i, (f, t)) in record.fields.iter().zip(&self.types).enumerate() {
            if !f.quoted && f.text == self.spec.null {
                self.values.push(None);
                continue;
            }
            match types::parse(*t, &f.text) {
                Ok(v) => self.values.push(Some(v)),
                Err(why) => {
                    failed = Some((i, why));
                    break;
                }
            }
        }
        if let Some((i, why)) = failed {
            let name = self.schema.field(i).name().clone();
            let value: String = record.fields[i].text.chars().take(60).collect();
            let reason = format!(
                "column {name:?}: {value:?} {why} ({} column; if it holds such values, set its type in [source.columns]: {:?} = \"text\")",
                self.types[i].name(),
                name
            );
            self.bad(record.line, reason)?;
            return Ok(false);
        }
        for ((b, v), f) in builders.iter_mut().zip(&self.values).zip(&record.fields) {
            match v {
                None => b.null(),
                Some(v) => b.append(*v, &f.text),
            }
        }
        Ok(true)
    }

    fn check(&self, record: &Record) -> Result<(), String> {
        let (got, want) = (record.fields.len(), self.types.len());
        if got != want {
            return Err(format!(
                "{got} field{} where the header has {want}",
                if got == 1 { "" } else { "s" }
            ));
        }
        Ok(())
    }

    /// A line that does not parse: the chunk's error, or kept aside.
    fn bad(&mut self, line: u64, why: String) -> Result<(), EtlError> {
        match self.spec.on_bad_line {
            OnBadLine::Fail => Err(EtlError::Data(format!(
                "{}, line {line}: {why}; fix the line, or set on_bad_line = \"skip\" to keep such lines in a reject file",
                self.reader.path.display()
            ))),
            OnBadLine::Skip => {
                let raw = self.reader.raw().to_string();
                let file = self.reader.path.display().to_string();
                self.rejected.push((file, line, why, raw));
                Ok(())
            }
        }
    }

    /// At the end of the chunk: its rejected lines to the reject file.
    fn finish(&mut self) -> Result<(), EtlError> {
        let replaced = self.reader.replaced + self.window.as_ref().map_or(0, |w| w.replaced);
        if self.rejected.is_empty() && replaced == 0 {
            return Ok(());
        }
        let mut counts = self.counts.lock().expect("no panic while holding the lock");
        // A chunk read again (a retry) replaced the same bytes again.
        let first_read = replaced > 0
            && self
                .rejects
                .lock()
                .expect("no panic while holding the lock")
                .replaced_in
                .insert(self.chunk.clone());
        if first_read {
            counts.values_changed += replaced;
            counts.lines.push(format!(
                "replaced {replaced} invalid byte sequences in {} with U+FFFD",
                self.stem
            ));
        }
        if self.rejected.is_empty() {
            return Ok(());
        }
        let mut rejects = self
            .rejects
            .lock()
            .expect("no panic while holding the lock");
        let Rejects {
            file: out, written, ..
        } = &mut *rejects;
        self.rejected
            .retain(|(file, line, ..)| written.insert((file.clone(), *line)));
        if self.rejected.is_empty() {
            return Ok(());
        }
        let path = &self.spec.rejects;
        if out.is_none() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
            }
            let new = !path.exists();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(io(format!("opening reject file {}", path.display())))?;
            if new {
                std::io::Write::write_all(&mut f, b"file,line,reason,text\n")
                    .map_err(io(format!("writing {}", path.display())))?;
            }
            *out = Some(f);
        }
        let f = out.as_mut().expect("opened above");
        let mut text = String::new();
        for (file, line, why, raw) in &self.rejected {
            text.push_str(&format!(
                "{},{line},{},{}\n",
                csv_field(file),
                csv_field(why),
                csv_field(raw.trim_end_matches(['\n', '\r']))
            ));
        }
        std::io::Write::write_all(f, text.as_bytes())
            .map_err(io(format!("writing {}", path.display())))?;
        counts.rows_rejected += self.rejected.len() as u64;
        counts.lines.push(format!(
            "left out {} bad line{} of {} (see {})",
            self.rejected.len(),
            if self.rejected.len() == 1 { "" } else { "s" },
            self.stem,
            path.display()
        ));
        self.rejected.clear();
        Ok(())
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The end of the last line of `text` (up to 20 characters): what came
/// before the bad bytes, for the error.
fn tail_of_line(text: &str) -> String {
    let line = text.rsplit('\n').next().unwrap_or_default();
    let skip = line.chars().count().saturating_sub(20);
    line.chars().skip(skip).collect()
}
