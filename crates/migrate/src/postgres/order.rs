//! Which post-data entries wait for which, so that `workers` of them run
//! at once wherever they do not share a table: an index on one table
//! builds while a foreign key between two others is checked, and a long
//! GIN build no longer leaves the other workers idle until it ends.
//!
//! pg_dump writes the section in dependency order but says nothing of the
//! dependencies in plain format, so they are read back from the entries'
//! statements: an entry waits for every earlier one that touches one of
//! its tables (an index or key's table; a foreign key's table and the one
//! it references; an index attached to its parent's: both indexes'
//! tables, known from the entries that created them); two index builds
//! on one table do not wait for each other (both take SHARE locks). An entry whose
//! tables cannot be told (a rule, a comment, a policy, a statistics
//! object...) waits for everything before it and everything after waits
//! for it, which is pg_dump's own order. pg_restore -j schedules from the
//! archive's recorded dependencies the same way; etl applies entries one
//! by one to record each in `etl.phase_log`, so it keeps its own order.

use std::collections::HashMap;

use super::dump::Entry;

/// For each entry, the earlier entries it waits for (indexes into
/// `entries`), only the nearest of them: an entry that waits for an
/// earlier one also waits, through it, for everything that one waits for.
/// A table's entries since the last entry that is not an index build:
/// that entry, and the index builds after it. An entry whose tables are
/// unknown waits for the one before it of its kind and everything since,
/// and the entries after it wait for it alone. The lists stay as long as
/// the entries on one table between two such barriers, never the whole
/// section (a schema with thousands of comments on indexes would make
/// them quadratic).
pub(super) fn waits(entries: &[&Entry]) -> Vec<Vec<usize>> {
    /// A table's latest entry that is not an index build, and the index
    /// builds on it since.
    #[derive(Default)]
    struct Latest {
        other: Option<usize>,
        indexes: Vec<usize>,
    }
    let mut index_tables: HashMap<String, String> = HashMap::new();
    let mut latest: HashMap<String, Latest> = HashMap::new();
    let mut barrier: Option<usize> = None;
    let mut waits = Vec::with_capacity(entries.len());
    for (k, e) in entries.iter().enumerate() {
        let mine = touched(e, &index_tables);
        if let Some((index, table)) = created_index(e) {
            index_tables.insert(index, table);
        }
        let mut wait: Vec<usize> = barrier.into_iter().collect();
        match mine {
            None => {
                wait.extend(barrier.map_or(0, |b| b + 1)..k);
                barrier = Some(k);
                latest.clear();
            }
            Some(mut tables) => {
                // A key referencing its own table names it twice.
                tables.sort_unstable();
                tables.dedup();
                let index = e.kind == "INDEX";
                for t in tables {
                    let l = latest.entry(t).or_default();
                    wait.extend(l.other);
                    if index {
                        l.indexes.push(k);
                    } else {
                        // Index builds on one table share it (SHARE locks):
                        // only what is not an index build waits for them.
                        wait.append(&mut l.indexes);
                        l.other = Some(k);
                    }
                }
            }
        }
        wait.sort_unstable();
        wait.dedup();
        waits.push(wait);
    }
    waits
}

/// Each entry's cost plus the longest chain of entries that wait on it:
/// starting the ready entry with the longest chain first keeps the last
/// to finish short (a table's key before the long GIN build waiting on it).
pub(super) fn critical_paths(costs: &[i64], waits: &[Vec<usize>]) -> Vec<i64> {
    let mut path = costs.to_vec();
    // An entry waits only on earlier ones: from the last back, each
    // entry's chain is whole before it is handed on.
    for k in (0..costs.len()).rev() {
        for &j in &waits[k] {
            path[j] = path[j].max(costs[j] + path[k]);
        }
    }
    path
}

/// The tables an entry touches, as pg_dump names them (schema-qualified,
/// quoted where needed); `None` when the entry is not one whose tables
/// etl can tell.
fn touched(e: &Entry, index_tables: &HashMap<String, String>) -> Option<Vec<String>> {
    let words = words(&e.sql);
    let table = |w: &str| Some(w.to_string());
    match e.kind.as_str() {
        "INDEX" | "TRIGGER" => Some(vec![table(after_on(&words)?)?]),
        "CONSTRAINT" => Some(vec![table(altered_table(&words)?)?]),
        "FK CONSTRAINT" => {
            let referenced = words.iter().position(|w| *w == "REFERENCES")?;
            Some(vec![
                table(altered_table(&words)?)?,
                table(words.get(referenced + 1)?)?,
            ])
        }
        "INDEX ATTACH" => {
            // ALTER INDEX parent ATTACH PARTITION child
            let (parent, child) = match words.as_slice() {
                ["ALTER", "INDEX", parent, "ATTACH", "PARTITION", child, ..] => (parent, child),
                _ => return None,
            };
            Some(vec![
                index_tables.get(*parent)?.clone(),
                index_tables.get(*child)?.clone(),
            ])
        }
        _ => None,
    }
}

