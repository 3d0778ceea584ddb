//! The differences turned into ordered statements, each graded by its risk
//! on the live table.
//!
//! Order: statements that drop come first, dependents before what they
//! depend on (from the target's `pg_depend`); then the ones that create or
//! change, what is depended on first (from the source's `pg_depend`).
//! Where `pg_depend` leaves two statements free, the kind of object
//! decides (schemas before types before tables ... before comments), then
//! the name, so the same difference always gives the same file.
//!
//! Grades ([`rules`]): every statement has a stable rule id, a risk and
//! reasons naming the lock it takes, whether it rewrites or scans the
//! table, and the table's size on the target. A statement that rewrites or
//! scans is one grade higher on a large table and one lower on a small
//! one, so the same change on 10 rows and on 100 million rows is graded
//! apart. Before a statement that can fail on the data (SET NOT NULL, a
//! unique index, a type change, a foreign key, a CHECK), [`check`] counts
//! the rows that would make it fail, on the target, and flags it.

mod pace;
mod rollback;
mod rules;
mod stage;

pub use pace::Pace;
pub use rollback::Rollback;
pub use stage::Stage;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use etl_base::human::duration;
use tokio_postgres::Client;

use super::catalog::Catalog;
use super::diff::{Change, Difference};
use super::rename::Rename;
use super::{Key, Kind, Risk, SchemaError};

/// The lock a statement takes on its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Lock {
    #[serde(rename = "ACCESS EXCLUSIVE")]
    AccessExclusive,
    #[serde(rename = "SHARE ROW EXCLUSIVE")]
    ShareRowExclusive,
    #[serde(rename = "SHARE")]
    Share,
    #[serde(rename = "SHARE UPDATE EXCLUSIVE")]
    ShareUpdateExclusive,
}

impl Lock {
    pub fn name(self) -> &'static str {
        match self {
            Lock::AccessExclusive => "ACCESS EXCLUSIVE",
            Lock::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            Lock::Share => "SHARE",
            Lock::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
        }
    }

    /// What the lock stops while it is held.
    pub fn blocks(self) -> &'static str {
        match self {
            Lock::AccessExclusive => "blocks reads and writes",
            Lock::ShareRowExclusive | Lock::Share => "blocks writes, reads go on",
            Lock::ShareUpdateExclusive => "reads and writes go on",
        }
    }
}

/// What a statement does to its table's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Catalog only.
    Brief,
    /// Reads every row.
    Scan,
    /// Writes the table anew.
    Rewrite,
    /// Reads every row and builds an index of them.
    Index,
}

/// The data a statement reads or writes on one table of the target.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Work {
    pub table: String,
    pub effect: Effect,
    /// The table's size on the target (with its indexes and TOAST).
    pub bytes: i64,
}

/// One statement of the plan. A staged change is kept in the target as
/// its steps in JSON, read back for the later stages.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Step {
    /// 1-based position in the plan.
    pub n: usize,
    #[serde(flatten)]
    pub key: Key,
    pub change: Change,
    pub sql: String,
    pub rule: Cow<'static, str>,
    pub risk: Risk,
    /// Its stage, in a plan cut into stages (`--phase`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    pub reasons: Vec<String>,
    pub lock: Option<Lock>,
    /// The tables whose locks it takes (for naming who blocks it).
    pub tables: Vec<String>,
    /// Whether it can run inside a transaction (`CONCURRENTLY` cannot).
    pub transactional: bool,
    /// Why it would fail on the target's data, counted by [`check`].
    pub fails: Option<String>,
    /// The statement that undoes it, where one exists.
    pub rollback: Option<String>,
    /// Run after a try that failed, before the next (a `CREATE INDEX
    /// CONCURRENTLY` stopped by a lock timeout leaves an INVALID index
    /// behind, which would make the next try fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cleanup: Option<String>,
    /// Steps (by `n`) that must have run first.
    pub after: Vec<usize>,
    /// The tables it scans, rewrites or indexes, and their sizes.
    pub work: Vec<Work>,
    /// How long its work takes at the target's measured [`Pace`] (not
    /// counting waits for locks), once [`Plan::estimate`] ran.
    pub estimate_secs: Option<f64>,
    /// Drop-phase statements come before the rest.
    #[serde(skip)]
    pub(crate) drop_phase: bool,
    /// Objects it needs besides its own key's dependencies.
    #[serde(skip)]
    pub(crate) needs: Vec<Key>,
    /// A query counting the rows that make it fail, and what to say (kept
    /// with a staged change: each stage counts again before it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) check: Option<(String, String)>,
}

