//! The identity the report states, each term counted exactly:
//!
//! `tracked = counted + dropped_not_stored + rejected + business_duplicates + pending`
//!
//! `tracked` are the calls a tracker accepted and a flush confirmed. In
//! chaos mode every one of them has a seq in the ledger, and each is put
//! in exactly one term by what the collector holds at that seq:
//!
//! - **counted**: the collector stores an event at that seq of that
//!   install. A seq the device also reported dropped (sent, answer lost,
//!   then dropped from a full log) counts here only; how many did is
//!   `stored_and_dropped`.
//! - **dropped not stored**: the device reported the seq dropped and the
//!   collector does not store it, or the seq's install was uninstalled
//!   before it was sent (the uninstall took it; nothing reports that).
//! - **business duplicates**: the second tap of a double-tapped order,
//!   which the collector answers `duplicate` and does not store.
//! - the rest, neither stored nor reported dropped on an install still
//!   there, must be exactly what the devices' logs count as `rejected`
//!   and `pending`.
//!
//! Calls refused at the call were never tracked, and calls in doubt (a
//! device killed with SIGKILL before a flush confirmed them) are not in
//! `tracked`: each may have been stored once, and `counted_in_doubt` is
//! how many were, so the collector's count over the run is `counted +
//! counted_in_doubt`. The identity holds when both sides are equal and
//! `counted_in_doubt` is at most `in_doubt`.
//!
//! In storm mode the ledger keeps no seqs, so the terms come from totals:
//! `stored_and_dropped` is, per install, the seqs the device reported
//! dropped less those the collector counts dropped (its `dropped` leaves
//! out the seqs it stores).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use tally_proto::DropReason;

use super::ledger::Ledger;
use super::observe::{InstallFigures, StoredEvent};

/// The identity's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub tracked: u64,
    /// Tracked calls the collector stores.
    pub counted: u64,
    /// Tracked calls dropped on the device that the collector does not store.
    pub dropped_not_stored: u64,
    pub rejected: u64,
    pub business_duplicates: u64,
    pub pending: u64,
    /// Tracked calls the collector stores that the device also reported
    /// dropped (inside `counted`).
    pub stored_and_dropped: u64,
    /// Calls in doubt, and how many of them the collector stores.
    pub in_doubt: u64,
    pub counted_in_doubt: u64,
    /// Refused at the call, never tracked.
    pub refused: u64,
    /// Dropped by an uninstall (inside `dropped_not_stored`).
    pub uninstalled: u64,
    /// Tracked calls of installs still there neither stored nor reported
    /// dropped (chaos mode): rejected or pending ones, so exactly those.
    pub neither: Option<u64>,
}

impl Identity {
    /// Counts the terms. `counted` is the collector's count over the run;
    /// `events` each install's stored events (chaos mode).
    pub fn of(
        l: &Ledger,
        counted: u64,
        installs: &BTreeMap<String, InstallFigures>,
        events: Option<&BTreeMap<String, Vec<StoredEvent>>>,
    ) -> Identity {
        let mut id = Identity {
            tracked: l.tracked,
            rejected: l.rejected_total(),
            pending: l.pending,
            in_doubt: l.in_doubt,
            refused: l.refused.values().sum(),
            ..Identity::default()
        };
        let Some(events) = events else {
            id.uninstalled = l
                .dropped
                .get(DropReason::Uninstalled.as_str())
                .copied()
                .unwrap_or(0);
            id.stored_and_dropped = installs.values().map(|f| f.dropped_but_stored()).sum();
            id.counted = counted;
            id.dropped_not_stored = l.dropped_total().saturating_sub(id.stored_and_dropped);
            id.business_duplicates = l.business_duplicates;
            return id;
        };
        let none = BTreeSet::new();
        let no_figures = InstallFigures::default();
        let mut rest = 0u64;
        for (install, captures) in &l.captures {
            let stored: BTreeSet<u64> = events
                .get(install)
                .into_iter()
                .flatten()
                .filter(|e| !tally_proto::is_internal_event(&e.label))
                .map(|e| e.seq)
                .collect();
            let figures = installs.get(install).unwrap_or(&no_figures);
            let doubtful = l.doubtful.get(install).unwrap_or(&none);
            let second_taps = l.second_taps.get(install).unwrap_or(&none);
            let gone = l.uninstalled.contains(install);
            for seq in captures.keys().filter(|s| !doubtful.contains(s)) {
                let dropped = figures.reported_dropped(*seq);
                if stored.contains(seq) {
                    id.counted += 1;
                    id.stored_and_dropped += u64::from(dropped);
                } else if dropped {
                    id.dropped_not_stored += 1;
                } else if second_taps.contains(seq) {
                    id.business_duplicates += 1;
                } else if gone {
                    id.dropped_not_stored += 1;
                    id.uninstalled += 1;
                } else {
                    rest += 1;
                }
            }
        }
        id.counted_in_doubt = counted.saturating_sub(id.counted);
        id.neither = Some(rest);
        id
    }

    /// The right side of the identity.
    pub fn explained(&self) -> u64 {
        self.counted
            + self.dropped_not_stored
            + self.rejected
            + self.business_duplicates
            + self.pending
    }

