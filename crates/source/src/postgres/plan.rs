//! The PostgreSQL source's plans: windows counted in one scan, windows
//! found through an index without counting, or the relation whole.

use super::*;

impl PostgresSource {
    /// Windows of `chunking.interval` (per key), counted in one scan.
    pub(super) async fn plan_windows(&self, chunking: &Chunking) -> Result<Plan, EtlError> {
        // One scan: rows binned into windows aligned to the configured start,
        // or else to whole intervals since 1970-01-01 UTC. Rows with a NULL
        // or infinite time, or outside [start, end), get no window.
        let client = self.pool.get().await?;
        let t = ident(&self.time_column);
        let interval = chunking.interval;
        let typ = if self.time_has_zone {
            "timestamptz"
        } else {
            "timestamp"
        };
        let bound = |b: Option<Micros>, infinite: &str| match b {
            Some(m) => self.lit(m),
            None => format!("'{infinite}'::{typ}"),
        };
        let (lower, upper) = (
            bound(chunking.start, "-infinity"),
            bound(chunking.end, "infinity"),
        );
        let origin = self.lit(chunking.start.unwrap_or(0));
        let key = match &self.key_column {
            Some(k) => format!("{}::text", ident(k)),
            None => "NULL::text".to_string(),
        };
        let sql = format!(
            "SELECT k, (extract(epoch FROM b) * 1000000)::int8, count(*) FROM (SELECT {key} AS k, \
             CASE WHEN {t} >= {lower} AND {t} < {upper} AND isfinite({t}) \
             THEN date_bin('{secs} seconds'::interval, {t}, {origin}) END AS b \
             FROM {from}) AS q GROUP BY k, b",
            secs = interval / MICROS_PER_SEC,
            from = self.from
        );
        let rows = client
            .query(&sql, &[])
            .await
            .map_err(EtlError::pg("counting the source's rows per chunk"))?;
        self.pool.put(client);
        let end = chunking.end.unwrap_or(i64::MAX);
        let mut plan = Plan::default();
        for row in rows {
            let key: Option<String> = row.get(0);
            let window: Option<i64> = row.get(1);
            let count: i64 = row.get(2);
            match window {
                Some(start) => plan.chunks.push(PlannedChunk {
                    chunk: window_chunk(key, start, interval, end),
                    rows: count as u64,
                }),
                None => plan.rows_outside += count as u64,
            }
        }
        plan.chunks
            .sort_by(|a, b| (a.chunk.start, &a.chunk.key).cmp(&(b.chunk.start, &b.chunk.key)));
        let first = plan.chunks.iter().map(|c| c.chunk.start).min();
        let last = plan.chunks.iter().map(|c| c.chunk.end).max();
        plan.range = match (chunking.start.or(first), chunking.end.or(last)) {
            (Some(s), Some(e)) => Some((s, e)),
            _ => None,
        };
        Ok(plan)
    }

    /// The windows found through the source's index on (key,) time, not
    /// counted: none when it has no such index or the run is bounded.
    pub(super) async fn plan_index(&self, chunking: &Chunking) -> Result<Option<Plan>, EtlError> {
        if !self.indexed || chunking.start.is_some() || chunking.end.is_some() {
            return Ok(None);
        }
        let client = self.pool.get().await?;
        let t = ident(&self.time_column);
        let keys: Vec<Option<String>> = match &self.key_column {
            None => vec![None],
            Some(k) => {
                let k = ident(k);
                // A loose index scan: one index probe per distinct key.
                let sql = format!(
                    "WITH RECURSIVE keys AS ( \
                       (SELECT {k} AS v FROM {from} WHERE {k} IS NOT NULL ORDER BY {k} LIMIT 1) \
                       UNION ALL \
                       SELECT (SELECT {k} FROM {from} WHERE {k} > keys.v ORDER BY {k} LIMIT 1) FROM keys WHERE keys.v IS NOT NULL) \
                     SELECT v::text FROM keys WHERE v IS NOT NULL \
                     UNION ALL SELECT NULL::text WHERE EXISTS (SELECT 1 FROM {from} WHERE {k} IS NULL)",
                    from = self.from
                );
                client
                    .query(&sql, &[])
                    .await
                    .map_err(EtlError::pg("finding the source's keys by index"))?
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            }
        };
        let interval = chunking.interval;
        let mut plan = Plan::default();
        for key in keys {
            let condition = match (&self.key_column, &key) {
                (Some(k), Some(v)) => format!("{} = {} AND ", ident(k), etl_base::sql::literal(v)),
                (Some(k), None) => format!("{} IS NULL AND ", ident(k)),
                (None, _) => String::new(),
            };
            let row = client
                .query_one(
                    &format!(
                        "SELECT (SELECT (extract(epoch FROM min({t})) * 1000000)::int8 FROM {from} WHERE {condition}{t} > '-infinity' AND {t} < 'infinity'), \
                         (SELECT (extract(epoch FROM max({t})) * 1000000)::int8 FROM {from} WHERE {condition}{t} > '-infinity' AND {t} < 'infinity'), \
                         (SELECT count(*) FROM {from} WHERE {condition}{t} IN ('infinity', '-infinity'))",
                        from = self.from
                    ),
                    &[],
                )
                .await
                .map_err(EtlError::pg("finding the source's time range by index"))?;
            let (min, max, infinite): (Option<i64>, Option<i64>, i64) =
                (row.get(0), row.get(1), row.get(2));
            plan.rows_outside += infinite as u64;
            let (Some(min), Some(max)) = (min, max) else {
                continue;
            };
            for start in window_starts(min, max, 0, interval) {
                plan.chunks.push(PlannedChunk {
                    chunk: window_chunk(key.clone(), start, interval, i64::MAX),
                    rows: 0,
                });
            }
        }
        self.pool.put(client);
        plan.order_and_span();
        Ok(Some(plan))
    }

