//! The background writer: drains the append queue in groups, appends each
//! group to its lane's segment with one write, syncs per the durability
//! mode (group commit), and indexes what it wrote.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::crypto::{Cipher, KeyId};
use super::fs::FileHandle;
use super::index::{now_ms, Seg, State, Written, WrittenContext};
use super::queue::{lock_queue, lock_state, LaneBuf, QueuedMeta, Shared};
use super::record::{self, HEADER_BYTES};
use super::segment::{self, Lane};
use super::{Durability, FullPolicy, LogError};

/// Most often the writer does housekeeping (the age bound, retiring a
/// fully acknowledged segment, deleting keys nothing needs): once a second
/// is far finer than any age bound. It is owed only after acks, or when a
/// pending record reaches the age bound: an idle log sets no timer.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// In [`Durability::Buffered`] mode an idle writer woken by an append
/// gathers appends for up to this long, or until [`super::queue::GROUP_WAKE_BYTES`] are
/// queued, before it takes the group: without it, a fast stream of appends
/// wakes it for groups of a record or two, and the per-group cost (locks,
/// a write call, indexing) dominates. 2 ms is far inside the loss window
/// the mode documents, and one sync interval holds a hundred such groups.
pub(crate) const GROUP_GATHER: Duration = Duration::from_millis(2);
/// Wait before retrying a group that failed with ENOSPC or an I/O error:
/// long enough not to spin on a full disk, short enough that the log
/// resumes within a moment of space returning.
const RETRY_DELAY: Duration = Duration::from_millis(200);

#[derive(Debug)]
struct Active {
    id: u64,
    file: Box<dyn FileHandle>,
    len: u64,
    dirty: bool,
    /// The context generations whose frame this segment holds, with the
    /// key each frame was sealed with.
    contexts: Vec<(u32, KeyId)>,
}

/// Groups of at least this many records are sealed by two threads: about
/// half a millisecond of sealing, so the cost of starting the helper thread
/// (tens of microseconds) stays a few percent.
const PARALLEL_SEAL_MIN_RECORDS: usize = 512;

/// Seals consecutive records: `plain` holds their payloads back to back,
/// `out` receives their frames back to back (exactly sized). A record the
/// AEAD refuses (only possible beyond 256 GiB, which the payload bound
/// rules out) is left zeroed: recovery and reads count it corrupt.
fn seal_run(
    cipher: &Cipher,
    priority: tally_proto::Priority,
    metas: &[QueuedMeta],
    plain: &[u8],
    out: &mut [u8],
) {
    let mut p = 0usize;
    let mut o = 0usize;
    for m in metas {
        let len = m.len as usize;
        let plen = len - record::OVERHEAD_BYTES;
        let frame = &mut out[o..o + len];
        frame[HEADER_BYTES..HEADER_BYTES + plen].copy_from_slice(&plain[p..p + plen]);
        record::seal(cipher, m.seq, m.appended_at_ms, priority, frame);
        p += plen;
        o += len;
    }
}

/// When the oldest pending record passes the age bound (`None`: nothing
/// is pending, or that is further than an `Instant` reaches).
fn expiry(state: &mut State, max_age: [Duration; 2]) -> Option<Instant> {
    let now = now_ms();
    let left = Lane::ALL
        .into_iter()
        .filter_map(|lane| {
            let oldest = state.oldest_pending_ms_of(lane)?;
            let age_ms = u64::try_from(max_age[lane.index()].as_millis()).unwrap_or(u64::MAX);
            Some(oldest.saturating_add(age_ms).saturating_sub(now))
        })
        .min()?;
    Instant::now().checked_add(Duration::from_millis(left))
}

/// A context frame to write: generation, key, frame length, context.
type ContextFrame = (u32, KeyId, u32, Arc<[u8]>);

