//! The SDK's small persistent state (identity, session, consent, sequence
//! watermarks, drops not yet reported), one JSON file in the data
//! directory, replaced atomically.
//!
//! A write goes to a temporary file, is synced, renamed over the old file,
//! and the directory is synced: after a crash the file is the old or the
//! new version, never a mix. The events themselves live in the log; this
//! file is rewritten at flushes and acks, not per event.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pipeline::identity::Identity;
use crate::pipeline::privacy::Consent;
use crate::pipeline::session::SavedSession;

const FILE_NAME: &str = "tally-state.json";
const TMP_NAME: &str = "tally-state.json.tmp";

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
        }
    }

    /// The parts of `[first, last]` (dropped for `reason` by the log) not
    /// reported yet.
    pub fn unreported_ledger(&self, reason: &str, first: u64, last: u64) -> Vec<[u64; 2]> {
        let mut out = Vec::new();
        let mut next = first;
        for &[from, to] in self
            .reported_ledger
            .get(reason)
            .map_or(&[][..], Vec::as_slice)
        {
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

    /// Adds a dropped seq, extending the last range of the same reason
    /// when contiguous.
    pub fn record_drop(&mut self, reason: &str, seq: u64) {
        if let Some(last) = self.unreported_drops.last_mut() {
            if last.reason == reason && last.to + 1 == seq {
                last.to = seq;
                return;
            }
        }
        self.unreported_drops.push(DropRange {
            reason: reason.to_owned(),
            from: seq,
            to: seq,
        });
    }
}

/// The state file of one data directory.
#[derive(Debug)]
pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    /// Opens (or creates) the state in `dir`; a new install starts with
    /// `initial_consent`.
    pub fn open(dir: &Path, initial_consent: Consent) -> Result<(Self, State), StateError> {
        fs::create_dir_all(dir)?;
        let file = Self {
            dir: dir.to_owned(),
        };
        let state = match fs::read(dir.join(FILE_NAME)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(StateError::Corrupt)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let state = State::fresh(initial_consent);
                file.save(&state)?;
                state
            }
            Err(e) => return Err(e.into()),
        };
        Ok((file, state))
    }

    /// Replaces the state on disk, durably.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(state).map_err(StateError::Corrupt)?;
        let tmp = self.dir.join(TMP_NAME);
        let mut f = File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, self.dir.join(FILE_NAME))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let (file, mut state) = StateFile::open(dir.path(), Consent::Granted).unwrap();
        assert_eq!(state.consent, Consent::Granted);
        state.acked_seq = 42;
        state.record_drop("invalid", 5);
        state.record_drop("invalid", 6);
        state.record_drop("queue_full", 7);
        state.record_drop("invalid", 9);
        file.save(&state).unwrap();
        let (_, again) = StateFile::open(dir.path(), Consent::Pending).unwrap();
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
        assert!(!dir.path().join(TMP_NAME).exists());
    }

    #[test]
    fn ledger_ranges_are_reported_once_even_when_extended() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut state) = StateFile::open(dir.path(), Consent::Granted).unwrap();
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
    fn a_corrupt_file_is_an_error_not_a_new_install() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{\"identity\":").unwrap();
        assert!(matches!(
            StateFile::open(dir.path(), Consent::Granted),
            Err(StateError::Corrupt(_))
        ));
    }
}
