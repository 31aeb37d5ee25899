//! How a message is stored in the log: a compact record per event, in a
//! context shared by many ([`Epoch`]), expanded back to the message's JSON
//! when it is sent.
//!
//! Most of a message is the same from one event to the next: the app,
//! device, OS, locale, time zone and library, the identity (install,
//! anonymous id, user id) and the session. The pipeline serializes that
//! once per change as an [`Epoch`] and hands it to the log as the record's
//! context ([`crate::log::Log::append_in`]), which stores it once per
//! segment; the record itself holds only what is the event's own
//! ([`Event`], encoded by [`encode`]). The uploader rebuilds each message
//! with [`expand`]: the JSON it sends is the same, byte for byte, as the
//! message built whole (`tests` below check it).
//!
//! ## Record layout (format byte `0xC1`)
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format, `0xC1` (a message's JSON, all that older versions stored, starts with `{`) |
//! | 1 | kind: 0 track, 1 screen, 2 page, 3 identify, 4 alias, 5 group |
//! | 1 | flags: 1 explicit userId · 2 userId from the epoch · 4 dedup key · 8 critical · 16 previousId · 32 properties or traits · 64 event version |
//! | LEB128 | capture time, Unix ms, zigzag |
//! | 10 | the random bits of the UUIDv7 messageId (its time is the capture time) |
//! | LEB128 | session index |
//! | LEB128? | the event's version in the tracking plan, when its flag is set |
//! | string | event, screen or page name, or groupId (empty for identify and alias) |
//! | string? | userId, previousId, dedup key, properties or traits, each when its flag is set, in that order |
//!
//! A string is its length (LEB128) then its UTF-8 bytes. The seq is the
//! log record's own.
//!
//! Invariants: [`expand`] of what [`encode`] wrote is the message the
//! pipeline would have built whole; a record this module cannot decode
//! (torn by a bug, from a newer format) is reported as such, never sent
//! half-built; a stored message JSON (an older version's record) is
//! returned as it is.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tally_proto::limits::SCHEMA_VERSION;
use tally_proto::{
    format_timestamp, Context, Message, MessageType, Priority, RawJson, TallyContext,
};

pub(crate) mod check;

/// The first byte of a compact record.
pub const FORMAT: u8 = 0xC1;

/// Prefix of the SDK's own event names (`tally.dropped`, `tally.health`).
pub const INTERNAL_PREFIX: &str = tally_proto::INTERNAL_EVENT_PREFIX;

/// What a message shares with the ones around it: the context template
/// (without `context.tally`), the identity and the session. Serialized as
/// JSON, it is the log record's context.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Epoch {
    /// The context template.
    pub context: Context,
    /// The install.
    #[serde(rename = "installId")]
    pub install_id: String,
    /// The install's anonymous id.
    #[serde(rename = "anonymousId")]
    pub anonymous_id: String,
    /// The identified user, if any.
    #[serde(rename = "userId", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The session of the messages in it.
    #[serde(rename = "sessionId")]
    pub session_id: String,
}

impl Epoch {
    /// The bytes the log keeps as the records' context.
    pub fn to_bytes(&self) -> Arc<[u8]> {
        // Every member is a string or a `Context` (strings, numbers, raw
        // JSON): serializing cannot fail.
        Arc::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses a record's context.
    pub fn from_bytes(bytes: &[u8]) -> Result<Epoch, DecodeError> {
        serde_json::from_slice(bytes).map_err(|_| DecodeError::Context)
    }
}

/// What kind of call made the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `track(event, properties)`.
    Track,
    /// `screen(name, properties)`.
    Screen,
    /// `page(name, properties)`.
    Page,
    /// `identify(user_id, traits)`.
    Identify,
    /// `alias(user_id)`.
    Alias,
    /// `group(group_id, traits)`.
    Group,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Track => 0,
            Kind::Screen => 1,
            Kind::Page => 2,
            Kind::Identify => 3,
            Kind::Alias => 4,
            Kind::Group => 5,
        }
    }

    fn from_code(code: u8) -> Option<Kind> {
        Some(match code {
            0 => Kind::Track,
            1 => Kind::Screen,
            2 => Kind::Page,
            3 => Kind::Identify,
            4 => Kind::Alias,
            5 => Kind::Group,
            _ => return None,
        })
    }
}

