//! Checking the ledger against what the collector stored, and the report.
//!
//! # How the balance is computed
//!
//! Every message a tracker accepted ends in one of: counted on the
//! collector, a duplicate of a business key (a double-tapped order, which
//! the collector must count once), rejected by the collector with a reason,
//! dropped on the device by a named policy, or still pending. A dropped or
//! pending message may nevertheless have reached the collector (its answer
//! was lost to a reset before the device dropped it), so those two are
//! bounds, not exact terms:
//!
//! - `expected_max = tracked + in_doubt − business_duplicates − rejected`
//! - `expected_min = expected_max − in_doubt − dropped − pending`
//! - `double_counted = max(0, counted − expected_max)`
//! - `unexplained = max(max(0, expected_min − counted), missing)` where
//!   `missing` counts the sequence numbers the collector reports missing
//!   (neither stored nor reported dropped) for installs with nothing left
//!   pending: a loss that an extra count elsewhere would hide in the sum
//!   still shows there.
//!
//! `counted` is the change of the collector's `accepted` total over the
//! run, less the SDK's own `tally.dropped` and `tally.health` reports.
//!
//! These bounds take the device's drops as they come, stored seqs among
//! them; the exact identity, where a stored seq is never also dropped, is
//! [`super::identity`]'s.
//! `in_doubt` counts calls of devices killed with SIGKILL after the call
//! and before a flush confirmed it (see `child.rs`).
//!
//! # Per-install checks (chaos mode)
//!
//! Each install's stored events (`GET /v1/installs/{id}/events`, in seq
//! order, with the stitched person) are checked against the ledger:
//!
//! - **order**: the event stored at each seq is the one the device
//!   captured at that seq (its name, or `identify`), and no seq is stored
//!   twice: the collector's seq order is the capture order. A call a
//!   SIGKILL interrupted before the child wrote its seq may be stored at
//!   a seq the ledger does not know, under its own name, at most once
//!   (`interrupted_stored`).
//! - **attribution**: every stored event of a user's device counts for that
//!   user after stitching, or for the install itself only when the
//!   collector never stored that install's identify (dropped by a policy,
//!   or lost in doubt with a killed process); never for another person.
//!   Per user, the events counted lie within the bounds above computed from
//!   that user's devices alone, and equal them when nothing of those
//!   devices was dropped, rejected, pending or in doubt.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tally_proto::{is_internal_event, DROPPED_EVENT};
use tally_sdk::upload::HEALTH_EVENT;

use super::faults::Traffic;
use super::identity::Identity;
use super::ledger::Ledger;
use super::observe::{InstallFigures, Snapshot, StoredEvent};
use super::storm::Profile;

/// Everything the report is made of.
pub struct Inputs<'a> {
    pub run_id: &'a str,
    pub mode: super::Mode,
    pub seed: u64,
    pub devices: usize,
    pub events_per_device: usize,
    pub faults: &'a str,
    pub ledger: &'a Ledger,
    /// Each device's ledger with its user.
    pub users: &'a [(String, Ledger)],
    pub before: &'a Snapshot,
    pub after: &'a Snapshot,
    pub installs: &'a BTreeMap<String, InstallFigures>,
    /// Each install's stored events (chaos mode).
    pub install_events: Option<&'a BTreeMap<String, Vec<StoredEvent>>>,
    pub traffic: &'a Traffic,
    pub scripted: Duration,
    pub drain: Duration,
    pub restarts: &'a [&'static str],
    pub storm: Option<&'a Profile>,
}

/// The report: JSON, a human summary, and whether every check passed.
pub struct Report {
    pub json: Value,
    pub summary: String,
    pub ok: bool,
}

fn delta(after: u64, before: u64) -> u64 {
    after.saturating_sub(before)
}

fn name_delta(i: &Inputs<'_>, name: &str) -> (u64, u64, u64) {
    let (count_before, _) = i.before.by_name.get(name).copied().unwrap_or_default();
    let (count_after, users_after) = i.after.by_name.get(name).copied().unwrap_or_default();
    (delta(count_after, count_before), users_after, count_before)
}

/// `(expected_min, expected_max)` of events counted for what `l` tracked.
fn bounds(l: &Ledger) -> (u64, u64) {
    let max = (l.tracked + l.in_doubt)
        .saturating_sub(l.business_duplicates)
        .saturating_sub(l.rejected_total());
    let min = max
        .saturating_sub(l.in_doubt)
        .saturating_sub(l.dropped_total())
        .saturating_sub(l.pending);
    (min, max)
}

