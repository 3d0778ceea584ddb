//! `etl verify` against a PostgreSQL target: a chunk's checksum (or
//! count, for sources without SQL) in the source and in the table.

use super::*;
use etl_model::verify::{ArrowChecksum, Basis, Checksum, CopyChecksum, Recorded, SourceSide};

#[async_trait]
impl Verifiable for PostgresSink {
    /// What one chunk is compared by: a pivot's wide tables cell by cell
    /// (queries over the source's rows); a table that takes the source's
    /// COPY data as is by that data, row by row; else the chunk's rows as
    /// the run gives them, as the table stores them.
    async fn basis(&self, chunk: &Chunk) -> Result<Basis, EtlError> {
        if let Some(wide) = &self.wide {
            return Ok(Basis::Queries(wide.verify_queries()?));
        }
        let table = self.table_for(chunk)?;
        let client = self.pool.get().await?;
        let copy = match read_columns(&client, &table).await? {
            Some(_) => self.checked_target(&client, &table).await?.copy_ok,
            None => false,
        };
        self.pool.put(client);
        Ok(if copy { Basis::Copy } else { Basis::Rows })
    }
}

impl PostgresSink {
    /// One chunk compared: the chunk's rows as the run gives them, hashed
    /// as this table stores them, or the source's COPY data hashed row by
    /// row, each beside the table's rows of the chunk read back at the same
    /// time (a pivot's wide tables compare cell by cell).
    pub(super) async fn verify_chunk(
        &self,
        chunk: &Chunk,
        source: SourceSide,
    ) -> Result<Comparison, EtlError> {
        let (table, filter) = self.chunk_rows(chunk)?;
        match (source, &self.wide) {
            (SourceSide::Rows(rows), Some(wide)) => {
                let client = self.pool.get().await?;
                let compared = wide.verify(&client, &table, chunk, rows).await;
                self.pool.put(client);
                compared
            }
            (SourceSide::Batches(batches), None) => {
                self.compare_batches(&table, chunk, &filter, batches).await
            }
            (SourceSide::Copy(data), None) => {
                self.compare_copy(&table, chunk, &filter, data).await
            }
            _ => Err(EtlError::Bug(format!(
                "chunk {chunk}: the source's side does not match what the PostgreSQL sink compares by"
            ))),
        }
    }

    /// The chunk's rows in the table now, hashed as its writer hashed what
    /// it committed, against the checksum recorded in the ledger; several
    /// chunks the table cannot tell apart: the whole table against their
    /// records added up.
    pub(super) async fn verify_against_record(
        &self,
        chunks: &[Chunk],
    ) -> Result<Option<Comparison>, EtlError> {
        if self.wide.is_some() {
            return Err(EtlError::Config(
                "etl verify --quick compares plain tables with the checksums their chunks recorded; a pivot's wide tables record none: run etl verify without --quick".into(),
            ));
        }
        let (table, filter) = match chunks {
            [chunk] if self.selects_rows(chunk) => self.chunk_rows(chunk)?,
            [first, ..] => (self.table_for(first)?, "true".to_string()),
            [] => return Ok(None),
        };
        let client = self.pool.get().await?;
        let mut recorded: Option<Recorded> = None;
        for chunk in chunks {
            let found = self
                .ledger
                .recorded(&client, &table.qualified(), chunk)
                .await?
                .and_then(|text| Recorded::parse(&text));
            // Chunks of different kinds do not add up: none to compare with.
            recorded = match (recorded, found) {
                (None, Some(r)) => Some(r),
                (Some(sum), Some(r)) => sum.plus(&r),
                (_, None) => None,
            };
            if recorded.is_none() {
                self.pool.put(client);
                return Ok(None);
            }
        }
        let recorded = recorded.expect("at least one chunk, each recorded");
        let Some(columns) = read_columns(&client, &table).await? else {
            self.pool.put(client);
            return Ok(Some(Comparison {
                source: recorded.checksum().clone(),
                target: None,
            }));
        };
        let stored = match &recorded {
            Recorded::Copy(_) => None,
            Recorded::Rows(_) => {
                let target = self.checked_target(&client, &table).await?;
                let encoder = target.encoder.as_ref().ok_or_else(|| {
                    EtlError::Bug(format!(
                        "target table {table} recorded rows but has no encoder"
                    ))
                })?;
                Some(encoder.stored_schema())
            }
        };
        // One chunk of several, or several chunks together (the table whole).
        let found = match chunks {
            [chunk] => {
                self.target_sum(&table, &columns, chunk, &filter, stored)
                    .await?
            }
            _ => {
                let whole = Chunk::whole(chunks[0].key.clone());
                self.target_sum(&table, &columns, &whole, &filter, stored)
                    .await?
            }
        };
        self.pool.put(client);
        Ok(Some(Comparison {
            source: recorded.checksum().clone(),
            target: Some(found),
        }))
    }

    /// The chunk's table and the condition that selects its rows there;
    /// an error saying why when the table cannot tell them apart.
    fn chunk_rows(&self, chunk: &Chunk) -> Result<(TableName, String), EtlError> {
        let table = self.table_for(chunk)?;
        if !self.selects_rows(chunk) {
            return Err(EtlError::Config(format!(
                "chunk {chunk}: target table {table} has no column that tells this chunk's rows from the others' \
                 (a file read whole, a byte range of a file); verify --quick compares chunks cut by time ([chunks] time_column) or by key: run etl verify without --quick"
            )));
        }
        let filter = match chunk.is_whole() {
            true => "true".to_string(),
            false => self.filter(chunk),
        };
        Ok((table, filter))
    }

