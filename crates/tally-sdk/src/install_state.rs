//! The SDK's small persistent state (identity, session, consent, sequence
//! watermarks, drops not yet reported), one JSON file in the data
//! directory, replaced atomically.
//!
//! A write goes to a temporary file, is synced, renamed over the old file,
//! and the directory is synced: after a crash the file is the old or the
//! new version, never a mix. Every byte goes through the log's
//! [`Filesystem`], so the tests inject the same faults (failed fsync, a
//! full disk, power loss) into this file as into the log. The events themselves live in the log; this
//! file is rewritten at flushes and acks, not per event.
//!
//! # Privacy
//!
//! The data directory is made `0700` and the file `0600`. The user id, the
//! one personal value here, is not stored in clear beside a log that is
//! encrypted: it is sealed (`sealed_user`) with XChaCha20-Poly1305 under
//! the log's current key from its [`KeyProvider`], bound to the install id.
//! The other members are random ids, counters and settings.
//!
//! - Each save seals under the provider's current key, so after a key
//!   rotation the next save moves the user id to the new key. Until then
//!   the log keeps the key the file names (`retained` is shared with it),
//!   so a rotation never makes the user id unreadable.
//! - Crypto-shredding (consent withdrawn) deletes every key, this one too;
//!   the pipeline saves the state under the new key right after.
//! - If the key is gone anyway (a keystore wiped, a restore onto another
//!   device, a crash between shredding and that save), the state opens
//!   without a user id, as after `reset()` keeping the anonymous id; the
//!   app's next `identify` sets it again.
//! - A file of an earlier version, with the user id in clear, is read, and
//!   rewritten sealed when the tracker starts.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::log::crypto::{Cipher, NONCE_BYTES, TAG_BYTES};
use crate::log::{Filesystem, KeyError, KeyId, KeyProvider};
use crate::pipeline::identity::Identity;
use crate::pipeline::privacy::Consent;
use crate::pipeline::session::SavedSession;

const FILE_NAME: &str = "tally-state.json";

/// Mode of the data directory: it is the SDK's own (one made by an
/// earlier version has the mode the umask gave it, and is narrowed).
const DIR_MODE: u32 = 0o700;

/// Mode of the state file.
const FILE_MODE: u32 = 0o600;

/// Associated data of the sealed user id, before the install id: a blob
/// moved to another install's file, or another field, does not open.
const USER_AAD: &[u8] = b"tally-state user_id\0";

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading, writing, syncing or renaming the file failed.
    #[error("state file I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The file exists but is not a state this version can read.
    #[error("state file is unreadable: {0}")]
    Corrupt(#[source] serde_json::Error),
    /// The key provider could not give the key to seal the user id with.
    #[error("state file key: {0}")]
    Key(#[from] KeyError),
}

/// The user id as stored: sealed under key `key` of the log's provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SealedUser {
    key: KeyId,
    /// The 24-byte nonce, base64.
    nonce: String,
    /// The ciphertext and its 16-byte tag, base64.
    data: String,
}

/// The file's JSON: the state, with the user id sealed beside it.
#[derive(Serialize, Deserialize)]
struct OnDisk {
    #[serde(flatten)]
    state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_user: Option<SealedUser>,
}

/// A run of sequence numbers dropped on the device, for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropRange {
    /// Why (`invalid`, `consent_denied`, `queue_full`, ...).
    pub reason: String,
    /// First seq dropped.
    pub from: u64,
    /// Last seq dropped (inclusive).
    pub to: u64,
}

/// A `tally.dropped` report made durable in the log and not yet answered
/// for by the collector. Its ranges count as reported only once the
/// collector accepts the report (or already had it); if the report record
/// is lost on the device instead (dropped by a bound, shredded, never made
/// durable before a crash), its ranges are reported again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentReport {
    /// The report's own seq.
    pub seq: u64,
    /// The drop reason it reports.
    pub reason: String,
    /// Ranges of the SDK's own drops (back to `unreported_drops` if lost).
    pub own: Vec<[u64; 2]>,
    /// Ranges of the log's drop ledger.
    pub ledger: Vec<[u64; 2]>,
}

