//! Test-only fault injection (feature `test-hooks`, on in test builds
//! only): `ETL_TEST_PAUSE_AT` parks etl at a known moment, so a test can
//! kill the process, end its sessions or restart the server there, then
//! let it go on (`ETL_TEST_RESUME_FILE`). `commit:N` parks the worker right
//! after the N-th chunk commit (`commit:N:KEY`: of chunks of that key),
//! `write:N` once the N-th chunk's first rows have reached the target
//! (mid-COPY, uncommitted), `post-data:N` inside the N-th post-data
//! entry's transaction, `schema-apply:N` after the N-th statement of `etl
//! schema apply`, `schema-commit:N` before the N-th one's COMMIT, and
//! `session:N:PHASE` as the pool hands out its N-th session in a phase.
//! `ETL_PROGRESS_SECS` sets how often progress is logged ([`progress_secs`]).
//! Unset in normal use. Kept at the bottom of the crate (the pool calls
//! it), so nothing below `run` depends on `run`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static AT: OnceLock<Option<(String, u64, Option<String>)>> = OnceLock::new();
static COMMITS: AtomicU64 = AtomicU64::new(0);
static STARTS: AtomicU64 = AtomicU64::new(0);
static POST_DATA: AtomicU64 = AtomicU64::new(0);
static STATEMENTS: AtomicU64 = AtomicU64::new(0);
static SESSIONS: AtomicU64 = AtomicU64::new(0);
static SCHEMA_COMMITS: AtomicU64 = AtomicU64::new(0);
static PHASE: std::sync::Mutex<&str> = std::sync::Mutex::new("");

/// Read only where the `test-hooks` feature is on (the tests turn it
/// on); a release build has no hook and reads no test variable.
#[cfg(feature = "test-hooks")]
fn at() -> &'static Option<(String, u64, Option<String>)> {
    AT.get_or_init(|| {
        let v = std::env::var("ETL_TEST_PAUSE_AT").ok()?;
        let mut parts = v.splitn(3, ':');
        let what = parts.next()?.to_string();
        let n = parts.next()?.parse().ok()?;
        Some((what, n, parts.next().map(str::to_string)))
    })
}

#[cfg(not(feature = "test-hooks"))]
fn at() -> &'static Option<(String, u64, Option<String>)> {
    AT.get_or_init(|| None)
}

/// `ETL_PROGRESS_SECS`: how often a run without a terminal logs its
/// progress, where the tests set it (0: inside every chunk); `None` in a
/// release build.
pub fn progress_secs() -> Option<f64> {
    if !cfg!(feature = "test-hooks") {
        return None;
    }
    std::env::var("ETL_PROGRESS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &f64| *v >= 0.0)
}

/// Parks until the file named by `ETL_TEST_RESUME_FILE` exists, or forever.
fn park(what: &str) {
    eprintln!("ETL_TEST_PAUSE_AT: paused at {what}");
    let resume = std::env::var_os("ETL_TEST_RESUME_FILE").map(std::path::PathBuf::from);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if resume.as_ref().is_some_and(|f| f.exists()) {
            eprintln!("ETL_TEST_PAUSE_AT: resumed");
            return;
        }
    }
}

pub fn after_commit(key: Option<&str>) {
    if let Some((what, n, only)) = at() {
        if what == "commit"
            && (only.is_none() || only.as_deref() == key)
            && COMMITS.fetch_add(1, Ordering::SeqCst) + 1 == *n
        {
            park("commit");
        }
    }
}

/// Inside a post-data entry's transaction, its statement run, before
/// its commit.
pub fn in_post_data() {
    nth("post-data", &POST_DATA);
}

/// `schema-apply:N`: after the N-th statement of `etl schema apply`
/// ran and was written to the history.
pub fn after_statement() {
    nth("schema-apply", &STATEMENTS);
}

/// Marks the phase the process is in (for `session:N:PHASE`): a
/// pipeline's `plan`, `create`, `data`, `analyze`, `verify`; a
/// migration's `pre-data`, `data`, `post-data`, `sequences`, `verify`.
pub fn phase(name: &'static str) {
    if at().is_some() {
        *PHASE.lock().expect("never held across a panic") = name;
    }
}

/// `session:N:PHASE`: parks when the pool hands out its N-th session in
/// PHASE, before the step uses it, so a test can end etl's sessions (or
/// restart the server) while that phase holds one.
pub fn on_session() {
    if let Some((what, n, Some(phase))) = at() {
        if what == "session"
            && *PHASE.lock().expect("never held across a panic") == phase.as_str()
            && SESSIONS.fetch_add(1, Ordering::SeqCst) + 1 == *n
        {
            park(&format!("session in {phase}"));
        }
    }
}

/// `schema-commit:N`: inside the N-th transactional statement of `etl
/// schema apply`, the statement run, before its COMMIT.
pub fn before_schema_commit() {
    nth("schema-commit", &SCHEMA_COMMITS);
}

pub fn after_first_send() {
    nth("write", &STARTS);
}

/// `hook:N`: parks the N-th time this hook is reached, `seen` counting.
fn nth(hook: &str, seen: &AtomicU64) {
    if let Some((what, n, _)) = at() {
        if what == hook && seen.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            park(hook);
        }
    }
}