/// An event's own part of a message, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The call.
    pub kind: Kind,
    /// Capture time, Unix ms.
    pub ts_ms: i64,
    /// The random bits of the messageId.
    pub random: [u8; 10],
    /// The session index.
    pub session_index: u64,
    /// Event or view name, or groupId (empty for identify and alias).
    pub name: &'a str,
    /// The message's own userId (identify, alias); otherwise it has the
    /// epoch's when `inherit_user` is set.
    pub user_id: Option<&'a str>,
    /// Whether a message without its own userId takes the epoch's (the
    /// SDK's own events do not).
    pub inherit_user: bool,
    /// previousId (alias).
    pub previous_id: Option<&'a str>,
    /// The business idempotency key.
    pub dedup_key: Option<&'a str>,
    /// Critical priority.
    pub critical: bool,
    /// Properties (track, screen, page) or traits (identify, group), as
    /// JSON text.
    pub bag: Option<&'a str>,
    /// The event's version in the app's tracking plan.
    pub event_version: Option<u32>,
}

const F_USER: u8 = 1;
const F_INHERIT: u8 = 2;
const F_DEDUP: u8 = 4;
const F_CRITICAL: u8 = 8;
const F_PREVIOUS: u8 = 16;
const F_BAG: u8 = 32;
const F_VERSION: u8 = 64;

/// Why a stored record could not be expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The record is cut short or holds a value this version never writes.
    #[error("the stored record is malformed")]
    Record,
    /// The record names no context, or its context does not parse.
    #[error("the stored record's context is missing or malformed")]
    Context,
}

/// Appends `v` in LEB128.
pub(crate) fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 number from the front of `rest`, advancing it; `None`
/// when `rest` ends first or the number passes 64 bits.
pub(crate) fn take_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A signed number as an unsigned one small when it is near zero.
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_str(s: &str, out: &mut Vec<u8>) {
    put_varint(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// Appends `e`'s compact record to `out`.
pub fn encode(e: &Event<'_>, out: &mut Vec<u8>) {
    let flags = [
        (e.user_id.is_some(), F_USER),
        (e.inherit_user, F_INHERIT),
        (e.dedup_key.is_some(), F_DEDUP),
        (e.critical, F_CRITICAL),
        (e.previous_id.is_some(), F_PREVIOUS),
        (e.bag.is_some(), F_BAG),
        (e.event_version.is_some(), F_VERSION),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .fold(0u8, |f, (_, bit)| f | bit);
    out.push(FORMAT);
    out.push(e.kind.code());
    out.push(flags);
    put_varint(zigzag(e.ts_ms), out);
    out.extend_from_slice(&e.random);
    put_varint(e.session_index, out);
    if let Some(v) = e.event_version {
        put_varint(u64::from(v), out);
    }
    put_str(e.name, out);
    for s in [e.user_id, e.previous_id, e.dedup_key, e.bag]
        .into_iter()
        .flatten()
    {
        put_str(s, out);
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.rest.split_first().ok_or(DecodeError::Record)?;
        self.rest = rest;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Record);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        take_varint(&mut self.rest).ok_or(DecodeError::Record)
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = usize::try_from(self.varint()?).map_err(|_| DecodeError::Record)?;
        std::str::from_utf8(self.bytes(len)?).map_err(|_| DecodeError::Record)
    }

    fn str_if(&mut self, flags: u8, bit: u8) -> Result<Option<&'a str>, DecodeError> {
        if flags & bit == 0 {
            return Ok(None);
        }
        self.str().map(Some)
    }
}

/// Reads a compact record.
pub fn decode(bytes: &[u8]) -> Result<Event<'_>, DecodeError> {
    let mut r = Reader { rest: bytes };
    if r.byte()? != FORMAT {
        return Err(DecodeError::Record);
    }
    let kind = Kind::from_code(r.byte()?).ok_or(DecodeError::Record)?;
    let flags = r.byte()?;
    if flags & !(F_USER | F_INHERIT | F_DEDUP | F_CRITICAL | F_PREVIOUS | F_BAG | F_VERSION) != 0 {
        return Err(DecodeError::Record);
    }
    let ts_ms = unzigzag(r.varint()?);
    let mut random = [0u8; 10];
    random.copy_from_slice(r.bytes(10)?);
    let session_index = r.varint()?;
    let event_version = if flags & F_VERSION != 0 {
        Some(u32::try_from(r.varint()?).map_err(|_| DecodeError::Record)?)
    } else {
        None
    };
    let name = r.str()?;
    let user_id = r.str_if(flags, F_USER)?;
    let previous_id = r.str_if(flags, F_PREVIOUS)?;
    let dedup_key = r.str_if(flags, F_DEDUP)?;
    let bag = r.str_if(flags, F_BAG)?;
    if !r.rest.is_empty() {
        return Err(DecodeError::Record);
    }
    Ok(Event {
        kind,
        ts_ms,
        random,
        session_index,
        name,
        user_id,
        inherit_user: flags & F_INHERIT != 0,
        previous_id,
        dedup_key,
        critical: flags & F_CRITICAL != 0,
        bag,
        event_version,
    })
}

