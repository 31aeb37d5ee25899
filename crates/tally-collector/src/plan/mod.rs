//! The tracking plan at the collector: each source's events judged against
//! the plan (see `tally_plan`), in the mode its source is given.
//!
//! | mode | a track event that breaks its version's schema | other findings |
//! |---|---|---|
//! | `enforce` | rejected: `plan_violation`, the dead letter naming the version, rule and path | accepted and counted |
//! | `warn` | accepted and counted | accepted and counted |
//! | `off` | not checked | not checked |
//!
//! The other findings are `unplanned` (no such event in the plan),
//! `unknown_version` (the event names a version the loaded plan lacks: an
//! app built against a newer plan; rejecting it would lose data the next
//! plan accepts) and `deprecated`. Only track events are judged: the plan
//! names events. Tally's own events (`tally.dropped`, `tally.health`: the
//! reserved `tally.` namespace, which no plan can name) are not judged
//! either: the envelope's rules validate them as before, and they are
//! never counted as unplanned.
//!
//! An event is judged by the version it names (`context.tally.
//! event_version`), so a device that stayed offline since an older app
//! version sends events that stay valid; one that names none is judged by
//! the latest version.
//!
//! # Reload
//!
//! The file is read at start (a plan that does not load stops the start)
//! and read again whenever its content changes, checked every
//! [`RELOAD_INTERVAL`], or at once through `POST /v1/plan/reload`. A plan
//! that does not load on reload leaves the previous one in force and is
//! counted (`tally_plan_reloads_total{outcome="failed"}`). Each ingest
//! request takes the plan in force once, before it judges any message, so
//! every message of one batch is judged by one plan.

pub mod metrics;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tally_plan::{naming, CompiledPlan, Format, Plan, Verdict};
use tally_proto::{Message, MessageType};

/// What [`Plans`] remembers of a file it could not read.
const UNREADABLE: &str = "unreadable";

/// How often the plan file is checked for a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// What the collector does with a source's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Violations are rejected (`plan_violation`).
    Enforce,
    /// Violations are accepted and counted.
    #[default]
    Warn,
    /// Nothing is checked.
    Off,
}

impl Mode {
    /// The mode's name in `tally.toml` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Off => "off",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<Mode, PlanError> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "warn" => Ok(Mode::Warn),
            "off" => Ok(Mode::Off),
            other => Err(PlanError::Mode(other.to_owned())),
        }
    }
}

/// The `[plan]` table of `tally.toml`; every member optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSettings {
    /// The plan file (YAML or JSON).
    pub file: Option<PathBuf>,
    /// The mode of every source not named in `sources` (default `warn`).
    pub mode: Option<Mode>,
    /// Modes by source id (`wk_…`, as `/metrics` and `tally keys` name
    /// them).
    pub sources: Option<BTreeMap<String, Mode>>,
}

impl PlanSettings {
    /// These settings, with each missing one taken from `lower`.
    pub fn or(self, lower: PlanSettings) -> PlanSettings {
        PlanSettings {
            file: self.file.or(lower.file),
            mode: self.mode.or(lower.mode),
            sources: self.sources.or(lower.sources),
        }
    }
}

/// Why the plan is not in force.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The file could not be read.
    #[error("cannot read the plan {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a plan that compiles.
    #[error("the plan {path} does not load: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What `tally plan check` would say first.
        message: String,
    },
    /// An unknown mode.
    #[error("{0:?} is not a plan mode: enforce, warn or off")]
    Mode(String),
}

/// A plan in force.
#[derive(Debug)]
pub struct LoadedPlan {
    /// The compiled plan.
    pub compiled: CompiledPlan,
    /// SHA-256 of the file's bytes, hex.
    pub digest: String,
    /// When it was loaded, Unix ms.
    pub loaded_at: i64,
}

/// The plan in force and the modes of the sources; shared by the ingest
/// path, the reloader and the API.
#[derive(Debug)]
pub struct Plans {
    file: PathBuf,
    default_mode: Mode,
    sources: BTreeMap<String, Mode>,
    current: RwLock<Arc<LoadedPlan>>,
    /// The digest of the last content that did not load: reported once,
    /// not at every check.
    failed: Mutex<Option<String>>,
}

