//! The objects around a PostgreSQL source's data, as `pg_dump` writes
//! them: the pre-data section applied before the data in one transaction,
//! the post-data section split into its entries (pg_dump heads each with a
//! `-- Name: ...; Type: ...; Schema: ...` comment) and applied after it,
//! indexes several at a time, each entry recorded once done.

use std::collections::HashSet;
use std::process::Command;

use etl_base::sql::TableName;
use etl_model::ledger::SchemaClient;
use etl_pg::error::EtlError;
use etl_source::spec::PgDatabaseSpec;

/// `pg_dump`'s two sections around the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    PreData,
    PostData,
}

impl Section {
    fn arg(self) -> &'static str {
        match self {
            Section::PreData => "pre-data",
            Section::PostData => "post-data",
        }
    }
}

/// One object of a dump.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// pg_dump's type: `INDEX`, `CONSTRAINT`, `FK CONSTRAINT`, `TRIGGER`,
    /// `MATERIALIZED VIEW DATA`, ...
    pub kind: String,
    /// `schema name` as pg_dump names it (`orders orders_pkey` for a
    /// table's constraint).
    pub name: String,
    pub sql: String,
}

impl Entry {
    /// The entry's item in `etl.phase_log`.
    pub fn item(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }
}

/// A section as pg_dump writes it: the session settings its statements
/// assume, then its entries in dependency order.
#[derive(Debug, Default)]
pub struct Dump {
    pub preamble: String,
    pub entries: Vec<Entry>,
}

impl Dump {
    /// The whole section as one script.
    pub fn script(&self) -> String {
        let mut s = self.preamble.clone();
        for e in &self.entries {
            s.push_str(&e.sql);
            s.push('\n');
        }
        s
    }
}

/// What a whole-database migration dumps, resolved against the source's
/// catalog (pg_dump's own patterns fold case and differ from globs).
#[derive(Debug, Clone)]
pub struct Selection {
    /// Schemas dumped whole; empty: every schema.
    pub schemas: Vec<String>,
    /// Tables dumped alone (`source.tables` names them); empty: none.
    pub tables: Vec<TableName>,
    /// Tables left out (`source.exclude`).
    pub excluded: Vec<TableName>,
}

