//! The connections of the SQLite store: one writer, a background
//! checkpointer, and a pool of readers.
//!
//! # Group commit
//!
//! SQLite allows one writer at a time, so the store keeps one writer
//! connection behind a mutex ([`Writer`]) and merges concurrent calls into
//! one transaction: the first caller opens the transaction and runs its
//! work directly in it (a failure, or a panic, rolls the transaction back:
//! no other caller's rows are in it yet), each caller that joins runs its
//! own work inside a `SAVEPOINT` (a failure, or a panic, rolls back that
//! caller's rows alone), and the caller that finds nobody queued
//! behind it commits for the whole group. Every caller returns only after
//! the commit that holds its rows, so `accepted` is never answered for
//! uncommitted data. A group also commits once it holds
//! [`MAX_GROUP_EVENTS`] events or is [`MAX_GROUP_AGE`] old, bounding the
//! latency it adds under sustained load.
//!
//! [`Known`] caches what the writer knows is committed (identity ids,
//! active slots); it is cleared whenever a rollback or a failed commit
//! could make an entry stale.
//!
//! The [`Checkpointer`] copies the WAL into the database file on its own
//! thread, so commits rarely pay for it; [`Readers`] hands out read
//! connections, which in WAL mode see the last commit and never block the
//! writer.

use super::{db_error, opening_error, IDLE_READERS, STATEMENT_CACHE};
use crate::store::{DeadLetterLimits, StoreError};
use rusqlite::{Connection, OpenFlags};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A group commits once it holds this many events even if more callers
/// are queued: 16 batches of 500, a few milliseconds of work, so a queued
/// caller never waits behind an unbounded transaction.
pub const MAX_GROUP_EVENTS: usize = 8_000;

/// A group commits once it is this old even if more callers are queued;
/// it bounds the latency group commit adds (the p99 budget is
/// 20 ms at half load).
pub const MAX_GROUP_AGE: Duration = Duration::from_millis(5);

/// The writer connection and its open group, if any.
#[derive(Debug)]
pub(super) struct Writer {
    pub(super) state: Mutex<WriterState>,
    /// Callers waiting for `state`: the holder commits only when none is.
    pub(super) queued: AtomicUsize,
    /// [`MAX_GROUP_AGE`]; tests that hold a group open on purpose raise it.
    pub(super) max_group_age: Duration,
}

#[derive(Debug)]
pub(super) struct WriterState {
    pub(super) conn: Connection,
    pub(super) group: Option<Group>,
    /// Whether any tombstone exists: while none does, the per-event
    /// deletion check is skipped. Only ever turns true (tombstones are
    /// never removed), set before the tombstone row is written.
    pub(super) tombstones_exist: bool,
    /// Identities and active slots already in the database.
    pub(super) known: Known,
    /// What is kept of rejected messages.
    pub(super) dead_letter_limits: DeadLetterLimits,
    /// Whether events stored before sources were recorded (source '')
    /// may still exist: while they may, an event is a duplicate of such
    /// an event with its id or business key too, so a batch resent across
    /// the upgrade is not counted twice. Read at open; only ever turns
    /// false on a later open.
    pub(super) legacy_events: bool,
}

/// Most entries [`Known`] holds before it starts over: about 20 MB.
pub(super) const KNOWN_CAPACITY: usize = 200_000;

/// What the writer knows is stored, so a batch skips the identity lookup,
/// the install owner lookup and the active-slot insert it would repeat: a
/// device sends many batches per slot. An install's owner, once a source,
/// never changes (no statement rewrites or deletes an `installs` row with
/// a source). Identity ids never change; an entry may be stale only
/// if its transaction did not commit, so the writer forgets everything
/// when a batch is rolled back or a commit fails, the slots when a
/// deletion removes some, and each slot a retention chunk removes.
#[derive(Debug, Default)]
pub(super) struct Known {
    pub(super) idents: HashMap<(String, String, String), i64>,
    pub(super) slots: HashSet<(i64, i64)>,
    /// Installs and the source that owns each.
    pub(super) owners: HashMap<String, String>,
}

impl Known {
    pub(super) fn clear(&mut self) {
        self.idents.clear();
        self.slots.clear();
        self.owners.clear();
    }

    /// Entries held, against [`KNOWN_CAPACITY`].
    pub(super) fn len(&self) -> usize {
        self.idents.len() + self.slots.len() + self.owners.len()
    }
}

/// One open transaction shared by several callers.
#[derive(Debug)]
pub(super) struct Group {
    commit: Arc<CommitCell>,
    events: usize,
    started: Instant,
}

/// Where the committer leaves the group's result for the others.
#[derive(Debug, Default)]
pub(super) struct CommitCell {
    result: Mutex<Option<Result<(), String>>>,
    done: Condvar,
}

