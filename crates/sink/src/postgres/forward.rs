//! The target of a chunk whose COPY data is forwarded from a PostgreSQL
//! source as it arrives (no Arrow in between).

use super::{CatalogColumn, Target};
use etl_base::sql::{ident, TableName};
use etl_pg::error::EtlError;

/// The target of COPY data forwarded from the source: every column the
/// source sends must be in the table; the server checks the values.
pub(super) fn copy_target(
    table: &TableName,
    columns: &[CatalogColumn],
    copy: &etl_model::CopyThrough,
) -> Result<Target, EtlError> {
    let missing: Vec<&String> = copy
        .columns
        .iter()
        .filter(|c| !columns.iter().any(|t| t.name == **c))
        .collect();
    if !missing.is_empty() {
        return Err(EtlError::Config(format!(
            "target table {table} has no column {missing:?}, which the source table has; add them to the target (or leave the table out with source.exclude)"
        )));
    }
    let list: Vec<String> = copy.columns.iter().map(|c| ident(c)).collect();
    let qualified = table.qualified();
    Ok(Target {
        copy_sql: format!(
            "COPY {qualified} ({}) FROM STDIN (FORMAT {})",
            list.join(", "),
            copy.format.sql()
        ),
        qualified,
        encoder: None,
        copy_ok: true,
        stage_sql: None,
        merge_sql: None,
    })
}
