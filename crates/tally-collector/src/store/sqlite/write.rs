//! One batch's write on the SQLite writer connection, in the current group
//! (in the caller's savepoint if it joined the group; see [`super::writer`]).
//!
//! In order, for each event: the refusals only the store can decide
//! (deleted person, another source's drop report, an alias of an
//! identified user), dedup against events stored before sources were
//! recorded, its identity, and the insert (whose `ON CONFLICT DO NOTHING`
//! decides dedup within the source). Then, for the batch: dead letters,
//! the links of its accepted identify and alias calls, completeness of
//! its own installs, event names and active slots, counters and health
//! figures, the tracking plan's findings ([`super::quality`]), as [`crate::store::plan`] computes them. Everything is in
//! the same transaction as the rows, so the counters stay exact.

use super::dead_letters::write_dead_letter;
use super::health::write_health;
use super::installs::write_installs;
use super::quality::write_quality;
use super::rows;
use super::writer::{Known, WriterState, KNOWN_CAPACITY};
use super::{db_error, SqliteStore};
use crate::store::health::BatchHealth;
use crate::store::identity::{self, Link};
use crate::store::plan::{install_deltas, links, refusal};
use crate::store::quality::QualityFinding;
use crate::store::query;
use crate::store::{
    owns, priority_str, tracked, DeadLetter, DeadLetterBudget, IngestStore, NewEvent, StoreError,
    WriteOutcome,
};
use rusqlite::{params, Connection, OptionalExtension, Statement, ToSql};
use std::collections::HashMap;
use tally_proto::RejectReason;

impl IngestStore for SqliteStore {
    fn write_judged(
        &self,
        events: &[NewEvent],
        dead_letters: &[DeadLetter],
        findings: &[QualityFinding],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        self.writer.run(events.len() + dead_letters.len(), |state| {
            let outcomes = write_events(state, events, dead_letters)?;
            write_quality(&state.conn, findings, &outcomes)?;
            Ok(outcomes)
        })
    }
}

const INSERT_EVENT: &str = "INSERT INTO events (message_id, dedup_key, kind, event, user_id, \
    anonymous_id, group_id, previous_id, install_id, seq, session_id, session_index, priority, \
    timestamp, sent_at, received_at, ts_corrected, clamped, raw, ident, source) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
    ?20, ?21) ON CONFLICT DO NOTHING";

/// Whether an event stored before sources were recorded has the id `?1`
/// or the business key `?2`.
const LEGACY_DUPLICATE: &str = "SELECT EXISTS (SELECT 1 FROM events WHERE source = '' \
    AND message_id = ?1) OR (?2 IS NOT NULL AND EXISTS (SELECT 1 FROM events \
    WHERE source = '' AND dedup_key = ?2))";

/// The earliest corrected time wins, then the smaller user id (see the
/// `identity` module).
const UPSERT_LINK: &str =
    "INSERT INTO links (kind, id, target, linked_at) VALUES (?1, ?2, ?3, ?4) \
    ON CONFLICT (kind, id) DO UPDATE SET target = excluded.target, linked_at = excluded.linked_at \
    WHERE (excluded.linked_at, excluded.target) < (links.linked_at, links.target)";

/// Whether the event belongs to a deleted person (`identity::refused_sql`).
fn refused(conn: &Connection, e: &NewEvent) -> Result<bool, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {}",
        identity::refused_sql("?1", "?2", "?3", "?4")
    ))
    .and_then(|mut s| {
        s.query_row(
            params![e.user_id, e.anonymous_id, e.install_id, e.source],
            |r| r.get(0),
        )
    })
    .map_err(db_error)
}

/// Whether `e` is an alias whose `previousId` is a user id with events of
/// its own (an identity keyed by that user id exists; see
/// `identity::merged_user`).
fn alias_of_identified_user(conn: &Connection, e: &NewEvent) -> Result<bool, StoreError> {
    let Some(previous) = identity::merged_user(e) else {
        return Ok(false);
    };
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM idents WHERE user_id = ?1 AND anonymous_id = '' \
         AND install_id = '')",
    )
    .and_then(|mut s| s.query_row([previous], |r| r.get(0)))
    .map_err(db_error)
}

/// The stored owner of each install of `events` (`None`: not seen yet):
/// from what the writer knows, else read 64 installs per statement (see
/// [`super::rows`]).
fn install_owners<'e>(
    conn: &Connection,
    known: &Known,
    events: &'e [NewEvent],
) -> Result<HashMap<&'e str, Option<String>>, StoreError> {
    let mut owners: HashMap<&str, Option<String>> = events
        .iter()
        .filter_map(|e| e.install_id.as_deref())
        .map(|i| (i, known.owners.get(i).cloned()))
        .collect();
    let unknown: Vec<[&dyn ToSql; 1]> = owners
        .iter()
        .filter(|(_, owner)| owner.is_none())
        .map(|(i, _)| [i as _])
        .collect();
    let sql = format!(
        "SELECT install_id, source FROM installs WHERE install_id IN ({})",
        rows::placeholders(1)
    );
    let mut found: Vec<(String, String)> = Vec::new();
    rows::for_chunks(&unknown, |p| {
        let mut statement = conn.prepare_cached(&sql)?;
        let mut rows = statement.query(p)?;
        while let Some(r) = rows.next()? {
            found.push((r.get(0)?, r.get(1)?));
        }
        Ok(())
    })
    .map_err(db_error)?;
    for (install, source) in found {
        if let Some(owner) = owners.get_mut(install.as_str()) {
            *owner = Some(source);
        }
    }
    Ok(owners)
}

