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

    /// One chunk compared: the source's checksum in SQL with the same in
    /// the target table, or the chunk's rows as the run gives them, hashed
    /// as this table stores them, with the table's rows read back (a
    /// pivot's wide tables compare cell by cell).
    pub(super) async fn verify_chunk(
        &self,
        chunk: &Chunk,
        source: SourceSide,
    ) -> Result<etl_model::verify::Comparison, EtlError> {
        let table = self.table_for(chunk)?;
        if !self.selects(chunk) {
            return Err(EtlError::Config(format!(
                "chunk {chunk}: target table {table} has no column that tells this chunk's rows from the others' \
                 (a file read whole, a byte range of a file); verify compares chunks cut by time ([chunks] time_column) or by key"
            )));
        }
        let filter = if chunk.is_whole() {
            "true".to_string()
        } else {
            self.filter(chunk)
        };
        let client = self.pool.get().await?;
        let compared = match (source, &self.wide) {
            (SourceSide::Rows(rows), Some(wide)) => wide.verify(&client, &table, chunk, rows).await,
            (SourceSide::Checksum(expected), None) => {
                let target = match read_columns(&client, &table).await? {
                    None => None,
                    Some(_) => {
                        let sql = etl_model::verify::sql(
                            &self.verified_columns(),
                            &table.qualified(),
                            &filter,
                        );
                        let row = client.query_one(&sql, &[]).await.map_err(EtlError::pg(
                            format!("checksumming chunk {chunk} in {}", table.qualified()),
                        ))?;
                        Some(etl_model::verify::Checksum {
                            rows: row.get::<_, i64>(0) as u64,
                            sum: row.get(1),
                        })
                    }
                };
                Ok(etl_model::verify::Comparison {
                    source: expected,
                    target,
                })
            }
            (SourceSide::Batches(batches), None) => {
                self.compare_batches(&client, &table, chunk, &filter, batches)
                    .await
            }
            _ => Err(EtlError::Bug(format!(
                "chunk {chunk}: the source's side does not match what the PostgreSQL sink compares by"
            ))),
        };
        self.pool.put(client);
        compared
    }

    /// Whether the table's columns tell `chunk`'s rows from the others':
    /// a whole table, a time window, a range of a key.
    fn selects(&self, chunk: &Chunk) -> bool {
        chunk.is_whole()
            || self.ctx.chunking.range_column.is_some()
            || (chunk.unit == etl_base::plan::Unit::Time
                && !self.ctx.chunking.time_column.is_empty())
    }

    /// The chunk's rows as the run gives them, each batch as the table
    /// stores it ([`CopyEncoder::stored`]), hashed while the table's rows
    /// of the chunk are read back in binary and hashed alike.
    async fn compare_batches(
        &self,
        client: &Client,
        table: &TableName,
        chunk: &Chunk,
        filter: &str,
        mut batches: etl_model::BatchStream,
    ) -> Result<etl_model::verify::Comparison, EtlError> {
        use futures_util::StreamExt;
        let Some(columns) = read_columns(client, table).await? else {
            // No table: the source's rows are counted and hashed as they come.
            let mut expected = etl_model::verify::ArrowChecksum::new();
            while let Some(batch) = batches.next().await {
                expected.add(&batch?)?;
            }
            return Ok(etl_model::verify::Comparison {
                source: expected.finish(),
                target: None,
            });
        };
        let target = self.checked_target(client, table).await?;
        let encoder = target.encoder.as_ref().ok_or_else(|| {
            EtlError::Bug(format!(
                "target table {table} takes COPY data as is and has no encoder"
            ))
        })?;
        let expected = async {
            let mut sum = etl_model::verify::ArrowChecksum::new();
            while let Some(batch) = batches.next().await {
                let stored = encoder.stored(&batch?).map_err(|e| {
                    EtlError::Config(format!("chunk {chunk} as {table} stores it: {e}"))
                })?;
                sum.add(&stored)?;
            }
            Ok::<_, EtlError>(sum.finish())
        };
        let (expected, found) = tokio::join!(
            expected,
            self.read_back(table, &columns, encoder.stored_schema(), filter)
        );
        Ok(etl_model::verify::Comparison {
            source: expected?,
            target: Some(found?),
        })
    }

    /// The checksum of the table's rows where `filter`, read in binary
    /// and decoded as the run would decode them, on a connection of its own.
    async fn read_back(
        &self,
        table: &TableName,
        columns: &[CatalogColumn],
        schema: arrow::datatypes::SchemaRef,
        filter: &str,
    ) -> Result<etl_model::verify::Checksum, EtlError> {
        use futures_util::StreamExt;
        let mut types = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let column = columns.iter().find(|c| c.name == *field.name());
            let t = column
                .map(|c| PgType::from_type_info(&c.info))
                .transpose()
                .map_err(|e| EtlError::Config(format!("{table}: {e}")))?;
            types.push(t.ok_or_else(|| {
                EtlError::Changed(format!("column {:?} of {table} is gone", field.name()))
            })?);
        }
        let list = schema
            .fields()
            .iter()
            .map(|f| ident(f.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "COPY (SELECT {list} FROM {} WHERE {filter}) TO STDOUT (FORMAT binary)",
            table.qualified()
        );
        let context = format!("reading back {} where {filter}", table.qualified());
        let client = self.pool.get().await?;
        let mut decoder =
            etl_pg::pg_binary::decode::CopyDecoder::new(schema, &types, 8192, 8 << 20);
        let mut sum = etl_model::verify::ArrowChecksum::new();
        let decoded =
            |e: etl_pg::pg_binary::decode::DecodeError| EtlError::Bug(format!("{context}: {e}"));
        let stream = client
            .copy_out(&sql)
            .await
            .map_err(EtlError::pg(context.clone()))?;
        let mut stream = std::pin::pin!(stream);
        while let Some(bytes) = stream.next().await {
            decoder
                .feed(&bytes.map_err(EtlError::pg(context.clone()))?)
                .map_err(decoded)?;
            while let Some(batch) = decoder.next_batch().map_err(decoded)? {
                sum.add(&batch)?;
            }
        }
        while let Some(batch) = decoder.finish().map_err(decoded)? {
            sum.add(&batch)?;
        }
        self.pool.put(client);
        Ok(sum.finish())
    }
}
