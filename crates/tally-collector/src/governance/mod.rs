//! The data lifecycle after ingest: how long events are kept, how they are
//! taken out, and how a user's data is deleted (`docs/governance.md`
//! follows an event from the device to its deletion).
//!
//! | concern | where |
//! |---|---|
//! | retention: the policy (`[retention]` in `tally.toml`) and the background job deleting expired events and dead letters in chunks | [`retention`] |
//! | export: stored events as NDJSON in keyset pages, each line the message as received with its corrected and receipt times | [`export`] (`GET /v1/export` in [`crate::api::export`]) |
//! | deletion: a user's events, dead letters, identities and links removed in one transaction, a tombstone refusing their late events | the store (`AdminStore::delete_user`, rules in `crate::store`'s docs); `POST /v1/deletions` and `GET /v1/deletions` in [`crate::api::admin`] |

pub mod export;
pub mod retention;
