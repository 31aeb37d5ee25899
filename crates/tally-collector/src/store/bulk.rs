//! Bulk loading for benchmarks: `tally bench seed` writes millions of
//! events straight into a store's tables, bypassing the per-batch write
//! path (dedup answers, completeness, tombstone checks) that a benchmark
//! of the *query* side does not need, at a fraction of its cost.
//!
//! The result is the state the write path would have left: every event
//! with its identity (`idents`), identity links of the `identify` events,
//! persons resolved by the shared rule (`identity::IDENT_PERSON_SQL`, run
//! once at the end), `event_names`, `active_slots` and the counters.
//! Message ids must be new: a repeated id is an error, not a duplicate.
//! Never used by the collector itself: compiled only with the `bench`
//! feature, which tally-cli enables for its bench command.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::identity::{self, Link};
use super::query::{is_internal, slot_of};
use super::{postgres::pg_error, sqlite::db_error, NewEvent, StoreError};

/// Writes events in chunks, then derives what depends on all of them.
pub trait BulkLoader {
    /// Writes one chunk of events (with their identities and links) in
    /// one transaction.
    fn load(&mut self, events: &[NewEvent]) -> Result<(), StoreError>;
    /// Resolves persons, writes the rollups and counters, and refreshes
    /// the planner's statistics.
    fn finish(self: Box<Self>) -> Result<(), StoreError>;
}

/// A loader for the store `open` would open: SQLite in `data_dir`, or
/// PostgreSQL at `database_url`. Migrations run first.
pub fn loader(
    data_dir: &Path,
    database_url: Option<&str>,
) -> Result<Box<dyn BulkLoader>, StoreError> {
    let store = super::open(data_dir, database_url)?;
    drop(store);
    match database_url {
        Some(url) => {
            let mut client =
                ::postgres::Client::connect(url, ::postgres::NoTls).map_err(pg_error)?;
            let state = State::read(|sql| {
                client
                    .query(sql, &[])
                    .map_err(pg_error)?
                    .iter()
                    .map(|r| {
                        Ok((
                            (
                                r.try_get(1).map_err(pg_error)?,
                                r.try_get(2).map_err(pg_error)?,
                                r.try_get(3).map_err(pg_error)?,
                            ),
                            r.try_get(0).map_err(pg_error)?,
                        ))
                    })
                    .collect()
            })?;
            Ok(Box::new(PostgresBulk { client, state }))
        }
        None => {
            let path = data_dir.join(super::SQLITE_FILE_NAME);
            let conn = rusqlite::Connection::open(&path).map_err(db_error)?;
            // A benchmark fixture: a crash while seeding means seeding again.
            conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;")
                .map_err(db_error)?;
            let state = State::read(|sql| {
                let mut s = conn.prepare(sql).map_err(db_error)?;
                let rows = s
                    .query_map([], |r| Ok(((r.get(1)?, r.get(2)?, r.get(3)?), r.get(0)?)))
                    .map_err(db_error)?;
                rows.collect::<Result<_, _>>().map_err(db_error)
            })?;
            Ok(Box::new(SqliteBulk { conn, state }))
        }
    }
}

type Key = (String, String, String);

/// What the loader tracks across chunks.
#[derive(Debug, Default)]
struct State {
    idents: HashMap<Key, i64>,
    next_ident: i64,
    names: HashSet<String>,
    slots: HashSet<(i64, i64)>,
    loaded: i64,
}

impl State {
    fn read(
        query: impl FnOnce(&str) -> Result<Vec<(Key, i64)>, StoreError>,
    ) -> Result<State, StoreError> {
        let idents: HashMap<Key, i64> =
            query("SELECT id, user_id, anonymous_id, install_id FROM idents")?
                .into_iter()
                .collect();
        let next_ident = idents.values().copied().max().unwrap_or(0) + 1;
        Ok(State {
            idents,
            next_ident,
            ..State::default()
        })
    }

    /// The identity of `e`, and whether it is new.
    fn ident(&mut self, e: &NewEvent) -> (i64, Option<Key>) {
        let (u, a, i) = identity::ident_key(e);
        let key = (u.to_owned(), a.to_owned(), i.to_owned());
        if let Some(id) = self.idents.get(&key) {
            return (*id, None);
        }
        let id = self.next_ident;
        self.next_ident += 1;
        self.idents.insert(key.clone(), id);
        (id, Some(key))
    }

    fn account(&mut self, e: &NewEvent, ident: i64) {
        self.loaded += 1;
        if let Some(name) = e.event.as_deref() {
            if !self.names.contains(name) {
                self.names.insert(name.to_owned());
            }
            if !is_internal(name) {
                self.slots.insert((slot_of(e.ts_corrected), ident));
            }
        }
    }
}

