//! What a transform stage is once the pipeline file's values make sense
//! (the command line's config layer builds these; [`crate::build`] makes
//! the stages).

use std::path::PathBuf;

/// A transform stage whose configuration makes sense.
#[derive(Debug, Clone)]
pub enum ValidatedTransform {
    Sql { query: String },
    Pivot(PivotSpec),
}

/// A pivot stage whose settings make sense (columns are checked against
/// the input's schema when the run builds it).
#[derive(Debug, Clone)]
pub struct PivotSpec {
    pub index: Vec<String>,
    pub name_column: String,
    pub format_column: String,
    /// (format, value column), in the file's order of formats.
    pub values: Vec<(String, String)>,
    pub text: bool,
    pub max_columns: usize,
    pub column_groups: Option<PathBuf>,
}
