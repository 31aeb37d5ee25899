//! What the log's handle ([`super::Log`]) and its writer thread share:
//! the queue of appended records not yet written ([`Queue`]), the index
//! under its lock, the counters `append` reads without a lock, and the
//! condition variables between them ([`Shared`]).
//!
//! Both import this module and neither imports the other's internals:
//! the handle starts a [`super::writer::Writer`] on a [`Shared`], and the
//! writer reads and answers what the handle queued here.
//!
//! Invariants: `Queue::bytes` counts the payload bytes the lanes hold,
//! which `append` keeps within `max_inflight_bytes` (it waits, then
//! refuses); a flush or purge is answered when its `*_done` counter
//! reaches its `*_requested`, with its `*_result`.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::crypto::{Cipher, KeyId};
use super::index::{Counts, State};
use super::{LogConfig, LogError};

/// Queued bytes that end the gathering at once (and that wake a gathering
/// writer): about 300 events of 200 bytes, one write call's worth.
pub(crate) const GROUP_WAKE_BYTES: usize = 64 * 1024;

/// Appended frames of one lane waiting for the writer.
#[derive(Debug, Default)]
pub(crate) struct LaneBuf {
    pub bytes: Vec<u8>,
    pub metas: Vec<QueuedMeta>,
}

impl LaneBuf {
    pub(crate) fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct QueuedMeta {
    pub seq: u64,
    pub appended_at_ms: u64,
    pub len: u32,
    pub key: KeyId,
    /// The generation of the record's context (0: none).
    pub ctx: u32,
}

/// The contexts appends name (format 2, see [`super::record`]): each new
/// one gets the next generation and goes to the writer, which stores it
/// once per segment before the first record that names it.
#[derive(Debug, Default)]
pub(crate) struct Contexts {
    /// The context of the last append that had one, and its generation:
    /// the same `Arc` again is the same context.
    pub last: Option<(Arc<[u8]>, u32)>,
    /// The last generation given.
    pub generation: u32,
    /// Contexts not yet taken by the writer.
    pub new: Vec<(u32, Arc<[u8]>)>,
}

impl Contexts {
    /// The generation of `context`, given the next one if it is new.
    pub(crate) fn generation_of(&mut self, context: Option<&Arc<[u8]>>) -> u32 {
        let Some(context) = context else { return 0 };
        match &self.last {
            Some((c, gen)) if Arc::ptr_eq(c, context) || **c == **context => *gen,
            _ => {
                self.generation = self.generation.wrapping_add(1).max(1);
                self.new.push((self.generation, Arc::clone(context)));
                self.last = Some((Arc::clone(context), self.generation));
                self.generation
            }
        }
    }
}

/// The queue between `append` and the writer, and the writer's replies.
#[derive(Debug)]
pub(crate) struct Queue {
    /// Plaintext payloads per lane (sealed by the writer).
    pub lanes: [LaneBuf; 2],
    /// The key new records are sealed with.
    pub cipher: Arc<Cipher>,
    /// Contexts the appends named.
    pub contexts: Contexts,
    pub bytes: usize,
    /// Appends refused (seq, reason), for the ledger.
    pub refused: Vec<(u64, &'static str)>,
    pub flush_requested: u64,
    pub flush_done: u64,
    pub flush_result: Option<LogError>,
    pub purge_requested: u64,
    pub purge_done: u64,
    pub purge_result: Option<LogError>,
    pub closing: bool,
    pub stopped: bool,
    pub writer_waiting: bool,
    /// The writer waits for a group to fill (see [`GROUP_GATHER`]): only
    /// an append that brings the queue to [`GROUP_WAKE_BYTES`] wakes it.
    pub writer_gathering: bool,
    /// Records were acknowledged since the writer last looked: it owes
    /// housekeeping.
    pub acked: bool,
}

impl Queue {
    pub(crate) fn new(cipher: Arc<Cipher>) -> Queue {
        Queue {
            lanes: Default::default(),
            cipher,
            contexts: Contexts::default(),
            bytes: 0,
            refused: Vec::new(),
            flush_requested: 0,
            flush_done: 0,
            flush_result: None,
            purge_requested: 0,
            purge_done: 0,
            purge_result: None,
            closing: false,
            stopped: false,
            writer_waiting: false,
            writer_gathering: false,
            acked: false,
        }
    }

    /// Whether an append that left `bytes` queued should wake the writer.
    pub(crate) fn append_wakes_writer(&self) -> bool {
        self.writer_waiting && (!self.writer_gathering || self.bytes >= GROUP_WAKE_BYTES)
    }

    pub(crate) fn needs_writer_now(&self) -> bool {
        self.bytes >= GROUP_WAKE_BYTES
            || !self.refused.is_empty()
            || self.flush_requested > self.flush_done
            || self.purge_requested > self.purge_done
            || self.closing
    }

    pub(crate) fn has_work(&self) -> bool {
        self.bytes > 0
            || !self.refused.is_empty()
            || self.flush_requested > self.flush_done
            || self.purge_requested > self.purge_done
            || self.closing
    }
}

#[derive(Debug)]
/// What the handle and the writer thread share.
pub(crate) struct Shared {
    pub config: LogConfig,
    pub queue: Mutex<Queue>,
    /// Wakes the writer.
    pub work: Condvar,
    /// Wakes flush, purge and close waiters, and appends waiting for room.
    pub done: Condvar,
    pub state: Mutex<State>,
    pub counts: Arc<Counts>,
}

pub(crate) fn lock_queue(shared: &Shared) -> MutexGuard<'_, Queue> {
    shared.queue.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn lock_state(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}
