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
//! | 52 | 1 | priority | 0 normal, 1 critical |
//! | 53 | n | ciphertext | the payload (one message's JSON), sealed |
//! | 53+n | 16 | tag | Poly1305 tag |
//!
//! Bytes 8..53 are the AEAD's associated data: seq, priority and time are
//! authenticated with the payload, so a flipped bit there fails decryption
//! even if someone recomputes the checksum.

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

fn priority_from(b: u8) -> Option<Priority> {
    match b {
        0 => Some(Priority::Normal),
        1 => Some(Priority::Critical),
        _ => None,
    }
}

/// Seals `payload` in place; returns the frame's header (with checksum)
/// and tag. The frame is `header | payload | tag`.
pub(crate) fn seal(
    cipher: &Cipher,
    seq: u64,
    appended_at_ms: u64,
    priority: Priority,
    payload: &mut [u8],
) -> Option<([u8; HEADER_BYTES], [u8; TAG_BYTES])> {
    let mut head = [0u8; HEADER_BYTES];
    let length = (AAD_BYTES + payload.len() + TAG_BYTES) as u32;
    let nonce = cipher.next_nonce();
    head[0..4].copy_from_slice(&length.to_le_bytes());
    head[8..12].copy_from_slice(&cipher.id.to_le_bytes());
    head[12..36].copy_from_slice(&nonce);
    head[36..44].copy_from_slice(&seq.to_le_bytes());
    head[44..52].copy_from_slice(&appended_at_ms.to_le_bytes());
    head[52] = priority_byte(priority);
    let tag = cipher.seal(&nonce, &head[PREFIX_BYTES..], payload)?;
    let mut crc = crc32c::crc32c(&head[PREFIX_BYTES..]);
    crc = crc32c::crc32c_append(crc, payload);
    crc = crc32c::crc32c_append(crc, &tag);
    head[4..8].copy_from_slice(&crc.to_le_bytes());
    Some((head, tag))
}

/// A frame whose length and checksum are valid (not yet decrypted).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    pub key_id: KeyId,
    pub seq: u64,
    pub appended_at_ms: u64,
    pub priority: Priority,
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
    let Some(priority) = priority_from(bytes[52]) else {
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
        priority,
        len,
        bytes: &bytes[..len],
    })
}
