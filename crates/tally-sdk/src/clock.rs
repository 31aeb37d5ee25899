//! Time as the SDK's threads see it, behind a trait so tests run on a
//! virtual clock: backoff schedules, group commits and session timeouts
//! are asserted from what was recorded, not by sleeping.
//!
//! Every thread takes its time from the one [`Clock`] the tracker was
//! built with (the capture time of a message, the pipeline's group
//! commit, the uploader's backoff), and waits on a [`Wake`] so that a
//! thread with nothing due sleeps without a timer.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time and of waiting.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Wall clock in Unix milliseconds: event timestamps and `sentAt`.
    fn wall_ms(&self) -> i64;
    /// Monotonic milliseconds since an arbitrary origin: deadlines and
    /// latencies.
    fn mono_ms(&self) -> u64;
    /// Waits up to `ms` milliseconds, returning early when `wake` is
    /// signalled.
    fn wait(&self, wake: &Wake, ms: u64);
    /// Waits until `wake` is signalled, with no timer: what a thread with
    /// nothing due does, so an idle SDK wakes nobody. Time does not move
    /// while it waits, on any clock.
    fn wait_for_wake(&self, wake: &Wake) {
        wake.wait_untimed();
    }
}

/// A wake-up signal: set by producers (new data, `sync_now`, shutdown),
/// consumed by the waiting thread.
#[derive(Debug, Default)]
pub struct Wake {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    /// Signals the waiter (a signal sent while nobody waits is kept).
    pub fn notify(&self) {
        let mut flag = self.flag.lock().unwrap_or_else(|p| p.into_inner());
        *flag = true;
        self.cv.notify_all();
    }

    /// Waits until signalled or `ms` passed; clears the signal.
    fn wait_real(&self, ms: u64) {
        let flag = self.flag.lock().unwrap_or_else(|p| p.into_inner());
        let (mut flag, _) = self
            .cv
            .wait_timeout_while(flag, Duration::from_millis(ms), |set| !*set)
            .unwrap_or_else(|p| p.into_inner());
        *flag = false;
    }

    /// Waits until signalled, however long; clears the signal.
    fn wait_untimed(&self) {
        let flag = self.flag.lock().unwrap_or_else(|p| p.into_inner());
        let mut flag = self
            .cv
            .wait_while(flag, |set| !*set)
            .unwrap_or_else(|p| p.into_inner());
        *flag = false;
    }

    /// Clears a pending signal and says whether there was one.
    fn take(&self) -> bool {
        let mut flag = self.flag.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *flag, false)
    }
}

/// The real clock, optionally offset from the system's wall clock (to
/// model a device whose clock is wrong).
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
    wall_offset_ms: i64,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::with_offset(0)
    }
}

impl SystemClock {
    /// The system clock shifted by `wall_offset_ms` (negative: behind).
    pub fn with_offset(wall_offset_ms: i64) -> Self {
        Self {
            origin: Instant::now(),
            wall_offset_ms,
        }
    }
}

/// The system wall clock in Unix ms (0 before 1970, which no real clock is).
pub(crate) fn system_wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Clock for SystemClock {
    fn wall_ms(&self) -> i64 {
        system_wall_ms().saturating_add(self.wall_offset_ms)
    }

    fn mono_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn wait(&self, wake: &Wake, ms: u64) {
        wake.wait_real(ms);
    }
}

/// A clock that only moves when waited on: each `wait` jumps time forward
/// by the full duration (or not at all when a wake-up is pending) and is
/// recorded, so a test reads the exact schedule the uploader chose.
#[derive(Debug, Clone, Default)]
pub struct VirtualClock {
    inner: Arc<VirtualInner>,
}

#[derive(Debug, Default)]
struct VirtualInner {
    wall_ms: AtomicI64,
    mono_ms: AtomicU64,
    waits: Mutex<Vec<u64>>,
}

impl VirtualClock {
    /// A virtual clock whose wall time starts at `wall_ms`.
    pub fn starting_at(wall_ms: i64) -> Self {
        let clock = Self::default();
        clock.inner.wall_ms.store(wall_ms, Ordering::SeqCst);
        clock
    }

    /// Moves time forward by `ms` without recording a wait.
    pub fn advance(&self, ms: u64) {
        self.inner.mono_ms.fetch_add(ms, Ordering::SeqCst);
        self.inner
            .wall_ms
            .fetch_add(i64::try_from(ms).unwrap_or(i64::MAX), Ordering::SeqCst);
    }

    /// Every wait so far, in ms, in order.
    pub fn waits(&self) -> Vec<u64> {
        self.inner
            .waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Clock for VirtualClock {
    fn wall_ms(&self) -> i64 {
        self.inner.wall_ms.load(Ordering::SeqCst)
    }

    fn mono_ms(&self) -> u64 {
        self.inner.mono_ms.load(Ordering::SeqCst)
    }

    fn wait(&self, wake: &Wake, ms: u64) {
        if wake.take() {
            return;
        }
        self.inner
            .waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ms);
        self.advance(ms);
        // Yield so other threads (the pipeline, the test) make progress
        // between virtual waits instead of spinning through the schedule.
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_waits_jump_time_and_are_recorded() {
        let clock = VirtualClock::starting_at(1_000);
        let wake = Wake::default();
        clock.wait(&wake, 250);
        clock.wait(&wake, 750);
        assert_eq!(clock.waits(), vec![250, 750]);
        assert_eq!(clock.wall_ms(), 2_000);
        assert_eq!(clock.mono_ms(), 1_000);
        wake.notify();
        clock.wait(&wake, 5_000);
        assert_eq!(clock.waits().len(), 2, "a pending wake-up skips the wait");
        assert_eq!(clock.mono_ms(), 1_000);
    }

    #[test]
    fn an_untimed_wait_ends_on_notify_and_moves_no_virtual_time() {
        let clock = VirtualClock::starting_at(1_000);
        let wake = Arc::new(Wake::default());
        let w = Arc::clone(&wake);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.notify();
        });
        clock.wait_for_wake(&wake);
        t.join().unwrap();
        assert_eq!((clock.mono_ms(), clock.waits().len()), (0, 0));
        // A signal sent before the wait is kept: the wait returns at once.
        wake.notify();
        SystemClock::default().wait_for_wake(&wake);
    }

    #[test]
    fn system_wait_returns_early_on_notify() {
        let clock = SystemClock::with_offset(-3_600_000);
        assert!(clock.wall_ms() < system_wall_ms() - 3_599_000);
        let wake = Arc::new(Wake::default());
        let w = Arc::clone(&wake);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.notify();
        });
        let start = Instant::now();
        clock.wait(&wake, 10_000);
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }
}
