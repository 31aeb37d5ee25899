//! A cheap proof that a message is valid, without building it.
//!
//! The pipeline must drop an event the collector would reject (with the
//! same reason) before it is stored; [`tally_proto::validate`] decides that
//! on the whole message and its JSON. Building both for every event is
//! most of the pipeline's work, so [`certainly_valid`] first checks bounds
//! that imply every rule `validate` applies: when it says yes, `validate`
//! would accept the message; when it says no, the pipeline builds the
//! message and lets `validate` give the exact answer. It may say no for a
//! valid message (near a limit, an unusual id), never yes for an invalid
//! one; the tests pit the two against each other.

use tally_proto::limits::{
    MAX_EVENT_NAME_BYTES, MAX_ID_BYTES, MAX_JSON_DEPTH, MAX_MESSAGE_BYTES, MAX_PROPERTIES_BYTES,
};

use super::{Epoch, Event, Kind};

/// Generous room for what a message holds besides its strings: member
/// names, punctuation, the type, messageId, timestamp, seq, session index,
/// schema and priority.
const FIXED_BYTES: usize = 512;
/// A string's JSON form is at most this many times its length (`\u0000`).
const ESCAPE_FACTOR: usize = 6;

/// What [`certainly_valid`] needs to know of an epoch, computed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochFacts {
    /// Its ids are non-empty where they must be, short enough and free of
    /// NUL characters.
    ids_ok: bool,
    /// Its JSON's length (at least what it adds to a message).
    bytes: usize,
    /// `{` and `[` bytes in its JSON.
    openers: usize,
}

fn id_ok(s: &str) -> bool {
    s.len() <= MAX_ID_BYTES && !s.contains('\0')
}

fn openers(s: &str) -> usize {
    s.bytes().filter(|&b| b == b'{' || b == b'[').count()
}

impl EpochFacts {
    pub(crate) fn of(epoch: &Epoch, bytes: &[u8]) -> EpochFacts {
        let ids_ok = !epoch.install_id.is_empty()
            && !epoch.anonymous_id.is_empty()
            && id_ok(&epoch.install_id)
            && id_ok(&epoch.anonymous_id)
            && id_ok(&epoch.session_id)
            && epoch.user_id.as_deref().is_none_or(id_ok);
        EpochFacts {
            ids_ok,
            bytes: bytes.len(),
            openers: bytes.iter().filter(|&&b| b == b'{' || b == b'[').count(),
        }
    }
}

/// Whether the message `e` stands for in the epoch `facts` describes, as
/// seq `seq`, certainly passes [`tally_proto::validate`].
pub(crate) fn certainly_valid(e: &Event<'_>, facts: &EpochFacts, seq: u64) -> bool {
    if !facts.ids_ok || seq == 0 {
        return false;
    }
    let strings = [e.user_id, e.previous_id, e.dedup_key];
    let short = e.name.len() <= MAX_EVENT_NAME_BYTES.min(MAX_ID_BYTES)
        && strings.iter().flatten().all(|s| id_ok(s))
        && !e.name.contains('\0');
    let required = match e.kind {
        // The SDK's own events (a drop report is checked for its shape)
        // take the exact path.
        Kind::Track => !e.name.is_empty() && !e.name.starts_with(super::INTERNAL_PREFIX),
        Kind::Group => !e.name.is_empty(),
        Kind::Alias => e.previous_id.is_some_and(|p| !p.is_empty()),
        Kind::Identify => e.user_id.is_some_and(|u| !u.is_empty()),
        Kind::Screen | Kind::Page => true,
    };
    let bag_ok = e
        .bag
        .is_none_or(|b| b.len() <= MAX_PROPERTIES_BYTES && b.trim_start().starts_with('{'));
    if !(short && required && bag_ok) {
        return false;
    }
    let text = strings.iter().flatten().map(|s| s.len()).sum::<usize>() + e.name.len();
    let bag = e.bag.map_or(0, str::len);
    let bound = FIXED_BYTES + facts.bytes + ESCAPE_FACTOR * text + bag;
    let opened = 3
        + facts.openers
        + strings.iter().flatten().map(|s| openers(s)).sum::<usize>()
        + openers(e.name)
        + e.bag.map_or(0, openers);
    bound <= MAX_MESSAGE_BYTES && opened <= MAX_JSON_DEPTH
}
