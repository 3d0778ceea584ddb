//! The failed-chunk CSV: one line per chunk, `key,start,end`, the shape
//! users already keep (`IMO9986063,2025-06-15 14:40:40.388958,2025-06-15
//! 20:40:40.388958`); a whole table's chunk has empty bounds
//! (`public.orders,,`). An empty key field means no key (or a NULL key); an
//! empty-string key is written `""`. Read with or without a header line and
//! with any sub-second precision. Written to a temporary file, fsynced and
//! renamed, so a crash never leaves half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use etl_base::csv_line::split;
use etl_base::plan::Chunk;
use etl_base::time::parse_timestamp;

/// Writes `chunks` to `path` atomically.
pub fn write(path: &Path, chunks: &[Chunk]) -> std::io::Result<()> {
    let mut text = String::new();
    for c in chunks {
        match &c.key {
            None => {}
            Some(k) => text.push_str(&quote(k)),
        }
        // A whole table's chunk has no bounds: `table,,`.
        if !c.is_whole() {
            text.push(',');
            text.push_str(&c.bound(c.start));
            text.push(',');
            text.push_str(&c.bound(c.end));
        } else {
            text.push_str(",,");
        }
        text.push('\n');
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    // The rename is durable once the directory entry is.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn quote(field: &str) -> String {
    if field.is_empty() || field.contains([',', '"', '\n', '\r']) || field.trim() != field {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Reads a failed-chunk CSV. Errors name the file and line.
pub fn read(path: &Path) -> Result<Vec<Chunk>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|(line, e)| format!("{}, line {line}: {e}", path.display()))
}

/// Parses CSV text; an error carries its 1-based line.
pub fn parse(text: &str) -> Result<Vec<Chunk>, (usize, String)> {
    let mut chunks = Vec::new();
    for (i, n, line) in records(text) {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields = split(line).map_err(|e| (n, e))?;
        if fields.len() != 3 {
            return Err((
                n,
                format!("expected 3 fields (key,start,end), found {}", fields.len()),
            ));
        }
        let start_text = fields[1].as_deref().unwrap_or("");
        let end_text = fields[2].as_deref().unwrap_or("");
        // No bounds: a whole table (`1970-01-01 00:00:00` twice, as
        // earlier versions wrote it, reads the same).
        if start_text.is_empty() && end_text.is_empty() {
            chunks.push(Chunk::whole(fields[0].clone()));
            continue;
        }
        // "part N" is a part of a table cut at stored key values.
        let parts = (
            start_text.strip_prefix("part ").map(str::parse::<i64>),
            end_text.strip_prefix("part ").map(str::parse::<i64>),
        );
        if let (Some(Ok(start)), Some(Ok(end))) = parts {
            if end != start + 1 {
                return Err((
                    n,
                    format!(
                        "{start_text:?} to {end_text:?} is not one part; write part N,part N+1"
                    ),
                ));
            }
            chunks.push(Chunk::part(fields[0].clone(), start));
            continue;
        }
        // A range unbounded below or above (the first and last of a key's).
        let unbounded = |text: &str| match text {
            "-infinity" => Some(etl_base::plan::BELOW),
            "infinity" => Some(etl_base::plan::ABOVE),
            _ => None,
        };
        let (lo, hi) = (unbounded(start_text), unbounded(end_text));
        // Integer bounds are a key range; anything else a time.
        let integers = (
            lo.map_or_else(|| start_text.parse::<i64>(), Ok),
            hi.map_or_else(|| end_text.parse::<i64>(), Ok),
        );
        if lo.is_some() && hi.is_some() {
            return Err((
                n,
                "a range unbounded on both sides is a whole table: write table,,".into(),
            ));
        }
        if let (Ok(start), Ok(end)) = integers {
            if start >= end {
                return Err((
                    n,
                    format!("start {start_text:?} is not below end {end_text:?}"),
                ));
            }
            chunks.push(Chunk::range(fields[0].clone(), start, end));
            continue;
        }
        let start = lo.map_or_else(|| parse_timestamp(start_text), Ok);
        if start.is_err() && chunks.is_empty() && i == 0 && looks_like_header(&fields) {
            continue; // a header line
        }
        let start = start.map_err(|e| (n, format!("start: {e}")))?;
        let end = hi
            .map_or_else(|| parse_timestamp(end_text), Ok)
            .map_err(|e| (n, format!("end: {e}")))?;
        // start = end = 1970-01-01 is a whole table's chunk (ODBC sources).
        if start >= end && !(start == 0 && end == 0) {
            return Err((
                n,
                format!("start {start_text:?} is not before end {end_text:?}"),
            ));
        }
        chunks.push(Chunk::window(fields[0].clone(), start, end));
    }
    Ok(chunks)
}

/// The CSV's records: (index among non-empty records, 1-based line where
/// it starts, text). A newline inside a quoted field (a key holding one)
/// belongs to its record; lines are not split before quotes are read.
/// Written by hand, not with the csv crate: it does not tell an unquoted
/// empty field (no key, NULL) from a quoted one (the empty key).
fn records(text: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let (mut start, mut line, mut start_line, mut quoted) = (0, 1, 1, false);
    for (at, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '\n' if !quoted => {
                let record = &text[start..at];
                if !record.trim().is_empty() {
                    out.push((out.len(), start_line, record));
                }
                start = at + 1;
                start_line = line + 1;
            }
            _ => {}
        }
        if c == '\n' {
            line += 1;
        }
    }
    let record = &text[start..];
    if !record.trim().is_empty() {
        out.push((out.len(), start_line, record));
    }
    out
}

