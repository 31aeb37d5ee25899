//! The SDK's errors: why a message was refused at the call ([`Refusal`],
//! and [`PlanRefusal`] for the tracking plan's checks), why the tracker
//! could not be built ([`BuildError`]), why a flush did not complete
//! ([`FlushError`]) and why a shutdown did not finish cleanly
//! ([`ShutdownError`]).
//!
//! They sit below every thread's module (the capture path, the pipeline,
//! the uploader and the API all name them) and name nothing of those in
//! turn. A refusal's [`Refusal::code`] is the key it is counted under in
//! `health().refused`: those codes never change meaning.

use tally_proto::RejectReason;

use crate::config::MAX_PROPERTY_COUNT;
use crate::install_state::StateError;

/// Why a message was refused at the call. A refused message takes no
/// sequence number and is counted in `health().refused`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The message breaks a rule the collector would reject it for.
    #[error("invalid message: {0}")]
    Invalid(RejectReason),
    /// More properties than [`MAX_PROPERTY_COUNT`].
    #[error("more than {MAX_PROPERTY_COUNT} properties")]
    TooManyProperties,
    /// The hand-off queue is full: its byte budget (see
    /// [`crate::config::DEFAULT_QUEUE_BUDGET_BYTES`]) or its message
    /// capacity is reached while the pipeline is behind.
    #[error("queue full")]
    QueueFull,
    /// Consent is denied.
    #[error("consent denied")]
    ConsentDenied,
    /// Consent is pending and the tracker is configured to store nothing
    /// until it is granted.
    #[error("consent pending")]
    ConsentPending,
    /// The tracker was shut down (or its pipeline thread is gone).
    #[error("tracker shut down")]
    ShutDown,
    /// The message names a session that does not exist: never started by
    /// this install, or already ended (inactivity, `reset()`, a restart
    /// after the timeout). See [`crate::pipeline::session`].
    #[error("unknown or ended session")]
    UnknownSession,
    /// The event breaks the tracking plan the tracker was given (the
    /// `plan` feature's `TrackerBuilder::tracking_plan`, for development
    /// builds): the rule and where, never the value.
    #[error("tracking plan: {0}")]
    Plan(Box<PlanRefusal>),
}

/// Why the tracking plan refused an event at the call: what the
/// collector's dead letter would say of it in `enforce` mode, and never a
/// property's value (the event's content).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanRefusal {
    /// The properties break the schema of the version the event names
    /// (the latest version when it names none).
    #[error("{event} v{version}: {rule} at {}{}", display_path(.path), more(*.count))]
    Violation {
        /// The event name.
        event: String,
        /// The version it was judged by.
        version: u32,
        /// The JSON Schema keyword that failed first (`required`, `type`,
        /// `enum`, `maximum`, `format`, `additionalProperties`, ...).
        rule: String,
        /// JSON pointer into the properties to the failing value: the
        /// missing property for `required`, the unexpected one for
        /// `additionalProperties`; `""` is the properties object itself.
        path: String,
        /// How many violations there are in all (1 or more).
        count: usize,
    },
    /// The plan has no event of that name, and the tracker refuses
    /// unplanned events.
    #[error("{event}: not in the tracking plan")]
    Unplanned {
        /// The event name.
        event: String,
    },
    /// The event names a version the plan does not have: the code that
    /// tracked it was generated from another plan than the one loaded.
    #[error("{event}: version {version} is not in the tracking plan")]
    UnknownVersion {
        /// The event name.
        event: String,
        /// The version it named.
        version: u32,
    },
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

fn more(count: usize) -> String {
    match count {
        0 | 1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    }
}

impl PlanRefusal {
    /// The code counted in `health().refused`: `plan_violation` (the
    /// collector's reject reason for the same event), `unplanned` or
    /// `unknown_version` (the collector's finding).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Violation { .. } => "plan_violation",
            Self::Unplanned { .. } => "unplanned",
            Self::UnknownVersion { .. } => "unknown_version",
        }
    }
}

impl Refusal {
    /// The reason code counted in health.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(r) => r.as_str(),
            Self::TooManyProperties => "too_many_properties",
            Self::QueueFull => "queue_full",
            Self::ConsentDenied => "consent_denied",
            Self::ConsentPending => "consent_pending",
            Self::ShutDown => "shut_down",
            Self::UnknownSession => "unknown_session",
            Self::Plan(p) => p.code(),
        }
    }
}

/// Why the tracker could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The SDK state in the data directory could not be read or created.
    #[error("SDK state: {0}")]
    State(#[from] StateError),
    /// The durable log could not be opened.
    #[error("event log: {0}")]
    Log(String),
    /// The trusted CA certificates given to the builder are unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A background thread could not be started.
    #[error("could not start a thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The endpoint is plain `http://` to a host that is not loopback, and
    /// [`crate::TrackerBuilder::allow_insecure_http`] was not set: events and the
    /// write key would cross the network unencrypted.
    #[error(
        "refusing plain http:// to {0}: events and the write key would travel unencrypted; \
         use https://, or allow_insecure_http(true) on a network you trust"
    )]
    InsecureEndpoint(String),
}

/// Why a flush (or a consent change that purges) did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The log could not make the data durable (the message is the log's
    /// error).
    #[error("log flush failed: {0}")]
    Log(String),
    /// The pipeline thread is gone (the tracker was shut down).
    #[error("tracker shut down")]
    ShutDown,
}

/// Why shutdown did not finish cleanly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The final flush failed; what it did not persist is lost.
    #[error(transparent)]
    Flush(#[from] FlushError),
    /// The background threads did not stop within the timeout (they are
    /// left to finish on their own).
    #[error("background threads still running after the timeout")]
    Timeout,
}
