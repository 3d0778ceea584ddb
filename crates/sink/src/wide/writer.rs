//! One chunk's writer into a key's wide tables: the layout made room for
//! under the base table's lock, then the wide rows split into parts and
//! copied (or merged, for upsert), all in the chunk's transaction.

use super::*;
use etl_model::wide::WideColumns;

impl Wide {
    /// A writer for one chunk; nothing is sent until its first batch (or commit).
    pub fn writer(
        self: &Arc<Self>,
        client: etl_pg::Conn,
        pool: Arc<Pool>,
        base: TableName,
        chunk: Chunk,
    ) -> WideWriter {
        WideWriter {
            wide: self.clone(),
            client,
            pool,
            base,
            chunk,
            started: None,
            rows: 0,
            bytes: 0,
        }
    }
}

/// A chunk's transaction once open: the layout it writes by.
struct Started {
    layout: Layout,
    /// Channel columns per part, for the merge.
    merged: BTreeMap<String, BTreeSet<String>>,
    /// Upsert: each part's temporary table.
    stages: BTreeMap<String, String>,
    /// Channels recorded in `etl.wide_text_pending` for this chunk.
    pending: BTreeSet<String>,
}

pub struct WideWriter {
    wide: Arc<Wide>,
    client: etl_pg::Conn,
    pool: Arc<Pool>,
    base: TableName,
    chunk: Chunk,
    started: Option<Started>,
    rows: u64,
    bytes: u64,
}

impl WideWriter {
    fn context(&self, what: &str) -> String {
        format!("{what} for chunk {} into {}", self.chunk, self.base)
    }

    /// Makes the layout hold the chunk's channels, then opens the chunk's
    /// transaction (and, for append and replace, clears a window loaded before).
    async fn start(&mut self, channels: &[(String, Kind)]) -> Result<(), EtlError> {
        let w = self.wide.clone();
        // Columns for the chunk's channels first (their own transaction).
        w.make_room(&self.client, &self.base, channels).await?;
        let base_q = self.base.qualified();
        let begun = self
            .client
            .batch_execute(&format!("BEGIN; {}", w.spec.timeouts.set_local()))
            .await
            .map_err(EtlError::pg(self.context("starting the transaction")));
        begun?;
        let layout = self.locked_layout(&w, &base_q, channels).await?;
        let stages = match w.spec.mode {
            SinkMode::Upsert => self.stages(&layout).await?,
            _ => {
                self.clear_window(&w, &base_q, &layout).await?;
                BTreeMap::new()
            }
        };
        text::record_pending(
            SchemaClient::new(&self.client, &w.spec.ledger_schema),
            &w.pipeline,
            &base_q,
            &self.chunk,
            &[],
        )
        .await
        .map_err(EtlError::pg(self.context("clearing etl.wide_text_pending")))?;
        self.started = Some(Started {
            pending: BTreeSet::new(),
            layout,
            merged: BTreeMap::new(),
            stages,
        });
        Ok(())
    }

    /// The layout, read again under the layout lock held shared until
    /// commit: another process (or worker) may have widened a column or
    /// added a part since the layout was cached, and binary COPY would send
    /// values of the old type. Every one of `channels` must have its column.
    async fn locked_layout(
        &self,
        w: &Wide,
        base_q: &str,
        channels: &[(String, Kind)],
    ) -> Result<Layout, EtlError> {
        let locked = self
            .client
            .batch_execute(&format!(
                "SELECT pg_advisory_xact_lock_shared(hashtext({}))",
                layout_lock(base_q)
            ))
            .await
            .map_err(EtlError::pg(
                self.context("waiting for the wide tables' layout"),
            ));
        if let Err(e) = locked {
            return Err(
                explain_busy(&self.client, base_q, w.spec.timeouts.lock_timeout_secs, e).await,
            );
        }
        let layout = w.load(&self.client, &self.base).await?;
        for (channel, kind) in channels {
            if layout.channels.get(channel).is_none_or(|p| p.kind < *kind) {
                return Err(EtlError::Bug(format!(
                    "channel {channel:?} lost its column in {base_q} while the chunk started"
                )));
            }
        }
        w.layouts
            .lock()
            .await
            .insert(base_q.to_string(), layout.clone());
        Ok(layout)
    }