fn looks_like_header(fields: &[Option<String>]) -> bool {
    fields.iter().all(|f| {
        f.as_deref().is_some_and(|s| {
            s.chars().any(|c| c.is_alphabetic()) && !s.chars().any(|c| c.is_ascii_digit())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etl_base::time::format_timestamp;

    #[test]
    fn reads_the_files_users_keep() {
        // Given a file in the users' shape, with a header and mixed precision
        let text = "key,start,end\nIMO9986063,2025-06-15 14:40:40.388958,2025-06-15 20:40:40.388958\n,2025-06-16 00:00:00,2025-06-17 00:00:00\n\"a,\"\"b\",2025-06-16,2025-06-16 00:00:01.5\n";
        // When it is parsed
        let chunks = parse(text).unwrap();
        // Then each line is a chunk; the empty key is no key
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].key.as_deref(), Some("IMO9986063"));
        assert_eq!(
            format_timestamp(chunks[0].start),
            "2025-06-15 14:40:40.388958"
        );
        assert_eq!(chunks[1].key, None);
        assert_eq!(chunks[2].key.as_deref(), Some("a,\"b"));
    }

    #[test]
    fn write_then_read_is_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("failed.csv");
        let chunks = vec![
            Chunk::window(
                Some("IMO1".into()),
                1_750_000_000_388_958,
                1_750_021_600_388_958,
            ),
            Chunk::window(Some(String::new()), 0, 1),
            Chunk::window(None, 0, 86_400_000_000),
            Chunk::whole(Some("orders".into())),
            Chunk::range(Some("big table".into()), -5, 1_000_000),
            Chunk::range(Some("big".into()), etl_base::plan::BELOW, 1001),
            Chunk::range(Some("big".into()), 2001, etl_base::plan::ABOVE),
            Chunk::window(Some("days".into()), etl_base::plan::BELOW, 86_400_000_000),
            Chunk::window(Some("days".into()), 86_400_000_000, etl_base::plan::ABOVE),
            Chunk::part(Some("codes".into()), 3),
            // A key with a newline and quotes reads back whole (it did not).
            Chunk::window(Some("line one\nline \"two\"".into()), 0, 1),
        ];
        write(&path, &chunks).unwrap();
        assert_eq!(read(&path).unwrap(), chunks);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("IMO1,2025-06-15 "), "{text}");
        assert!(text.contains("big table,-5,1000000\n"), "{text}");
        assert!(text.contains("codes,part 3,part 4\n"), "{text}");
        assert!(
            text.contains("\norders,,\n"),
            "a whole table has no bounds: {text}"
        );
        // As earlier versions wrote a whole table: read the same.
        assert_eq!(
            parse("orders,1970-01-01 00:00:00,1970-01-01 00:00:00\n").unwrap(),
            vec![Chunk::whole(Some("orders".into()))]
        );
    }

    #[test]
    fn bad_lines_name_the_line() {
        let err = parse("IMO1,2025-06-15,2025-06-16\nIMO2,tomorrow,2025-06-16\n").unwrap_err();
        assert_eq!(err.0, 2);
        assert!(
            err.1.starts_with("start: \"tomorrow\" is not a timestamp"),
            "{}",
            err.1
        );
        let err = parse("IMO1,2025-06-16,2025-06-15\n").unwrap_err();
        assert_eq!(
            err,
            (
                1,
                "start \"2025-06-16\" is not before end \"2025-06-15\"".to_string()
            )
        );
    }
}
