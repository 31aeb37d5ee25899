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
//!
//! **What a client may merge.** A write key ships in every app, so any
//! holder can send an `identify` or an `alias` naming any id. Links
//! therefore decide only how people are *counted*, never whose data a
//! deletion reaches: an alias merging a user id that already has events of
//! its own is refused ([`merged_user`]), and a deletion never follows an
//! alias from one user id to another ([`deletion_predicate`]). An anonymous
//! id or install, random on the device, is the only id an identify can
//! take over, and then only that device's anonymous events follow it.

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

/// The user id an `alias` would merge into its `userId`: its `previousId`,
/// unless that is the same id. Such an alias is refused
/// (`alias_of_identified_user`) when the previous id is already an
/// identified user, that is, when some event carried it as its own
/// `userId`: merging two identified users would let any holder of a write
/// key join another user's data to its own (Segment and PostHog restrict
/// merges the same way). Merging an anonymous id, or a user id no event
/// has carried yet, is what an alias is for.
pub(crate) fn merged_user(event: &NewEvent) -> Option<&str> {
    if event.kind != MessageType::Alias {
        return None;
    }
    let previous = event.previous_id.as_deref()?;
    (Some(previous) != event.user_id.as_deref()).then_some(previous)
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
pub(crate) fn count_sql(
    from_param: &str,
    to_param: &str,
    event_param: &str,
    source_param: &str,
) -> String {
    format!(
        "SELECT COUNT(*), COUNT(DISTINCT CASE WHEN p.person_user IS NOT NULL THEN 'u:' || p.person_user \
         WHEN p.install_id IS NOT NULL THEN 'i:' || p.install_id ELSE 'a:' || p.anonymous_id END) \
         FROM (SELECT e.install_id, e.anonymous_id, {PERSON_USER_SQL} AS person_user FROM events e \
         WHERE e.event = {event_param} AND e.ts_corrected >= {from_param} AND e.ts_corrected < {to_param} \
         AND (CAST({source_param} AS TEXT) IS NULL OR e.source = {source_param})) p"
    )
}

/// The `WHERE` predicate selecting the events (aliased `e`) a deletion of
/// user `param` removes: the events whose own user id it is, and the
/// anonymous events (no user id) whose person it is directly, that is whose
/// anonymous id an identify or alias linked to it, or, when their anonymous
/// id has no link, whose install an identify linked to it. It never follows
/// an alias from one user id to another: an event carrying a user id is
/// that user's, whoever claims to have merged it (a write key is public, so
/// a link proves nothing about who owns the data it joins).
pub(crate) fn deletion_predicate(param: &str) -> String {
    person_deletion_predicate("e", "e.user_id IS NULL", param)
}

/// [`deletion_predicate`] over an identity (aliased `k`, `''` for absent
/// ids): the identities whose events a deletion removes.
pub(crate) fn ident_deletion_predicate(param: &str) -> String {
    person_deletion_predicate("k", "k.user_id = ''", param)
}

fn person_deletion_predicate(row: &str, anonymous: &str, param: &str) -> String {
    format!(
        "{row}.user_id = {param} OR ({anonymous} AND ( \
          {row}.anonymous_id IN (SELECT l.id FROM links l WHERE l.kind = 'a' AND l.target = {param}) \
          OR ({row}.install_id IN (SELECT l.id FROM links l WHERE l.kind = 'i' AND l.target = {param}) \
           AND NOT EXISTS (SELECT 1 FROM links a WHERE a.kind = 'a' AND a.id = {row}.anonymous_id))))"
    )
}

/// The `WHERE` predicate selecting the dead letters (aliased `d`) a
/// deletion of user `param` removes: those carrying its user id, and those
/// without a user id from an anonymous id or install linked to it, now or
/// by an earlier deletion of it (the tombstone's links).
pub(crate) fn dead_letter_deletion_predicate(param: &str) -> String {
    format!(
        "d.user_id = {param} OR (d.user_id IS NULL AND ( \
          d.anonymous_id IN (SELECT l.id FROM links l WHERE l.kind = 'a' AND l.target = {param}) \
          OR d.install_id IN (SELECT l.id FROM links l WHERE l.kind = 'i' AND l.target = {param}) \
          OR d.anonymous_id IN (SELECT tl.id FROM tombstone_links tl WHERE tl.kind = 'a' AND tl.user_id = {param}) \
          OR d.install_id IN (SELECT tl.id FROM tombstone_links tl WHERE tl.kind = 'i' AND tl.user_id = {param})))"
    )
}

/// The statements of a deletion of user `param`, run in this order in one
/// transaction after the tombstone is written (both stores):
///
/// 1. [`aliased`](Self::aliased): the user ids an alias merged into it
///    (read before the aliases go; their events are their own and stay,
///    and their identities' persons are re-resolved at the end);
/// 2. [`events`](Self::events), [`dead_letters`](Self::dead_letters)
///    (returning the bytes of each row, for the dead-letter counters),
///    [`activity`](Self::activity) and [`idents`](Self::idents): what the
///    person rule reaches, while the links still say who that is;
/// 3. [`unlink`](Self::unlink): the device links to it move into the
///    tombstone (`tombstone_links`: an offline device's late anonymous
///    events are still refused, and the links no longer decide any living
///    person), and every link naming it goes, aliases included.
#[derive(Debug)]
pub(crate) struct DeletionSql {
    pub aliased: String,
    pub events: String,
    pub dead_letters: String,
    pub activity: String,
    pub idents: String,
    pub unlink: [String; 2],
}

impl DeletionSql {
    /// The statements with the user id as parameter `param`; `raw_bytes`
    /// is the store's SQL for the byte length of the `raw` column.
    pub(crate) fn new(param: &str, raw_bytes: &str) -> DeletionSql {
        let idents = ident_deletion_predicate(param);
        DeletionSql {
            aliased: format!(
                "SELECT id FROM links WHERE kind = 'u' AND target = {param} ORDER BY id"
            ),
            events: format!("DELETE FROM events AS e WHERE {}", deletion_predicate(param)),
            dead_letters: format!(
                "DELETE FROM dead_letters AS d WHERE {} RETURNING {raw_bytes}",
                dead_letter_deletion_predicate(param)
            ),
            activity: format!(
                "DELETE FROM active_slots WHERE ident IN (SELECT k.id FROM idents k WHERE {idents})"
            ),
            idents: format!("DELETE FROM idents AS k WHERE {idents}"),
            unlink: [
                format!(
                    "INSERT INTO tombstone_links (kind, id, user_id) SELECT kind, id, target \
                     FROM links WHERE kind IN ('a', 'i') AND target = {param} ON CONFLICT DO NOTHING"
                ),
                format!("DELETE FROM links WHERE target = {param} OR (kind = 'u' AND id = {param})"),
            ],
        }
    }
}

/// SQL (both stores) for whether the event with user id `u`, anonymous id
/// `a`, install id `i` and source `s` (SQL expressions) belongs to a
/// deleted person: its own user id has a tombstone; or, without a user id,
/// its anonymous id is in a tombstone, or its install is in a tombstone
/// and neither its anonymous id nor its install has a link to anyone else
/// since (the person rule of the module doc, over the links a deletion
/// moved into `tombstone_links`). A tombstone counts when it names the
/// event's source or every source (`''`).
pub(crate) fn refused_sql(u: &str, a: &str, i: &str, s: &str) -> String {
    format!(
        "CASE WHEN {u} IS NOT NULL THEN EXISTS (SELECT 1 FROM tombstones x WHERE x.user_id = {u} \
          AND x.source IN ('', {s})) \
         ELSE EXISTS (SELECT 1 FROM tombstone_links tl WHERE tl.kind = 'a' AND tl.id = {a} \
          AND tl.source IN ('', {s})) \
          OR EXISTS (SELECT 1 FROM tombstone_links tl WHERE tl.kind = 'i' AND tl.id = {i} \
           AND tl.source IN ('', {s}) \
           AND NOT EXISTS (SELECT 1 FROM links l WHERE l.kind = 'a' AND l.id = {a} AND l.target <> tl.user_id) \
           AND NOT EXISTS (SELECT 1 FROM links l WHERE l.kind = 'i' AND l.id = {i} AND l.target <> tl.user_id)) END"
    )
}

/// SQL for whether the link aliased `l` (to user `user`) is backed by an
/// event of `source`: an `identify` carrying the user id and the linked
/// anonymous id or install, or an `alias` naming the linked id as its
/// `previousId`.
fn backed_by_source(user: &str, source: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM events s WHERE s.source = {source} AND s.user_id = {user} \
          AND ((s.kind = 'identify' AND ((l.kind = 'a' AND s.anonymous_id = l.id) \
            OR (l.kind = 'i' AND s.install_id = l.id))) \
           OR (s.kind = 'alias' AND l.kind = 'a' AND s.previous_id = l.id)))"
    )
}

