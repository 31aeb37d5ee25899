//! The hand-off queue from the callers' threads to the pipeline thread,
//! and what travels in it: captured messages (`Captured`, of a `Kind`)
//! and control commands (`Command`), with their encoding.
//!
//! Contract: a caller, holding the tracker's capture lock, appends a
//! captured message as one compact record to a byte buffer ([`Handoff`]);
//! control commands (flush, reset, purge, shutdown) append a marker
//! record and wait in a side queue, so they apply exactly between the
//! messages sent before and after them. The pipeline swaps the whole
//! buffer for its own empty one under the same lock and reads the records
//! ([`Records`]) without holding it.
//!
//! Why bytes and not a channel of boxed messages: a call then allocates
//! nothing (the name and properties are copied into a buffer that keeps
//! its capacity), and the pipeline frees nothing a caller allocated. With
//! one allocation per message freed on another thread, the two threads
//! took turns on the allocator's arena lock, and a caller sometimes waited
//! for it: that was the tail of `track()`'s latency. A record is also
//! about a third of the memory a boxed message held. While a burst lasts,
//! the pipeline hands back buffers it already reserved and touched (see
//! `Pipeline::prepare_buffer`), so a caller takes no page fault either.
//!
//! Waking the pipeline costs the caller a system call, so a caller wakes
//! it only when it sleeps idle (nothing seen for a while), when
//! [`WAKE_BYTES`] are waiting, or for a control command. While messages
//! flow, the pipeline picks up what arrived at least every [`POLL_MS`]
//! (besides every time it finishes a batch), so a steady stream of calls
//! makes no system calls at all.
//!
//! Record layout (integers little-endian):
//!
//! | record | bytes |
//! |---|---|
//! | message | kind `u8` (0–5) · flags `u8` (bit 0: critical, bit 1: an event version follows) · seq `u64` · capture time `i64` · three lengths `u32` (first string, second string, dedup key or `u32::MAX`) · the strings · the event version `u32` if flagged |
//! | session | `16` · session index `u64` · id length `u32` · id: the session of the messages after it |
//! | control | `17`: the next command of the side queue applies here |

use std::collections::VecDeque;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use tally_proto::Priority;

use crate::error::FlushError;

/// What a message is, as captured on the caller's thread (borrowed from
/// the call, or from the hand-off batch on the pipeline's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    Track { event: &'a str, props: &'a str },
    Screen { name: &'a str, props: &'a str },
    Page { name: &'a str, props: &'a str },
    Identify { user_id: &'a str, traits: &'a str },
    Alias { user_id: &'a str },
    Group { group_id: &'a str, traits: &'a str },
}

impl<'a> Kind<'a> {
    /// The kind's code in a hand-off record.
    pub(crate) fn tag(&self) -> u8 {
        match self {
            Self::Track { .. } => 0,
            Self::Screen { .. } => 1,
            Self::Page { .. } => 2,
            Self::Identify { .. } => 3,
            Self::Alias { .. } => 4,
            Self::Group { .. } => 5,
        }
    }

    /// Its two strings (the second empty for an alias).
    pub(crate) fn strings(&self) -> (&'a str, &'a str) {
        match *self {
            Self::Track { event: a, props: b }
            | Self::Screen { name: a, props: b }
            | Self::Page { name: a, props: b }
            | Self::Identify {
                user_id: a,
                traits: b,
            }
            | Self::Group {
                group_id: a,
                traits: b,
            } => (a, b),
            Self::Alias { user_id } => (user_id, ""),
        }
    }

    /// The kind of code `tag` with strings `a` and `b`.
    pub(crate) fn from_tag(tag: u8, a: &'a str, b: &'a str) -> Option<Self> {
        Some(match tag {
            0 => Self::Track { event: a, props: b },
            1 => Self::Screen { name: a, props: b },
            2 => Self::Page { name: a, props: b },
            3 => Self::Identify {
                user_id: a,
                traits: b,
            },
            4 => Self::Alias { user_id: a },
            5 => Self::Group {
                group_id: a,
                traits: b,
            },
            _ => return None,
        })
    }
}

/// A message handed off by the caller.
#[derive(Debug)]
pub(crate) struct Captured<'a> {
    pub(crate) seq: u64,
    pub(crate) ts_ms: i64,
    pub(crate) session_index: u64,
    pub(crate) kind: Kind<'a>,
    pub(crate) priority: Priority,
    pub(crate) dedup_key: Option<&'a str>,
    /// The version of the event in the app's tracking plan.
    pub(crate) event_version: Option<u32>,
}

