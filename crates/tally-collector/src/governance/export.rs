//! Export: stored events as NDJSON, ordered by corrected time, in pages
//! (served by [`crate::api::export`] as `GET /v1/export`).
//!
//! # Bounded memory
//!
//! The store is read in pages of [`PAGE_ROWS`] events by a keyset cursor
//! (the last event's corrected time and a tie-breaker), so each page is an
//! index range scan however deep into the window it is, and the next page
//! is read only when the client has taken the previous one (the body is a
//! pull stream): a slow client holds one page, not the window. An export
//! of millions of events costs the server a page of memory.
//!
//! # A line
//!
//! One stored message per line: the message as received, member for member
//! in its order, each value byte for byte as it arrived, except that
//!
//! - `timestamp` is the **corrected** capture time (RFC 3339 UTC with
//!   milliseconds), and the device's own `timestamp` moves to
//!   `originalTimestamp` when the message had none (the Segment Spec's
//!   names for the two);
//! - `receivedAt` is the collector's receipt time (replacing a
//!   `receivedAt` the client may have sent).
//!
//! Members added are appended after the message's own, in the order
//! `originalTimestamp`, `timestamp` (only when the message had none),
//! `receivedAt`.
//!
//! # Window and consistency
//!
//! `from` (inclusive) and `to` (exclusive) bound the corrected time; `to`
//! defaults to now and `from` to the beginning (an export is for taking
//! everything out, so unlike the query endpoints it has no 30-day default).
//! The answer's `Tally-Export-Events` header counts the events in the
//! window when the export started (the CLI's progress bar).
//!
//! `source` (a write key id) restricts the export, and its header's
//! count, to the events that source sent; absent or empty exports every
//! source's, and an id no key has matches no event. The export is
//! not a snapshot: events stored or expired while it runs may or may not
//! be in it. A failure mid-stream aborts the response (the chunked body
//! never ends cleanly), so a client cannot mistake a cut export for a
//! whole one.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use tally_proto::format_timestamp;

use crate::store::{ExportCursor, PersonKind, Store, StoreError};

/// Events per page read from the store: about 0.7 MB of NDJSON for
/// SDK-sized messages, large enough that a page's query cost is spread
/// over many events and small enough to hold one per export.
pub const PAGE_ROWS: usize = 1_000;

/// The header with the number of events in the window.
pub const EVENTS_HEADER: &str = "tally-export-events";

/// An export's position: the next page starts after `cursor`.
pub struct Pages {
    store: Arc<dyn Store>,
    /// One person's events (an access request) instead of a window, of
    /// one source if given.
    person: Option<(PersonKind, String, Option<String>)>,
    /// The window's events of this source only, if given.
    source: Option<String>,
    from: i64,
    to: i64,
    cursor: Option<ExportCursor>,
    done: bool,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Pages {
    /// The pages of the events of `store` with `from <= ts_corrected < to`,
    /// of `source` only if given.
    pub fn new(store: Arc<dyn Store>, from: i64, to: i64, source: Option<String>) -> Pages {
        Pages {
            store,
            person: None,
            source,
            from,
            to,
            cursor: None,
            done: false,
        }
    }

    /// The pages of one person's stored events, in corrected-time order
    /// (`GET /v1/people/{id}/export`; see
    /// [`AdminStore::person_page`](crate::store::AdminStore::person_page)).
    pub fn person(
        store: Arc<dyn Store>,
        kind: PersonKind,
        id: String,
        source: Option<String>,
    ) -> Pages {
        Pages {
            person: Some((kind, id, source)),
            ..Pages::new(store, i64::MIN, i64::MAX, None)
        }
    }

    /// The pages as a stream of NDJSON chunks, for a response body.
    pub fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
        futures_util::stream::unfold(self, |mut pages| async move {
            let chunk = pages.next().await?;
            Some((chunk, pages))
        })
    }

