//! `etl copy FROM TO`: the common moves without writing a pipeline file
//! first. FROM and TO become the pipeline they stand for, which is written
//! to `.etl/copy/<name>.toml` (or only printed, `--print-pipeline`, to go
//! on from) and run as `etl run` runs it: the same ledger, resume, checks
//! and summary. The pipeline's name is `copy-` and a hash of what was
//! asked, so the same command again resumes the same run, and two copies
//! into one database never share ledger rows.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{Outcome, RunFlags};

/// What `etl copy` was asked.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// A PostgreSQL URL, an ODBC connection string (Driver=...;), an
    /// Access file (.accdb, .mdb), a SQLite file (.sqlite, .db), a CSV
    /// file or a folder of them (each file its own table), a Parquet file
    /// or a folder of them (one table, named after it).
    pub from: String,
    /// A PostgreSQL URL, or a folder: each table (or CSV file) CSV files
    /// (FOLDER/TABLE/all.csv; a big table's key ranges a file each).
    pub to: String,
    /// Only these tables (names or glob patterns; repeatable). Default: all.
    #[arg(long = "tables", value_name = "PATTERN")]
    pub tables: Vec<String>,
    /// Leave out these tables (names or glob patterns; repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Create the tables (a PostgreSQL source: its whole schema), load nothing.
    #[arg(long, conflicts_with = "data_only")]
    pub schema_only: bool,
    /// Load into tables that exist; create nothing. Their foreign keys
    /// and triggers are set aside for the load and put back after
    /// (fk_handling = "drop-recreate").
    #[arg(long)]
    pub data_only: bool,
    /// The code page of CSV files or of an ODBC source's narrow text
    /// (cp949, euc-kr, windows-1252, ...). Default UTF-8.
    #[arg(long, value_name = "LABEL")]
    pub encoding: Option<String>,
    /// Worker threads.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Redo every chunk, also those an earlier run of the same command committed.
    #[arg(long)]
    pub restart: bool,
    /// Print the pipeline it stands for and run nothing (to go on from).
    #[arg(long)]
    pub print_pipeline: bool,
}

/// What FROM names.
#[derive(Debug, PartialEq)]
enum From {
    Postgres(String),
    Odbc(String),
    Access(PathBuf),
    Sqlite(PathBuf),
    /// A CSV file, or a folder's `*.csv` files: each its own table.
    Csv(String),
    /// A Parquet file, or a folder's `*.parquet` files (in its subfolders
    /// too, as etl stages them): one table, named after the folder.
    Parquet {
        glob: String,
        table: String,
    },
}

fn is_url(s: &str) -> bool {
    s.starts_with("postgresql://") || s.starts_with("postgres://")
}

fn has_ext(path: &Path, exts: &[&str]) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    exts.iter().any(|e| name.ends_with(e))
}

fn classify(from: &str) -> anyhow::Result<From> {
    if is_url(from) {
        return Ok(From::Postgres(from.to_string()));
    }
    let lower = from.to_ascii_lowercase();
    if lower.contains("driver=") || lower.contains("dsn=") {
        return Ok(From::Odbc(from.to_string()));
    }
    let path = PathBuf::from(from);
    if has_ext(&path, &[".accdb", ".mdb"]) {
        anyhow::ensure!(path.is_file(), "etl copy: no Access file at {from}");
        return Ok(From::Access(path));
    }
    if has_ext(&path, &[".sqlite", ".sqlite3", ".db"]) {
        anyhow::ensure!(path.is_file(), "etl copy: no SQLite file at {from}");
        return Ok(From::Sqlite(path));
    }
    if has_ext(&path, &[".csv", ".csv.gz", ".csv.zst"]) {
        anyhow::ensure!(path.is_file(), "etl copy: no CSV file at {from}");
        return Ok(From::Csv(from.to_string()));
    }
    // The table a Parquet file or folder goes into: its name in lower
    // case, other than letters, digits and _ as _.
    let table = |p: &Path| {
        let name: String = p
            .with_extension("")
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        match name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            true => format!("public.{name}"),
            false => format!("public.t_{name}"),
        }
    };
    if has_ext(&path, &[".parquet"]) {
        anyhow::ensure!(path.is_file(), "etl copy: no Parquet file at {from}");
        return Ok(From::Parquet {
            glob: from.to_string(),
            table: table(&path),
        });
    }
    if path.is_dir() {
        let csv = std::fs::read_dir(&path)?
            .filter_map(Result::ok)
            .any(|e| has_ext(&e.path(), &[".csv", ".csv.gz", ".csv.zst"]));
        if csv {
            return Ok(From::Csv(format!("{}/*.csv*", from.trim_end_matches('/'))));
        }
        let glob = format!("{}/**/*.parquet", from.trim_end_matches('/'));
        if glob::glob(&glob).is_ok_and(|mut g| g.next().is_some()) {
            return Ok(From::Parquet {
                glob,
                table: table(&std::fs::canonicalize(&path)?),
            });
        }
        anyhow::bail!("etl copy: the folder {from} holds no *.csv or *.parquet file");
    }
    anyhow::bail!(
        "etl copy: cannot tell what {from:?} is; give a PostgreSQL URL (postgresql://...), an ODBC connection string (Driver=...;...), an Access file (.accdb, .mdb), a SQLite file (.sqlite, .db), a CSV or Parquet file or a folder of them"
    )
}