/// A control command: travels in the hand-off queue in order with the
/// messages.
#[derive(Debug)]
pub(crate) enum Command {
    Flush(SyncSender<Result<(), FlushError>>),
    Reset,
    /// The collector deleted these users: if one is the current user,
    /// forget them (as `reset()` does).
    Forget(Vec<String>),
    Purge(SyncSender<Result<(), FlushError>>),
    Shutdown,
}

/// Bytes waiting that make a caller wake a polling pipeline at once.
pub(crate) const WAKE_BYTES: usize = 64 * 1024;

/// Longest the pipeline leaves arrived messages waiting while they flow
/// (it sleeps this long only when it found nothing to take).
pub(crate) const POLL_MS: u64 = 5;

/// The buffer a drained queue keeps; a larger one a burst grew is given
/// back, so memory follows the burst down.
const KEPT_CAPACITY: usize = 64 * 1024;

const SESSION: u8 = 16;
const CONTROL: u8 = 17;
const NO_DEDUP: u32 = u32::MAX;
const HEADER: usize = 1 + 1 + 8 + 8 + 4 * 3;
/// Flag bits of a message record's second byte.
const CRITICAL: u8 = 1;
const HAS_VERSION: u8 = 2;

/// How the pipeline is waiting for records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiting {
    /// Not waiting (working, or already woken).
    No,
    /// Found nothing for a while: every record wakes it.
    Idle,
    /// Working through a stream: wakes on its own within [`POLL_MS`], or
    /// when [`WAKE_BYTES`] wait or a control command comes.
    Polling,
}

/// The caller-side half: records not yet taken by the pipeline.
#[derive(Debug)]
pub(crate) struct Handoff {
    buf: Vec<u8>,
    controls: VecDeque<Command>,
    /// The session of the last message record.
    session: Option<Arc<str>>,
    pub(crate) waiting: Waiting,
    /// The pipeline is gone, or shutting down: nothing more is taken.
    pub(crate) closed: bool,
}

/// The encoded size of a message record.
pub(crate) fn message_bytes(c: &Captured<'_>) -> usize {
    let (a, b) = c.kind.strings();
    HEADER + a.len() + b.len() + c.dedup_key.map_or(0, str::len) + c.event_version.map_or(0, |_| 4)
}

fn len32(s: &str) -> [u8; 4] {
    // Every string is bounded far below 4 GiB by the message limits.
    u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes()
}

impl Handoff {
    pub(crate) fn new() -> Self {
        Self {
            buf: Vec::new(),
            controls: VecDeque::new(),
            session: None,
            waiting: Waiting::No,
            closed: false,
        }
    }

    /// Bytes waiting in the buffer.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Appends a message record (and a session record first when its
    /// session is not the previous message's). Returns whether the
    /// pipeline must be woken.
    pub(crate) fn push_message(&mut self, c: &Captured<'_>, session: &Arc<str>) -> bool {
        if !self
            .session
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            self.buf.push(SESSION);
            self.buf.extend_from_slice(&c.session_index.to_le_bytes());
            self.buf.extend_from_slice(&len32(session));
            self.buf.extend_from_slice(session.as_bytes());
            self.session = Some(Arc::clone(session));
        }
        let (a, b) = c.kind.strings();
        self.buf.reserve(message_bytes(c));
        self.buf.push(c.kind.tag());
        let critical = match c.priority {
            Priority::Critical => CRITICAL,
            _ => 0,
        };
        self.buf
            .push(critical | c.event_version.map_or(0, |_| HAS_VERSION));
        self.buf.extend_from_slice(&c.seq.to_le_bytes());
        self.buf.extend_from_slice(&c.ts_ms.to_le_bytes());
        self.buf.extend_from_slice(&len32(a));
        self.buf.extend_from_slice(&len32(b));
        self.buf
            .extend_from_slice(&c.dedup_key.map_or(NO_DEDUP.to_le_bytes(), len32));
        self.buf.extend_from_slice(a.as_bytes());
        self.buf.extend_from_slice(b.as_bytes());
        if let Some(d) = c.dedup_key {
            self.buf.extend_from_slice(d.as_bytes());
        }
        if let Some(v) = c.event_version {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        let wake = match self.waiting {
            Waiting::Idle => true,
            Waiting::Polling => self.buf.len() >= WAKE_BYTES,
            Waiting::No => false,
        };
        if wake {
            self.waiting = Waiting::No;
        }
        wake
    }

