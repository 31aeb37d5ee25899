//! The record frame. **Frozen layout**: changing a byte here breaks every
//! log already on a device; `tests/log_fixtures.rs` reads files written by
//! each released version to catch it.
//!
//! | offset | size | field | notes |
//! |---|---|---|---|
//! | 0 | 4 | length | bytes after the checksum field, u32 LE |
//! | 4 | 4 | crc32c | CRC-32C of the `length` bytes that follow |
//! | 8 | 4 | key id | u32 LE, the key that sealed the payload |
//! | 12 | 24 | nonce | XChaCha20 nonce |
//! | 36 | 8 | seq | u64 LE, the event's per-install sequence number |
//! | 44 | 8 | appended at | u64 LE, Unix milliseconds (for the age bound) |
//! | 52 | 1 | kind | 0 normal record, 1 critical record, 2 context frame (format 2) |
//! | 53 | n | ciphertext | the payload, sealed |
//! | 53+n | 16 | tag | Poly1305 tag |
//!
//! Bytes 8..53 are the AEAD's associated data: seq, priority and time are
//! authenticated with the payload, so a flipped bit there fails decryption
//! even if someone recomputes the checksum.
//!
//! ## Format 2: contexts written once
//!
//! Most of what an event carries is the same from one event to the next
//! (the app, device and OS, the identity, the session): format 2 stores it
//! once per segment, in a **context frame** (kind 2), whose `seq` field
//! holds the context's number (its *generation*, counted from 1 by each
//! run of the log) and whose payload is the context's bytes. A record's
//! plaintext starts with [`PREFIX_MARKER`] and the generation of the
//! context it belongs to (LEB128; 0 for none), then the payload. The
//! writer puts a context's frame in a segment before the first record
//! that names it, so a crash that keeps a record keeps its context. In a
//! format 1 segment the plaintext is the payload alone.

use tally_proto::Priority;

use super::crypto::{Cipher, KeyId, NONCE_BYTES, TAG_BYTES};

/// Bytes before `length`'s payload: the length and checksum fields.
pub const PREFIX_BYTES: usize = 8;
/// Bytes from `key id` through `priority` (the associated data).
pub const AAD_BYTES: usize = 4 + NONCE_BYTES + 8 + 8 + 1;
/// Offset of the ciphertext in a frame.
pub const HEADER_BYTES: usize = PREFIX_BYTES + AAD_BYTES;
/// A frame's size beyond its payload.
pub const OVERHEAD_BYTES: usize = HEADER_BYTES + TAG_BYTES;
/// Largest payload a record holds: 32× the largest message the collector
/// accepts (`tally_proto::limits::MAX_MESSAGE_BYTES`), so any real event
/// fits, while a corrupt length prefix cannot make recovery allocate more
/// than this.
pub const MAX_PAYLOAD_BYTES: usize = 32 * tally_proto::limits::MAX_MESSAGE_BYTES;
/// Smallest valid value of the `length` field (an empty payload).
pub const MIN_LENGTH: usize = AAD_BYTES + TAG_BYTES;
/// Largest valid value of the `length` field.
pub const MAX_LENGTH: usize = AAD_BYTES + MAX_PAYLOAD_BYTES + TAG_BYTES;

pub(crate) fn priority_byte(p: Priority) -> u8 {
    match p {
        Priority::Normal => 0,
        Priority::Critical => 1,
    }
}

/// The `kind` byte of a context frame.
pub(crate) const KIND_CONTEXT: u8 = 2;

/// The first byte of a format 2 record's plaintext: a message's JSON (all
/// that format 1 stored) never starts with it.
pub(crate) const PREFIX_MARKER: u8 = 0xF5;
/// The longest prefix: the marker and a `u32` in LEB128.
pub(crate) const MAX_PREFIX_BYTES: usize = 6;

/// The prefix of a format 2 record whose context is generation `gen`
/// (0: none); returns its length.
pub(crate) fn encode_prefix(gen: u32, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.push(PREFIX_MARKER);
    let mut v = gen;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.len() - start
}

/// The length of [`encode_prefix`]'s output for `gen`.
#[cfg(test)]
fn prefix_len(gen: u32) -> usize {
    let bits = 32 - gen.leading_zeros() as usize;
    1 + bits.div_ceil(7).max(1)
}

/// Splits a format 2 plaintext into its context generation and payload;
/// `None` when the prefix is missing or malformed.
pub(crate) fn split_prefix(plain: &[u8]) -> Option<(u32, usize)> {
    if plain.first() != Some(&PREFIX_MARKER) {
        return None;
    }
    let mut gen: u64 = 0;
    for (i, &b) in plain.iter().enumerate().skip(1).take(MAX_PREFIX_BYTES - 1) {
        gen |= u64::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return u32::try_from(gen).ok().map(|g| (g, i + 1));
        }
    }
    None
}

/// What a frame holds, from its `kind` byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// An event of this priority.
    Record(Priority),
    /// A context (format 2): `seq` is its generation.
    Context,
}

fn kind_from(b: u8) -> Option<FrameKind> {
    match b {
        0 => Some(FrameKind::Record(Priority::Normal)),
        1 => Some(FrameKind::Record(Priority::Critical)),
        KIND_CONTEXT => Some(FrameKind::Context),
        _ => None,
    }
}

