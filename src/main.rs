//! The `etl` binary: parse the command line, set up logging, run, and turn
//! the outcome into an exit code (0: every chunk done, or follow mode
//! stopped by Ctrl-C or SIGTERM; 1: the run finished but chunks failed, `etl
//! db kill` could not end some sessions, or the
//! loaded data breaks a `[[checks]]` rule (also `etl verify`); 2:
//! configuration or fatal error; 3: every chunk done, but a pivot left
//! source readings out, or an ODBC driver returned invalid dates that were
//! loaded as NULL, counted in the summary; 1 also: `etl schema diff`
//! found differences; 4: `etl schema apply` refused (above --max-risk, or
//! a statement would fail on the data); 5: `etl schema apply` skipped
//! statements blocked by other sessions; 130: Ctrl-C or SIGTERM stopped a run,
//! which resumes).

use std::process::ExitCode;

use clap::Parser;
use etl::cli::{self, Args, Outcome};

fn main() -> ExitCode {
    let args = Args::parse();
    let logging = etl::logging::Options {
        verbose: args.verbose,
        quiet: args.quiet,
        file: args.log_file.clone(),
        max_size: args.log_max_size,
        keep: args.log_keep,
        format: args.log_format,
    };
    if let Err(e) = etl::logging::init(&logging) {
        eprintln!("etl: {e}");
        return ExitCode::from(2);
    }
    match cli::run(args) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::ChunksFailed | Outcome::ChecksFailed | Outcome::NotAllDone) => {
            ExitCode::from(1)
        }
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Ok(Outcome::RowsNotPivoted | Outcome::ValuesChanged) => ExitCode::from(3),
        Ok(Outcome::Refused) => ExitCode::from(4),
        Ok(Outcome::Blocked) => ExitCode::from(5),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            // Every etl error's message already carries its causes.
            eprintln!("etl: {e}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
