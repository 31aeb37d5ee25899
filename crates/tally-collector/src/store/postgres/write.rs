//! One batch's write on PostgreSQL, in one transaction holding the
//! deletion lock shared (see [`PostgresStore`]'s `transaction`).
//!
//! What only the store can decide comes first, each in one round trip for
//! the batch: the events of deleted people, the owners of its installs,
//! the user ids an alias would merge, ids stored before sources were
//! recorded. Then in-batch dedup, the dead letters within their budget,
//! the identities, and one statement inserting events and dead letters
//! and counting them (the unique constraints decide dedup across
//! collectors). Then the links of accepted identify and alias calls,
//! completeness, health figures and the tracking plan's findings
//! ([`super::quality`]).

use super::health::write_health;
use super::installs::write_installs;
use super::pool::Conn;
use super::quality::write_quality;
use super::statements::{Prepared, DEAD_LETTER_TOTALS_SQL};
use super::{PostgresStore, IDENT_LOCK};
use crate::store::health::BatchHealth;
use crate::store::identity::{self, Link};
use crate::store::plan::{install_deltas, links, refusal};
use crate::store::quality::QualityFinding;
use crate::store::query;
use crate::store::{
    priority_str, tracked, DeadLetter, DeadLetterBudget, DeadLetterLimits, IngestStore, NewEvent,
    StoreError, WriteOutcome,
};
use ::postgres::Client;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::convert::Infallible;

impl IngestStore for PostgresStore {
    fn write_judged(
        &self,
        events: &[NewEvent],
        dead_letters: &[DeadLetter],
        findings: &[QualityFinding],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let shard = self.shard();
        self.transaction(true, |conn, tombstones_exist| {
            let flags = Flags {
                tombstones_exist,
                legacy_events: self.legacy_events,
                dead_letters: self.dead_letter_limits,
            };
            let outcomes = write(conn, events, dead_letters, shard, flags)?;
            write_quality(&mut conn.client, &conn.prepared, shard, findings, &outcomes)?;
            Ok(outcomes)
        })
    }
}

/// The dead letters a batch keeps, as the insert's arrays.
#[derive(Default)]
struct DeadLetterColumns<'a> {
    sources: Vec<&'a str>,
    ids: Vec<Option<&'a str>>,
    reasons: Vec<&'a str>,
    details: Vec<&'a str>,
    received: Vec<i64>,
    raws: Vec<&'a str>,
    user_ids: Vec<Option<&'a str>>,
    anonymous_ids: Vec<Option<&'a str>>,
    install_ids: Vec<Option<&'a str>>,
    sizes: Vec<i64>,
}

impl<'a> DeadLetterColumns<'a> {
    /// Adds `d`, keeping `raw` of its text.
    fn push(&mut self, d: &'a DeadLetter, raw: &'a str) {
        self.sources.push(&d.source);
        self.ids.push(d.message_id.as_deref());
        self.reasons.push(d.reason.as_str());
        self.details.push(&d.detail);
        self.received.push(d.received_at);
        self.raws.push(raw);
        self.user_ids.push(d.user_id.as_deref());
        self.anonymous_ids.push(d.anonymous_id.as_deref());
        self.install_ids.push(d.install_id.as_deref());
        self.sizes.push(d.raw.len() as i64);
    }
}

/// What a batch's write may skip.
#[derive(Debug, Clone, Copy)]
struct Flags {
    /// Any tombstone exists: check each event's person.
    tombstones_exist: bool,
    /// See [`PostgresStore::legacy_events`].
    legacy_events: bool,
    /// What is kept of rejected messages.
    dead_letters: DeadLetterLimits,
}

