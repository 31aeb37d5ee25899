//! Reading the collector, checking the ledger against it, and the report.
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
//! - `expected_max = tracked − business_duplicates − rejected`
//! - `expected_min = expected_max − dropped − pending`
//! - `double_counted = max(0, counted − expected_max)`
//! - `unexplained = max(max(0, expected_min − counted), missing)` where
//!   `missing` counts the sequence numbers the collector reports missing
//!   (neither stored nor reported dropped) for installs with nothing left
//!   pending: a loss that an extra count elsewhere would hide in the sum
//!   still shows there.
//!
//! `counted` is the change of the collector's `accepted` total over the
//! run, less the SDK's own `tally.dropped` and `tally.health` reports.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::faults::Traffic;
use super::ledger::Ledger;

/// Event names whose counts the report checks (the scenario's, and the
/// SDK's own reports that must be subtracted).
pub fn event_names() -> Vec<&'static str> {
    vec![
        "app_open",
        "view_item",
        "add_to_cart",
        "purchase",
        "Home",
        "Search",
        "Item",
        "Cart",
        "tally.dropped",
        "tally.health",
    ]
}

/// The collector's figures at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
    /// `(count, users)` per event name.
    pub by_name: BTreeMap<String, (u64, u64)>,
}

/// An install's completeness as the collector reports it.
#[derive(Debug, Clone, Default)]
pub struct InstallFigures {
    pub max_seq: u64,
    pub missing: u64,
    pub dropped: u64,
}

/// Admin reads against the collector(s).
pub struct Client {
    endpoint: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// Reads go to the first endpoint: collectors behind one simulator share
    /// one store.
    pub fn new(endpoints: &[String], token: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Self {
            endpoint: endpoints
                .first()
                .cloned()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned(),
            token: token.to_owned(),
            agent,
        }
    }

    fn get(&self, path_and_query: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path_and_query}", self.endpoint);
        let mut response = self
            .agent
            .get(&url)
            .header("authorization", &format!("Bearer {}", self.token))
            .call()?;
        let text = response.body_mut().read_to_string()?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Totals and per-name counts.
    pub fn snapshot(&self, names: &[&str]) -> anyhow::Result<Snapshot> {
        let stats = self.get("/v1/stats")?;
        let mut snap = Snapshot {
            accepted: stats["accepted"].as_u64().unwrap_or(0),
            duplicate: stats["duplicate"].as_u64().unwrap_or(0),
            rejected: stats["rejected"].as_u64().unwrap_or(0),
            by_name: BTreeMap::new(),
        };
        for name in names {
            let v = self.get(&format!("/v1/events/count?event={}", encode(name)))?;
            snap.by_name.insert(
                (*name).to_owned(),
                (
                    v["count"].as_u64().unwrap_or(0),
                    v["users"].as_u64().unwrap_or(0),
                ),
            );
        }
        Ok(snap)
    }

