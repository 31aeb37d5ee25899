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
//! Record layout (integers are LEB128; `Δ` is the difference from the
//! previous message record of the same buffer, or from 0 for its first):
//!
//! | record | bytes |
//! |---|---|
//! | message | tag `u8` (kind 0–5, `| 8` critical, `| 16` with a dedup key, `| 32` with an event version, `| 128` first string as the previous message's) · Δseq · Δcapture time (zigzag) · the event version if any · the strings' lengths (first unless repeated, second, dedup key if any) · the strings |
//! | session | `0x40` · session index · id length · id: the session of the messages after it |
//! | control | `0x41`: the next command of the side queue applies here |
//!
//! A burst's records are thus 4 bytes plus their properties (seqs follow
//! each other, times and event names repeat): the budget holds as many
//! events as it can.

use std::collections::VecDeque;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use tally_proto::Priority;

use crate::error::FlushError;
use crate::stored::{put_varint, take_varint, unzigzag, zigzag};

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
    /// The bytes its hand-off record took (set when read back).
    pub(crate) cost: usize,
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

const SESSION: u8 = 0x40;
const CONTROL: u8 = 0x41;
const KIND_MASK: u8 = 0x07;
const CRITICAL: u8 = 0x08;
const DEDUP: u8 = 0x10;
const VERSION: u8 = 0x20;
/// The first string (the event or screen name) is the previous message
/// record's: neither its length nor its bytes are written again.
const SAME_FIRST: u8 = 0x80;

fn varint_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

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
    /// The seq and capture time of the buffer's last message record (the
    /// next one is written as a difference from them).
    prev_seq: u64,
    prev_ts: i64,
    /// Where the previous message record's first string is in `buf`.
    prev_first: Option<(usize, usize)>,
    pub(crate) waiting: Waiting,
    /// The pipeline is gone, or shutting down: nothing more is taken.
    pub(crate) closed: bool,
}

impl Handoff {
    pub(crate) fn new() -> Self {
        Self {
            buf: Vec::new(),
            controls: VecDeque::new(),
            session: None,
            prev_seq: 0,
            prev_ts: 0,
            prev_first: None,
            waiting: Waiting::No,
            closed: false,
        }
    }

    /// Bytes waiting in the buffer.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The bytes `c`'s message record takes if it is pushed next (what it
    /// costs against the budget).
    pub(crate) fn cost(&self, c: &Captured<'_>) -> usize {
        let (a, b) = c.kind.strings();
        let dedup = c
            .dedup_key
            .map_or(0, |d| varint_len(d.len() as u64) + d.len());
        let version = c.event_version.map_or(0, |v| varint_len(u64::from(v)));
        let first = if self.repeats_first(a) {
            0
        } else {
            varint_len(a.len() as u64) + a.len()
        };
        1 + version
            + varint_len(c.seq.wrapping_sub(self.prev_seq))
            + varint_len(zigzag(c.ts_ms.wrapping_sub(self.prev_ts)))
            + first
            + varint_len(b.len() as u64)
            + b.len()
            + dedup
    }

    /// Whether `first` is the previous message record's first string.
    fn repeats_first(&self, first: &str) -> bool {
        self.prev_first
            .is_some_and(|(at, len)| self.buf.get(at..at + len) == Some(first.as_bytes()))
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
            put_varint(c.session_index, &mut self.buf);
            put_varint(session.len() as u64, &mut self.buf);
            self.buf.extend_from_slice(session.as_bytes());
            self.session = Some(Arc::clone(session));
        }
        let (a, b) = c.kind.strings();
        self.buf.reserve(self.cost(c));
        let same_first = self.repeats_first(a);
        let mut tag = c.kind.tag();
        if same_first {
            tag |= SAME_FIRST;
        }
        if c.priority == Priority::Critical {
            tag |= CRITICAL;
        }
        if c.dedup_key.is_some() {
            tag |= DEDUP;
        }
        if c.event_version.is_some() {
            tag |= VERSION;
        }
        self.buf.push(tag);
        put_varint(c.seq.wrapping_sub(self.prev_seq), &mut self.buf);
        put_varint(zigzag(c.ts_ms.wrapping_sub(self.prev_ts)), &mut self.buf);
        if let Some(v) = c.event_version {
            put_varint(u64::from(v), &mut self.buf);
        }
        if !same_first {
            put_varint(a.len() as u64, &mut self.buf);
        }
        put_varint(b.len() as u64, &mut self.buf);
        if let Some(d) = c.dedup_key {
            put_varint(d.len() as u64, &mut self.buf);
        }
        if !same_first {
            self.prev_first = Some((self.buf.len(), a.len()));
            self.buf.extend_from_slice(a.as_bytes());
        }
        self.buf.extend_from_slice(b.as_bytes());
        if let Some(d) = c.dedup_key {
            self.buf.extend_from_slice(d.as_bytes());
        }
        self.prev_seq = c.seq;
        self.prev_ts = c.ts_ms;
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
        // The next record is the first of a new buffer: its differences
        // are from 0.
        self.prev_seq = 0;
        self.prev_ts = 0;
        self.prev_first = None;
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
    prev_seq: u64,
    prev_ts: i64,
    prev_first: &'a str,
}

impl<'a> Records<'a> {
    pub(crate) fn new(batch: &'a [u8]) -> Self {
        Self {
            rest: batch,
            prev_seq: 0,
            prev_ts: 0,
            prev_first: "",
        }
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn varint(&mut self) -> Option<u64> {
        take_varint(&mut self.rest)
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }

    fn str(&mut self, len: usize) -> Option<&'a str> {
        std::str::from_utf8(self.bytes(len)?).ok()
    }