/// Runs `pg_dump --schema-only --section=...` of what `selection` holds.
pub fn run_pg_dump(
    spec: &PgDatabaseSpec,
    selection: &Selection,
    section: Section,
) -> Result<Dump, EtlError> {
    let mut cmd = Command::new("pg_dump");
    cmd.arg("--schema-only")
        .arg(format!("--section={}", section.arg()))
        .arg("--no-publications")
        .arg("--no-subscriptions")
        .arg("--exclude-schema=etl");
    if !spec.owners {
        cmd.arg("--no-owner");
    }
    if !spec.grants {
        cmd.arg("--no-privileges");
    }
    for t in &selection.tables {
        cmd.arg(format!("--table={}", pattern_literal(t)));
    }
    for s in &selection.schemas {
        cmd.arg(format!("--schema=\"{}\"", s.replace('"', "\"\"")));
    }
    for t in &selection.excluded {
        cmd.arg(format!("--exclude-table={}", pattern_literal(t)));
    }
    let env = spec
        .endpoint
        .libpq_env("etl pg_dump")
        .map_err(|e| EtlError::Config(e.to_string()))?;
    cmd.envs(env);
    let out = cmd.output().map_err(|e| {
        EtlError::Tool(format!(
            "cannot run pg_dump ({e}); a whole PostgreSQL database takes its DDL from pg_dump: install the PostgreSQL client of the source's version or newer (Debian: postgresql-client)"
        ))
    })?;
    if !out.status.success() {
        return Err(EtlError::Tool(format!(
            "pg_dump --section={} of {} failed: {}",
            section.arg(),
            spec.endpoint,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8(out.stdout)
        .map_err(|e| EtlError::Tool(format!("pg_dump wrote text that is not UTF-8: {e}")))?;
    Ok(split(&text))
}

/// A table as a pg_dump pattern that names exactly it: inside double
/// quotes every character is literal.
fn pattern_literal(t: &TableName) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    format!("{}.{}", quote(t.schema_or_public()), quote(&t.name))
}

/// A plain-format dump split at pg_dump's entry headers; psql's
/// meta-commands (`\restrict`, `\connect`) dropped, since the statements
/// go to the server.
pub fn split(text: &str) -> Dump {
    let mut dump = Dump::default();
    let mut current: Option<Entry> = None;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        // An entry's header: "--", "-- Name: n; Type: T; Schema: s; Owner: o", "--".
        if line == "--" && i + 2 < lines.len() && lines[i + 2] == "--" {
            if let Some((kind, name)) = header(lines[i + 1]) {
                dump.entries.extend(current.take());
                current = Some(Entry {
                    kind,
                    name,
                    sql: String::new(),
                });
                i += 3;
                continue;
            }
        }
        if !line.starts_with('\\') {
            let sql = match &mut current {
                Some(e) => &mut e.sql,
                None => &mut dump.preamble,
            };
            sql.push_str(line);
            sql.push('\n');
        }
        i += 1;
    }
    dump.entries.extend(current);
    for e in &mut dump.entries {
        e.sql = e.sql.trim().to_string();
    }
    dump.entries.retain(|e| !e.sql.is_empty());
    dump
}

/// `-- Name: orders orders_pkey; Type: CONSTRAINT; Schema: public; Owner: -`
/// as (kind, "schema name").
fn header(line: &str) -> Option<(String, String)> {
    let rest = line
        .strip_prefix("-- Name: ")
        .or_else(|| line.strip_prefix("-- Data for Name: "))?;
    let (name, rest) = rest.split_once("; Type: ")?;
    let (kind, rest) = rest.split_once("; Schema: ")?;
    let schema = rest.split_once("; ").map_or(rest, |(s, _)| s);
    Some((kind.to_string(), format!("{schema} {name}")))
}

/// The items of `phase` recorded as done for `pipeline`.
pub async fn done_items(
    db: SchemaClient<'_>,
    pipeline: &str,
    phase: &str,
) -> Result<HashSet<String>, EtlError> {
    let rows = db
        .query(
            "SELECT item FROM etl.phase_log WHERE pipeline = $1 AND phase = $2 AND status = 'done'",
            &[&pipeline, &phase],
        )
        .await
        .map_err(EtlError::pg("reading etl.phase_log"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_entry_headers_without_meta_commands() {
        let text = "\\restrict abc\n--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\n--\n-- Name: orders orders_pkey; Type: CONSTRAINT; Schema: public; Owner: -\n--\n\nALTER TABLE ONLY public.orders\n    ADD CONSTRAINT orders_pkey PRIMARY KEY (id);\n\n\n--\n-- Name: orders_at; Type: INDEX; Schema: sales; Owner: -\n--\n\nCREATE INDEX orders_at ON sales.orders USING btree (at);\n\n\\unrestrict abc\n";
        let d = split(text);
        assert!(d.preamble.contains("SET statement_timeout = 0;"));
        assert!(!d.preamble.contains("restrict"));
        assert_eq!(d.entries.len(), 2);
        assert_eq!(d.entries[0].kind, "CONSTRAINT");
        assert_eq!(d.entries[0].name, "public orders orders_pkey");
        assert!(d.entries[0].sql.ends_with("PRIMARY KEY (id);"));
        assert_eq!(d.entries[1].item(), "INDEX sales orders_at");
        assert_eq!(
            d.entries[1].sql,
            "CREATE INDEX orders_at ON sales.orders USING btree (at);"
        );
    }

    #[test]
    fn exact_table_patterns() {
        let t = |s: &str, n: &str| TableName {
            schema: Some(s.into()),
            name: n.into(),
        };
        assert_eq!(
            pattern_literal(&t("public", "orders")),
            "\"public\".\"orders\""
        );
        assert_eq!(pattern_literal(&t("s", "Odd\"*")), "\"s\".\"Odd\"\"*\"");
    }
}
