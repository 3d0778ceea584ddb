//! Each table's cut kept for the run that resumes it: a text key's cut
//! values (found by reading the key), a PostgreSQL table's ranges (planned
//! from the source's statistics, which move with ANALYZE). A first run
//! stores them in `etl.phase_log` (phase `discover`, item `cuts of T`)
//! before its first chunk; a resumed run and `etl plan` read them back.

use std::collections::HashMap;

use super::{odbc, Migration, TableSource};
use etl_pg::error::EtlError;

impl TableSource {
    /// The table's cut as text to keep in `etl.phase_log` (ODBC: the text
    /// key's cut values; PostgreSQL: its ranges, planned from estimates),
    /// or `None` when its plan is the same on every run without keeping.
    async fn cut(
        &self,
        range_key: &Option<(String, odbc::KeyKind)>,
    ) -> Result<Option<String>, EtlError> {
        match self {
            TableSource::Odbc(s) if matches!(range_key, Some((_, odbc::KeyKind::Text))) => {
                let cuts = s.cuts()?;
                serde_json::to_string(&cuts)
                    .map(Some)
                    .map_err(|e| EtlError::Bug(e.to_string()))
            }
            TableSource::Postgres(t) => t.cut_text().await.map(Some),
            _ => Ok(None),
        }
    }

    /// Cuts the table where `kept` ([`TableSource::cut`] of an earlier
    /// run) says; what is wrong with it if it cannot.
    fn set_cut(&self, kept: &str) -> Result<(), String> {
        match self {
            TableSource::Odbc(s) => {
                let cuts = serde_json::from_str::<Vec<String>>(kept)
                    .map_err(|e| format!("something other than a JSON list of text ({e})"))?;
                s.set_cuts(cuts);
                Ok(())
            }
            TableSource::Postgres(t) => t
                .set_cut_text(kept)
                .map_err(|e| format!("something other than a table's ranges ({e})")),
            TableSource::Access(_) | TableSource::AccessChild(_) | TableSource::Csv(_) => {
                Err("a cut, which this table's source has none of".into())
            }
        }
    }
}

impl Migration {
    /// The tables whose cut a resumed run could not find again the same:
    /// a text key's cut values, a PostgreSQL table's ranges planned from
    /// estimates. A first run stores them in `etl.phase_log`
    /// ([`Migration::store_cuts`]) before its first chunk.
    fn kept_cuts(&self) -> Vec<usize> {
        (0..self.tables.len())
            .filter(|&i| match &self.sources[i] {
                TableSource::Odbc(_) => {
                    matches!(self.tables[i].range_key, Some((_, odbc::KeyKind::Text)))
                }
                TableSource::Postgres(_) => true,
                _ => false,
            })
            .collect()
    }

    /// The cuts stored, by item (`cuts of T`, [`Migration::cut_item`]).
    async fn stored_cuts(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<HashMap<String, String>, EtlError> {
        etl_ledger::sql::phase_statements(self.ledger(client), &self.pipeline, "discover")
            .await
            .map_err(EtlError::pg("reading etl.phase_log"))
    }

    /// The phase log's item of table `i`'s cut.
    fn cut_item(&self, i: usize) -> String {
        format!("cuts of {}", self.tables[i].source)
    }

    /// Each table of [`Migration::kept_cuts`] cut as a first run stored,
    /// so a resumed run cuts the same parts even if the source changed
    /// meanwhile; `redo` cuts them again. Reads only.
    pub(crate) async fn read_cuts(&self, redo: bool) -> Result<(), EtlError> {
        let kept = self.kept_cuts();
        if redo || kept.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let exists = etl_ledger::sql::exists(self.ledger(&client))
            .await
            .map_err(EtlError::pg("looking for the ledger"))?;
        if !exists {
            return Ok(());
        }
        let stored = self.stored_cuts(&client).await?;
        // The chunks done, read only when a table has no cut kept.
        let mut done = None;
        for i in kept {
            let Some(text) = stored.get(&self.cut_item(i)) else {
                // Chunks loaded by a run that kept no cut (an etl from
                // before cuts were kept) were cut by counting the rows:
                // so is the rest, or ranges would overlap.
                if let TableSource::Postgres(t) = &self.sources[i] {
                    if done.is_none() {
                        let read = etl_ledger::sql::done(self.ledger(&client), &self.pipeline)
                            .await
                            .map_err(EtlError::pg("reading the ledger"))?;
                        done = Some(read);
                    }
                    let loaded = done
                        .iter()
                        .flatten()
                        .any(|(_, key, _, _)| key.as_deref() == Some(&t.name));
                    if loaded {
                        t.count_rows();
                    }
                }
                continue;
            };
            self.sources[i].set_cut(text).map_err(|why| {
                EtlError::Changed(format!(
                    "etl.phase_log holds the cuts of {:?} as {why}; run etl run --restart to cut the table again",
                    self.tables[i].source
                ))
            })?;
        }
        Ok(())
    }

    /// The cuts this run plans by, stored where none is (every one with
    /// `redo`) for a resumed run to read: before the first chunk, after
    /// the checks that refuse a run without writing.
    pub(crate) async fn store_cuts(&self, redo: bool) -> Result<(), EtlError> {
        let kept = self.kept_cuts();
        if kept.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        etl_ledger::sql::ensure(self.ledger(&client))
            .await
            .map_err(EtlError::pg("creating the ledger"))?
            .map_err(EtlError::Config)?;
        let stored = match redo {
            true => HashMap::new(),
            false => self.stored_cuts(&client).await?,
        };
        let mut cuts = Vec::new();
        for i in kept {
            let item = self.cut_item(i);
            if stored.contains_key(&item) {
                continue;
            }
            if let Some(text) = self.sources[i].cut(&self.tables[i].range_key).await? {
                cuts.push((item, text));
            }
        }
        let steps: Vec<(&str, &str, Option<&str>)> = cuts
            .iter()
            .map(|(item, text)| (item.as_str(), text.as_str(), None))
            .collect();
        etl_ledger::sql::record_steps(self.ledger(&client), &self.pipeline, "discover", &steps)
            .await
            .map_err(EtlError::pg("recording the tables' cuts in etl.phase_log"))?;
        Ok(())
    }
}