/// What the plan found in one message, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The event's name when the plan has it (bounded by the plan), or
    /// `None` for an unplanned one (any name a client sends).
    pub event: Option<String>,
    /// `unplanned`, `unknown_version`, `deprecated` or `plan_violation`.
    pub finding: &'static str,
    /// Whether the event was rejected for it.
    pub rejected: bool,
    /// The event's name as sent (an unplanned one too), for the quality
    /// counts the store keeps.
    pub name: String,
    /// The version it was judged by (the one it names, else the plan's
    /// latest; 0 for an unplanned event).
    pub version: u32,
    /// The schema keyword of the first violation (`required`, `type`,
    /// ...); empty for the other findings.
    pub rule: String,
    /// Where in the properties the first violation is (a JSON pointer,
    /// `/` for the object itself); empty for the other findings.
    pub path: String,
    /// The finding in words: the rule and where, never a value.
    pub detail: String,
}

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Store it (a finding, if any, is counted).
    Accept(Option<Finding>),
    /// Reject it as `plan_violation`, with this detail.
    Reject(Finding, String),
}

/// The file's bytes and their digest.
fn read(path: &Path) -> Result<(Vec<u8>, String), PlanError> {
    let bytes = std::fs::read(path).map_err(|source| PlanError::Read {
        path: path.to_owned(),
        source,
    })?;
    let digest = hex(&Sha256::digest(&bytes));
    Ok((bytes, digest))
}