/// Whether nothing of `l` may be missing from the collector for a reason.
fn exact(l: &Ledger) -> bool {
    l.dropped_total() == 0 && l.pending == 0 && l.rejected_total() == 0 && l.in_doubt == 0
}

/// The order check: per install, the event stored at each seq is the one
/// captured at that seq, and no seq is stored twice.
fn order_check(l: &Ledger, events: &BTreeMap<String, Vec<StoredEvent>>) -> (Value, bool) {
    let mut checked = 0u64;
    let mut mismatched = 0u64;
    let mut repeated = 0u64;
    let mut examples = Vec::new();
    let mut interrupted_stored = 0u64;
    for (install, stored) in events {
        let captured = l.captures.get(install);
        let mut interrupted = l.interrupted.get(install).cloned().unwrap_or_default();
        let mut last: Option<u64> = None;
        for e in stored.iter().filter(|e| !is_internal_event(&e.label)) {
            checked += 1;
            if last == Some(e.seq) {
                repeated += 1;
            }
            last = Some(e.seq);
            let expected = captured.and_then(|c| c.get(&e.seq)).copied();
            if expected != Some(e.label.as_str()) && l.seq_open(install, e.seq) {
                // A call a kill interrupted before its seq was known may
                // sit, once, at a seq no confirmed call took.
                if let Some(i) = interrupted.iter().position(|n| *n == e.label) {
                    interrupted.swap_remove(i);
                    interrupted_stored += 1;
                    continue;
                }
            }
            if expected != Some(e.label.as_str()) {
                mismatched += 1;
                if examples.len() < 5 {
                    examples.push(json!({
                        "install": install,
                        "seq": e.seq,
                        "stored": e.label,
                        "captured": expected,
                    }));
                }
            }
        }
    }
    let ok = mismatched == 0 && repeated == 0;
    (
        json!({
            "installs": events.len(),
            "events_checked": checked,
            "mismatched": mismatched,
            "seq_stored_twice": repeated,
            "interrupted_stored": interrupted_stored,
            "examples": examples,
            "ok": ok,
        }),
        ok,
    )
}

/// The attribution check: events per user on the collector (after
/// stitching) against each user's devices' ledgers.
fn attribution_check(
    users: &[(String, Ledger)],
    events: &BTreeMap<String, Vec<StoredEvent>>,
) -> (Value, bool) {
    let mut per_user: BTreeMap<&str, Ledger> = BTreeMap::new();
    for (user, ledger) in users {
        per_user.entry(user).or_default().merge(ledger);
    }
    let mut ok = true;
    let mut misattributed = 0u64;
    let mut users_exact = 0usize;
    let mut failures = Vec::new();
    for (user, l) in &per_user {
        // `unstitched`: events left on their install although the
        // collector stored that install's identify, which links every
        // event of the install to the user whatever the arrival order.
        let (mut attributed, mut anonymous, mut unstitched) = (0u64, 0u64, 0u64);
        for install in &l.installs {
            let stored: Vec<&StoredEvent> = events
                .get(install)
                .into_iter()
                .flatten()
                .filter(|e| !is_internal_event(&e.label))
                .collect();
            let identified = stored.iter().any(|e| e.label == super::ledger::IDENTIFY);
            for e in stored {
                if e.person == *user {
                    attributed += 1;
                } else if e.person == *install {
                    anonymous += 1;
                    unstitched += u64::from(identified);
                } else {
                    misattributed += 1;
                }
            }
        }
        let (min, max) = bounds(l);
        let counted = attributed + anonymous;
        let user_exact = exact(l);
        let user_ok = if user_exact {
            users_exact += 1;
            anonymous == 0 && attributed == max
        } else {
            // An install whose identify was dropped, or died in doubt with
            // a killed process, keeps its events anonymous: that is
            // explained. A stored identify leaves no excuse.
            (min..=max).contains(&counted) && unstitched == 0
        };
        if !user_ok {
            ok = false;
            if failures.len() < 5 {
                failures.push(json!({
                    "user": user,
                    "counted_for_user": attributed,
                    "counted_for_install_only": anonymous,
                    "unstitched_after_identify": unstitched,
                    "expected_min": min,
                    "expected_max": max,
                }));
            }
        }
    }
    ok &= misattributed == 0;
    (
        json!({
            "users": per_user.len(),
            "users_exact": users_exact,
            "misattributed": misattributed,
            "failures": failures,
            "ok": ok,
        }),
        ok,
    )
}

