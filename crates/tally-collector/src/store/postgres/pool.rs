//! A small blocking connection pool for the PostgreSQL store.
//!
//! Connections are opened on demand up to [`MAX_CONNECTIONS`], each with
//! the store's statements prepared once ([`Prepared`]). A connection that
//! the server closed (restart, `pg_terminate_backend`, network loss) is
//! dropped when it is returned, so the pool reconnects by itself when the
//! server comes back. A caller that finds every connection busy waits up
//! to [`CHECKOUT_TIMEOUT`] and then gets [`StoreError::Unavailable`] (503):
//! saturation is refused, never queued without bound.

use super::pg_error;
use super::statements::Prepared;
use crate::store::StoreError;
use ::postgres::{Client, Config, NoTls};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

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
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("closed", &self.client.is_closed())
            .finish()
    }
}

#[derive(Debug, Default)]
struct Slots {
    idle: Vec<Conn>,
    /// Connections open now, idle or checked out.
    open: usize,
}

/// The pool.
pub(crate) struct Pool {
    config: Config,
    slots: Mutex<Slots>,
    freed: Condvar,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("slots", &self.slots).finish()
    }
}

impl Pool {
    pub fn new(mut config: Config) -> Pool {
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("tally-collector");
        Pool {
            config,
            slots: Mutex::new(Slots::default()),
            freed: Condvar::new(),
        }
    }

    /// Opens a connection outside the pool (migrations run on it).
    pub fn connect_raw(&self) -> Result<Client, StoreError> {
        self.config.connect(NoTls).map_err(pg_error)
    }

    /// A connection: an idle one, a new one, or one freed within
    /// [`CHECKOUT_TIMEOUT`].
    pub fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            while let Some(conn) = slots.idle.pop() {
                if conn.client.is_closed() {
                    slots.open -= 1;
                    continue;
                }
                return Ok(Pooled {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if slots.open < MAX_CONNECTIONS {
                slots.open += 1;
                drop(slots);
                return match self.open() {
                    Ok(conn) => Ok(Pooled {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        self.release_slot();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "all {MAX_CONNECTIONS} PostgreSQL connections busy"
                )));
            }
            slots = self
                .freed
                .wait_timeout(slots, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn open(&self) -> Result<Conn, StoreError> {
        let mut client = self.config.connect(NoTls).map_err(pg_error)?;
        let prepared = Prepared::new(&mut client)?;
        Ok(Conn { client, prepared })
    }

    fn release_slot(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.open -= 1;
        self.freed.notify_one();
    }

    fn put(&self, conn: Conn) {
        if conn.client.is_closed() {
            self.release_slot();
            return;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.idle.push(conn);
        self.freed.notify_one();
    }
}

/// A checked-out connection; returned to the pool on drop.
#[derive(Debug)]
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
}

impl Pooled<'_> {
    /// Closes the connection instead of returning it (its state is
    /// unknown, e.g. a transaction that could not be rolled back).
    pub fn discard(mut self) {
        if self.conn.take().is_some() {
            self.pool.release_slot();
        }
    }
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("a Pooled holds its connection until drop"))
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("a Pooled holds its connection until drop"))
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put(conn);
        }
    }
}
