//! The one error type the bindings see (`TallyException` in Kotlin,
//! `TallyError` in Swift and Python). The refusals carry the Rust SDK's
//! stable codes ([`TallyError::code`]): the same strings count them in
//! `health().refused`.

use tally_sdk::{BuildError, FlushError, PropsError, Refusal, ShutdownError};

/// Why a call failed. Nothing panics across the boundary: a bad argument
/// is one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum TallyError {
    /// Breaks a rule the collector would reject it for; `reason` is the
    /// rejection code (`event_name_too_long`, `properties_too_large`, …).
    #[error("invalid message: {reason}")]
    Invalid { reason: String },
    /// Over 255 top-level properties.
    #[error("more than 255 properties")]
    TooManyProperties,
    /// The hand-off queue's byte budget is used up: the SDK's thread is
    /// behind.
    #[error("queue full")]
    QueueFull,
    /// Refused: consent denied.
    #[error("consent denied")]
    ConsentDenied,
    /// Refused: consent pending, and the tracker stores nothing until it
    /// is granted.
    #[error("consent pending")]
    ConsentPending,
    /// `shutdown` was called.
    #[error("tracker shut down")]
    ShutDown,
    /// Names a session that has ended or never existed.
    #[error("unknown or ended session")]
    UnknownSession,
    /// The properties are not a JSON object, or hold a value JSON cannot
    /// write (NaN, an infinity).
    #[error("invalid properties: {detail}")]
    InvalidProperties { detail: String },
    /// A configuration member is unusable (an empty write key, a data
    /// directory that is not a path).
    #[error("invalid configuration {field}: {detail}")]
    InvalidConfig { field: String, detail: String },
    /// The device's storage failed: the log could not be opened, flushed
    /// or re-keyed, or the app's key store failed.
    #[error("storage: {detail}")]
    Storage { detail: String },
    /// The SDK's background threads could not be started, or did not stop
    /// within the shutdown timeout.
    #[error("background threads: {detail}")]
    Threads { detail: String },
}

impl TallyError {
    /// The stable code: for a refusal, [`Refusal::code`], the key it is
    /// counted under in `health().refused`.
    pub fn code(&self) -> &str {
        match self {
            Self::Invalid { reason } => reason,
            Self::TooManyProperties => "too_many_properties",
            Self::QueueFull => "queue_full",
            Self::ConsentDenied => "consent_denied",
            Self::ConsentPending => "consent_pending",
            Self::ShutDown => "shut_down",
            Self::UnknownSession => "unknown_session",
            Self::InvalidProperties { .. } => "invalid_properties",
            Self::InvalidConfig { .. } => "invalid_config",
            Self::Storage { .. } => "storage",
            Self::Threads { .. } => "threads",
        }
    }
}

impl From<Refusal> for TallyError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Invalid(reason) => Self::Invalid {
                reason: reason.as_str().to_owned(),
            },
            Refusal::TooManyProperties => Self::TooManyProperties,
            Refusal::QueueFull => Self::QueueFull,
            Refusal::ConsentDenied => Self::ConsentDenied,
            Refusal::ConsentPending => Self::ConsentPending,
            Refusal::UnknownSession => Self::UnknownSession,
            // `Refusal` is non-exhaustive: a refusal added later is still
            // a refusal the tracker will not take, as after shutdown.
            _ => Self::ShutDown,
        }
    }
}

impl From<FlushError> for TallyError {
    fn from(e: FlushError) -> Self {
        match e {
            FlushError::ShutDown => Self::ShutDown,
            other => Self::Storage {
                detail: other.to_string(),
            },
        }
    }
}

impl From<ShutdownError> for TallyError {
    fn from(e: ShutdownError) -> Self {
        match e {
            ShutdownError::Flush(f) => f.into(),
            other => Self::Threads {
                detail: other.to_string(),
            },
        }
    }
}

impl From<BuildError> for TallyError {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Thread(_) => Self::Threads {
                detail: e.to_string(),
            },
            BuildError::Tls(_) => Self::InvalidConfig {
                field: "trusted_ca_pem".to_owned(),
                detail: e.to_string(),
            },
            other => Self::Storage {
                detail: other.to_string(),
            },
        }
    }
}

impl From<PropsError> for TallyError {
    fn from(e: PropsError) -> Self {
        Self::InvalidProperties {
            detail: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_proto::RejectReason;

    #[test]
    fn every_refusal_keeps_the_sdk_code() {
        let refusals = [
            Refusal::Invalid(RejectReason::EventNameTooLong),
            Refusal::Invalid(RejectReason::PropertiesTooLarge),
            Refusal::TooManyProperties,
            Refusal::QueueFull,
            Refusal::ConsentDenied,
            Refusal::ConsentPending,
            Refusal::ShutDown,
            Refusal::UnknownSession,
        ];
        for refusal in refusals {
            assert_eq!(TallyError::from(refusal.clone()).code(), refusal.code());
        }
    }
}
