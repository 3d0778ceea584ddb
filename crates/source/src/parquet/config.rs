//! `[source] type = "parquet"` checked: a glob of the files and the batch
//! size.

use serde::Deserialize;

use crate::options::{add, default_batch_rows, Problems};
use etl_base::env;

/// `[source]` with `type = "parquet"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSourceConfig {
    /// A glob of the files, like `staging/**/*.parquet`, relative to the
    /// working directory. Every file must have the same columns.
    #[serde(deserialize_with = "env::string")]
    pub path: String,
    /// Rows per batch read from a file. Default 65536.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
}

/// The files' pattern and rows per batch, or (key, message) problems.
pub fn validate(s: ParquetSourceConfig) -> Result<(String, usize), Problems> {
    let mut problems = Problems::new();
    if s.path.trim().is_empty() {
        add(
            &mut problems,
            "source.path",
            "is empty; name the files, like \"staging/**/*.parquet\"",
        );
    } else if let Err(e) = glob::Pattern::new(&s.path) {
        add(
            &mut problems,
            "source.path",
            format!("{:?} is not a glob pattern: {e}", s.path),
        );
    }
    if s.batch_rows == 0 {
        add(&mut problems, "source.batch_rows", "must be at least 1");
    }
    match problems.is_empty() {
        true => Ok((s.path, s.batch_rows)),
        false => Err(problems),
    }
}