/// Writes the links and re-resolves the persons of the identities they
/// affect (see `identity::repoint_sql`).
fn write_links<'l>(
    conn: &Connection,
    links: impl IntoIterator<Item = &'l Link<'l>>,
) -> Result<(), StoreError> {
    for link in links {
        conn.prepare_cached(UPSERT_LINK)
            .and_then(|mut s| s.execute(params![link.kind, link.id, link.target, link.linked_at]))
            .map_err(db_error)?;
        conn.prepare_cached(&identity::repoint_sql(link.kind, "?1"))
            .and_then(|mut s| s.execute([link.id]))
            .map_err(db_error)?;
    }
    Ok(())
}

/// The id of the identity `key` (see `identity::ident_key`), created with
/// its person resolved from the current links if new.
fn ident_id(conn: &Connection, key: (&str, &str, &str)) -> Result<i64, StoreError> {
    let found: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM idents WHERE user_id = ?1 AND anonymous_id = ?2 AND install_id = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![key.0, key.1, key.2], |r| r.get(0))
                .optional()
        })
        .map_err(db_error)?;
    if let Some(id) = found {
        return Ok(id);
    }
    conn.prepare_cached(&format!(
        "INSERT INTO idents (user_id, anonymous_id, install_id, person) \
         SELECT k.user_id, k.anonymous_id, k.install_id, {} \
         FROM (SELECT ?1 AS user_id, ?2 AS anonymous_id, ?3 AS install_id) k RETURNING id",
        identity::IDENT_PERSON_SQL
    ))
    .and_then(|mut s| s.query_row(params![key.0, key.1, key.2], |r| r.get(0)))
    .map_err(db_error)
}

/// What the events of a batch leave for the batch's closing writes, and
/// their outcomes so far.
#[derive(Debug, Default)]
struct Pass<'e> {
    outcomes: Vec<WriteOutcome>,
    accepted: i64,
    duplicate: i64,
    rejected: i64,
    /// Read from the counters on the first dead letter (see
    /// [`write_dead_letter`]).
    budget: Option<DeadLetterBudget>,
    /// Identity ids of this batch's keys (see `identity::ident_key`).
    idents: HashMap<(&'e str, &'e str, &'e str), i64>,
    /// Event names and active slots of the accepted events.
    activity: query::Activity<'e>,
}

impl<'e> Pass<'e> {
    fn refuse(&mut self, reason: RejectReason) {
        self.rejected += 1;
        self.outcomes.push(WriteOutcome::Rejected(reason));
    }

    fn duplicate(&mut self) {
        self.duplicate += 1;
        self.outcomes.push(WriteOutcome::Duplicate);
    }

    /// Records a stored event and its rollups.
    fn accept(&mut self, e: &'e NewEvent, ident: i64) {
        self.accepted += 1;
        self.outcomes.push(WriteOutcome::Accepted);
        self.activity.add(e, ident);
    }

    /// The identity id of `e`: from this batch, else from what the writer
    /// knows is stored, else read or created ([`ident_id`]).
    fn ident(
        &mut self,
        conn: &Connection,
        known: &mut Known,
        e: &'e NewEvent,
    ) -> Result<i64, StoreError> {
        let key = identity::ident_key(e);
        if let Some(id) = self.idents.get(&key) {
            return Ok(*id);
        }
        let owned = (key.0.to_owned(), key.1.to_owned(), key.2.to_owned());
        let id = match known.idents.get(&owned) {
            Some(id) => *id,
            None => {
                let id = ident_id(conn, key)?;
                known.idents.insert(owned, id);
                id
            }
        };
        self.idents.insert(key, id);
        Ok(id)
    }
}

/// Whether an event stored before sources were recorded has the id or
/// business key of `e` (see `WriterState::legacy_events`).
fn legacy_duplicate(conn: &Connection, e: &NewEvent) -> Result<bool, StoreError> {
    conn.prepare_cached(LEGACY_DUPLICATE)
        .and_then(|mut s| s.query_row(params![e.message_id, e.dedup_key], |r| r.get(0)))
        .map_err(db_error)
}

/// Inserts `e` with its identity; false if its source already stored its
/// id or business key (the insert's `ON CONFLICT DO NOTHING`).
fn insert_event(insert: &mut Statement<'_>, e: &NewEvent, ident: i64) -> Result<bool, StoreError> {
    let inserted = insert
        .execute(params![
            e.message_id,
            e.dedup_key,
            e.kind.as_str(),
            e.event,
            e.user_id,
            e.anonymous_id,
            e.group_id,
            e.previous_id,
            e.install_id,
            tracked(e.seq),
            e.session_id,
            e.session_index.and_then(|i| i64::try_from(i).ok()),
            priority_str(e.priority),
            e.timestamp,
            e.sent_at,
            e.received_at,
            e.ts_corrected,
            e.clamped,
            e.raw,
            ident,
            e.source,
        ])
        .map_err(db_error)?;
    Ok(inserted > 0)
}

