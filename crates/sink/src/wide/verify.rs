//! What `etl plan` and `etl verify` read of a pivot's wide tables: the
//! source's channels per key (in SQL, by the pivot's rules), the changes a
//! run would make, and one chunk's rows and cells in both.

use super::*;
use etl_model::verify::{Rows, RowsQuery};

impl Wide {
    /// The query that lists the source's channels per chunk key, with the
    /// widest kind of their formats (the pivot's rules, in SQL over the
    /// source's rows); `None` for wide rows that no pivot here made.
    pub fn channels_query(&self, key_column: Option<&str>) -> Option<RowsQuery> {
        let w = self.wide.pivot.as_ref()?;
        let key = key_column.map_or("NULL::text".to_string(), |k| format!("{}::text", ident(k)));
        let kinds = [Kind::Bool, Kind::Int, Kind::Float, Kind::Text];
        let kind = w
            .formats
            .iter()
            .map(|(f, _, k)| {
                let k = if w.text { Kind::Text } else { *k };
                format!(
                    "WHEN {} THEN {}",
                    literal(f),
                    kinds.iter().position(|x| *x == k).expect("a kind")
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        let formats = w
            .formats
            .iter()
            .map(|(f, _, _)| literal(f))
            .collect::<Vec<_>>()
            .join(", ");
        let name = ident(&w.name_column);
        let format = ident(&w.format_column);
        Some(Arc::new(move |rows| {
            format!(
                "SELECT {key}, {name}::text, max(CASE {format} {kind} END)::text FROM {rows} \
                 WHERE {name} IS NOT NULL AND {format} IN ({formats}) GROUP BY 1, 2"
            )
        }))
    }

    /// The source's channels per chunk key, from the rows of
    /// [`Wide::channels_query`].
    pub fn channels_from(rows: &Rows) -> HashMap<Option<String>, Vec<(String, Kind)>> {
        let kinds = [Kind::Bool, Kind::Int, Kind::Float, Kind::Text];
        let mut out: HashMap<Option<String>, Vec<(String, Kind)>> = HashMap::new();
        for r in rows {
            let k: usize = r[2].as_deref().and_then(|v| v.parse().ok()).unwrap_or(3);
            out.entry(r[0].clone())
                .or_default()
                .push((r[1].clone().unwrap_or_default(), kinds[k.min(3)]));
        }
        out
    }

    /// What a run would change in a key's wide tables for these channels:
    /// the statements, for `etl plan` (nothing is written).
    pub async fn describe(
        &self,
        client: &Client,
        base: &TableName,
        channels: &[(String, Kind)],
    ) -> Result<Vec<String>, EtlError> {
        let mut layout = self.load(client, base).await?;
        let mut lines = Vec::new();
        if let std::collections::btree_map::Entry::Vacant(e) = layout.parts.entry(base.qualified())
        {
            if !self.spec.create_table {
                return Err(EtlError::Config(format!(
                    "wide table {base} does not exist on {}; create it, or set create_table = true in [[sinks]]",
                    self.spec.endpoint
                )));
            }
            lines.push(format!("{};", self.create_sql(base)?));
            // Planned as if the base existed, empty.
            e.insert(Part {
                columns: Vec::new(),
                channels: 0,
            });
        }
        let known = channels
            .iter()
            .filter(|(c, _)| layout.channels.contains_key(c))
            .count();
        lines.insert(
            0,
            format!(
                "wide table {base}: {} channels in the source, {known} with columns already, mode {}",
                channels.len(),
                self.spec.mode.as_str()
            ),
        );
        let statements = self.plan_changes(base, &layout, channels)?;
        // The column map's and phase log's rows would repeat the DDL's names.
        for statement in statements
            .iter()
            .filter(|s| !s.starts_with("INSERT INTO etl."))
        {
            let short: String = statement.chars().take(2000).collect();
            lines.push(format!(
                "{short}{};",
                if short.len() < statement.len() {
                    " ..."
                } else {
                    ""
                }
            ));
        }
        Ok(lines)
    }

    /// The pivot whose readings `etl verify` can compare the wide tables
    /// with (the pipeline's only stage), and the index's columns, which
    /// hold the time column; what to change otherwise.
    fn verifiable(&self) -> Result<(&etl_model::wide::PivotRules, Vec<String>), EtlError> {
        let w = match &self.wide.pivot {
            Some(w) if w.only_stage => w,
            Some(_) => return Err(EtlError::Config(
                "etl verify compares wide tables with the narrow readings they were pivoted from; this pipeline has SQL stages around its pivot, which change them, so it cannot be verified this way"
                    .into(),
            )),
            None => return Err(EtlError::Config(
                "etl verify compares wide tables with the narrow readings they were pivoted from; this pipeline loads wide rows it did not pivot (a staging folder): verify the pipeline that pivoted them".into(),
            )),
        };
        let index = self.index_names();
        if !index.contains(&self.time_column) {
            return Err(EtlError::Config(format!(
                "etl verify compares chunks by their time window, so the pivot's index needs the time column {:?}",
                self.time_column
            )));
        }
        Ok((w, index))
    }

    /// What `etl verify` reads of the source to compare one chunk's wide
    /// rows: their count, and per channel its cells and an
    /// order-independent checksum of their (index, value), as the source's
    /// readings imply them by the pivot's rules (see `etl_transform::pivot`).
    /// [`Wide::verify`] reads the same of the target: values compare as
    /// PostgreSQL prints them in the column's type, so a changed value, a
    /// lost row or a value in another channel's column differs.
    pub fn verify_queries(&self) -> Result<Vec<RowsQuery>, EtlError> {
        let (w, index) = self.verifiable()?;
        let index_row = format!(
            "({})",
            index
                .iter()
                .map(|c| ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let has_value = w
            .formats
            .iter()
            .map(|(f, c, _)| {
                format!(
                    "({} = {} AND {} IS NOT NULL)",
                    ident(&w.format_column),
                    literal(f),
                    ident(c)
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let distinct: RowsQuery = {
            let index_row = index_row.clone();
            Arc::new(move |rows| format!("SELECT count(DISTINCT {index_row})::text FROM {rows}"))
        };
        let [vb, vi, vf, vt] = cell_values(w);
        let hash = |v: &str| {
            format!("coalesce(sum(hashtextextended(i || '|' || {v}::text, 0)::numeric), 0)::text")
        };
        let name = ident(&w.name_column);
        let index_list = index_row
            .trim_start_matches('(')
            .trim_end_matches(')')
            .to_string();
        let hashes = [hash("vb"), hash("vi"), hash("vf"), hash("vt")];
        let cells: RowsQuery = Arc::new(move |rows| {
            format!(
                "SELECT n::text, count(*)::text, {}, {}, {}, {} FROM (\
                 SELECT {name} AS n, ROW({index_list})::text AS i, bool_or({vb}) AS vb, max({vi}) AS vi, \
                 max({vf}) AS vf, max(({vt}) COLLATE \"C\") AS vt \
                 FROM {rows} WHERE {name} IS NOT NULL AND ({has_value}) GROUP BY 1, 2) AS cells GROUP BY 1",
                hashes[0], hashes[1], hashes[2], hashes[3],
            )
        });
        Ok(vec![distinct, cells])
    }

    /// One chunk's wide tables compared with the rows of
    /// [`Wide::verify_queries`] over the source.
    pub async fn verify(
        &self,
        client: &Client,
        base: &TableName,
        chunk: &Chunk,
        source: Vec<Rows>,
    ) -> Result<etl_model::verify::Comparison, EtlError> {
        let [rows, cells]: [Rows; 2] = source.try_into().map_err(|_| {
            EtlError::Bug("a pivot's verify takes the rows of its two queries".into())
        })?;
        let source_rows: u64 = rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let layout = self.load(client, base).await?;
        let expected = expected_cells(&layout, cells);
        let sum = |cells: &BTreeMap<String, (u64, String)>| {
            cells
                .iter()
                .filter(|(_, (n, _))| *n > 0)
                .map(|(c, (n, h))| format!("{c:?}={n}:{h}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let expected_sum = etl_model::verify::Checksum {
            rows: source_rows,
            sum: sum(&expected),
        };
        if !layout.parts.contains_key(&base.qualified()) {
            return Ok(etl_model::verify::Comparison {
                source: expected_sum,
                target: None,
            });
        }
        let filter = chunk_filter(
            &self.time_column,
            self.time_has_zone,
            self.key_column.as_deref(),
            chunk,
        );
        let context = || format!("counting chunk {chunk} in {base}");
        let target_rows: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {} WHERE {filter}", base.qualified()),
                &[],
            )
            .await
            .map_err(EtlError::pg(context()))?
            .get(0);
        let found = self
            .found_cells(client, &layout, &filter, &context())
            .await?;
        Ok(etl_model::verify::Comparison {
            source: expected_sum,
            target: Some(etl_model::verify::Checksum {
                rows: target_rows as u64,
                sum: sum(&found),
            }),
        })
    }

    /// Each channel's cells in the target's parts under `filter`: count
    /// and the sum of hashes of (index, value).
    async fn found_cells(
        &self,
        client: &Client,
        layout: &Layout,
        filter: &str,
        context: &str,
    ) -> Result<BTreeMap<String, (u64, String)>, EtlError> {
        let index_row = format!(
            "({})",
            self.index_names()
                .iter()
                .map(|c| ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut found: BTreeMap<String, (u64, String)> = BTreeMap::new();
        for part in layout.parts.keys() {
            let here: Vec<(&String, &Placement)> = layout
                .channels
                .iter()
                .filter(|(_, p)| p.part == *part)
                .collect();
            if here.is_empty() {
                continue;
            }
            let counts = here
                .iter()
                .map(|(_, p)| {
                    let c = ident(&p.column);
                    format!(
                        "count({c})::text, coalesce(sum(hashtextextended(ROW({index_list})::text || '|' || {c}::text, 0)::numeric), 0)::text",
                        index_list = index_row.trim_start_matches('(').trim_end_matches(')')
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let row = client
                .query_one(&format!("SELECT {counts} FROM {part} WHERE {filter}"), &[])
                .await
                .map_err(EtlError::pg(context.to_string()))?;
            for (i, (channel, _)) in here.iter().enumerate() {
                let count: String = row.get(2 * i);
                found.insert(
                    (*channel).clone(),
                    (count.parse().unwrap_or(0), row.get(2 * i + 1)),
                );
            }
        }
        Ok(found)
    }
}

/// Each channel's cells in the source: count and the checksum of the
/// value column of its kind in the target's layout (text when new).
fn expected_cells(layout: &Layout, cells: Rows) -> BTreeMap<String, (u64, String)> {
    let mut expected: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for r in cells {
        let channel = r[0].clone().unwrap_or_default();
        let kind = layout.channels.get(&channel).map_or(Kind::Text, |p| p.kind);
        let at = 2 + [Kind::Bool, Kind::Int, Kind::Float, Kind::Text]
            .iter()
            .position(|k| *k == kind)
            .expect("a kind");
        expected.insert(
            channel,
            (
                r[1].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
                r[at].clone().unwrap_or_default(),
            ),
        );
    }
    expected
}

/// Each (row, channel) cell's value as the pivot makes it, in each kind a
/// column can have: boolean, integer, float, text (the greatest of its
/// readings, narrower formats converted as PostgreSQL casts them); the
/// target's kind of the channel's column picks one.
fn cell_values(w: &etl_model::wide::PivotRules) -> [String; 4] {
    let value = |kinds: &[Kind], expr: &dyn Fn(&str, Kind) -> String| {
        let arms: Vec<String> = w
            .formats
            .iter()
            .filter(|(_, _, k)| kinds.contains(k))
            .map(|(f, c, k)| format!("WHEN {} THEN {}", literal(f), expr(&ident(c), *k)))
            .collect();
        if arms.is_empty() {
            "NULL".to_string()
        } else {
            format!("CASE {} {} END", ident(&w.format_column), arms.join(" "))
        }
    };
    let vb = value(&[Kind::Bool], &|c, _| c.to_string());
    let vi = value(&[Kind::Bool, Kind::Int], &|c, k| match k {
        Kind::Bool => format!("{c}::int::int8"),
        _ => format!("{c}::int8"),
    });
    let vf = value(&[Kind::Bool, Kind::Int, Kind::Float], &|c, k| match k {
        Kind::Bool => format!("{c}::int::float8"),
        _ => format!("{c}::float8"),
    });
    let vt = value(
        &[Kind::Bool, Kind::Int, Kind::Float, Kind::Text],
        &|c, _| format!("{c}::text"),
    );
    [vb, vi, vf, vt]
}
