//! The connection pool: one per endpoint for the whole process, shared by
//! every table, chunk, phase and sink that reaches that endpoint, and
//! bounded: at most [`limit`] connections are open to it at once, whatever
//! the number of tables (issue 30: a pool per table held 293 connections).
//!
//! Written here rather than taken from deadpool-postgres or bb8 because of
//! how etl runs: each worker thread drives its chunks on a current-thread
//! runtime of its own (the connection's task and the decoder share one
//! thread, no cross-thread wake-up per COPY message), so a client may only
//! be handed out again on the thread whose runtime runs its connection.
//! Those crates hand any client to any task. Here an idle client is kept
//! with its thread; a thread that needs a connection when the bound is
//! reached closes another thread's idle one, and waits for one to be
//! given back when none is idle.
//!
//! A slot is held by the client: it frees when the client is dropped, and
//! its connection closes as soon as its thread's runtime runs next (at
//! once on the thread that drops it). The main thread closes its idle
//! connections before it waits for the workers ([`close_idle_here`]), so
//! a dropped client's socket never outlives its slot for long.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Client;

use super::{ConnectError, Endpoint};

/// Connections per endpoint when nothing set it: `2 x workers + 2` for
/// the default two workers.
const DEFAULT_LIMIT: usize = 6;

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_LIMIT);

/// Sets the bound of every pool (the CLI sets it from the pipeline's
/// workers before it connects anywhere); pools made already are raised to
/// it, never lowered.
pub fn set_limit(connections: usize) {
    let connections = connections.max(2);
    LIMIT.store(connections, Ordering::SeqCst);
    for shared in registry()
        .lock()
        .expect("never held across a panic")
        .values()
    {
        let before = shared.limit.fetch_max(connections, Ordering::SeqCst);
        if connections > before {
            shared.slots.add_permits(connections - before);
        }
    }
}

/// The bound per endpoint: `2 x workers + 2`, or less where the pipeline
/// says so (`[chunks] max_connections`), never below `workers + 1` (a
/// worker and its reader each hold one while the main thread may hold
/// another).
pub fn limit_for(workers: usize, cap: Option<usize>) -> usize {
    let natural = 2 * workers.max(1) + 2;
    cap.map_or(natural, |c| c.min(natural))
        .max(workers.max(1) + 1)
}

/// The bound new pools get.
pub fn limit() -> usize {
    LIMIT.load(Ordering::SeqCst)
}

/// How long a thread waits for a slot before it reports the pool
/// exhausted (a transient error: the step is retried).
const WAIT: Duration = Duration::from_secs(120);

/// An idle connection unused this long is checked before it is handed out
/// (the server may have ended it meanwhile).
const CHECK_AFTER: Duration = Duration::from_secs(1);

/// Every endpoint's shared state, by the endpoint's text.
fn registry() -> &'static Mutex<HashMap<String, Arc<Shared>>> {
    static POOLS: OnceLock<Mutex<HashMap<String, Arc<Shared>>>> = OnceLock::new();
    POOLS.get_or_init(Default::default)
}

