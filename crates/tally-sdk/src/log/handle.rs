//! [`Log`]: the handle the tracker and the uploader share.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::crypto::Cipher;
use super::index::{now_ms, Counts, State};
use super::queue::{Queue, QueuedMeta, Shared};
use super::record::{self, MAX_PAYLOAD_BYTES, MAX_PREFIX_BYTES, OVERHEAD_BYTES};
use super::segment::Lane;
use super::writer::Writer;
use super::{
    AppendError, Disposition, DroppedRange, Entry, FullPolicy, LogConfig, LogError, LogStats,
    OpenError, Record, RecordId, REASON_BACKLOG, REASON_LOG_FULL,
};

/// Longest `append` waits for the writer when it is more than
/// `max_inflight_bytes` behind: a healthy disk drains 4 MiB in milliseconds,
/// so two seconds means the disk is stalled or full and the caller should
/// not hang with it.
const BACKLOG_WAIT: Duration = Duration::from_secs(2);

/// The durable event log. `Send + Sync`: share it in an `Arc`. See the
/// [module documentation](super) for the design.
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Log {
    /// Opens (creating if needed) the log in `config.dir`, recovering what
    /// is on disk, and starts the writer thread.
    pub fn open(config: LogConfig) -> Result<Log, OpenError> {
        if config.max_bytes == 0 || config.max_events == 0 {
            return Err(OpenError::Config(
                "max_bytes and max_events must be positive",
            ));
        }
        if config.segment_bytes < 1024 || config.segment_bytes > u64::from(u32::MAX) / 2 {
            return Err(OpenError::Config(
                "segment_bytes must be between 1 KiB and 2 GiB",
            ));
        }
        let counts = Arc::new(Counts::default());
        let (mut state, _) = State::recover(
            &config.dir,
            config.fs.clone(),
            config.key_provider.clone(),
            counts.clone(),
            true,
        )?;
        let (id, key) = config.key_provider.current()?;
        let cipher = Arc::new(Cipher::new(id, &key)?);
        state.set_current_key(id, cipher.clone());
        state.retain_key(config.retained_key.clone());
        state.collect_keys();
        // Bounds apply from the first moment: records that aged out while
        // the app was not running go now, not at the first housekeeping.
        let drop_oldest = config.full_policy == FullPolicy::DropOldest;
        state.enforce_bounds(
            now_ms(),
            config.max_ages(),
            config.max_events,
            config.max_bytes,
            drop_oldest,
        )?;
        let shared = Arc::new(Shared {
            config,
            queue: Mutex::new(Queue::new(cipher)),
            work: Condvar::new(),
            done: Condvar::new(),
            state: Mutex::new(state),
            counts,
        });
        let writer = Writer::new(shared.clone());
        let handle = std::thread::Builder::new()
            .name("tally-log-writer".into())
            .spawn(move || writer.run())?;
        Ok(Log {
            shared,
            writer: Mutex::new(Some(handle)),
        })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn over_bounds(&self, len: u64) -> bool {
        let c = &self.shared.counts;
        c.events.load(Ordering::Acquire) >= self.shared.config.max_events
            || c.bytes.load(Ordering::Acquire) + len > self.shared.config.max_bytes
    }

    fn refuse(&self, mut q: MutexGuard<'_, Queue>, seq: u64, reason: &'static str) {
        q.refused.push((seq, reason));
        if q.writer_waiting {
            self.shared.work.notify_one();
        }
    }

    /// Records that `seq` took a number and will never be appended (the
    /// caller dropped it: invalid once built, too large, consent
    /// withdrawn, a failed append), for `reason`. The drop goes to the
    /// drop ledger by the same path as a refused append: the writer puts
    /// it there before any record appended after this call, so whatever a
    /// kill interrupts, no record on disk sits above an unexplained seq.
    /// Counted in [`LogStats::dropped`] and listed by [`Log::drop_ledger`]
    /// once written ([`Log::flush`] waits for it).
    pub fn record_drop(&self, seq: u64, reason: &'static str) {
        self.refuse(self.queue(), seq, reason);
    }

    /// Hands `entry` to the writer: one copy into the queue under a short
    /// lock. Never waits for the disk, except under [`FullPolicy::Block`] or
    /// when the writer is more than `max_inflight_bytes` behind. The writer
    /// seals it (so the caller's thread does no cryptography).
    pub fn append(&self, entry: Entry) -> Result<(), AppendError> {
        self.append_in(entry.seq, entry.priority, &entry.payload, None)
    }

    /// [`Log::append`] of `payload` (copied) in `context`: bytes that many
    /// records share (the app, the device, the identity), stored once per
    /// segment rather than in every record, and returned with the record
    /// by [`Log::read_pending`]. Passing the same `Arc` (or equal bytes)
    /// again names the same context.
    pub fn append_in(
        &self,
        seq: u64,
        priority: tally_proto::Priority,
        payload: &[u8],
        context: Option<&Arc<[u8]>>,
    ) -> Result<(), AppendError> {
        if self.shared.counts.poisoned.load(Ordering::Acquire) {
            return Err(AppendError::Poisoned);
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(AppendError::TooLarge(payload.len()));
        }
        let len = payload.len() + OVERHEAD_BYTES + MAX_PREFIX_BYTES;
        if self.over_bounds(len as u64) {
            match self.shared.config.full_policy {
                FullPolicy::DropOldest => {}
                FullPolicy::RejectNew => {
                    self.refuse(self.queue(), seq, REASON_LOG_FULL);
                    return Err(AppendError::Full);
                }
                FullPolicy::Block { timeout } => {
                    let deadline = Instant::now() + timeout;
                    let mut q = self.queue();
                    while self.over_bounds(len as u64) {
                        let now = Instant::now();
                        if now >= deadline || q.closing {
                            self.refuse(q, seq, REASON_LOG_FULL);
                            return Err(AppendError::Full);
                        }
                        q = self
                            .shared
                            .done
                            .wait_timeout(q, deadline - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            }
        }
        let appended_at_ms = now_ms();
        let mut q = self.queue();
        if q.closing {
            return Err(AppendError::Closed);
        }
        if q.bytes + len > self.shared.config.max_inflight_bytes {
            let deadline = Instant::now() + BACKLOG_WAIT;
            while q.bytes > 0 && q.bytes + len > self.shared.config.max_inflight_bytes {
                let now = Instant::now();
                if now >= deadline
                    || q.closing
                    || self.shared.counts.poisoned.load(Ordering::Acquire)
                {
                    self.refuse(q, seq, REASON_BACKLOG);
                    return Err(AppendError::Backlog);
                }
                if q.writer_waiting {
                    self.shared.work.notify_one();
                }
                q = self
                    .shared
                    .done
                    .wait_timeout(q, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        let ctx = q.contexts.generation_of(context);
        let lane = &mut q.lanes[Lane::of(priority).index()];
        let prefix = record::encode_prefix(ctx, &mut lane.bytes);
        lane.bytes.extend_from_slice(payload);
        let len = payload.len() + OVERHEAD_BYTES + prefix;
        lane.metas.push(QueuedMeta {
            seq,
            appended_at_ms,
            len: len as u32,
            key: 0,
            ctx,
        });
        q.bytes += len;
        self.shared.counts.events.fetch_add(1, Ordering::AcqRel);
        self.shared
            .counts
            .bytes
            .fetch_add(len as u64, Ordering::AcqRel);
        if q.append_wakes_writer() {
            q.writer_waiting = false;
            self.shared.work.notify_one();
        }
        drop(q);
        Ok(())
    }

    /// The durability barrier: when it returns `Ok`, every entry appended
    /// before the call is on disk.
    pub fn flush(&self) -> Result<(), LogError> {
        if self.shared.counts.poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned);
        }
        self.request_and_wait(
            |q| {
                q.flush_requested += 1;
                q.flush_requested
            },
            |q| (q.flush_done, &q.flush_result),
        )
    }

    /// Unacknowledged records, critical lane first, then normal, each lane
    /// in append order, decrypted. Returns the same records again until
    /// they are acknowledged. At least one record is returned when any is
    /// pending, even if it is larger than `max_bytes`.
    pub fn read_pending(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        if max_records == 0 {
            return Ok(Vec::new());
        }
        self.state().read_pending(max_records, max_bytes)
    }

    /// The seqs of every unacknowledged record, in no particular order,
    /// without reading or decrypting anything (the index holds them).
    pub fn pending_seqs(&self) -> Vec<u64> {
        self.state().pending_seqs()
    }

    /// Marks records done, in any order; synced before it returns. Unknown
    /// or already acknowledged ids are ignored.
    pub fn ack(&self, acks: &[(RecordId, Disposition)]) -> Result<(), LogError> {
        let result = self.state().ack(acks);
        let mut q = self.queue();
        // Housekeeping is owed (a segment may be fully acknowledged now):
        // an idle writer sets no timer, so it is told.
        q.acked = true;
        self.shared.done.notify_all();
        self.shared.work.notify_all();
        result
    }

    /// Health counters.
    pub fn stats(&self) -> LogStats {
        let mut state = self.state();
        let now = now_ms();
        let oldest = state.oldest_pending_ms();
        LogStats {
            pending_events: self.shared.counts.events.load(Ordering::Acquire),
            pending_bytes: self.shared.counts.bytes.load(Ordering::Acquire),
            acknowledged: state.counters.delivered,
            rejected: state.counters.rejected.clone(),
            oldest_pending_age: oldest.map(|t| Duration::from_millis(now.saturating_sub(t))),
            corrupt: state.counters.corrupt,
            dropped: state.counters.dropped.clone(),
            persistence_errors: state.persistence_errors,
            last_error: state.last_error.clone(),
            poisoned: self.shared.counts.poisoned.load(Ordering::Acquire),
            segments: state.segs.len() as u64,
            groups_written: self.shared.counts.groups.load(Ordering::Relaxed),
        }
    }

    /// Seq ranges dropped on the device, with their reason (persisted).
    pub fn drop_ledger(&self) -> Vec<DroppedRange> {
        self.state().counters.ranges.clone()
    }

    /// Crypto-shreds the log for consent withdrawal: deletes the keys,
    /// then every segment and the ledger, and discards what is still
    /// queued. The log is empty and usable afterwards, under a new key.
    pub fn purge(&self) -> Result<(), LogError> {
        self.request_and_wait(
            |q| {
                q.purge_requested += 1;
                q.purge_requested
            },
            |q| (q.purge_done, &q.purge_result),
        )
    }

    /// Asks the writer for one round of work (`request` bumps a request
    /// counter and returns its new value) and waits until the writer's
    /// matching done counter reaches it; returns the writer's result.
    fn request_and_wait(
        &self,
        request: impl FnOnce(&mut Queue) -> u64,
        done: impl Fn(&Queue) -> (u64, &Option<LogError>),
    ) -> Result<(), LogError> {
        let mut q = self.queue();
        if q.stopped || q.closing {
            return Err(LogError::Closed);
        }
        let gen = request(&mut q);
        self.shared.work.notify_one();
        while done(&q).0 < gen {
            if q.stopped {
                return Err(LogError::Closed);
            }
            q = self.shared.done.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        match done(&q).1 {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Starts sealing new records under a new key. Records under older keys
    /// stay readable until acknowledged; then the old key is deleted.
    pub fn rotate_key(&self) -> Result<(), LogError> {
        let cipher =
            {
                let mut q = self.queue();
                let id = self.shared.config.key_provider.rotate()?;
                let key =
                    self.shared.config.key_provider.get(id)?.ok_or_else(|| {
                        LogError::Key(format!("key {id} vanished after rotation"))
                    })?;
                let cipher = Arc::new(Cipher::new(id, &key)?);
                q.cipher = cipher.clone();
                cipher
            };
        // Groups the writer sealed under the old key before the swap are
        // indexed once this flush returns, so the old key's use count is
        // exact and it is collected when it reaches zero.
        self.flush()?;
        let mut state = self.state();
        state.set_current_key(cipher.id, cipher);
        state.collect_keys();
        Ok(())
    }

    fn shutdown(&self) -> Result<(), LogError> {
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(handle) = handle else {
            return Ok(());
        };
        {
            let mut q = self.queue();
            q.closing = true;
            q.flush_requested += 1;
            self.shared.work.notify_one();
        }
        let joined = handle.join();
        let q = self.queue();
        if joined.is_err() {
            return Err(LogError::Closed);
        }
        match &q.flush_result {
            Some(e) if q.flush_done == q.flush_requested => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// Flushes and stops the writer thread. `Drop` does the same, ignoring errors.
    pub fn close(self) -> Result<(), LogError> {
        self.shutdown()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
