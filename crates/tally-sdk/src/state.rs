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
use std::sync::Mutex;

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
    /// The bytes the file durably holds (as read, or as last saved): a
    /// save of the same state writes nothing. A tracker saves on every
    /// explicit flush and on shutdown, mostly with nothing changed, and
    /// each real save costs a new file, two fsyncs and a rename.
    saved: Mutex<Vec<u8>>,
}

impl StateFile {
    /// Opens (or creates) the state in `dir`; a new install starts with
    /// `initial_consent`.
    pub fn open(dir: &Path, initial_consent: Consent) -> Result<(Self, State), StateError> {
        fs::create_dir_all(dir)?;
        let file = Self {
            dir: dir.to_owned(),
            saved: Mutex::new(Vec::new()),
        };
        let state = match fs::read(dir.join(FILE_NAME)) {
            Ok(bytes) => {
                let state = serde_json::from_slice(&bytes).map_err(StateError::Corrupt)?;
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

    /// Replaces the state on disk, durably; does nothing when the file
    /// already holds exactly this state.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(state).map_err(StateError::Corrupt)?;
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        if *saved == json {
            return Ok(());
        }
        let tmp = self.dir.join(TMP_NAME);
        let mut f = File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, self.dir.join(FILE_NAME))?;
        File::open(&self.dir)?.sync_all()?;
        // Only once all of it is durable: after a failure the next save
        // writes again.
        *saved = json;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saving_an_unchanged_state_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (file, mut state) = StateFile::open(dir.path(), Consent::Granted).unwrap();
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
        let (reopened, state) = StateFile::open(dir.path(), Consent::Granted).unwrap();
        fs::remove_file(&path).unwrap();
        reopened.save(&state).unwrap();
        assert!(!path.exists());
    }

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
    fn a_report_counts_only_once_answered_and_is_redone_if_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (file, mut state) = StateFile::open(dir.path(), Consent::Granted).unwrap();
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
        let (_, mut state) = StateFile::open(dir.path(), Consent::Granted).unwrap();
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
            StateFile::open(dir.path(), Consent::Granted),
            Err(StateError::Corrupt(_))
        ));
    }
}
