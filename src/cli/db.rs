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
    /// Terminate sessions in the way of a change: idle in a transaction
    /// (they hold their locks and block DDL) or idle (an application's
    /// pool, such as PostgREST's, before DDL); never etl's own or its
    /// caller's, nor a superuser's unless --include-superusers. Asks first
    /// unless --yes; a session it may not end is reported and the others
    /// go on (exit code 1).
    #[command(group(
        clap::ArgGroup::new("which")
            .required(true)
            .multiple(true)
            .args(["idle_in_transaction", "idle"])
    ))]
    Kill {
        db: String,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Sessions idle inside a transaction.
        #[arg(long)]
        idle_in_transaction: bool,
        /// Sessions idle outside a transaction.
        #[arg(long)]
        idle: bool,
        /// Only those in that state this long or longer (30s, 5m, 2h).
        #[arg(long, default_value = "5m", value_parser = parse_age)]
        older_than: i64,
        /// Only sessions of this application name.
        #[arg(long, value_name = "NAME")]
        app: Option<String>,
        /// Superusers' sessions too (spared otherwise).
        #[arg(long)]
        include_superusers: bool,
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
            sessions(&target, locks, watch, json)
        }
        DbAction::Kill {
            db,
            config,
            idle_in_transaction,
            idle,
            older_than,
            app,
            include_superusers,
            dry_run,
            yes,
        } => {
            let target = targets::resolve(&db, config.as_deref())?;
            let wanted = Wanted {
                idle_in_transaction,
                idle,
                older_than,
                app,
                include_superusers,
            };
            kill(&target, &wanted, dry_run, yes)
        }
        DbAction::FixSequences {
            db,
            config,
            dry_run,
        } => fix_sequences(&targets::resolve(&db, config.as_deref())?, dry_run),
    }
}

/// `etl db sessions`: the target's sessions, once or every `watch`
/// seconds.
fn sessions(
    target: &targets::Target,
    locks: bool,
    watch: Option<f64>,
    json: bool,
) -> anyhow::Result<Outcome> {
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

/// `etl db fix-sequences`: each sequence behind its column's MAX set past
/// it (or, with `--dry-run`, said).
fn fix_sequences(target: &targets::Target, dry_run: bool) -> anyhow::Result<Outcome> {
    let behind = statement(
        &target.endpoint,
        "etl db fix-sequences",
        (
            "reading the sequences failed",
            "reading the sequences".into(),
        ),
        |client| async move { crate::pg::sequences::behind(&client, |_| true).await },
    )?;
    if behind.is_empty() {
        out!("every sequence of {} is past its column's MAX", target.name);
        return Ok(Outcome::Success);
    }
    for b in &behind {
        if !dry_run {
            statement(
                &target.endpoint,
                "etl db fix-sequences",
                ("setting a sequence failed", format!("setting {b}")),
                |client| async move { crate::pg::sequences::fix(&client, b).await },
            )?;
        }
        match dry_run {
            true => out!("--dry-run: {b}: would be set to {}", b.max),
            false => out!("{b}: set to {}", b.max),
        }
    }
    Ok(Outcome::Success)
}

/// Which sessions `etl db kill` ends.
struct Wanted {
    idle_in_transaction: bool,
    idle: bool,
    older_than: i64,
    app: Option<String>,
    include_superusers: bool,
}

impl Wanted {
    fn state_fits(&self, s: &Session) -> bool {
        (self.idle_in_transaction && s.state.starts_with("idle in transaction"))
            || (self.idle && s.state == "idle")
    }

    /// Why a session that fits must be left alone, if it must.
    fn spare(&self, s: &Session, callers: &[u16]) -> Option<&'static str> {
        sessions::protected(s, callers).or(match s.superuser && !self.include_superusers {
            true => Some("a superuser's session (--include-superusers ends it too)"),
            false => None,
        })
    }

    fn states(&self) -> &'static str {
        match (self.idle_in_transaction, self.idle) {
            (true, true) => "idle or idle in transaction",
            (true, false) => "idle in transaction",
            _ => "idle",
        }
    }
}

