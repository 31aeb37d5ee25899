//! The PostgreSQL store's connection pool: [`r2d2`] over a manager that
//! opens a connection and prepares the store's statements on it
//! ([`Prepared`]).
//!
//! The pool keeps [`MAX_CONNECTIONS`] open, opening them in the
//! background from the start (a collector starts while its database is
//! still coming up) on threads of its own, one a connection, so a slow
//! connection never holds up the opening of another. A
//! connection the server closed (restart, `pg_terminate_backend`, network
//! loss), or one the store gave up on ([`Pooled::discard`]), is dropped
//! when it is returned, so the pool reconnects by itself when the server
//! comes back. A caller that finds every connection busy, or the server
//! unreachable, waits up to [`CHECKOUT_TIMEOUT`] and then gets
//! [`StoreError::Unavailable`] (503): saturation is refused, never queued
//! without bound.

use super::pg_error;
use super::statements::Prepared;
use crate::store::StoreError;
use ::postgres::{Client, Config, NoTls};
use std::time::Duration;

/// Connections per collector process. The HTTP layer bounds in-flight
/// store calls itself; eight keep a 2-core database busy (writers wait on
/// the server's CPU, not on round trips) while several collectors stay
/// far below PostgreSQL's default `max_connections` of 100.
pub const MAX_CONNECTIONS: usize = 8;

/// How long a caller waits for a free connection before the store answers
/// `Unavailable`: a few batch commits' time.
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long opening a connection may take before the server counts as
/// down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection and its prepared statements.
pub(crate) struct Conn {
    pub client: Client,
    pub prepared: Prepared,
    /// Set by [`Pooled::discard`]: closed instead of reused.
    discarded: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("closed", &self.client.is_closed())
            .finish()
    }
}

/// Opens connections for the pool.
#[derive(Debug)]
struct Manager {
    config: Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = StoreError;

    fn connect(&self) -> Result<Conn, StoreError> {
        let mut client = self.config.connect(NoTls).map_err(pg_error)?;
        let prepared = Prepared::new(&mut client)?;
        Ok(Conn {
            client,
            prepared,
            discarded: false,
        })
    }

    /// Only called when a connection is checked out with testing on,
    /// which this pool does not do (a round trip a checkout): a dropped
    /// connection is noticed by [`Pool::get`], [`Self::has_broken`] and the
    /// store's retry of a transaction that could not begin.
    fn is_valid(&self, conn: &mut Conn) -> Result<(), StoreError> {
        conn.client.simple_query("").map(|_| ()).map_err(pg_error)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.discarded || conn.client.is_closed()
    }
}

/// How often a failing server is logged: the pool retries each of its
/// connections in the background, so an outage would otherwise log
/// several lines a second.
const LOG_EVERY_MS: i64 = 10_000;

/// Connection failures go to the log (without the URL), at most one line
/// each [`LOG_EVERY_MS`], saying how many failures it stands for.
#[derive(Debug, Default)]
struct LogErrors {
    last_ms: std::sync::atomic::AtomicI64,
    unlogged: std::sync::atomic::AtomicU64,
}

impl r2d2::HandleError<StoreError> for LogErrors {
    fn handle_error(&self, error: StoreError) {
        use std::sync::atomic::Ordering;
        let now = crate::clock::now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= LOG_EVERY_MS;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let failures = self.unlogged.swap(0, Ordering::Relaxed) + 1;
            tracing::warn!(%error, failures, "cannot open a PostgreSQL connection");
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The pool.
#[derive(Debug)]
pub(crate) struct Pool {
    config: Config,
    inner: r2d2::Pool<Manager>,
}

impl Pool {
    pub fn new(mut config: Config) -> Pool {
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("tally-collector");
        let inner = r2d2::Pool::builder()
            .max_size(MAX_CONNECTIONS as u32)
            .thread_pool(std::sync::Arc::new(
                scheduled_thread_pool::ScheduledThreadPool::builder()
                    .num_threads(MAX_CONNECTIONS)
                    .thread_name_pattern("tally-pg-pool-{}")
                    .build(),
            ))
            .test_on_check_out(false)
            .connection_timeout(CHECKOUT_TIMEOUT)
            .error_handler(Box::new(LogErrors::default()))
            .build_unchecked(Manager {
                config: config.clone(),
            });
        Pool { config, inner }
    }

    /// Opens a connection outside the pool (migrations run on it).
    pub fn connect_raw(&self) -> Result<Client, StoreError> {
        self.config.connect(NoTls).map_err(pg_error)
    }

    /// A connection: an idle one, a new one, or one freed within
    /// [`CHECKOUT_TIMEOUT`].
    ///
    /// An idle connection the client already knows closed is skipped (and
    /// closed), as r2d2 checks connections only when they come back: after
    /// a server restart every idle one is dead.
    pub fn get(&self) -> Result<Pooled, StoreError> {
        for _ in 0..=MAX_CONNECTIONS {
            let conn = self.inner.get().map(Pooled).map_err(|e| {
                StoreError::Unavailable(format!(
                    "no PostgreSQL connection within {CHECKOUT_TIMEOUT:?} (all {MAX_CONNECTIONS} \
                     busy, or the server unreachable): {e}"
                ))
            })?;
            if !conn.client.is_closed() {
                return Ok(conn);
            }
            conn.discard();
        }
        Err(StoreError::Unavailable(
            "every PostgreSQL connection was closed by the server".into(),
        ))
    }
}

/// A checked-out connection; returned to the pool on drop.
#[derive(Debug)]
pub(crate) struct Pooled(r2d2::PooledConnection<Manager>);

impl Pooled {
    /// Closes the connection instead of returning it (its state is
    /// unknown, e.g. a transaction that could not be rolled back).
    pub fn discard(mut self) {
        self.0.discarded = true;
    }
}

impl std::ops::Deref for Pooled {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.0
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use r2d2::HandleError as _;
    use std::sync::atomic::Ordering;

    #[test]
    fn an_outage_logs_one_line_per_interval_counting_the_rest() {
        let log = LogErrors::default();
        for _ in 0..5 {
            log.handle_error(StoreError::Unavailable("refused".into()));
        }
        // The first failure was logged; four wait for the next line.
        assert!(log.last_ms.load(Ordering::Relaxed) > 0);
        assert_eq!(log.unlogged.load(Ordering::Relaxed), 4);
        // Once the interval has passed, the next line counts all five.
        log.last_ms.fetch_sub(LOG_EVERY_MS, Ordering::Relaxed);
        log.handle_error(StoreError::Unavailable("refused".into()));
        assert_eq!(log.unlogged.load(Ordering::Relaxed), 0);
    }
}
