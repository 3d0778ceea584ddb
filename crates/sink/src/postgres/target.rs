//! A target table planned once per run: its COPY, staging and merge
//! statements for the sink's mode, what the mode needs of the table's
//! columns and key, and whether the source's COPY data fits it as is.

use arrow::datatypes::Field;

use super::forward::copy_target;
use super::PostgresSink;
use crate::spec::SinkMode;
use etl_base::sql::{ident, TableName};
use etl_pg::ddl::CatalogColumn;
use etl_pg::error::EtlError;
use etl_pg::pg_binary::encode::CopyEncoder;
use etl_pg::pg_binary::PgType;

/// A target table, checked against the source schema once per run.
pub(super) struct Target {
    /// `"schema"."table"`, the form the ledger records.
    pub qualified: String,
    /// `None` when the chunk's COPY data comes from the source as is.
    pub encoder: Option<CopyEncoder>,
    /// The source's COPY data fits `copy_sql` as it comes (same columns,
    /// same types, a plain COPY into the table).
    pub copy_ok: bool,
    pub copy_sql: String,
    /// Upsert: the temporary table the chunk is copied into...
    pub stage_sql: Option<String>,
    /// ...and the statement that merges it on the primary key.
    pub merge_sql: Option<String>,
}

impl PostgresSink {
    pub(super) fn primary_key(&self, catalog_pk: Vec<String>) -> Vec<String> {
        match &self.spec.primary_key {
            Some(pk) => pk.clone(),
            None if !catalog_pk.is_empty() => catalog_pk,
            // The source table's key, while transforms keep all its columns.
            None if self
                .ctx
                .source_primary_key
                .iter()
                .all(|c| self.ctx.schema.field_with_name(c).is_ok()) =>
            {
                self.ctx.source_primary_key.clone()
            }
            None => Vec::new(),
        }
    }

    /// What the sink's mode needs of target table `table`: the columns
    /// that select a chunk's rows (append, replace), a primary key the
    /// source has (upsert).
    fn mode_problems(
        &self,
        table: &TableName,
        columns: &[CatalogColumn],
        pk: &[String],
    ) -> Vec<String> {
        let schema = &self.ctx.schema;
        let mode = self.spec.mode;
        let has = |name: &str| columns.iter().any(|c| c.name == name);
        let mut problems = Vec::new();
        if mode != SinkMode::Upsert {
            // The columns that select a chunk's rows (a whole table's chunk
            // needs none: it empties the table).
            let time = Some(self.ctx.chunking.time_column.as_str()).filter(|t| !t.is_empty());
            for c in time
                .into_iter()
                .chain(self.ctx.chunking.key_column.as_deref())
                .chain(self.ctx.chunking.target_range_column())
            {
                if !has(c) {
                    problems.push(format!(
                        "mode {} replaces a chunk's window when the chunk runs again, so target table {table} needs column {c:?}; add it or use mode = \"upsert\"",
                        mode.as_str()
                    ));
                }
            }
        }
        if mode == SinkMode::Upsert {
            if pk.is_empty() {
                problems.push(format!(
                    "mode upsert merges on the primary key, and target table {table} has none; add one or set primary_key in [[sinks]]"
                ));
            }
            for c in pk {
                if schema.field_with_name(c).is_err() {
                    problems.push(format!(
                        "primary key column {c:?} of {table} is not in the source"
                    ));
                }
            }
        }
        problems
    }

    /// The COPY into `qualified`, and for upsert the staging table and
    /// the merge from it on the primary key `pk`.
    fn statements(
        &self,
        qualified: &str,
        pk: &[String],
    ) -> (String, Option<String>, Option<String>) {
        let schema = &self.ctx.schema;
        let column_list = schema
            .fields()
            .iter()
            .map(|f| ident(f.name()))
            .collect::<Vec<_>>()
            .join(", ");
        if self.spec.mode == SinkMode::Upsert {
            let updates: Vec<String> = schema
                .fields()
                .iter()
                .filter(|f| !pk.contains(f.name()))
                .map(|f| format!("{c} = EXCLUDED.{c}", c = ident(f.name())))
                .collect();
            let action = if updates.is_empty() {
                "NOTHING".to_string()
            } else {
                format!("UPDATE SET {}", updates.join(", "))
            };
            let pk_list = pk.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
            (
                format!("COPY etl_stage ({column_list}) FROM STDIN (FORMAT binary)"),
                Some(format!("CREATE TEMP TABLE etl_stage (LIKE {qualified} INCLUDING DEFAULTS) ON COMMIT DROP")),
                Some(format!(
                    "INSERT INTO {qualified} ({column_list}) SELECT {column_list} FROM etl_stage ON CONFLICT ({pk_list}) DO {action}"
                )),
            )
        } else {
            (
                format!("COPY {qualified} ({column_list}) FROM STDIN (FORMAT binary)"),
                None,
                None,
            )
        }
    }

    pub(super) fn plan_target(
        &self,
        table: &TableName,
        columns: &[CatalogColumn],
        catalog_pk: Vec<String>,
    ) -> Result<Target, EtlError> {
        if let Some(copy) = self.ctx.copy.as_ref().filter(|c| c.oids.is_empty()) {
            return copy_target(table, columns, copy);
        }
        let schema = &self.ctx.schema;
        let mut pairs: Vec<(&Field, PgType)> = Vec::new();
        let mut problems = Vec::new();
        for field in schema.fields() {
            match columns.iter().find(|c| c.name == *field.name()) {
                None => problems.push(format!(
                    "column {:?} is in the source but not in target table {table}; add it to the table or leave it out of the source query",
                    field.name()
                )),
                Some(c) => match PgType::from_type_info(&c.info) {
                    Ok(t) => pairs.push((field.as_ref(), t)),
                    Err(e) => problems.push(format!(
                        "target column {:?} of {table} is of type {}, which etl cannot write",
                        c.name, e.type_name
                    )),
                },
            }
        }
        let encoder_input: Vec<(&Field, &PgType)> = pairs.iter().map(|(f, t)| (*f, t)).collect();
        let encoder = match CopyEncoder::new(&encoder_input) {
            Ok(e) => Some(e),
            Err(e) => {
                problems.push(format!("{e} (target table {table})"));
                None
            }
        };
        let mode = self.spec.mode;
        let pk = self.primary_key(catalog_pk);
        problems.extend(self.mode_problems(table, columns, &pk));
        if !problems.is_empty() {
            return Err(EtlError::Config(problems.join("\n  ")));
        }
        // The source's bytes fit when every column is of the type the
        // source sends: binary COPY data is per type. Built-in types only:
        // their binary form is the same on every server (a user type's OID
        // is the same on two servers only by chance).
        let copy_ok = mode != SinkMode::Upsert
            && self.ctx.copy.as_ref().is_some_and(|copy| {
                copy.columns.len() == copy.oids.len()
                    && copy.columns.iter().zip(&copy.oids).all(|(name, oid)| {
                        *oid < 16384
                            && columns
                                .iter()
                                .any(|c| c.name == *name && c.info.oid == *oid)
                    })
            });
        let qualified = table.qualified();
        let (copy_sql, stage_sql, merge_sql) = self.statements(&qualified, &pk);
        Ok(Target {
            qualified,
            encoder: Some(encoder.expect("no problems means the encoder was planned")),
            copy_ok,
            copy_sql,
            stage_sql,
            merge_sql,
        })
    }
}