/// The `WHERE` predicate (events aliased `e`) of one person's events of
/// one source, for an access request: what a deletion of that id scoped
/// to that source reaches ([`ScopedDeletionSql`]; the links it follows
/// read here as they stand, before any deletion).
pub(crate) fn source_person_predicate(
    kind: super::PersonKind,
    param: &str,
    source: &str,
) -> String {
    let linked = |k: &str| {
        format!(
            "(SELECT l.id FROM links l WHERE l.kind = '{k}' AND l.target = {param} AND {})",
            backed_by_source(param, source)
        )
    };
    let person = match kind {
        super::PersonKind::User => format!(
            "e.user_id = {param} OR (e.user_id IS NULL AND (e.anonymous_id IN {} \
             OR (e.install_id IN {} AND NOT EXISTS (SELECT 1 FROM links a \
              WHERE a.kind = 'a' AND a.id = e.anonymous_id AND a.target <> {param}))))",
            linked("a"),
            linked("i")
        ),
        super::PersonKind::Anonymous => format!("e.user_id IS NULL AND e.anonymous_id = {param}"),
        super::PersonKind::Install => format!("e.user_id IS NULL AND e.install_id = {param}"),
    };
    format!("(e.source = {source} AND ({person}))")
}

/// The statements of a deletion scoped to one source (the source as
/// parameter `source`, the id as `param`), run in this order in one
/// transaction after the tombstone (for a user id) is written:
///
/// 1. [`reach`](Self::reach): the device ids the deletion reaches within
///    the source, recorded in the tombstone (`tombstone_links` rows naming
///    the source): for a user id, the anonymous ids and installs linked to
///    it by an `identify` or `alias` that source sent (the link as stored,
///    by the conflict rule, and backed by one of the source's own
///    events); for an anonymous id or install, itself;
/// 2. [`events`](Self::events): the source's events of the person (its
///    own user id; without a user id, an anonymous id reached, or an
///    install reached whose anonymous id is linked to no one else),
///    returning the corrected time, identity and name of each (the
///    rollups they leave are settled after);
/// 3. [`dead_letters`](Self::dead_letters): the source's dead letters
///    carrying those ids, returning their sizes.
///
/// Links and identities are shared by every source's events and stay: a
/// scoped deletion leaves the other sources' data, and how it counts,
/// as it was.
#[derive(Debug)]
pub(crate) struct ScopedDeletionSql {
    pub reach: String,
    pub events: String,
    pub dead_letters: String,
}

