//! The ledger: the crash-safe record of what happened to records — acks
//! with their disposition, policy drops, corrupt stretches — and the
//! cumulative counters and drop ranges derived from them.
//!
//! It is one append-only file (`ledger`) of checksummed entries, synced
//! before [`super::Log::ack`] returns. When it grows past
//! [`COMPACT_BYTES`] it is rewritten (temporary file, sync, rename, sync
//! directory) as one `Base` entry holding the counters, followed by the
//! entries that still refer to segments on disk.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | body length, u32 LE |
//! | 4 | 4 | CRC-32C of the body |
//! | 8 | 1 | kind: 1 ack, 2 drop, 3 corrupt, 4 base, 5 settled |
//! | 9 | … | body fields, integers u64/u32 LE, strings u8 length + UTF-8 |
//!
//! A torn or corrupt entry ends the readable ledger: acks after it are
//! lost, so those records are sent again and the collector deduplicates
//! them — a resend, never a loss.

use std::collections::{BTreeMap, BTreeSet};

/// The ledger is rewritten once it is larger than this; 256 KiB is a few
/// thousand acks, small enough to rewrite in a millisecond.
pub const COMPACT_BYTES: u64 = 256 * 1024;
/// Reasons longer than this are cut (a reason is a short code like `log_full`).
pub const MAX_REASON_BYTES: usize = 64;
/// File name of the ledger in the log directory.
pub const FILE_NAME: &str = "ledger";

/// What became of an acknowledged record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// The collector accepted it (or already had it).
    Delivered,
    /// The collector rejected it, with the reason code it gave.
    Rejected(String),
    /// The SDK gave up on it (quarantined, policy), with a reason code.
    Dropped(String),
}

/// A run of sequence numbers dropped on the device for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRange {
    /// First seq dropped.
    pub first_seq: u64,
    /// Last seq dropped (inclusive).
    pub last_seq: u64,
    /// Why (`log_full`, `expired`, `corrupt`, or the uploader's reason).
    pub reason: String,
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Ack {
        segment: u64,
        offset: u32,
        seq: u64,
        disposition: Disposition,
    },
    Drop {
        first_seq: u64,
        last_seq: u64,
        reason: String,
    },
    Corrupt {
        segment: u64,
        offset: u32,
    },
    Base(Counters),
    /// Written by compaction after a `Base`: marks a record done (or a
    /// corrupt stretch known) without counting it again.
    Settled {
        segment: u64,
        offset: u32,
        corrupt: bool,
    },
}

/// The cumulative counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub delivered: u64,
    pub corrupt: u64,
    pub rejected: BTreeMap<String, u64>,
    pub dropped: BTreeMap<String, u64>,
    pub ranges: Vec<DroppedRange>,
}

/// Reason recorded when the log drops records that fail their checksum or
/// decryption.
pub const REASON_CORRUPT: &str = tally_proto::DropReason::Corrupt.as_str();

impl Counters {
    /// Folds one entry into the counters.
    pub(crate) fn apply(&mut self, entry: &Entry) {
        match entry {
            Entry::Ack {
                seq, disposition, ..
            } => match disposition {
                Disposition::Delivered => self.delivered += 1,
                Disposition::Rejected(r) => *self.rejected.entry(r.clone()).or_default() += 1,
                Disposition::Dropped(r) => self.drop_range(*seq, *seq, r),
            },
            Entry::Drop {
                first_seq,
                last_seq,
                reason,
            } => self.drop_range(*first_seq, *last_seq, reason),
            Entry::Corrupt { .. } => {
                self.corrupt += 1;
                *self.dropped.entry(REASON_CORRUPT.to_owned()).or_default() += 1;
            }
            Entry::Base(base) => *self = base.clone(),
            Entry::Settled { .. } => {}
        }
    }