    /// The source's rows: a table's with its partitions' and inheritance
    /// children's (which a read of it returns too) as their statistics
    /// estimate them ([`ESTIMATED_ROWS`]), with no scan spent on them;
    /// counted for a query, or when one of those tables was never
    /// analyzed.
    async fn rows(&self, client: &tokio_postgres::Client) -> Result<u64, EtlError> {
        let estimated: Option<i64> = match self.from.starts_with('(') {
            true => None,
            false => client
                .query_one(
                    &format!(
                        "WITH RECURSIVE tree(oid) AS (SELECT $1::text::regclass::oid \
                         UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid) \
                         SELECT CASE WHEN bool_and(e IS NOT NULL) THEN sum(e)::int8 END \
                         FROM (SELECT {ESTIMATED_ROWS} AS e FROM pg_class c JOIN tree USING (oid) \
                         WHERE c.relkind <> 'p') AS t"
                    ),
                    &[&self.from],
                )
                .await
                .map_err(EtlError::pg("reading the statistics of the source table"))?
                .get(0),
        };
        let rows = match estimated {
            Some(rows) => rows,
            None => client
                .query_one(&format!("SELECT count(*) FROM {}", self.from), &[])
                .await
                .map_err(EtlError::pg("counting the rows of the source"))?
                .get(0),
        };
        Ok(rows.max(0) as u64)
    }

    /// A relation read whole: one chunk, its rows ([`PostgresSource::rows`])
    /// for the progress and the estimate of the time left only.
    pub(super) async fn plan_whole(&self) -> Result<Plan, EtlError> {
        if let Some((column, width)) = &self.range {
            return self.plan_ranges(column, *width).await;
        }
        let client = self.pool.get().await?;
        let rows = self.rows(&client).await?;
        self.pool.put(client);
        Ok(Plan {
            chunks: vec![PlannedChunk {
                chunk: Chunk::whole(None),
                rows,
            }],
            ..Plan::default()
        })
    }

    /// Ranges of `column`, `width` values wide and aligned to multiples
    /// of it, each with rows, counted in one scan: the same cuts on every
    /// run (rows added later land in their own ranges, as rows in new time
    /// windows do). A NULL in the column is in no range: refused, counted.
    async fn plan_ranges(&self, column: &str, width: u64) -> Result<Plan, EtlError> {
        if column == etl_model::chunking::BLOCKS {
            return self.plan_blocks(width).await;
        }
        let client = self.pool.get().await?;
        let c = ident(column);
        let rows = client
            .query(
                &format!(
                    "SELECT floor({c}::numeric / {width})::int8, count(*) FROM {} GROUP BY 1",
                    self.from
                ),
                &[],
            )
            .await
            .map_err(EtlError::pg(format!(
                "counting the source's rows per range of {column}"
            )))?;
        self.pool.put(client);
        let mut plan = Plan::default();
        for row in rows {
            let (bucket, count): (Option<i64>, i64) = (row.get(0), row.get(1));
            let Some(bucket) = bucket else {
                return Err(EtlError::Config(format!(
                    "chunks.range_column {column:?} is NULL in {count} rows of the source, which no range holds; name a NOT NULL column (the primary key), or leave range_column out to read it whole"
                )));
            };
            let lo = bucket.saturating_mul(width as i64);
            plan.chunks.push(PlannedChunk {
                chunk: Chunk::range(None, lo, lo.saturating_add(width as i64)),
                rows: count as u64,
            });
        }
        plan.chunks.sort_by_key(|c| c.chunk.start);
        Ok(plan)
    }

    /// Ranges of the table's heap blocks, `width` blocks each and aligned
    /// to multiples of it, from block 0 to the last one the table (or its
    /// largest partition) has: no scan, rows as [`PostgresSource::rows`]
    /// gives them. The same ranges on every run while the table keeps its
    /// size; blocks added later are in ranges of their own. Each range is read by a TID range scan, in
    /// physical order: for a table nobody writes while etl reads it (an
    /// UPDATE moves a row to another block).
    async fn plan_blocks(&self, width: u64) -> Result<Plan, EtlError> {
        let client = self.pool.get().await?;
        let blocks: i64 = client
            .query_one(
                "SELECT coalesce(max(pg_relation_size(c.oid) / current_setting('block_size')::int8), 0) \
                 FROM pg_class c WHERE c.relkind <> 'p' AND c.oid IN \
                 (SELECT $1::text::regclass UNION ALL SELECT relid FROM pg_partition_tree($1::text::regclass))",
                &[&self.from],
            )
            .await
            .map_err(EtlError::pg("reading the size of the source table"))?
            .get(0);
        let rows = self.rows(&client).await?;
        self.pool.put(client);
        let width = width.min(i64::MAX as u64) as i64;
        let ranges: Vec<(i64, i64)> = match blocks {
            0 => Vec::new(),
            _ => window_starts(0, blocks - 1, 0, width)
                .into_iter()
                .map(|lo| (lo, lo.saturating_add(width)))
                .collect(),
        };
        let estimates = etl_base::plan::estimate_rows(&ranges, 0, blocks - 1, rows);
        let mut plan = Plan::default();
        for ((lo, hi), rows) in ranges.into_iter().zip(estimates) {
            plan.chunks.push(PlannedChunk {
                chunk: Chunk::range(None, lo, hi),
                rows,
            });
        }
        Ok(plan)
    }
}
