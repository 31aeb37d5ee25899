//! The ground truth: what each device's tracker said it did.
//!
//! What the device dropped, what the collector rejected and what is still
//! pending come from the device's durable log, read after its tracker has
//! stopped (`tally_sdk::log::inspect`): the log keeps those counters across
//! restarts, where `health()` counters start again with each tracker.

use std::collections::{BTreeMap, BTreeSet};

use tally_proto::DropReason;
use tally_sdk::log::Inspection;
use tally_sdk::TrackResult;

/// Everything one device (across restarts and reinstalls) reported.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Messages `track()` and its siblings accepted.
    pub tracked: u64,
    /// Accepted messages by event name (tracks and screens).
    pub tracked_by_name: BTreeMap<String, u64>,
    /// Purchases tracked twice with the same dedup key (a double tap): the
    /// collector must count each order once.
    pub business_duplicates: u64,
    /// Per install, the seqs of those second taps (empty in storm mode).
    pub second_taps: BTreeMap<String, BTreeSet<u64>>,
    /// Messages refused at the call, by reason.
    pub refused: BTreeMap<String, u64>,
    /// Dropped on the device by a policy, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Rejected by the collector, by reason (quarantined on the device).
    pub rejected: BTreeMap<String, u64>,
    /// Records the collector acknowledged (accepted or duplicate).
    pub acknowledged: u64,
    /// Still in the device's log at the end.
    pub pending: u64,
    /// Records the device's log found corrupt.
    pub corrupt: u64,
    /// Install ids this device had (one per install).
    pub installs: Vec<String>,
    /// Those of them whose app was uninstalled: what their logs still
    /// held is counted dropped (`uninstalled`), never reported.
    pub uninstalled: BTreeSet<String>,
    /// The highest seq each install's tracker accepted.
    pub max_seq: BTreeMap<String, u64>,
    /// What each install captured at each seq (the event name, or
    /// `identify`), in capture order. A seq taken again after a crash
    /// (its first message never became durable, so it was never sent)
    /// holds the later capture. Empty in storm mode.
    pub captures: BTreeMap<String, BTreeMap<u64, &'static str>>,
    /// Per install, calls a SIGKILL interrupted before the child said
    /// which seq they got: each may have been accepted and made durable,
    /// at a seq nobody saw.
    pub interrupted: BTreeMap<String, Vec<&'static str>>,
    /// Per install, the seqs of `captures` still in doubt.
    pub doubtful: BTreeMap<String, BTreeSet<u64>>,
    /// Calls a device killed with SIGKILL made without a confirmed flush:
    /// each may or may not have become durable, so it may or may not be
    /// counted.
    pub in_doubt: u64,
}

/// What the ledger calls a capture without an event name.
pub const IDENTIFY: &str = "identify";

impl Ledger {
    /// Records the result of one call.
    pub fn record(&mut self, install_id: &str, name: Option<&'static str>, result: &TrackResult) {
        match result {
            Ok(accepted) => {
                self.tracked += 1;
                if let Some(name) = name {
                    *self.tracked_by_name.entry(name.to_owned()).or_default() += 1;
                }
                self.capture(install_id, name, accepted.seq);
            }
            Err(refusal) => self.refuse(refusal.code()),
        }
    }

    /// Records that the call `install_id` made at `seq` is the second tap
    /// of an order: the collector must count that order once.
    pub fn business_duplicate(&mut self, install_id: &str, seq: u64) {
        self.business_duplicates += 1;
        self.second_taps
            .entry(install_id.to_owned())
            .or_default()
            .insert(seq);
    }

    /// Records a refusal at the call.
    pub fn refuse(&mut self, code: &str) {
        *self.refused.entry(code.to_owned()).or_default() += 1;
    }

