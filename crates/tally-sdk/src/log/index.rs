//! The log's in-memory index of segments and records (what the log's
//! directory holds, and which records are pending), and everything that
//! changes it under its lock: registering written groups, reading pending
//! records, acks, bounds, key and segment collection. Recovery, which
//! rebuilds it from the disk, is in [`recover`].
//!
//! Not to be confused with the SDK's state file (`install_state.rs`):
//! this index lives only in memory and is rebuilt at every open.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::crypto::{Cipher, KeyId, KeyProvider};
use super::fs::{FileHandle, Filesystem};
use super::ledger::{self, Counters, Disposition, Entry};
use super::record::{self, FrameKind, Parsed};
use super::segment::Lane;
use super::{LogError, Record, RecordId, REASON_EXPIRED, REASON_LOG_FULL};

mod contexts;
mod recover;

use contexts::SegContexts;
pub(crate) use contexts::WrittenContext;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters shared with `append`, which must not take the state lock.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Pending events, queued ones included.
    pub events: AtomicU64,
    /// Pending bytes as stored, queued ones included.
    pub bytes: AtomicU64,
    /// Set after a failed fsync; never cleared.
    pub poisoned: AtomicBool,
    /// Groups the writer wrote (one write call per lane each) since open.
    pub groups: AtomicU64,
}

impl Counts {
    pub(crate) fn release(&self, events: u64, bytes: u64) {
        self.events.fetch_sub(events, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// One record of a segment, as the index keeps it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub offset: u32,
    pub len: u32,
    pub seq: u64,
    pub appended_at_ms: u64,
    pub key: KeyId,
    pub done: bool,
}

#[derive(Debug)]
pub(crate) struct Seg {
    pub id: u64,
    pub lane: Lane,
    pub path: PathBuf,
    pub records: Vec<Meta>,
    pub pending: usize,
    /// Every record before this index is done.
    pub first_pending: usize,
    /// The writer no longer appends to it: it may be deleted once done.
    pub sealed: bool,
    /// Corrupt stretches found in it (they keep no record).
    pub corrupt: BTreeSet<u32>,
    /// Its format version (the header's; the current one when the header
    /// is corrupt).
    pub version: u16,
    /// Its context frames (format 2).
    pub contexts: SegContexts,
    reader: Option<Box<dyn FileHandle>>,
}

impl Seg {
    pub(crate) fn new(id: u64, lane: Lane, path: PathBuf, sealed: bool) -> Seg {
        Seg {
            id,
            lane,
            path,
            records: Vec::new(),
            pending: 0,
            first_pending: 0,
            sealed,
            corrupt: BTreeSet::new(),
            version: super::segment::VERSION,
            contexts: SegContexts::default(),
            reader: None,
        }
    }

    fn advance(&mut self) {
        while self.first_pending < self.records.len() && self.records[self.first_pending].done {
            self.first_pending += 1;
        }
    }

    fn oldest_pending(&mut self) -> Option<usize> {
        self.advance();
        (self.first_pending < self.records.len()).then_some(self.first_pending)
    }
}

/// A record the writer has written, to be indexed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    pub segment: u64,
    pub offset: u32,
    pub len: u32,
    pub seq: u64,
    pub appended_at_ms: u64,
    pub key: KeyId,
}

#[derive(Debug)]
pub(crate) struct State {
    pub dir: PathBuf,
    fs: Arc<dyn Filesystem>,
    keys: Arc<dyn KeyProvider>,
    pub segs: BTreeMap<u64, Seg>,
    ciphers: BTreeMap<KeyId, Arc<Cipher>>,
    key_refs: BTreeMap<KeyId, u64>,
    pub current_key: KeyId,
    pub counters: Counters,
    ledger: Option<Box<dyn FileHandle>>,
    ledger_len: u64,
    /// Encoded ledger entries already folded into `counters` whose write
    /// failed (a full disk): written ahead of anything else as soon as the
    /// ledger can be appended to again, so a count made while the disk was
    /// full is still there after a restart.
    ledger_backlog: Vec<u8>,
    pub next_segment: u64,
    pub persistence_errors: u64,
    pub last_error: Option<String>,
    counts: Arc<Counts>,
    writable: bool,
    /// A key kept even when no record uses it (0: none; see
    /// [`super::LogConfig`]).
    retained_key: Arc<AtomicU32>,
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

impl State {
    /// The cipher for a key id, loaded from the provider on first use.
    pub(crate) fn cipher(&mut self, id: KeyId) -> Result<Option<Arc<Cipher>>, LogError> {
        if let Some(c) = self.ciphers.get(&id) {
            return Ok(Some(c.clone()));
        }
        let Some(key) = self.keys.get(id)? else {
            return Ok(None);
        };
        let c = Arc::new(Cipher::new(id, &key)?);
        self.ciphers.insert(id, c.clone());
        Ok(Some(c))
    }

