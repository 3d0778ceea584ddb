//! The command line: parsing and dispatch. Data flow lives in the
//! pipeline file; run-time knobs (verbosity, workers, the rerun file) are
//! flags. Each command is a module of its own; what differs for a
//! migration (an ODBC source without time windows) is in [`migration`].

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// `println!` that returns the write error (a closed pipe) instead of
/// panicking; `main` turns a broken pipe into exit code 0.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

/// `print!` likewise.
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($arg)*)?
    }};
}

mod copy;
mod cutoff;
mod db;
mod finish;
mod forget;
mod migration;
mod plan;
mod preflight;
mod recreate;
mod rerun;
mod run;
mod schema;
mod status;
mod verify;

use crate::config::{self, ValidatedPipeline};

#[derive(Debug, Parser)]
#[command(
    name = "etl",
    version,
    about = "Move data into PostgreSQL fast and safely, driven by one pipeline file."
)]
pub struct Args {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors on the terminal (a --log-file keeps info).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Also write log lines to this file, rotated by size.
    #[arg(long, global = true, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Rotate the log file when it would pass this size (10MB, 512kB, 1GiB).
    #[arg(long, global = true, default_value = "10MB", value_parser = crate::logging::parse_size)]
    pub log_max_size: u64,
    /// Rotated log files kept beside it (PATH.1 newest).
    #[arg(long, global = true, default_value_t = 5)]
    pub log_keep: usize,
    /// json: one JSON object per line, in the log file (or on stderr
    /// without --log-file); the terminal keeps readable lines.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: crate::logging::Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check a pipeline file without connecting; reports every problem.
    Validate { pipeline: PathBuf },
    /// Show the chunks (key, start, end, rows) and the DDL a run would execute; writes nothing.
    Plan {
        pipeline: PathBuf,
        /// Only chunks of this key of [chunks] key_column (repeatable).
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Run every chunk; failed chunks go to the failed-chunk CSV.
    Run {
        pipeline: PathBuf,
        /// Only chunks of this key of [chunks] key_column (repeatable): one
        /// ship at a time when something looks wrong.
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
        /// Worker threads, overriding chunks.workers.
        #[arg(long)]
        workers: Option<usize>,
        /// Redo every chunk, also those an earlier run committed (reruns
        /// replace their windows, so nothing is duplicated).
        #[arg(long)]
        restart: bool,
        /// After the backfill below the cutoff, keep loading new rows from
        /// the cutoff onward every --interval-secs; Ctrl-C stops cleanly.
        #[arg(long)]
        follow: bool,
        /// Create and widen the target tables (a pivot's channel columns
        /// too, listed from the source) and load nothing.
        #[arg(long, conflicts_with_all = ["follow", "restart"])]
        ddl_only: bool,
        /// First drop the tables this pipeline created (with their
        /// etl.column_map rows and ledger entries); asks to type the
        /// pipeline's name unless --yes.
        #[arg(long)]
        recreate: bool,
        /// Confirm --recreate without a prompt.
        #[arg(long, requires = "recreate")]
        yes: bool,
        /// Follow mode: seconds between loads.
        #[arg(long, default_value_t = 60.0, requires = "follow")]
        interval_secs: f64,
        /// Follow mode: each load re-reads this many seconds before the
        /// cutoff, so rows committed late are not missed.
        #[arg(long, default_value_t = 300.0, requires = "follow")]
        lag_secs: f64,
    },
    /// The common moves without a pipeline file: a PostgreSQL database,
    /// an Access or SQLite file, ODBC tables, or CSV files into PostgreSQL.
    /// Runs the pipeline it stands for (written to .etl/copy/) as `etl run`
    /// does; the same command again resumes it.
    Copy(copy::CopyArgs),
    /// Per key: chunks done, failed, pending and running, and each failed
    /// chunk's last error, from the ledger in the target.
    Status {
        pipeline: PathBuf,
        /// Only this key (repeatable).
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
        /// Machine-readable output: every chunk's state.
        #[arg(long)]
        json: bool,
        /// Redraw every SECS seconds until Ctrl-C.
        #[arg(long, value_name = "SECS")]
        watch: Option<f64>,
        /// Also write a self-contained page with a picture of the run
        /// (rewritten on every --watch redraw).
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Compare source and targets per chunk (row count and an
    /// order-independent checksum); exit 1 if any chunk differs.
    Verify {
        pipeline: PathBuf,
        /// Only chunks of this key (repeatable).
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
        /// Check only this many chunks, picked at random.
        #[arg(long)]
        sample: Option<usize>,
        /// Compare the target's rows with the checksums their chunks
        /// recorded when they were loaded, without reading the source.
        #[arg(long)]
        quick: bool,
    },
    /// Run exactly the chunks listed in a failed-chunk CSV (key,start,end).
    Rerun {
        pipeline: PathBuf,
        failed_csv: PathBuf,
        /// List the chunks that would run, and run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only chunks with this key (repeatable).
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
        /// Wait this many seconds after each chunk (runs one chunk at a time).
        #[arg(long, default_value_t = 0.0)]
        delay_secs: f64,
    },
    /// Before anything is written: connections, server versions,
    /// privileges, the types created tables need and free disk; a
    /// pass/fail table, exit 1 on any failure.
    Preflight {
        pipeline: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a finished pipeline from its targets' ledgers: its rows of
    /// etl.chunk_ledger, etl.phase_log and etl.cutoff (and a file sink's
    /// cutoff file); the schema etl goes once nothing in it holds a row.
    /// The loaded data stays. Asks first unless --yes.
    Forget {
        pipeline: PathBuf,
        /// Confirm without a prompt.
        #[arg(long)]
        yes: bool,
    },
    /// The follow cutoff by hand: backfill loads below it, run --follow
    /// from it onward.
    Cutoff {
        #[command(subcommand)]
        action: CutoffAction,
    },
    /// Schema changes between PostgreSQL databases: diff, plan (graded by
    /// risk), apply without blocking production.
    Schema {
        #[command(subcommand)]
        action: schema::SchemaAction,
    },
    /// A database's sessions and locks; ending idle transactions; fixing
    /// sequences behind their column.
    Db {
        #[command(subcommand)]
        action: db::DbAction,
    },
    /// A completion script for SHELL on stdout, from the command line's
    /// own definitions: `etl completions bash >
    /// ~/.local/share/bash-completion/completions/etl`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The manual page (roff) on stdout, from the command line's own
    /// definitions: `etl man > ~/.local/share/man/man1/etl.1`.
    Man,
    /// Internal: one ODBC reader of a migration (a request on stdin, Arrow
    /// IPC on stdout); started by `etl run` for `readers` > 1.
    #[command(hide = true)]
    OdbcRead,
}

#[derive(Debug, Subcommand)]
pub enum CutoffAction {
    /// Print the pipeline's cutoff.
    Show { pipeline: PathBuf },
    /// Set it to TIME (UTC unless it names an offset); refused in the
    /// future or before the source's data.
    Set { pipeline: PathBuf, time: String },
    /// Remove it: a run backfills everything again.
    Clear { pipeline: PathBuf },
}

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every chunk done.
    Success,
    /// The run finished but chunks failed.
    ChunksFailed,
    /// Every chunk done, but the loaded data breaks a `[[checks]]` rule.
    ChecksFailed,
    /// Ctrl-C or SIGTERM stopped the run before every chunk started; `etl
    /// run` resumes.
    Interrupted,
    /// Every chunk done, but a pivot left readings out (unknown format,
    /// NULL value, name or index); the summary counts them.
    RowsNotPivoted,
    /// `etl schema apply` refused: a statement above --max-risk, or one
    /// that would fail on the data; nothing applied.
    Refused,
    /// `etl schema apply` skipped statements that stayed blocked by other
    /// sessions; running it again applies them.
    Blocked,
    /// A command did part of what it was asked and names the rest (`etl db
    /// kill`: sessions this role may not end).
    NotAllDone,
    /// Every table loaded, but some values did not load as they were
    /// (invalid dates from the driver, loaded as NULL); the summary counts them.
    ValuesChanged,
}

/// How `etl run` runs.
#[derive(Debug, Clone, Copy)]
pub struct RunFlags {
    pub workers: Option<usize>,
    pub restart: bool,
    pub follow: Option<Follow>,
    /// Create the targets, load nothing.
    pub ddl_only: bool,
    /// Drop what the pipeline created first; `Some(true)`: confirmed by --yes.
    pub recreate: Option<bool>,
}

/// Follow mode's timing.
#[derive(Debug, Clone, Copy)]
pub struct Follow {
    pub interval_secs: f64,
    pub lag_secs: f64,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    match args.command {
        Command::Validate { pipeline } => validate(&pipeline),
        Command::Plan { pipeline, keys } => plan::plan(&pipeline, &keys),
        Command::Run {
            pipeline,
            keys,
            workers,
            restart,
            follow,
            ddl_only,
            recreate,
            yes,
            interval_secs,
            lag_secs,
        } => run::run_all(
            &pipeline,
            &keys,
            RunFlags {
                workers,
                restart,
                follow: follow.then_some(Follow {
                    interval_secs,
                    lag_secs,
                }),
                ddl_only,
                recreate: recreate.then_some(yes),
            },
        ),
        Command::Copy(args) => copy::copy(args),
        Command::Status {
            pipeline,
            keys,
            json,
            watch,
            html,
        } => status::status(&pipeline, &keys, json, watch, html.as_deref()),
        Command::Verify {
            pipeline,
            keys,
            sample,
            quick,
        } => verify::verify(&pipeline, &keys, sample, quick),
        Command::Rerun {
            pipeline,
            failed_csv,
            dry_run,
            keys,
            delay_secs,
        } => rerun::rerun(&pipeline, &failed_csv, dry_run, &keys, delay_secs),
        Command::Preflight { pipeline, json } => preflight::preflight(&pipeline, json),
        Command::Forget { pipeline, yes } => forget::forget(&pipeline, yes),
        Command::Cutoff { action } => match action {
            CutoffAction::Show { pipeline } => cutoff::show(&pipeline),
            CutoffAction::Set { pipeline, time } => cutoff::set(&pipeline, &time),
            CutoffAction::Clear { pipeline } => cutoff::clear(&pipeline),
        },
        Command::Schema { action } => schema::schema(action),
        Command::Db { action } => db::db(action),
        Command::Completions { shell } => {
            let mut command = <Args as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "etl", &mut std::io::stdout());
            Ok(Outcome::Success)
        }
        Command::Man => {
            let command = <Args as clap::CommandFactory>::command();
            clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
            Ok(Outcome::Success)
        }
        Command::OdbcRead => {
            crate::source::odbc::process::child_main()?;
            Ok(Outcome::Success)
        }
    }
}

/// Asks for the pipeline's name before something that cannot be undone
/// (`--recreate`, `etl forget`); an error naming `what` when another
/// answer (or none) comes.
fn confirm_by_name(name: &str, prompt: &str, what: &str) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    out_raw!("Type the pipeline name ({name}) to {prompt}: ");
    std::io::Write::flush(&mut std::io::stdout())?;
    let mut typed = String::new();
    std::io::stdin().lock().read_line(&mut typed)?;
    if typed.trim() != name {
        anyhow::bail!(
            "{what} was not confirmed (typed {:?}, not the pipeline name {name:?}); nothing was changed. Type the name, or pass --yes to confirm without a prompt",
            typed.trim()
        );
    }
    Ok(())
}

fn load(path: &Path) -> anyhow::Result<ValidatedPipeline> {
    let p = config::load_validated(path)?;
    bound_connections(&p, None);
    Ok(p)
}

/// Sets the bound of connections per endpoint from the pipeline's workers
/// (or `--workers`) and `[chunks] max_connections`.
pub(crate) fn bound_connections(p: &ValidatedPipeline, workers: Option<usize>) {
    let workers = workers.unwrap_or(p.chunks.workers);
    crate::pg::set_limit(crate::pg::limit_for(workers, p.chunks.max_connections));
}

/// The pipeline with `--key` applied: only chunks of those keys.
fn load_keys(path: &Path, keys: &[String]) -> anyhow::Result<ValidatedPipeline> {
    let mut p = load(path)?;
    if keys.is_empty() {
        return Ok(p);
    }
    if is_migration(&p) {
        anyhow::bail!(
            "--key picks values of [chunks] key_column; {} moves whole tables (a migration), which has none",
            path.display()
        );
    }
    if p.chunks.key_column.is_none() {
        anyhow::bail!(
            "--key picks values of [chunks] key_column, and {} has none; add key_column to [chunks] or drop --key",
            path.display()
        );
    }
    p.chunks.only_keys = Some(keys.iter().cloned().collect());
    Ok(p)
}

fn validate(path: &Path) -> anyhow::Result<Outcome> {
    let p = load(path)?;
    out!(
        "{}: pipeline {:?} is valid ({} sink{})",
        path.display(),
        p.name,
        p.sinks.len(),
        if p.sinks.len() == 1 { "" } else { "s" }
    );
    Ok(Outcome::Success)
}

/// An ODBC source without time windows: a migration, one chunk per table
/// (or one for its query). With `[chunks] time_column` an ODBC source runs
/// through the chunk runner like every other source. CSV files in byte
/// ranges into a PostgreSQL table per file (`{file}`): a migration whose
/// tables are the files, each with its own columns.
fn is_migration(p: &ValidatedPipeline) -> bool {
    match &p.source {
        config::validate::ValidatedSource::Odbc(_) => p.chunks.time_column.is_empty(),
        config::validate::ValidatedSource::Access(_)
        | config::validate::ValidatedSource::PostgresDatabase(_) => true,
        config::validate::ValidatedSource::Csv(spec) => {
            spec.windows.is_none()
                && matches!(p.sinks.as_slice(), [config::validate::ValidatedSink::Postgres(s)] if s.table.has_key())
        }
        _ => false,
    }
}