/// Builds the report from the run's inputs.
pub fn build(i: Inputs<'_>) -> Report {
    use std::sync::atomic::Ordering::Relaxed;
    let l = i.ledger;
    let internal: u64 = [DROPPED_EVENT, HEALTH_EVENT]
        .iter()
        .map(|n| name_delta(&i, n).0)
        .sum();
    let counted = delta(i.after.accepted, i.before.accepted).saturating_sub(internal);
    let duplicates_suppressed = delta(i.after.duplicate, i.before.duplicate);
    let (expected_min, expected_max) = bounds(l);
    let double_counted = counted.saturating_sub(expected_max);
    let drained = l.pending == 0;
    let missing: u64 = if drained {
        i.installs.values().map(|f| f.missing).sum()
    } else {
        0
    };
    let unexplained = expected_min.saturating_sub(counted).max(missing);

    // Per event name: the collector's count over the run may not exceed
    // what the devices tracked under that name, and with nothing dropped,
    // pending or in doubt it must equal it (less double-tapped orders).
    let exact_run = exact(l);
    let mut names_ok = true;
    let by_name: Vec<Value> = l
        .tracked_by_name
        .iter()
        .map(|(name, &tracked)| {
            let (counted, users, before) = name_delta(&i, name);
            let expected = if name == "purchase" {
                tracked.saturating_sub(l.business_duplicates)
            } else {
                tracked
            };
            let ok = if exact_run {
                counted == expected
            } else {
                counted <= expected
            };
            names_ok &= ok;
            json!({
                "event": name,
                "tracked": tracked,
                "expected": expected,
                "counted": counted,
                "users": if before == 0 { json!(users) } else { Value::Null },
                "ok": ok,
            })
        })
        .collect();

    let installs_with_gaps = i.installs.values().filter(|f| f.missing > 0).count();
    // Every seq a tracker handed out must have reached the collector,
    // stored or reported dropped: its max_seq cannot be behind the device's.
    let installs_behind = l
        .max_seq
        .iter()
        .filter(|(id, &seq)| i.installs.get(*id).map_or(seq > 0, |f| f.max_seq < seq))
        .count();
    let completeness_ok = !drained || (installs_with_gaps == 0 && installs_behind == 0);

    let (order, order_ok, attribution, attribution_ok) = match i.install_events {
        Some(events) => {
            let (order, order_ok) = order_check(l, events);
            let (attribution, attribution_ok) = attribution_check(i.users, events);
            (order, order_ok, attribution, attribution_ok)
        }
        None => (
            json!({"skipped": "storm mode: per-install reads scan the events table"}),
            true,
            json!({"skipped": "storm mode: per-install reads scan the events table"}),
            true,
        ),
    };

    let sent = i.traffic.sent.load(Relaxed);
    let rate_limited = i.traffic.rate_limited.load(Relaxed);
    let server_errors = i.traffic.server_errors.load(Relaxed);
    let failed = i.traffic.failed.load(Relaxed);
    let early_retries = i.traffic.early_retries.load(Relaxed);
    // Every failed attempt is sent again (the fleet drained), so failed
    // attempts are the retries.
    let retries = rate_limited + server_errors + failed;
    let per_counted = |n: u64| {
        if counted > 0 {
            n as f64 / counted as f64
        } else {
            0.0
        }
    };
    let drained_devices_ok = i.storm.is_none_or(|p| p.drained_devices == i.devices);
    let identity = Identity::of(l, counted, i.installs, i.install_events);
    let ok = unexplained == 0
        && identity.holds()
        && double_counted == 0
        && names_ok
        && completeness_ok
        && order_ok
        && attribution_ok
        && drained_devices_ok;

    let storm_profile = i.storm.map(|p| {
        let tracked = l.tracked.max(1) as f64;
        json!({
            "concurrent_devices": p.concurrency,
            "drained_devices": p.drained_devices,
            "offline_capture_s": p.capture.as_secs_f64(),
            "peak_collector_events_per_s": p.peak_events_per_s,
            "mean_collector_events_per_s": if i.drain.as_secs_f64() > 0.0 { counted as f64 / i.drain.as_secs_f64() } else { 0.0 },
            "sdk_cpu_us_per_event_capture": p.capture_cpu.as_secs_f64() * 1e6 / tracked,
            "sdk_cpu_us_per_event_upload": p.drain_cpu.as_secs_f64() * 1e6 / counted.max(1) as f64,
            "sdk_cpu_method": "CLOCK_PROCESS_CPUTIME_ID of the simulator (all threads, user + system; the collector is another process) over each phase, divided by events tracked (capture) or counted (upload)",
        })
    });

    let json = json!({
        "run_id": i.run_id,
        "mode": match i.mode { super::Mode::Chaos => "chaos", super::Mode::Storm => "storm" },
        "seed": i.seed,
        "devices": i.devices,
        "events_per_device": i.events_per_device,
        "faults": i.faults,
        "tracked": l.tracked,
        "in_doubt": l.in_doubt,
        "counted": counted,
        "duplicates_suppressed": duplicates_suppressed,
        "business_duplicates": l.business_duplicates,
        "pending": l.pending,
        "unexplained": unexplained,
        "double_counted": double_counted,
        "dropped": l.dropped,
        "rejected": l.rejected,
        "refused": l.refused,
        "corrupt": l.corrupt,
        "collector_rejected": delta(i.after.rejected, i.before.rejected),
        "collector_restarts": i.restarts,
        "sdk_reports": internal,
        "checks": {
            "ok": ok,
            "identity": identity.to_json(),
            "by_event": by_name,
            "completeness": {
                "installs": i.installs.len(),
                "installs_with_missing_seq": installs_with_gaps,
                "installs_behind_device": installs_behind,
                "missing_seq": i.installs.values().map(|f| f.missing).sum::<u64>(),
                "reported_dropped": i.installs.values().map(|f| f.dropped).sum::<u64>(),
                "reported_dropped_but_stored": i.installs.values().map(|f| f.dropped_but_stored()).sum::<u64>(),
                "ok": completeness_ok,
            },
            "order": order,
            "attribution": attribution,
        },
        "storm": {
            "requests": sent,
            "peak_requests_per_s": i.traffic.peak_per_second(),
            "rate_limited": rate_limited,
            "server_errors": server_errors,
            "failed": failed,
            "retries": retries,
            "retries_per_event": per_counted(retries),
            "early_retries": early_retries,
            "requests_per_counted_event": per_counted(sent),
            "drain_s": i.drain.as_secs_f64(),
            "profile": storm_profile,
        },
        "scripted_s": i.scripted.as_secs_f64(),
    });
    let mut summary = format!(
        "tally simulate — {mode} mode, seed {seed}, {devices} devices × {epd} events, faults: {faults}\n\
         tracked {tracked}  counted {counted}  duplicates suppressed {dups}  double-tapped orders {biz}  in doubt {doubt}\n\
         dropped on device {dropped:?}  rejected {rejected:?}  refused {refused:?}  pending {pending}\n\
         unexplained {unexplained}  double counted {double}  per-event {names}  completeness {compl}  order {order}  attribution {attr}\n\
         requests {sent} (peak {peak}/s, 429 {rate_limited}, 5xx {server_errors}, failed {failed}, early retries {early_retries}), \
         retries per event {rpe:.3}, collector restarts {restarts}, drain {drain:.1} s",
        mode = json["mode"].as_str().unwrap_or_default(),
        seed = i.seed,
        devices = i.devices,
        epd = i.events_per_device,
        faults = if i.faults.is_empty() { "none" } else { i.faults },
        tracked = l.tracked,
        dups = duplicates_suppressed,
        biz = l.business_duplicates,
        doubt = l.in_doubt,
        dropped = l.dropped,
        rejected = l.rejected,
        refused = l.refused,
        pending = l.pending,
        double = double_counted,
        names = verdict(names_ok),
        compl = verdict(completeness_ok),
        order = if i.install_events.is_some() { verdict(order_ok) } else { "skipped" },
        attr = if i.install_events.is_some() { verdict(attribution_ok) } else { "skipped" },
        peak = i.traffic.peak_per_second(),
        rpe = per_counted(retries),
        restarts = i.restarts.len(),
        drain = i.drain.as_secs_f64(),
    );
    if let Some(p) = i.storm {
        summary.push_str(&format!(
            "\nstorm: {c} devices online at once, {d}/{n} drained; peak {peak:.0} events/s at the collector ({mean:.0} mean); \
             SDK CPU {cap:.1} µs/event offline capture, {up:.1} µs/event upload",
            c = p.concurrency,
            d = p.drained_devices,
            n = i.devices,
            peak = p.peak_events_per_s,
            mean = json["storm"]["profile"]["mean_collector_events_per_s"].as_f64().unwrap_or(0.0),
            cap = json["storm"]["profile"]["sdk_cpu_us_per_event_capture"].as_f64().unwrap_or(0.0),
            up = json["storm"]["profile"]["sdk_cpu_us_per_event_upload"].as_f64().unwrap_or(0.0),
        ));
    }
    summary.push('\n');
    summary.push_str(&identity.line());
    summary.push('\n');
    summary.push_str(if ok {
        "every accepted event is counted once or explained"
    } else {
        "FAILED: the numbers do not add up"
    });
    Report { json, summary, ok }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAILED"
    }
}

