//! The tracking plan's counters in `/metrics` (listed with the others in
//! [`crate::metrics`]):
//!
//! | metric | type | what |
//! |---|---|---|
//! | `tally_plan_findings_total{source,event,finding,action}` | counter | track events the plan found something in: `finding` is `unplanned` (then `event` is empty: names a client makes up are not labels; the SDKs' own `tally.` events are never judged), `unknown_version`, `deprecated` or `plan_violation`; `action` is `accepted` or `rejected` |
//! | `tally_plan_reloads_total{outcome}` | counter | changed plan files put in force (`ok`) or left out because they do not load (`failed`) |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::Finding;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FindingLabel {
    source: String,
    event: String,
    finding: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    outcome: &'static str,
}

/// The plan's counters.
#[derive(Debug, Default)]
pub struct PlanMetrics {
    findings: Family<FindingLabel, Counter>,
    reloads: Family<ReloadLabel, Counter>,
}

impl PlanMetrics {
    /// Registers the counters under `r` (the `tally_` registry).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "plan_findings",
            "Track events the tracking plan found something in, by source, event, finding and action",
            self.findings.clone(),
        );
        r.register(
            "plan_reloads",
            "Changed tracking plans put in force or left out",
            self.reloads.clone(),
        );
        for outcome in ["ok", "failed"] {
            let _ = self.reloads.get_or_create(&ReloadLabel { outcome });
        }
    }

    /// Counts what the plan found in one event of `source`.
    pub fn finding(&self, source: &str, f: &Finding) {
        self.findings
            .get_or_create(&FindingLabel {
                source: source.to_owned(),
                event: f.event.clone().unwrap_or_default(),
                finding: f.finding,
                action: if f.rejected { "rejected" } else { "accepted" },
            })
            .inc();
    }

    /// Counts a reload: `ok` or `failed`.
    pub fn reload(&self, outcome: &'static str) {
        let _ = self.reloads.get_or_create(&ReloadLabel { outcome }).inc();
    }
}
