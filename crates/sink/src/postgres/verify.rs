//! `etl verify` against a PostgreSQL target: a chunk's checksum (or
//! count, for sources without SQL) in the source and in the table.

use super::*;
use etl_model::verify::{Basis, SourceSide};

impl Verifiable for PostgresSink {
    /// What one chunk is compared by: a pivot's wide tables cell by cell
    /// (queries over the source's rows), else a checksum of the columns.
    fn basis(&self, _chunk: &Chunk) -> Result<Basis, EtlError> {
        if let Some(wide) = &self.wide {
            return Ok(Basis::Queries(wide.verify_queries()?));
        }
        Ok(Basis::Sql {
            columns: self.verified_columns(),
        })
    }
}

impl PostgresSink {
    /// The columns a chunk's checksum covers: every column the sink writes.
    fn verified_columns(&self) -> Vec<String> {
        self.ctx
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// One chunk compared: the source's checksum (or count, for sources
    /// without SQL) with the same in the target table (a pivot's wide
    /// tables compare cell by cell).
    pub(super) async fn verify_chunk(
        &self,
        chunk: &Chunk,
        source: SourceSide,
    ) -> Result<etl_model::verify::Comparison, EtlError> {
        let table = self.table_for(chunk)?;
        let (expected, counts_only) = match (source, &self.wide) {
            (SourceSide::Rows(rows), Some(wide)) => {
                let client = self.pool.get().await?;
                let comparison = wide.verify(&client, &table, chunk, rows).await?;
                self.pool.put(client);
                return Ok(comparison);
            }
            (SourceSide::Checksum(sum), None) => (sum, false),
            (SourceSide::Count(rows), None) => (
                etl_model::verify::Checksum {
                    rows,
                    sum: String::new(),
                },
                true,
            ),
            _ => {
                return Err(EtlError::Bug(format!(
                    "chunk {chunk}: the source's side does not match what the PostgreSQL sink compares by"
                )))
            }
        };
        let columns = self.verified_columns();
        let client = self.pool.get().await?;
        let target = match read_columns(&client, &table).await? {
            None => None,
            Some(_) => {
                let filter = if chunk.is_whole() {
                    "true".to_string()
                } else {
                    self.filter(chunk)
                };
                let sql = if counts_only {
                    format!(
                        "SELECT count(*)::int8, '' FROM {} WHERE {filter}",
                        table.qualified()
                    )
                } else {
                    etl_model::verify::sql(&columns, &table.qualified(), &filter)
                };
                let row = client
                    .query_one(&sql, &[])
                    .await
                    .map_err(EtlError::pg(format!(
                        "checksumming chunk {chunk} in {}",
                        table.qualified()
                    )))?;
                Some(etl_model::verify::Checksum {
                    rows: row.get::<_, i64>(0) as u64,
                    sum: row.get(1),
                })
            }
        };
        self.pool.put(client);
        Ok(etl_model::verify::Comparison {
            source: expected,
            target,
            counts_only,
        })
    }
}
