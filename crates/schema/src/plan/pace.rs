//! How fast the target scans, rewrites and indexes a table, measured on
//! the target itself: what `etl schema plan` estimates each statement's
//! time from (its tables' sizes over these rates).
//!
//! The sample is a temporary table of the plan's own session (made,
//! scanned and indexed inside a transaction that is rolled back), so a
//! plan still changes nothing on the target. It runs on the server's own
//! CPU and disks, which is what a rewrite there runs on; it does not see a
//! table that is not in memory, the WAL a logged table writes, or other
//! sessions' load, so real statements take longer, and the plan says so.

use std::time::Instant;

use tokio_postgres::Client;

use super::{Effect, Work};
use crate::SchemaError;
use etl_base::human::{bytes, thousands};

/// Rows in the sample table: about 15 MiB, a fraction of a second.
const SAMPLE_ROWS: u64 = 200_000;

/// Bytes per second the target scanned, wrote and indexed the sample at.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pace {
    pub scan: f64,
    pub rewrite: f64,
    pub index: f64,
    /// The sample's size with its index.
    pub sample_bytes: i64,
}

impl Pace {
    /// Measures the target's pace on a temporary table, rolled back.
    pub async fn measure(client: &Client) -> Result<Pace, SchemaError> {
        let context = "measuring the target's pace on a temporary table";
        let timed = |sql: String| async move {
            let started = Instant::now();
            client.batch_execute(&sql).await?;
            Ok::<f64, tokio_postgres::Error>(started.elapsed().as_secs_f64().max(1e-6))
        };
        let measured = async {
            client.batch_execute("BEGIN").await?;
            let write = timed(format!(
                "CREATE TEMP TABLE etl_pace AS SELECT g AS id, md5(g::text) AS a, g::float8 AS b \
                 FROM generate_series(1, {SAMPLE_ROWS}) g"
            ))
            .await?;
            let table: i64 = client
                .query_one("SELECT pg_total_relation_size('etl_pace')", &[])
                .await?
                .get(0);
            let scan =
                timed("SELECT count(*), sum(length(a)), max(b) FROM etl_pace".into()).await?;
            let index = timed("CREATE INDEX ON etl_pace (a)".into()).await?;
            let sample: i64 = client
                .query_one("SELECT pg_total_relation_size('etl_pace')", &[])
                .await?
                .get(0);
            Ok::<_, tokio_postgres::Error>(Pace {
                scan: table as f64 / scan,
                rewrite: table as f64 / write,
                index: table as f64 / index,
                sample_bytes: sample,
            })
        }
        .await;
        let rolled_back = client.batch_execute("ROLLBACK").await;
        let pace = measured.map_err(SchemaError::pg(context))?;
        rolled_back.map_err(SchemaError::pg(context))?;
        Ok(pace)
    }

    /// The seconds `work` takes at this pace.
    pub fn secs(&self, work: &Work) -> f64 {
        let rate = match work.effect {
            Effect::Brief => return 0.0,
            Effect::Scan => self.scan,
            Effect::Rewrite => self.rewrite,
            Effect::Index => self.index,
        };
        work.bytes.max(0) as f64 / rate
    }

    /// How the estimates were made, for people.
    pub fn basis(&self) -> String {
        let rate = |r: f64| format!("{}/s", bytes(r as u64));
        format!(
            "basis: the target wrote a {}-row temporary table ({}) at {}, scanned it at {}, indexed it at {}; a table not in memory, WAL and other sessions' load make real statements slower",
            thousands(SAMPLE_ROWS),
            bytes(self.sample_bytes.max(0) as u64),
            rate(self.rewrite),
            rate(self.scan),
            rate(self.index)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_work_goes_at_its_own_rate() {
        let pace = Pace {
            scan: 100.0,
            rewrite: 10.0,
            index: 50.0,
            sample_bytes: 1,
        };
        let work = |effect| Work {
            table: "t".into(),
            effect,
            bytes: 1000,
        };
        assert_eq!(pace.secs(&work(Effect::Scan)), 10.0);
        assert_eq!(pace.secs(&work(Effect::Rewrite)), 100.0);
        assert_eq!(pace.secs(&work(Effect::Index)), 20.0);
        assert_eq!(pace.secs(&work(Effect::Brief)), 0.0);
    }
}