/// The batch's event names, and its active slots the writer does not
/// already know are stored.
fn write_activity(
    conn: &Connection,
    known: &mut Known,
    activity: &query::Activity<'_>,
) -> Result<(), StoreError> {
    for name in &activity.names {
        conn.prepare_cached("INSERT INTO event_names (name) VALUES (?1) ON CONFLICT DO NOTHING")
            .and_then(|mut s| s.execute([name]))
            .map_err(db_error)?;
    }
    for (slot, ident) in &activity.slots {
        if !known.slots.insert((*slot, *ident)) {
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO active_slots (slot, ident) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| s.execute([slot, ident]))
        .map_err(db_error)?;
    }
    Ok(())
}

/// Adds the batch's counts to the counters, and what it kept of dead
/// letters if it wrote any.
fn write_counters(conn: &Connection, pass: &Pass<'_>) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE counters SET accepted = accepted + ?1, duplicate = duplicate + ?2, \
         rejected = rejected + ?3, stored = stored + ?1 WHERE id = 0",
    )
    .and_then(|mut s| s.execute(params![pass.accepted, pass.duplicate, pass.rejected]))
    .map_err(db_error)?;
    if let Some(b) = &pass.budget {
        conn.prepare_cached(
            "UPDATE counters SET dead_letter_rows = dead_letter_rows + ?1, \
             dead_letter_bytes = dead_letter_bytes + ?2, \
             dead_letters_not_kept = dead_letters_not_kept + ?3, \
             dead_letters_truncated = dead_letters_truncated + ?4 WHERE id = 0",
        )
        .and_then(|mut s| s.execute(params![b.kept_rows, b.kept_bytes, b.not_kept, b.truncated]))
        .map_err(db_error)?;
    }
    Ok(())
}

/// One batch, in the current group: each event's outcome, then the
/// batch's dead letters, identity links ([`links`]), completeness
/// ([`install_deltas`]), rollups, counters and health.
fn write_events(
    state: &mut WriterState,
    events: &[NewEvent],
    dead_letters: &[DeadLetter],
) -> Result<Vec<WriteOutcome>, StoreError> {
    let WriterState {
        conn,
        known,
        tombstones_exist,
        legacy_events,
        dead_letter_limits: limits,
        ..
    } = state;
    let conn = &*conn;
    if known.len() > KNOWN_CAPACITY {
        known.clear();
    }
    let owners = install_owners(conn, known, events)?;
    // An install's completeness is its own source's: another source's
    // events for it are stored, but neither mark its seqs seen nor
    // report its drops.
    let own_install = |e: &'_ NewEvent| -> bool {
        e.install_id
            .as_deref()
            .is_some_and(|i| owns(owners.get(i).and_then(Option::as_deref), &e.source))
    };
    let mut pass = Pass {
        outcomes: Vec::with_capacity(events.len()),
        ..Pass::default()
    };
    let mut insert = conn.prepare_cached(INSERT_EVENT).map_err(db_error)?;
    for e in events {
        let reason = refusal(
            e,
            own_install(e),
            || Ok(*tombstones_exist && refused(conn, e)?),
            || alias_of_identified_user(conn, e),
        )?;
        if let Some(reason) = reason {
            let letter = DeadLetter::refused(e, reason);
            write_dead_letter(conn, &mut pass.budget, *limits, &letter)?;
            pass.refuse(reason);
            continue;
        }
        if *legacy_events && legacy_duplicate(conn, e)? {
            pass.duplicate();
            continue;
        }
        let ident = pass.ident(conn, known, e)?;
        if !insert_event(&mut insert, e, ident)? {
            pass.duplicate();
            continue;
        }
        pass.accept(e, ident);
    }
    drop(insert);
    for d in dead_letters {
        write_dead_letter(conn, &mut pass.budget, *limits, d)?;
        pass.rejected += 1;
    }
    write_links(conn, links(events, &pass.outcomes).values())?;
    let deltas = install_deltas(events, &pass.outcomes, own_install);
    write_installs(conn, &deltas)?;
    // Each install written is now its batch's source's (it was no one's,
    // or already that source's); one another source owns keeps its owner.
    for (install, delta) in &deltas {
        known
            .owners
            .insert((*install).to_owned(), delta.source.to_owned());
    }
    for (install, owner) in &owners {
        if let Some(owner) = owner.as_deref().filter(|o| !o.is_empty()) {
            known.owners.insert((*install).to_owned(), owner.to_owned());
        }
    }
    write_activity(conn, known, &pass.activity)?;
    write_counters(conn, &pass)?;
    write_health(
        conn,
        &BatchHealth::of(events, &pass.outcomes, dead_letters, own_install),
    )?;
    Ok(pass.outcomes)
}