    /// Upsert: each part's temporary table, dropped at commit.
    async fn stages(&self, layout: &Layout) -> Result<BTreeMap<String, String>, EtlError> {
        let mut stages = BTreeMap::new();
        for (i, part) in layout.parts.keys().enumerate() {
            let stage = format!("etl_stage_{i}");
            let sql = format!(
                "CREATE TEMP TABLE {stage} (LIKE {part} INCLUDING DEFAULTS) ON COMMIT DROP"
            );
            self.client
                .batch_execute(&sql)
                .await
                .map_err(EtlError::pg(self.context("creating a staging table")))?;
            stages.insert(part.clone(), stage);
        }
        Ok(stages)
    }

    /// Append and replace: the rows a chunk of an overlapping window loaded
    /// before, deleted from every part.
    async fn clear_window(&self, w: &Wide, base_q: &str, layout: &Layout) -> Result<(), EtlError> {
        if !w
            .ledger
            .lock_window(&self.client, base_q, &self.chunk)
            .await?
        {
            return Ok(());
        }
        let filter = chunk_filter(
            &w.time_column,
            w.time_has_zone,
            w.key_column.as_deref(),
            &self.chunk,
        );
        for part in layout.parts.keys() {
            let deleted = self
                .client
                .execute(&format!("DELETE FROM {part} WHERE {filter}"), &[])
                .await;
            if let Err(e) = deleted {
                let e = EtlError::pg(self.context("deleting the window's earlier rows"))(e);
                return Err(
                    explain_busy(&self.client, part, w.spec.timeouts.lock_timeout_secs, e).await,
                );
            }
        }
        Ok(())
    }