impl CommitCell {
    fn set(&self, result: Result<(), String>) {
        let mut slot = self.result.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(result);
        self.done.notify_all();
    }

    fn wait(&self) -> Result<(), StoreError> {
        let mut slot = self.result.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match slot.as_ref() {
                Some(Ok(())) => return Ok(()),
                Some(Err(m)) => return Err(StoreError::Backend(m.clone())),
                None => slot = self.done.wait(slot).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }
}

impl Writer {
    fn lock(&self) -> Result<MutexGuard<'_, WriterState>, StoreError> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let guard = self.state.lock();
        self.queued.fetch_sub(1, Ordering::SeqCst);
        guard.map_err(|_| StoreError::Backend("SQLite writer poisoned by a panic".into()))
    }

    /// Runs `work` in the current group (opening one if needed) and
    /// returns once the group committed. `size` counts toward
    /// [`MAX_GROUP_EVENTS`].
    pub(super) fn run<T>(
        &self,
        size: usize,
        work: impl FnOnce(&mut WriterState) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut state = self.lock()?;
        // The caller that opens the group has no one's rows to protect: it
        // runs without a savepoint and a failure rolls back the whole
        // transaction. A savepoint copies every existing page the batch
        // first touches into its journal, which the first batch of a group
        // (alone at light load) need not pay.
        if state.group.is_none() {
            state
                .conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(db_error)?;
            state.group = Some(Group {
                commit: Arc::new(CommitCell::default()),
                events: 0,
                started: Instant::now(),
            });
            return self.run_first(state, size, work);
        }
        let outcome = match state
            .conn
            .execute_batch("SAVEPOINT batch")
            .map_err(db_error)
        {
            // A panic in `work` would leave the group's other callers
            // waiting for a commit that never comes and the writer
            // poisoned: it becomes this caller's error instead, its rows
            // rolled back like any failure.
            Ok(()) => {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut state)))
                    .unwrap_or_else(|_| {
                        Err(StoreError::Backend(
                            "the SQLite writer panicked on a batch".into(),
                        ))
                    }) {
                    Ok(v) => state
                        .conn
                        .execute_batch("RELEASE batch")
                        .map(|()| v)
                        .map_err(db_error),
                    Err(e) => {
                        // Undo this caller's rows only; the group goes on.
                        let _ = state.conn.execute_batch("ROLLBACK TO batch; RELEASE batch");
                        state.known.clear();
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        };
        let Some(group) = state.group.as_mut() else {
            return Err(StoreError::Backend(
                "SQLite writer lost its transaction".into(),
            ));
        };
        if outcome.is_ok() {
            group.events += size;
        }
        let cell = Arc::clone(&group.commit);
        self.finish(state, cell, outcome)
    }

    /// [`Writer::run`] for the caller that opened the group: its work runs
    /// directly in the transaction, and a failure (or a panic) rolls the
    /// transaction back and closes the group, which holds no other
    /// caller's rows yet (they queue on the mutex this caller holds).
    fn run_first<T>(
        &self,
        mut state: MutexGuard<'_, WriterState>,
        size: usize,
        work: impl FnOnce(&mut WriterState) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut state)))
            .unwrap_or_else(|_| {
                Err(StoreError::Backend(
                    "the SQLite writer panicked on a batch".into(),
                ))
            });
        let value = match outcome {
            Ok(v) => v,
            Err(e) => {
                state.group = None;
                state.known.clear();
                if !state.conn.is_autocommit() {
                    let _ = state.conn.execute_batch("ROLLBACK");
                }
                return Err(e);
            }
        };
        let Some(group) = state.group.as_mut() else {
            return Err(StoreError::Backend(
                "SQLite writer lost its transaction".into(),
            ));
        };
        group.events += size;
        let cell = Arc::clone(&group.commit);
        self.finish(state, cell, Ok(value))
    }

    /// After a caller's work: commits the group if nobody is queued behind
    /// it or it reached its bounds, else leaves it open and waits for the
    /// caller that commits it.
    fn finish<T>(
        &self,
        mut state: MutexGuard<'_, WriterState>,
        cell: Arc<CommitCell>,
        outcome: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(group) = state.group.as_ref() else {
            return Err(StoreError::Backend(
                "SQLite writer lost its transaction".into(),
            ));
        };
        let commit_now = self.queued.load(Ordering::SeqCst) == 0
            || group.events >= MAX_GROUP_EVENTS
            || group.started.elapsed() >= self.max_group_age;
        if commit_now {
            state.group = None;
            let committed = state.conn.execute_batch("COMMIT").map_err(db_error);
            if committed.is_err() {
                state.known.clear();
                if !state.conn.is_autocommit() {
                    let _ = state.conn.execute_batch("ROLLBACK");
                }
            }
            drop(state);
            cell.set(committed.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            committed?;
            return outcome;
        }
        drop(state);
        // A failed caller's rows were rolled back: it has nothing to wait for.
        let value = outcome?;
        cell.wait()?;
        Ok(value)
    }
}