    /// The next page as NDJSON; `None` after the last page or an error.
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.done {
            return None;
        }
        let (from, to, cursor) = (self.from, self.to, self.cursor.take());
        let store = Arc::clone(&self.store);
        let person = self.person.clone();
        let source = self.source.clone();
        let page = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let events = match &person {
                None => {
                    store.export_page(from, to, source.as_deref(), cursor.as_ref(), PAGE_ROWS)?
                }
                Some((kind, id, source)) => {
                    store.person_page(*kind, id, source.as_deref(), cursor.as_ref(), PAGE_ROWS)?
                }
            };
            let mut out = Vec::with_capacity(events.iter().map(|e| e.raw.len() + 96).sum());
            for e in &events {
                write_line(&e.raw, e.ts_corrected, e.received_at, &mut out).map_err(|err| {
                    StoreError::Backend(format!("a stored message is not a JSON object: {err}"))
                })?;
            }
            Ok((out, events.len(), events.last().map(|e| e.cursor.clone())))
        })
        .await;
        match page {
            Ok(Ok((out, n, last))) => {
                self.done = n < PAGE_ROWS;
                self.cursor = last;
                if out.is_empty() {
                    self.done = true;
                    return None;
                }
                Some(Ok(Bytes::from(out)))
            }
            Ok(Err(e)) => {
                self.done = true;
                tracing::error!(error = %e, "export aborted");
                Some(Err(std::io::Error::other("export aborted")))
            }
            Err(e) => {
                self.done = true;
                tracing::error!(error = %e, "export task failed");
                Some(Err(std::io::Error::other("export aborted")))
            }
        }
    }
}

/// The members of a JSON object in their order, values unparsed.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((k.0, v));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// A member name, borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Appends the export line of one stored message (see the module doc),
/// with its newline, to `out`.
pub fn write_line(
    raw: &str,
    ts_corrected: i64,
    received_at: i64,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    let Members(members) = serde_json::from_str(raw)?;
    let corrected = format!("\"{}\"", format_timestamp(ts_corrected));
    let mut device_timestamp: Option<&RawValue> = None;
    let mut has_original = false;
    let mut first = true;
    out.push(b'{');
    let mut member = |out: &mut Vec<u8>, name: &str, value: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, name);
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
    };
    for (name, value) in &members {
        match name.as_ref() {
            "receivedAt" => continue,
            "timestamp" => {
                device_timestamp = Some(value);
                member(out, name, &corrected);
            }
            "originalTimestamp" => {
                has_original = true;
                member(out, name, value.get());
            }
            _ => member(out, name, value.get()),
        }
    }
    match device_timestamp {
        Some(device) if !has_original => member(out, "originalTimestamp", device.get()),
        Some(_) => {}
        None => member(out, "timestamp", &corrected),
    }
    member(
        out,
        "receivedAt",
        &format!("\"{}\"", format_timestamp(received_at)),
    );
    out.extend_from_slice(b"}\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn line(raw: &str, ts: i64, received: i64) -> String {
        let mut out = Vec::new();
        write_line(raw, ts, received, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn members_keep_their_order_and_bytes_and_times_are_the_collectors() {
        let raw = r#"{"type":"track","messageId":"m1","timestamp":"2026-11-01T10:00:00+01:00","properties":{"b":1,"a":[1, 2]},"z\u00e9":null,"receivedAt":"forged"}"#;
        assert_eq!(
            line(raw, 1_700_000_000_123, 1_700_000_000_456),
            "{\"type\":\"track\",\"messageId\":\"m1\",\"timestamp\":\"2023-11-14T22:13:20.123Z\",\
             \"properties\":{\"b\":1,\"a\":[1, 2]},\"zé\":null,\
             \"originalTimestamp\":\"2026-11-01T10:00:00+01:00\",\
             \"receivedAt\":\"2023-11-14T22:13:20.456Z\"}\n"
        );
    }

    #[test]
    fn a_message_without_timestamp_gets_one_and_keeps_its_original() {
        let raw = r#"{"type":"page","originalTimestamp":"2026-01-01T00:00:00Z","name":"Home"}"#;
        assert_eq!(
            line(raw, 0, 1),
            "{\"type\":\"page\",\"originalTimestamp\":\"2026-01-01T00:00:00Z\",\"name\":\"Home\",\
             \"timestamp\":\"1970-01-01T00:00:00.000Z\",\"receivedAt\":\"1970-01-01T00:00:00.001Z\"}\n"
        );
    }

    #[test]
    fn a_line_is_valid_json_with_the_corrected_time() {
        let raw = r#"{"type":"identify","userId":"u\"1","traits":{"x":"\n"}}"#;
        let text = line(raw, 86_400_000, 86_400_001);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["userId"], "u\"1");
        assert_eq!(v["timestamp"], "1970-01-02T00:00:00.000Z");
        assert!(write_line("[1]", 0, 0, &mut Vec::new()).is_err());
    }
}
