//! What a batch changes beyond its rows, computed once from the events
//! and their outcomes for both stores, which only apply it: each store
//! reads what it must merge with and writes in its own way (one
//! statement per row on SQLite's single writer, one array statement per
//! table on PostgreSQL).
//!
//! | decision or change | computed by |
//! |---|---|
//! | refusals: the rules only the store can check, in their order | [`refusal`] |
//! | completeness: seqs seen, drops reported, highest seq per install | [`install_deltas`] |
//! | identity links of accepted identify and alias calls, one per key | [`links`] |
//! | event names and active slots | [`query::Activity`](super::query) |
//! | health figures | [`BatchHealth::of`](super::health::BatchHealth::of) |
//!
//! Completeness follows the rules of the [store module](super): an event
//! marks its seq seen whatever its outcome (the collector saw it), only
//! an accepted event's drop report counts, and only for an install of the
//! event's own source (`own_install`). A seq or drop past
//! [`MAX_TRACKED_SEQ`] is not tracked.
//!
//! Links are written after the batch's identities exist: a link
//! re-resolves the persons of the identities it names
//! (`identity::repoint_sql`), those of this batch included.

use super::identity::{self, Link};
use super::ranges::{self, SeqRange, MAX_TRACKED_SEQ};
use super::{tracked, NewEvent, WriteOutcome};
use std::collections::BTreeMap;
use tally_proto::RejectReason;

/// Why the store refuses `e`, if it does, by the first rule that applies:
/// its person was deleted (`deleted_person`), it is a drop report for an
/// install another source owns (`own_install` is whether its install is
/// its source's), or it is an alias merging a user id that has events of
/// its own (`merges_identified_user`, see `identity::merged_user`). Each
/// check is asked only if the ones before it passed: a store may answer
/// it with a query.
pub(crate) fn refusal<E>(
    e: &NewEvent,
    own_install: bool,
    deleted_person: impl FnOnce() -> Result<bool, E>,
    merges_identified_user: impl FnOnce() -> Result<bool, E>,
) -> Result<Option<RejectReason>, E> {
    Ok(if deleted_person()? {
        Some(RejectReason::DeletedUser)
    } else if e.install_id.is_some() && !own_install && e.is_drop_report() {
        Some(RejectReason::InvalidDropReport)
    } else if merges_identified_user()? {
        Some(RejectReason::AliasOfIdentifiedUser)
    } else {
        None
    })
}

/// What one batch adds to one install's completeness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstallDelta<'e> {
    /// The source the batch's events came from: it claims the install if
    /// no source has.
    pub source: &'e str,
    /// The seqs seen, as merged ranges, ascending.
    pub seen: Vec<SeqRange>,
    /// The drops reported (`from`, `to`, reason), in the batch's order.
    pub drops: Vec<(u64, u64, &'e str)>,
    /// The highest seq seen or reported dropped (0 if none).
    pub max_seq: u64,
}

impl InstallDelta<'_> {
    /// `[lo, hi]`: the stored ranges that touch the seen ones (overlap or
    /// adjoin them) are those with `from <= hi` and `to >= lo`; they merge.
    /// `None` when the batch saw no seq.
    pub fn span(&self) -> Option<(u64, u64)> {
        let (first, last) = (self.seen.first()?, self.seen.last()?);
        Some((
            first.0.saturating_sub(1),
            last.1.saturating_add(1).min(MAX_TRACKED_SEQ),
        ))
    }
}

/// The completeness each install of the batch's own source gains, by
/// install id (sorted: the order PostgreSQL transactions lock them in).
/// `outcomes` are the events' own, in order.
pub(crate) fn install_deltas<'e>(
    events: &'e [NewEvent],
    outcomes: &[WriteOutcome],
    own_install: impl Fn(&NewEvent) -> bool,
) -> BTreeMap<&'e str, InstallDelta<'e>> {
    let mut deltas: BTreeMap<&str, InstallDelta<'_>> = BTreeMap::new();
    let mut seqs: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (e, outcome) in events.iter().zip(outcomes) {
        let Some(install) = e.install_id.as_deref().filter(|_| own_install(e)) else {
            continue;
        };
        let delta = deltas.entry(install).or_insert_with(|| InstallDelta {
            source: &e.source,
            seen: Vec::new(),
            drops: Vec::new(),
            max_seq: 0,
        });
        delta.source = &e.source;
        let seen = seqs.entry(install).or_default();
        if let Some(seq) = tracked(e.seq) {
            seen.push(seq as u64);
        }
        if *outcome == WriteOutcome::Accepted {
            delta.drops.extend(
                e.drops
                    .iter()
                    .filter(|d| d.from >= 1 && d.from <= d.to && d.to <= MAX_TRACKED_SEQ)
                    .map(|d| (d.from, d.to, d.reason.as_str())),
            );
        }
    }
    for (install, delta) in deltas.iter_mut() {
        if let Some(seen) = seqs.get_mut(install) {
            delta.seen = ranges::ranges_from_seqs(seen);
        }
        delta.max_seq = delta
            .drops
            .iter()
            .map(|d| d.1)
            .chain(delta.seen.last().map(|r| r.1))
            .max()
            .unwrap_or(0);
    }
    deltas
}

