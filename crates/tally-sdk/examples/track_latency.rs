//! What `track()` costs the app: caller latency percentiles, peak RSS for a
//! burst, and bytes per event on the wire after compression.
//!
//! The workload is the one Mozilla's Glean SDK is measured with when the
//! two are compared (same machine, same run):
//! N events from one thread, each with 3 string properties whose values
//! vary per event, the properties built before the timer starts.
//!
//! ```text
//! cargo run --release -p tally-sdk --example track_latency -- [EVENTS] [DATA_DIR] [CHANNEL_CAPACITY] [QUEUE_BUDGET_BYTES] [THREADS]
//! ```
//!
//! `THREADS` (default 1) splits the same EVENTS between that many threads
//! tracking at once; the latency percentiles are over every call of every
//! thread, `caller_minor_faults` is the first thread's.
//!
//! Prints one JSON line. No collector runs: the uploader backs off against
//! a closed port, so the figures are capture and persistence alone. Every
//! rate counts stored events only (a refused call is not persisted work):
//! `events_per_s_persisted` is `stored / persisted_s`, from the first
//! `track()` to `flush()` returning after the last. `stored_bytes_per_event`
//! is the log's pending bytes as stored (sealed frames) per stored event.
//! CPU per stored event over the same span: `caller_cpu_us_per_event` (the
//! tracking threads: building the properties and `track()`),
//! `persist_cpu_us_per_event` (every other thread: the pipeline, the log's
//! writer and sealers, the uploader) and `cpu_us_per_event`, the whole
//! process.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use rustix::time::ClockId;

use tally_sdk::log::{Log, LogConfig};
use tally_sdk::stored::Expander;
use tally_sdk::upload::batcher::{encode, envelope};
use tally_sdk::upload::policy::MAX_BATCH_RECORDS;
use tally_sdk::{Consent, Props, Tracker};

const SCREENS: [&str; 4] = ["home", "search", "cart", "checkout"];
const BUTTONS: [&str; 3] = ["buy", "back", "share"];