/// The index an entry creates (`schema.name`) and its table.
fn created_index(e: &Entry) -> Option<(String, String)> {
    let words = words(&e.sql);
    let (name, table) = match e.kind.as_str() {
        // CREATE [UNIQUE] INDEX name ON [ONLY] table
        "INDEX" => (
            *words.iter().skip_while(|w| **w != "INDEX").nth(1)?,
            after_on(&words)?,
        ),
        // ALTER TABLE [ONLY] table ADD CONSTRAINT name PRIMARY KEY | UNIQUE | EXCLUDE
        "CONSTRAINT" => {
            let at = words.iter().position(|w| *w == "CONSTRAINT")?;
            (*words.get(at + 1)?, altered_table(&words)?)
        }
        _ => return None,
    };
    // An index lives in its table's schema; pg_dump names it unqualified.
    let (schema, _) = etl_schema::catalog::split_member(table);
    if schema.is_empty() {
        return None;
    }
    Some((format!("{schema}.{name}"), table.to_string()))
}

/// The table of `ALTER TABLE [ONLY] table ...`.
fn altered_table<'a>(words: &[&'a str]) -> Option<&'a str> {
    match words {
        ["ALTER", "TABLE", "ONLY", table, ..] | ["ALTER", "TABLE", table, ..] => Some(table),
        _ => None,
    }
}

/// The table after the first `ON` (`CREATE INDEX name ON [ONLY] table`,
/// `CREATE TRIGGER name AFTER INSERT ON table`).
fn after_on<'a>(words: &[&'a str]) -> Option<&'a str> {
    let at = words.iter().position(|w| *w == "ON")?;
    match words.get(at + 1)? {
        &"ONLY" => words.get(at + 2).copied(),
        table => Some(table),
    }
}