/// The identity links the batch's accepted identify and alias calls make
/// (`identity::links_of`), one per `(kind, id)`: the winner under the
/// conflict rule (the earliest corrected time, then the smaller user id),
/// sorted by key, the order PostgreSQL transactions lock them in. A
/// store upserts each under the same rule against the stored link.
pub(crate) fn links<'e>(
    events: &'e [NewEvent],
    outcomes: &[WriteOutcome],
) -> BTreeMap<(&'static str, &'e str), Link<'e>> {
    let mut links: BTreeMap<(&str, &str), Link<'_>> = BTreeMap::new();
    for (e, outcome) in events.iter().zip(outcomes) {
        if *outcome != WriteOutcome::Accepted {
            continue;
        }
        for link in identity::links_of(e) {
            links
                .entry((link.kind, link.id))
                .and_modify(|old| {
                    if (link.linked_at, link.target) < (old.linked_at, old.target) {
                        *old = link.clone();
                    }
                })
                .or_insert(link);
        }
    }
    links
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests unwrap: a failure is the assertion

    use super::*;
    use crate::store::DroppedRange;
    use tally_proto::{MessageType, Priority};

    fn event(install: &str, seq: u64, drops: &[(u64, u64)]) -> NewEvent {
        NewEvent {
            source: "k".into(),
            message_id: format!("{install}-{seq}"),
            kind: MessageType::Track,
            event: Some("Open".into()),
            user_id: None,
            anonymous_id: Some("a".into()),
            group_id: None,
            previous_id: None,
            install_id: Some(install.into()),
            seq: Some(seq),
            session_id: None,
            session_index: None,
            dedup_key: None,
            priority: Priority::Normal,
            timestamp: None,
            sent_at: None,
            received_at: 0,
            ts_corrected: 0,
            clamped: false,
            drops: drops
                .iter()
                .map(|&(from, to)| DroppedRange {
                    from,
                    to,
                    reason: "queue_full".into(),
                })
                .collect(),
            raw: String::new(),
        }
    }

    #[test]
    fn seen_whatever_the_outcome_drops_only_when_accepted() {
        let events = [
            event("i1", 3, &[(10, 12)]),
            event("i1", 1, &[(20, 25)]),
            event("i1", 2, &[]),
            event("i2", 7, &[(0, 4), (5, 4), (6, 6)]),
            event("other", 1, &[]),
        ];
        let outcomes = [
            WriteOutcome::Duplicate,
            WriteOutcome::Accepted,
            WriteOutcome::Accepted,
            WriteOutcome::Accepted,
            WriteOutcome::Accepted,
        ];
        let deltas = install_deltas(&events, &outcomes, |e| {
            e.install_id.as_deref() != Some("other")
        });
        assert_eq!(deltas.keys().copied().collect::<Vec<_>>(), ["i1", "i2"]);
        let i1 = &deltas["i1"];
        assert_eq!(i1.seen, [(1, 3)]);
        assert_eq!(i1.drops, [(20, 25, "queue_full")]);
        assert_eq!(i1.max_seq, 25);
        assert_eq!(i1.span(), Some((0, 4)));
        // Invalid drop ranges are not tracked.
        assert_eq!(deltas["i2"].drops, [(6, 6, "queue_full")]);
        assert_eq!(deltas["i2"].max_seq, 7);
    }

    fn identify(user: &str, anon: &str, at: i64) -> NewEvent {
        let mut e = event("i1", 1, &[]);
        e.kind = MessageType::Identify;
        e.event = None;
        e.install_id = None;
        e.user_id = Some(user.into());
        e.anonymous_id = Some(anon.into());
        e.ts_corrected = at;
        e
    }

    #[test]
    fn one_link_per_key_the_earliest_then_the_smaller_user_of_accepted_calls() {
        let events = [
            identify("u2", "a1", 5),
            identify("u1", "a1", 5),
            identify("u0", "a1", 1),
            identify("u3", "a2", 9),
        ];
        use WriteOutcome::{Accepted as A, Duplicate as D};
        let links = links(&events, &[A, A, D, A]);
        let found: Vec<(&str, &str, &str, i64)> = links
            .values()
            .map(|l| (l.kind, l.id, l.target, l.linked_at))
            .collect();
        assert_eq!(found, [("a", "a1", "u1", 5), ("a", "a2", "u3", 9)]);
    }

    #[test]
    fn an_untracked_seq_marks_nothing_but_claims_the_install() {
        let events = [event("i1", u64::MAX, &[])];
        let deltas = install_deltas(&events, &[WriteOutcome::Accepted], |_| true);
        assert_eq!(deltas["i1"].seen, []);
        assert_eq!(deltas["i1"].max_seq, 0);
        assert_eq!(deltas["i1"].span(), None);
        assert_eq!(deltas["i1"].source, "k");
    }
}
