//! Settings several sources share: what to do with text not valid in its
//! code page, and the pipeline file's defaults their serde types use.

use serde::Deserialize;

/// What to do with narrow text that is not valid in `encoding`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalidText {
    #[default]
    Error,
    Replace,
}

// Defaults of the pipeline file's source settings, shared by the sources' serde types.
pub const fn default_true() -> bool {
    true
}

pub fn default_delimiter() -> String {
    ",".into()
}

pub fn default_quote() -> String {
    "\"".into()
}

pub fn default_encoding() -> String {
    "utf-8".to_string()
}

pub const fn default_batch_rows() -> usize {
    65_536
}

/// Bytes of fetch buffers per batch (ODBC, PostgreSQL): 32 MiB.
pub const fn default_batch_bytes() -> usize {
    32 * 1024 * 1024
}

/// The problems of one `[source]` table: (key, message) pairs.
pub type Problems = Vec<(String, String)>;

/// Notes a problem of `key` (`source.path`) with what to change.
pub fn add(problems: &mut Problems, key: &str, message: impl Into<String>) {
    problems.push((key.to_string(), message.into()));
}
