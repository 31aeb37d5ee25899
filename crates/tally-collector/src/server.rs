//! Serving the router on a TCP listener, plain or TLS: the connection
//! limit, idle connections, and graceful shutdown.
//!
//! # Connections
//!
//! - At most [`Limits::max_connections`] connections are open at once.
//!   When a new one arrives at the limit, the connection idle the longest
//!   is closed to make room for it (a connection is idle when no request
//!   is being served on it: between keep-alive requests, or still sending
//!   its first request head); when every connection is busy, the new one
//!   is closed at once. Connections that only hold a socket open therefore
//!   never keep a client that sends requests out, and descriptors stay
//!   within the limit.
//! - A connection idle for [`Limits::idle_timeout`] is closed; this also
//!   bounds a client sending a request head slowly.
//! - A failed `accept` (out of descriptors, say) is logged at most once
//!   per [`ACCEPT_WARNING_INTERVAL`] with the number of failures since, and
//!   closes the longest-idle connection to free a descriptor.
//!
//! Each request carries its peer address as a [`ClientAddr`] extension.
//!
//! # Shutdown
//!
//! When `shutdown` resolves the listener is closed (no new connections),
//! idle connections are closed, requests in flight run to completion
//! (their store transactions commit and their answers are sent), and
//! [`serve`] returns once every connection is gone or after
//! [`SHUTDOWN_GRACE`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::client::ClientAddr;
use crate::metrics::Metrics;

/// Longest wait for in-flight requests after shutdown was asked: a batch
/// commits in milliseconds, so 30 s only runs out on a stuck client, which
/// is then cut off (what it sent is not acknowledged and it resends).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Longest TLS handshake: a client that stalls it holds a task, not the
/// accept loop, but should not hold it forever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (out of file descriptors, say) so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Pause after a failed `accept` that closed an idle connection: long
/// enough for its task to release the descriptor.
const ACCEPT_RETRY_AFTER_SHED: Duration = Duration::from_millis(1);

/// At most one "accept failed" warning this often: while descriptors are
/// exhausted `accept` fails every [`ACCEPT_ERROR_PAUSE`], and a line each
/// time would flood the log (20 a second) without saying more.
pub const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Connections open at most by default, unless half the open-file limit is
/// lower. 4,096 keep-alive clients are far more than one collector serves
/// at once (a device holds a connection only while it uploads), and each
/// costs a descriptor and about 10 KiB of buffers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How long a connection may stay idle by default: above the 60 s idle
/// timeout of the common cloud load balancers, so the balancer, not the
/// collector, closes a pooled connection first (the other order makes the
/// balancer send a request on a closed connection and answer 502).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(65);

/// The connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (at least 1).
    pub max_connections: usize,
    /// Idle time after which a connection is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(open_file_limit()),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// The process's soft limit on open files, if it has one.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// [`DEFAULT_MAX_CONNECTIONS`], or half of `open_file_limit` when that is
/// lower: the other half is left to the store (SQLite's files, the
/// PostgreSQL pool), the TLS files, and the connection accepted at the
/// limit before another is closed.
pub fn default_max_connections(open_file_limit: Option<u64>) -> usize {
    let half = open_file_limit.map_or(u64::MAX, |n| n / 2);
    usize::try_from(half)
        .unwrap_or(usize::MAX)
        .clamp(1, DEFAULT_MAX_CONNECTIONS)
}

/// Serves `router` on `listener` within `limits` until `shutdown`
/// resolves, then drains (see the module doc).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    // The idle timer below bounds a slow request head, so hyper's own
    // header timeout (which would also cap idle time at 30 s) is off.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let open = Arc::new(Open::new(limits.max_connections.max(1), metrics));
    let (stop, stopping) = watch::channel(false);
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    open.metrics.accept_error();
                    accept_errors.failed(&e);
                    // With a descriptor on its way back, try again soon.
                    let pause = if open.close_longest_idle() {
                        ACCEPT_RETRY_AFTER_SHED
                    } else {
                        ACCEPT_ERROR_PAUSE
                    };
                    tokio::time::sleep(pause).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(conn) = open.admit() else {
            open.metrics.connection_refused();
            continue;
        };
        // Answers are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let service = Tracked {
            router: router.clone(),
            conn: conn.clone(),
            client: ClientAddr(peer),
        };
        let task = Task {
            builder: builder.clone(),
            conn,
            open: open.clone(),
            stopping: stopping.clone(),
            idle_timeout: limits.idle_timeout,
        };
        match tls.clone() {
            None => {
                tokio::spawn(task.run(stream, service));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = tokio::select! {
                        done = handshake => match done {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return task.open.remove(&task.conn);
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake timed out");
                                return task.open.remove(&task.conn);
                            }
                        },
                        () = task.conn.close.notified() => return task.open.remove(&task.conn),
                    };
                    task.run(stream, service).await;
                });
            }
        }
    }
    drop(listener);
    tracing::info!(
        connections = open.count(),
        "shutting down: draining connections"
    );
    let _ = stop.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, open.drained())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing them");
    }
}

/// Rate-limits the "accept failed" warning.
#[derive(Debug, Default)]
struct AcceptErrors {
    last_warning: Option<Instant>,
    since: u64,
}

impl AcceptErrors {
    fn failed(&mut self, e: &std::io::Error) {
        self.since += 1;
        let now = Instant::now();
        if self
            .last_warning
            .is_some_and(|at| now.duration_since(at) < ACCEPT_WARNING_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            error = %e,
            failures = self.since,
            "accept failed (logged at most every {} s)",
            ACCEPT_WARNING_INTERVAL.as_secs()
        );
        self.last_warning = Some(now);
        self.since = 0;
    }
}