/// The messageId of a message captured at `ts_ms` with these random bits:
/// a UUIDv7, so ids sort by capture time.
pub fn message_id(ts_ms: i64, random: &[u8; 10]) -> String {
    let ms = u64::try_from(ts_ms).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, random)
        .into_uuid()
        .to_string()
}

/// The whole message `e` stands for in `epoch`, as seq `seq`. The
/// context template is cloned from the epoch.
pub fn message(e: &Event<'_>, epoch: &Epoch, seq: u64) -> Message {
    message_in(e, epoch, seq, epoch.context.clone())
}

/// [`message`] with `context` (the epoch's template, moved in) as the
/// message's context; the caller may take it back after serializing.
pub(crate) fn message_in(e: &Event<'_>, epoch: &Epoch, seq: u64, context: Context) -> Message {
    let id = message_id(e.ts_ms, &e.random);
    let ts = format_timestamp(e.ts_ms);
    let bag = e.bag.and_then(|b| RawJson::from_text(b).ok());
    let mut msg = match e.kind {
        Kind::Track => Message {
            properties: bag,
            ..Message::track(id, ts, e.name)
        },
        Kind::Screen => Message {
            properties: bag,
            ..Message::view(MessageType::Screen, id, ts, e.name)
        },
        Kind::Page => Message {
            properties: bag,
            ..Message::view(MessageType::Page, id, ts, e.name)
        },
        Kind::Identify => Message {
            traits: bag,
            ..Message::identify(id, ts, e.user_id.unwrap_or_default())
        },
        Kind::Alias => Message::alias(
            id,
            ts,
            e.previous_id.unwrap_or_default(),
            e.user_id.unwrap_or_default(),
        ),
        Kind::Group => Message {
            traits: bag,
            ..Message::group(id, ts, e.name)
        },
    };
    msg.anonymous_id = Some(epoch.anonymous_id.clone());
    if msg.user_id.is_none() && e.inherit_user {
        msg.user_id = epoch.user_id.clone();
    }
    msg.context = Some(Context {
        tally: Some(TallyContext {
            install_id: Some(epoch.install_id.clone()),
            seq: Some(seq),
            session_id: Some(epoch.session_id.clone()),
            session_index: Some(e.session_index),
            schema: Some(SCHEMA_VERSION),
            priority: e.critical.then_some(Priority::Critical),
            dedup_key: e.dedup_key.map(str::to_owned),
            event_version: e.event_version,
            ..TallyContext::default()
        }),
        ..context
    });
    msg
}

/// Rebuilds messages from stored records, keeping the last context parsed
/// (consecutive records almost always share it).
#[derive(Debug, Default)]
pub struct Expander {
    last: Option<(Arc<[u8]>, Epoch)>,
}

impl Expander {
    /// The message JSON a stored record stands for: a compact record
    /// expanded in its context, or a stored JSON message as it is.
    pub fn json(
        &mut self,
        payload: &[u8],
        context: Option<&Arc<[u8]>>,
        seq: u64,
    ) -> Result<Vec<u8>, DecodeError> {
        if payload.first() != Some(&FORMAT) {
            return Ok(payload.to_vec());
        }
        let event = decode(payload)?;
        let epoch = self.epoch(context)?;
        Ok(message(&event, epoch, seq).to_json().into_bytes())
    }

    /// The userId of the message a stored record stands for.
    pub fn user_id(
        &mut self,
        payload: &[u8],
        context: Option<&Arc<[u8]>>,
    ) -> Result<Option<String>, DecodeError> {
        #[derive(Deserialize)]
        struct UserOf {
            #[serde(rename = "userId")]
            user_id: Option<String>,
        }
        if payload.first() != Some(&FORMAT) {
            return Ok(serde_json::from_slice::<UserOf>(payload)
                .ok()
                .and_then(|m| m.user_id));
        }
        let event = decode(payload)?;
        if let Some(u) = event.user_id {
            return Ok(Some(u.to_owned()));
        }
        let epoch = self.epoch(context)?;
        Ok(epoch.user_id.clone().filter(|_| event.inherit_user))
    }

    fn epoch(&mut self, context: Option<&Arc<[u8]>>) -> Result<&Epoch, DecodeError> {
        let context = context.ok_or(DecodeError::Context)?;
        let same = self
            .last
            .as_ref()
            .is_some_and(|(c, _)| Arc::ptr_eq(c, context) || c[..] == context[..]);
        if !same {
            self.last = Some((Arc::clone(context), Epoch::from_bytes(context)?));
        }
        match &self.last {
            Some((_, epoch)) => Ok(epoch),
            None => Err(DecodeError::Context),
        }
    }
}

#[cfg(test)]
mod tests;