/// Copies the WAL into the database file on its own connection and
/// thread, every [`CHECKPOINT_INTERVAL`], so the writer's commits rarely
/// pay for it. A passive checkpoint never blocks the writer; the writer's
/// own auto-checkpoint ([`WAL_AUTOCHECKPOINT_PAGES`](super::WAL_AUTOCHECKPOINT_PAGES)) stays as the
/// backstop that lets the WAL restart from its beginning, and finds most
/// pages already copied.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the background checkpoint runs: at full ingest about 15 MB
/// of WAL accumulate in this time.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

impl Checkpointer {
    pub(super) fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path).map_err(|e| opening_error(path, e))?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tally-sqlite-checkpoint".into())
            .spawn(move || {
                let (lock, wake) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !*stopped {
                    stopped = wake
                        .wait_timeout(stopped, CHECKPOINT_INTERVAL)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                    // A failed or busy checkpoint is retried next time;
                    // the writer's auto-checkpoint covers a lasting failure.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Read connections, reused.
#[derive(Debug)]
pub(super) struct Readers {
    pub(super) path: PathBuf,
    pub(super) busy_timeout: Duration,
    pub(super) idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(db_error)?;
                c.busy_timeout(self.busy_timeout).map_err(db_error)?;
                // Queries' DISTINCT and GROUP BY b-trees stay in memory: they
                // are bounded by a window's people and buckets, and a temp
                // file would cost I/O (and fail on a full disk).
                c.execute_batch("PRAGMA query_only = 1; PRAGMA temp_store = MEMORY")
                    .map_err(db_error)?;
                c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                c
            }
        };
        let out = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests unwrap: a failure is the assertion

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::HealthStore;
    use std::sync::atomic::AtomicBool;

    fn bump(state: &mut WriterState) -> Result<(), StoreError> {
        state
            .conn
            .execute(
                "UPDATE counters SET accepted = accepted + 1 WHERE id = 0",
                [],
            )
            .map(|_| ())
            .map_err(db_error)
    }

    #[test]
    fn a_caller_queued_behind_the_group_joins_it_and_both_return_after_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        // The first caller holds the group longer than the age bound.
        store.writer.max_group_age = Duration::from_secs(60);
        let store = store;
        // Returned: the first caller's row is committed, and so is the
        // second caller's, committed in the same transaction.
        assert_eq!(overlapping_callers(&store, Duration::from_millis(150)), 2);
        assert_eq!(store.stats().unwrap().accepted, 2);
    }

    /// Two writers whose work overlaps: the second joins while the first
    /// is still inside its group, each holding it for `hold`. Returns the
    /// accepted count the first caller sees right after its call returned.
    fn overlapping_callers(store: &SqliteStore, hold: Duration) -> u64 {
        let in_work = AtomicBool::new(false);
        std::thread::scope(|s| {
            let first = s.spawn(|| {
                store
                    .writer
                    .run(1, |state| {
                        bump(state)?;
                        in_work.store(true, Ordering::SeqCst);
                        std::thread::sleep(hold);
                        Ok(())
                    })
                    .unwrap();
                store.stats().unwrap().accepted
            });
            while !in_work.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let second = s.spawn(|| {
                store
                    .writer
                    .run(1, |state| {
                        bump(state)?;
                        std::thread::sleep(hold);
                        Ok(())
                    })
                    .unwrap();
            });
            let seen = first.join().unwrap();
            second.join().unwrap();
            seen
        })
    }

    #[test]
    fn a_group_past_its_age_bound_commits_without_waiting_for_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        // Committed alone: the second caller's row is not in it.
        assert_eq!(overlapping_callers(&store, MAX_GROUP_AGE * 30), 1);
        assert_eq!(store.stats().unwrap().accepted, 2);
    }

    #[test]
    fn a_panicking_batch_is_an_error_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let failed: Result<(), StoreError> = store.writer.run(1, |state| {
            bump(state)?;
            panic!("a bug in the write path")
        });
        match failed {
            Err(StoreError::Backend(m)) => assert!(m.contains("panicked"), "{m}"),
            other => panic!("expected a backend error, got {other:?}"),
        }
        // Its row was rolled back; the next write commits normally.
        assert_eq!(store.stats().unwrap().accepted, 0);
        store.writer.run(1, bump).unwrap();
        assert_eq!(store.stats().unwrap().accepted, 1);
    }
}
