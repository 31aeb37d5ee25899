//! Sequence ranges: how both stores keep per-install completeness small.
//!
//! A device numbers its events 1, 2, 3, ... with no gaps. The store keeps
//! the seq values it has seen as merged inclusive ranges (a healthy install
//! has exactly one: `1..=max`), so completeness costs a few rows per
//! install however many events it sent. These functions are the pure part:
//! turning a batch's seq values into ranges, merging them into what is
//! stored, and computing what is missing.

use std::collections::BTreeMap;

/// Completeness of one install (`GET /v1/installs/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct InstallReport {
    /// Highest seq seen (stored or reported dropped).
    pub max_seq: u64,
    /// Seq ranges in `1..=max_seq` neither stored nor reported dropped,
    /// as inclusive `[from, to]` pairs, ascending.
    pub missing: Vec<[u64; 2]>,
    /// Events the device reported dropped by policy that the store does
    /// not hold: a seq both stored and reported dropped counts as stored.
    pub dropped: u64,
    /// The same, by reason.
    pub dropped_by_reason: std::collections::BTreeMap<String, u64>,
    /// Every seq the device reported dropped, stored or not, merged into
    /// inclusive `[from, to]` pairs, ascending. Seqs here that the store
    /// also holds (sent, answer lost, then dropped from a full log) number
    /// their total length minus `dropped`.
    pub dropped_ranges: Vec<[u64; 2]>,
}

/// An inclusive range `from..=to` of seq values.
pub(crate) type SeqRange = (u64, u64);

/// Seq values above this are not tracked for completeness: the stores keep
/// seq in a signed 64-bit column (SQLite `INTEGER`, PostgreSQL `bigint`).
/// A device reaches it only with a corrupt counter; such events are still
/// stored, with their seq left out of the completeness accounting.
pub(crate) const MAX_TRACKED_SEQ: u64 = i64::MAX as u64;

/// Sorts and merges seq values into disjoint, non-adjacent ranges.
pub(crate) fn ranges_from_seqs(seqs: &mut [u64]) -> Vec<SeqRange> {
    seqs.sort_unstable();
    let mut out: Vec<SeqRange> = Vec::new();
    for &seq in seqs.iter() {
        match out.last_mut() {
            Some(last) if seq <= last.1.saturating_add(1) => last.1 = last.1.max(seq),
            _ => out.push((seq, seq)),
        }
    }
    out
}

/// Merges two range lists into disjoint, non-adjacent ranges, ascending.
pub(crate) fn merge(a: &[SeqRange], b: &[SeqRange]) -> Vec<SeqRange> {
    let mut all: Vec<SeqRange> = a.iter().chain(b.iter()).copied().collect();
    all.sort_unstable();
    let mut out: Vec<SeqRange> = Vec::with_capacity(all.len());
    for (from, to) in all {
        match out.last_mut() {
            Some(last) if from <= last.1.saturating_add(1) => last.1 = last.1.max(to),
            _ => out.push((from, to)),
        }
    }
    out
}

/// The ranges of `1..=max_seq` covered by neither `seen` nor `dropped`.
pub(crate) fn missing(max_seq: u64, seen: &[SeqRange], dropped: &[SeqRange]) -> Vec<[u64; 2]> {
    let covered = merge(seen, dropped);
    let mut out = Vec::new();
    let mut next = 1u64;
    for (from, to) in covered {
        if next > max_seq {
            break;
        }
        if from > next {
            out.push([next, (from - 1).min(max_seq)]);
        }
        next = next.max(to.saturating_add(1));
    }
    if next <= max_seq {
        out.push([next, max_seq]);
    }
    out
}

/// How many seqs of `range` lie outside `covered` (disjoint, ascending).
fn len_outside(range: SeqRange, covered: &[SeqRange]) -> u64 {
    let (from, to) = range;
    let inside: u64 = covered
        .iter()
        .filter(|&&(f, t)| f <= to && t >= from)
        .map(|&(f, t)| t.min(to) - f.max(from) + 1)
        .sum();
    (to - from + 1) - inside
}

