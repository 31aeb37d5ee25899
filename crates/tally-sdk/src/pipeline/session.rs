//! Sessions: a new session after a period of inactivity, or on demand.
//!
//! Contract: [`Sessions::touch`] is called on the caller's thread for every
//! message, under the tracker's capture lock, with the capture time. It
//! returns the session the message belongs to, starting a new one (new
//! random `session_id`, `session_index` + 1) when more than the timeout
//! passed since the last activity. It never fails and never does I/O: the
//! pipeline persists the current session with the rest of the state, so a
//! restart within the timeout continues the session and a later one starts
//! the next index.
//!
//! A clock that jumps backwards is treated as activity, not as a reason to
//! split the session: the last-activity time only ever moves forward.
//!
//! An app may name the session an event belongs to (it kept the id from
//! [`Sessions::current`], say across a screen that outlived a logout).
//! [`Sessions::touch_named`] accepts it only for the session that exists
//! now: the current one, within its inactivity timeout. An id this install
//! never started, or one that ended (timed out, replaced by `reset()` or
//! by a restart after the timeout), is refused; the tracker counts the
//! refusal as `unknown_session` and the event takes no `seq`, so the
//! collector never sees an event attached to a session that is over.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Default inactivity timeout: 30 minutes, the industry convention
/// (Google Analytics, Amplitude, Segment's mobile SDKs).
pub const DEFAULT_SESSION_TIMEOUT_MS: i64 = 30 * 60 * 1_000;

/// A session as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    /// The session's id.
    pub id: String,
    /// 1 for the install's first session.
    pub index: u64,
    /// Capture time of the last message in it (Unix ms, device clock).
    pub last_activity_ms: i64,
}

/// The current session and its inactivity rule.
#[derive(Debug)]
pub struct Sessions {
    timeout_ms: i64,
    id: Arc<str>,
    index: u64,
    last_activity_ms: i64,
}

impl Sessions {
    /// Continues `saved` if its last activity is within the timeout of
    /// `now_ms`, else starts the next session.
    pub fn restore(saved: Option<SavedSession>, now_ms: i64, timeout_ms: i64) -> Self {
        match saved {
            Some(s) if now_ms.saturating_sub(s.last_activity_ms) <= timeout_ms => Self {
                timeout_ms,
                id: Arc::from(s.id),
                index: s.index,
                last_activity_ms: s.last_activity_ms,
            },
            Some(s) => Self::fresh(s.index + 1, now_ms, timeout_ms),
            None => Self::fresh(1, now_ms, timeout_ms),
        }
    }

    fn fresh(index: u64, now_ms: i64, timeout_ms: i64) -> Self {
        Self {
            timeout_ms,
            id: Arc::from(uuid::Uuid::new_v4().to_string()),
            index,
            last_activity_ms: now_ms,
        }
    }

    /// The session a message captured at `now_ms` belongs to.
    pub fn touch(&mut self, now_ms: i64) -> (Arc<str>, u64) {
        if now_ms.saturating_sub(self.last_activity_ms) > self.timeout_ms {
            *self = Self::fresh(self.index + 1, now_ms, self.timeout_ms);
        }
        self.last_activity_ms = self.last_activity_ms.max(now_ms);
        (Arc::clone(&self.id), self.index)
    }

    /// The session a message captured at `now_ms` and naming session `id`
    /// belongs to, or `None` when no such session exists now (never
    /// started here, or ended). A refused message changes nothing.
    pub fn touch_named(&mut self, id: &str, now_ms: i64) -> Option<(Arc<str>, u64)> {
        let live = now_ms.saturating_sub(self.last_activity_ms) <= self.timeout_ms;
        if !live || *self.id != *id {
            return None;
        }
        self.last_activity_ms = self.last_activity_ms.max(now_ms);
        Some((Arc::clone(&self.id), self.index))
    }

    /// The current session's id and index (it may have timed out by the
    /// next message, which then starts the next session).
    pub fn current(&self) -> (Arc<str>, u64) {
        (Arc::clone(&self.id), self.index)
    }

    /// Ends the current session; the next message starts a new one.
    pub fn start_new(&mut self, now_ms: i64) {
        *self = Self::fresh(self.index + 1, now_ms, self.timeout_ms);
    }

    /// The session as persisted.
    pub fn saved(&self) -> SavedSession {
        SavedSession {
            id: self.id.to_string(),
            index: self.index,
            last_activity_ms: self.last_activity_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = DEFAULT_SESSION_TIMEOUT_MS;

    #[test]
    fn inactivity_starts_the_next_session() {
        let mut s = Sessions::restore(None, 0, T);
        let (first, i1) = s.touch(1_000);
        assert_eq!(i1, 1);
        let (same, i) = s.touch(1_000 + T);
        assert_eq!(
            (&*same, i),
            (&*first, 1),
            "exactly the timeout still continues"
        );
        let (next, i2) = s.touch(1_000 + 2 * T + 1);
        assert_eq!(i2, 2);
        assert_ne!(next, first);
    }

    #[test]
    fn a_clock_going_backwards_is_activity() {
        let mut s = Sessions::restore(None, 10 * T, T);
        let (a, _) = s.touch(10 * T);
        let (b, i) = s.touch(T);
        assert_eq!((a, 1), (b, i));
        assert_eq!(s.saved().last_activity_ms, 10 * T);
    }

    #[test]
    fn only_the_live_session_can_be_named() {
        let mut s = Sessions::restore(None, 0, T);
        let (id, index) = s.touch(1_000);
        assert_eq!(s.touch_named(&id, 2_000), Some((id.clone(), index)));
        assert_eq!(s.touch_named("never-started", 2_000), None);
        // Past the timeout the named session is over, and refusing the
        // message neither revives it nor starts the next one.
        assert_eq!(s.touch_named(&id, 2_001 + T), None);
        assert_eq!(s.saved().last_activity_ms, 2_000);
        let (next, i2) = s.touch(2_001 + T);
        assert_eq!(i2, index + 1);
        assert_eq!(s.touch_named(&id, 2_002 + T), None);
        s.start_new(3_000 + T);
        assert_eq!(s.touch_named(&next, 3_000 + T), None, "ended by reset");
    }

    #[test]
    fn restore_continues_or_ends_the_saved_session() {
        let saved = SavedSession {
            id: "s-7".into(),
            index: 7,
            last_activity_ms: 5_000,
        };
        let mut cont = Sessions::restore(Some(saved.clone()), 5_000 + T, T);
        assert_eq!(cont.touch(5_000 + T), (Arc::from("s-7"), 7));
        let mut ended = Sessions::restore(Some(saved), 5_001 + T, T);
        let (id, index) = ended.touch(5_001 + T);
        assert_eq!(index, 8);
        assert_ne!(&*id, "s-7");
        ended.start_new(6_000 + T);
        assert_eq!(ended.touch(6_000 + T).1, 9);
    }
}