/// How the plan is made.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// At or above: a large table (or 1 GiB).
    pub large_rows: i64,
    /// Below (and under 100 MiB): a small table.
    pub small_rows: i64,
    /// A type change as expand / backfill / contract steps.
    pub phased: bool,
    /// Every statement given its [`Stage`] (implies `phased`); a rename
    /// keeps the old name working until the contract stage.
    pub staged: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            large_rows: 10_000_000,
            small_rows: 100_000,
            phased: false,
            staged: false,
        }
    }
}

/// The ordered statements that make TO match FROM.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// How the estimates were made, once [`Plan::estimate`] ran.
    pub pace: Option<Pace>,
}

impl Plan {
    /// `to` is TO's catalog with `renames` already applied to it
    /// ([`Rename::rewrite`]); the renames run first.
    pub fn build(
        from: &Catalog,
        to: &Catalog,
        diffs: &[Difference],
        renames: &[Rename],
        options: Options,
    ) -> Plan {
        let steps = rules::Rules::new(from, to, diffs, renames, options).steps();
        let mut steps = order(steps, from, to);
        if options.staged {
            stage::assign(&mut steps);
        }
        Plan { steps, pace: None }
    }

    /// Each statement's time at the target's `pace`: the bytes it scans,
    /// rewrites or indexes over the rate measured for that work.
    pub fn estimate(&mut self, pace: Pace) {
        for step in &mut self.steps {
            step.estimate_secs = match step.work.is_empty() {
                true => None,
                false => Some(step.work.iter().map(|w| pace.secs(w)).sum()),
            };
        }
        self.pace = Some(pace);
    }

    /// The estimated time of the whole plan, when estimated.
    pub fn estimate_secs(&self) -> Option<f64> {
        self.pace.as_ref()?;
        Some(self.steps.iter().filter_map(|s| s.estimate_secs).sum())
    }

    /// Counts, on the target, the rows that would make a statement fail.
    pub async fn check(&mut self, client: &Client) -> Result<(), SchemaError> {
        if !self.steps.iter().any(|s| s.check.is_some()) {
            return Ok(());
        }
        client
            .batch_execute(CONVERTS)
            .await
            .map_err(SchemaError::pg("creating the conversion check function"))?;
        for step in &mut self.steps {
            let Some((sql, what)) = &step.check else {
                continue;
            };
            client
                .batch_execute("SET statement_timeout = '60s'")
                .await
                .map_err(SchemaError::pg("setting statement_timeout"))?;
            match client.query_one(sql.as_str(), &[]).await {
                Ok(row) => {
                    let n: i64 = row.get(0);
                    if n > 0 {
                        step.fails = Some(what.replace("{n}", &n.to_string()));
                    }
                }
                Err(e) => step.reasons.push(format!(
                    "not checked against the data: {}",
                    etl_pg::error::pg_message(&e)
                )),
            }
        }
        client
            .batch_execute("RESET statement_timeout")
            .await
            .map_err(SchemaError::pg("resetting statement_timeout"))?;
        Ok(())
    }

    pub fn highest(&self) -> Option<Risk> {
        self.steps.iter().map(|s| s.risk).max()
    }

    /// The plan as a SQL file: each statement after a comment with its
    /// number, grade, rule and reasons.
    pub fn to_sql(&self, header: &str) -> String {
        let mut out = String::new();
        out.push_str(&format!("-- {header}\n"));
        let mut counts: BTreeMap<Risk, usize> = BTreeMap::new();
        for s in &self.steps {
            *counts.entry(s.risk).or_default() += 1;
        }
        let counts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
        out.push_str(&format!(
            "-- {} statement{}{}\n",
            self.steps.len(),
            if self.steps.len() == 1 { "" } else { "s" },
            if counts.is_empty() {
                String::new()
            } else {
                format!(": {}", counts.join(", "))
            }
        ));
        if let (Some(pace), Some(total)) = (&self.pace, self.estimate_secs()) {
            let busy = self
                .steps
                .iter()
                .filter(|s| s.estimate_secs.is_some())
                .count();
            out.push_str(&format!(
                "-- estimated time: {} for the {busy} statement{} that scan, rewrite or index a table, the others brief (waits for locks not counted); {}\n",
                duration(total),
                if busy == 1 { "" } else { "s" },
                pace.basis()
            ));
        }
        let failing = self.steps.iter().filter(|s| s.fails.is_some()).count();
        if failing > 0 {
            out.push_str(&format!(
                "-- {failing} statement{} would fail on the target's data (FAILS below): fix the data first\n",
                if failing == 1 { "" } else { "s" }
            ));
        }
        for s in &self.steps {
            out.push('\n');
            out.push_str(&s.comment());
            out.push_str(&s.sql);
            out.push_str(";\n");
        }
        out
    }
}