/// Everything the SDK keeps outside the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Who this install is.
    pub identity: Identity,
    /// The current session.
    pub session: Option<SavedSession>,
    /// The consent last set.
    pub consent: Consent,
    /// Highest seq the collector answered for (recorded before the log is
    /// acked, so every seq that left the log is at most this).
    pub acked_seq: u64,
    /// Highest seq known durable in the log at the last flush.
    pub durable_seq: u64,
    /// Drops not yet reported to the collector.
    pub unreported_drops: Vec<DropRange>,
    /// Ranges of the log's drop ledger already reported, merged, by
    /// reason (the ledger keeps every range for the life of the log).
    #[serde(default)]
    pub reported_ledger: BTreeMap<String, Vec<[u64; 2]>>,
    /// Reports durable in the log, waiting for the collector's answer.
    #[serde(default)]
    pub reports_in_flight: Vec<SentReport>,
    /// The health counters kept for the life of the install (the log
    /// keeps its own): saved with every save, so a restart loses at most
    /// what changed since the last one. Absent from a file of an earlier
    /// version: zeros.
    #[serde(default)]
    pub totals: Totals,
}

/// The health counters that survive a restart, as of the last save.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    /// Messages the collector accepted.
    pub accepted: u64,
    /// Messages the collector had already.
    pub duplicate: u64,
    /// Messages refused at the call, by reason.
    pub refused: BTreeMap<String, u64>,
    /// Drops the tracker counted outside the log (a purge), by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Failed log writes and state saves.
    pub persistence_errors: u64,
    /// Batches sent.
    pub sync_attempts: u64,
    /// Batches that got an answer with a result per message.
    pub sync_successes: u64,
}

impl State {
    fn fresh(initial_consent: Consent) -> Self {
        Self {
            identity: Identity::new_install(),
            session: None,
            consent: initial_consent,
            acked_seq: 0,
            durable_seq: 0,
            unreported_drops: Vec::new(),
            reported_ledger: BTreeMap::new(),
            reports_in_flight: Vec::new(),
            totals: Totals::default(),
        }
    }

    /// The parts of `[first, last]` (dropped for `reason` by the log)
    /// neither reported nor in a report in flight.
    pub fn unreported_ledger(&self, reason: &str, first: u64, last: u64) -> Vec<[u64; 2]> {
        let mut covered: Vec<[u64; 2]> = self
            .reported_ledger
            .get(reason)
            .map_or(&[][..], Vec::as_slice)
            .to_vec();
        for report in self.reports_in_flight.iter().filter(|r| r.reason == reason) {
            covered.extend_from_slice(&report.ledger);
        }
        covered.sort_unstable();
        let mut out = Vec::new();
        let mut next = first;
        for &[from, to] in &covered {
            if to < next {
                continue;
            }
            if from > last {
                break;
            }
            if from > next {
                out.push([next, from - 1]);
            }
            next = to.saturating_add(1);
            if next > last {
                return out;
            }
        }
        if next <= last {
            out.push([next, last]);
        }
        out
    }

    /// Marks `[first, last]` of the log's drop ledger as reported.
    pub fn mark_ledger_reported(&mut self, reason: &str, first: u64, last: u64) {
        let ranges = self.reported_ledger.entry(reason.to_owned()).or_default();
        ranges.push([first, last]);
        ranges.sort_unstable();
        let mut merged: Vec<[u64; 2]> = Vec::with_capacity(ranges.len());
        for &[from, to] in ranges.iter() {
            match merged.last_mut() {
                Some(last) if from <= last[1].saturating_add(1) => last[1] = last[1].max(to),
                _ => merged.push([from, to]),
            }
        }
        *ranges = merged;
    }

    /// Records `report` as durable in the log and waiting for an answer:
    /// its own ranges leave `unreported_drops` (exactly those seqs, even if
    /// a range grew since the report was built).
    pub fn report_sent(&mut self, report: SentReport) {
        for &[from, to] in &report.own {
            self.take_own(&report.reason, from, to);
        }
        self.reports_in_flight.push(report);
    }

    fn take_own(&mut self, reason: &str, from: u64, to: u64) {
        let mut kept = Vec::with_capacity(self.unreported_drops.len());
        for d in self.unreported_drops.drain(..) {
            if d.reason != reason || d.to < from || d.from > to {
                kept.push(d);
                continue;
            }
            if d.from < from {
                kept.push(DropRange {
                    to: from - 1,
                    ..d.clone()
                });
            }
            if d.to > to {
                kept.push(DropRange { from: to + 1, ..d });
            }
        }
        self.unreported_drops = kept;
    }

