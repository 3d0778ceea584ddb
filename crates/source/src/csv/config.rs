//! `[source] type = "csv"` checked: one ASCII character for each of
//! delimiter, quote, escape and comment, an encoding etl can scan in raw
//! bytes, known column types.

use std::path::Path;

use super::parse::Dialect;
use super::types::ColType;
use super::CsvSpec;
use serde::Deserialize;

use crate::options::{
    default_batch_rows, default_delimiter, default_encoding, default_quote, default_true,
    OnInvalidText,
};
use etl_base::env;

/// `[source]` with `type = "csv"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSourceConfig {
    /// A file or a glob (`exports/*.csv`), relative to the working
    /// directory; `{file}` in a sink's table is each file's stem.
    #[serde(deserialize_with = "env::string")]
    pub path: String,
    /// The files' code page: any encoding_rs label, and cp949/uhc/ms949.
    /// Default utf-8 (a BOM is skipped).
    #[serde(default = "default_encoding", deserialize_with = "env::string")]
    pub encoding: String,
    /// `error` (default) or `replace` (U+FFFD, counted).
    #[serde(default)]
    pub on_invalid_text: OnInvalidText,
    /// The first record names the columns. Default true.
    #[serde(default = "default_true")]
    pub header: bool,
    /// One ASCII character each. Defaults `,`, `"`, and the quote.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    #[serde(default = "default_quote")]
    pub quote: String,
    #[serde(default)]
    pub escape: Option<String>,
    /// An unquoted field equal to this is NULL. Default "" (COPY's).
    #[serde(default)]
    pub null: String,
    /// Lines starting with this character are skipped. Default none.
    #[serde(default)]
    pub comment: Option<String>,
    /// `[source.columns]`: `name = "type"` for columns whose inferred type
    /// is not wanted (text, bigint, numeric(12,2), timestamptz, ...).
    #[serde(default)]
    pub columns: std::collections::BTreeMap<String, String>,
    /// `fail` (default: the chunk fails naming file, line and column) or
    /// `skip` (the line goes to the reject file; the run exits 3).
    #[serde(default)]
    pub on_bad_line: super::OnBadLine,
    /// Rows per batch. Default 65536.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
}

/// The spec, or (key, message) problems.
pub fn validate(s: CsvSourceConfig, failed_csv: &str) -> Result<CsvSpec, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let key = |k: &str| format!("source.{k}");
    if s.path.trim().is_empty() {
        problems.push((
            key("path"),
            "is empty; name the file, like \"exports/sales.csv\" or \"exports/*.csv\"".into(),
        ));
    } else if let Err(e) = glob::Pattern::new(&s.path) {
        problems.push((
            key("path"),
            format!("{:?} is not a file name or glob: {e}", s.path),
        ));
    }
    let encoding = match crate::encoding_for(&s.encoding) {
        Ok(e) => Some(e),
        Err(e) => {
            problems.push((key("encoding"), e));
            None
        }
    };
    if encoding.is_some_and(|e| !e.is_ascii_compatible()) {
        problems.push((key("encoding"), format!("{:?} is not ASCII-compatible (UTF-16?); convert the file to UTF-8 or a legacy code page first", s.encoding)));
    }
    let dialect = dialect(&s, encoding, &mut problems);
    let mut columns = Vec::new();
    for (name, t) in &s.columns {
        match ColType::parse(t) {
            Ok(t) => columns.push((name.clone(), t)),
            Err(e) => problems.push((format!("source.columns.{name}"), e)),
        }
    }
    if s.batch_rows == 0 {
        problems.push((key("batch_rows"), "must be at least 1".into()));
    }
    let (Some(encoding), Some(dialect), true) = (encoding, dialect, problems.is_empty()) else {
        return Err(problems);
    };
    Ok(CsvSpec {
        pattern: s.path,
        encoding,
        replace_invalid: s.on_invalid_text == OnInvalidText::Replace,
        header: s.header,
        dialect,
        null: s.null,
        columns,
        on_bad_line: s.on_bad_line,
        batch_rows: s.batch_rows,
        rejects: rejects_path(failed_csv),
        windows: None,
    })
}