/// FNV-1a, 64 bits: a name that is the same for the same command on every
/// build (the standard library's hasher makes no such promise).
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

/// The pipeline `etl copy` stands for, as TOML.
fn pipeline(a: &CopyArgs) -> anyhow::Result<(String, String)> {
    let from = classify(&a.from)?;
    let into_files = !is_url(&a.to);
    no_passwords(a)?;
    anyhow::ensure!(
        !into_files || !(a.schema_only || a.data_only),
        "etl copy: --schema-only and --data-only are for a PostgreSQL TO; into a folder each table is a CSV file"
    );
    let name = format!(
        "copy-{:016x}",
        fnv(&format!(
            "{}\n{}\n{:?}\n{:?}\n{}\n{:?}",
            a.from, a.to, a.tables, a.exclude, a.data_only, a.encoding
        ))
    );
    let source = source(a, &from)?;
    let mut chunks = Table::new();
    if let Some(w) = a.workers {
        chunks.insert("workers".into(), (w as i64).into());
    }
    chunks.insert(
        "failed_csv".into(),
        format!(".etl/copy/{name}.failed.csv").into(),
    );
    let sink = sink(a, &from, into_files);
    let text = format!(
        "# Written by: etl copy {} {}{}\n# Run it again with etl run, or change it first.\n\
         name = {}\n\n[source]\n{}\n[chunks]\n{}\n[[sinks]]\n{}",
        a.from,
        a.to,
        [
            a.tables
                .iter()
                .map(|t| format!(" --tables {t}"))
                .collect::<String>(),
            a.exclude
                .iter()
                .map(|t| format!(" --exclude {t}"))
                .collect(),
            if a.data_only {
                " --data-only".into()
            } else {
                String::new()
            },
        ]
        .concat(),
        Value::String(name.clone()),
        toml::to_string(&source)?,
        toml::to_string(&chunks)?,
        toml::to_string(&sink)?
    );
    Ok((name, text))
}

/// Refuses a URL that holds a password: the pipeline file would keep it.
fn no_passwords(a: &CopyArgs) -> anyhow::Result<()> {
    for url in [&a.from, &a.to].into_iter().filter(|u| is_url(u)) {
        let authority = url
            .split("://")
            .nth(1)
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("");
        anyhow::ensure!(
            !authority
                .split_once('@')
                .is_some_and(|(user, _)| user.contains(':')),
            "etl copy: {} holds a password, which the pipeline file would keep; give it in ~/.pgpass or PGPASSWORD instead",
            url.split('@').next_back().unwrap_or("")
        );
    }
    Ok(())
}

/// The `[source]` table of the pipeline: FROM, the tables chosen, the
/// code page.
fn source(a: &CopyArgs, from: &From) -> anyhow::Result<Table> {
    let tables = match a.tables.is_empty() {
        true => vec!["*".to_string()],
        false => a.tables.clone(),
    };
    let mut source = Table::new();
    match from {
        From::Postgres(url) => {
            source.insert("type".into(), "postgres".into());
            source.insert("url".into(), url.clone().into());
            source.insert("tables".into(), strings(&tables));
        }
        From::Odbc(conn) => {
            source.insert("type".into(), "odbc".into());
            source.insert("connection_string".into(), conn.clone().into());
            source.insert("tables".into(), strings(&tables));
        }
        From::Sqlite(path) => {
            source.insert("type".into(), "odbc".into());
            source.insert(
                "connection_string".into(),
                format!("Driver={{SQLite3}};Database={}", absolute(path)?).into(),
            );
            source.insert("tables".into(), strings(&tables));
        }
        From::Access(path) => {
            source.insert("type".into(), "access".into());
            source.insert("path".into(), absolute(path)?.into());
            source.insert("tables".into(), strings(&tables));
        }
        From::Csv(glob) => {
            anyhow::ensure!(
                a.tables.is_empty() && a.exclude.is_empty(),
                "etl copy: --tables and --exclude choose tables of a database; for CSV files name the file, or a folder of them"
            );
            source.insert("type".into(), "csv".into());
            source.insert("path".into(), glob.clone().into());
            source.insert("header".into(), true.into());
        }
        From::Parquet { glob, .. } => {
            anyhow::ensure!(
                a.tables.is_empty() && a.exclude.is_empty(),
                "etl copy: --tables and --exclude choose tables of a database; for Parquet files name the file, or their folder"
            );
            source.insert("type".into(), "parquet".into());
            source.insert("path".into(), glob.clone().into());
        }
    }
    if !a.exclude.is_empty() {
        source.insert("exclude".into(), strings(&a.exclude));
    }
    if let Some(label) = &a.encoding {
        anyhow::ensure!(
            matches!(from, From::Csv(_) | From::Odbc(_)),
            "etl copy: --encoding is the code page of CSV files or of an ODBC source's text; leave it out here"
        );
        source.insert("encoding".into(), label.clone().into());
    }
    Ok(source)
}