    /// The collector answered for record `seq` (accepted it, had it
    /// already, or refused it: sending the same ranges again would be
    /// refused the same way). A report so answered is done: its ledger
    /// ranges count as reported for good. Returns whether `seq` was a
    /// report in flight.
    pub fn report_answered(&mut self, seq: u64) -> bool {
        let Some(at) = self.reports_in_flight.iter().position(|r| r.seq == seq) else {
            return false;
        };
        let report = self.reports_in_flight.remove(at);
        for &[first, last] in &report.ledger {
            self.mark_ledger_reported(&report.reason, first, last);
        }
        true
    }

    /// Puts the ranges of every in-flight report whose record `lost` says
    /// is gone from the device back among the unreported drops, so they
    /// are reported again. Returns how many reports were lost.
    pub fn requeue_lost_reports(&mut self, lost: impl Fn(u64) -> bool) -> usize {
        let (gone, kept): (Vec<SentReport>, Vec<SentReport>) =
            self.reports_in_flight.drain(..).partition(|r| lost(r.seq));
        self.reports_in_flight = kept;
        for report in &gone {
            for &[from, to] in &report.own {
                self.unreported_drops.push(DropRange {
                    reason: report.reason.clone(),
                    from,
                    to,
                });
            }
        }
        gone.len()
    }

    /// Adds a dropped seq, extending the last range of the same reason
    /// when contiguous.
    pub fn record_drop(&mut self, reason: &str, seq: u64) {
        self.record_drops(reason, seq, seq);
    }

    /// Records that `from..=to` were dropped for `reason`.
    pub fn record_drops(&mut self, reason: &str, from: u64, to: u64) {
        if let Some(last) = self.unreported_drops.last_mut() {
            if last.reason == reason && last.to.checked_add(1) == Some(from) {
                last.to = last.to.max(to);
                return;
            }
        }
        self.unreported_drops.push(DropRange {
            reason: reason.to_owned(),
            from,
            to,
        });
    }
}

/// The state file of one data directory.
#[derive(Debug)]
pub struct StateFile {
    dir: PathBuf,
    fs: Arc<dyn Filesystem>,
    keys: Arc<dyn KeyProvider>,
    /// The key the file's user id is sealed under (0: none), shared with
    /// the log, which does not delete that key.
    retained: Arc<AtomicU32>,
    /// The bytes the file durably holds (as read, or as last saved): a
    /// save of the same state writes nothing. A tracker saves on every
    /// explicit flush and on shutdown, mostly with nothing changed, and
    /// each real save costs a new file, two fsyncs and a rename.
    saved: Mutex<Vec<u8>>,
    /// The last sealing, reused while the user id and the current key are
    /// the same (a fresh nonce each time would make every save a write).
    sealed: Mutex<Option<Sealing>>,
}

/// A user id sealed under one key.
#[derive(Debug)]
struct Sealing {
    user_id: String,
    key_id: KeyId,
    key: crate::log::Key,
    stored: SealedUser,
}

impl StateFile {
    /// Opens (or creates) the state in `dir`, sealing and unsealing the
    /// user id with `keys` (the log's provider) and recording in
    /// `retained` the key the file uses; a new install starts with
    /// `initial_consent`. Every read and write goes through `fs`.
    pub fn open(
        dir: &Path,
        initial_consent: Consent,
        keys: Arc<dyn KeyProvider>,
        retained: Arc<AtomicU32>,
        fs: Arc<dyn Filesystem>,
    ) -> Result<(Self, State), StateError> {
        fs.create_dir_all(dir)?;
        fs.restrict_mode(dir, DIR_MODE)?;
        let file = Self {
            dir: dir.to_owned(),
            fs,
            keys,
            retained,
            saved: Mutex::new(Vec::new()),
            sealed: Mutex::new(None),
        };
        let path = dir.join(FILE_NAME);
        let state = match file.fs.read(&path) {
            Ok(bytes) => {
                file.fs.restrict_mode(&path, FILE_MODE)?;
                let disk: OnDisk = serde_json::from_slice(&bytes).map_err(StateError::Corrupt)?;
                let mut state = disk.state;
                match (&state.identity.user_id, disk.sealed_user) {
                    // An earlier version's file: the user id in clear is
                    // sealed by the next save (the bytes differ).
                    (Some(_), _) | (None, None) => {}
                    (None, Some(sealed)) => {
                        state.identity.user_id = file.unseal(&state.identity.install_id, sealed)?;
                    }
                }
                *file.saved.lock().unwrap_or_else(|p| p.into_inner()) = bytes;
                state
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let state = State::fresh(initial_consent);
                file.save(&state)?;
                state
            }
            Err(e) => return Err(e.into()),
        };
        Ok((file, state))
    }

