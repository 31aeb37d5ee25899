//! A short fuzz run any `cargo test` can do, without nightly or libFuzzer:
//! every input of a target's committed corpus, then random mutations of
//! them (bit flips, byte changes, insertions, deletions, truncations and
//! splices) for a time budget. It finds what changed behaviour breaks on
//! inputs the long coverage-guided runs already reached; the long runs
//! (`cargo +nightly fuzz run`) are what explore. Included by each crate's
//! `tests/fuzz_smoke.rs`.
//!
//! `TALLY_FUZZ_SMOKE_SECS` sets the budget per target (default 15) and
//! `TALLY_FUZZ_SMOKE_SEED` the seed (default: from the clock, printed, so
//! a failure can be replayed).

use std::path::Path;
use std::time::{Duration, Instant};

/// Seconds of mutations per target unless `TALLY_FUZZ_SMOKE_SECS` says.
const DEFAULT_SECS: u64 = 15;

/// Largest input a mutation grows to: the corpora's inputs are small, and
/// the targets' limits are reached well below it.
const MAX_LEN: usize = 64 * 1024;

/// Runs `case` on every file of `corpus` (and `extra` seeds), then on
/// mutations of them until the budget is spent; returns how many inputs
/// ran. A panic in `case` fails the calling test with the input's origin.
pub fn run(corpus: &Path, extra: &[Vec<u8>], case: impl Fn(&[u8])) -> u64 {
    let mut inputs: Vec<Vec<u8>> = extra.to_vec();
    if let Ok(dir) = std::fs::read_dir(corpus) {
        let mut files: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        for path in files {
            if let Ok(bytes) = std::fs::read(&path) {
                inputs.push(bytes);
            }
        }
    }
    assert!(!inputs.is_empty(), "no corpus at {}", corpus.display());
    for input in &inputs {
        case(input);
    }
    let secs = std::env::var("TALLY_FUZZ_SMOKE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECS);
    let seed = std::env::var("TALLY_FUZZ_SMOKE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!(
        "fuzz smoke: {} corpus inputs, {secs} s of mutations, TALLY_FUZZ_SMOKE_SEED={seed}",
        inputs.len()
    );
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut ran = inputs.len() as u64;
    while Instant::now() < deadline {
        let mut input = inputs[rng.below(inputs.len())].clone();
        for _ in 0..=rng.below(4) {
            mutate(&mut input, &inputs, &mut rng);
        }
        case(&input);
        ran += 1;
    }
    eprintln!("fuzz smoke: {ran} inputs ran");
    ran
}

fn mutate(input: &mut Vec<u8>, inputs: &[Vec<u8>], rng: &mut Rng) {
    let len = input.len();
    match rng.below(6) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            // Bytes JSON and the encodings care about, or any byte.
            const INTERESTING: &[u8] = b"\"\\{}[]:,0u\x00\xff";
            input[i] = if rng.below(2) == 0 {
                INTERESTING[rng.below(INTERESTING.len())]
            } else {
                rng.next() as u8
            };
        }
        2 if len < MAX_LEN => {
            let i = rng.below(len + 1);
            input.insert(i, rng.next() as u8);
        }
        3 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(16));
            input.drain(i..i + n);
        }
        4 if len > 0 => input.truncate(rng.below(len)),
        _ => {
            let other = &inputs[rng.below(inputs.len())];
            if !other.is_empty() && len + other.len() <= MAX_LEN {
                let from = rng.below(other.len());
                let at = rng.below(len + 1);
                let piece = other[from..].to_vec();
                input.splice(at..at, piece);
            }
        }
    }
}

/// xorshift64*: enough randomness for mutations, and replayable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