fn kill(
    target: &targets::Target,
    wanted: &Wanted,
    dry_run: bool,
    yes: bool,
) -> anyhow::Result<Outcome> {
    let all = list_sessions(&target.endpoint, "etl db kill", false)?;
    let callers = sessions::caller_ports();
    let (chosen, spared): (Vec<&Session>, Vec<&Session>) = all
        .iter()
        .filter(|s| wanted.state_fits(s))
        .filter(|s| s.state_secs >= wanted.older_than)
        .filter(|s| wanted.app.as_ref().is_none_or(|a| *a == s.application))
        .partition(|s| wanted.spare(s, &callers).is_none());
    for s in &spared {
        let why = wanted.spare(s, &callers).unwrap_or_default();
        out!("spared: pid {} ({}): {why}", s.pid, s.application);
    }
    // pg_stat_activity hides other roles' state from a plain role.
    let hidden = all.iter().filter(|s| s.state.is_empty()).count();
    if hidden > 0 {
        out!("not considered: {hidden} session(s) of other roles whose state this role may not see (a member of pg_read_all_stats may)");
    }
    if chosen.is_empty() {
        out!(
            "no session {} for {} s or more",
            wanted.states(),
            wanted.older_than
        );
        return Ok(Outcome::Success);
    }
    for s in &chosen {
        out!(
            "pid {} {} ({}, {}): {} for {} s, last query: {}",
            s.pid,
            s.user,
            s.application,
            s.client,
            s.state,
            s.state_secs,
            cut(&s.query, 100)
        );
    }
    if dry_run {
        out!("--dry-run: {} session(s) would be terminated", chosen.len());
        return Ok(Outcome::Success);
    }
    if !yes && !confirmed(chosen.len(), &target.name)? {
        eprintln!("etl: none terminated");
        return Ok(Outcome::Refused);
    }
    let mut refused = 0;
    for s in &chosen {
        let pid = s.pid;
        let ended = statement(
            &target.endpoint,
            "etl db kill",
            (
                "terminating a session failed",
                format!("terminating pid {pid}"),
            ),
            |client| async move { sessions::terminate(&client, pid).await },
        );
        match ended {
            Ok(true) => out!("pid {pid}: terminated"),
            Ok(false) => out!("pid {pid}: already gone"),
            // Not this role's to end (another role's, a superuser's): the
            // others go on.
            Err(e) => {
                refused += 1;
                out!("pid {pid}: not terminated: {e}");
            }
        }
    }
    if refused > 0 {
        out!(
            "{refused} of {} session(s) not terminated: connect as their role, a member of pg_signal_backend, or a superuser",
            chosen.len()
        );
        return Ok(Outcome::NotAllDone);
    }
    Ok(Outcome::Success)
}

/// Asks on the terminal; refused when stdin is not one.
fn confirmed(count: usize, name: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "etl db kill terminates {count} session(s) of {name}; confirm with --yes (stdin is not a terminal to ask on)"
        );
    }
    eprint!("Terminate {count} session(s)? Type yes: ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
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
    statement(
        endpoint,
        application,
        ("listing the sessions failed", "listing the sessions".into()),
        |client| async move { sessions::list(&client, locks).await },
    )
}

/// One statement of an `etl db` command on a session of `endpoint`,
/// through the one retry helper (a lost session is tried again on a new
/// one); `(failed, doing)` name the step and the statement in its error.
fn statement<T, F, Fut>(
    endpoint: &crate::pg::Endpoint,
    application: &str,
    (failed, doing): (&str, String),
    run: F,
) -> Result<T, crate::error::EtlError>
where
    F: Fn(crate::pg::Conn) -> Fut,
    Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
{
    let (run, doing) = (&run, &doing);
    crate::pg::block_on(crate::retry::on_session(
        endpoint,
        application,
        crate::retry::COMMAND,
        failed,
        |client| async move {
            run(client)
                .await
                .map_err(crate::error::EtlError::pg(doing.clone()))
        },
    ))
}