/// The earliest link per key wins (the store's conflict rule).
fn links(events: &[NewEvent]) -> Vec<Link<'_>> {
    let mut best: HashMap<(&str, &str), Link<'_>> = HashMap::new();
    for link in events.iter().flat_map(identity::links_of) {
        best.entry((link.kind, link.id))
            .and_modify(|old| {
                if (link.linked_at, link.target) < (old.linked_at, old.target) {
                    *old = link.clone();
                }
            })
            .or_insert(link);
    }
    best.into_values().collect()
}

const UPSERT_LINK: &str =
    "INSERT INTO links (kind, id, target, linked_at) VALUES ($1, $2, $3, $4) \
    ON CONFLICT (kind, id) DO UPDATE SET target = excluded.target, linked_at = excluded.linked_at \
    WHERE (excluded.linked_at, excluded.target) < (links.linked_at, links.target)";

fn priority(e: &NewEvent) -> &'static str {
    match e.priority {
        tally_proto::Priority::Critical => "critical",
        _ => "normal",
    }
}

struct SqliteBulk {
    conn: rusqlite::Connection,
    state: State,
}

impl BulkLoader for SqliteBulk {
    fn load(&mut self, events: &[NewEvent]) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(db_error)?;
        {
            let mut ident_insert = tx
                .prepare_cached(
                    "INSERT INTO idents (id, user_id, anonymous_id, install_id) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(db_error)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (message_id, dedup_key, kind, event, user_id, anonymous_id, \
                     group_id, previous_id, install_id, seq, session_id, session_index, priority, \
                     timestamp, sent_at, received_at, ts_corrected, clamped, raw, ident, source) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                     ?17, ?18, ?19, ?20, ?21)",
                )
                .map_err(db_error)?;
            for e in events {
                let (ident, new) = self.state.ident(e);
                if let Some((u, a, i)) = new {
                    ident_insert
                        .execute(rusqlite::params![ident, u, a, i])
                        .map_err(db_error)?;
                }
                insert
                    .execute(rusqlite::params![
                        e.message_id,
                        e.dedup_key,
                        e.kind.as_str(),
                        e.event,
                        e.user_id,
                        e.anonymous_id,
                        e.group_id,
                        e.previous_id,
                        e.install_id,
                        e.seq.and_then(|s| i64::try_from(s).ok()),
                        e.session_id,
                        e.session_index.and_then(|s| i64::try_from(s).ok()),
                        priority(e),
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
                self.state.account(e, ident);
            }
            let mut link = tx
                .prepare_cached(&UPSERT_LINK.replace('$', "?"))
                .map_err(db_error)?;
            for l in links(events) {
                link.execute(rusqlite::params![l.kind, l.id, l.target, l.linked_at])
                    .map_err(db_error)?;
            }
        }
        tx.commit().map_err(db_error)
    }

    fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(db_error)?;
        tx.execute_batch(&format!(
            "UPDATE idents AS k SET person = {} WHERE person IS NULL",
            identity::IDENT_PERSON_SQL
        ))
        .map_err(db_error)?;
        {
            let mut name = tx
                .prepare("INSERT INTO event_names (name) VALUES (?1) ON CONFLICT DO NOTHING")
                .map_err(db_error)?;
            for n in &self.state.names {
                name.execute([n]).map_err(db_error)?;
            }
            let mut slots: Vec<(i64, i64)> = self.state.slots.iter().copied().collect();
            slots.sort_unstable();
            let mut slot = tx
                .prepare(
                    "INSERT INTO active_slots (slot, ident) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                )
                .map_err(db_error)?;
            for (s, i) in slots {
                slot.execute([s, i]).map_err(db_error)?;
            }
        }
        tx.execute(
            "UPDATE counters SET accepted = accepted + ?1, stored = stored + ?1 WHERE id = 0",
            [self.state.loaded],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        self.conn.execute_batch("ANALYZE").map_err(db_error)
    }
}

struct PostgresBulk {
    client: ::postgres::Client,
    state: State,
}

/// A value in COPY's text format.
fn copy_field(out: &mut String, value: Option<&str>) {
    let Some(v) = value else {
        out.push_str("\\N");
        return;
    };
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn copy_row(out: &mut String, fields: &[Option<&str>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        copy_field(out, *f);
    }
    out.push('\n');
}

impl BulkLoader for PostgresBulk {
    fn load(&mut self, events: &[NewEvent]) -> Result<(), StoreError> {
        use std::io::Write as _;
        let mut idents = String::new();
        let mut rows = String::with_capacity(events.len() * 512);
        for e in events {
            let (ident, new) = self.state.ident(e);
            if let Some((u, a, i)) = new {
                copy_row(
                    &mut idents,
                    &[Some(&ident.to_string()), Some(&u), Some(&a), Some(&i)],
                );
            }
            let num = |v: Option<i64>| v.map(|n| n.to_string());
            let (seq, index) = (
                num(e.seq.and_then(|s| i64::try_from(s).ok())),
                num(e.session_index.and_then(|s| i64::try_from(s).ok())),
            );
            let (ts, sent, received, corrected, id) = (
                num(e.timestamp),
                num(e.sent_at),
                e.received_at.to_string(),
                e.ts_corrected.to_string(),
                ident.to_string(),
            );
            copy_row(
                &mut rows,
                &[
                    Some(&e.message_id),
                    e.dedup_key.as_deref(),
                    Some(e.kind.as_str()),
                    e.event.as_deref(),
                    e.user_id.as_deref(),
                    e.anonymous_id.as_deref(),
                    e.group_id.as_deref(),
                    e.previous_id.as_deref(),
                    e.install_id.as_deref(),
                    seq.as_deref(),
                    e.session_id.as_deref(),
                    index.as_deref(),
                    Some(priority(e)),
                    ts.as_deref(),
                    sent.as_deref(),
                    Some(&received),
                    Some(&corrected),
                    Some(if e.clamped { "t" } else { "f" }),
                    Some(&e.raw),
                    Some(&id),
                    Some(&e.source),
                ],
            );
            self.state.account(e, ident);
        }
        let mut tx = self.client.transaction().map_err(pg_error)?;
        let io = |e: std::io::Error| StoreError::Backend(format!("PostgreSQL COPY: {e}"));
        if !idents.is_empty() {
            let mut w = tx
                .copy_in("COPY idents (id, user_id, anonymous_id, install_id) FROM STDIN")
                .map_err(pg_error)?;
            w.write_all(idents.as_bytes()).map_err(io)?;
            w.finish().map_err(pg_error)?;
        }
        let mut w = tx
            .copy_in(
                "COPY events (message_id, dedup_key, kind, event, user_id, anonymous_id, group_id, \
                 previous_id, install_id, seq, session_id, session_index, priority, timestamp, \
                 sent_at, received_at, ts_corrected, clamped, raw, ident, source) FROM STDIN",
            )
            .map_err(pg_error)?;
        w.write_all(rows.as_bytes()).map_err(io)?;
        w.finish().map_err(pg_error)?;
        for l in links(events) {
            tx.execute(UPSERT_LINK, &[&l.kind, &l.id, &l.target, &l.linked_at])
                .map_err(pg_error)?;
        }
        tx.commit().map_err(pg_error)
    }

    fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        let mut tx = self.client.transaction().map_err(pg_error)?;
        tx.batch_execute(&format!(
            "SELECT setval(pg_get_serial_sequence('idents', 'id'), (SELECT max(id) FROM idents)); \
             UPDATE idents AS k SET person = {} WHERE person IS NULL",
            identity::IDENT_PERSON_SQL
        ))
        .map_err(pg_error)?;
        let names: Vec<&str> = self.state.names.iter().map(String::as_str).collect();
        tx.execute(
            "INSERT INTO event_names (name) SELECT * FROM unnest($1::text[]) ON CONFLICT DO NOTHING",
            &[&names],
        )
        .map_err(pg_error)?;
        let mut slots: Vec<(i64, i64)> = self.state.slots.iter().copied().collect();
        slots.sort_unstable();
        for chunk in slots.chunks(100_000) {
            let s: Vec<i64> = chunk.iter().map(|c| c.0).collect();
            let i: Vec<i64> = chunk.iter().map(|c| c.1).collect();
            tx.execute(
                "INSERT INTO active_slots (slot, ident) SELECT * FROM unnest($1::int8[], $2::int8[]) \
                 ON CONFLICT DO NOTHING",
                &[&s, &i],
            )
            .map_err(pg_error)?;
        }
        tx.execute(
            "UPDATE counters SET accepted = accepted + $1, stored = stored + $1 WHERE shard = 0",
            &[&self.state.loaded],
        )
        .map_err(pg_error)?;
        tx.commit().map_err(pg_error)?;
        // One statement each: VACUUM cannot run inside the implicit
        // transaction of a multi-statement string.
        for table in ["events", "idents", "active_slots"] {
            self.client
                .batch_execute(&format!("VACUUM ANALYZE {table}"))
                .map_err(pg_error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_reads_as_syntax() {
        let mut out = String::new();
        copy_row(
            &mut out,
            &[
                Some("a\tb"),
                None,
                Some(r#"{"q":"x\"y\\z"}"#),
                Some("l1\nl2\r"),
            ],
        );
        assert_eq!(
            out,
            "a\\tb\t\\N\t{\"q\":\"x\\\\\"y\\\\\\\\z\"}\tl1\\nl2\\r\n"
        );
    }
}