/// Closes this thread's idle connections of every pool, and lets their
/// tasks end: the main thread does so before it waits for the workers,
/// whose threads would otherwise wait for its slots.
pub async fn close_idle_here() {
    let me = std::thread::current().id();
    let pools: Vec<Arc<Shared>> = registry()
        .lock()
        .expect("never held across a panic")
        .values()
        .cloned()
        .collect();
    let mut closed = 0;
    for shared in pools {
        let mut idle = shared.idle.lock().expect("never held across a panic");
        let before = idle.len();
        idle.retain(|i| i.thread != me);
        closed += before - idle.len();
    }
    if closed > 0 {
        // The connections' tasks see their clients gone and close.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The peak number of connections open at once to each endpoint this
/// process reached, for the run's summary and `etl status`.
pub fn peaks() -> Vec<(String, usize)> {
    let pools = registry().lock().expect("never held across a panic");
    let mut peaks: Vec<(String, usize)> = pools
        .iter()
        .map(|(k, s)| (k.clone(), s.peak.load(Ordering::Relaxed)))
        .filter(|(_, p)| *p > 0)
        .collect();
    peaks.sort();
    peaks
}

struct Shared {
    endpoint: Endpoint,
    limit: AtomicUsize,
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    peak: AtomicUsize,
}

struct Idle {
    thread: ThreadId,
    application: String,
    since: Instant,
    conn: Conn,
}

/// A handle on an endpoint's pool, with the application name its
/// connections show in `pg_stat_activity`.
pub struct Pool {
    shared: Arc<Shared>,
    application: String,
}

/// A connection taken from a [`Pool`]; dereferences to the client. Given
/// back with [`Pool::put`]; dropped, it closes.
pub struct Conn {
    client: Client,
    _slot: OwnedSemaphorePermit,
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Pool {
    /// The pool of `endpoint` (made on first use, then shared).
    pub fn new(endpoint: Endpoint, application: &str) -> Arc<Self> {
        let key = endpoint.to_string();
        let shared = registry()
            .lock()
            .expect("never held across a panic")
            .entry(key)
            .or_insert_with(|| {
                let limit = limit();
                Arc::new(Shared {
                    endpoint,
                    limit: AtomicUsize::new(limit),
                    slots: Arc::new(Semaphore::new(limit)),
                    idle: Mutex::new(Vec::new()),
                    peak: AtomicUsize::new(0),
                })
            })
            .clone();
        Arc::new(Pool {
            shared,
            application: application.to_string(),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.shared.endpoint
    }

    /// The bound of this endpoint's pool.
    pub fn limit(&self) -> usize {
        self.shared.limit.load(Ordering::SeqCst)
    }

    /// An idle connection of this thread that is still open, or a new one
    /// once a slot is free.
    pub async fn get(&self) -> Result<Conn, ConnectError> {
        while let Some(idle) = self.take_idle() {
            if idle.conn.is_closed() {
                continue;
            }
            // The server may have ended it while it was idle: a retry must
            // not spend its attempt on a dead session.
            if idle.since.elapsed() >= CHECK_AFTER && idle.conn.simple_query("").await.is_err() {
                continue;
            }
            etl_base::hooks::on_session();
            return Ok(idle.conn);
        }
        let slot = self.slot().await?;
        let client = self.shared.endpoint.connect(&self.application).await?;
        etl_base::hooks::on_session();
        Ok(Conn {
            client,
            _slot: slot,
        })
    }

    /// Gives a connection back after a step that ended cleanly. A failed
    /// step drops its connection instead, so no broken session is reused.
    pub fn put(&self, conn: Conn) {
        if conn.client.is_closed() {
            return;
        }
        self.shared
            .idle
            .lock()
            .expect("never held across a panic")
            .push(Idle {
                thread: std::thread::current().id(),
                application: self.application.clone(),
                since: Instant::now(),
                conn,
            });
    }

    /// This thread's idle connection of this application, newest first.
    fn take_idle(&self) -> Option<Idle> {
        let me = std::thread::current().id();
        let mut idle = self.shared.idle.lock().expect("never held across a panic");
        let at = idle
            .iter()
            .rposition(|i| i.thread == me && i.application == self.application)?;
        Some(idle.remove(at))
    }

    /// A free slot: at once when one is; else after closing the oldest
    /// idle connection (this thread's first); else when a connection in
    /// use is given back or dropped.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, ConnectError> {
        let started = Instant::now();
        loop {
            if let Ok(slot) = self.shared.slots.clone().try_acquire_owned() {
                self.note_peak();
                return Ok(slot);
            }
            let evicted = {
                let me = std::thread::current().id();
                let mut idle = self.shared.idle.lock().expect("never held across a panic");
                // This thread's own first: its slot frees at once.
                let at = idle
                    .iter()
                    .position(|i| i.thread == me)
                    .or((!idle.is_empty()).then_some(0));
                at.map(|at| idle.remove(at))
            };
            let wait = match evicted {
                Some(idle) => {
                    drop(idle);
                    // Let this thread's connection tasks see their ends.
                    tokio::task::yield_now().await;
                    Duration::from_millis(50)
                }
                None => Duration::from_millis(500),
            };
            if started.elapsed() >= WAIT {
                return Err(ConnectError::Exhausted {
                    endpoint: self.shared.endpoint.to_string(),
                    limit: self.limit(),
                });
            }
            if let Ok(Ok(slot)) =
                tokio::time::timeout(wait, self.shared.slots.clone().acquire_owned()).await
            {
                self.note_peak();
                return Ok(slot);
            }
        }
    }

    fn note_peak(&self) {
        let open = self
            .limit()
            .saturating_sub(self.shared.slots.available_permits());
        self.shared.peak.fetch_max(open, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_a_formula_of_the_workers() {
        assert_eq!(limit_for(2, None), 6);
        assert_eq!(limit_for(4, None), 10);
        // A cap lowers it, never below a worker and its reader plus one.
        assert_eq!(limit_for(4, Some(7)), 7);
        assert_eq!(limit_for(4, Some(2)), 5);
        assert_eq!(limit_for(0, None), 4);
    }
}

thread_local! {
    /// Each thread's own runtime; clients made on it are only used on it
    /// (see [`crate::Pool`]).
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts unless the OS is out of resources");
}

/// Runs a future to completion on this thread's runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(future))
}
