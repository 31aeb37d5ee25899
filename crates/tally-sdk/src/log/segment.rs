//! Segment files: naming, the versioned header, and the recovery scan.
//!
//! **Frozen layout** of the 32-byte header (fixtures in
//! `tests/fixtures/log/` pin it):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `TALLYSEG` |
//! | 8 | 2 | format version, u16 LE (2; 1 is still read) |
//! | 10 | 1 | lane: 0 normal, 1 critical |
//! | 11 | 1 | reserved, 0 |
//! | 12 | 8 | segment id, u64 LE |
//! | 20 | 8 | created at, Unix ms, u64 LE |
//! | 28 | 4 | CRC-32C of bytes 0..28 |
//!
//! Frames ([`super::record`]) follow the header back to back.

use tally_proto::Priority;

use super::record::{self, Parsed};

/// Magic bytes at the start of every segment.
pub const MAGIC: &[u8; 8] = b"TALLYSEG";
/// The format version this code writes: 2 stores contexts once (see
/// [`super::record`]).
pub const VERSION: u16 = 2;
/// The oldest format version this code reads.
pub const OLDEST_VERSION: u16 = 1;
/// Size of the segment header.
pub const HEADER_BYTES: usize = 32;
/// File name suffix of segments.
pub const SUFFIX: &str = ".seg";

/// Which priority lane a segment holds. Lanes live in separate files so a
/// long-kept critical event never pins a file full of acknowledged normal
/// ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    /// Critical events: read first, dropped last.
    Critical,
    /// Everything else.
    Normal,
}

impl Lane {
    pub(crate) const ALL: [Lane; 2] = [Lane::Critical, Lane::Normal];

    pub(crate) fn of(p: Priority) -> Lane {
        match p {
            Priority::Critical => Lane::Critical,
            Priority::Normal => Lane::Normal,
        }
    }
    /// The other lane.
    pub(crate) fn other(self) -> Lane {
        match self {
            Lane::Critical => Lane::Normal,
            Lane::Normal => Lane::Critical,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Lane::Critical => 0,
            Lane::Normal => 1,
        }
    }
    fn letter(self) -> char {
        match self {
            Lane::Critical => 'c',
            Lane::Normal => 'n',
        }
    }
    fn byte(self) -> u8 {
        match self {
            Lane::Normal => 0,
            Lane::Critical => 1,
        }
    }
}

/// `<id as 16 hex digits>-<c|n>.seg`: names sort by id.
pub(crate) fn file_name(id: u64, lane: Lane) -> String {
    format!("{id:016x}-{}{SUFFIX}", lane.letter())
}

/// The id and lane a segment file name stands for.
pub(crate) fn parse_name(name: &str) -> Option<(u64, Lane)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (id, lane) = stem.split_once('-')?;
    if id.len() != 16 {
        return None;
    }
    let lane = match lane {
        "c" => Lane::Critical,
        "n" => Lane::Normal,
        _ => return None,
    };
    Some((u64::from_str_radix(id, 16).ok()?, lane))
}

pub(crate) fn header(id: u64, lane: Lane, created_at_ms: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10] = lane.byte();
    h[12..20].copy_from_slice(&id.to_le_bytes());
    h[20..28].copy_from_slice(&created_at_ms.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a segment's header says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// A valid header of a version this code reads.
    Valid(u16),
    /// Shorter than a header: the file was created but its header never
    /// made it to disk.
    Torn,
    /// Magic or checksum wrong: the header is corrupt (frames may still be
    /// readable).
    Corrupt,
    /// A valid header of a newer format this code cannot read.
    Newer(u16),
}

pub(crate) fn check_header(bytes: &[u8]) -> Header {
    if bytes.len() < HEADER_BYTES {
        return Header::Torn;
    }
    let crc = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    if &bytes[0..8] != MAGIC || crc32c::crc32c(&bytes[..28]) != crc {
        return Header::Corrupt;
    }
    match u16::from_le_bytes([bytes[8], bytes[9]]) {
        v @ OLDEST_VERSION..=VERSION => Header::Valid(v),
        v => Header::Newer(v),
    }
}

/// A record found by the scan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Found {
    pub offset: usize,
    pub len: usize,
    pub key_id: u32,
    pub seq: u64,
    pub appended_at_ms: u64,
}