    /// Whether the table's columns tell `chunk`'s rows from the others':
    /// a whole table, a time window, a range of a key.
    pub(super) fn selects_rows(&self, chunk: &Chunk) -> bool {
        chunk.is_whole()
            || self.ctx.chunking.target_range_column().is_some()
            || (chunk.unit == etl_base::plan::Unit::Time
                && !self.ctx.chunking.time_column.is_empty())
    }

    /// The chunk's rows as the run gives them, each batch as the table
    /// stores it ([`CopyEncoder::stored`]), hashed while the table's rows
    /// of the chunk are read back in binary and hashed alike. No connection
    /// is held while they are (a chunk may wait for its table's one read,
    /// which needs one).
    async fn compare_batches(
        &self,
        table: &TableName,
        chunk: &Chunk,
        filter: &str,
        mut batches: etl_model::BatchStream,
    ) -> Result<Comparison, EtlError> {
        use futures_util::StreamExt;
        let client = self.pool.get().await?;
        let columns = read_columns(&client, table).await?;
        let target = match &columns {
            Some(_) => Some(self.checked_target(&client, table).await?),
            None => None,
        };
        self.pool.put(client);
        let (Some(columns), Some(target)) = (columns, target) else {
            // No table: the source's rows are counted and hashed as they come.
            let mut expected = ArrowChecksum::new();
            while let Some(batch) = batches.next().await {
                expected.add(&batch?)?;
            }
            return Ok(Comparison {
                source: expected.finish(),
                target: None,
            });
        };
        let encoder = target.encoder.as_ref().ok_or_else(|| {
            EtlError::Bug(format!(
                "target table {table} takes COPY data as is and has no encoder"
            ))
        })?;
        let expected = async {
            let mut sum = ArrowChecksum::new();
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
            self.target_sum(
                table,
                &columns,
                chunk,
                filter,
                Some(encoder.stored_schema())
            )
        );
        Ok(Comparison {
            source: expected?,
            target: Some(found?),
        })
    }

    /// The source's COPY data and the table's rows where `filter`, both
    /// in binary, hashed row by row at the same time.
    async fn compare_copy(
        &self,
        table: &TableName,
        chunk: &Chunk,
        filter: &str,
        mut data: etl_model::CopyStream,
    ) -> Result<Comparison, EtlError> {
        use futures_util::StreamExt;
        let client = self.pool.get().await?;
        let columns = read_columns(&client, table).await?;
        self.pool.put(client);
        let Some(columns) = columns else {
            return Err(EtlError::Changed(format!("target table {table} is gone")));
        };
        let expected = async {
            let mut sum = CopyChecksum::new();
            while let Some(piece) = data.next().await {
                sum.feed(&piece?)?;
            }
            sum.finish()
        };
        let (expected, found) = tokio::join!(
            expected,
            self.target_sum(table, &columns, chunk, filter, None)
        );
        Ok(Comparison {
            source: expected?,
            target: Some(found?),
        })
    }

    /// The table's rows where `filter` in binary COPY data, each piece
    /// handed to `take`, on a connection of its own. The columns are the
    /// sink's, in its order.
    pub(super) async fn read_back(
        &self,
        table: &TableName,
        columns: &[CatalogColumn],
        filter: &str,
        mut take: impl FnMut(&[u8]) -> Result<(), EtlError>,
    ) -> Result<(), EtlError> {
        use futures_util::StreamExt;
        let mut list = Vec::new();
        for field in self.ctx.schema.fields() {
            if !columns.iter().any(|c| c.name == *field.name()) {
                return Err(EtlError::Changed(format!(
                    "column {:?} of {table} is gone",
                    field.name()
                )));
            }
            list.push(ident(field.name()));
        }
        let sql = format!(
            "COPY (SELECT {} FROM {} WHERE {filter}) TO STDOUT (FORMAT binary)",
            list.join(", "),
            table.qualified()
        );
        let context = format!("reading back {} where {filter}", table.qualified());
        let client = self.pool.get().await?;
        let stream = client
            .copy_out(&sql)
            .await
            .map_err(EtlError::pg(context.clone()))?;
        let mut stream = std::pin::pin!(stream);
        while let Some(piece) = stream.next().await {
            take(&piece.map_err(EtlError::pg(context.clone()))?)?;
        }
        self.pool.put(client);
        Ok(())
    }

    /// The table's rows where `filter`, decoded as a run decodes them
    /// and hashed as Arrow rows.
    pub(super) async fn read_back_rows(
        &self,
        table: &TableName,
        columns: &[CatalogColumn],
        schema: arrow::datatypes::SchemaRef,
        filter: &str,
    ) -> Result<Checksum, EtlError> {
        let mut decoder = read_back_decoder(table, columns, schema)?;
        let mut sum = ArrowChecksum::new();
        let decoded = |e: etl_pg::pg_binary::decode::DecodeError| {
            EtlError::Bug(format!("reading back {table}: {e}"))
        };
        self.read_back(table, columns, filter, |piece| {
            decoder.feed(piece).map_err(decoded)?;
            while let Some(batch) = decoder.next_batch().map_err(decoded)? {
                sum.add(&batch)?;
            }
            Ok(())
        })
        .await?;
        while let Some(batch) = decoder.finish().map_err(decoded)? {
            sum.add(&batch)?;
        }
        Ok(sum.finish())
    }
}

/// A decoder of the table's rows read back in `schema` (the sink's columns
/// as the table stores them), each column by its type in the table.
pub(super) fn read_back_decoder(
    table: &TableName,
    columns: &[CatalogColumn],
    schema: arrow::datatypes::SchemaRef,
) -> Result<etl_pg::pg_binary::decode::CopyDecoder, EtlError> {
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
    Ok(etl_pg::pg_binary::decode::CopyDecoder::new(
        schema,
        &types,
        8192,
        8 << 20,
    ))
}