    pub(crate) fn note_error(&mut self, e: &LogError) {
        self.persistence_errors += 1;
        self.last_error = Some(e.to_string());
    }

    /// Appends encoded entries to the ledger, after any backlog of entries
    /// whose write failed before, and syncs them. A failed sync poisons the
    /// log; any other failure (ENOSPC) keeps the entries in the backlog for
    /// the next append or [`State::retry_ledger_backlog`].
    fn append_ledger(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        if (bytes.is_empty() && self.ledger_backlog.is_empty()) || !self.writable {
            return Ok(());
        }
        let mut all = std::mem::take(&mut self.ledger_backlog);
        all.extend_from_slice(bytes);
        let result = self.try_append_ledger(&all);
        if let Err(e) = &result {
            self.note_error(e);
            if !self.counts.poisoned.load(Ordering::Acquire) {
                self.ledger_backlog = all;
            }
        }
        if result.is_ok() && self.ledger_len > ledger::COMPACT_BYTES {
            if let Err(e) = self.compact_ledger() {
                self.note_error(&e);
            }
        }
        result
    }

    fn try_append_ledger(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        let path = self.dir.join(ledger::FILE_NAME);
        if self.ledger.is_none() {
            let file = match self.fs.open(&path) {
                Ok(f) => f,
                Err(e) if is_not_found(&e) => {
                    let f = self.fs.create(&path)?;
                    self.fs.sync_dir(&self.dir).inspect_err(|_| self.poison())?;
                    f
                }
                Err(e) => return Err(e.into()),
            };
            self.ledger_len = file.size()?;
            self.ledger = Some(file);
        }
        let Some(file) = self.ledger.as_mut() else {
            return Err(LogError::Closed);
        };
        if let Err(e) = file.append_all(bytes) {
            // Undo a partial entry so the next append starts on a boundary.
            let len = self.ledger_len;
            if file.set_len(len).is_err() {
                self.poison();
            }
            return Err(e.into());
        }
        if let Err(e) = file.sync_data() {
            self.poison();
            return Err(e.into());
        }
        self.ledger_len += bytes.len() as u64;
        Ok(())
    }

    /// Whether counted entries still wait to be written to the ledger.
    pub(crate) fn has_ledger_backlog(&self) -> bool {
        !self.ledger_backlog.is_empty()
    }

    fn poison(&self) {
        self.counts.poisoned.store(true, Ordering::Release);
    }

    /// Rewrites the ledger as the counters plus the entries that still
    /// refer to segments on disk.
    fn compact_ledger(&mut self) -> Result<(), LogError> {
        let mut bytes = Vec::new();
        ledger::encode(&Entry::Base(self.counters.clone()), &mut bytes);
        for seg in self.segs.values() {
            for m in seg
                .records
                .iter()
                .filter(|m| m.done && !seg.corrupt.contains(&m.offset))
            {
                ledger::encode_settled(seg.id, m.offset, false, &mut bytes);
            }
            for &off in &seg.corrupt {
                ledger::encode_settled(seg.id, off, true, &mut bytes);
            }
        }
        let path = self.dir.join(ledger::FILE_NAME);
        self.ledger = None;
        self.fs
            .write_private_atomic(&path, &bytes)
            .inspect_err(|_| self.poison())?;
        let file = self.fs.open(&path)?;
        self.ledger_len = file.size()?;
        self.ledger = Some(file);
        Ok(())
    }

    /// Indexes records the writer wrote.
    pub(crate) fn register(&mut self, written: &[Written]) {
        for w in written {
            let Some(seg) = self.segs.get_mut(&w.segment) else {
                continue;
            };
            seg.records.push(Meta {
                offset: w.offset,
                len: w.len,
                seq: w.seq,
                appended_at_ms: w.appended_at_ms,
                key: w.key,
                done: false,
            });
            seg.pending += 1;
            *self.key_refs.entry(w.key).or_default() += 1;
        }
    }