/// Everything the scan learned about one segment's bytes.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Records with a valid length and checksum, in file order.
    pub records: Vec<Found>,
    /// Context frames (format 2) with a valid length and checksum; their
    /// `seq` is the context's generation.
    pub contexts: Vec<Found>,
    /// Offsets where a corrupt stretch starts (one per stretch skipped).
    pub corrupt: Vec<usize>,
    /// Where the good bytes end; anything after is a torn tail.
    pub valid_len: usize,
}

/// Scans `bytes` (a whole segment file) for frames, skipping corrupt
/// stretches and stopping at a torn tail. `plausible_key` filters resync
/// candidates so that scanning for the next frame after corruption does not
/// checksum every byte offset. Never panics on any input.
pub(crate) fn scan(bytes: &[u8], plausible_key: &dyn Fn(u32) -> bool) -> Scan {
    let mut out = Scan::default();
    let mut pos = HEADER_BYTES.min(bytes.len());
    out.valid_len = pos;
    while pos < bytes.len() {
        match record::parse(&bytes[pos..]) {
            Parsed::Frame(f) => {
                let found = match f.kind {
                    record::FrameKind::Record(_) => &mut out.records,
                    record::FrameKind::Context => &mut out.contexts,
                };
                found.push(Found {
                    offset: pos,
                    len: f.len,
                    key_id: f.key_id,
                    seq: f.seq,
                    appended_at_ms: f.appended_at_ms,
                });
                pos += f.len;
                out.valid_len = pos;
            }
            Parsed::Incomplete => match resync(bytes, pos + 1, plausible_key) {
                // A frame further on means this one's length was corrupt,
                // not that the write was torn.
                Some(next) => {
                    out.corrupt.push(pos);
                    pos = next;
                }
                None => break,
            },
            Parsed::BadLength => {
                if bytes[pos..].iter().all(|&b| b == 0) {
                    // Zeros to the end: space the filesystem allocated but
                    // whose data never landed (a torn tail).
                    break;
                }
                out.corrupt.push(pos);
                match resync(bytes, pos + 1, plausible_key) {
                    Some(next) => pos = next,
                    None => {
                        out.valid_len = bytes.len();
                        break;
                    }
                }
            }
            Parsed::BadChecksum { len } => {
                out.corrupt.push(pos);
                let next = pos + len;
                let boundary = next == bytes.len()
                    || matches!(record::parse(&bytes[next..]), Parsed::Frame(_));
                if boundary {
                    pos = next;
                    out.valid_len = pos;
                } else {
                    match resync(bytes, pos + 1, plausible_key) {
                        Some(n) => pos = n,
                        None => {
                            out.valid_len = bytes.len();
                            break;
                        }
                    }
                }
            }
        }
    }
    out
}

fn resync(bytes: &[u8], from: usize, plausible_key: &dyn Fn(u32) -> bool) -> Option<usize> {
    (from..bytes
        .len()
        .saturating_sub(record::PREFIX_BYTES + record::MIN_LENGTH - 1))
        .find(|&p| {
            let b = &bytes[p..];
            let key = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
            plausible_key(key) && matches!(record::parse(b), Parsed::Frame(_))
        })
}

/// What [`scan_bytes`] found in a segment file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanSummary {
    /// The header is valid and of this version.
    pub header_valid: bool,
    /// Record frames with a valid length and checksum.
    pub records: usize,
    /// Context frames with a valid length and checksum.
    pub contexts: usize,
    /// Corrupt stretches skipped.
    pub corrupt: usize,
    /// Where the good bytes end (a torn tail follows).
    pub valid_len: usize,
}

/// Runs the recovery scan over a segment file's bytes without any key: for
/// tools and the fuzz target. Never panics on any input.
pub fn scan_bytes(bytes: &[u8]) -> ScanSummary {
    scan_bytes_with_keys(bytes, &[])
}

/// The scan recovery runs over a segment file's bytes when the log's key
/// ids are `keys` (empty: any key id): past a corrupt stretch it resumes at
/// the next frame sealed with one of them, so the frames it finds can
/// differ from [`scan_bytes`]'s, which resumes at any frame. Never panics.
pub fn scan_bytes_with_keys(bytes: &[u8], keys: &[u32]) -> ScanSummary {
    let scan = scan(bytes, &|k| keys.is_empty() || keys.contains(&k));
    ScanSummary {
        header_valid: matches!(check_header(bytes), Header::Valid(_)),
        records: scan.records.len(),
        contexts: scan.contexts.len(),
        corrupt: scan.corrupt.len(),
        valid_len: scan.valid_len,
    }
}