/// The table each source table goes into on a PostgreSQL TO.
fn target_table(from: &From) -> &str {
    match from {
        From::Postgres(_) => "{schema}.{table}",
        From::Odbc(_) | From::Sqlite(_) | From::Access(_) => "public.{table}",
        From::Csv(_) => "public.{file}",
        From::Parquet { table, .. } => table.as_str(),
    }
}

/// The `[[sinks]]` table: a PostgreSQL TO, or a folder of CSV files.
fn sink(a: &CopyArgs, from: &From, into_files: bool) -> Table {
    let mut sink = Table::new();
    if into_files {
        // A folder: each table (or CSV file, re-encoded to UTF-8) a folder
        // of CSV files, one per chunk: `all.csv` for a table read whole,
        // else named by the first key value or byte offset of its range.
        sink.insert("type".into(), "csv".into());
        sink.insert(
            "path".into(),
            format!("{}/{{key}}/{{start}}.csv", a.to.trim_end_matches('/')).into(),
        );
    } else {
        sink.insert("type".into(), "postgres".into());
        sink.insert("url".into(), a.to.clone().into());
        sink.insert("table".into(), target_table(from).into());
        sink.insert("create_table".into(), (!a.data_only).into());
    }
    if a.data_only {
        // Into tables that exist with their keys and triggers: those are
        // set aside for the load and put back after, as pg_restore
        // --disable-triggers does, by any role.
        sink.insert("fk_handling".into(), "drop-recreate".into());
    }
    sink
}

fn absolute(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::canonicalize(path)?.display().to_string())
}

pub(super) fn copy(a: CopyArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        !(a.schema_only && a.data_only),
        "etl copy: --schema-only and --data-only together copy nothing; give one"
    );
    let (name, text) = pipeline(&a)?;
    if a.print_pipeline {
        out_raw!("{text}");
        return Ok(Outcome::Success);
    }
    let dir = PathBuf::from(".etl/copy");
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, &text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    tracing::info!(pipeline = %path.display(), "etl copy runs this pipeline (etl run, etl status and etl verify take it too).");
    super::run::run_all(
        &path,
        &[],
        RunFlags {
            workers: a.workers,
            restart: a.restart,
            follow: None,
            ddl_only: a.schema_only,
            recreate: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(from: &str, to: &str) -> CopyArgs {
        CopyArgs {
            from: from.into(),
            to: to.into(),
            tables: vec![],
            exclude: vec![],
            encoding: None,
            schema_only: false,
            data_only: false,
            workers: None,
            restart: false,
            print_pipeline: true,
        }
    }

    #[test]
    fn from_is_told_by_its_form() {
        assert_eq!(
            classify("postgresql://u@h/db").unwrap(),
            From::Postgres("postgresql://u@h/db".into())
        );
        assert_eq!(
            classify("Driver={FreeTDS};Server=x;").unwrap(),
            From::Odbc("Driver={FreeTDS};Server=x;".into())
        );
        let e = classify("nothing-here.xyz").unwrap_err().to_string();
        assert!(e.contains("cannot tell what"), "{e}");
        let e = classify("missing.accdb").unwrap_err().to_string();
        assert!(e.contains("no Access file at missing.accdb"), "{e}");
    }

    #[test]
    fn the_same_command_is_the_same_pipeline_and_names_differ_by_source() {
        let a = pipeline(&args("postgresql://u@h/src", "postgresql://u@h/dst")).unwrap();
        let b = pipeline(&args("postgresql://u@h/src", "postgresql://u@h/dst")).unwrap();
        let c = pipeline(&args("postgresql://u@other/src", "postgresql://u@h/dst")).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.0, c.0);
        let parsed = crate::config::parse(&a.1).unwrap();
        assert_eq!(parsed.name, a.0);
        let (_, files) = pipeline(&args("postgresql://u@h/src", "out/")).unwrap();
        assert!(
            files.contains("path = \"out/{key}/{start}.csv\""),
            "{files}"
        );
        let e = pipeline(&args(
            "postgresql://u:secret@h:5432/src",
            "postgresql://u@h/dst",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("holds a password") && !e.contains("secret"),
            "{e}"
        );
    }
}