    /// Marks a record done with `disposition`; returns its ledger entry, or
    /// None if it is unknown or already done.
    fn settle(&mut self, id: RecordId, disposition: Disposition) -> Option<Entry> {
        let seg = self.segs.get_mut(&id.segment)?;
        let i = seg
            .records
            .binary_search_by_key(&id.offset, |m| m.offset)
            .ok()?;
        let m = &mut seg.records[i];
        if m.done {
            return None;
        }
        m.done = true;
        seg.pending -= 1;
        let (seq, key, len) = (m.seq, m.key, m.len);
        if let Some(r) = self.key_refs.get_mut(&key) {
            *r = r.saturating_sub(1);
        }
        self.counts.release(1, u64::from(len));
        let entry = Entry::Ack {
            segment: id.segment,
            offset: id.offset,
            seq,
            disposition,
        };
        self.counters.apply(&entry);
        Some(entry)
    }

    /// Marks a record corrupt (found when reading it back).
    fn settle_corrupt(&mut self, id: RecordId) -> Option<Entry> {
        let seg = self.segs.get_mut(&id.segment)?;
        let i = seg
            .records
            .binary_search_by_key(&id.offset, |m| m.offset)
            .ok()?;
        let m = &mut seg.records[i];
        if m.done {
            return None;
        }
        m.done = true;
        seg.pending -= 1;
        seg.corrupt.insert(id.offset);
        let (key, len) = (m.key, m.len);
        if let Some(r) = self.key_refs.get_mut(&key) {
            *r = r.saturating_sub(1);
        }
        self.counts.release(1, u64::from(len));
        let entry = Entry::Corrupt {
            segment: id.segment,
            offset: id.offset,
        };
        self.counters.apply(&entry);
        Some(entry)
    }

    pub(crate) fn ack(&mut self, acks: &[(RecordId, Disposition)]) -> Result<(), LogError> {
        let mut bytes = Vec::new();
        for (id, d) in acks {
            if let Some(e) = self.settle(*id, d.clone()) {
                ledger::encode(&e, &mut bytes);
            }
        }
        self.append_ledger(&bytes)?;
        self.reap();
        self.collect_keys();
        Ok(())
    }

