//! `etl verify` against a PostgreSQL target: a chunk's checksum (or
//! count, for sources without SQL) in the source and in the table.

use super::*;

impl PostgresSink {
    /// One chunk compared: a checksum (or a count) of its rows in the
    /// source and in the target table (a pivot's wide tables compare
    /// cell by cell).
    pub(super) async fn verify_chunk(
        &self,
        chunk: &Chunk,
        source: &dyn crate::source::Source,
    ) -> Result<crate::verify::Comparison, EtlError> {
        if let Some(wide) = &self.wide {
            let table = self.table_for(chunk)?;
            let client = self.pool.get().await?;
            let comparison = wide.verify(&client, &table, chunk, source).await?;
            self.pool.put(client);
            return Ok(comparison);
        }
        let columns: Vec<String> = self
            .ctx
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let table = self.table_for(chunk)?;
        // A source without SQL checksums (ODBC) is compared by counts.
        let (expected, counts_only) = match source.sql_checksum(chunk, &columns).await? {
            Some(sum) => (sum, false),
            None => match source.count(chunk).await? {
                Some(rows) => (
                    crate::verify::Checksum {
                        rows,
                        sum: String::new(),
                    },
                    true,
                ),
                None => {
                    return Err(EtlError::Schema(
                        "this source can neither checksum nor count a chunk's rows; verify supports PostgreSQL, ODBC and Access sources, and CSV files read in time windows ([chunks] time_column), not byte ranges"
                            .into(),
                    ))
                }
            },
        };
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
                    crate::verify::sql(&columns, &table.qualified(), &filter)
                };
                let row = client
                    .query_one(&sql, &[])
                    .await
                    .map_err(EtlError::pg(format!(
                        "checksumming chunk {chunk} in {}",
                        table.qualified()
                    )))?;
                Some(crate::verify::Checksum {
                    rows: row.get::<_, i64>(0) as u64,
                    sum: row.get(1),
                })
            }
        };
        self.pool.put(client);
        Ok(crate::verify::Comparison {
            source: expected,
            target,
            counts_only,
        })
    }
}
