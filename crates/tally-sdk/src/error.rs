//! The SDK's errors: why a message was refused at the call
//! ([`Refusal`]), why the tracker could not be built ([`BuildError`]), why
//! a flush did not complete ([`FlushError`]) and why a shutdown did not
//! finish cleanly ([`ShutdownError`]).
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
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