    /// Records that `install_id` captured `name` at `seq` (accepted by the
    /// tracker, and durable or still in this process).
    pub fn capture(&mut self, install_id: &str, name: Option<&'static str>, seq: u64) {
        let max = self.max_seq.entry(install_id.to_owned()).or_default();
        *max = (*max).max(seq);
        self.put_capture(install_id, name, seq);
        if let Some(doubtful) = self.doubtful.get_mut(install_id) {
            doubtful.remove(&seq);
        }
    }

    /// Records a capture of a device killed before its flush confirmed it:
    /// if it never became durable its seq is taken again, so the collector
    /// need not see it.
    pub fn capture_in_doubt(&mut self, install_id: &str, name: Option<&'static str>, seq: u64) {
        self.put_capture(install_id, name, seq);
        self.doubtful
            .entry(install_id.to_owned())
            .or_default()
            .insert(seq);
    }

    fn put_capture(&mut self, install_id: &str, name: Option<&'static str>, seq: u64) {
        self.captures
            .entry(install_id.to_owned())
            .or_default()
            .insert(seq, name.unwrap_or(IDENTIFY));
    }

    /// Whether the capture at `seq` of `install_id` is unknown or in doubt,
    /// so a later call may have taken that seq again.
    pub fn seq_open(&self, install_id: &str, seq: u64) -> bool {
        let known = self
            .captures
            .get(install_id)
            .is_some_and(|c| c.contains_key(&seq));
        !known
            || self
                .doubtful
                .get(install_id)
                .is_some_and(|d| d.contains(&seq))
    }

    /// Records a call of `install_id` interrupted before its result was
    /// known: it is in doubt, and its seq unknown.
    pub fn interrupt(&mut self, install_id: &str, name: Option<&'static str>) {
        self.in_doubt += 1;
        self.interrupted
            .entry(install_id.to_owned())
            .or_default()
            .push(name.unwrap_or(IDENTIFY));
    }

    /// Adds what one install's log recorded over its whole life; what it
    /// still holds is pending, or, for an uninstalled app, `uninstalled`.
    pub fn absorb_log(&mut self, log: &Inspection, uninstalled: bool) {
        add_all(&mut self.dropped, &log.dropped);
        add_all(&mut self.rejected, &log.rejected);
        self.acknowledged += log.acknowledged;
        self.corrupt += log.corrupt;
        if uninstalled {
            *self
                .dropped
                .entry(DropReason::Uninstalled.as_str().to_owned())
                .or_default() += log.pending;
        } else {
            self.pending += log.pending;
        }
    }

    /// Adds another device's ledger.
    pub fn merge(&mut self, other: &Ledger) {
        self.tracked += other.tracked;
        add_all(&mut self.tracked_by_name, &other.tracked_by_name);
        self.business_duplicates += other.business_duplicates;
        for (k, v) in &other.second_taps {
            self.second_taps
                .entry(k.clone())
                .or_default()
                .extend(v.iter().copied());
        }
        add_all(&mut self.refused, &other.refused);
        add_all(&mut self.dropped, &other.dropped);
        add_all(&mut self.rejected, &other.rejected);
        self.acknowledged += other.acknowledged;
        self.pending += other.pending;
        self.corrupt += other.corrupt;
        self.installs.extend(other.installs.iter().cloned());
        self.uninstalled.extend(other.uninstalled.iter().cloned());
        for (k, v) in &other.max_seq {
            let max = self.max_seq.entry(k.clone()).or_default();
            *max = (*max).max(*v);
        }
        for (k, v) in &other.captures {
            self.captures
                .entry(k.clone())
                .or_default()
                .extend(v.iter().map(|(seq, name)| (*seq, *name)));
        }
        for (k, v) in &other.doubtful {
            self.doubtful
                .entry(k.clone())
                .or_default()
                .extend(v.iter().copied());
        }
        for (k, v) in &other.interrupted {
            self.interrupted
                .entry(k.clone())
                .or_default()
                .extend(v.iter().copied());
        }
        self.in_doubt += other.in_doubt;
    }

    /// Dropped on the device, all reasons.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// Rejected by the collector, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

fn add_all(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}