/// One open connection as the accept loop and the idle timer see it.
#[derive(Debug)]
struct Conn {
    id: u64,
    /// The time `last_active_ms` counts from.
    epoch: Instant,
    /// Requests being served: from the call until the response body is
    /// sent (or dropped).
    active: AtomicUsize,
    /// When the connection was last busy, in ms since `epoch`.
    last_active_ms: AtomicU64,
    /// Asks the connection's task to close it.
    close: Notify,
}

impl Conn {
    fn is_idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }

    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(now, Ordering::Release);
    }

    /// When the connection, idle since its last activity, is due to close.
    fn idle_due(&self, idle_timeout: Duration) -> Instant {
        self.epoch
            + Duration::from_millis(self.last_active_ms.load(Ordering::Acquire))
            + idle_timeout
    }
}

/// The open connections.
#[derive(Debug)]
struct Open {
    max: usize,
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Signalled when the last connection goes.
    empty: Notify,
    metrics: Arc<Metrics>,
}

impl Open {
    fn new(max: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            max,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            empty: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self) -> usize {
        self.lock().len()
    }

    /// Registers a new connection, closing the longest-idle one when at
    /// the limit; `None` when every open connection is busy.
    fn admit(&self) -> Option<Arc<Conn>> {
        let mut conns = self.lock();
        if conns.len() >= self.max {
            let idle = Self::longest_idle(&conns)?;
            // Out of the table now, so the next arrival picks another;
            // its task closes the socket at once.
            conns.remove(&idle.id);
            idle.close.notify_one();
            self.metrics.connection_shed("over_limit");
        }
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            epoch: self.epoch,
            active: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            close: Notify::new(),
        });
        conn.touch();
        conns.insert(conn.id, conn.clone());
        self.metrics.set_connections(conns.len());
        Some(conn)
    }

    fn longest_idle(conns: &HashMap<u64, Arc<Conn>>) -> Option<Arc<Conn>> {
        conns
            .values()
            .filter(|c| c.is_idle())
            .min_by_key(|c| c.last_active_ms.load(Ordering::Relaxed))
            .cloned()
    }

    /// Closes the longest-idle connection, if any (to free a descriptor);
    /// says whether there was one.
    fn close_longest_idle(&self) -> bool {
        let mut conns = self.lock();
        let Some(idle) = Self::longest_idle(&conns) else {
            return false;
        };
        conns.remove(&idle.id);
        idle.close.notify_one();
        self.metrics.connection_shed("accept_failed");
        self.metrics.set_connections(conns.len());
        true
    }

    fn remove(&self, conn: &Conn) {
        let mut conns = self.lock();
        conns.remove(&conn.id);
        self.metrics.set_connections(conns.len());
        if conns.is_empty() {
            self.empty.notify_waiters();
        }
    }

    async fn drained(&self) {
        loop {
            let notified = self.empty.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The task serving one connection.
struct Task {
    builder: Builder<TokioExecutor>,
    conn: Arc<Conn>,
    open: Arc<Open>,
    stopping: watch::Receiver<bool>,
    idle_timeout: Duration,
}

impl Task {
    async fn run<I>(mut self, io: I, service: Tracked)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut draining = false;
        let mut check_at = self.conn.idle_due(self.idle_timeout);
        loop {
            tokio::select! {
                _ = connection.as_mut() => break,
                () = self.conn.close.notified() => {
                    // Shed: an idle connection goes now, a busy one after
                    // its answer.
                    if self.conn.is_idle() {
                        break;
                    }
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
                _ = self.stopping.changed(), if !draining => {
                    if self.conn.is_idle() {
                        break;
                    }
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
                () = tokio::time::sleep_until(check_at), if !draining => {
                    let due = self.conn.idle_due(self.idle_timeout);
                    if self.conn.is_idle() && Instant::now() >= due {
                        self.open.metrics.connection_shed("idle_timeout");
                        break;
                    }
                    // Busy: look again once it could have been idle that
                    // long; idle since more recently: when that is due.
                    check_at = if self.conn.is_idle() {
                        due
                    } else {
                        Instant::now() + self.idle_timeout
                    };
                }
            }
        }
        self.open.remove(&self.conn);
    }
}

/// The router as a hyper service that marks its connection busy while a
/// request is served and gives each request its [`ClientAddr`].
#[derive(Clone)]
struct Tracked {
    router: Router,
    conn: Arc<Conn>,
    client: ClientAddr,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.client);
        let busy = Busy::enter(self.conn.clone());
        let answer = self.router.clone().oneshot(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| TrackedBody { body, _busy: busy }))
        })
    }
}

/// Holds its connection busy until dropped.
struct Busy(Arc<Conn>);

impl Busy {
    fn enter(conn: Arc<Conn>) -> Self {
        conn.active.fetch_add(1, Ordering::AcqRel);
        conn.touch();
        Self(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Stamped before the count drops, so the idle timer never sees an
        // idle connection with the stamp of before its request.
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection busy until it is sent.
struct TrackedBody {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limit_stays_under_half_the_file_limit() {
        assert_eq!(default_max_connections(None), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(
            default_max_connections(Some(1_048_576)),
            DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(default_max_connections(Some(1024)), 512);
        assert_eq!(default_max_connections(Some(1)), 1);
    }
}
