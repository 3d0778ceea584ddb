//! `etl db sessions|kill|fix-sequences URL|TARGET`: the sessions in the
//! way of a change, ending the idle transactions that hold locks, and
//! sequences set past their column's MAX.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use clap::Subcommand;

use super::Outcome;
use crate::pg::sessions::{self, Session};
use crate::schema::targets;

#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Sessions of the database: pid, user, application, state, age,
    /// query, and whom each waits for.
    Sessions {
        /// A postgresql:// URL or a target's name.
        db: String,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Also the locks each session holds or waits for.
        #[arg(long)]
        locks: bool,
        /// Redraw every SECS seconds until Ctrl-C.
        #[arg(long, value_name = "SECS")]
        watch: Option<f64>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Terminate sessions idle in a transaction (they hold their locks and
    /// block DDL); never etl's own or its caller's. Asks first unless --yes.
    Kill {
        db: String,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Required: which sessions (the only kind etl ends).
        #[arg(long, required = true)]
        idle_in_transaction: bool,
        /// Only those idle this long or longer (30s, 5m, 2h).
        #[arg(long, default_value = "5m", value_parser = parse_age)]
        older_than: i64,
        /// Only sessions of this application name.
        #[arg(long, value_name = "NAME")]
        app: Option<String>,
        /// List them, end none.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        yes: bool,
    },
    /// Set each sequence owned by a column past the column's MAX.
    FixSequences {
        db: String,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// List them, change none.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `30s`, `5m`, `2h`, `1d`, or plain seconds.
fn parse_age(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{text:?}: write a number and s, m, h or d (5m)"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d (5m)")),
    };
    Ok(n * scale)
}

