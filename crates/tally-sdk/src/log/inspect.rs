//! Read-only inspection of a log directory (`tally inspect log DIR`): no
//! repair, no writer thread, no key needed, so it is safe on the directory
//! of an app that is running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::crypto::MemKeyProvider;
use super::fs::Filesystem;
use super::index::{now_ms, Counts, State};
use super::segment::Lane;
use super::OpenError;

/// What a log directory holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    /// Segment files.
    pub segments: u64,
    /// Records with a valid checksum in them (pending or done).
    pub records: u64,
    /// Bytes of segment files.
    pub bytes: u64,
    /// Records not yet acknowledged or dropped.
    pub pending: u64,
    /// Pending records in the critical lane.
    pub pending_critical: u64,
    /// Records acknowledged as delivered, ever.
    pub acknowledged: u64,
    /// Age of the oldest pending record.
    pub oldest_pending_age: Option<Duration>,
    /// Corrupt stretches (counted ones plus any found now).
    pub corrupt: u64,
    /// Records dropped on the device, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Records rejected by the collector, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Bytes of torn tails a writable open would truncate.
    pub torn_bytes: u64,
}

/// The name of the log's folder in a tracker's data directory.
pub const LOG_FOLDER: &str = "log";

/// The log directory `dir` names: `dir` itself when it holds a log (a
/// ledger, a segment or the folder of keys), else its `log/` folder when
/// that does (`dir` is the data directory a tracker was built with), else
/// `None` (nothing there is a log; reading it would report an empty one).
pub fn find_log_dir(dir: &Path, fs: &dyn Filesystem) -> Option<PathBuf> {
    let holds_log = |d: &Path| {
        let files = fs.list(d).unwrap_or_default();
        files
            .iter()
            .any(|f| f == super::ledger::FILE_NAME || f.ends_with(super::segment::SUFFIX))
            || fs.list(&d.join("keys")).is_ok_and(|keys| !keys.is_empty())
    };
    if holds_log(dir) {
        return Some(dir.to_owned());
    }
    let nested = dir.join(LOG_FOLDER);
    holds_log(&nested).then_some(nested)
}

/// Reads the log in `dir` without changing anything. Checksums are
/// verified; payloads are not decrypted (no key is read).
pub fn inspect(dir: &Path, fs: Arc<dyn Filesystem>) -> Result<Inspection, OpenError> {
    let counts = Arc::new(Counts::default());
    let (mut state, found) = State::recover(
        dir,
        fs,
        Arc::new(MemKeyProvider::new()),
        counts.clone(),
        false,
    )?;
    let pending_critical = state
        .segs
        .values()
        .filter(|s| s.lane == Lane::Critical)
        .map(|s| s.pending as u64)
        .sum();
    let now = now_ms();
    Ok(Inspection {
        segments: state.segs.len() as u64,
        records: found.records,
        bytes: found.disk_bytes,
        pending: counts.events.load(std::sync::atomic::Ordering::Acquire),
        pending_critical,
        acknowledged: state.counters.delivered,
        oldest_pending_age: state
            .oldest_pending_ms()
            .map(|t| Duration::from_millis(now.saturating_sub(t))),
        corrupt: state.counters.corrupt,
        dropped: state.counters.dropped.clone(),
        rejected: state.counters.rejected.clone(),
        torn_bytes: found.torn_bytes,
    })
}