    /// Completeness of each install the collector knows.
    pub fn installs(&self, ids: &[String]) -> BTreeMap<String, InstallFigures> {
        ids.iter()
            .filter_map(|id| {
                let v = self.get(&format!("/v1/installs/{}", encode(id))).ok()?;
                let missing = v["missing"]
                    .as_array()
                    .map(|ranges| {
                        ranges
                            .iter()
                            .map(|r| {
                                let from = r[0].as_u64().unwrap_or(0);
                                let to = r[1].as_u64().unwrap_or(0);
                                to.saturating_sub(from) + 1
                            })
                            .sum()
                    })
                    .unwrap_or(0);
                Some((
                    id.clone(),
                    InstallFigures {
                        max_seq: v["max_seq"].as_u64().unwrap_or(0),
                        missing,
                        dropped: v["dropped"].as_u64().unwrap_or(0),
                    },
                ))
            })
            .collect()
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Everything the report is made of.
pub struct Inputs<'a> {
    pub run_id: &'a str,
    pub seed: u64,
    pub devices: usize,
    pub events_per_device: usize,
    pub faults: &'a str,
    pub ledger: &'a Ledger,
    pub before: &'a Snapshot,
    pub after: &'a Snapshot,
    pub installs: &'a BTreeMap<String, InstallFigures>,
    pub traffic: &'a Traffic,
    pub scripted: Duration,
    pub drain: Duration,
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

/// Builds the report from the run's inputs.
pub fn build(i: Inputs<'_>) -> Report {
    use std::sync::atomic::Ordering::Relaxed;
    let l = i.ledger;
    let internal: u64 = ["tally.dropped", "tally.health"]
        .iter()
        .map(|n| name_delta(&i, n).0)
        .sum();
    let counted = delta(i.after.accepted, i.before.accepted).saturating_sub(internal);
    let duplicates_suppressed = delta(i.after.duplicate, i.before.duplicate);
    let expected_max = l
        .tracked
        .saturating_sub(l.business_duplicates)
        .saturating_sub(l.rejected_total());
    let expected_min = expected_max
        .saturating_sub(l.dropped_total())
        .saturating_sub(l.pending);
    let double_counted = counted.saturating_sub(expected_max);
    let drained = l.pending == 0;
    let missing: u64 = if drained {
        i.installs.values().map(|f| f.missing).sum()
    } else {
        0
    };
    let unexplained = expected_min.saturating_sub(counted).max(missing);

    // Per event name: the collector's count over the run may not exceed
    // what the devices tracked under that name, and with nothing dropped
    // or pending it must equal it (less double-tapped orders).
    let exact = l.dropped_total() == 0 && l.pending == 0 && l.rejected_total() == 0;
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
            let ok = if exact {
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
    let sent = i.traffic.sent.load(Relaxed);
    let retries_per_event = if counted > 0 {
        sent as f64 / counted.max(1) as f64
    } else {
        0.0
    };
    let ok = unexplained == 0 && double_counted == 0 && names_ok && completeness_ok;

    let json = json!({
        "run_id": i.run_id,
        "seed": i.seed,
        "devices": i.devices,
        "events_per_device": i.events_per_device,
        "faults": i.faults,
        "tracked": l.tracked,
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
        "sdk_reports": internal,
        "checks": {
            "ok": ok,
            "by_event": by_name,
            "completeness": {
                "installs": i.installs.len(),
                "installs_with_missing_seq": installs_with_gaps,
                "installs_behind_device": installs_behind,
                "missing_seq": i.installs.values().map(|f| f.missing).sum::<u64>(),
                "reported_dropped": i.installs.values().map(|f| f.dropped).sum::<u64>(),
                "ok": completeness_ok,
            },
        },
        "storm": {
            "requests": sent,
            "peak_requests_per_s": i.traffic.peak_per_second(),
            "rate_limited": i.traffic.rate_limited.load(Relaxed),
            "server_errors": i.traffic.server_errors.load(Relaxed),
            "failed": i.traffic.failed.load(Relaxed),
            "requests_per_counted_event": retries_per_event,
            "drain_s": i.drain.as_secs_f64(),
        },
        "scripted_s": i.scripted.as_secs_f64(),
    });
    let summary = format!(
        "tally simulate — seed {seed}, {devices} devices × {epd} events, faults: {faults}\n\
         tracked {tracked}  counted {counted}  duplicates suppressed {dups}  double-tapped orders {biz}\n\
         dropped on device {dropped:?}  rejected {rejected:?}  refused {refused:?}  pending {pending}\n\
         unexplained {unexplained}  double counted {double}  per-event checks {names}  completeness {compl}\n\
         requests {sent} (peak {peak}/s, 429 {r429}, 5xx {r5xx}, failed {failed})  drain {drain:.1} s\n\
         {verdict}",
        seed = i.seed,
        devices = i.devices,
        epd = i.events_per_device,
        faults = if i.faults.is_empty() { "none" } else { i.faults },
        tracked = l.tracked,
        dups = duplicates_suppressed,
        biz = l.business_duplicates,
        dropped = l.dropped,
        rejected = l.rejected,
        refused = l.refused,
        pending = l.pending,
        double = double_counted,
        names = if names_ok { "ok" } else { "FAILED" },
        compl = if completeness_ok { "ok" } else { "FAILED" },
        peak = i.traffic.peak_per_second(),
        r429 = i.traffic.rate_limited.load(Relaxed),
        r5xx = i.traffic.server_errors.load(Relaxed),
        failed = i.traffic.failed.load(Relaxed),
        drain = i.drain.as_secs_f64(),
        verdict = if ok {
            "every accepted event is counted once or explained"
        } else {
            "FAILED: the numbers do not add up"
        },
    );
    Report { json, summary, ok }
}
