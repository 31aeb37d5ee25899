//! A fault-injecting transport around the SDK's real HTTP transport.
//!
//! Faults act where they would in the field: before the request leaves
//! (offline, dropped), on the way (slow link), and after the collector
//! answered (a reset after commit, so the client never sees the answer to
//! a batch that was stored, and must resend it). 5xx and 429 storms are
//! answered here as a proxy in front of the collector would. Every request
//! that really reached the collector is counted for the storm profile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_sdk::upload::transport::{Request, Response, Transport, TransportError};

use super::scenario::{Faults, Rng};

/// How much earlier than its `Retry-After` a retry may come and still count
/// as honouring it: the SDK's sleep and this transport's clock read differ
/// by scheduling jitter, far below the one-second granularity of the header.
const RETRY_AFTER_SLACK: Duration = Duration::from_millis(20);

/// Fleet-wide request counters.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Requests that reached the collector.
    pub sent: AtomicU64,
    /// 429 answers the clients saw (injected or from the collector).
    pub rate_limited: AtomicU64,
    /// 5xx answers the clients saw.
    pub server_errors: AtomicU64,
    /// Requests failed before or after reaching the collector.
    pub failed: AtomicU64,
    /// Requests a device sent before the `Retry-After` of its last 429 or
    /// 503 had passed: a client that does not honour the server's wait.
    pub early_retries: AtomicU64,
    /// Requests per second that reached the collector, by second since start.
    pub per_second: Mutex<Vec<u64>>,
    started: Mutex<Option<Instant>>,
}

impl Traffic {
    fn record_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let started = *self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(Instant::now);
        let second = started.elapsed().as_secs() as usize;
        let mut per_second = self.per_second.lock().unwrap_or_else(|p| p.into_inner());
        if per_second.len() <= second {
            per_second.resize(second + 1, 0);
        }
        per_second[second] += 1;
    }

    /// The busiest second's request count.
    pub fn peak_per_second(&self) -> u64 {
        let per_second = self.per_second.lock().unwrap_or_else(|p| p.into_inner());
        per_second.iter().copied().max().unwrap_or(0)
    }
}

/// One device's transport.
#[derive(Debug)]
pub struct FaultTransport {
    inner: Arc<dyn Transport>,
    faults: Faults,
    rng: Mutex<Rng>,
    state: Mutex<LinkState>,
    traffic: Arc<Traffic>,
    /// Faults stop while the fleet drains at the end of a run.
    calm: Arc<AtomicBool>,
    /// Faults stop for this device alone (while it drains before an
    /// uninstall).
    device_calm: AtomicBool,
    /// The earliest moment the last 429 or 503 allowed the next request.
    not_before: Mutex<Option<Instant>>,
}

#[derive(Debug, Default)]
struct LinkState {
    offline_until: Option<Instant>,
    error_burst: u32,
    rate_limit_burst: u32,
}

impl FaultTransport {
    /// Wraps `inner` with the faults of `faults`, drawn from `rng`.
    pub fn new(
        inner: Arc<dyn Transport>,
        faults: Faults,
        rng: Rng,
        traffic: Arc<Traffic>,
        calm: Arc<AtomicBool>,
    ) -> Self {
        Self {
            inner,
            faults,
            rng: Mutex::new(rng),
            state: Mutex::new(LinkState::default()),
            traffic,
            calm,
            device_calm: AtomicBool::new(false),
            not_before: Mutex::new(None),
        }
    }

    /// Stops (or resumes) faults for this device alone.
    pub fn set_calm(&self, calm: bool) {
        self.device_calm.store(calm, Ordering::SeqCst);
    }

    /// Takes the device offline for `ms`.
    pub fn go_offline(&self, ms: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.offline_until = Some(Instant::now() + Duration::from_millis(ms));
    }

    fn roll(&self, p: f64) -> bool {
        self.rng.lock().unwrap_or_else(|p| p.into_inner()).chance(p)
    }

    fn count_answer(&self, response: &Response) {
        match response.status {
            429 => {
                self.traffic.rate_limited.fetch_add(1, Ordering::Relaxed);
            }
            500..=599 => {
                self.traffic.server_errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if matches!(response.status, 429 | 503) {
            let wait = response
                .retry_after
                .as_deref()
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(secs) = wait {
                let mut not_before = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
                *not_before = Some(Instant::now() + Duration::from_secs(secs));
            }
        }
    }

    /// Counts a request sent before the server's `Retry-After` passed.
    fn check_wait(&self) {
        let mut not_before = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = not_before.take() {
            if Instant::now() + RETRY_AFTER_SLACK < t {
                self.traffic.early_retries.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn forward(&self, request: &Request) -> Result<Response, TransportError> {
        self.traffic.record_sent();
        let answer = self.inner.send(request);
        if let Ok(response) = &answer {
            self.count_answer(response);
        }
        answer
    }

    fn synthetic(&self, status: u16, retry_after: Option<&str>) -> Response {
        let response = Response {
            status,
            retry_after: retry_after.map(str::to_owned),
            body: br#"{"code":"injected","message":"fault injected by tally simulate"}"#.to_vec(),
        };
        self.count_answer(&response);
        response
    }

    fn fail(&self, error: TransportError) -> Result<Response, TransportError> {
        self.traffic.failed.fetch_add(1, Ordering::Relaxed);
        Err(error)
    }
}

impl Transport for FaultTransport {
    fn send(&self, request: &Request) -> Result<Response, TransportError> {
        self.check_wait();
        if self.calm.load(Ordering::Relaxed) || self.device_calm.load(Ordering::Relaxed) {
            return self.forward(request);
        }
        let f = self.faults;
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.offline_until.is_some_and(|t| Instant::now() < t) {
                drop(state);
                return self.fail(TransportError::Connect(
                    "network unreachable (simulated)".into(),
                ));
            }
            state.offline_until = None;
            if state.error_burst > 0 {
                state.error_burst -= 1;
                drop(state);
                return Ok(self.synthetic(503, None));
            }
            if state.rate_limit_burst > 0 {
                state.rate_limit_burst -= 1;
                drop(state);
                return Ok(self.synthetic(429, Some("1")));
            }
            if f.server_errors && self.roll(0.12) {
                state.error_burst = 2;
                drop(state);
                return Ok(self.synthetic(500, None));
            }
            if f.rate_limit && self.roll(0.12) {
                state.rate_limit_burst = 2;
                drop(state);
                return Ok(self.synthetic(429, Some("1")));
            }
        }
        if f.drop && self.roll(0.1) {
            return self.fail(TransportError::Io(
                "connection dropped mid-request (simulated)".into(),
            ));
        }
        if f.slow && self.roll(0.1) {
            let ms = self
                .rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .between(50, 400);
            std::thread::sleep(Duration::from_millis(ms));
        }
        if f.duplicate && self.roll(0.1) {
            // The network delivers the request twice; the client sees the
            // second answer (all duplicates if the first was stored).
            let _ = self.forward(request);
        }
        let answer = self.forward(request)?;
        if f.reset && answer.status == 200 && self.roll(0.1) {
            return self.fail(TransportError::Io(
                "connection reset after the collector answered (simulated)".into(),
            ));
        }
        Ok(answer)
    }
}
