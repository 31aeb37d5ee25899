//! Crash test with real processes. The parent re-executes this test binary
//! as a child (`TALLY_LOG_CRASH_CHILD` set) that appends, flushes and acks in
//! a loop, printing what `flush` and `ack` confirmed; the parent kills it
//! with SIGKILL at a random moment, reopens the log, and checks that every
//! confirmed event is there exactly once, in lane order, and no confirmed
//! ack came back.
//!
//! 100 trials by default; `TALLY_LOG_CRASH_TRIALS=1000 cargo test -p
//! tally-sdk --test log_crash` runs 1,000. `TALLY_LOG_CRASH_SEED` replays a
//! run (the seed is printed).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the assertion

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_proto::Priority;
use tally_sdk::log::{Disposition, Durability, Entry, Log, LogConfig};

const CHILD_DIR: &str = "TALLY_LOG_CRASH_CHILD";
const CHILD_START: &str = "TALLY_LOG_CRASH_START";
/// Default trials: enough to hit kills inside writes, syncs, segment
/// rolls and ledger appends, in well under a minute.
const DEFAULT_TRIALS: u64 = 100;
/// The default run stops after this long however many trials remain, so
/// CI time stays bounded on a slow machine (an explicit
/// `TALLY_LOG_CRASH_TRIALS` runs them all).
const TIME_BUDGET: Duration = Duration::from_secs(120);
/// Longest the parent waits for the child to say its log is open.
const OPEN_WAIT: Duration = Duration::from_secs(10);

fn priority(seq: u64) -> Priority {
    if seq % 10 == 0 {
        Priority::Critical
    } else {
        Priority::Normal
    }
}

fn config(dir: &Path) -> LogConfig {
    // Small segments so kills land in segment creation and deletion too.
    LogConfig::new(dir)
        .segment_bytes(16 * 1024)
        .durability(Durability::Buffered {
            max_delay: Duration::from_millis(5),
        })
}

/// The child: runs until killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let mut seq: u64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    let log = Log::open(config(Path::new(&dir))).unwrap();
    let out = std::io::stdout();
    // The harness prints "test crash_child ... " without a newline, so
    // this first line follows it; the parent matches its end.
    writeln!(out.lock(), "log-open").unwrap();
    let mut round = 0u64;
    loop {
        round += 1;
        let batch = 1 + round % 40;
        for _ in 0..batch {
            log.append(Entry {
                seq,
                priority: priority(seq),
                payload: format!(
                    r#"{{"event":"crash","seq":{seq},"pad":"{}"}}"#,
                    "p".repeat((seq % 97) as usize)
                )
                .into_bytes(),
            })
            .unwrap();
            seq += 1;
        }
        log.flush().unwrap();
        writeln!(out.lock(), "confirmed {}", seq - 1).unwrap();
        if round % 2 == 0 {
            // Acks outpace appends, so the pending set (which every reopen
            // decrypts) stays small and trials stay fast.
            let records = log.read_pending(64, usize::MAX).unwrap();
            let seqs: Vec<String> = records.iter().map(|r| r.seq.to_string()).collect();
            writeln!(out.lock(), "acking {}", seqs.join(",")).unwrap();
            let acks: Vec<_> = records
                .iter()
                .map(|r| (r.id, Disposition::Delivered))
                .collect();
            log.ack(&acks).unwrap();
            writeln!(out.lock(), "acked {}", seqs.join(",")).unwrap();
        }
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn parse_list(s: &str) -> Vec<u64> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().unwrap())
        .collect()
}

fn lane_order(seqs: &BTreeSet<u64>) -> Vec<u64> {
    let crit = seqs
        .iter()
        .copied()
        .filter(|&s| priority(s) == Priority::Critical);
    let norm = seqs
        .iter()
        .copied()
        .filter(|&s| priority(s) == Priority::Normal);
    crit.chain(norm).collect()
}

