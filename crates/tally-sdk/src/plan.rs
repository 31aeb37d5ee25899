//! The tracking plan on the device (feature `plan`): a development build
//! judges each track event against the app's plan at the call, so a
//! violation is a typed [`Refusal::Plan`] in the developer's hands instead
//! of a dead letter at the collector weeks later.
//!
//! The feature is off by default: a release build carries no JSON Schema
//! engine, and `track()` does nothing more than without it. With the
//! feature on and no plan given, a call costs one branch more.
//!
//! What is judged is what the collector judges (`tally-collector`'s
//! `plan` module): track events only (a screen, a page or an identify
//! names no planned event), by the version the call names in
//! [`crate::TrackOptions::event_version`], or by the latest version when
//! it names none. The check runs on the caller's thread after the limits
//! and before the capture path, so a refused event takes no `seq` and
//! nothing of it is stored; it is counted in `health().refused` under its
//! code ([`PlanRefusal::code`]).
//!
//! | finding | at the call |
//! |---|---|
//! | the properties break the version's schema | refused: `plan_violation`, with the rule and the JSON pointer (never the value) |
//! | a version the plan lacks | refused: `unknown_version` (the calling code was generated from another plan) |
//! | an event the plan lacks | accepted, or refused as `unplanned` with [`PlanCheck::refuse_unplanned`] |
//! | a deprecated event | accepted (the collector accepts and counts it) |
//!
//! [`Refusal::Plan`]: crate::Refusal::Plan

use std::sync::Arc;

use tally_plan::Verdict;
pub use tally_plan::{CompiledPlan, LoadError, Plan};

use crate::error::PlanRefusal;

/// A plan to judge track events by, and what to do with unplanned ones.
/// Given to [`crate::TrackerBuilder::tracking_plan`].
#[derive(Debug, Clone)]
pub struct PlanCheck {
    plan: Arc<CompiledPlan>,
    refuse_unplanned: bool,
}

impl PlanCheck {
    /// Judges track events by `plan`; unplanned events are accepted.
    pub fn new(plan: impl Into<Arc<CompiledPlan>>) -> Self {
        Self {
            plan: plan.into(),
            refuse_unplanned: false,
        }
    }

    /// Reads and compiles the plan file at `path` (YAML, or JSON for a
    /// `.json` file).
    pub fn load(path: &std::path::Path) -> Result<Self, LoadError> {
        Ok(Self::new(CompiledPlan::load(path)?))
    }

    /// Refuse events the plan does not have (`unplanned`), instead of
    /// accepting them as the collector does (default: accept).
    pub fn refuse_unplanned(mut self, refuse: bool) -> Self {
        self.refuse_unplanned = refuse;
        self
    }

    /// The plan.
    pub fn plan(&self) -> &CompiledPlan {
        &self.plan
    }

    /// Judges track event `event` with properties `props` (a JSON object's
    /// text) naming `version`.
    pub(crate) fn judge(
        &self,
        event: &str,
        version: Option<u32>,
        props: &str,
    ) -> Result<(), PlanRefusal> {
        match self.plan.validate_json(event, version, props) {
            Verdict::Violation { first, count } => Err(PlanRefusal::Violation {
                event: event.to_owned(),
                version: version
                    .or_else(|| self.plan.event(event).map(|e| e.latest_version()))
                    .unwrap_or(0),
                rule: first.rule,
                path: first.path,
                count,
            }),
            Verdict::UnknownVersion { version } => Err(PlanRefusal::UnknownVersion {
                event: event.to_owned(),
                version,
            }),
            Verdict::Unplanned if self.refuse_unplanned => Err(PlanRefusal::Unplanned {
                event: event.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}