pub(super) fn db(action: DbAction) -> anyhow::Result<Outcome> {
    match action {
        DbAction::Sessions {
            db,
            config,
            locks,
            watch,
            json,
        } => {
            let target = targets::resolve(&db, config.as_deref())?;
            if let Some(secs) = watch {
                if !(0.5..=86400.0).contains(&secs) {
                    anyhow::bail!("--watch takes 0.5 to 86400 seconds");
                }
            }
            loop {
                let list = list_sessions(&target.endpoint, "etl db sessions", locks)?;
                if watch.is_some() && std::io::stdout().is_terminal() {
                    out_raw!("\x1b[2J\x1b[H");
                }
                if json {
                    out!("{}", serde_json::to_string(&list)?);
                } else {
                    show(&target.name, &list, locks)?;
                }
                let Some(secs) = watch else {
                    return Ok(Outcome::Success);
                };
                std::thread::sleep(std::time::Duration::from_secs_f64(secs));
            }
        }
        DbAction::Kill {
            db,
            config,
            idle_in_transaction: _,
            older_than,
            app,
            dry_run,
            yes,
        } => {
            let target = targets::resolve(&db, config.as_deref())?;
            let all = list_sessions(&target.endpoint, "etl db kill", false)?;
            let callers = sessions::caller_ports();
            let (chosen, spared): (Vec<&Session>, Vec<&Session>) = all
                .iter()
                .filter(|s| s.state.starts_with("idle in transaction"))
                .filter(|s| s.state_secs >= older_than)
                .filter(|s| app.as_ref().is_none_or(|a| *a == s.application))
                .partition(|s| sessions::protected(s, &callers).is_none());
            for s in &spared {
                let why = sessions::protected(s, &callers).unwrap_or_default();
                out!("spared: pid {} ({}): {why}", s.pid, s.application);
            }
            if chosen.is_empty() {
                out!("no session idle in transaction for {older_than} s or more");
                return Ok(Outcome::Success);
            }
            for s in &chosen {
                out!(
                    "pid {} {} ({}, {}): idle in transaction for {} s, last query: {}",
                    s.pid,
                    s.user,
                    s.application,
                    s.client,
                    s.state_secs,
                    cut(&s.query, 100)
                );
            }
            if dry_run {
                out!("--dry-run: {} session(s) would be terminated", chosen.len());
                return Ok(Outcome::Success);
            }
            if !yes {
                if !std::io::stdin().is_terminal() {
                    anyhow::bail!(
                        "etl db kill terminates {} session(s) of {}; confirm with --yes (stdin is not a terminal to ask on)",
                        chosen.len(),
                        target.name
                    );
                }
                eprint!("Terminate {} session(s)? Type yes: ", chosen.len());
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if answer.trim() != "yes" {
                    eprintln!("etl: none terminated");
                    return Ok(Outcome::Refused);
                }
            }
            for s in chosen {
                let pid = s.pid;
                let ended = crate::pg::block_on(crate::retry::on_session(
                    &target.endpoint,
                    "etl db kill",
                    crate::retry::COMMAND,
                    "terminating a session failed",
                    |client| async move {
                        sessions::terminate(&client, pid)
                            .await
                            .map_err(crate::error::EtlError::pg(format!("terminating pid {pid}")))
                    },
                ))?;
                out!(
                    "pid {}: {}",
                    s.pid,
                    if ended { "terminated" } else { "already gone" }
                );
            }
            Ok(Outcome::Success)
        }
        DbAction::FixSequences {
            db,
            config,
            dry_run,
        } => {
            let target = targets::resolve(&db, config.as_deref())?;
            let behind = crate::pg::block_on(crate::retry::on_session(
                &target.endpoint,
                "etl db fix-sequences",
                crate::retry::COMMAND,
                "reading the sequences failed",
                |client| async move {
                    crate::pg::sequences::behind(&client, |_| true)
                        .await
                        .map_err(crate::error::EtlError::pg("reading the sequences"))
                },
            ))?;
            if behind.is_empty() {
                out!("every sequence of {} is past its column's MAX", target.name);
                return Ok(Outcome::Success);
            }
            for b in &behind {
                if !dry_run {
                    crate::pg::block_on(crate::retry::on_session(
                        &target.endpoint,
                        "etl db fix-sequences",
                        crate::retry::COMMAND,
                        "setting a sequence failed",
                        |client| async move {
                            crate::pg::sequences::fix(&client, b)
                                .await
                                .map_err(crate::error::EtlError::pg(format!("setting {b}")))
                        },
                    ))?;
                }
                out!(
                    "{}{b}: {}",
                    if dry_run { "--dry-run: " } else { "" },
                    if dry_run {
                        format!("would be set to {}", b.max)
                    } else {
                        format!("set to {}", b.max)
                    }
                );
            }
            Ok(Outcome::Success)
        }
    }
}

fn cut(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn show(name: &str, list: &[Session], locks: bool) -> anyhow::Result<()> {
    out!("{} session(s) on {name}", list.len());
    out!(
        "{:>7}  {:<12} {:<20} {:<22} {:>7}  {:<10} query",
        "pid",
        "user",
        "application",
        "state",
        "age s",
        "waits for"
    );
    for s in list {
        let waits: Vec<String> = s.waiting_for.iter().map(|p| p.to_string()).collect();
        out!(
            "{:>7}  {:<12} {:<20} {:<22} {:>7}  {:<10} {}",
            s.pid,
            cut(&s.user, 12),
            cut(&s.application, 20),
            s.state,
            s.age_secs,
            if waits.is_empty() {
                "-".to_string()
            } else {
                waits.join(",")
            },
            cut(&s.query, 80)
        );
        if locks {
            for l in &s.locks {
                out!("{:>9}{l}", "");
            }
        }
    }
    Ok(())
}

/// The server's sessions (with the locks they hold and wait for, when
/// `locks`), read on a session of the pool through the retry helper.
fn list_sessions(
    endpoint: &crate::pg::Endpoint,
    application: &str,
    locks: bool,
) -> Result<Vec<Session>, crate::error::EtlError> {
    crate::pg::block_on(crate::retry::on_session(
        endpoint,
        application,
        crate::retry::COMMAND,
        "listing the sessions failed",
        |client| async move {
            sessions::list(&client, locks)
                .await
                .map_err(crate::error::EtlError::pg("listing the sessions"))
        },
    ))
}
