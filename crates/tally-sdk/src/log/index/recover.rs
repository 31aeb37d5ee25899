//! Recovery: the index rebuilt from what is on disk when the log opens
//! (or is inspected).
//!
//! The ledger is replayed first, then every segment is scanned in id
//! order: a torn tail (a write a crash cut short) is cut off, a record
//! that fails its checksum or does not open under its key is counted
//! corrupt in the ledger, and a segment of a newer format version stops
//! the open rather than being misread.
//!
//! Invariants: without `writable` (`inspect`) nothing on disk is changed;
//! with it, everything recovery decides (truncations, corruption counted,
//! fully acknowledged segments deleted) is durable before the log accepts
//! an append, so a second recovery finds the same index.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::crypto::{KeyId, KeyProvider};
use super::super::fs::Filesystem;
use super::super::ledger::{self, Entry};
use super::super::record::{self, Parsed};
use super::super::segment::{self, Header, Lane};
use super::super::{LogError, OpenError};
use super::{is_not_found, Counts, Meta, Seg, State};

/// What recovery found, for the open path and `inspect`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Recovered {
    pub disk_bytes: u64,
    pub records: u64,
    pub torn_bytes: u64,
}

impl State {
    /// Rebuilds the index from the directory. With `writable`, torn tails
    /// are truncated, newly found corruption is written to the ledger and
    /// fully acknowledged segments are deleted; without, nothing is written.
    pub(crate) fn recover(
        dir: &Path,
        fs: Arc<dyn Filesystem>,
        keys: Arc<dyn KeyProvider>,
        counts: Arc<Counts>,
        writable: bool,
    ) -> Result<(State, Recovered), OpenError> {
        if writable {
            fs.create_dir_all(dir)?;
        }
        let names = match fs.list(dir) {
            Ok(n) => n,
            Err(e) if !writable && is_not_found(&e) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let ledger_path = dir.join(ledger::FILE_NAME);
        let ledger_bytes = match fs.read(&ledger_path) {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let replay = ledger::replay(&ledger_bytes);
        let mut ledger_file = None;
        if writable && !ledger_bytes.is_empty() {
            let mut f = fs.open(&ledger_path)?;
            if replay.valid_len < ledger_bytes.len() {
                f.set_len(replay.valid_len as u64)?;
                f.sync_data()?;
            }
            ledger_file = Some(f);
        }
        let mut state = State {
            dir: dir.to_path_buf(),
            fs: fs.clone(),
            keys: keys.clone(),
            segs: BTreeMap::new(),
            ciphers: BTreeMap::new(),
            key_refs: BTreeMap::new(),
            current_key: 0,
            counters: replay.counters.clone(),
            ledger: ledger_file,
            ledger_len: replay.valid_len as u64,
            ledger_backlog: Vec::new(),
            next_segment: replay.max_segment + 1,
            persistence_errors: 0,
            last_error: None,
            counts,
            writable,
            retained_key: Arc::default(),
        };
        let known_keys: BTreeSet<KeyId> = keys.list().unwrap_or_default().into_iter().collect();
        let plausible = |k: KeyId| known_keys.is_empty() || known_keys.contains(&k);
        let mut found = Recovered::default();
        let mut new_entries = Vec::new();
        let mut segments: Vec<(u64, Lane, &String)> = names
            .iter()
            .filter_map(|n| segment::parse_name(n).map(|(id, lane)| (id, lane, n)))
            .collect();
        segments.sort();
        let mut removed_any = false;
        for (id, lane, name) in segments {
            state.next_segment = state.next_segment.max(id + 1);
            let path = dir.join(name);
            let bytes = match fs.read(&path) {
                Ok(b) => b,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            found.disk_bytes += bytes.len() as u64;
            let mut seg = Seg::new(id, lane, path.clone(), true);
            match segment::check_header(&bytes) {
                Header::Valid(version) => seg.version = version,
                Header::Torn => {
                    // Created but never synced past its header: nothing in
                    // it was ever flushed.
                    found.torn_bytes += bytes.len() as u64;
                    if writable {
                        fs.remove(&path)?;
                        removed_any = true;
                    }
                    continue;
                }
                Header::Newer(version) => {
                    return Err(OpenError::UnsupportedVersion {
                        segment: name.clone(),
                        version,
                    })
                }
                Header::Corrupt => {
                    seg.corrupt.insert(0);
                    if !replay.corrupt.contains(&(id, 0)) {
                        new_entries.push(Entry::Corrupt {
                            segment: id,
                            offset: 0,
                        });
                    }
                }
            }
            let scan = segment::scan(&bytes, &plausible);
            for &off in &scan.corrupt {
                let off = off as u32;
                seg.corrupt.insert(off);
                if !replay.corrupt.contains(&(id, off)) {
                    new_entries.push(Entry::Corrupt {
                        segment: id,
                        offset: off,
                    });
                }
            }
            if scan.valid_len < bytes.len() {
                found.torn_bytes += (bytes.len() - scan.valid_len) as u64;
                if writable {
                    let mut f = fs.open(&path)?;
                    f.set_len(scan.valid_len as u64)?;
                    f.sync_data()?;
                }
            }
            for c in &scan.contexts {
                if let Ok(gen) = u32::try_from(c.seq) {
                    seg.contexts.found(
                        gen,
                        super::contexts::ContextMeta {
                            offset: c.offset as u32,
                            len: c.len as u32,
                            key: c.key_id,
                        },
                    );
                }
            }
            for r in &scan.records {
                found.records += 1;
                let offset = r.offset as u32;
                let done =
                    replay.done.contains(&(id, offset)) || replay.corrupt.contains(&(id, offset));
                let mut meta = Meta {
                    offset,
                    len: r.len as u32,
                    seq: r.seq,
                    appended_at_ms: r.appended_at_ms,
                    key: r.key_id,
                    done,
                };
                if !done && writable {
                    // Pending records must open: a wrong or deleted key
                    // makes the record corrupt now, not at send time.
                    let opens = state.cipher(r.key_id).ok().flatten().is_some_and(|c| {
                        matches!(record::parse(&bytes[r.offset..]), Parsed::Frame(f) if f.open(&c).is_some())
                    });
                    if !opens {
                        meta.done = true;
                        seg.corrupt.insert(offset);
                        new_entries.push(Entry::Corrupt {
                            segment: id,
                            offset,
                        });
                    }
                }
                if !meta.done {
                    seg.pending += 1;
                    *state.key_refs.entry(meta.key).or_default() += 1;
                    state.counts.events.fetch_add(1, Ordering::AcqRel);
                    state
                        .counts
                        .bytes
                        .fetch_add(u64::from(meta.len), Ordering::AcqRel);
                }
                seg.records.push(meta);
            }
            state.segs.insert(id, seg);
        }
        if removed_any {
            fs.sync_dir(dir)?;
        }
        if writable {
            let mut bytes = Vec::new();
            for e in &new_entries {
                state.counters.apply(e);
                ledger::encode(e, &mut bytes);
            }
            state.append_ledger(&bytes).map_err(|e| match e {
                LogError::Io(m) => OpenError::Io(io::Error::other(m)),
                other => OpenError::Io(io::Error::other(other.to_string())),
            })?;
            state.reap();
        } else {
            for e in &new_entries {
                state.counters.apply(e);
            }
        }
        Ok((state, found))
    }
}