fn vm_hwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Minor page faults of the calling thread so far.
fn thread_minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the parenthesised name: state is field 3, minflt 10.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(7))
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// CPU time of `clock` (the process's or the calling thread's), in ns:
/// the process clock counts threads that ended too (the log's sealers),
/// which no per-thread file under /proc still shows.
fn cpu_ns(clock: ClockId) -> u64 {
    let t = rustix::time::clock_gettime(clock);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1_000.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = args.next().map_or_else(
        || std::env::temp_dir().join(format!("tally-track-latency-{}", std::process::id())),
        std::path::PathBuf::from,
    );
    let capacity: Option<usize> = args.next().and_then(|a| a.parse().ok());
    let budget: Option<usize> = args.next().and_then(|a| a.parse().ok());
    let threads: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1u64)
        .max(1);
    let _ = std::fs::remove_dir_all(&dir);
    let mut builder =
        Tracker::builder("bench", "http://127.0.0.1:9", &dir).consent(Consent::Granted);
    if let Some(capacity) = capacity {
        builder = builder.channel_capacity(capacity);
    }
    if let Some(budget) = budget {
        builder = builder.queue_budget(budget);
    }
    let tracker = builder.build().unwrap();

    let timer_overhead = {
        let t = Instant::now();
        for _ in 0..1_000 {
            std::hint::black_box(Instant::now());
        }
        t.elapsed().as_nanos() as u64 / 1_000
    };
    let process_cpu_start = cpu_ns(ClockId::ProcessCPUTime);
    let loop_start = Instant::now();
    let per_thread: Vec<(Vec<u64>, u64, u64, u64)> = std::thread::scope(|scope| {
        let tracker = &tracker;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let faults_before = thread_minor_faults();
                    let cpu_before = cpu_ns(ClockId::ThreadCPUTime);
                    let mine = events / threads + u64::from(t < events % threads);
                    let mut ns = Vec::with_capacity(mine as usize);
                    let mut refused = 0u64;
                    for i in 0..mine {
                        let props = Props::new()
                            .with("screen", SCREENS[(i % 4) as usize])
                            .with("button", BUTTONS[(i % 3) as usize])
                            .with("variant", i % 7);
                        let t = Instant::now();
                        let r = tracker.track("bench.track", props);
                        ns.push(t.elapsed().as_nanos() as u64);
                        if r.is_err() {
                            refused += 1;
                        }
                    }
                    let cpu = cpu_ns(ClockId::ThreadCPUTime) - cpu_before;
                    (ns, refused, thread_minor_faults() - faults_before, cpu)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let caller_faults = per_thread.first().map_or(0, |p| p.2);
    let refused: u64 = per_thread.iter().map(|p| p.1).sum();
    let caller_cpu_ns: u64 = per_thread.iter().map(|p| p.3).sum();
    let mut ns: Vec<u64> = per_thread.into_iter().flat_map(|p| p.0).collect();
    let caller_loop_s = loop_start.elapsed().as_secs_f64();
    let slow_calls = ns.iter().filter(|&&n| n > 1_000).count();
    tracker.flush().unwrap();
    let persisted_s = loop_start.elapsed().as_secs_f64();
    let process_cpu_ns = cpu_ns(ClockId::ProcessCPUTime) - process_cpu_start;
    let rss = vm_hwm_mb();
    let health = tracker.health();
    tracker.shutdown(Duration::from_secs(30)).unwrap();

    // What is stored: the segment files (records, the contexts they
    // share, headers); and what the uploader would send: batches of the
    // messages expanded from the stored records, zstd.
    let stored_bytes: u64 = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    let log = Log::open(LogConfig::new(dir.join("log"))).unwrap();
    let records = log.read_pending(usize::MAX, usize::MAX).unwrap();
    let mut expander = Expander::default();
    let messages: Vec<Vec<u8>> = records
        .iter()
        .map(|r| {
            expander
                .json(&r.payload, r.context.as_ref(), r.seq)
                .unwrap()
        })
        .collect();
    let (mut json_bytes, mut wire_bytes) = (0usize, 0usize);
    for chunk in messages.chunks(MAX_BATCH_RECORDS) {
        let json = envelope(chunk.iter().map(Vec::as_slice), "2026-11-26T00:00:00.000Z");
        json_bytes += json.len();
        wire_bytes += encode(&json).body.len();
    }
    let stored = records.len();
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);

    ns.sort_unstable();
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64 / 1_000.0;
    println!(
        "{}",
        serde_json::json!({
            "events": events,
            "threads": threads,
            "refused": refused,
            "stored": stored,
            "track_p50_us": percentile(&ns, 0.50),
            "track_p90_us": percentile(&ns, 0.90),
            "track_p99_us": percentile(&ns, 0.99),
            "track_p999_us": percentile(&ns, 0.999),
            "track_max_us": percentile(&ns, 1.0),
            "track_mean_us": mean,
            "timer_overhead_ns": timer_overhead,
            "caller_loop_s": caller_loop_s,
            "caller_minor_faults": caller_faults,
            "calls_over_1us": slow_calls,
            "persisted_s": persisted_s,
            "caller_cpu_us_per_event": caller_cpu_ns as f64 / 1_000.0 / stored.max(1) as f64,
            "persist_cpu_us_per_event": process_cpu_ns.saturating_sub(caller_cpu_ns) as f64
                / 1_000.0
                / stored.max(1) as f64,
            "cpu_us_per_event": process_cpu_ns as f64 / 1_000.0 / stored.max(1) as f64,
            "events_per_s_persisted": stored as f64 / persisted_s,
            "peak_rss_mb": rss,
            "stored_bytes_per_event": stored_bytes as f64 / stored.max(1) as f64,
            "json_bytes_per_event": json_bytes as f64 / stored.max(1) as f64,
            "wire_bytes_per_event": wire_bytes as f64 / stored.max(1) as f64,
            "dropped": health.dropped,
        })
    );
}
