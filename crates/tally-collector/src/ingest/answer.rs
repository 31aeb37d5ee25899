//! The 200 answer: one result per message, in the order sent.
//!
//! Messages rejected before the store (undecodable or invalid) keep their
//! reason; the others get the store's outcome. A message whose person was
//! deleted is `rejected: deleted_user`, and the user is listed in
//! `deleted_users` so the device can purge what it still holds for them.

use tally_proto::{format_timestamp, BatchResponse, MessageResult, RejectReason};

use crate::store::{NewEvent, WriteOutcome};

/// What became of one message before the store was asked.
#[derive(Debug)]
pub enum Slot {
    /// Rejected by decoding or validation.
    Rejected {
        /// Its `messageId`, if readable.
        id: Option<String>,
        /// Why.
        reason: RejectReason,
    },
    /// Sent to the store as `events[index]`.
    Event(usize),
}

/// Builds the answer from the slots and the store's outcomes (one per
/// event, in order: the caller checks the lengths match).
pub fn build(
    slots: Vec<Slot>,
    events: &[NewEvent],
    outcomes: &[WriteOutcome],
    server_time: i64,
) -> BatchResponse {
    let mut deleted_users: Vec<String> = Vec::new();
    let results = slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Rejected { id, reason } => MessageResult::rejected(id, reason),
            Slot::Event(i) => {
                let event = &events[i];
                let id = Some(event.message_id.clone());
                match outcomes[i] {
                    WriteOutcome::Accepted => MessageResult::accepted(id),
                    WriteOutcome::Duplicate => MessageResult::duplicate(id),
                    WriteOutcome::Rejected(RejectReason::DeletedUser) => {
                        let user = event.user_id.as_ref().or(event.anonymous_id.as_ref());
                        if let Some(user) = user {
                            if !deleted_users.contains(user) {
                                deleted_users.push(user.clone());
                            }
                        }
                        MessageResult::rejected(id, RejectReason::DeletedUser)
                    }
                    WriteOutcome::Rejected(reason) => MessageResult::rejected(id, reason),
                }
            }
        })
        .collect();
    let mut response = BatchResponse::from_results(format_timestamp(server_time), results);
    response.deleted_users = deleted_users;
    response
}