    /// Appends a control command. Returns whether the pipeline must be
    /// woken (it must, unless it is awake already).
    pub(crate) fn push_control(&mut self, command: Command) -> bool {
        self.buf.push(CONTROL);
        self.controls.push_back(command);
        std::mem::replace(&mut self.waiting, Waiting::No) != Waiting::No
    }

    /// A caller found the queue full: whether it must wake the pipeline
    /// (it must, unless it is awake already).
    pub(crate) fn wake_when_full(&mut self) -> bool {
        std::mem::replace(&mut self.waiting, Waiting::No) != Waiting::No
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Gives the waiting records to the pipeline: swaps them into `batch`
    /// (which must be empty) and moves the control commands to `controls`.
    /// Returns whether there were any.
    pub(crate) fn take(&mut self, batch: &mut Vec<u8>, controls: &mut VecDeque<Command>) -> bool {
        debug_assert!(batch.is_empty());
        if batch.capacity() > KEPT_CAPACITY && self.buf.len() <= KEPT_CAPACITY {
            // The burst that grew it is over: give the memory back.
            *batch = Vec::with_capacity(KEPT_CAPACITY);
        }
        if self.buf.is_empty() {
            return false;
        }
        std::mem::swap(&mut self.buf, batch);
        controls.append(&mut self.controls);
        true
    }

    /// Closes the queue: nothing pushed from now on is taken. Returns the
    /// control commands nobody will run (their senders see the tracker
    /// shut down when these are dropped).
    pub(crate) fn close(&mut self) -> VecDeque<Command> {
        self.closed = true;
        std::mem::take(&mut self.controls)
    }
}

/// One record, borrowed from a taken batch.
#[derive(Debug)]
pub(crate) enum Record<'a> {
    Message(Captured<'a>),
    Session { id: &'a str, index: u64 },
    Control,
}

/// Reads the records of a taken batch in order.
#[derive(Debug)]
pub(crate) struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    pub(crate) fn new(batch: &'a [u8]) -> Self {
        Self { rest: batch }
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }

    fn str(&mut self, len: u32) -> Option<&'a str> {
        std::str::from_utf8(self.bytes(len as usize)?).ok()
    }