    /// Whether the identity holds exactly.
    pub fn holds(&self) -> bool {
        let rest_ok = self
            .neither
            .is_none_or(|n| n == self.rejected + self.pending);
        self.tracked == self.explained() && self.counted_in_doubt <= self.in_doubt && rest_ok
    }

    pub fn to_json(&self) -> Value {
        json!({
            "tracked": self.tracked,
            "counted": self.counted,
            "dropped_not_stored": self.dropped_not_stored,
            "rejected": self.rejected,
            "business_duplicates": self.business_duplicates,
            "pending": self.pending,
            "explained": self.explained(),
            "stored_and_dropped": self.stored_and_dropped,
            "in_doubt": self.in_doubt,
            "counted_in_doubt": self.counted_in_doubt,
            "refused": self.refused,
            "uninstalled": self.uninstalled,
            "neither_stored_nor_dropped": self.neither,
            "ok": self.holds(),
        })
    }

    /// The headline's line.
    pub fn line(&self) -> String {
        format!(
            "tracked {t} = counted {c} + dropped and not stored {d} + rejected {r} + double-tapped orders {b} + pending {p}: {v}\n\
             stored and also reported dropped {o} (counted once); in doubt {i}, of which counted {ci}; refused {f} (never tracked)",
            t = self.tracked,
            c = self.counted,
            d = self.dropped_not_stored,
            r = self.rejected,
            b = self.business_duplicates,
            p = self.pending,
            v = if self.holds() {
                "identity holds".to_owned()
            } else {
                format!("FAILED, the right side is {}", self.explained())
            },
            o = self.stored_and_dropped,
            i = self.in_doubt,
            ci = self.counted_in_doubt,
            f = self.refused,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(install_seqs: &[(&str, &[u64])]) -> BTreeMap<String, Vec<StoredEvent>> {
        install_seqs
            .iter()
            .map(|(install, seqs)| {
                let events = seqs
                    .iter()
                    .map(|&seq| StoredEvent {
                        seq,
                        label: "A".to_owned(),
                        person: (*install).to_owned(),
                    })
                    .collect();
                ((*install).to_owned(), events)
            })
            .collect()
    }

    fn figures(dropped: u64, ranges: &[(u64, u64)]) -> InstallFigures {
        InstallFigures {
            max_seq: 10,
            missing: 0,
            dropped,
            dropped_ranges: ranges.to_vec(),
        }
    }

    /// i1 tracked 1..=10: 1..=4 stored, the device dropped 3..=8 from a
    /// full log after sending 3 and 4, 9 is a second tap, 10 pending. i2
    /// tracked 1..=2 and was uninstalled with 2 unsent.
    fn ledger() -> Ledger {
        let mut l = Ledger::default();
        for seq in 1..=10 {
            l.capture("i1", Some("A"), seq);
        }
        l.capture("i2", Some("A"), 1);
        l.capture("i2", Some("A"), 2);
        l.tracked = 12;
        l.business_duplicate("i1", 9);
        l.uninstalled.insert("i2".to_owned());
        l.dropped.insert("log_full".to_owned(), 6);
        l.dropped.insert("uninstalled".to_owned(), 1);
        l.pending = 1;
        l
    }

    #[test]
    fn each_tracked_seq_is_in_one_term() {
        let l = ledger();
        let installs = BTreeMap::from([
            ("i1".to_owned(), figures(4, &[(3, 8)])),
            ("i2".to_owned(), figures(0, &[])),
        ]);
        let events = stored(&[("i1", &[1, 2, 3, 4]), ("i2", &[1])]);
        let id = Identity::of(&l, 5, &installs, Some(&events));
        assert_eq!(
            (id.counted, id.dropped_not_stored, id.business_duplicates),
            (5, 5, 1)
        );
        assert_eq!((id.stored_and_dropped, id.uninstalled), (2, 1));
        assert_eq!(
            (id.pending, id.neither, id.counted_in_doubt),
            (1, Some(1), 0)
        );
        assert_eq!(id.explained(), 12);
        assert!(id.holds(), "{id:?}");
        // Adding the device's 6 log_full drops to the 5 counted would
        // explain 3 and 4 twice: the totals are not the terms.
        assert_eq!(installs["i1"].dropped_but_stored(), 2);
    }

    #[test]
    fn an_unexplained_seq_fails_it() {
        let mut l = ledger();
        // The device says nothing is pending, yet i1's seq 10 is neither
        // stored nor reported dropped.
        l.pending = 0;
        let installs = BTreeMap::from([("i1".to_owned(), figures(4, &[(3, 8)]))]);
        let events = stored(&[("i1", &[1, 2, 3, 4]), ("i2", &[1])]);
        let id = Identity::of(&l, 5, &installs, Some(&events));
        assert_eq!(id.explained(), 11);
        assert!(!id.holds());
        // More counted than tracked and in doubt together fails it too.
        l.pending = 1;
        let id = Identity::of(&l, 6, &installs, Some(&events));
        assert_eq!((id.counted_in_doubt, id.in_doubt), (1, 0));
        assert!(!id.holds());
    }
}