    /// The user id of `sealed`, or `None` when its key is gone or it does
    /// not open (see the module doc); remembers the sealing for reuse.
    fn unseal(&self, install_id: &str, sealed: SealedUser) -> Result<Option<String>, StateError> {
        self.retained.store(sealed.key, Ordering::Release);
        let Some(key) = self.keys.get(sealed.key)? else {
            return Ok(None);
        };
        let (Ok(nonce), Ok(mut data)) = (B64.decode(&sealed.nonce), B64.decode(&sealed.data))
        else {
            return Ok(None);
        };
        let (Ok(nonce), Some(split)) = (
            <[u8; NONCE_BYTES]>::try_from(nonce.as_slice()),
            data.len().checked_sub(TAG_BYTES),
        ) else {
            return Ok(None);
        };
        let tag = data.split_off(split);
        let Ok(tag) = <[u8; TAG_BYTES]>::try_from(tag.as_slice()) else {
            return Ok(None);
        };
        let cipher = Cipher::new(sealed.key, &key)?;
        if !cipher.open(&nonce, &aad(install_id), &mut data, &tag) {
            return Ok(None);
        }
        let Ok(user_id) = String::from_utf8(data) else {
            return Ok(None);
        };
        *self.sealed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Sealing {
            user_id: user_id.clone(),
            key_id: sealed.key,
            key,
            stored: sealed,
        });
        Ok(Some(user_id))
    }

    /// `user_id` sealed under the provider's current key (the last sealing
    /// when neither changed).
    fn seal(&self, install_id: &str, user_id: &str) -> Result<SealedUser, StateError> {
        let (key_id, key) = self.keys.current()?;
        let mut last = self.sealed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = last.as_ref() {
            if s.user_id == user_id && s.key_id == key_id && s.key.as_bytes() == key.as_bytes() {
                return Ok(s.stored.clone());
            }
        }
        let cipher = Cipher::new(key_id, &key)?;
        let nonce = cipher.next_nonce();
        let mut data = user_id.as_bytes().to_vec();
        let tag = cipher
            .seal(&nonce, &aad(install_id), &mut data)
            .ok_or_else(|| KeyError::Random("sealing the user id failed".into()))?;
        data.extend_from_slice(&tag);
        let stored = SealedUser {
            key: key_id,
            nonce: B64.encode(nonce),
            data: B64.encode(&data),
        };
        *last = Some(Sealing {
            user_id: user_id.to_owned(),
            key_id,
            key,
            stored: stored.clone(),
        });
        Ok(stored)
    }

    /// Replaces the state on disk, durably; does nothing when the file
    /// already holds exactly this state.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let mut disk = OnDisk {
            state: state.clone(),
            sealed_user: None,
        };
        if let Some(user_id) = disk.state.identity.user_id.take() {
            disk.sealed_user = Some(self.seal(&state.identity.install_id, &user_id)?);
        }
        let json = serde_json::to_vec_pretty(&disk).map_err(StateError::Corrupt)?;
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        if *saved == json {
            return Ok(());
        }
        // A temporary file (0600), synced, renamed over, directory synced.
        self.fs
            .write_private_atomic(&self.dir.join(FILE_NAME), &json)?;
        // Only once the file names the new key may the log drop the old.
        self.retained.store(
            disk.sealed_user.as_ref().map_or(0, |s| s.key),
            Ordering::Release,
        );
        // Only once all of it is durable: after a failure the next save
        // writes again.
        *saved = json;
        Ok(())
    }
}