/// One batch's write, inside the transaction: what the store knows of
/// its events ([`Found`]), each event's outcome decided ([`decide`]),
/// dead letters within their budget, the identities, one statement for
/// the rows and counters ([`insert`]), then the batch's rollups, links,
/// completeness and health.
fn write(
    conn: &mut Conn,
    events: &[NewEvent],
    dead_letters: &[DeadLetter],
    shard: i32,
    flags: Flags,
) -> Result<Vec<WriteOutcome>, ::postgres::Error> {
    let Conn {
        client, prepared, ..
    } = conn;

    // A batch that links identities re-resolves identities' persons: it
    // waits for the batches creating identities (and they for it), so no
    // identity is created from links older than a committed link.
    if events.iter().any(|e| !identity::links_of(e).is_empty()) {
        client.execute("SELECT pg_advisory_xact_lock($1)", &[&IDENT_LOCK])?;
    }
    let found = Found::read(client, prepared, events, flags)?;
    let own_install = |e: &NewEvent| found.own_install(e);
    let Decided {
        mut outcomes,
        candidates,
        positions,
    } = decide(events, &found);

    // Dead letters: refused events and the batch's rejected messages.
    let refused_letters: Vec<DeadLetter> = events
        .iter()
        .zip(&outcomes)
        .filter_map(|(e, outcome)| match outcome {
            WriteOutcome::Rejected(reason) => Some(DeadLetter::refused(e, *reason)),
            _ => None,
        })
        .collect();
    let letters = Letters::keep(
        client,
        refused_letters.iter().chain(dead_letters),
        flags.dead_letters,
    )?;
    let counts = Counts {
        not_refused: (events.len() - refused_letters.len()) as i64,
        rejected: (refused_letters.len() + dead_letters.len()) as i64,
        shard,
    };
    let ident_ids = ident_ids(client, prepared, &candidates)?;
    let inserted = insert(client, prepared, &candidates, &ident_ids, &letters, counts)?;

    let mut activity = query::Activity::default();
    for ((e, &i), ident) in candidates.iter().zip(&positions).zip(&ident_ids) {
        if inserted.contains(&(e.source.clone(), e.message_id.clone())) {
            outcomes[i] = WriteOutcome::Accepted;
            if let Some(ident) = ident {
                activity.add(e, *ident);
            }
        }
    }
    if !activity.names.is_empty() {
        let names: Vec<&str> = activity.names.iter().copied().collect();
        let slots: Vec<i64> = activity.slots.iter().map(|s| s.0).collect();
        let slot_idents: Vec<i64> = activity.slots.iter().map(|s| s.1).collect();
        client.execute(&prepared.add_activity, &[&names, &slots, &slot_idents])?;
    }
    write_links(client, prepared, &links(events, &outcomes))?;
    write_installs(
        client,
        prepared,
        &install_deltas(events, &outcomes, own_install),
    )?;
    write_health(
        client,
        prepared,
        shard,
        &BatchHealth::of(events, &outcomes, dead_letters, own_install),
    )?;
    Ok(outcomes)
}

/// What the store knows of a batch's events before deciding them, one
/// round trip each.
struct Found {
    /// Positions (from 0) of the events of deleted people.
    refused: HashSet<usize>,
    /// The stored owner of each install of the batch that has one.
    owners: HashMap<String, String>,
    /// The user ids an alias of the batch would merge that have events of
    /// their own (see `identity::merged_user`).
    identified: HashSet<String>,
    /// The batch's ids and business keys already stored by events
    /// recorded before sources were.
    legacy: HashSet<String>,
}