    /// Records drops of entries that never became records (refused at append).
    pub(crate) fn record_refused(
        &mut self,
        refused: &[(u64, &'static str)],
    ) -> Result<(), LogError> {
        let mut bytes = Vec::new();
        // Consecutive seqs refused for one reason make one entry, so a
        // long refusal (a disk full for minutes) stays a few bytes.
        let mut i = 0;
        while i < refused.len() {
            let (first, reason) = refused[i];
            let mut last = first;
            while i + 1 < refused.len()
                && refused[i + 1].1 == reason
                && last.checked_add(1) == Some(refused[i + 1].0)
            {
                last += 1;
                i += 1;
            }
            i += 1;
            let e = Entry::Drop {
                first_seq: first,
                last_seq: last,
                reason: reason.to_owned(),
            };
            self.counters.apply(&e);
            ledger::encode(&e, &mut bytes);
        }
        self.append_ledger(&bytes)
    }

    /// Applies each lane's age bound (`max_age` by [`Lane`] index), then the bytes and events bounds by dropping
    /// the oldest normal records first (critical ones only when no normal
    /// one is left).
    pub(crate) fn enforce_bounds(
        &mut self,
        now_ms: u64,
        max_age: [Duration; 2],
        max_events: u64,
        max_bytes: u64,
        drop_oldest: bool,
    ) -> Result<(), LogError> {
        let mut bytes = Vec::new();
        for lane in Lane::ALL {
            let age_ms = u64::try_from(max_age[lane.index()].as_millis()).unwrap_or(u64::MAX);
            let cutoff = now_ms.saturating_sub(age_ms);
            while let Some(id) = self.oldest(lane) {
                let expired = self.meta(id).is_some_and(|m| m.appended_at_ms < cutoff);
                if !expired {
                    break;
                }
                if let Some(e) = self.settle(id, Disposition::Dropped(REASON_EXPIRED.into())) {
                    ledger::encode(&e, &mut bytes);
                }
            }
        }
        if drop_oldest {
            while self.counts.events.load(Ordering::Acquire) > max_events
                || self.counts.bytes.load(Ordering::Acquire) > max_bytes
            {
                let Some(id) = self
                    .oldest(Lane::Normal)
                    .or_else(|| self.oldest(Lane::Critical))
                else {
                    break;
                };
                if let Some(e) = self.settle(id, Disposition::Dropped(REASON_LOG_FULL.into())) {
                    ledger::encode(&e, &mut bytes);
                }
            }
        }
        self.append_ledger(&bytes)
    }

    fn meta(&self, id: RecordId) -> Option<&Meta> {
        let seg = self.segs.get(&id.segment)?;
        let i = seg
            .records
            .binary_search_by_key(&id.offset, |m| m.offset)
            .ok()?;
        seg.records.get(i)
    }

    fn oldest(&mut self, lane: Lane) -> Option<RecordId> {
        self.segs
            .values_mut()
            .filter(|s| s.lane == lane && s.pending > 0)
            .find_map(|s| {
                let i = s.oldest_pending()?;
                Some(RecordId {
                    segment: s.id,
                    offset: s.records[i].offset,
                })
            })
    }

    /// When the oldest pending record of `lane` was appended.
    pub(crate) fn oldest_pending_ms_of(&mut self, lane: Lane) -> Option<u64> {
        let id = self.oldest(lane)?;
        self.meta(id).map(|m| m.appended_at_ms)
    }

    /// When the oldest pending record was appended.
    pub(crate) fn oldest_pending_ms(&mut self) -> Option<u64> {
        let ids: Vec<RecordId> = Lane::ALL
            .into_iter()
            .filter_map(|lane| self.oldest(lane))
            .collect();
        ids.into_iter()
            .filter_map(|id| self.meta(id).map(|m| m.appended_at_ms))
            .min()
    }

    /// The seqs of every unacknowledged record, from the index alone:
    /// recovery authenticated each pending record's header (its seq is
    /// associated data of the seal), so nothing is read or decrypted.
    pub(crate) fn pending_seqs(&self) -> Vec<u64> {
        self.segs
            .values()
            .flat_map(|s| s.records[s.first_pending..].iter())
            .filter(|m| !m.done)
            .map(|m| m.seq)
            .collect()
    }

    /// Up to `max_records` pending records (at least one if any is pending,
    /// even past `max_bytes`), critical lane first, each lane in append
    /// order; decrypted.
    pub(crate) fn read_pending(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut corrupt = Vec::new();
        let ids: Vec<u64> = Lane::ALL
            .iter()
            .flat_map(|&lane| {
                self.segs
                    .values()
                    .filter(move |s| s.lane == lane && s.pending > 0)
                    .map(|s| s.id)
            })
            .collect();
        let mut buf = Vec::new();
        'segs: for sid in ids {
            let Some(seg) = self.segs.get_mut(&sid) else {
                continue;
            };
            seg.advance();
            if seg.reader.is_none() {
                seg.reader = Some(self.fs.open(&seg.path)?);
            }
            // The records this batch takes from the segment, in order.
            let mut metas: Vec<Meta> = Vec::new();
            for m in seg.records[seg.first_pending..].iter().filter(|m| !m.done) {
                if out.len() + metas.len() >= max_records
                    || (!(out.is_empty() && metas.is_empty()) && total + m.len as usize > max_bytes)
                {
                    break;
                }
                total += m.len as usize;
                metas.push(*m);
            }
            let full = metas.len() < seg.pending;
            // Adjacent records are read with one call: a batch is usually
            // one contiguous stretch of the segment.
            let mut run_start = 0;
            while run_start < metas.len() {
                let mut run_end = run_start + 1;
                while run_end < metas.len()
                    && metas[run_end].offset == metas[run_end - 1].offset + metas[run_end - 1].len
                {
                    run_end += 1;
                }
                let first = metas[run_start];
                let last = metas[run_end - 1];
                let span = (last.offset + last.len - first.offset) as usize;
                buf.resize(span, 0);
                let n = match self.segs.get(&sid).and_then(|s| s.reader.as_ref()) {
                    Some(r) => r.read_full_at(&mut buf, u64::from(first.offset))?,
                    None => 0,
                };
                for m in &metas[run_start..run_end] {
                    let id = RecordId {
                        segment: sid,
                        offset: m.offset,
                    };
                    let at = (m.offset - first.offset) as usize;
                    let bytes = buf.get(at..n.min(at + m.len as usize)).unwrap_or(&[]);
                    let cipher = self.cipher(m.key)?;
                    let opened = match (record::parse(bytes), cipher) {
                        (Parsed::Frame(f), Some(c))
                            if f.seq == m.seq && matches!(f.kind, FrameKind::Record(_)) =>
                        {
                            f.open(&c).map(|p| (p, f.priority()))
                        }
                        _ => None,
                    };
                    let payload = match opened {
                        Some((plain, priority)) => self
                            .payload_of(sid, plain)?
                            .map(|(payload, context)| (payload, context, priority)),
                        None => None,
                    };
                    match payload {
                        Some((payload, context, priority)) => out.push(Record {
                            id,
                            seq: m.seq,
                            priority,
                            payload,
                            context,
                        }),
                        None => {
                            total -= m.len as usize;
                            corrupt.push(id);
                        }
                    }
                }
                run_start = run_end;
            }
            if full {
                break 'segs;
            }
        }
        if !corrupt.is_empty() {
            let mut bytes = Vec::new();
            for id in corrupt {
                if let Some(e) = self.settle_corrupt(id) {
                    ledger::encode(&e, &mut bytes);
                }
            }
            self.append_ledger(&bytes)?;
            if out.is_empty() {
                // Every record taken was corrupt, and is settled now: the
                // next ones are pending, and at least one is owed.
                return self.read_pending(max_records, max_bytes);
            }
        }
        Ok(out)
    }

    /// Deletes sealed segments whose records are all done.
    pub(crate) fn reap(&mut self) {
        if !self.writable {
            return;
        }
        let done: Vec<u64> = self
            .segs
            .values()
            .filter(|s| s.sealed && s.pending == 0)
            .map(|s| s.id)
            .collect();
        if done.is_empty() {
            return;
        }
        let mut removed = false;
        for id in done {
            let Some(seg) = self.segs.get(&id) else {
                continue;
            };
            match self.fs.remove(&seg.path) {
                Ok(()) => removed = true,
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    self.note_error(&e.into());
                    continue;
                }
            }
            self.segs.remove(&id);
        }
        if removed {
            if let Err(e) = self.fs.sync_dir(&self.dir) {
                self.poison();
                self.note_error(&e.into());
            }
        }
    }