#[cfg(test)]
mod tests {
    use super::super::ledger::IDENTIFY;
    use super::*;

    fn stored(seq: u64, label: &str, person: &str) -> StoredEvent {
        StoredEvent {
            seq,
            label: label.to_owned(),
            person: person.to_owned(),
        }
    }

    /// A user's one install: three events and an identify tracked, one of
    /// them in doubt (its process was killed before a flush confirmed it).
    fn ledger() -> Ledger {
        Ledger {
            tracked: 3,
            in_doubt: 1,
            installs: vec!["i1".to_owned()],
            ..Ledger::default()
        }
    }

    /// What the collector stored for the user's one install `i1`.
    fn on_i1(events: &[(u64, &str, &str)]) -> BTreeMap<String, Vec<StoredEvent>> {
        let stored = events
            .iter()
            .map(|&(seq, label, person)| stored(seq, label, person))
            .collect();
        BTreeMap::from([("i1".to_owned(), stored)])
    }

    #[test]
    fn events_stay_anonymous_only_when_the_identify_never_arrived() {
        let users = vec![("u1".to_owned(), ledger())];
        // The identify was the call in doubt: the events keep the install.
        let lost = on_i1(&[(1, "A", "i1"), (2, "B", "i1"), (3, "C", "i1")]);
        let (report, ok) = attribution_check(&users, &lost);
        assert!(ok, "{report}");

        // The identify is stored, yet one event is left on the install.
        let stitched_badly = on_i1(&[(1, "A", "i1"), (2, IDENTIFY, "u1"), (3, "C", "u1")]);
        let (report, ok) = attribution_check(&users, &stitched_badly);
        assert!(!ok);
        assert_eq!(report["failures"][0]["unstitched_after_identify"], 1);
        assert_eq!(report["failures"][0]["counted_for_user"], 2);

        // Stored identify, every event stitched.
        let stitched = on_i1(&[(1, "A", "u1"), (2, IDENTIFY, "u1"), (3, "C", "u1")]);
        let (report, ok) = attribution_check(&users, &stitched);
        assert!(ok, "{report}");

        // Another person's events are never explained.
        let other = on_i1(&[(1, "A", "u2")]);
        let (report, ok) = attribution_check(&users, &other);
        assert!(!ok);
        assert_eq!(report["misattributed"], 1);
    }