    fn record(&mut self) -> Option<Record<'a>> {
        let start = self.rest.len();
        let tag = *self.bytes(1)?.first()?;
        match tag {
            SESSION => {
                let index = self.varint()?;
                let len = self.len()?;
                Some(Record::Session {
                    id: self.str(len)?,
                    index,
                })
            }
            CONTROL => Some(Record::Control),
            _ => {
                let priority = if tag & CRITICAL != 0 {
                    Priority::Critical
                } else {
                    Priority::Normal
                };
                let seq = self.prev_seq.wrapping_add(self.varint()?);
                let delta = unzigzag(self.varint()?);
                let ts_ms = self.prev_ts.wrapping_add(delta);
                let event_version = if tag & VERSION != 0 {
                    Some(u32::try_from(self.varint()?).ok()?)
                } else {
                    None
                };
                let same_first = tag & SAME_FIRST != 0;
                let a_len = if same_first { None } else { Some(self.len()?) };
                let b_len = self.len()?;
                let d_len = if tag & DEDUP != 0 {
                    Some(self.len()?)
                } else {
                    None
                };
                let a = match a_len {
                    Some(n) => self.str(n)?,
                    None => self.prev_first,
                };
                let b = self.str(b_len)?;
                self.prev_first = a;
                let dedup_key = match d_len {
                    Some(n) => Some(self.str(n)?),
                    None => None,
                };
                self.prev_seq = seq;
                self.prev_ts = ts_ms;
                Some(Record::Message(Captured {
                    seq,
                    ts_ms,
                    session_index: 0,
                    kind: Kind::from_tag(tag & KIND_MASK, a, b)?,
                    priority,
                    dedup_key,
                    event_version,
                    cost: start - self.rest.len(),
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
            cost: 0,
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
        let sessions = 2 * (1 + 1 + 1) + "session-one".len() + "session-two".len();
        // Tag, Δseq, Δtime, two lengths (and the dedup key's): the first
        // time is a difference from 0 (6 bytes), the rest from the last.
        // The first two carry a version (one byte each).
        let headers = (1 + 1 + 6 + 1 + 2) + (1 + 1 + 1 + 1 + 2 + 1) + (1 + 1 + 1 + 2) * 2;
        assert_eq!(batch.len(), sessions + 1 + headers + strings);
    }

    #[test]
    fn a_record_costs_what_it_takes_and_reads_back_at_that_cost() {
        let s: Arc<str> = Arc::from("s");
        let mut h = Handoff::new();
        let mut costs = Vec::new();
        for (seq, version, dedup) in [
            (1, Some(300), Some("d")),
            (2, None, None),
            (500, Some(u32::MAX), Some("")),
            (501, Some(1), None),
        ] {
            let kind = Kind::Track {
                event: "e",
                props: r#"{"k":1}"#,
            };
            let c = captured_version(seq, kind, dedup, version);
            let cost = h.cost(&c);
            // The first push also writes the session record.
            let before = h.len() + if seq == 1 { 3 + 1 } else { 0 };
            h.push_message(&c, &s);
            assert_eq!(h.len() - before, cost, "seq {seq}");
            costs.push(cost);
        }
        let (mut batch, mut controls) = (Vec::new(), VecDeque::new());
        h.take(&mut batch, &mut controls);
        let read: Vec<usize> = Records::new(&batch)
            .filter_map(|r| match r {
                Record::Message(c) => Some(c.cost),
                _ => None,
            })
            .collect();
        assert_eq!(read, costs);
    }

    #[test]
    fn a_repeated_name_is_written_once_per_run_and_once_per_buffer() {
        let s: Arc<str> = Arc::from("s");
        let mut h = Handoff::new();
        let names = [
            "Song Played",
            "Song Played",
            "Song Skipped",
            "Song Skipped",
            "Song Played",
        ];
        let mut costs = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let c = captured(
                i as u64 + 1,
                Kind::Track {
                    event: name,
                    props: "{}",
                },
                None,
            );
            costs.push(h.cost(&c));
            h.push_message(&c, &s);
        }
        // A name's length (one byte) and bytes are written only when it
        // differs from the previous record's.
        let full = |name: &str| 1 + 1 + 1 + (1 + name.len()) + (1 + 2);
        assert_eq!(
            costs,
            [
                full("Song Played") + 5,
                full("Song Played") - 12,
                full("Song Skipped"),
                full("Song Skipped") - 13,
                full("Song Played"),
            ]
        );
        let (mut batch, mut controls) = (Vec::new(), VecDeque::new());
        h.take(&mut batch, &mut controls);
        // The next buffer starts over: its first record carries the name.
        let c = captured(
            6,
            Kind::Track {
                event: "Song Played",
                props: "{}",
            },
            None,
        );
        assert_eq!(h.cost(&c), full("Song Played") + 5);
        h.push_message(&c, &s);
        let mut second = Vec::new();
        h.take(&mut second, &mut controls);
        let read: Vec<(u64, String, usize)> = Records::new(&batch)
            .chain(Records::new(&second))
            .filter_map(|r| match r {
                Record::Message(c) => Some((c.seq, c.kind.strings().0.to_owned(), c.cost)),
                _ => None,
            })
            .collect();
        let mut expected: Vec<(u64, String, usize)> = names
            .iter()
            .zip(&costs)
            .enumerate()
            .map(|(i, (n, c))| (i as u64 + 1, (*n).to_owned(), *c))
            .collect();
        expected.push((6, "Song Played".to_owned(), full("Song Played") + 5));
        assert_eq!(read, expected);
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
