//! A staged change (`etl schema apply --phase expand|backfill|contract`)
//! kept in the database it changes, so that the later stages run the plan
//! the first one made, whatever the application did in between, and
//! `etl schema status` can tell where a change is.
//!
//! `etl.schema_change` holds each change's statements (the plan's steps
//! in JSON) and who wanted it; `etl.schema_change_ran` one row per
//! statement that ran, written in that statement's own transaction, so a
//! killed stage resumes after the last statement that committed. (A
//! statement that cannot run in a transaction, a batched backfill or a
//! `CONCURRENTLY`, is recorded right after it; run again, it finds its
//! work done.) The `etl` schema is not compared by `etl schema`.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use crate::plan::{Plan, Stage, Step};
use crate::SchemaError;

const DDL: &str = "CREATE SCHEMA IF NOT EXISTS etl; \
     CREATE TABLE IF NOT EXISTS etl.schema_change ( \
       id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
       wanted text NOT NULL, \
       made_at timestamptz NOT NULL DEFAULT now(), \
       steps jsonb NOT NULL, \
       closed_at timestamptz, \
       abandoned boolean NOT NULL DEFAULT false); \
     CREATE TABLE IF NOT EXISTS etl.schema_change_ran ( \
       change_id bigint NOT NULL REFERENCES etl.schema_change ON DELETE CASCADE, \
       n int NOT NULL, \
       ran_at timestamptz NOT NULL DEFAULT now(), \
       PRIMARY KEY (change_id, n))";

/// One staged change as the target records it.
#[derive(Debug, Clone)]
pub struct Staged {
    pub id: i64,
    /// The schema wanted (FROM's endpoint, without a password).
    pub wanted: String,
    pub made_at: String,
    pub closed_at: Option<String>,
    /// Closed by `etl schema status --abandon`, not by its contract stage.
    pub abandoned: bool,
    /// Every statement of the change, each with its stage.
    pub plan: Plan,
    /// The statements (by number) that ran.
    pub ran: BTreeSet<usize>,
}

impl Staged {
    /// The change not closed yet, if any.
    pub async fn open(client: &Client) -> Result<Option<Staged>, SchemaError> {
        Ok(Self::read(client, "WHERE closed_at IS NULL", 1)
            .await?
            .into_iter()
            .next())
    }

    /// The latest `limit` changes, newest first.
    pub async fn latest(client: &Client, limit: i64) -> Result<Vec<Staged>, SchemaError> {
        Self::read(client, "", limit).await
    }

    async fn read(client: &Client, filter: &str, limit: i64) -> Result<Vec<Staged>, SchemaError> {
        let context = "reading the staged changes (etl.schema_change)";
        let kept: bool = client
            .query_one("SELECT to_regclass('etl.schema_change') IS NOT NULL", &[])
            .await
            .map_err(SchemaError::pg(context))?
            .get(0);
        if !kept {
            return Ok(Vec::new());
        }
        let rows = client
            .query(
                &format!(
                    "SELECT c.id, c.wanted, to_char(c.made_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'), \
                     to_char(c.closed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'), c.steps::text, \
                     coalesce((SELECT array_agg(r.n ORDER BY r.n) FROM etl.schema_change_ran r WHERE r.change_id = c.id), '{{}}'), \
                     c.abandoned \
                     FROM etl.schema_change c {filter} ORDER BY c.id DESC LIMIT $1"
                ),
                &[&limit],
            )
            .await
            .map_err(SchemaError::pg(context))?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.get(0);
                let steps: String = r.get(4);
                let steps: Vec<Step> = serde_json::from_str(&steps).map_err(|e| {
                    SchemaError::Targets(format!(
                        "etl.schema_change id {id}: its steps are not as etl wrote them ({e}); close it by hand (UPDATE etl.schema_change SET closed_at = now() WHERE id = {id})"
                    ))
                })?;
                let ran: Vec<i32> = r.get(5);
                Ok(Staged {
                    id,
                    wanted: r.get(1),
                    made_at: r.get(2),
                    closed_at: r.get(3),
                    abandoned: r.get(6),
                    plan: Plan { steps, pace: None },
                    ran: ran.into_iter().map(|n| n as usize).collect(),
                })
            })
            .collect()
    }

    /// Keeps `plan` (its steps staged) on the target as a new open change.
    pub async fn begin(client: &Client, plan: &Plan, wanted: &str) -> Result<Staged, SchemaError> {
        let context = "recording the staged change in etl.schema_change";
        client
            .batch_execute(DDL)
            .await
            .map_err(SchemaError::pg(context))?;
        let steps = serde_json::to_string(&plan.steps).expect("steps serialize");
        let row = client
            .query_one(
                "INSERT INTO etl.schema_change (wanted, steps) VALUES ($1, $2::text::jsonb) \
                 RETURNING id, to_char(made_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"')",
                &[&wanted, &steps],
            )
            .await
            .map_err(SchemaError::pg(context))?;
        Ok(Staged {
            id: row.get(0),
            wanted: wanted.to_string(),
            made_at: row.get(1),
            closed_at: None,
            abandoned: false,
            plan: plan.clone(),
            ran: BTreeSet::new(),
        })
    }

    /// The statement that records step `n` as run (in its transaction).
    pub fn ran_sql(&self, n: usize) -> String {
        format!(
            "INSERT INTO etl.schema_change_ran (change_id, n) VALUES ({}, {n}) ON CONFLICT DO NOTHING",
            self.id
        )
    }

    pub async fn close(&self, client: &Client) -> Result<(), SchemaError> {
        client
            .execute(
                "UPDATE etl.schema_change SET closed_at = now() WHERE id = $1",
                &[&self.id],
            )
            .await
            .map_err(SchemaError::pg("closing the staged change"))?;
        Ok(())
    }

    /// Closes the open change `id` without running the rest of it (what
    /// ran stays: the rollback files of its applies undo it); false when
    /// no open change has that id.
    pub async fn abandon(client: &Client, id: i64) -> Result<bool, SchemaError> {
        if Self::open(client).await?.is_none() {
            return Ok(false);
        }
        let context = "abandoning the staged change";
        let n = client
            .execute(
                "UPDATE etl.schema_change SET closed_at = now(), abandoned = true WHERE id = $1 AND closed_at IS NULL",
                &[&id],
            )
            .await
            .map_err(SchemaError::pg(context))?;
        Ok(n == 1)
    }

    /// The statements of `stage`.
    pub fn of(&self, stage: Stage) -> impl Iterator<Item = &Step> {
        self.plan
            .steps
            .iter()
            .filter(move |s| s.stage == Some(stage))
    }

    /// The statements of `stage` that have not run.
    pub fn left(&self, stage: Stage) -> Vec<&Step> {
        self.of(stage)
            .filter(|s| !self.ran.contains(&s.n))
            .collect()
    }

    /// The first stage with statements left; `None` once all ran.
    pub fn stage(&self) -> Option<Stage> {
        Stage::ALL.into_iter().find(|&s| !self.left(s).is_empty())
    }
}