impl Step {
    /// `-- [3] high rewrite-type-change: reason; reason` (the stage after
    /// the rule in a staged plan: `(contract)`), and a FAILS line.
    pub fn comment(&self) -> String {
        let mut out = format!(
            "-- [{}] {} {}{}: {}\n",
            self.n,
            self.risk,
            self.rule,
            self.stage.map_or(String::new(), |s| format!(" ({s})")),
            self.reasons.join("; ")
        );
        if let Some(secs) = self.estimate_secs {
            out.push_str(&format!("-- estimated: {}\n", duration(secs)));
        }
        if let Some(f) = &self.fails {
            out.push_str(&format!("-- FAILS: {f}\n"));
        }
        if !self.transactional {
            out.push_str("-- (runs outside a transaction)\n");
        }
        out
    }
}

/// `pg_temp.etl_bad_casts('table', 'column', 'type')`: how many values of
/// a column do not cast to a type, for a type change (PostgreSQL 15 has no
/// `pg_input_is_valid`). First the whole column is cast in one set-based
/// pass (the common case: every value converts, counted at scan speed);
/// only when that fails is each value tried alone (`etl_converts`, one
/// subtransaction per row) to count the bad ones. The arguments are
/// identifiers as the catalog printed them (quoted where needed).
const CONVERTS: &str = "CREATE OR REPLACE FUNCTION pg_temp.etl_converts(v anyelement, t text) RETURNS boolean \
     LANGUAGE plpgsql AS $f$ BEGIN EXECUTE format('SELECT $1::%s', t) USING v; RETURN true; \
     EXCEPTION WHEN others THEN RETURN false; END $f$; \
     CREATE OR REPLACE FUNCTION pg_temp.etl_bad_casts(tbl text, col text, t text) RETURNS bigint \
     LANGUAGE plpgsql AS $f$ DECLARE n bigint; BEGIN \
       BEGIN EXECUTE format('SELECT count(%s::%s) FROM %s', col, t, tbl); RETURN 0; \
       EXCEPTION WHEN others THEN NULL; END; \
       EXECUTE format('SELECT count(*) FROM %s WHERE %s IS NOT NULL AND NOT pg_temp.etl_converts(%s, %L)', tbl, col, col, t) INTO n; \
       RETURN n; END $f$";

/// Puts the steps in dependency order and numbers them.
fn order(steps: Vec<Step>, from: &Catalog, to: &Catalog) -> Vec<Step> {
    let edges = edges(&steps, from, to);
    let done = sorted(&steps, &edges);
    numbered(steps, &edges, &done)
}

/// Which steps must run before which: `edges[i]` holds the steps that
/// wait on step `i`.
fn edges(steps: &[Step], from: &Catalog, to: &Catalog) -> Vec<BTreeSet<usize>> {
    let n = steps.len();
    // Steps by key, per phase, in the order they were made.
    let mut by_key: HashMap<(bool, &Key), Vec<usize>> = HashMap::new();
    for (i, s) in steps.iter().enumerate() {
        by_key.entry((s.drop_phase, &s.key)).or_default().push(i);
    }
    let mut edges: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    let add = |before: usize, after: usize, edges: &mut Vec<BTreeSet<usize>>| {
        if before != after {
            edges[before].insert(after);
        }
    };
    // Within a key and phase, as made.
    for list in by_key.values() {
        for w in list.windows(2) {
            add(w[0], w[1], &mut edges);
        }
    }
    // What each object needs: its dependencies, its table, its schema.
    let needs = |s: &Step, catalog: &Catalog| -> Vec<Key> {
        let mut keys: Vec<Key> = catalog.depends.get(&s.key).cloned().unwrap_or_default();
        keys.extend(s.needs.iter().cloned());
        if let Some(table) = catalog.table_of(&s.key).filter(|t| *t != s.key.name) {
            keys.push(Key::new(Kind::Table, &table));
        }
        if let Some(schema) = schema_of(&s.key) {
            keys.push(Key::new(Kind::Schema, &schema));
        }
        keys
    };
    for (i, s) in steps.iter().enumerate() {
        if s.drop_phase {
            // Drops: after the drops of what depends on this (on TO).
            for d in needs(s, to) {
                for &j in by_key.get(&(true, &d)).into_iter().flatten() {
                    add(i, j, &mut edges);
                }
                // A view (or other object) on a table: dropped before the
                // table's columns it may read.
                if d.kind == Kind::Table && s.key.kind != Kind::Column {
                    for (j, o) in steps.iter().enumerate() {
                        if o.drop_phase
                            && o.key.kind == Kind::Column
                            && super::catalog::split_member(&o.key.name).0 == d.name
                        {
                            add(i, j, &mut edges);
                        }
                    }
                }
            }
        } else {
            for d in needs(s, from) {
                for &j in by_key.get(&(false, &d)).into_iter().flatten() {
                    // A later step of the object this one needs that itself
                    // waits on this one (a serial's sequence made OWNED BY
                    // the new table whose default uses it) comes after.
                    if !steps[j].needs.contains(&s.key) {
                        add(j, i, &mut edges);
                    }
                }
            }
        }
    }
    // An object dropped and made again: made after it is dropped. (Every
    // drop comes before every create anyway: drops depend only on drops,
    // and the ready drops are taken first.)
    for (i, s) in steps.iter().enumerate() {
        if s.drop_phase {
            for &j in by_key.get(&(false, &s.key)).into_iter().flatten() {
                add(i, j, &mut edges);
            }
        }
    }
    // Members of a table: columns added before the constraints, indexes
    // and triggers that may use them; dropped after them.
    for (i, s) in steps.iter().enumerate() {
        if s.key.kind != Kind::Column {
            continue;
        }
        let table = super::catalog::split_member(&s.key.name).0;
        for (j, o) in steps.iter().enumerate() {
            let member = matches!(o.key.kind, Kind::Constraint | Kind::Index | Kind::Trigger)
                && o.tables.first().is_some_and(|t| t == table);
            if member && o.drop_phase == s.drop_phase {
                match s.drop_phase || s.change == Change::Removed {
                    true => add(j, i, &mut edges),
                    false => add(i, j, &mut edges),
                }
            }
        }
    }
    edges
}