fn aad(install_id: &str) -> Vec<u8> {
    [USER_AAD, install_id.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::log::fs::Faults;
    use crate::log::{FileKeyProvider, MemFs, MemKeyProvider, StdFs};

    /// The provider a tracker on `dir` has by default.
    fn keys(dir: &Path) -> Arc<dyn KeyProvider> {
        Arc::new(FileKeyProvider::new(dir.join("log/keys"), Arc::new(StdFs)))
    }

    fn open(dir: &Path, consent: Consent) -> Result<(StateFile, State), StateError> {
        StateFile::open(dir, consent, keys(dir), Arc::default(), Arc::new(StdFs))
    }

    /// The state file of `/data` on `fs`, keys in memory.
    fn open_mem(fs: &MemFs, keys: &Arc<MemKeyProvider>) -> (StateFile, State) {
        StateFile::open(
            Path::new("/data"),
            Consent::Granted,
            keys.clone(),
            Arc::default(),
            Arc::new(fs.clone()),
        )
        .unwrap()
    }

    #[test]
    fn a_failed_fsync_keeps_the_old_state_and_the_next_save_writes_again() {
        let fs = MemFs::new();
        let keys = Arc::new(MemKeyProvider::new());
        let (file, mut state) = open_mem(&fs, &keys);
        state.acked_seq = 10;
        file.save(&state).unwrap();

        fs.set_faults(Faults {
            fail_sync: true,
            ..Faults::default()
        });
        state.acked_seq = 11;
        assert!(matches!(file.save(&state), Err(StateError::Io(_))));
        // A power cut now: the file is the last durable state, whole.
        let (_, after) = open_mem(&fs.crash(), &keys);
        assert_eq!(after.acked_seq, 10);

        // The same state is saved again once the disk works: the failed
        // save did not count as written.
        fs.set_faults(Faults::default());
        file.save(&state).unwrap();
        let (_, after) = open_mem(&fs.crash(), &keys);
        assert_eq!(after.acked_seq, 11);
        assert_eq!(after, state);
    }

    #[test]
    fn a_full_disk_or_a_power_cut_mid_save_leaves_the_old_state_whole() {
        let fs = MemFs::new();
        let keys = Arc::new(MemKeyProvider::new());
        let (file, mut state) = open_mem(&fs, &keys);
        state.identity.identify("user-1".into());
        state.acked_seq = 3;
        file.save(&state).unwrap();
        let saved = fs.file(Path::new("/data/tally-state.json")).unwrap();

        // Room for half the file: the temporary file is cut short.
        let used: u64 = saved.len() as u64;
        fs.set_faults(Faults {
            space_limit: Some(used + used / 2),
            ..Faults::default()
        });
        state.acked_seq = 4;
        state.record_drop("invalid:message_too_large", 2);
        assert!(matches!(file.save(&state), Err(StateError::Io(_))));
        assert_eq!(
            fs.file(Path::new("/data/tally-state.json")).unwrap(),
            saved,
            "the state file itself is never written in place"
        );
        let (_, after) = open_mem(&fs.crash(), &keys);
        assert_eq!(after.acked_seq, 3);
        assert_eq!(after.identity.user_id.as_deref(), Some("user-1"));
        assert!(after.unreported_drops.is_empty());

        fs.set_faults(Faults::default());
        file.save(&state).unwrap();
        let (_, after) = open_mem(&fs.crash(), &keys);
        assert_eq!(after, state);
    }

    /// Every file under `dir`, read whole.
    fn every_file(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(every_file(&path));
            } else {
                out.push((path.clone(), fs::read(&path).unwrap()));
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_user_id_is_sealed_and_opens_again_under_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (file, mut state) = open(dir.path(), Consent::Granted).unwrap();
        state.identity.identify("user-7f3a@example.com".into());
        file.save(&state).unwrap();
        for (path, bytes) in every_file(dir.path()) {
            assert!(
                !contains(&bytes, "user-7f3a"),
                "{} holds the user id",
                path.display()
            );
        }
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("\"sealed_user\""), "{text}");
        // The same state saved again writes nothing (the sealing is reused).
        let before = fs::read(dir.path().join(FILE_NAME)).unwrap();
        file.save(&state).unwrap();
        assert_eq!(fs::read(dir.path().join(FILE_NAME)).unwrap(), before);
        let (_, again) = open(dir.path(), Consent::Granted).unwrap();
        assert_eq!(again, state);
        #[cfg(unix)]
        {
            assert_eq!(mode(dir.path()), 0o700);
            assert_eq!(mode(&dir.path().join(FILE_NAME)), 0o600);
        }
        // Without the keys the user id is gone, nothing else.
        let (_, keyless) = StateFile::open(
            dir.path(),
            Consent::Granted,
            Arc::new(MemKeyProvider::new()),
            Arc::default(),
            Arc::new(StdFs),
        )
        .unwrap();
        assert_eq!(keyless.identity.user_id, None);
        assert_eq!(keyless.identity.install_id, state.identity.install_id);
        assert_eq!(keyless.identity.anonymous_id, state.identity.anonymous_id);
    }

    #[test]
    fn a_sealed_user_id_moved_to_another_install_does_not_open() {
        let a = tempfile::tempdir().unwrap();
        let (file, mut state) = open(a.path(), Consent::Granted).unwrap();
        state.identity.identify("someone".into());
        file.save(&state).unwrap();
        let mut disk: serde_json::Value =
            serde_json::from_slice(&fs::read(a.path().join(FILE_NAME)).unwrap()).unwrap();
        disk["identity"]["install_id"] = "another-install".into();
        fs::write(a.path().join(FILE_NAME), disk.to_string()).unwrap();
        let (_, moved) = open(a.path(), Consent::Granted).unwrap();
        assert_eq!(moved.identity.user_id, None);
    }

    #[test]
    fn a_rotation_keeps_the_key_of_the_file_until_the_next_save() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(dir.path());
        let retained = Arc::new(AtomicU32::new(0));
        let (file, mut state) = StateFile::open(
            dir.path(),
            Consent::Granted,
            keys.clone(),
            retained.clone(),
            Arc::new(StdFs),
        )
        .unwrap();
        state.identity.identify("u-1".into());
        file.save(&state).unwrap();
        assert_eq!(retained.load(Ordering::Acquire), 1);
        let new = keys.rotate().unwrap();
        // Still sealed under key 1 until saved: the log must keep it.
        assert_eq!(retained.load(Ordering::Acquire), 1);
        file.save(&state).unwrap();
        assert_eq!(retained.load(Ordering::Acquire), new);
        keys.delete(1).unwrap();
        let (_, again) = open(dir.path(), Consent::Granted).unwrap();
        assert_eq!(again.identity.user_id.as_deref(), Some("u-1"));
    }

    #[test]
    fn a_state_file_of_the_earlier_format_is_read_and_sealed_on_save() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/state/v1-tally-state.json"
        );
        fs::copy(fixture, dir.path().join(FILE_NAME)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
            fs::set_permissions(
                dir.path().join(FILE_NAME),
                fs::Permissions::from_mode(0o644),
            )
            .unwrap();
        }
        let (file, state) = open(dir.path(), Consent::Pending).unwrap();
        #[cfg(unix)]
        {
            assert_eq!(mode(dir.path()), 0o700);
            assert_eq!(mode(&dir.path().join(FILE_NAME)), 0o600);
        }
        assert_eq!(
            state.identity.install_id,
            "0f9b6f4e-2f6a-4a53-9d3e-5a8c1f7e2b10"
        );
        assert_eq!(state.identity.user_id.as_deref(), Some("fixture-user-1"));
        assert_eq!(state.consent, Consent::Granted);
        assert_eq!(state.acked_seq, 41);
        assert_eq!(state.session.as_ref().map(|s| s.index), Some(3));
        assert_eq!(state.unreported_drops.len(), 1);
        file.save(&state).unwrap();
        let bytes = fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert!(!contains(&bytes, "fixture-user-1"));
        let (_, again) = open(dir.path(), Consent::Pending).unwrap();
        assert_eq!(again, state);
    }

    #[test]
    fn saving_an_unchanged_state_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (file, mut state) = open(dir.path(), Consent::Granted).unwrap();
        let written = fs::read(&path).unwrap();
        // Gone from disk: only a save that writes brings it back.
        fs::remove_file(&path).unwrap();
        file.save(&state).unwrap();
        assert!(!path.exists(), "the same state was written again");
        state.acked_seq = 7;
        file.save(&state).unwrap();
        let changed = fs::read(&path).unwrap();
        assert_ne!(changed, written);
        assert_eq!(
            serde_json::from_slice::<State>(&changed).unwrap().acked_seq,
            7
        );

        // A state read back from disk counts as saved too.
        let (reopened, state) = open(dir.path(), Consent::Granted).unwrap();
        fs::remove_file(&path).unwrap();
        reopened.save(&state).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn survives_reopen_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let (file, mut state) = open(dir.path(), Consent::Granted).unwrap();
        assert_eq!(state.consent, Consent::Granted);
        state.acked_seq = 42;
        state.record_drop("invalid", 5);
        state.record_drop("invalid", 6);
        state.record_drop("queue_full", 7);
        state.record_drop("invalid", 9);
        file.save(&state).unwrap();
        let (_, again) = open(dir.path(), Consent::Pending).unwrap();
        assert_eq!(again, state);
        assert_eq!(
            again.unreported_drops,
            vec![
                DropRange {
                    reason: "invalid".into(),
                    from: 5,
                    to: 6
                },
                DropRange {
                    reason: "queue_full".into(),
                    from: 7,
                    to: 7
                },
                DropRange {
                    reason: "invalid".into(),
                    from: 9,
                    to: 9
                },
            ]
        );
        assert!(!dir.path().join("tally-state.json.tmp").exists());
    }

    #[test]
    fn ledger_ranges_are_reported_once_even_when_extended() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut state) = open(dir.path(), Consent::Granted).unwrap();
        assert_eq!(state.unreported_ledger("log_full", 5, 9), vec![[5, 9]]);
        state.mark_ledger_reported("log_full", 5, 9);
        assert_eq!(
            state.unreported_ledger("log_full", 5, 9),
            Vec::<[u64; 2]>::new()
        );
        assert_eq!(state.unreported_ledger("log_full", 5, 14), vec![[10, 14]]);
        assert_eq!(state.unreported_ledger("expired", 5, 9), vec![[5, 9]]);
        state.mark_ledger_reported("log_full", 20, 22);
        assert_eq!(
            state.unreported_ledger("log_full", 1, 30),
            vec![[1, 4], [10, 19], [23, 30]]
        );
        state.mark_ledger_reported("log_full", 10, 19);
        assert_eq!(state.reported_ledger["log_full"], vec![[5, 22]]);
    }

    #[test]
    fn a_report_counts_only_once_answered_and_is_redone_if_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (file, mut state) = open(dir.path(), Consent::Granted).unwrap();
        state.record_drop("invalid", 5);
        state.record_drop("invalid", 6);
        // Report 20 covers own [5,6] and ledger [8,9]; the own range grew
        // to 7 after the report was built: 7 stays unreported.
        state.record_drop("invalid", 7);
        state.report_sent(SentReport {
            seq: 20,
            reason: "invalid".into(),
            own: vec![[5, 6]],
            ledger: vec![[8, 9]],
        });
        assert_eq!(
            state.unreported_drops,
            vec![DropRange {
                reason: "invalid".into(),
                from: 7,
                to: 7
            }]
        );
        // In flight: not reported again, not reported for good either.
        assert!(state.unreported_ledger("invalid", 8, 9).is_empty());
        assert!(!state.reported_ledger.contains_key("invalid"));
        file.save(&state).unwrap();
        let (_, mut state) = open(dir.path(), Consent::Granted).unwrap();
        assert_eq!(state.reports_in_flight.len(), 1, "survives a restart");

        // Lost on the device: everything it carried is unreported again.
        assert_eq!(state.requeue_lost_reports(|seq| seq == 20), 1);
        assert_eq!(state.unreported_ledger("invalid", 8, 9), vec![[8, 9]]);
        assert!(state
            .unreported_drops
            .iter()
            .any(|d| (d.from, d.to) == (5, 6)));

        // Sent again and answered: the ledger range is reported for good.
        state.report_sent(SentReport {
            seq: 21,
            reason: "invalid".into(),
            own: vec![[5, 7]],
            ledger: vec![[8, 9]],
        });
        assert!(state.unreported_drops.is_empty());
        assert!(!state.report_answered(99), "not a report");
        assert!(state.report_answered(21));
        assert!(state.reports_in_flight.is_empty());
        assert_eq!(state.reported_ledger["invalid"], vec![[8, 9]]);
        assert!(state.unreported_ledger("invalid", 8, 9).is_empty());
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_new_install() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{\"identity\":").unwrap();
        assert!(matches!(
            open(dir.path(), Consent::Granted),
            Err(StateError::Corrupt(_))
        ));
    }
}