impl Found {
    fn read(
        client: &mut Client,
        prepared: &Prepared,
        events: &[NewEvent],
        flags: Flags,
    ) -> Result<Found, ::postgres::Error> {
        let refused = if flags.tombstones_exist {
            let users: Vec<Option<&str>> = events.iter().map(|e| e.user_id.as_deref()).collect();
            let anons: Vec<Option<&str>> =
                events.iter().map(|e| e.anonymous_id.as_deref()).collect();
            let installs: Vec<Option<&str>> =
                events.iter().map(|e| e.install_id.as_deref()).collect();
            let sources: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
            client
                .query(&prepared.refused, &[&users, &anons, &installs, &sources])?
                .iter()
                .map(|r| r.try_get::<_, i64>(0).map(|n| (n - 1) as usize))
                .collect::<Result<_, _>>()?
        } else {
            HashSet::new()
        };
        // Another source's drop report for an install is refused, and its
        // events touch no completeness.
        let installs: BTreeSet<&str> = events
            .iter()
            .filter_map(|e| e.install_id.as_deref())
            .collect();
        let mut owners = HashMap::new();
        if !installs.is_empty() {
            let list: Vec<&str> = installs.into_iter().collect();
            for row in client.query(&prepared.install_owners, &[&list])? {
                owners.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        let merged: Vec<&str> = events.iter().filter_map(identity::merged_user).collect();
        let identified = if merged.is_empty() {
            HashSet::new()
        } else {
            client
                .query(&prepared.identified_users, &[&merged])?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?
        };
        let legacy = if flags.legacy_events {
            let ids: Vec<&str> = events.iter().map(|e| e.message_id.as_str()).collect();
            let keys: Vec<&str> = events
                .iter()
                .filter_map(|e| e.dedup_key.as_deref())
                .collect();
            client
                .query(&prepared.legacy_duplicates, &[&ids, &keys])?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?
        } else {
            HashSet::new()
        };
        Ok(Found {
            refused,
            owners,
            identified,
            legacy,
        })
    }

    /// Whether `e` has an install of its own source (see
    /// `crate::store::owns`).
    fn own_install(&self, e: &NewEvent) -> bool {
        e.install_id
            .as_deref()
            .is_some_and(|i| crate::store::owns(self.owners.get(i).map(String::as_str), &e.source))
    }
}

/// Each event's outcome as far as it is known before the insert, and the
/// events to insert, sorted by key, with their positions in the batch.
struct Decided<'e> {
    outcomes: Vec<WriteOutcome>,
    candidates: Vec<&'e NewEvent>,
    positions: Vec<usize>,
}

/// Refusals ([`refusal`]), then in-batch dedup: a later message with an
/// id or key already taken by an earlier candidate of the same source,
/// or stored before sources were, is a duplicate without asking. An
/// alias merging a user id carried as its own by an earlier event of the
/// batch is refused like one stored before it.
fn decide<'e>(events: &'e [NewEvent], found: &Found) -> Decided<'e> {
    let mut outcomes = vec![WriteOutcome::Duplicate; events.len()];
    let mut users_so_far: HashSet<&str> = HashSet::new();
    let mut ids: HashSet<(&str, &str)> = HashSet::with_capacity(events.len());
    let mut keys: HashSet<(&str, &str)> = HashSet::new();
    let mut candidates: Vec<(usize, &NewEvent)> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let Ok(refused) = refusal::<Infallible>(
            e,
            found.own_install(e),
            || Ok(found.refused.contains(&i)),
            || {
                Ok(identity::merged_user(e)
                    .is_some_and(|p| found.identified.contains(p) || users_so_far.contains(p)))
            },
        );
        if let Some(reason) = refused {
            outcomes[i] = WriteOutcome::Rejected(reason);
            continue;
        }
        if let Some(user) = e.user_id.as_deref() {
            users_so_far.insert(user);
        }
        let source = e.source.as_str();
        let key = e.dedup_key.as_deref();
        if ids.contains(&(source, e.message_id.as_str()))
            || key.is_some_and(|k| keys.contains(&(source, k)))
            || found.legacy.contains(&e.message_id)
            || key.is_some_and(|k| found.legacy.contains(k))
        {
            continue;
        }
        ids.insert((source, &e.message_id));
        if let Some(k) = key {
            keys.insert((source, k));
        }
        candidates.push((i, e));
    }
    // Sorted by id here rather than by an ORDER BY in the statement (which
    // sorted whole rows on the server, ~30% of the insert's cost): every
    // transaction meets the unique keys in the same order, so concurrent
    // batches wait on one another instead of deadlocking. PostgreSQL's
    // unnest yields the arrays' order; were it ever not to, a deadlock is
    // still detected and retried.
    candidates.sort_unstable_by(|(_, a), (_, b)| {
        (&a.source, &a.message_id).cmp(&(&b.source, &b.message_id))
    });
    let (positions, candidates) = candidates.into_iter().unzip();
    Decided {
        outcomes,
        candidates,
        positions,
    }
}