    #[test]
    fn an_interrupted_call_may_sit_at_an_unseen_seq_once_under_its_own_name() {
        let mut l = Ledger::default();
        l.capture("i1", Some("A"), 1);
        l.interrupt("i1", Some("B"));
        assert_eq!(l.in_doubt, 1);

        let (report, ok) = order_check(&l, &on_i1(&[(1, "A", "i1"), (2, "B", "i1")]));
        assert!(ok, "{report}");
        assert_eq!(report["interrupted_stored"], 1);
        assert_eq!(report["mismatched"], 0);

        // Not under another name, and not twice.
        let (report, ok) = order_check(&l, &on_i1(&[(1, "A", "i1"), (2, "C", "i1")]));
        assert!(!ok);
        assert_eq!(report["mismatched"], 1);
        let twice = on_i1(&[(1, "A", "i1"), (2, "B", "i1"), (3, "B", "i1")]);
        let (report, ok) = order_check(&l, &twice);
        assert!(!ok);
        assert_eq!(report["interrupted_stored"], 1);
        assert_eq!(report["mismatched"], 1);

        // A confirmed seq holding another name is a mismatch, interrupted
        // or not; a seq captured in doubt may have been taken again.
        let (report, ok) = order_check(&l, &on_i1(&[(1, "B", "i1")]));
        assert!(!ok);
        assert_eq!(report["mismatched"], 1);
        l.capture_in_doubt("i1", Some("C"), 2);
        let (report, ok) = order_check(&l, &on_i1(&[(1, "A", "i1"), (2, "B", "i1")]));
        assert!(ok, "{report}");
        assert_eq!(report["interrupted_stored"], 1);
    }
}
