//! The duplicate rule across chunks when a column is, or becomes, text.
//!
//! A pivot keeps the greatest of repeated readings in the column's type;
//! over text another value can be the greatest ('9' of 9 and 10), and a
//! boolean reading prints `true`, not 1. So a chunk whose channel is text
//! in the target already is pivoted with the channel as text
//! ([`Wide::text_channels`], asked before the chunk runs). A chunk that
//! wrote such cells as numbers ([`etl_model::wide::AMBIGUOUS_METADATA`]) is
//! recorded in `etl.wide_text_pending` (made with `etl.column_map`) in
//! its transaction; once a later
//! chunk has widened that column to text, [`Wide::stale`] names it and the
//! run pivots it again, as text, replacing its cells.

use super::*;

impl Wide {
    /// The channels of a key's wide tables whose columns are text, as
    /// this process last saw them (read once per table otherwise): a column
    /// widened since is caught by the pending record.
    pub async fn text_channels(
        &self,
        client: &Client,
        base: &TableName,
    ) -> Result<Vec<String>, EtlError> {
        let cached = self.layouts.lock().await.get(&base.qualified()).cloned();
        let layout = match cached {
            Some(l) => l,
            None => self.load(client, base).await?,
        };
        Ok(layout
            .channels
            .into_iter()
            .filter(|(_, p)| p.kind == Kind::Text)
            .map(|(c, _)| c)
            .collect())
    }

    /// The chunks among `chunks` recorded as holding numbers in a column
    /// that is text now. Tables are matched by name as etl writes them
    /// (`"schema"."table"`), so a column map changed by hand makes no error
    /// here (its chunks fail, naming it).
    pub async fn stale(&self, client: &Client, chunks: &[Chunk]) -> Result<Vec<Chunk>, EtlError> {
        let rows = SchemaClient::new(client, &self.spec.ledger_schema)
            .query(
                "SELECT DISTINCT p.chunk_key, p.chunk_start, p.chunk_end FROM etl.wide_text_pending p \
                 JOIN etl.column_map m ON m.base_table = p.base_table AND m.channel = p.channel \
                 JOIN pg_namespace n ON true \
                 JOIN pg_class c ON c.relnamespace = n.oid \
                   AND m.table_name = '\"' || replace(n.nspname, '\"', '\"\"') || '\".\"' || replace(c.relname, '\"', '\"\"') || '\"' \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = m.column_name \
                 WHERE p.pipeline = $1 AND a.atttypid = 'text'::regtype",
                &[&self.pipeline],
            )
            .await
            .map_err(EtlError::pg("reading etl.wide_text_pending"))?;
        let found: BTreeSet<(Option<String>, i64, i64)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        Ok(chunks
            .iter()
            .filter(|c| found.contains(&(c.key.clone(), c.start, c.end)))
            .cloned()
            .collect())
    }
}

/// In a chunk's transaction: forgets what an earlier run of the chunk
/// recorded, then records the channels it writes as numbers that could
/// print otherwise as text.
pub(super) async fn record_pending(
    db: SchemaClient<'_>,
    pipeline: &str,
    base: &str,
    chunk: &Chunk,
    channels: &[&str],
) -> Result<(), tokio_postgres::Error> {
    let key = &chunk.key;
    if channels.is_empty() {
        db.execute(
            "DELETE FROM etl.wide_text_pending WHERE pipeline = $1 AND base_table = $2 \
                 AND chunk_key IS NOT DISTINCT FROM $3 AND chunk_start = $4 AND chunk_end = $5",
            &[&pipeline, &base, key, &chunk.start, &chunk.end],
        )
        .await?;
        return Ok(());
    }
    let channels: Vec<&str> = channels.to_vec();
    db.execute(
            "INSERT INTO etl.wide_text_pending SELECT $1, $2, c, $3, $4, $5 FROM unnest($6::text[]) AS c",
            &[&pipeline, &base, key, &chunk.start, &chunk.end, &channels],
        )
        .await?;
    Ok(())
}