    async fn copy(
        &mut self,
        target: &str,
        columns: &[String],
        data: Bytes,
    ) -> Result<(), EtlError> {
        let sql = format!(
            "COPY {target} ({}) FROM STDIN (FORMAT binary)",
            columns
                .iter()
                .map(|c| ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let context = self.context(&format!("copying into {target}"));
        let sink: CopyInSink<Bytes> = self
            .client
            .copy_in(&sql)
            .await
            .map_err(EtlError::pg(context.clone()))?;
        let mut sink = Box::pin(sink);
        self.bytes += data.len() as u64;
        Pin::as_mut(&mut sink)
            .send(data)
            .await
            .map_err(EtlError::pg(context.clone()))?;
        sink.as_mut()
            .finish()
            .await
            .map_err(EtlError::pg(context))?;
        Ok(())
    }
}

/// A part's target column, the batch column it comes from, and its kind.
type PartColumns = Vec<(String, usize, Kind)>;

impl WideWriter {
    /// Records the batch's numbers that could print otherwise as text, so
    /// the chunk runs again once their column is text (also when another
    /// worker widened it after this chunk's pivot asked).
    async fn record_ambiguous(&mut self, columns: &WideColumns) -> Result<(), EtlError> {
        let started = self.started.as_ref().expect("started before writing");
        let ambiguous: Vec<&str> = columns
            .ambiguous
            .iter()
            .filter(|c| !started.pending.contains(*c))
            .map(String::as_str)
            .collect();
        if ambiguous.is_empty() {
            return Ok(());
        }
        text::record_pending(
            SchemaClient::new(&self.client, &self.wide.spec.ledger_schema),
            &self.wide.pipeline,
            &self.base.qualified(),
            &self.chunk,
            &ambiguous,
        )
        .await
        .map_err(EtlError::pg(
            self.context("recording etl.wide_text_pending"),
        ))?;
        let owned: Vec<String> = ambiguous.iter().map(|c| c.to_string()).collect();
        let started = self.started.as_mut().expect("started before writing");
        started.pending.extend(owned);
        Ok(())
    }

    /// The batch's value columns, by the part of the layout they go to.
    fn per_part(&self, columns: &WideColumns) -> Result<BTreeMap<String, PartColumns>, EtlError> {
        let layout = &self
            .started
            .as_ref()
            .expect("started before writing")
            .layout;
        let mut per_part: BTreeMap<String, PartColumns> = layout
            .parts
            .keys()
            .map(|p| (p.clone(), Vec::new()))
            .collect();
        for (at, channel, _) in &columns.values {
            let place = layout.channels.get(channel).ok_or_else(|| {
                EtlError::Bug(format!(
                    "channel {channel:?} has no column after the layout was made"
                ))
            })?;
            per_part
                .get_mut(&place.part)
                .ok_or_else(|| {
                    EtlError::Bug(format!("part {} missing from the layout", place.part))
                })?
                .push((place.column.clone(), *at, place.kind));
        }
        Ok(per_part)
    }

    /// One part's rows of the batch as binary COPY data: the index
    /// columns, then the part's channel columns. Returns the column names
    /// with the data.
    fn encode_part(
        &self,
        batch: &RecordBatch,
        columns: &WideColumns,
        part: &str,
        cols: &PartColumns,
    ) -> Result<(Vec<String>, Bytes), EtlError> {
        let started = self.started.as_ref().expect("started before writing");
        let part_info = &started.layout.parts[part];
        let mut fields: Vec<Field> = Vec::new();
        let mut types: Vec<PgType> = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        let mut names = Vec::new();
        for (i, f) in self.wide.wide.index.iter().enumerate() {
            let c = part_info
                .columns
                .iter()
                .find(|c| c.name == *f.name())
                .ok_or_else(|| {
                    EtlError::Config(format!(
                        "wide table {part} has no index column {:?}",
                        f.name()
                    ))
                })?;
            let t = PgType::from_type_info(&c.info).map_err(|e| {
                EtlError::Bug(format!("index column {:?} of {part}: {e}", f.name()))
            })?;
            fields.push(f.as_ref().clone());
            types.push(t);
            arrays.push(batch.column(columns.index[i]).clone());
            names.push(f.name().clone());
        }
        for (column, at, kind) in cols {
            let a = etl_model::wide::conform(batch.column(*at), *kind)?;
            fields.push(Field::new(column, a.data_type().clone(), true));
            types.push(pg_type(*kind));
            arrays.push(a);
            names.push(column.clone());
        }
        let pairs: Vec<(&Field, &PgType)> = fields.iter().zip(&types).collect();
        let encoder = CopyEncoder::new(&pairs)
            .map_err(|e| EtlError::Bug(format!("{e} (wide table {part})")))?;
        let projected = RecordBatch::try_new(Arc::new(Schema::new(fields.clone())), arrays)
            .map_err(|e| EtlError::Bug(format!("projecting a wide batch: {e}")))?;
        let mut buf = BytesMut::new();
        CopyEncoder::write_header(&mut buf);
        encoder.write_batch(&projected, &mut buf)?;
        CopyEncoder::write_footer(&mut buf);
        Ok((names, buf.freeze()))
    }
}

#[async_trait::async_trait]
impl ChunkWriter for WideWriter {
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), EtlError> {
        let schema = batch.schema();
        let columns = self
            .wide
            .wide
            .layout
            .columns(&schema, &format!("chunk {}", self.chunk))?;
        if self.started.is_none() {
            let channels: Vec<(String, Kind)> = columns
                .values
                .iter()
                .map(|(_, name, kind)| (name.clone(), *kind))
                .collect();
            self.start(&channels).await?;
        }
        self.record_ambiguous(&columns).await?;
        let mut copies = Vec::new();
        for (part, cols) in self.per_part(&columns)? {
            let (names, data) = self.encode_part(batch, &columns, &part, &cols)?;
            copies.push((part, names, cols, data));
        }
        for (part, names, cols, data) in copies {
            let started = self.started.as_ref().expect("started above");
            let target = started
                .stages
                .get(&part)
                .cloned()
                .unwrap_or_else(|| part.clone());
            self.copy(&target, &names, data).await?;
            let started = self.started.as_mut().expect("started above");
            started
                .merged
                .entry(part)
                .or_default()
                .extend(cols.into_iter().map(|(c, _, _)| c));
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<ChunkStats, EtlError> {
        if self.started.is_none() {
            self.start(&[]).await?;
        }
        let started = self.started.take().expect("started above");
        let index = self.wide.index_names();
        let index_list = index
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        for (part, stage) in &started.stages {
            let Some(columns) = started.merged.get(part) else {
                continue;
            };
            let all: Vec<String> = index.iter().chain(columns).map(|c| ident(c)).collect();
            let list = all.join(", ");
            // Values a chunk lacks (NULL) keep what the table has.
            let action = if columns.is_empty() {
                "NOTHING".to_string()
            } else {
                format!(
                    "UPDATE SET {}",
                    columns
                        .iter()
                        .map(|c| format!("{c} = COALESCE(EXCLUDED.{c}, t.{c})", c = ident(c)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let sql = format!(
                "INSERT INTO {part} AS t ({list}) SELECT {list} FROM {stage} ON CONFLICT ({index_list}) DO {action}"
            );
            let context = self.context(&format!("merging staged rows into {part}"));
            self.client
                .execute(&sql, &[])
                .await
                .map_err(EtlError::pg(context))?;
        }
        let base_q = self.base.qualified();
        self.wide
            .ledger
            .commit_done(&self.client, &base_q, &self.chunk, self.rows, None)
            .await?;
        let WideWriter {
            client,
            pool,
            rows,
            bytes,
            ..
        } = *self;
        pool.put(client);
        Ok(ChunkStats { rows, bytes })
    }
}