/// Builds an install's report from its stored seen ranges and drops.
///
/// A drop's reason is counted under the code the device sent: one of
/// [`tally_proto::DropReason`]'s, or a code another SDK version uses,
/// which is kept as it came rather than refused or renamed.
///
/// A seq is explained once: a dropped seq the store also holds (the device
/// sent it, lost the answer, then dropped it from a full log) counts as
/// stored, not dropped, and a seq two reports cover counts under the
/// first reason in seq order.
pub(crate) fn report(
    max_seq: u64,
    seen: &[SeqRange],
    mut drops: Vec<(u64, u64, String)>,
) -> InstallReport {
    drops.sort_unstable();
    let mut dropped_by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut dropped_ranges = Vec::with_capacity(drops.len());
    let mut explained = merge(seen, &[]);
    for (from, to, reason) in drops {
        let n = len_outside((from, to), &explained);
        if n > 0 {
            *dropped_by_reason.entry(reason).or_default() += n;
        }
        dropped_ranges.push((from, to));
        explained = merge(&explained, &[(from, to)]);
    }
    InstallReport {
        max_seq,
        missing: missing(max_seq, seen, &dropped_ranges),
        dropped: dropped_by_reason.values().sum(),
        dropped_by_reason,
        dropped_ranges: merge(&dropped_ranges, &[])
            .into_iter()
            .map(|(from, to)| [from, to])
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_merge_into_ranges() {
        let mut seqs = vec![5, 1, 2, 3, 9, 10, 3, 7];
        assert_eq!(
            ranges_from_seqs(&mut seqs),
            vec![(1, 3), (5, 5), (7, 7), (9, 10)]
        );
        assert_eq!(ranges_from_seqs(&mut []), vec![]);
        assert_eq!(
            ranges_from_seqs(&mut [u64::MAX, u64::MAX - 1]),
            vec![(u64::MAX - 1, u64::MAX)]
        );
    }

    #[test]
    fn merge_joins_overlapping_and_adjacent() {
        assert_eq!(
            merge(&[(1, 3), (10, 12)], &[(4, 4), (6, 8)]),
            vec![(1, 4), (6, 8), (10, 12)]
        );
        assert_eq!(merge(&[(1, 100)], &[(5, 6)]), vec![(1, 100)]);
        assert_eq!(merge(&[(5, 9)], &[(1, 4), (10, 10)]), vec![(1, 10)]);
    }

    #[test]
    fn missing_is_the_complement() {
        assert_eq!(missing(10, &[(1, 10)], &[]), Vec::<[u64; 2]>::new());
        assert_eq!(
            missing(10, &[(2, 3), (7, 8)], &[]),
            vec![[1, 1], [4, 6], [9, 10]]
        );
        assert_eq!(
            missing(10, &[(2, 3), (7, 8)], &[(4, 6)]),
            vec![[1, 1], [9, 10]]
        );
        assert_eq!(missing(0, &[], &[]), Vec::<[u64; 2]>::new());
        assert_eq!(missing(5, &[(3, 9)], &[]), vec![[1, 2]]);
    }

    #[test]
    fn drops_are_counted_under_the_code_sent_known_or_not() {
        use tally_proto::DropReason;
        let drops = vec![
            (2, 3, DropReason::LogFull.as_str().to_owned()),
            (
                5,
                5,
                DropReason::Invalid(tally_proto::RejectReason::MessageTooLarge).to_string(),
            ),
            (6, 6, DropReason::LogFull.as_str().to_owned()),
            (7, 8, "from_a_newer_sdk".to_owned()),
        ];
        let r = report(9, &[(1, 1), (4, 4), (9, 9)], drops);
        assert_eq!(r.dropped, 6);
        assert!(r.missing.is_empty(), "{:?}", r.missing);
        let by_reason: Vec<(&str, u64)> = r
            .dropped_by_reason
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            by_reason,
            [
                ("from_a_newer_sdk", 2),
                ("invalid:message_too_large", 1),
                ("log_full", 3)
            ]
        );
    }

    /// A seq both stored and reported dropped (sent, answer lost, then
    /// dropped from a full log) is counted once, as stored; overlapping
    /// reports count each seq once.
    #[test]
    fn a_stored_seq_is_never_also_dropped() {
        let drops = vec![
            (1, 6, "log_full".to_owned()),
            (5, 8, "expired".to_owned()),
            (20, 20, "log_full".to_owned()),
        ];
        // Seqs 2..=4 reached the collector before the device dropped them.
        let r = report(20, &[(2, 4), (9, 19)], drops);
        let by_reason: Vec<(&str, u64)> = r
            .dropped_by_reason
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        // log_full: 1, 5, 6 and 20; expired: 7 and 8 (5 and 6 already counted).
        assert_eq!(by_reason, [("expired", 2), ("log_full", 4)]);
        assert_eq!(r.dropped, 6);
        assert!(r.missing.is_empty(), "{:?}", r.missing);
        // Stored + dropped = every seq, once.
        assert_eq!(3 + 11 + r.dropped, 20);
        // The reported ranges, merged, keep the stored seqs 2..=4: their
        // length less `dropped` is what is both stored and dropped.
        assert_eq!(r.dropped_ranges, vec![[1, 8], [20, 20]]);
        assert_eq!(8 + 1 - r.dropped, 3);
        // A drop wholly stored counts nothing and leaves no zero entry.
        let r = report(3, &[(1, 3)], vec![(2, 3, "log_full".to_owned())]);
        assert_eq!((r.dropped, r.dropped_by_reason.len()), (0, 0));
        assert_eq!(r.dropped_ranges, vec![[2, 3]]);
    }

    #[test]
    fn len_outside_counts_the_uncovered_part() {
        assert_eq!(len_outside((1, 10), &[]), 10);
        assert_eq!(len_outside((1, 10), &[(3, 4), (9, 12)]), 6);
        assert_eq!(len_outside((5, 5), &[(1, 10)]), 0);
    }
}