fn compile(path: &Path, bytes: &[u8]) -> Result<CompiledPlan, PlanError> {
    let load_error = |message: String| PlanError::Load {
        path: path.to_owned(),
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| load_error(e.to_string()))?;
    Plan::parse(text, Format::of_path(path))
        .and_then(CompiledPlan::compile)
        .map_err(|e| load_error(e.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Plans {
    /// Loads the plan `settings` name, or `None` when they name no file.
    pub fn start(settings: &PlanSettings, now_ms: i64) -> Result<Option<Plans>, PlanError> {
        let Some(file) = settings.file.clone() else {
            return Ok(None);
        };
        let (bytes, digest) = read(&file)?;
        let compiled = compile(&file, &bytes)?;
        Ok(Some(Plans {
            file,
            default_mode: settings.mode.unwrap_or_default(),
            sources: settings.sources.clone().unwrap_or_default(),
            current: RwLock::new(Arc::new(LoadedPlan {
                compiled,
                digest,
                loaded_at: now_ms,
            })),
            failed: Mutex::new(None),
        }))
    }

    /// The plan in force now.
    pub fn current(&self) -> Arc<LoadedPlan> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The mode of `source`'s events.
    pub fn mode(&self, source: &str) -> Mode {
        self.sources
            .get(source)
            .copied()
            .unwrap_or(self.default_mode)
    }

    /// The mode of sources not named.
    pub fn default_mode(&self) -> Mode {
        self.default_mode
    }

    /// The modes of the sources named.
    pub fn source_modes(&self) -> &BTreeMap<String, Mode> {
        &self.sources
    }

    /// The plan file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Reads the file again and puts it in force if its content changed;
    /// whether it did. A plan that does not load leaves the one in force,
    /// and is an error once: the same content again is no change (the
    /// periodic check reports a broken file once, not at every check).
    pub fn reload(&self, now_ms: i64) -> Result<bool, PlanError> {
        self.reload_as(now_ms, false)
    }

    /// [`Plans::reload`] asked for (`POST /v1/plan/reload`): content that
    /// does not load is an error every time.
    pub fn reload_now(&self, now_ms: i64) -> Result<bool, PlanError> {
        self.reload_as(now_ms, true)
    }

    fn reload_as(&self, now_ms: i64, asked: bool) -> Result<bool, PlanError> {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let (bytes, digest) = match read(&self.file) {
            Ok(read) => read,
            // An editor saving by rename leaves no file for a moment.
            Err(_) if !asked && failed.as_deref() == Some(UNREADABLE) => return Ok(false),
            Err(e) => {
                *failed = Some(UNREADABLE.to_owned());
                return Err(e);
            }
        };
        let known_failure = failed.as_deref() == Some(digest.as_str());
        if digest == self.current().digest || (known_failure && !asked) {
            return Ok(false);
        }
        match compile(&self.file, &bytes) {
            Ok(compiled) => {
                *failed = None;
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(LoadedPlan {
                    compiled,
                    digest,
                    loaded_at: now_ms,
                });
                Ok(true)
            }
            Err(e) => {
                *failed = Some(digest);
                Err(e)
            }
        }
    }
}

/// One request's view of the plan: the plan in force when it started and
/// its source's mode.
#[derive(Debug, Clone)]
pub struct PlanCheck {
    plan: Arc<LoadedPlan>,
    mode: Mode,
}

impl PlanCheck {
    /// The check of `source`'s request, or `None` when its mode is `off`.
    pub fn for_source(plans: &Plans, source: &str) -> Option<PlanCheck> {
        match plans.mode(source) {
            Mode::Off => None,
            mode => Some(PlanCheck {
                plan: plans.current(),
                mode,
            }),
        }
    }

    /// What to do with `msg` (already valid by the envelope's rules).
    pub fn judge(&self, msg: &Message) -> Judgement {
        if msg.kind != Some(MessageType::Track) {
            return Judgement::Accept(None);
        }
        let Some(name) = Message::non_empty(&msg.event) else {
            return Judgement::Accept(None);
        };
        if naming::is_reserved(name) {
            return Judgement::Accept(None);
        }
        let version = msg.tally().and_then(|t| t.event_version);
        let properties = msg.properties.as_ref().map_or("{}", |p| p.get());
        let verdict = self.plan.compiled.validate_json(name, version, properties);
        let judged_version = version
            .or_else(|| self.plan.compiled.event(name).map(|e| e.latest_version()))
            .unwrap_or(0);
        let (rule, path, detail) = match &verdict {
            Verdict::Violation { first, count } => {
                let more = match count {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                };
                let path = if first.path.is_empty() {
                    "/".to_owned()
                } else {
                    first.path.clone()
                };
                // The rule and where: never the value, which is the
                // event's content.
                let detail = format!("{name} v{judged_version}: {} at {path}{more}", first.rule);
                (first.rule.clone(), path, detail)
            }
            other => (
                String::new(),
                String::new(),
                format!("{name} v{judged_version}: {}", other.code()),
            ),
        };
        let finding = |rejected| Finding {
            event: match verdict {
                Verdict::Unplanned => None,
                _ => Some(name.to_owned()),
            },
            finding: verdict.code(),
            rejected,
            name: name.to_owned(),
            version: judged_version,
            rule: rule.clone(),
            path: path.clone(),
            detail: detail.clone(),
        };
        match &verdict {
            Verdict::Ok => Judgement::Accept(None),
            Verdict::Violation { .. } if self.mode == Mode::Enforce => {
                Judgement::Reject(finding(true), detail.clone())
            }
            _ => Judgement::Accept(Some(finding(false))),
        }
    }
}

/// Checks the plan file every [`RELOAD_INTERVAL`] until the process ends,
/// putting a changed plan in force; `count` gets the outcome of each
/// reload (`ok`, `failed`), for [`metrics::PlanMetrics::reload`].
pub fn spawn_reloader(
    plans: Arc<Plans>,
    count: impl Fn(&'static str) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            let plans = plans.clone();
            let result =
                tokio::task::spawn_blocking(move || plans.reload(crate::clock::now_ms())).await;
            match result {
                Ok(Ok(true)) => {
                    count("ok");
                    tracing::info!("the tracking plan changed and is in force");
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    count("failed");
                    tracing::warn!(error = %e, "the changed tracking plan does not load; the previous one stays in force");
                }
                Err(e) => tracing::error!(error = %e, "plan reload task failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const V1: &str = "name: t\nevents:\n  - name: Item Added\n    versions:\n      - version: 1\n        properties: {type: object, required: [sku]}\n";
    const V2: &str = "name: t\nevents:\n  - name: Item Added\n    versions:\n      - version: 1\n        properties: {type: object, required: [sku]}\n      - version: 2\n        properties: {type: object, required: [sku, qty]}\n";

    fn message(json: &str) -> Message {
        serde_json::from_str(json).unwrap()
    }

    fn plans(dir: &Path, text: &str, mode: Mode) -> Plans {
        let file = dir.join("plan.yaml");
        std::fs::write(&file, text).unwrap();
        let settings = PlanSettings {
            file: Some(file),
            mode: Some(mode),
            sources: Some([("wk_off".to_owned(), Mode::Off)].into_iter().collect()),
        };
        Plans::start(&settings, 1).unwrap().unwrap()
    }

    #[test]
    fn a_request_keeps_the_plan_it_started_with() {
        let dir = tempfile::tempdir().unwrap();
        let plans = plans(dir.path(), V1, Mode::Enforce);
        let v2 = message(
            r#"{"type":"track","event":"Item Added","properties":{"sku":"a"},"context":{"tally":{"event_version":2}}}"#,
        );
        let before = PlanCheck::for_source(&plans, "wk_a").unwrap();
        std::fs::write(plans.file(), V2).unwrap();
        assert!(plans.reload(2).unwrap());
        assert!(!plans.reload(3).unwrap(), "the same content is no change");
        let after = PlanCheck::for_source(&plans, "wk_a").unwrap();
        // Judged by the plan in force when each request started.
        let unknown = Finding {
            event: Some("Item Added".to_owned()),
            finding: "unknown_version",
            rejected: false,
            name: "Item Added".to_owned(),
            version: 2,
            rule: String::new(),
            path: String::new(),
            detail: "Item Added v2: unknown_version".to_owned(),
        };
        assert_eq!(before.judge(&v2), Judgement::Accept(Some(unknown)));
        let rejected = Finding {
            event: Some("Item Added".to_owned()),
            finding: "plan_violation",
            rejected: true,
            name: "Item Added".to_owned(),
            version: 2,
            rule: "required".to_owned(),
            path: "/qty".to_owned(),
            detail: "Item Added v2: required at /qty".to_owned(),
        };
        assert_eq!(
            after.judge(&v2),
            Judgement::Reject(rejected, "Item Added v2: required at /qty".to_owned())
        );
        assert_eq!(plans.current().loaded_at, 2);
        // A source whose mode is off is not checked at all.
        assert!(PlanCheck::for_source(&plans, "wk_off").is_none());
    }

    #[test]
    fn a_broken_file_is_reported_once_and_the_plan_in_force_stays() {
        let dir = tempfile::tempdir().unwrap();
        let plans = plans(dir.path(), V1, Mode::Warn);
        let digest = plans.current().digest.clone();
        std::fs::write(plans.file(), "events: [").unwrap();
        assert!(matches!(plans.reload(2), Err(PlanError::Load { .. })));
        assert!(!plans.reload(3).unwrap(), "reported once");
        assert!(matches!(plans.reload_now(4), Err(PlanError::Load { .. })));
        std::fs::remove_file(plans.file()).unwrap();
        assert!(matches!(plans.reload(5), Err(PlanError::Read { .. })));
        assert!(!plans.reload(6).unwrap(), "a missing file is reported once");
        assert_eq!(plans.current().digest, digest);
        std::fs::write(plans.file(), V2).unwrap();
        assert!(plans.reload(7).unwrap());
    }

    #[test]
    fn only_track_events_are_judged_and_warn_never_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let plans = plans(dir.path(), V1, Mode::Warn);
        let check = PlanCheck::for_source(&plans, "wk_a").unwrap();
        let screen = message(r#"{"type":"screen","name":"Item Added"}"#);
        assert_eq!(check.judge(&screen), Judgement::Accept(None));
        let bad = message(r#"{"type":"track","event":"Item Added","properties":{}}"#);
        let Judgement::Accept(Some(finding)) = check.judge(&bad) else {
            panic!("warn accepts")
        };
        assert_eq!(finding.finding, "plan_violation");
        let good = message(r#"{"type":"track","event":"Item Added","properties":{"sku":"x"}}"#);
        assert_eq!(check.judge(&good), Judgement::Accept(None));
        // Tally's own events are not the plan's: no finding, not even
        // `unplanned`; a name merely like them is unplanned.
        for own in ["tally.health", "tally.dropped"] {
            let msg = message(&format!(
                r#"{{"type":"track","event":"{own}","properties":{{}}}}"#
            ));
            assert_eq!(check.judge(&msg), Judgement::Accept(None), "{own}");
        }
        let lookalike = message(r#"{"type":"track","event":"tally_health"}"#);
        let Judgement::Accept(Some(finding)) = check.judge(&lookalike) else {
            panic!("unplanned")
        };
        assert_eq!((finding.finding, finding.event), ("unplanned", None));
        assert_eq!("enforce".parse::<Mode>().unwrap(), Mode::Enforce);
        assert!("strict".parse::<Mode>().is_err());
    }
}