/// The dead letters a batch keeps within the budget, and the budget's
/// counts.
struct Letters<'a> {
    columns: DeadLetterColumns<'a>,
    budget: DeadLetterBudget,
}

impl<'a> Letters<'a> {
    /// Keeps what the limits allow of `letters`; the totals are read only
    /// if there is a letter to keep.
    fn keep(
        client: &mut Client,
        letters: impl Iterator<Item = &'a DeadLetter> + Clone,
        limits: DeadLetterLimits,
    ) -> Result<Letters<'a>, ::postgres::Error> {
        let mut budget = if letters.clone().next().is_some() {
            let totals = client.query_one(DEAD_LETTER_TOTALS_SQL, &[])?;
            DeadLetterBudget::new(limits, totals.try_get(0)?, totals.try_get(1)?)
        } else {
            DeadLetterBudget::new(limits, 0, 0)
        };
        let mut columns = DeadLetterColumns::default();
        for d in letters {
            if let Some(raw) = budget.keep(&d.raw) {
                columns.push(d, raw);
            }
        }
        Ok(Letters { columns, budget })
    }
}

/// The counter changes of a batch: `accepted` and `duplicate` follow
/// from what the insert returns.
#[derive(Debug, Clone, Copy)]
struct Counts {
    /// Events not refused: inserted or duplicates.
    not_refused: i64,
    /// Refused events and rejected messages.
    rejected: i64,
    /// The counter row the batch adds to.
    shard: i32,
}

