//! Wake-ups of the SDK's threads, read from Linux's per-thread counters:
//! a thread that sleeps and is woken (by a timer or a signal) makes one
//! voluntary context switch each time, so the count over a window is the
//! number of times it woke.

use std::collections::BTreeMap;

/// The SDK's threads by name (Linux keeps 15 bytes of a name).
const SDK_THREADS: [&str; 3] = ["tally-pipeline", "tally-upload", "tally-log-write"];

/// Voluntary context switches so far of each SDK thread of this process,
/// by thread name (summed over trackers, if several run).
pub fn sdk_thread_switches() -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> =
        SDK_THREADS.iter().map(|n| ((*n).to_owned(), 0)).collect();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return counts;
    };
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let Some(count) = counts.get_mut(name.trim()) else {
            continue;
        };
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        *count += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    counts
}

/// Wake-ups per thread between two readings.
pub fn wakeups(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(name, n)| {
            (
                name.clone(),
                n.saturating_sub(before.get(name).copied().unwrap_or(0)),
            )
        })
        .collect()
}
