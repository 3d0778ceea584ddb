//! `etl run --recreate`: drops the tables this pipeline created (as
//! `etl.phase_log` records them), with their `etl.column_map` rows and
//! ledger entries, after the user types the pipeline's name or passes
//! `--yes`. Tables the pipeline found already there are never dropped.

use crate::config::{ValidatedPipeline, ValidatedSink};
use etl_ledger::created;
use etl_model::ledger::SchemaClient;

pub(super) fn recreate(pipeline: &ValidatedPipeline, yes: bool) -> anyhow::Result<()> {
    let name = &pipeline.name;
    let retry = pipeline.chunks.retry();
    let mut found = Vec::new();
    for sink in &pipeline.sinks {
        let ValidatedSink::Postgres(spec) = sink else {
            continue;
        };
        let tables = crate::pg::block_on(crate::retry::on_session(
            &spec.endpoint,
            "etl recreate",
            retry,
            "reading the tables the pipeline created failed",
            |client| async move {
                let db = SchemaClient::new(&client, &spec.ledger_schema);
                created::tables(db, name).await
            },
        ))?;
        if !tables.is_empty() {
            found.push((spec, tables));
        }
    }
    if found.is_empty() {
        tracing::info!(pipeline = %name, "--recreate: no table this pipeline created is there (etl records the tables it creates); nothing to drop.");
        return Ok(());
    }
    out!("--recreate drops these tables that pipeline {name} created, with all their rows, their rows in the pivot's column map and their ledger entries (the run then loads everything again):");
    for (spec, tables) in &found {
        for t in tables {
            out!("  {t} on {}", spec.endpoint);
        }
    }
    if !yes {
        super::confirm_by_name(name, "drop them", "--recreate")?;
    }
    for (spec, tables) in &found {
        // One transaction: tried again whole after a lost session.
        crate::pg::block_on(crate::retry::on_session(
            &spec.endpoint,
            "etl recreate",
            retry,
            "dropping the tables failed",
            |client| async move {
                created::drop_tables(
                    SchemaClient::new(&client, &spec.ledger_schema),
                    name,
                    tables,
                    &spec.timeouts.set_local(),
                    spec.timeouts.lock_timeout_secs,
                )
                .await
            },
        ))?;
        out!("Dropped {} tables on {}", tables.len(), spec.endpoint);
    }
    Ok(())
}