/// The batch's events (`candidates`, with their identities), dead letters
/// and counters in one statement ([`INSERT_EVENTS_SQL`](super::statements::INSERT_EVENTS_SQL)); returns the
/// `(source, message_id)` of the events inserted (the others were
/// duplicates).
fn insert(
    client: &mut Client,
    prepared: &Prepared,
    candidates: &[&NewEvent],
    ident_ids: &[Option<i64>],
    letters: &Letters<'_>,
    counts: Counts,
) -> Result<HashSet<(String, String)>, ::postgres::Error> {
    let Counts {
        not_refused,
        rejected,
        shard,
    } = counts;
    let (dl, budget) = (&letters.columns, &letters.budget);
    let text = |f: &dyn Fn(&NewEvent) -> Option<&str>| -> Vec<Option<&str>> {
        candidates.iter().map(|e| f(e)).collect()
    };
    let int = |f: &dyn Fn(&NewEvent) -> Option<i64>| -> Vec<Option<i64>> {
        candidates.iter().map(|e| f(e)).collect()
    };
    let message_ids: Vec<&str> = candidates.iter().map(|e| e.message_id.as_str()).collect();
    let dedup_keys = text(&|e| e.dedup_key.as_deref());
    let kinds: Vec<&str> = candidates.iter().map(|e| e.kind.as_str()).collect();
    let names = text(&|e| e.event.as_deref());
    let user_ids = text(&|e| e.user_id.as_deref());
    let anonymous_ids = text(&|e| e.anonymous_id.as_deref());
    let group_ids = text(&|e| e.group_id.as_deref());
    let previous_ids = text(&|e| e.previous_id.as_deref());
    let install_ids = text(&|e| e.install_id.as_deref());
    let session_ids = text(&|e| e.session_id.as_deref());
    let priorities: Vec<&str> = candidates
        .iter()
        .map(|e| priority_str(e.priority))
        .collect();
    let raws: Vec<&str> = candidates.iter().map(|e| e.raw.as_str()).collect();
    let seqs = int(&|e| tracked(e.seq));
    let session_indexes = int(&|e| e.session_index.and_then(|s| i64::try_from(s).ok()));
    let timestamps = int(&|e| e.timestamp);
    let sent_ats = int(&|e| e.sent_at);
    let received_ats: Vec<i64> = candidates.iter().map(|e| e.received_at).collect();
    let corrected: Vec<i64> = candidates.iter().map(|e| e.ts_corrected).collect();
    let clamped: Vec<bool> = candidates.iter().map(|e| e.clamped).collect();
    let sources: Vec<&str> = candidates.iter().map(|e| e.source.as_str()).collect();
    let dead_letter_counts: Vec<i64> = vec![
        budget.kept_rows,
        budget.kept_bytes,
        budget.not_kept,
        budget.truncated,
    ];
    client
        .query(
            &prepared.insert_events,
            &[
                &message_ids,
                &dedup_keys,
                &kinds,
                &names,
                &user_ids,
                &anonymous_ids,
                &group_ids,
                &previous_ids,
                &install_ids,
                &seqs,
                &session_ids,
                &session_indexes,
                &priorities,
                &timestamps,
                &sent_ats,
                &received_ats,
                &corrected,
                &clamped,
                &raws,
                &not_refused,
                &rejected,
                &shard,
                &dl.ids,
                &dl.reasons,
                &dl.details,
                &dl.received,
                &dl.raws,
                &ident_ids,
                &sources,
                &dl.sources,
                &dl.user_ids,
                &dl.anonymous_ids,
                &dl.install_ids,
                &dl.sizes,
                &dead_letter_counts,
            ],
        )?
        .into_iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// The batch's links ([`links`]) upserted, and the persons of the
/// identities each names re-resolved (see `identity::repoint_sql`).
fn write_links(
    client: &mut Client,
    prepared: &Prepared,
    links: &BTreeMap<(&str, &str), Link<'_>>,
) -> Result<(), ::postgres::Error> {
    if links.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = links.values().map(|l| l.kind).collect();
    let ids: Vec<&str> = links.values().map(|l| l.id).collect();
    let targets: Vec<&str> = links.values().map(|l| l.target).collect();
    let ats: Vec<i64> = links.values().map(|l| l.linked_at).collect();
    client.execute(&prepared.upsert_links, &[&kinds, &ids, &targets, &ats])?;
    for link in links.values() {
        client.execute(&identity::repoint_sql(link.kind, "$1"), &[&link.id])?;
    }
    Ok(())
}

/// The identity id of each event (see `identity::ident_key`), creating
/// the missing identities with their persons resolved from the links.
fn ident_ids(
    client: &mut Client,
    prepared: &Prepared,
    events: &[&NewEvent],
) -> Result<Vec<Option<i64>>, ::postgres::Error> {
    let keys: Vec<(&str, &str, &str)> = events.iter().map(|e| identity::ident_key(e)).collect();
    let distinct: BTreeSet<(&str, &str, &str)> = keys.iter().copied().collect();
    let mut found: HashMap<(String, String, String), i64> = HashMap::new();
    let collect = |found: &mut HashMap<(String, String, String), i64>,
                   rows: Vec<::postgres::Row>|
     -> Result<(), ::postgres::Error> {
        for row in rows {
            found.insert(
                (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?),
                row.try_get(0)?,
            );
        }
        Ok(())
    };
    let (u, a, i) = columns(&distinct);
    collect(
        &mut found,
        client.query(&prepared.select_idents, &[&u, &a, &i])?,
    )?;
    let missing: BTreeSet<(&str, &str, &str)> = distinct
        .iter()
        .filter(|k| !found.contains_key(&owned(k)))
        .copied()
        .collect();
    if !missing.is_empty() {
        client.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&IDENT_LOCK])?;
        let (u, a, i) = columns(&missing);
        collect(
            &mut found,
            client.query(&prepared.insert_idents, &[&u, &a, &i])?,
        )?;
    }
    // Every key is found: the upsert returns the rows it inserted and
    // those another transaction inserted first.
    Ok(keys.iter().map(|k| found.get(&owned(k)).copied()).collect())
}

fn owned(k: &(&str, &str, &str)) -> (String, String, String) {
    (k.0.to_owned(), k.1.to_owned(), k.2.to_owned())
}

fn columns<'a>(
    keys: &BTreeSet<(&'a str, &'a str, &'a str)>,
) -> (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>) {
    (
        keys.iter().map(|k| k.0).collect(),
        keys.iter().map(|k| k.1).collect(),
        keys.iter().map(|k| k.2).collect(),
    )
}
