//! Identity links and person resolution, shared by both stores.
//!
//! A link maps one identifier to a user id:
//!
//! | kind | id | made by |
//! |---|---|---|
//! | `a` | an anonymous id | `identify` carrying `anonymousId`; `alias` (`previousId`) |
//! | `i` | an install id | `identify` carrying `context.tally.install_id` |
//! | `u` | a user id | `alias` (`previousId` → `userId`) |
//!
//! An alias records `previousId` both as an anonymous id and as a user id
//! because the Segment Spec lets it be either.
//!
//! **Person of an event** (what `users` counts and what a deletion removes):
//! its user id, resolved through a `u` link if that user was aliased; else,
//! for an event without a user id, the user its anonymous id is linked to,
//! else the user its install is linked to (each resolved through one `u`
//! link); else the install id; else the anonymous id. So anonymous events
//! sent before an `identify` count for that user as soon as the link exists
//! (stitching), whatever order the events arrive in. Resolution follows at
//! most one alias hop.
//!
//! **Conflicts**: an identifier linked to two users keeps the link with the
//! earliest corrected time; on equal times the smaller user id wins. This
//! depends only on the events, not on their arrival order, so several
//! collectors on one PostgreSQL agree.

use super::NewEvent;
use tally_proto::MessageType;

/// One link to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link<'a> {
    /// `a`, `i` or `u`.
    pub kind: &'static str,
    pub id: &'a str,
    pub target: &'a str,
    /// The corrected time of the event that made it (the conflict rule).
    pub linked_at: i64,
}

/// The links an accepted event makes (none for most types).
pub(crate) fn links_of(event: &NewEvent) -> Vec<Link<'_>> {
    let Some(target) = event.user_id.as_deref() else {
        return Vec::new();
    };
    let at = event.ts_corrected;
    let candidates: [(&'static str, Option<&str>); 2] = match event.kind {
        MessageType::Identify => [
            ("a", event.anonymous_id.as_deref()),
            ("i", event.install_id.as_deref()),
        ],
        MessageType::Alias => [
            ("a", event.previous_id.as_deref()),
            ("u", event.previous_id.as_deref()),
        ],
        _ => return Vec::new(),
    };
    candidates
        .into_iter()
        .filter_map(|(kind, id)| {
            // A user aliased to itself would resolve to itself: no link.
            let self_alias = |id: &str| kind == "u" && id == target;
            let id = id.filter(|id| !id.is_empty() && !self_alias(id))?;
            Some(Link {
                kind,
                id,
                target,
                linked_at: at,
            })
        })
        .collect()
}

/// SQL (SQLite and PostgreSQL alike) for the resolved user of the event
/// aliased `e`, or NULL for an anonymous person. Needs the `links` table.
pub(crate) const PERSON_USER_SQL: &str = "COALESCE( \
 (SELECT l.target FROM links l WHERE l.kind = 'u' AND l.id = e.user_id), \
 e.user_id, \
 (SELECT COALESCE(r.target, l.target) FROM links l LEFT JOIN links r ON r.kind = 'u' AND r.id = l.target \
  WHERE l.kind = 'a' AND l.id = e.anonymous_id), \
 (SELECT COALESCE(r.target, l.target) FROM links l LEFT JOIN links r ON r.kind = 'u' AND r.id = l.target \
  WHERE l.kind = 'i' AND l.id = e.install_id))";

/// `SELECT count, distinct people` for one event name and window; the
/// parameters are `event`, `from` and `to` (`$n` placeholders work in both
/// SQLite and PostgreSQL). The `CASE` keeps the three id spaces apart so a
/// user id equal to some install id still counts as two people.
pub(crate) fn count_sql(from_param: &str, to_param: &str, event_param: &str) -> String {
    format!(
        "SELECT COUNT(*), COUNT(DISTINCT CASE WHEN p.person_user IS NOT NULL THEN 'u:' || p.person_user \
         WHEN p.install_id IS NOT NULL THEN 'i:' || p.install_id ELSE 'a:' || p.anonymous_id END) \
         FROM (SELECT e.install_id, e.anonymous_id, {PERSON_USER_SQL} AS person_user FROM events e \
         WHERE e.event = {event_param} AND e.ts_corrected >= {from_param} AND e.ts_corrected < {to_param}) p"
    )
}

/// The `WHERE` predicate selecting the events of user `param` for a
/// deletion: the person rule above, keeping an event with its own (alive)
/// user id even if its anonymous id is linked to the deleted user.
pub(crate) fn deletion_predicate(param: &str) -> String {
    format!(
        "e.user_id = {param} \
         OR e.user_id IN (SELECT l.id FROM links l WHERE l.kind = 'u' AND l.target = {param}) \
         OR (e.user_id IS NULL AND ( \
          e.anonymous_id IN (SELECT l.id FROM links l LEFT JOIN links r ON r.kind = 'u' AND r.id = l.target \
           WHERE l.kind = 'a' AND COALESCE(r.target, l.target) = {param}) \
          OR e.install_id IN (SELECT l.id FROM links l LEFT JOIN links r ON r.kind = 'u' AND r.id = l.target \
           WHERE l.kind = 'i' AND COALESCE(r.target, l.target) = {param})))"
    )
}