/// Seals a record frame in place: `frame` is `header | payload | tag`
/// with the payload in place; the header (with its checksum) and the tag
/// are written around it. Should the AEAD refuse (only beyond 256 GiB,
/// which the payload bound rules out), the frame is zeroed instead, which
/// recovery and reads count as corrupt.
pub(crate) fn seal(
    cipher: &Cipher,
    seq: u64,
    appended_at_ms: u64,
    priority: Priority,
    frame: &mut [u8],
) {
    seal_kind(cipher, seq, appended_at_ms, priority_byte(priority), frame)
}

/// A whole context frame for generation `gen` holding `context`.
pub(crate) fn context_frame(cipher: &Cipher, gen: u32, at_ms: u64, context: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; OVERHEAD_BYTES + context.len()];
    frame[HEADER_BYTES..HEADER_BYTES + context.len()].copy_from_slice(context);
    seal_kind(cipher, u64::from(gen), at_ms, KIND_CONTEXT, &mut frame);
    frame
}

fn seal_kind(cipher: &Cipher, seq: u64, appended_at_ms: u64, kind: u8, frame: &mut [u8]) {
    let plen = frame.len() - OVERHEAD_BYTES;
    let length = (AAD_BYTES + plen + TAG_BYTES) as u32;
    let nonce = cipher.next_nonce();
    let (head, rest) = frame.split_at_mut(HEADER_BYTES);
    head[0..4].copy_from_slice(&length.to_le_bytes());
    head[8..12].copy_from_slice(&cipher.id.to_le_bytes());
    head[12..36].copy_from_slice(&nonce);
    head[36..44].copy_from_slice(&seq.to_le_bytes());
    head[44..52].copy_from_slice(&appended_at_ms.to_le_bytes());
    head[52] = kind;
    let (payload, tag_out) = rest.split_at_mut(plen);
    let Some(tag) = cipher.seal(&nonce, &head[PREFIX_BYTES..], payload) else {
        frame.fill(0);
        return;
    };
    tag_out.copy_from_slice(&tag);
    // One pass over the contiguous frame after the checksum field.
    let crc = crc32c::crc32c(&frame[PREFIX_BYTES..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// A frame whose length and checksum are valid (not yet decrypted).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    pub key_id: KeyId,
    pub seq: u64,
    pub appended_at_ms: u64,
    pub kind: FrameKind,
    /// The whole frame's size in bytes.
    pub len: usize,
    bytes: &'a [u8],
}

impl Frame<'_> {
    /// Decrypts the payload; `None` when the key does not open it.
    pub(crate) fn open(&self, cipher: &Cipher) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&self.bytes[12..36]);
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&self.bytes[self.len - TAG_BYTES..self.len]);
        let mut payload = self.bytes[HEADER_BYTES..self.len - TAG_BYTES].to_vec();
        cipher
            .open(
                &nonce,
                &self.bytes[PREFIX_BYTES..HEADER_BYTES],
                &mut payload,
                &tag,
            )
            .then_some(payload)
    }
}

impl Frame<'_> {
    /// The record's priority (a context frame is in no lane of its own).
    pub(crate) fn priority(&self) -> Priority {
        match self.kind {
            FrameKind::Record(p) => p,
            FrameKind::Context => Priority::Normal,
        }
    }
}

/// What the bytes at a frame boundary hold.
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    /// A frame with a valid length and checksum.
    Frame(Frame<'a>),
    /// The bytes end before the frame does: a torn write at the tail.
    Incomplete,
    /// The length field is out of bounds: nothing after it can be trusted
    /// to be a frame boundary.
    BadLength,
    /// The length is plausible but the checksum does not match (or a field
    /// holds a value this version never writes); `len` is what the length
    /// field claims.
    BadChecksum { len: usize },
}

/// Parses the frame at the start of `bytes`. Never panics.
pub(crate) fn parse(bytes: &[u8]) -> Parsed<'_> {
    if bytes.len() < PREFIX_BYTES {
        return Parsed::Incomplete;
    }
    let length = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
        return Parsed::BadLength;
    }
    let len = PREFIX_BYTES + length;
    if bytes.len() < len {
        return Parsed::Incomplete;
    }
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if crc32c::crc32c(&bytes[PREFIX_BYTES..len]) != crc {
        return Parsed::BadChecksum { len };
    }
    let Some(kind) = kind_from(bytes[52]) else {
        return Parsed::BadChecksum { len };
    };
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    Parsed::Frame(Frame {
        key_id: u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        seq: u64_at(36),
        appended_at_ms: u64_at(44),
        kind,
        len,
        bytes: &bytes[..len],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_round_trip_and_json_is_never_one() {
        for gen in [0u32, 1, 127, 128, 16_383, 16_384, u32::MAX] {
            let mut out = vec![];
            let n = encode_prefix(gen, &mut out);
            assert_eq!(n, prefix_len(gen), "{gen}");
            assert!(n <= MAX_PREFIX_BYTES);
            out.extend_from_slice(b"payload");
            assert_eq!(split_prefix(&out), Some((gen, n)), "{gen}");
        }
        assert_eq!(prefix_len(0), 2);
        assert_eq!(prefix_len(128), 3);
        assert_eq!(split_prefix(br#"{"type":"track"}"#), None);
        assert_eq!(
            split_prefix(&[PREFIX_MARKER, 0x80, 0x80]),
            None,
            "cut short"
        );
        assert_eq!(
            split_prefix(&[PREFIX_MARKER, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            None,
            "over u32"
        );
    }
}