    fn drop_range(&mut self, first: u64, last: u64, reason: &str) {
        *self.dropped.entry(reason.to_owned()).or_default() += last.saturating_sub(first) + 1;
        // Drops come mostly in seq order, so extending the latest range of
        // the same reason keeps the ledger to a handful of ranges.
        if let Some(r) = self.ranges.iter_mut().rev().find(|r| r.reason == reason) {
            if r.last_seq.checked_add(1) == Some(first) {
                r.last_seq = last;
                return;
            }
        }
        self.ranges.push(DroppedRange {
            first_seq: first,
            last_seq: last,
            reason: reason.to_owned(),
        });
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(MAX_REASON_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_map(out: &mut Vec<u8>, m: &BTreeMap<String, u64>) {
    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
    for (k, v) in m {
        put_str(out, k);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Appends one framed entry to `out`.
pub(crate) fn encode(entry: &Entry, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(32);
    match entry {
        Entry::Ack {
            segment,
            offset,
            seq,
            disposition,
        } => {
            body.push(1);
            body.extend_from_slice(&segment.to_le_bytes());
            body.extend_from_slice(&offset.to_le_bytes());
            body.extend_from_slice(&seq.to_le_bytes());
            match disposition {
                Disposition::Delivered => body.push(0),
                Disposition::Rejected(r) => {
                    body.push(1);
                    put_str(&mut body, r);
                }
                Disposition::Dropped(r) => {
                    body.push(2);
                    put_str(&mut body, r);
                }
            }
        }
        Entry::Drop {
            first_seq,
            last_seq,
            reason,
        } => {
            body.push(2);
            body.extend_from_slice(&first_seq.to_le_bytes());
            body.extend_from_slice(&last_seq.to_le_bytes());
            put_str(&mut body, reason);
        }
        Entry::Corrupt { segment, offset } => {
            body.push(3);
            body.extend_from_slice(&segment.to_le_bytes());
            body.extend_from_slice(&offset.to_le_bytes());
        }
        Entry::Base(c) => {
            body.push(4);
            body.extend_from_slice(&c.delivered.to_le_bytes());
            body.extend_from_slice(&c.corrupt.to_le_bytes());
            put_map(&mut body, &c.rejected);
            put_map(&mut body, &c.dropped);
            body.extend_from_slice(&(c.ranges.len() as u32).to_le_bytes());
            for r in &c.ranges {
                body.extend_from_slice(&r.first_seq.to_le_bytes());
                body.extend_from_slice(&r.last_seq.to_le_bytes());
                put_str(&mut body, &r.reason);
            }
        }
        Entry::Settled {
            segment,
            offset,
            corrupt,
        } => {
            body.push(5);
            body.extend_from_slice(&segment.to_le_bytes());
            body.extend_from_slice(&offset.to_le_bytes());
            body.push(u8::from(*corrupt));
        }
    }
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u8()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn map(&mut self) -> Option<BTreeMap<String, u64>> {
        let n = self.u32()?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = self.str()?;
            m.insert(k, self.u64()?);
        }
        Some(m)
    }
}

fn decode_body(body: &[u8]) -> Option<Entry> {
    let mut c = Cursor(body);
    let entry = match c.u8()? {
        1 => {
            let segment = c.u64()?;
            let offset = c.u32()?;
            let seq = c.u64()?;
            let disposition = match c.u8()? {
                0 => Disposition::Delivered,
                1 => Disposition::Rejected(c.str()?),
                2 => Disposition::Dropped(c.str()?),
                _ => return None,
            };
            Entry::Ack {
                segment,
                offset,
                seq,
                disposition,
            }
        }
        2 => Entry::Drop {
            first_seq: c.u64()?,
            last_seq: c.u64()?,
            reason: c.str()?,
        },
        3 => Entry::Corrupt {
            segment: c.u64()?,
            offset: c.u32()?,
        },
        4 => {
            let delivered = c.u64()?;
            let corrupt = c.u64()?;
            let rejected = c.map()?;
            let dropped = c.map()?;
            let n = c.u32()?;
            // Each range takes at least 17 bytes, so a corrupt count cannot
            // make this loop outrun the body.
            let mut ranges = Vec::with_capacity((n as usize).min(c.0.len() / 17));
            for _ in 0..n {
                ranges.push(DroppedRange {
                    first_seq: c.u64()?,
                    last_seq: c.u64()?,
                    reason: c.str()?,
                });
            }
            Entry::Base(Counters {
                delivered,
                corrupt,
                rejected,
                dropped,
                ranges,
            })
        }
        5 => Entry::Settled {
            segment: c.u64()?,
            offset: c.u32()?,
            corrupt: match c.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            },
        },
        _ => return None,
    };
    c.0.is_empty().then_some(entry)
}

/// What reading a ledger file found.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub counters: Counters,
    /// Records already acknowledged (segment, offset).
    pub done: BTreeSet<(u64, u32)>,
    /// Corrupt stretches already counted (segment, offset).
    pub corrupt: BTreeSet<(u64, u32)>,
    /// Highest segment id mentioned (ids are never reused while referenced).
    pub max_segment: u64,
    /// Length of the readable prefix; anything after is torn or corrupt.
    pub valid_len: usize,
}

/// Appends a compaction entry marking (segment, offset) settled.
pub(crate) fn encode_settled(segment: u64, offset: u32, corrupt: bool, out: &mut Vec<u8>) {
    encode(
        &Entry::Settled {
            segment,
            offset,
            corrupt,
        },
        out,
    );
}

/// Replays ledger bytes. Never panics on any input.
pub(crate) fn replay(bytes: &[u8]) -> Replay {
    let mut out = Replay::default();
    let mut pos = 0;
    while bytes.len() - pos >= 8 {
        let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        let crc = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]);
        let Some(body) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32c::crc32c(body) != crc {
            break;
        }
        let Some(entry) = decode_body(body) else {
            break;
        };
        match &entry {
            Entry::Ack {
                segment, offset, ..
            } => {
                out.done.insert((*segment, *offset));
                out.max_segment = out.max_segment.max(*segment);
            }
            Entry::Corrupt { segment, offset } => {
                out.corrupt.insert((*segment, *offset));
                out.max_segment = out.max_segment.max(*segment);
            }
            Entry::Settled {
                segment,
                offset,
                corrupt,
            } => {
                if *corrupt {
                    out.corrupt.insert((*segment, *offset));
                } else {
                    out.done.insert((*segment, *offset));
                }
                out.max_segment = out.max_segment.max(*segment);
            }
            Entry::Drop { .. } | Entry::Base(_) => {}
        }
        out.counters.apply(&entry);
        pos += 8 + len;
        out.valid_len = pos;
    }
    out
}

/// Length of the readable prefix of ledger bytes (entries with a valid
/// checksum and shape): for tools and the fuzz target. Never panics.
pub fn readable_len(bytes: &[u8]) -> usize {
    replay(bytes).valid_len
}
