//! Sequences behind their column: a sequence owned by a column (serial or
//! identity) whose next value is at or below the column's MAX, so the next
//! insert that takes a default fails on the key. Found after a migration
//! (`etl verify`) and set right by `etl db fix-sequences`.

use tokio_postgres::Client;

/// A sequence and the column it feeds.
#[derive(Debug, Clone)]
pub struct Behind {
    /// `schema.sequence`, quoted where needed.
    pub sequence: String,
    /// `schema.table`, quoted where needed.
    pub table: String,
    pub column: String,
    /// `None`: never called (the next value is its start).
    pub last: Option<i64>,
    pub max: i64,
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is at {} but {}.{} holds {}",
            self.sequence,
            self.last.map_or("its start".to_string(), |l| l.to_string()),
            self.table,
            self.column,
            self.max
        )
    }
}

/// Every ascending sequence owned by a column of a table (outside the
/// `etl` schema) that `keep` accepts, whose last value is below the
/// column's MAX.
pub async fn behind(
    client: &Client,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<Behind>, tokio_postgres::Error> {
    let owned = client
        .query(
            "SELECT format('%I.%I', sn.nspname, s.relname), format('%I.%I', tn.nspname, t.relname), quote_ident(a.attname), \
             pg_sequence_last_value(s.oid) \
             FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
             JOIN pg_sequence q ON q.seqrelid = s.oid AND q.seqincrement > 0 \
             JOIN pg_namespace sn ON sn.oid = s.relnamespace \
             JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace \
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid \
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
             AND d.deptype IN ('a', 'i') AND sn.nspname <> 'etl' ORDER BY 1",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for r in owned {
        let (sequence, table, column, last): (String, String, String, Option<i64>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if !keep(&table) {
            continue;
        }
        let max: Option<i64> = client
            .query_one(&format!("SELECT max({column})::int8 FROM {table}"), &[])
            .await?
            .get(0);
        if let Some(max) = max {
            if last.is_none_or(|l| l < max) {
                out.push(Behind {
                    sequence,
                    table,
                    column,
                    last,
                    max,
                });
            }
        }
    }
    Ok(out)
}

/// Sets a sequence so that its next value is past the column's MAX.
pub async fn fix(client: &Client, b: &Behind) -> Result<(), tokio_postgres::Error> {
    client
        .query_one(
            "SELECT setval($1::text::regclass, $2, true)",
            &[&b.sequence, &b.max],
        )
        .await
        .map(|_| ())
}