/// What one `write_lane` produces, for the index.
struct Out<'a> {
    records: &'a mut Vec<Written>,
    contexts: &'a mut Vec<WrittenContext>,
    created: &'a mut Vec<Seg>,
    sealed: &'a mut Vec<u64>,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    active: [Option<Active>; 2],
    carry: [LaneBuf; 2],
    spare: [LaneBuf; 2],
    unsynced_since: Option<Instant>,
    retry_at: Option<Instant>,
    last_housekeeping: Instant,
    /// Acks happened since the last housekeeping.
    housekeeping_owed: bool,
    /// When the oldest pending record passes the age bound (`None`: no
    /// record is pending).
    expires_at: Option<Instant>,
    /// Drops (refused appends, and those recorded by the log's caller)
    /// not yet in the ledger, in seq order: each goes there once every
    /// record below it is on disk (see `cycle`). Kept across a purge: what
    /// was counted stays counted.
    refused: Vec<(u64, &'static str)>,
    /// The contexts the carried records name, by generation (and the
    /// newest, which later appends may still name).
    contexts: BTreeMap<u32, Arc<[u8]>>,
    /// The key context frames are sealed with: the one the records taken
    /// with them were.
    cipher: Option<Arc<Cipher>>,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>) -> Writer {
        let expires_at = expiry(&mut lock_state(&shared), shared.config.max_ages());
        Writer {
            shared,
            active: [None, None],
            carry: Default::default(),
            spare: Default::default(),
            unsynced_since: None,
            retry_at: None,
            last_housekeeping: Instant::now(),
            housekeeping_owed: false,
            expires_at,
            refused: Vec::new(),
            contexts: BTreeMap::new(),
            cipher: None,
        }
    }

    /// How long until something the writer owes is due (`None`: nothing
    /// is, and it sleeps until woken).
    fn wait_timeout(&self, now: Instant, acked: bool) -> Option<Duration> {
        let next_housekeeping = self.last_housekeeping + HOUSEKEEPING_INTERVAL;
        let owed = (self.housekeeping_owed || acked).then_some(next_housekeeping);
        let expiry = self.expires_at.map(|at| at.max(next_housekeeping));
        let sync = match (self.unsynced_since, self.shared.config.durability) {
            (Some(since), Durability::Buffered { max_delay }) => Some(since + max_delay),
            _ => None,
        };
        [owed, expiry, sync, self.retry_at]
            .into_iter()
            .flatten()
            .min()
            .map(|due| due.saturating_duration_since(now))
    }

    pub(crate) fn run(mut self) {
        let shared = self.shared.clone();
        loop {
            let mut q = lock_queue(&shared);
            loop {
                if q.has_work()
                    && !(self.retry_at.is_some()
                        && q.flush_requested == q.flush_done
                        && !q.closing
                        && q.purge_requested == q.purge_done)
                {
                    break;
                }
                let timeout = self.wait_timeout(Instant::now(), q.acked);
                if timeout.is_some_and(|t| t.is_zero()) {
                    break;
                }
                q.writer_waiting = true;
                q = match timeout {
                    Some(t) => {
                        self.shared
                            .work
                            .wait_timeout(q, t)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => self.shared.work.wait(q).unwrap_or_else(|p| p.into_inner()),
                };
                q.writer_waiting = false;
            }
            if let Durability::Buffered { .. } = self.shared.config.durability {
                let gather_until = Instant::now() + GROUP_GATHER;
                while self.retry_at.is_none() && q.bytes > 0 && !q.needs_writer_now() {
                    let now = Instant::now();
                    if now >= gather_until {
                        break;
                    }
                    q.writer_waiting = true;
                    q.writer_gathering = true;
                    q = self
                        .shared
                        .work
                        .wait_timeout(q, gather_until - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    q.writer_waiting = false;
                    q.writer_gathering = false;
                }
            }
            for (lane, spare) in self.spare.iter_mut().enumerate() {
                std::mem::swap(&mut q.lanes[lane], spare);
            }
            self.housekeeping_owed |= std::mem::take(&mut q.acked);
            q.bytes = 0;
            let cipher = q.cipher.clone();
            self.contexts.extend(q.contexts.new.drain(..));
            self.cipher = Some(cipher.clone());
            let flush_gen = q.flush_requested;
            let flush_pending = q.flush_requested > q.flush_done;
            self.refused.append(&mut q.refused);
            // In seq order (the log's refusals and its caller's drops
            // arrive from one thread, so this only guards).
            self.refused.sort_by_key(|(seq, _)| *seq);
            let closing = q.closing;
            let purge_gen = q.purge_requested;
            let purge = q.purge_requested > q.purge_done;
            drop(q);
            self.shared.done.notify_all();

            if purge {
                let result = self.purge();
                // Drops recorded before the purge stay counted: the new
                // ledger takes them before the purge is reported done.
                if result.is_ok() && !self.refused.is_empty() {
                    let _ = self.cycle(true);
                }
                let mut q = lock_queue(&shared);
                q.purge_done = purge_gen;
                q.purge_result = result.err();
                drop(q);
                self.shared.done.notify_all();
                continue;
            }

            for lane in Lane::ALL {
                self.seal_into_carry(lane, &cipher);
            }
            let result = self.cycle(flush_pending || closing);
            let mut q = lock_queue(&shared);
            if flush_gen > q.flush_done && (result.is_err() || self.unsynced_since.is_none()) {
                q.flush_done = flush_gen;
                q.flush_result = result.err();
            }
            if closing
                && (self.carry.iter().all(LaneBuf::is_empty)
                    || self.retry_at.is_some()
                    || self.shared.counts.poisoned.load(Ordering::Acquire))
            {
                self.active = [None, None];
                q.stopped = true;
                drop(q);
                self.shared.done.notify_all();
                return;
            }
            drop(q);
            self.shared.done.notify_all();
        }
    }

    /// Seals the plaintext taken from the queue (in `spare`) into frames
    /// appended to `carry`, leaving `spare` empty for the next swap. A large
    /// group is sealed by two threads: the caller's core is mostly idle
    /// while the writer seals (append itself is a copy).
    fn seal_into_carry(&mut self, lane: Lane, cipher: &Cipher) {
        let li = lane.index();
        let priority = match lane {
            Lane::Critical => tally_proto::Priority::Critical,
            Lane::Normal => tally_proto::Priority::Normal,
        };
        let taken = &mut self.spare[li];
        let carry = &mut self.carry[li];
        let metas = &taken.metas;
        let total: usize = metas.iter().map(|m| m.len as usize).sum();
        let start = carry.bytes.len();
        carry.bytes.resize(start + total, 0);
        let out = &mut carry.bytes[start..];
        if metas.len() >= PARALLEL_SEAL_MIN_RECORDS {
            let half = metas.len() / 2;
            let out_split: usize = metas[..half].iter().map(|m| m.len as usize).sum();
            let plain_split = out_split - half * record::OVERHEAD_BYTES;
            let (out_a, out_b) = out.split_at_mut(out_split);
            let (plain_a, plain_b) = taken.bytes.split_at(plain_split);
            std::thread::scope(|scope| {
                let helper =
                    scope.spawn(|| seal_run(cipher, priority, &metas[half..], plain_b, out_b));
                seal_run(cipher, priority, &metas[..half], plain_a, out_a);
                // A panic in the helper is impossible (no indexing beyond
                // the layout computed above); the frames it left zeroed
                // would read back as counted corruption, never as data.
                let _ = helper.join();
            });
        } else {
            seal_run(cipher, priority, metas, &taken.bytes, out);
        }
        carry.metas.extend(metas.iter().map(|m| QueuedMeta {
            key: cipher.id,
            ..*m
        }));
        taken.metas.clear();
        taken.bytes.clear();
    }

    /// Writes what is carried, syncs when due, indexes, applies bounds.
    fn cycle(&mut self, flush: bool) -> Result<(), LogError> {
        let shared = self.shared.clone();
        let config = &shared.config;
        let poisoned = self.shared.counts.poisoned.load(Ordering::Acquire);
        let mut written = Vec::new();
        let mut written_contexts = Vec::new();
        let mut created = Vec::new();
        let mut sealed = Vec::new();
        let mut error = None;
        let now = Instant::now();
        let retry_due = self.retry_at.is_none_or(|at| at <= now) || flush;
        if poisoned {
            // Nothing can be promised durable any more: what is queued is
            // released so the bounds do not fill with it; the drops are
            // still counted (and written if the ledger takes them).
            let refused = std::mem::take(&mut self.refused);
            if let Err(e) = lock_state(&shared).record_refused(&refused) {
                lock_state(&shared).note_error(&e);
            }
            for lane in &mut self.carry {
                let bytes: u64 = lane.metas.iter().map(|m| u64::from(m.len)).sum();
                self.shared.counts.release(lane.metas.len() as u64, bytes);
                lane.metas.clear();
                lane.bytes.clear();
            }
            error = Some(LogError::Poisoned);
        } else if retry_due {
            self.retry_at = None;
            // Records and drops reach the disk in seq order. The lanes are
            // written run by run, and a lane's unsynced writes are synced
            // before the other lane is written; a drop goes to the ledger
            // (synced) after every record below it is synced, and before
            // any record above it is written. Whatever a kill or a power
            // cut interrupts, the disk holds a prefix of what was
            // appended, never a record or a drop above a seq that is lost
            // (the next start numbers from the highest seq on disk, so a
            // lost lower one would be a gap nothing explains).
            while error.is_none() {
                let first = |l: Lane| self.carry[l.index()].metas.first().map(|m| m.seq);
                let (c, n) = (first(Lane::Critical), first(Lane::Normal));
                let next_record = c.into_iter().chain(n).min();
                let drops = self
                    .refused
                    .iter()
                    .take_while(|(seq, _)| next_record.is_none_or(|r| *seq < r))
                    .count();
                if drops > 0 || lock_state(&shared).has_ledger_backlog() {
                    if let Err(e) = self.sync_lane(Lane::Critical) {
                        error = Some(e);
                        break;
                    }
                    if let Err(e) = self.sync_lane(Lane::Normal) {
                        error = Some(e);
                        break;
                    }
                    // Counted even when the ledger cannot take them now:
                    // they wait in its backlog, written before anything
                    // else.
                    let taken: Vec<_> = self.refused.drain(..drops).collect();
                    if let Err(e) = lock_state(&shared).record_refused(&taken) {
                        error = Some(e);
                        self.retry_at = Some(Instant::now() + RETRY_DELAY);
                        break;
                    }
                }
                let next_drop = self.refused.first().map(|(seq, _)| *seq);
                let (lane, other) = match (c, n) {
                    (None, None) => break,
                    (Some(_), None) => (Lane::Critical, None),
                    (None, Some(_)) => (Lane::Normal, None),
                    (Some(c), Some(n)) if c < n => (Lane::Critical, Some(n)),
                    (Some(c), Some(_)) => (Lane::Normal, Some(c)),
                };
                let below = other.into_iter().chain(next_drop).min();
                // The other lane's unsynced records are all below this
                // run: they are synced before the run is written (only one
                // lane is ever unsynced).
                if let Err(e) = self.sync_lane(lane.other()) {
                    error = Some(e);
                    break;
                }
                let out = Out {
                    records: &mut written,
                    contexts: &mut written_contexts,
                    created: &mut created,
                    sealed: &mut sealed,
                };
                if let Err(e) = self.write_lane(lane, below, out) {
                    error = Some(e);
                    self.retry_at = Some(Instant::now() + RETRY_DELAY);
                }
            }
        }
        if !written.is_empty() {
            self.shared.counts.groups.fetch_add(1, Ordering::Relaxed);
        }
        if !written.is_empty() && self.unsynced_since.is_none() {
            self.unsynced_since = Some(now);
        }
        let sync_due = match config.durability {
            Durability::Synced => true,
            Durability::Buffered { max_delay } => {
                flush
                    || self
                        .unsynced_since
                        .is_some_and(|s| s.elapsed() >= max_delay)
            }
        };
        if sync_due && !poisoned {
            if let Err(e) = self.sync() {
                error = Some(e);
            }
        }

        let mut state = lock_state(&shared);
        for seg in created {
            state.add_segment(seg);
        }
        state.register_contexts(written_contexts);
        state.register(&written);
        for id in sealed {
            state.seal(id);
        }
        if let Some(e) = &error {
            if *e != LogError::Poisoned || !poisoned {
                state.note_error(e);
            }
            // The cause is kept in the stats; callers see the state.
            if shared.counts.poisoned.load(Ordering::Acquire) {
                error = Some(LogError::Poisoned);
            }
        }
        if state.has_ledger_backlog() && self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + RETRY_DELAY);
        }
        let housekeeping = self.last_housekeeping.elapsed() >= HOUSEKEEPING_INTERVAL;
        if !written.is_empty() || housekeeping {
            self.last_housekeeping = Instant::now();
            let drop_oldest = config.full_policy == FullPolicy::DropOldest;
            let _ = state.enforce_bounds(
                now_ms(),
                config.max_ages(),
                config.max_events,
                config.max_bytes,
                drop_oldest,
            );
            // A current segment whose records are all acknowledged is
            // retired so its file can go.
            if self.carry.iter().all(LaneBuf::is_empty) {
                for slot in &mut self.active {
                    let idle = slot.as_ref().is_some_and(|a| {
                        !a.dirty
                            && state
                                .segment_pending(a.id)
                                .is_some_and(|(p, n)| p == 0 && n > 0)
                    });
                    if idle {
                        if let Some(a) = slot.take() {
                            state.seal(a.id);
                        }
                    }
                }
            }
            state.reap();
            state.collect_keys();
            self.housekeeping_owed = false;
            self.expires_at = expiry(&mut state, config.max_ages());
        }
        drop(state);
        self.forget_contexts();
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Drops the contexts no carried record names any more (the newest is
    /// kept: the next appends may name it again).
    fn forget_contexts(&mut self) {
        let newest = self.contexts.keys().next_back().copied().unwrap_or(0);
        let oldest_named = self
            .carry
            .iter()
            .flat_map(|l| l.metas.iter().map(|m| m.ctx))
            .filter(|&g| g != 0)
            .min()
            .unwrap_or(newest);
        self.contexts.retain(|&g, _| g >= oldest_named.min(newest));
    }

    /// The context frames `active` still lacks for `metas` under the
    /// current key, sealed back to back, and what to index for each
    /// (generation, key, frame length, context), in order from
    /// `active.len`. The key of a segment's context frames is kept while
    /// any of its records is pending.
    fn context_frames(
        &self,
        active: &Active,
        metas: &[QueuedMeta],
    ) -> (Vec<u8>, Vec<ContextFrame>) {
        let mut bytes = Vec::new();
        let mut frames: Vec<ContextFrame> = Vec::new();
        let Some(cipher) = &self.cipher else {
            return (bytes, frames);
        };
        for m in metas {
            // After a key rotation a context is stored again under the new
            // key, so the old key can go with the last record sealed
            // under it.
            let have = active.contexts.contains(&(m.ctx, cipher.id))
                || frames.iter().any(|f| f.0 == m.ctx);
            if m.ctx == 0 || have {
                continue;
            }
            // Every generation a carried record names is kept (see
            // `forget_contexts`); a record naming one not here would read
            // back as counted corruption.
            let Some(context) = self.contexts.get(&m.ctx) else {
                continue;
            };
            let frame = record::context_frame(cipher, m.ctx, now_ms(), context);
            frames.push((m.ctx, cipher.id, frame.len() as u32, Arc::clone(context)));
            bytes.extend_from_slice(&frame);
        }
        (bytes, frames)
    }

    /// Syncs `lane`'s current segment if it holds unsynced writes; a
    /// failure poisons the log.
    fn sync_lane(&mut self, lane: Lane) -> Result<(), LogError> {
        if let Some(a) = self.active[lane.index()].as_mut() {
            if a.dirty {
                if let Err(e) = a.file.sync_data() {
                    self.shared.counts.poisoned.store(true, Ordering::Release);
                    return Err(e.into());
                }
                a.dirty = false;
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), LogError> {
        for a in self.active.iter_mut().flatten() {
            if a.dirty {
                if let Err(e) = a.file.sync_data() {
                    self.shared.counts.poisoned.store(true, Ordering::Release);
                    return Err(e.into());
                }
                a.dirty = false;
            }
        }
        self.unsynced_since = None;
        Ok(())
    }

    fn new_segment(&mut self, lane: Lane) -> Result<(Active, Seg), LogError> {
        let (id, dir) = {
            let mut state = lock_state(&self.shared);
            let id = state.next_segment;
            state.next_segment += 1;
            (id, state.dir.clone())
        };
        let path: PathBuf = dir.join(segment::file_name(id, lane));
        let fs = &self.shared.config.fs;
        let mut file = fs.create(&path)?;
        let header = segment::header(id, lane, now_ms());
        let written = file.append_all(&header).and_then(|()| file.sync_data());
        if let Err(e) = written {
            drop(file);
            let _ = fs.remove(&path);
            return Err(e.into());
        }
        if let Err(e) = fs.sync_dir(&dir) {
            self.shared.counts.poisoned.store(true, Ordering::Release);
            return Err(e.into());
        }
        Ok((
            Active {
                id,
                file,
                len: segment::HEADER_BYTES as u64,
                dirty: false,
                contexts: Vec::new(),
            },
            Seg::new(id, lane, path, false),
        ))
    }

    /// Writes the lane's records from the first up to (not including) the
    /// first whose seq is `below` or more (at least one).
    fn write_lane(&mut self, lane: Lane, below: Option<u64>, out: Out<'_>) -> Result<(), LogError> {
        let Out {
            records: written,
            contexts: written_contexts,
            created,
            sealed,
        } = out;
        let li = lane.index();
        let limit = self.shared.config.segment_bytes;
        let mut byte_pos = 0usize;
        let mut i = 0usize;
        let stop = |i: usize, m: &QueuedMeta| i > 0 && below.is_some_and(|b| m.seq >= b);
        let result = loop {
            match self.carry[li].metas.get(i) {
                Some(m) if !stop(i, m) => {}
                _ => break Ok(()),
            }
            if self.active[li].as_ref().is_some_and(|a| a.len >= limit) {
                if let Some(mut a) = self.active[li].take() {
                    if a.dirty {
                        if let Err(e) = a.file.sync_data() {
                            self.shared.counts.poisoned.store(true, Ordering::Release);
                            break Err(e.into());
                        }
                    }
                    sealed.push(a.id);
                }
            }
            if self.active[li].is_none() {
                match self.new_segment(lane) {
                    Ok((a, seg)) => {
                        self.active[li] = Some(a);
                        created.push(seg);
                    }
                    Err(e) => break Err(e),
                }
            }
            let active_len = self.active[li].as_ref().map_or(0, |a| a.len);
            let metas = &self.carry[li].metas;
            let mut chunk = 0usize;
            let mut n = 0usize;
            while i + n < metas.len() {
                let len = metas[i + n].len as usize;
                if n > 0 && active_len + (chunk + len) as u64 > limit || stop(i + n, &metas[i + n])
                {
                    break;
                }
                chunk += len;
                n += 1;
            }
            // The contexts these records name go first, in the same write:
            // a crash that keeps a record keeps its context.
            let (frames, contexts) = match self.active[li].as_ref() {
                Some(a) => self.context_frames(a, &metas[i..i + n]),
                None => break Err(LogError::Closed),
            };
            let Some(active) = self.active[li].as_mut() else {
                break Err(LogError::Closed);
            };
            let bytes = &self.carry[li].bytes[byte_pos..byte_pos + chunk];
            let write = if frames.is_empty() {
                active.file.append_all(bytes)
            } else {
                let mut both = frames;
                both.extend_from_slice(bytes);
                active.file.append_all(&both)
            };
            if let Err(e) = write {
                if active.file.set_len(active.len).is_err() {
                    self.shared.counts.poisoned.store(true, Ordering::Release);
                }
                break Err(e.into());
            }
            let mut offset = active.len;
            for (gen, key, len, context) in contexts {
                active.contexts.push((gen, key));
                written_contexts.push(WrittenContext {
                    segment: active.id,
                    offset: offset as u32,
                    len,
                    gen,
                    key,
                    context,
                });
                offset += u64::from(len);
            }
            for m in &metas[i..i + n] {
                written.push(Written {
                    segment: active.id,
                    offset: offset as u32,
                    len: m.len,
                    seq: m.seq,
                    appended_at_ms: m.appended_at_ms,
                    key: m.key,
                });
                offset += u64::from(m.len);
            }
            active.len = offset;
            active.dirty = true;
            byte_pos += chunk;
            i += n;
        };
        let carry = &mut self.carry[li];
        carry.bytes.drain(..byte_pos);
        carry.metas.drain(..i);
        result
    }

    /// Discards everything queued, closes the segments, and shreds keys and files.
    fn purge(&mut self) -> Result<(), LogError> {
        for lane in self.carry.iter_mut().chain(self.spare.iter_mut()) {
            lane.bytes.clear();
            lane.metas.clear();
        }
        self.active = [None, None];
        self.unsynced_since = None;
        self.retry_at = None;
        let mut state = lock_state(&self.shared);
        state.purge()?;
        let (id, key) = self.shared.config.key_provider.current()?;
        let cipher = Arc::new(Cipher::new(id, &key)?);
        state.set_current_key(id, cipher.clone());
        // What was appended since the purge was requested stays: the
        // counts are exactly what is queued now.
        let mut q = lock_queue(&self.shared);
        let queued = q.lanes.iter().map(|l| l.metas.len() as u64).sum();
        self.shared.counts.events.store(queued, Ordering::Release);
        self.shared
            .counts
            .bytes
            .store(q.bytes as u64, Ordering::Release);
        q.cipher = cipher;
        Ok(())
    }
}