/// `SELECT seq, kind, event, person` of one install's events with a seq
/// above `after_param`, in seq order, at most `limit_param`; the person is
/// the resolved user, else the install (the rule above, for events that
/// all have this install id).
pub(crate) fn install_events_sql(
    install_param: &str,
    after_param: &str,
    limit_param: &str,
) -> String {
    format!(
        "SELECT e.seq, e.kind, e.event, COALESCE({PERSON_USER_SQL}, e.install_id) FROM events e \
         WHERE e.install_id = {install_param} AND e.seq > {after_param} \
         ORDER BY e.seq, e.message_id LIMIT {limit_param}"
    )
}
/// SQL (SQLite and PostgreSQL alike) for the person key of the `idents`
/// row aliased `k` (`''` marks an absent id): `u:USER` after stitching,
/// else `i:INSTALL`, else `a:ANONYMOUS`, else NULL. The same rule as
/// [`PERSON_USER_SQL`] and [`count_sql`], over an identity instead of an
/// event.
pub(crate) const IDENT_PERSON_SQL: &str = "CASE WHEN k.user_id <> '' THEN 'u:' || COALESCE( \
 (SELECT l.target FROM links l WHERE l.kind = 'u' AND l.id = k.user_id), k.user_id) \
 ELSE COALESCE( \
 'u:' || (SELECT COALESCE(r.target, l.target) FROM links l LEFT JOIN links r ON r.kind = 'u' AND r.id = l.target \
  WHERE l.kind = 'a' AND l.id = k.anonymous_id), \
 'u:' || (SELECT COALESCE(r.target, l.target) FROM links l LEFT JOIN links r ON r.kind = 'u' AND r.id = l.target \
  WHERE l.kind = 'i' AND l.id = k.install_id), \
 CASE WHEN k.install_id <> '' THEN 'i:' || k.install_id \
 WHEN k.anonymous_id <> '' THEN 'a:' || k.anonymous_id END) END";

/// The identity key of an event: `(user_id, anonymous_id, install_id)`
/// with `''` for absent. An event with a user id is keyed by it alone (its
/// person depends on nothing else); an anonymous event by its anonymous id
/// and install, which decide its person once linked.
pub(crate) fn ident_key(event: &NewEvent) -> (&str, &str, &str) {
    match event.user_id.as_deref() {
        Some(user) => (user, "", ""),
        None => (
            "",
            event.anonymous_id.as_deref().unwrap_or(""),
            event.install_id.as_deref().unwrap_or(""),
        ),
    }
}

/// `UPDATE` statement re-resolving the persons of the identities a new or
/// changed link of `kind` affects; the link's id is parameter `param`.
/// Identities are few (one per user and per anonymous device), so the
/// events never need rewriting: queries read an event's person through its
/// identity.
pub(crate) fn repoint_sql(kind: &str, param: &str) -> String {
    let affected = match kind {
        "a" => format!("k.user_id = '' AND k.anonymous_id = {param}"),
        "i" => format!("k.user_id = '' AND k.install_id = {param}"),
        _ => format!(
            "k.user_id = {param} OR (k.user_id = '' AND ( \
             k.anonymous_id IN (SELECT l.id FROM links l WHERE l.kind = 'a' AND l.target = {param}) \
             OR k.install_id IN (SELECT l.id FROM links l WHERE l.kind = 'i' AND l.target = {param})))"
        ),
    };
    format!("UPDATE idents AS k SET person = {IDENT_PERSON_SQL} WHERE {affected}")
}

/// The `WHERE` predicate selecting the identities (aliased `k`) whose
/// events a deletion of user `param` removes: [`deletion_predicate`] over
/// an identity.
pub(crate) fn ident_deletion_predicate(param: &str) -> String {
    format!(
        "k.user_id = {param} \
         OR k.user_id IN (SELECT l.id FROM links l WHERE l.kind = 'u' AND l.target = {param}) \
         OR (k.user_id = '' AND ( \
          k.anonymous_id IN (SELECT l.id FROM links l LEFT JOIN links r ON r.kind = 'u' AND r.id = l.target \
           WHERE l.kind = 'a' AND COALESCE(r.target, l.target) = {param}) \
          OR k.install_id IN (SELECT l.id FROM links l LEFT JOIN links r ON r.kind = 'u' AND r.id = l.target \
           WHERE l.kind = 'i' AND COALESCE(r.target, l.target) = {param})))"
    )
}

/// A migration's SQL with `{IDENT_PERSON_SQL}` replaced by
/// [`IDENT_PERSON_SQL`] (migrations are constants; the rule is shared).
pub(crate) fn expand_migration(sql: &str) -> String {
    sql.replace("{IDENT_PERSON_SQL}", IDENT_PERSON_SQL)
}