/// The delimiter, quote, escape and comment characters, each one ASCII
/// character that cannot be half of a character of the file's `encoding`;
/// `None` (the problems noted) when any is not.
fn dialect(
    s: &CsvSourceConfig,
    encoding: Option<&'static encoding_rs::Encoding>,
    problems: &mut Vec<(String, String)>,
) -> Option<Dialect> {
    // Multi-byte code pages whose trail bytes include 0x40..0x7E (CP949,
    // Shift_JIS, Big5, GBK): a delimiter there could be half a character.
    let wide = encoding.is_some_and(|e| e != encoding_rs::UTF_8 && !e.is_single_byte());
    let mut one = |name: &str, v: &str| -> Option<u8> {
        let b = v.as_bytes();
        if b.len() != 1 || !b[0].is_ascii() || b[0] == b'\n' || b[0] == b'\r' {
            problems.push((
                format!("source.{name}"),
                format!("{v:?} must be one ASCII character other than a line break"),
            ));
            return None;
        }
        if wide && b[0] >= 0x40 {
            problems.push((format!("source.{name}"), format!("{v:?} can be the second byte of a {} character; pick one below '@', like , ; or a tab", s.encoding)));
            return None;
        }
        Some(b[0])
    };
    let delimiter = one("delimiter", &s.delimiter);
    let quote = one("quote", &s.quote);
    let escape = match &s.escape {
        Some(e) => one("escape", e),
        None => quote,
    };
    let comment = match &s.comment {
        Some(c) => one("comment", c).map(Some),
        None => Some(None),
    };
    if delimiter.is_some() && delimiter == quote {
        problems.push(("source.quote".into(), "is the same as the delimiter".into()));
    }
    Some(Dialect {
        delimiter: delimiter?,
        quote: quote?,
        escape: escape?,
        comment: comment?,
    })
}

/// Where rejected lines go: beside the failed-chunk CSV,
/// failed_chunks.csv -> failed_chunks.rejects.csv.
fn rejects_path(failed_csv: &str) -> std::path::PathBuf {
    let failed = Path::new(failed_csv);
    let stem = failed
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "failed_chunks".into());
    failed.with_file_name(format!("{stem}.rejects.csv"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: serde_json::Value) -> Result<CsvSpec, Vec<(String, String)>> {
        validate(serde_json::from_value(json).unwrap(), "out/failed.csv")
    }

    fn problems(json: serde_json::Value) -> Vec<String> {
        match check(json) {
            Ok(_) => panic!("taken"),
            Err(p) => p
                .into_iter()
                .map(|(k, why)| format!("{k}: {why}"))
                .collect(),
        }
    }

    #[test]
    fn a_dialect_that_fits_the_file_is_taken_and_one_that_does_not_is_named() {
        // A CP949 file cut by semicolons, quoted by single quotes
        let spec = check(serde_json::json!({
            "path": "in/*.csv", "encoding": "cp949", "delimiter": ";", "quote": "'"
        }))
        .unwrap();
        assert_eq!(
            spec.dialect,
            Dialect {
                delimiter: b';',
                quote: b'\'',
                escape: b'\'',
                comment: None
            }
        );
        assert_eq!(spec.rejects, Path::new("out/failed.rejects.csv"));

        // A delimiter that can be a CP949 character's second byte, two
        // characters for a quote, and a comment that is a line break
        let p = problems(serde_json::json!({
            "path": "in/*.csv", "encoding": "cp949", "delimiter": "|", "quote": "''", "comment": "\n"
        }));
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("source.delimiter: \"|\" can be the second byte of a cp949 character"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("source.quote: \"''\" must be one ASCII character"),
            "{p:?}"
        );
        assert!(
            p[2].starts_with("source.comment: \"\\n\" must be one ASCII character"),
            "{p:?}"
        );

        // The quote the delimiter is, and a file in UTF-16
        let p = problems(serde_json::json!({
            "path": "in.csv", "encoding": "utf-16le", "quote": ","
        }));
        assert_eq!(
            p,
            [
                "source.encoding: \"utf-16le\" is not ASCII-compatible (UTF-16?); convert the file to UTF-8 or a legacy code page first",
                "source.quote: is the same as the delimiter",
            ]
        );
    }
}