#[test]
fn every_confirmed_event_survives_kill_9_exactly_once() {
    let asked: Option<u64> = std::env::var("TALLY_LOG_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok());
    let trials = asked.unwrap_or(DEFAULT_TRIALS);
    let budget = if asked.is_some() {
        Duration::MAX
    } else {
        TIME_BUDGET
    };
    let seed: u64 = std::env::var("TALLY_LOG_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash test: {trials} trials, TALLY_LOG_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Durable and not acknowledged: must be present after every crash.
    let mut expected: BTreeSet<u64> = BTreeSet::new();
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut next_seq = 1u64;
    let started = Instant::now();
    let mut done = 0u64;
    let mut confirmed_total = 0u64;
    for trial in 0..trials {
        if started.elapsed() > budget {
            break;
        }
        let start = next_seq;
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_START, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stdout);
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    // A line cut by the kill has no newline: not confirmed.
                    if line.ends_with('\n') {
                        lines.lock().unwrap().push(line.trim_end().to_owned());
                    }
                    line.clear();
                }
            })
        };
        // One trial in five is killed at any moment (often during the
        // child's recovery); the others once the log is open, so the kill
        // lands among appends, syncs, segment rolls and acks.
        if rng.below(5) != 0 {
            let opened = Instant::now();
            while opened.elapsed() < OPEN_WAIT
                && !lines
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.ends_with("log-open"))
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        std::thread::sleep(Duration::from_millis(1 + rng.below(150)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();

        let mut confirmed_upto = start - 1;
        let mut in_flight_acks = BTreeSet::new();
        for line in lines.lock().unwrap().iter() {
            if let Some(n) = line.strip_prefix("confirmed ") {
                confirmed_upto = n.parse().unwrap();
            } else if let Some(l) = line.strip_prefix("acking ") {
                in_flight_acks = parse_list(l).into_iter().collect();
            } else if let Some(l) = line.strip_prefix("acked ") {
                for s in parse_list(l) {
                    acked.insert(s);
                    expected.remove(&s);
                }
                in_flight_acks.clear();
            }
        }
        confirmed_total += confirmed_upto + 1 - start;
        for s in start..=confirmed_upto {
            if !acked.contains(&s) {
                expected.insert(s);
            }
        }

        let log = Log::open(config(dir.path())).unwrap();
        let got: Vec<u64> = log
            .read_pending(usize::MAX, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        let got_set: BTreeSet<u64> = got.iter().copied().collect();
        assert_eq!(
            got_set.len(),
            got.len(),
            "trial {trial} (seed {seed}): a record is there twice"
        );
        for s in &expected {
            assert!(
                got_set.contains(s) || in_flight_acks.contains(s),
                "trial {trial} (seed {seed}): confirmed seq {s} lost"
            );
        }
        for s in &got_set {
            assert!(
                !acked.contains(s),
                "trial {trial} (seed {seed}): acked seq {s} came back"
            );
            assert!(
                expected.contains(s) || *s > confirmed_upto || in_flight_acks.contains(s),
                "trial {trial} (seed {seed}): unexpected seq {s}"
            );
        }
        assert_eq!(
            got,
            lane_order(&got_set),
            "trial {trial} (seed {seed}): out of lane order"
        );
        assert_eq!(
            log.stats().corrupt,
            0,
            "trial {trial} (seed {seed}): a torn write was counted corrupt"
        );
        log.close().unwrap();
        // What is on disk now is durable (recovery synced its repairs).
        for s in &in_flight_acks {
            if !got_set.contains(s) {
                acked.insert(*s);
            }
        }
        expected = got_set;
        next_seq = expected
            .iter()
            .next_back()
            .map_or(start, |m| m + 1)
            .max(confirmed_upto + 1);
        done += 1;
    }
    println!(
        "crash test: {done} trials, {confirmed_total} confirmed events, {} pending at the end, {:.1} s",
        expected.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        done >= trials.min(20),
        "only {done} trials ran in the time budget"
    );
}
