//! `[source] type = "access"` checked: its file, tables, batch size, code
//! page and casts, into the spec the Access source is built from.

use std::path::PathBuf;

use serde::Deserialize;

use super::AccessSpec;
use crate::options::{add, OnInvalidText, Problems};
use etl_base::env;

/// `[source]` with `type = "access"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSourceConfig {
    /// The `.mdb` or `.accdb` file.
    #[serde(deserialize_with = "env::string")]
    pub path: String,
    /// `["*"]` (the default) for every user table, or a list.
    #[serde(default = "every_table")]
    pub tables: Vec<String>,
    /// Tables left out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Rows per batch. Default 10,000.
    #[serde(default = "crate::odbc::config::default_odbc_batch_rows")]
    pub batch_rows: usize,
    /// Access 97 (Jet3) files: the code page of their text, where the
    /// header names none or the wrong one (`cp949`). Later files store
    /// Unicode.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Bytes not valid in `encoding`: an error (default) or U+FFFD,
    /// counted.
    #[serde(default)]
    pub on_invalid_text: OnInvalidText,
    /// Columns read another way: `"Table.Column" = "text"` (or
    /// `"binary"`), as for ODBC.
    #[serde(default)]
    pub casts: std::collections::BTreeMap<String, String>,
}

fn every_table() -> Vec<String> {
    vec!["*".to_string()]
}

/// The spec, or (key, message) problems.
pub fn validate(s: AccessSourceConfig) -> Result<AccessSpec, Problems> {
    let mut problems = Problems::new();
    if s.path.trim().is_empty() {
        add(
            &mut problems,
            "source.path",
            "is empty; name the .mdb or .accdb file",
        );
    }
    if s.tables.is_empty() || s.tables.iter().any(|t| t.trim().is_empty()) {
        add(
            &mut problems,
            "source.tables",
            "must list table names, or be [\"*\"] for every user table",
        );
    }
    if s.batch_rows == 0 {
        add(&mut problems, "source.batch_rows", "must be at least 1");
    }
    let mut options = super::ReadOptions {
        batch_rows: s.batch_rows,
        replace_invalid: s.on_invalid_text == OnInvalidText::Replace,
        ..Default::default()
    };
    if let Some(label) = &s.encoding {
        match crate::encoding_for(label) {
            Ok(e) => options.encoding = Some(e),
            Err(e) => add(&mut problems, "source.encoding", e),
        }
    }
    for (column, cast) in &s.casts {
        match crate::odbc::Cast::parse(cast) {
            Ok(cast) => {
                options.casts.insert(column.clone(), cast);
            }
            Err(e) => add(&mut problems, &format!("source.casts.{column}"), e),
        }
    }
    let spec = AccessSpec {
        path: PathBuf::from(s.path),
        include: s.tables,
        exclude: s.exclude,
        options,
    };
    match problems.is_empty() {
        true => Ok(spec),
        false => Err(problems),
    }
}
