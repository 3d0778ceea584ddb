//! Every snippet in the README and the user guide (`docs/`) is checked, so
//! the docs cannot drift from the code: a `toml` block that is a whole
//! pipeline is validated by `etl validate`; any other `toml` block is
//! validated inside a pipeline (its `[source]`, `[[sinks]]` or
//! `[[transforms]]` in place of a base pipeline's, its other tables merged
//! into the base's); every `etl ...` line of a `sh` block is parsed by the
//! command line's own definitions. Blocks marked `text` are synopses and
//! output, read by people only.

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::support::{etl_in, repo};

/// `(file, line, language, text)` of each fenced block.
fn blocks(file: &Path) -> Vec<(String, usize, String, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let name = file.strip_prefix(repo()).unwrap().display().to_string();
    let mut out = Vec::new();
    let mut open: Option<(usize, String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => open = Some((i + 1, lang.trim().to_string(), String::new())),
            (Some(_), Some(_)) => {
                let (at, lang, body) = open.take().unwrap();
                out.push((name.clone(), at, lang, body));
            }
            (Some((_, _, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{name}: a fenced block is not closed");
    out
}

fn pages() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    for e in std::fs::read_dir(repo().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    files.sort();
    files
}

/// The pipeline a fragment is checked inside.
const BASE: &str = r#"
name = "docs"
[source]
type = "postgres"
url = "${ETL_SRC_URL}"
table = "tenant.tbl_data_timeseries"
[chunks]
time_column = "created_time"
[[sinks]]
type = "postgres"
url = "${ETL_DST_URL}"
table = "tenant.tbl_data_timeseries"
"#;

fn with_base(mut fragment: toml::Table) -> toml::Table {
    let mut base: toml::Table = toml::from_str(BASE).unwrap();
    // A source of many tables (a database, an Access file, ODBC tables):
    // no time windows, a target per table.
    if let Some(source) = fragment.get("source").and_then(|s| s.as_table()) {
        if source.contains_key("tables") {
            base["chunks"].as_table_mut().unwrap().remove("time_column");
            let table = match source.get("type").and_then(|t| t.as_str()) {
                Some("postgres") => "{schema}.{table}",
                _ => "public.{table}",
            };
            base["sinks"].as_array_mut().unwrap()[0]["table"] = table.into();
        }
    }
    // A PostgreSQL sink shown without its URL gets the base's.
    if let Some(sinks) = fragment.get_mut("sinks").and_then(|s| s.as_array_mut()) {
        for sink in sinks.iter_mut().filter_map(|s| s.as_table_mut()) {
            if sink.get("type").and_then(|t| t.as_str()) == Some("postgres") {
                sink.entry("url").or_insert("${ETL_DST_URL}".into());
            }
        }
    }
    for (k, v) in fragment {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(f)) if k != "source" => {
                b.extend(f);
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
    base
}

/// Splits a command line as a shell would (quotes, no expansion).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (None, '#') if word.is_empty() && !any => break,
            (None, c) => word.push(c),
        }
    }
    if any || !word.is_empty() {
        out.push(word);
    }
    out
}

#[test]
fn every_snippet_in_the_readme_and_the_guide_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = crate::odbc::fixtures();
    let access = fixtures.join("access/Northwind.accdb");
    let env = [
        ("ETL_SRC_URL", "postgresql://etl@127.0.0.1:5432/src"),
        ("ETL_DST_URL", "postgresql://etl@127.0.0.1:5432/dst"),
        ("ETL_ACCESS_FILE", access.to_str().unwrap()),
        ("ETL_STAGING", dir.path().to_str().unwrap()),
    ];
    let (mut pipelines, mut fragments, mut commands, mut synopses) = (0, 0, 0, 0);
    let mut problems = Vec::new();
    for page in pages() {
        for (file, line, lang, body) in blocks(&page) {
            let at = format!("{file}:{line}");
            match lang.as_str() {
                "toml targets" => {
                    // `etl schema`'s targets file: each target resolves.
                    let path = dir.path().join("etl-targets.toml");
                    std::fs::write(&path, &body).unwrap();
                    let table: toml::Table = toml::from_str(&body).unwrap();
                    for name in table["targets"].as_table().unwrap().keys() {
                        if let Err(e) = etl_schema::targets::resolve(name, Some(&path)) {
                            problems.push(format!("{at}: target {name}: {e}"));
                        }
                        fragments += 1;
                    }
                }
                "toml" => {
                    let table: toml::Table = match toml::from_str(&body) {
                        Ok(t) => t,
                        Err(e) => {
                            problems.push(format!("{at}: not TOML: {e}"));
                            continue;
                        }
                    };
                    let whole = table.contains_key("name") && table.contains_key("source");
                    let text = match whole {
                        true => body.clone(),
                        false => toml::to_string(&with_base(table)).unwrap(),
                    };
                    match whole {
                        true => pipelines += 1,
                        false => fragments += 1,
                    }
                    let path = dir.path().join("snippet.toml");
                    std::fs::write(&path, &text).unwrap();
                    let out = etl_in(dir.path(), &["validate", path.to_str().unwrap()], &env);
                    if out.code != 0 {
                        problems.push(format!("{at}: etl validate: {}\n{text}", out.stderr));
                    }
                }
                "sh" => {
                    for cmd in body
                        .lines()
                        .map(str::trim)
                        .filter(|l| l.starts_with("etl "))
                    {
                        commands += 1;
                        if let Err(e) = etl::cli::Args::try_parse_from(words(cmd)) {
                            problems.push(format!("{at}: {cmd}\n{e}"));
                        }
                    }
                }
                "text" => {
                    // Synopses: each `etl` line's command and --flags exist.
                    for cmd in body
                        .lines()
                        .map(str::trim)
                        .filter(|l| l.starts_with("etl "))
                    {
                        synopses += 1;
                        if let Err(e) = synopsis(cmd) {
                            problems.push(format!("{at}: {cmd}\n{e}"));
                        }
                    }
                }
                "" => problems.push(format!(
                    "{at}: a block without a language; mark it toml, sh (checked) or text (synopsis, output)"
                )),
                _ => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    assert!(
        pipelines >= 3 && fragments >= 10 && commands >= 10 && synopses >= 30,
        "{pipelines} pipelines, {fragments} fragments, {commands} commands, {synopses} synopses"
    );
}

/// A synopsis line (`etl run pipeline.toml [--key KEY] ...`, `etl schema
/// diff|plan|apply FROM TO`): its command, subcommands and every `--flag`
/// it names exist.
fn synopsis(line: &str) -> Result<(), String> {
    use clap::CommandFactory;
    let root = etl::cli::Args::command();
    let tokens: Vec<String> = words(line);
    let name = tokens.get(1).ok_or("no command")?;
    let mut commands: Vec<&clap::Command> = vec![root
        .find_subcommand(name)
        .ok_or_else(|| format!("no command {name:?}"))?];
    if commands[0].has_subcommands() {
        if let Some(next) = tokens.get(2) {
            commands = next
                .split('|')
                .map(|n| {
                    commands[0]
                        .find_subcommand(n)
                        .ok_or_else(|| format!("no command {name} {n}"))
                })
                .collect::<Result<_, _>>()?;
        }
    }
    let flags = tokens
        .iter()
        .flat_map(|t| t.split('|'))
        .map(|t| t.trim_start_matches('['))
        .filter_map(|t| t.strip_prefix("--"))
        .map(|t| t.split(['=', ']', ',']).next().unwrap_or(t));
    for flag in flags {
        let known = commands.iter().any(|c| {
            c.get_arguments().any(|a| a.get_long() == Some(flag))
                || root.get_arguments().any(|a| a.get_long() == Some(flag))
                || flag == "help"
        });
        if !known {
            return Err(format!("--{flag} is not an option of etl {name}"));
        }
    }
    Ok(())
}

#[test]
fn shell_words_split_as_a_shell_splits_them() {
    assert_eq!(
        words("etl copy 'Driver={X};A=b c;' postgresql://h/db   # a comment"),
        ["etl", "copy", "Driver={X};A=b c;", "postgresql://h/db"]
    );
    assert_eq!(
        words("etl run p.toml --key \"\""),
        ["etl", "run", "p.toml", "--key", ""]
    );
    assert!(synopsis("etl run pipeline.toml [--key KEY] [--restart]").is_ok());
    assert!(synopsis("etl schema diff|plan FROM TO [--json]").is_ok());
    assert!(synopsis("etl run pipeline.toml [--nope]").is_err());
    assert!(synopsis("etl schema diff|nope FROM TO").is_err());
    assert!(synopsis("etl nope").is_err());
}