/// A statement's words: split at blanks, parentheses, commas and
/// semicolons outside double quotes (`public."a b"(id)` is one word and a
/// parenthesis).
fn words(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = None;
    for (i, c) in sql.char_indices() {
        let boundary = !quoted && (c.is_whitespace() || matches!(c, '(' | ')' | ',' | ';'));
        if c == '"' {
            quoted = !quoted;
        }
        match (boundary, start) {
            (true, Some(s)) => {
                out.push(&sql[s..i]);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(&sql[s..]);
    }
    out
}

/// How much longer than a btree of the same table an entry takes to
/// build, roughly: a GIN index (jsonb, arrays, tsvector) several times,
/// a GiST about twice. Of the entries ready, the costliest starts first:
/// the longest build is the phase's critical path.
pub(super) fn weight(e: &Entry) -> i64 {
    let words = words(&e.sql);
    match words
        .iter()
        .position(|w| *w == "USING")
        .and_then(|at| words.get(at + 1))
    {
        Some(&"gin") => 4,
        Some(&"gist") | Some(&"spgist") => 2,
        _ => 1,
    }
}

/// The table an index, key or foreign key is built on or checks.
pub(super) fn entry_table(e: &Entry) -> Option<String> {
    let words = words(&e.sql);
    match e.kind.as_str() {
        "INDEX" => after_on(&words).map(str::to_string),
        "CONSTRAINT" | "FK CONSTRAINT" => altered_table(&words).map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, sql: &str) -> Entry {
        Entry {
            kind: kind.into(),
            name: String::new(),
            sql: sql.into(),
        }
    }

    #[test]
    fn the_table_of_an_index_or_a_key() {
        let table = |kind, sql| entry_table(&entry(kind, sql));
        assert_eq!(
            table(
                "INDEX",
                "CREATE INDEX kinds_tags ON public.kinds USING gin (tags);"
            )
            .as_deref(),
            Some("public.kinds")
        );
        assert_eq!(
            table(
                "INDEX",
                "CREATE UNIQUE INDEX \"x ON y\" ON ONLY public.\"Odd Name\" USING btree (a);"
            )
            .as_deref(),
            Some("public.\"Odd Name\"")
        );
        assert_eq!(
            table(
                "CONSTRAINT",
                "ALTER TABLE ONLY sales.orders\n    ADD CONSTRAINT orders_pkey PRIMARY KEY (id);"
            )
            .as_deref(),
            Some("sales.orders")
        );
        assert_eq!(
            table("RULE", "CREATE RULE r AS ON INSERT TO t DO NOTHING;"),
            None
        );
        let weight = |sql| weight(&entry("INDEX", sql));
        assert_eq!(weight("CREATE INDEX a ON public.t USING gin (payload);"), 4);
        assert_eq!(
            weight("CREATE INDEX \"USING gin\" ON public.t USING btree (a);"),
            1
        );
        assert_eq!(
            weight("ALTER TABLE ONLY public.t ADD CONSTRAINT x EXCLUDE USING gist (r WITH &&);"),
            2
        );
    }

    /// pg_dump's post-data order for a partitioned table, two keyed
    /// tables and foreign keys between them, then a rule.
    #[test]
    fn entries_wait_for_the_earlier_ones_on_their_tables() {
        let entries = [
            entry("CONSTRAINT", "ALTER TABLE ONLY public.orders\n    ADD CONSTRAINT orders_pkey PRIMARY KEY (id);"),
            entry("CONSTRAINT", "ALTER TABLE ONLY public.\"Odd.Name\"\n    ADD CONSTRAINT \"odd pkey\" PRIMARY KEY (id);"),
            entry("INDEX", "CREATE INDEX events_kind ON ONLY public.events USING btree (kind);"),
            entry("INDEX", "CREATE INDEX events_q1_kind_idx ON public.events_q1 USING btree (kind);"),
            entry("INDEX", "CREATE INDEX items_gin ON public.items USING gin (tags);"),
            entry("INDEX ATTACH", "ALTER INDEX public.events_kind ATTACH PARTITION public.events_q1_kind_idx;"),
            entry("FK CONSTRAINT", "ALTER TABLE ONLY public.items\n    ADD CONSTRAINT items_order_fkey FOREIGN KEY (order_id) REFERENCES public.orders(id);"),
            entry("FK CONSTRAINT", "ALTER TABLE public.\"Odd.Name\"\n    ADD CONSTRAINT odd_fkey FOREIGN KEY (e) REFERENCES public.\"Odd.Name\"(id) DEFERRABLE;"),
            entry("TRIGGER", "CREATE TRIGGER count_it AFTER INSERT ON public.events_q1 FOR EACH ROW EXECUTE FUNCTION public.f();"),
            entry("RULE", "CREATE RULE r AS ON INSERT TO public.orders DO INSTEAD NOTHING;"),
            entry("INDEX", "CREATE INDEX orders_late ON public.orders USING btree (placed);"),
        ];
        let refs: Vec<&Entry> = entries.iter().collect();
        let waits = waits(&refs);
        let none: Vec<usize> = vec![];
        assert_eq!(waits[0], none);
        assert_eq!(waits[1], none);
        assert_eq!(waits[2], none);
        assert_eq!(waits[3], none);
        assert_eq!(waits[4], none, "the GIN build waits for no other table");
        assert_eq!(
            waits[5],
            vec![2, 3],
            "an attach waits for both indexes' tables"
        );
        assert_eq!(
            waits[6],
            vec![0, 4],
            "a foreign key waits for both its tables"
        );
        assert_eq!(waits[7], vec![1], "a quoted name with a dot is one table");
        assert_eq!(
            waits[8],
            vec![5],
            "the index build on events_q1 is waited for through the attach"
        );
        assert_eq!(
            waits[9],
            (0..9).collect::<Vec<_>>(),
            "a rule waits for all before it"
        );
        assert_eq!(
            waits[10],
            vec![9],
            "and everything after waits for it (and through it for all before)"
        );
        let extra = entry(
            "INDEX",
            "CREATE INDEX events_q1_gin ON public.events_q1 USING gin (p);",
        );
        let both = [&entries[3], &extra];
        assert_eq!(
            super::waits(&both)[1],
            none,
            "two index builds on one table"
        );
        // Many entries of unknown tables (comments on indexes) between
        // index builds: each list holds the nearest entries only.
        let many: Vec<Entry> = (0..400)
            .map(|n| match n % 2 {
                0 => entry(
                    "INDEX",
                    &format!("CREATE INDEX i{n} ON public.t USING btree (a);"),
                ),
                _ => entry(
                    "COMMENT",
                    &format!("COMMENT ON INDEX public.i{} IS 'x';", n - 1),
                ),
            })
            .collect();
        let refs: Vec<&Entry> = many.iter().collect();
        let waits = super::waits(&refs);
        assert_eq!(waits[300], vec![299]);
        assert_eq!(waits[301], vec![299, 300]);
        assert!(waits.iter().map(Vec::len).sum::<usize>() < 2 * many.len());
        // Costs 1, 1, 5 where the third waits on the first: the first's chain is 6.
        let paths = critical_paths(&[1, 1, 5], &[vec![], vec![], vec![0]]);
        assert_eq!(paths, vec![6, 1, 5]);
    }
}