/// The steps' indexes in an order the edges allow (Kahn's algorithm).
fn sorted(steps: &[Step], edges: &[BTreeSet<usize>]) -> Vec<usize> {
    let n = steps.len();
    // Kahn's algorithm; among the ready, renames first (the other
    // statements name the objects by their new names), then drops, then by
    // kind and the order made.
    let mut indegree = vec![0usize; n];
    for e in edges {
        for &j in e {
            indegree[j] += 1;
        }
    }
    let rank = |i: usize| {
        let phase = match (steps[i].rule.as_ref(), steps[i].drop_phase) {
            (
                "rename-table" | "rename-column" | "phased-rename-table" | "phased-rename-column",
                _,
            ) => 0u8,
            (_, true) => 1,
            (_, false) => 2,
        };
        (phase, steps[i].key.kind, i)
    };
    let mut ready: BTreeSet<(u8, Kind, usize)> =
        (0..n).filter(|&i| indegree[i] == 0).map(rank).collect();
    let mut done = Vec::with_capacity(n);
    let mut placed = vec![false; n];
    while done.len() < n {
        let next = match ready.pop_first() {
            Some((_, _, i)) => i,
            // A cycle: take the first unplaced (the server will say if it
            // cannot be run in that order).
            None => {
                let i = (0..n)
                    .find(|&i| !placed[i])
                    .expect("fewer placed than steps");
                tracing::warn!(step = %steps[i].key, "Dependency cycle in the plan; ordered by kind there.");
                i
            }
        };
        if placed[next] {
            continue;
        }
        placed[next] = true;
        done.push(next);
        for &j in &edges[next] {
            indegree[j] = indegree[j].saturating_sub(1);
            if indegree[j] == 0 && !placed[j] {
                ready.insert(rank(j));
            }
        }
    }
    done
}

/// The steps in the order `done`, each numbered and naming the numbers of
/// the steps it waits on.
fn numbered(steps: Vec<Step>, edges: &[BTreeSet<usize>], done: &[usize]) -> Vec<Step> {
    let n = steps.len();
    let position: HashMap<usize, usize> =
        done.iter().enumerate().map(|(p, &i)| (i, p + 1)).collect();
    let mut slots: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(n);
    for &i in done {
        let mut s = slots[i].take().expect("each step placed once");
        s.n = position[&i];
        s.after = edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.contains(&i))
            .map(|(j, _)| position[&j])
            .collect();
        s.after.sort_unstable();
        out.push(s);
    }
    out
}

/// The schema an object lives in (the name before the first unquoted dot).
fn schema_of(key: &Key) -> Option<String> {
    if matches!(key.kind, Kind::Schema | Kind::Extension | Kind::Comment) {
        return None;
    }
    let mut quoted = false;
    for (i, ch) in key.name.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            '.' if !quoted => return Some(key.name[..i].to_string()),
            '(' if !quoted => return None,
            _ => {}
        }
    }
    None
}
