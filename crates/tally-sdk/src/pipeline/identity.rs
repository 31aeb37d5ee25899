//! Identity: who the messages are about.
//!
//! Contract: [`Identity`] lives on the pipeline thread, so identity changes
//! (`identify`, `alias`, `reset`) apply in exactly the order the app made
//! them relative to its events. Every message gets the current
//! `anonymousId` and, once known, the `userId`. Changes are persisted with
//! the rest of the SDK state at the next flush.
//!
//! ## Merge and conflict policy
//!
//! - `install_id` is made once, at first start, and never changes for the
//!   life of the data directory. A reinstall gets a new one; the first
//!   `identify` after it links the new install to the user, which is how
//!   the collector stitches devices and reinstalls.
//! - `anonymousId` starts as a random id; it is stable until `reset()`.
//! - `identify(user)` sets the user from that message on. Earlier anonymous
//!   events of the same `anonymousId` are attributed to the user by the
//!   collector (stitching), the device rewrites nothing.
//! - `identify(other)` while a user is set: last identify wins. The device
//!   does not merge the two users; it sends the new one, keeping the same
//!   `anonymousId`, and the collector decides (Segment semantics).
//! - `alias(new)` says the current identity (the user if set, else the
//!   `anonymousId`) and `new` are one person; the user becomes `new`.
//! - `reset()` (logout) clears the user and draws a new `anonymousId`, so
//!   nothing after it is linked to the previous user.
//! - When the collector answers that the current user was deleted, the
//!   SDK forgets them as `reset()` does, and purges what it still holds
//!   for them.
//! - With pseudonymisation on, the stored and sent `userId` is the keyed
//!   hash; the same user hashes the same on every device with the same key.

use serde::{Deserialize, Serialize};

/// The identity as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// This install, forever.
    pub install_id: String,
    /// The current anonymous identity.
    pub anonymous_id: String,
    /// The known user, if any (already pseudonymised when configured).
    /// The state file keeps it sealed, never here (see [`crate::install_state`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl Identity {
    /// A new install with a fresh anonymous identity.
    pub fn new_install() -> Self {
        Self {
            install_id: uuid::Uuid::new_v4().to_string(),
            anonymous_id: uuid::Uuid::new_v4().to_string(),
            user_id: None,
        }
    }

    /// `identify`: the user from now on (last identify wins).
    pub fn identify(&mut self, user_id: String) {
        self.user_id = Some(user_id);
    }

    /// `alias`: the id the alias message names as `previousId`, then the
    /// user becomes `user_id`.
    pub fn alias(&mut self, user_id: String) -> String {
        self.user_id
            .replace(user_id)
            .unwrap_or_else(|| self.anonymous_id.clone())
    }

    /// `reset`: no user, a new anonymous identity; the install stays.
    pub fn reset(&mut self) {
        self.user_id = None;
        self.anonymous_id = uuid::Uuid::new_v4().to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_alias_reset() {
        let mut id = Identity::new_install();
        let install = id.install_id.clone();
        let anon = id.anonymous_id.clone();
        assert_eq!(
            id.alias("u1".into()),
            anon,
            "alias from anonymous names the anonymous id"
        );
        id.identify("u2".into());
        assert_eq!(id.user_id.as_deref(), Some("u2"));
        assert_eq!(id.alias("u3".into()), "u2");
        assert_eq!(
            id.anonymous_id, anon,
            "identify and alias keep the anonymous id"
        );
        id.reset();
        assert_eq!(id.user_id, None);
        assert_ne!(id.anonymous_id, anon);
        assert_eq!(id.install_id, install);
    }
}
