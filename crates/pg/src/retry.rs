//! The one retry policy of etl: a step that fails transiently (a lost
//! connection, a server shutting down or starting, a deadlock, a lock
//! timeout, too many clients) is tried again after a growing, jittered
//! wait; a permanent error ends it at once. Chunks go through
//! [`with_retries`] on their worker's thread, every step around them
//! (planning, the ledger, DDL, catalog reads, post-data entries, verify,
//! `etl schema apply`'s statements) through [`retry_step`] on the caller's
//! runtime, and [`on_session`] gives such a step a fresh session of the
//! process's pool each try.
//!
//! Written here rather than taken from a crate (`backoff`, `tokio-retry`):
//! the judgement of what is transient is etl's own ([`EtlError::is_transient`]),
//! and a chunk whose fetch buffers were too small is read again at once,
//! which no retry crate models.

use std::time::Duration;

use crate::error::EtlError;

/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The wait before try `attempt + 2`: `base` doubled per try so far, at
/// most [`MAX_BACKOFF`], then jittered down by up to half, so workers that
/// failed together (a server restart) do not come back together.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let wait = base.saturating_mul(1 << attempt.min(16)).min(MAX_BACKOFF);
    // Jitter from the clock's nanoseconds and the thread: no RNG needed
    // for spreading a handful of workers.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
        ^ std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::thread::current().id(),
        );
    let fraction = 0.5 + (seed % 1000) as f64 / 2000.0;
    wait.mul_f64(fraction)
}

/// Runs `attempt` until it succeeds, fails permanently, or has failed
/// transiently `retries` + 1 times (the last error then comes wrapped in
/// [`EtlError::Retried`]). The one retry policy of etl: chunks, and
/// through [`retry_step`] every step around them.
pub fn with_retries<T>(
    retries: u32,
    base: Duration,
    mut attempt: impl FnMut() -> Result<T, EtlError>,
) -> Result<T, EtlError> {
    let mut state = Tries::default();
    loop {
        match state.after(attempt(), retries, base, "the chunk was rolled back") {
            Next::Done(result) => return result,
            Next::Wait(wait) => std::thread::sleep(wait),
            Next::Now => {}
        }
    }
}

/// [`with_retries`] for a step on the caller's runtime (planning,
/// counting, DDL, catalog reads, the ledger, post-data entries...):
/// `attempt` must make a fresh connection from the pool each time, and be
/// safe to run again (what it did before the fault undone or checked).
pub async fn retry_step<T, F, Fut>(
    retries: u32,
    base: Duration,
    what: &str,
    mut attempt: F,
) -> Result<T, EtlError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, EtlError>>,
{
    let mut state = Tries::default();
    loop {
        match state.after(attempt().await, retries, base, what) {
            Next::Done(result) => return result,
            Next::Wait(wait) => tokio::time::sleep(wait).await,
            Next::Now => {}
        }
    }
}

/// What [`Tries::after`] decides.
enum Next<T> {
    Done(Result<T, EtlError>),
    Wait(Duration),
    Now,
}

/// Attempts so far, transient and buffer regrowths.
#[derive(Default)]
struct Tries {
    tried: u32,
    regrown: u32,
}

impl Tries {
    fn after<T>(
        &mut self,
        result: Result<T, EtlError>,
        retries: u32,
        base: Duration,
        what: &str,
    ) -> Next<T> {
        match result {
            // Reading a chunk again with larger fetch buffers is not a
            // failure; each time at least doubles a buffer, up to
            // max_text_bytes.
            Err(EtlError::ReadAgain { column, bytes }) if self.regrown < 32 => {
                self.regrown += 1;
                tracing::info!(
                    column,
                    bytes,
                    "A value is longer than its fetch buffer; the chunk was rolled back and is read again with larger buffers."
                );
                Next::Now
            }
            Err(e) if e.is_transient() && self.tried < retries => {
                let wait = backoff(base, self.tried);
                self.tried += 1;
                tracing::warn!(
                    attempt = self.tried,
                    of = retries,
                    wait_secs = wait.as_secs_f64(),
                    error = %e,
                    "Transient failure; {what} and will be tried again."
                );
                Next::Wait(wait)
            }
            Err(e) if self.tried > 0 => Next::Done(Err(EtlError::Retried {
                attempts: self.tried + 1,
                last: Box::new(e),
            })),
            other => Next::Done(other),
        }
    }
}

/// A step on one session of `endpoint` through [`retry_step`]: each try
/// takes a session from the process's pool afresh (a session a fault
/// closed is never tried again) and hands it to `attempt`.
pub async fn on_session<T, F, Fut>(
    endpoint: &crate::Endpoint,
    application: &str,
    (retries, base): (u32, Duration),
    what: &str,
    attempt: F,
) -> Result<T, EtlError>
where
    F: Fn(crate::Conn) -> Fut,
    Fut: std::future::Future<Output = Result<T, EtlError>>,
{
    let pool = crate::Pool::new(endpoint.clone(), application);
    let attempt = &attempt;
    let pool = &pool;
    retry_step(retries, base, what, || async move {
        let session = pool.get().await?;
        attempt(session).await
    })
    .await
}

/// Tries and first wait for a command that has no pipeline's `[chunks]
/// retries` (`etl status`, `etl db`, `etl schema`).
pub const COMMAND: (u32, Duration) = (3, Duration::from_secs(1));
