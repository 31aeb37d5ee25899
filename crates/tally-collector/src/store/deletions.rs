//! Deletion requests: what a deletion reaches is the store module's (see
//! [`super`]); these are the types of its request, record and report.

use super::StoreError;

/// The kind of id a deletion names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
pub enum PersonKind {
    /// A user id: the user's events and those stitched to them.
    #[serde(rename = "userId")]
    User,
    /// An anonymous id: the events carrying it without a user id (a
    /// person who never identified).
    #[serde(rename = "anonymousId")]
    Anonymous,
    /// An install id: the events of that install without a user id.
    #[serde(rename = "installId")]
    Install,
}

impl PersonKind {
    /// The stored and wire name (`userId`, `anonymousId`, `installId`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "userId",
            Self::Anonymous => "anonymousId",
            Self::Install => "installId",
        }
    }

    pub(crate) fn from_stored(code: &str) -> Result<Self, StoreError> {
        match code {
            "userId" => Ok(Self::User),
            "anonymousId" => Ok(Self::Anonymous),
            "installId" => Ok(Self::Install),
            other => Err(StoreError::Backend(format!(
                "unknown deletion kind {other:?} in the store"
            ))),
        }
    }

    /// The link kind of a device id (`a`, `i`); none for a user id.
    pub(crate) fn link_kind(self) -> Option<&'static str> {
        match self {
            Self::User => None,
            Self::Anonymous => Some("a"),
            Self::Install => Some("i"),
        }
    }
}

/// The result of a deletion request.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct DeletionReport {
    /// Stored events removed.
    pub deleted_events: u64,
    /// Dead letters (rejected messages) removed.
    pub deleted_dead_letters: u64,
    /// User ids an `alias` had merged into this user. Their events carry
    /// their own user id, so the deletion did not remove them (no client
    /// can make a deletion reach another user's data); if they are the
    /// same person, delete them too.
    pub aliased_user_ids: Vec<String>,
    /// For a deletion of an anonymous id or an install: the user ids an
    /// `identify` had linked it to. Events carrying a user id are that
    /// user's, so the deletion did not remove them; if the user is the
    /// same person, delete them too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub linked_user_ids: Vec<String>,
    /// The source (write key id) the deletion was scoped to; none for
    /// every source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// What became of a deletion request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DeletionStatus {
    /// The user's events were removed and the tombstone written, in the
    /// transaction that recorded the request. (A request whose transaction
    /// failed leaves no record: it was answered with an error and is
    /// retried by its sender.)
    Done,
}

impl DeletionStatus {
    /// The stored code.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Done => "done",
        }
    }

    pub(crate) fn from_stored(code: &str) -> Result<Self, StoreError> {
        match code {
            "done" => Ok(Self::Done),
            other => Err(StoreError::Backend(format!(
                "unknown deletion status {other:?} in the store"
            ))),
        }
    }
}

/// One deletion request as recorded (`GET /v1/deletions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionRecord {
    /// What kind of id was deleted.
    pub kind: PersonKind,
    /// The deleted user id, anonymous id or install id.
    pub user_id: String,
    /// When the request arrived, Unix ms (collector clock).
    pub requested_at: i64,
    /// What became of it.
    pub status: DeletionStatus,
    /// Stored events it removed (0 when the user had none left).
    pub deleted_events: u64,
    /// The source (write key id) it was scoped to; none for every source.
    pub source: Option<String>,
}
