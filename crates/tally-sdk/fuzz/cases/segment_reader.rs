//! One fuzz case of the segment reader and the ledger reader: the key-less scan, and
//! a full recovery (`Log::open` on an in-memory filesystem, with a fixed key
//! so seeded valid frames decrypt) over arbitrary segment and ledger bytes.
//! Recovery must never panic, and whatever it keeps must read back.
//!
//! Shared by the libFuzzer target and the smoke test CI runs
//! (`tests/fuzz_smoke.rs`).

use std::path::Path;
use std::sync::Arc;

use tally_sdk::log::crypto::{Key, KeyError, KeyId, KeyProvider};
use tally_sdk::log::{ledger, segment, Log, LogConfig, MemFs};

#[derive(Debug)]
struct FixedKey;

impl KeyProvider for FixedKey {
    fn current(&self) -> Result<(KeyId, Key), KeyError> {
        Ok((1, Key::from_bytes([42; 32])))
    }
    fn get(&self, id: KeyId) -> Result<Option<Key>, KeyError> {
        Ok((id == 1).then(|| Key::from_bytes([42; 32])))
    }
    fn rotate(&self) -> Result<KeyId, KeyError> {
        Ok(1)
    }
    fn list(&self) -> Result<Vec<KeyId>, KeyError> {
        Ok(vec![1])
    }
    fn delete(&self, _: KeyId) -> Result<(), KeyError> {
        Ok(())
    }
}

pub fn run(data: &[u8]) {
    // The first two bytes say where the segment ends and the ledger begins.
    let (split, rest) = match data {
        [a, b, rest @ ..] => (
            (usize::from(*a) << 8 | usize::from(*b)).min(rest.len()),
            rest,
        ),
        _ => (0, data),
    };
    let (seg, led) = rest.split_at(split);
    let summary = segment::scan_bytes(seg);
    assert!(summary.valid_len <= seg.len());
    assert!(ledger::readable_len(led) <= led.len());

    let fs = MemFs::new();
    let dir = Path::new("/log");
    use tally_sdk::log::Filesystem;
    fs.create_dir_all(dir).unwrap();
    fs.write_private_atomic(&dir.join("0000000000000001-n.seg"), seg)
        .unwrap();
    if !led.is_empty() {
        fs.write_private_atomic(&dir.join("ledger"), led).unwrap();
    }
    let config = LogConfig::with_fs(dir, Arc::new(fs)).key_provider(Arc::new(FixedKey));
    if let Ok(log) = Log::open(config) {
        let stats = log.stats();
        let records = log.read_pending(usize::MAX, usize::MAX).unwrap();
        assert!(records.len() as u64 <= stats.pending_events);
        // Recovery keeps at most the frames its own scan finds: the one
        // that resumes past corruption at frames of the log's key (the
        // key-less scan may resume at a frame that hides later ones).
        let keyed = segment::scan_bytes_with_keys(seg, &[1]);
        assert!(keyed.valid_len <= seg.len());
        assert!(records.len() <= keyed.records);
    }
}