impl ScopedDeletionSql {
    /// The statements for a deletion of `kind`; `raw_bytes` as for
    /// [`DeletionSql::new`].
    pub(crate) fn new(
        kind: super::PersonKind,
        param: &str,
        source: &str,
        raw_bytes: &str,
    ) -> ScopedDeletionSql {
        let reached = |k: &str, user: &str| {
            format!(
                "(SELECT tl.id FROM tombstone_links tl WHERE tl.kind = '{k}' AND tl.user_id = {user} \
                 AND tl.source = {source})"
            )
        };
        let (reach, events, letters) = match kind.link_kind() {
            None => (
                format!(
                    "INSERT INTO tombstone_links (kind, id, source, user_id) \
                     SELECT l.kind, l.id, {source}, l.target FROM links l \
                     WHERE l.kind IN ('a', 'i') AND l.target = {param} AND {} \
                     ON CONFLICT DO NOTHING",
                    backed_by_source(param, source)
                ),
                format!(
                    "e.user_id = {param} OR (e.user_id IS NULL AND (e.anonymous_id IN {} \
                     OR (e.install_id IN {} AND NOT EXISTS (SELECT 1 FROM links a \
                      WHERE a.kind = 'a' AND a.id = e.anonymous_id AND a.target <> {param}))))",
                    reached("a", param),
                    reached("i", param)
                ),
                format!(
                    "d.user_id = {param} OR (d.user_id IS NULL AND (d.anonymous_id IN {} \
                     OR d.install_id IN {}))",
                    reached("a", param),
                    reached("i", param)
                ),
            ),
            Some(link) => {
                let column = if link == "a" {
                    "anonymous_id"
                } else {
                    "install_id"
                };
                (
                    format!(
                        "INSERT INTO tombstone_links (kind, id, source, user_id) \
                         VALUES ('{link}', {param}, {source}, '') ON CONFLICT DO NOTHING"
                    ),
                    format!("e.user_id IS NULL AND e.{column} = {param}"),
                    format!("d.user_id IS NULL AND d.{column} = {param}"),
                )
            }
        };
        ScopedDeletionSql {
            reach,
            events: format!(
                "DELETE FROM events AS e WHERE e.source = {source} AND ({events}) \
                 RETURNING ts_corrected, ident, event"
            ),
            dead_letters: format!(
                "DELETE FROM dead_letters AS d WHERE d.source = {source} AND ({letters}) \
                 RETURNING {raw_bytes}"
            ),
        }
    }
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

/// A migration's SQL with `{IDENT_PERSON_SQL}` replaced by
/// [`IDENT_PERSON_SQL`] (migrations are constants; the rule is shared).
pub(crate) fn expand_migration(sql: &str) -> String {
    sql.replace("{IDENT_PERSON_SQL}", IDENT_PERSON_SQL)
}

/// The statements of a deletion of an anonymous id or an install (link
/// kind `a` or `i`, the id as parameter `param`), run in this order in one
/// transaction (both stores): [`linked`](Self::linked) (the users an
/// identify linked it to, for the report), then the events, dead letters,
/// activity and identities that carry it without a user id, then the
/// tombstone (a `tombstone_links` row naming no user, which
/// [`refused_sql`] reads like the others) and its links.
#[derive(Debug)]
pub(crate) struct DeviceDeletionSql {
    pub linked: String,
    pub events: String,
    pub dead_letters: String,
    pub activity: String,
    pub idents: String,
    pub tombstone: String,
    pub unlink: String,
}

impl DeviceDeletionSql {
    /// The statements for link kind `kind` (`a` or `i`); `raw_bytes` as
    /// for [`DeletionSql::new`].
    pub(crate) fn new(kind: &str, param: &str, raw_bytes: &str) -> DeviceDeletionSql {
        let column = if kind == "a" {
            "anonymous_id"
        } else {
            "install_id"
        };
        DeviceDeletionSql {
            linked: format!(
                "SELECT target FROM links WHERE kind = '{kind}' AND id = {param} ORDER BY target"
            ),
            events: format!(
                "DELETE FROM events AS e WHERE e.user_id IS NULL AND e.{column} = {param}"
            ),
            dead_letters: format!(
                "DELETE FROM dead_letters AS d WHERE d.user_id IS NULL AND d.{column} = {param} \
                 RETURNING {raw_bytes}"
            ),
            activity: format!(
                "DELETE FROM active_slots WHERE ident IN \
                 (SELECT k.id FROM idents k WHERE k.user_id = '' AND k.{column} = {param})"
            ),
            idents: format!(
                "DELETE FROM idents AS k WHERE k.user_id = '' AND k.{column} = {param}"
            ),
            tombstone: format!(
                "INSERT INTO tombstone_links (kind, id, user_id) VALUES ('{kind}', {param}, '') \
                 ON CONFLICT DO NOTHING"
            ),
            unlink: format!("DELETE FROM links WHERE kind = '{kind}' AND id = {param}"),
        }
    }
}

/// The `WHERE` predicate (events aliased `e`) of one person's events for
/// an access request, the id as `param`: what a deletion of that id
/// reaches ([`deletion_predicate`] for a user; for an anonymous id or an
/// install, the events carrying it without a user id).
pub(crate) fn person_predicate(kind: super::PersonKind, param: &str) -> String {
    match kind {
        super::PersonKind::User => format!("({})", deletion_predicate(param)),
        super::PersonKind::Anonymous => {
            format!("(e.user_id IS NULL AND e.anonymous_id = {param})")
        }
        super::PersonKind::Install => format!("(e.user_id IS NULL AND e.install_id = {param})"),
    }
}