    /// Keeps the key `retained` names even when no record uses it.
    pub(crate) fn retain_key(&mut self, retained: Arc<AtomicU32>) {
        self.retained_key = retained;
    }

    /// Deletes keys no pending record uses, except the current one and the
    /// retained one.
    pub(crate) fn collect_keys(&mut self) {
        if !self.writable || self.current_key == 0 {
            return;
        }
        let Ok(ids) = self.keys.list() else { return };
        let retained = self.retained_key.load(Ordering::Acquire);
        let contexts = self.context_keys();
        for id in ids {
            let unused = id != retained
                && !contexts.contains(&id)
                && self.key_refs.get(&id).is_none_or(|&r| r == 0);
            // Only keys older than the current one: a newer key may be the
            // one a rotation is switching to.
            if id < self.current_key && unused {
                match self.keys.delete(id) {
                    Ok(()) => {
                        self.ciphers.remove(&id);
                        self.key_refs.remove(&id);
                    }
                    Err(e) => self.note_error(&e.into()),
                }
            }
        }
    }

    /// Crypto-shreds everything: keys first, then segments and the ledger.
    pub(crate) fn purge(&mut self) -> Result<(), LogError> {
        self.ciphers.clear();
        for id in self.keys.list()? {
            self.keys.delete(id)?;
        }
        self.ledger = None;
        for seg in std::mem::take(&mut self.segs).into_values() {
            match self.fs.remove(&seg.path) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match self.fs.remove(&self.dir.join(ledger::FILE_NAME)) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        self.fs.sync_dir(&self.dir)?;
        self.key_refs.clear();
        self.counters = Counters::default();
        self.ledger_len = 0;
        self.ledger_backlog.clear();
        self.current_key = 0;
        Ok(())
    }

    pub(crate) fn add_segment(&mut self, seg: Seg) {
        self.segs.insert(seg.id, seg);
    }

    /// Seals a segment the writer stopped appending to.
    pub(crate) fn seal(&mut self, id: u64) {
        if let Some(s) = self.segs.get_mut(&id) {
            s.sealed = true;
        }
    }

    pub(crate) fn segment_pending(&self, id: u64) -> Option<(usize, usize)> {
        self.segs.get(&id).map(|s| (s.pending, s.records.len()))
    }

    pub(crate) fn set_current_key(&mut self, id: KeyId, cipher: Arc<Cipher>) {
        self.current_key = id;
        self.ciphers.insert(id, cipher);
    }
}
