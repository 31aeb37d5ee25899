//! The log's headline figures, printed as one JSON line: throughput of
//! 200-byte events appended and made durable (group commit, real
//! fdatasync), the caller-side latency distribution of `append`, and peak
//! RSS while 100,000 events are appended as fast as possible.
//!
//! It also times sealing alone, 200-byte records under ChaCha20-Poly1305,
//! with the RustCrypto implementation and with ring (assembly, which the
//! log seals with), interleaved in the same run, so their ratio survives a
//! noisy machine.
//!
//! `cargo bench -p tally-sdk --bench log_figures`. Run alone: RSS is the
//! process's high-water mark.

use std::time::{Duration, Instant};

use tally_proto::Priority;
use tally_sdk::log::{Durability, Entry, Log, LogConfig};

/// The event size the performance targets are stated for.
const EVENT_BYTES: usize = 200;
/// Events per run, as in the targets (and in the Glean harness).
const EVENTS: u64 = 100_000;
/// Runs whose figures are reported as min / median / max.
const RUNS: usize = 5;

fn payload(seq: u64) -> Vec<u8> {
    let mut p = format!(r#"{{"type":"track","event":"Button Clicked","seq":{seq},"properties":{{"screen":"home","pad":""#).into_bytes();
    p.resize(EVENT_BYTES - 3, b'x');
    p.extend_from_slice(b"\"}}");
    p
}

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct Run {
    events_per_s: f64,
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
    syncs_s: f64,
    events_per_group: f64,
}

fn run(durability: Durability) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(LogConfig::new(dir.path()).durability(durability).bounds(
        u64::MAX,
        u64::MAX,
        Duration::from_secs(3600),
    ))
    .expect("open");
    let mut lat = Vec::with_capacity(EVENTS as usize);
    let start = Instant::now();
    for seq in 0..EVENTS {
        // The payload is built before the timer starts, as the tracker
        // hands over an already serialised message.
        let entry = Entry {
            seq,
            priority: Priority::Normal,
            payload: payload(seq),
        };
        let t = Instant::now();
        log.append(entry).expect("append");
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let t_flush = Instant::now();
    log.flush().expect("flush");
    let elapsed = start.elapsed();
    let syncs_s = t_flush.elapsed().as_secs_f64();
    let stats = log.stats();
    assert_eq!(stats.pending_events, EVENTS);
    let events_per_group = EVENTS as f64 / stats.groups_written.max(1) as f64;
    log.close().expect("close");
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Run {
        events_per_s: EVENTS as f64 / elapsed.as_secs_f64(),
        p50_ns: pct(0.50),
        p99_ns: pct(0.99),
        p999_ns: pct(0.999),
        max_ns: *lat.last().unwrap_or(&0),
        syncs_s,
        events_per_group,
    }
}

/// Best ns per record over interleaved rounds: (RustCrypto, ring).
fn seal_costs() -> (f64, f64) {
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
    use ring::aead::{Aad, LessSafeKey, Nonce as RingNonce, UnboundKey, CHACHA20_POLY1305};
    const RECORDS: u64 = 20_000;
    const ROUNDS: usize = 7;
    let key = [0x42u8; 32];
    let ours = ChaCha20Poly1305::new(&key.into());
    let Ok(unbound) = UnboundKey::new(&CHACHA20_POLY1305, &key) else {
        return (0.0, 0.0);
    };
    let theirs = LessSafeKey::new(unbound);
    let aad = [7u8; 17];
    let mut buf = payload(1);
    let (mut best_ours, mut best_ring) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for n in 0..RECORDS {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&n.to_le_bytes());
            let tag = ours.encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut buf);
            std::hint::black_box(&tag);
        }
        best_ours = best_ours.min(t.elapsed().as_nanos() as f64 / RECORDS as f64);
        let t = Instant::now();
        for n in 0..RECORDS {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&n.to_le_bytes());
            let tag = theirs.seal_in_place_separate_tag(
                RingNonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut buf,
            );
            std::hint::black_box(&tag);
        }
        best_ring = best_ring.min(t.elapsed().as_nanos() as f64 / RECORDS as f64);
    }
    (best_ours, best_ring)
}

fn main() {
    // `cargo bench` passes --bench; any other argument filters nothing here.
    let hwm_before = vm_hwm_kb();
    let first = run(Durability::Buffered {
        max_delay: Duration::from_millis(200),
    });
    let rss_first_run_kb = vm_hwm_kb();
    let mut runs = vec![first];
    for _ in 1..RUNS {
        runs.push(run(Durability::Buffered {
            max_delay: Duration::from_millis(200),
        }));
    }
    let synced: Vec<Run> = (0..RUNS).map(|_| run(Durability::Synced)).collect();
    let stat = |rs: &[Run], f: &dyn Fn(&Run) -> f64| {
        let mut v: Vec<f64> = rs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        format!("[{:.3},{:.3},{:.3}]", v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let report = |rs: &[Run]| {
        format!(
            r#"{{"events_per_s":{},"append_p50_us":{},"append_p99_us":{},"append_p999_us":{},"append_max_us":{},"final_flush_s":{},"events_per_group":{}}}"#,
            stat(rs, &|r| r.events_per_s),
            stat(rs, &|r| r.p50_ns as f64 / 1000.0),
            stat(rs, &|r| r.p99_ns as f64 / 1000.0),
            stat(rs, &|r| r.p999_ns as f64 / 1000.0),
            stat(rs, &|r| r.max_ns as f64 / 1000.0),
            stat(rs, &|r| r.syncs_s),
            stat(rs, &|r| r.events_per_group),
        )
    };
    let (seal_ns, seal_ring_ns) = seal_costs();
    println!(
        r#"{{"events":{EVENTS},"event_bytes":{EVENT_BYTES},"runs":{RUNS},"stat":"[min,median,max]","buffered":{},"synced":{},"peak_rss_mb_first_run":{:.1},"rss_before_mb":{:.1},"seal_ns_per_record":{seal_ns:.1},"seal_ring_ns_per_record":{seal_ring_ns:.1},"seal_cost_vs_ring":{:.2}}}"#,
        report(&runs),
        report(&synced),
        rss_first_run_kb as f64 / 1024.0,
        hwm_before as f64 / 1024.0,
        seal_ns / seal_ring_ns,
    );
}