    fn record(&mut self) -> Option<Record<'a>> {
        let tag = *self.bytes(1)?.first()?;
        match tag {
            SESSION => {
                let index = self.u64()?;
                let len = self.u32()?;
                Some(Record::Session {
                    id: self.str(len)?,
                    index,
                })
            }
            CONTROL => Some(Record::Control),
            _ => {
                let flags = *self.bytes(1)?.first()?;
                let priority = match flags & CRITICAL {
                    0 => Priority::Normal,
                    _ => Priority::Critical,
                };
                let seq = self.u64()?;
                let ts_ms = self.u64()? as i64;
                let (a_len, b_len, d_len) = (self.u32()?, self.u32()?, self.u32()?);
                let (a, b) = (self.str(a_len)?, self.str(b_len)?);
                let dedup_key = if d_len == NO_DEDUP {
                    None
                } else {
                    Some(self.str(d_len)?)
                };
                let event_version = match flags & HAS_VERSION {
                    0 => None,
                    _ => Some(self.u32()?),
                };
                Some(Record::Message(Captured {
                    seq,
                    ts_ms,
                    session_index: 0,
                    kind: Kind::from_tag(tag, a, b)?,
                    priority,
                    dedup_key,
                    event_version,
                }))
            }
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let record = self.record();
        // Only `Handoff` writes these bytes: a record that does not parse
        // is a bug, not input, and nothing after it can be trusted.
        debug_assert!(record.is_some(), "malformed hand-off record");
        if record.is_none() {
            self.rest = &[];
        }
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured<'a>(seq: u64, kind: Kind<'a>, dedup_key: Option<&'a str>) -> Captured<'a> {
        captured_version(seq, kind, dedup_key, None)
    }

    fn captured_version<'a>(
        seq: u64,
        kind: Kind<'a>,
        dedup_key: Option<&'a str>,
        event_version: Option<u32>,
    ) -> Captured<'a> {
        Captured {
            seq,
            ts_ms: 1_700_000_000_000 + seq as i64,
            session_index: 3,
            kind,
            priority: if seq % 2 == 0 {
                Priority::Critical
            } else {
                Priority::Normal
            },
            dedup_key,
            event_version,
        }
    }

    #[test]
    fn records_come_back_in_order_with_their_sessions_and_controls() {
        let s1: Arc<str> = Arc::from("session-one");
        let s2: Arc<str> = Arc::from("session-two");
        let mut h = Handoff::new();
        let kinds = [
            Kind::Track {
                event: "Order Completed",
                props: r#"{"total":42.5}"#,
            },
            Kind::Screen {
                name: "Home",
                props: "{}",
            },
            Kind::Identify {
                user_id: "u-1",
                traits: r#"{"plan":"pro"}"#,
            },
            Kind::Alias { user_id: "u-2" },
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let session = if i < 2 { &s1 } else { &s2 };
            let dedup = (i == 1).then_some("checkout-7");
            let version = (i == 0 || i == 1).then_some(i as u32 + 7);
            h.push_message(
                &captured_version(i as u64 + 1, kind, dedup, version),
                session,
            );
            if i == 1 {
                h.push_control(Command::Reset);
            }
        }
        let (mut batch, mut controls) = (Vec::new(), VecDeque::new());
        h.take(&mut batch, &mut controls);
        assert!(h.is_empty());
        assert_eq!(controls.len(), 1);

        let seen: Vec<String> = Records::new(&batch)
            .map(|r| match r {
                Record::Session { id, index } => format!("session {id} {index}"),
                Record::Control => "control".to_owned(),
                Record::Message(c) => format!(
                    "{} {} {:?} {:?} {:?} {:?} {}",
                    c.seq,
                    c.ts_ms - 1_700_000_000_000,
                    c.priority,
                    c.kind,
                    c.dedup_key,
                    c.event_version,
                    c.session_index
                ),
            })
            .collect();
        assert_eq!(
            seen,
            [
                "session session-one 3",
                r#"1 1 Normal Track { event: "Order Completed", props: "{\"total\":42.5}" } None Some(7) 0"#,
                r#"2 2 Critical Screen { name: "Home", props: "{}" } Some("checkout-7") Some(8) 0"#,
                "control",
                "session session-two 3",
                r#"3 3 Normal Identify { user_id: "u-1", traits: "{\"plan\":\"pro\"}" } None None 0"#,
                r#"4 4 Critical Alias { user_id: "u-2" } None None 0"#,
            ]
        );
        let strings = 15 + 14 + 4 + 2 + 10 + 3 + 14 + 3;
        let sessions = 2 * (1 + 8 + 4) + "session-one".len() + "session-two".len();
        let versions = 2 * 4;
        assert_eq!(batch.len(), sessions + 1 + 4 * HEADER + strings + versions);
    }

    #[test]
    fn a_caller_wakes_the_pipeline_only_when_it_must() {
        let s: Arc<str> = Arc::from("s");
        let props = "x".repeat(1_000);
        let kind = || Kind::Track {
            event: "e",
            props: &props,
        };
        let mut h = Handoff::new();
        assert!(!h.push_message(&captured(1, kind(), None), &s), "awake");
        h.waiting = Waiting::Idle;
        assert!(h.push_message(&captured(2, kind(), None), &s), "idle");
        h.waiting = Waiting::Polling;
        let mut woke_at = None;
        for seq in 3..200 {
            if h.push_message(&captured(seq, kind(), None), &s) {
                woke_at = Some(h.len());
                break;
            }
        }
        let woke_at = woke_at.unwrap_or_default();
        assert!(
            (WAKE_BYTES..WAKE_BYTES + 1_100).contains(&woke_at),
            "{woke_at}"
        );
        assert_eq!(h.waiting, Waiting::No, "one wake is enough");
        assert!(!h.push_message(&captured(500, kind(), None), &s));
        h.waiting = Waiting::Polling;
        assert!(h.push_control(Command::Reset), "a control wakes");
        assert!(!h.push_control(Command::Reset), "awake now");
        h.waiting = Waiting::Polling;
        assert!(h.wake_when_full(), "a full queue wakes");
    }

    #[test]
    fn a_drained_queue_gives_a_burst_buffer_back() {
        let s: Arc<str> = Arc::from("s");
        let props = "x".repeat(10_000);
        let mut h = Handoff::new();
        for seq in 0..100 {
            let kind = Kind::Track {
                event: "e",
                props: &props,
            };
            h.push_message(&captured(seq, kind, None), &s);
        }
        let (mut batch, mut controls) = (Vec::new(), VecDeque::new());
        h.take(&mut batch, &mut controls);
        assert_eq!(Records::new(&batch).count(), 101);
        assert!(batch.capacity() >= 1_000_000);
        batch.clear();
        // The next take finds little waiting: the big buffer goes.
        h.take(&mut batch, &mut controls);
        assert!(batch.capacity() <= KEPT_CAPACITY, "{}", batch.capacity());
        assert!(h.buf.capacity() < 1_000_000);
        assert_eq!(h.close().len(), 0);
        assert!(h.closed);
    }
}
