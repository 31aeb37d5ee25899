//! `tally emit` killed with SIGKILL at random moments, then resumed: the
//! collector counts every event whose flush was confirmed, never more than
//! were tracked, never one twice, and sees no gap in the sequence.

#![allow(clippy::unwrap_used)]

mod sdk_support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sdk_support::{sub, tempdir, Server, WRITE_KEY};

const TRIALS: u64 = 50;
/// Events per trial are drawn from 1..=MAX_COUNT.
const MAX_COUNT: u64 = 400;
/// The first kill lands within this many ms of the start. After that the
/// window is the run time of the latest run that finished before its kill,
/// so kills keep landing inside runs however fast the build and machine.
const FIRST_KILL_WINDOW_MS: u64 = 350;

/// xorshift64*: the test logs its seed, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn emit(server: &Server, dir: &std::path::Path, count: u64, timeout_s: u64) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.args([
        "emit",
        "--endpoint",
        &server.url,
        "--write-key",
        WRITE_KEY,
        "--data-dir",
    ])
    .arg(dir)
    .args(["--event", "Killed", "--props", r#"{"screen":"home"}"#])
    .args([
        "--count",
        &count.to_string(),
        "--timeout",
        &timeout_s.to_string(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

#[test]
fn kill_9_at_random_moments_then_resume() {
    let seed = std::env::var("TALLY_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("TALLY_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempdir();
    let server = Server::start(&sub(dir.path(), "server"), 0);
    let device = sub(dir.path(), "device");
    let (mut tracked, mut confirmed, mut killed) = (0u64, 0u64, 0u64);
    let mut window_ms = FIRST_KILL_WINDOW_MS;
    for _ in 0..TRIALS {
        let count = 1 + rng.below(MAX_COUNT);
        let kill_at = Duration::from_millis(rng.below(window_ms));
        let mut child = emit(&server, &device, count, 5).spawn().unwrap();
        let start = Instant::now();
        while start.elapsed() < kill_at {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        } else {
            window_ms = (start.elapsed().as_millis() as u64).max(2);
        }
        child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        tracked += count;
        if let Some(n) = stderr.lines().find_map(|l| l.strip_prefix("flushed ")) {
            confirmed += n.trim().parse::<u64>().unwrap();
        }
    }
    assert!(
        killed >= TRIALS / 4,
        "only {killed} of {TRIALS} runs were killed"
    );

    let out = emit(&server, &device, 0, 60).output().unwrap();
    assert!(
        out.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let health: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health["pending"], 0);

    let stats = server.stats();
    let counted = stats["events"].as_u64().unwrap();
    assert!(
        confirmed <= counted && counted <= tracked,
        "confirmed {confirmed} <= counted {counted} <= tracked {tracked} (killed {killed})"
    );
    assert_eq!(stats["accepted"], counted, "no event counted twice");
    let install = server.install(health["install_id"].as_str().unwrap());
    assert_eq!(
        install["max_seq"], counted,
        "numbers of lost, never-sent events are reused"
    );
    assert_eq!(install["missing"], serde_json::json!([]));
    eprintln!("tracked {tracked}, confirmed {confirmed}, counted {counted}, killed {killed}");
}
