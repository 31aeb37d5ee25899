//! `tally emit`: track events through the real SDK, make them durable,
//! then sync them, and report the SDK's health.
//!
//! The order is the contract: every event is tracked, then `flush()` makes
//! them durable (a line `flushed N` on stderr confirms it), and only then
//! does the uploader send (background upload is off), until nothing is
//! pending or the timeout passes. `--count 0` resumes what an earlier run
//! left in the data directory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tally_sdk::{Consent, Props, Tracker, WhenFull};

/// How long `track()` may wait for room in the hand-off queue: emit is a
/// batch tool, so it waits rather than refusing events of a large `--count`.
const BLOCK_WHEN_FULL_MS: u64 = 60_000;

/// How long shutdown waits for the SDK's threads after the final flush.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit code when events are still pending after the timeout.
const EXIT_PENDING: i32 = 2;

/// Arguments of `tally emit`.
#[derive(Debug, clap::Args)]
pub struct EmitArgs {
    /// The collector's base URL
    #[arg(long, env = "TALLY_ENDPOINT", value_name = "URL", default_value = crate::args::DEFAULT_ENDPOINT)]
    endpoint: String,
    /// The write key.
    #[arg(long, env = "TALLY_WRITE_KEY", hide_env_values = true)]
    write_key: String,
    /// Where the SDK keeps its durable log and state.
    #[arg(long)]
    data_dir: PathBuf,
    /// Event name to track.
    #[arg(long)]
    event: String,
    /// Properties as a JSON object.
    #[arg(long)]
    props: Option<String>,
    /// Identify as this user before tracking.
    #[arg(long)]
    user: Option<String>,
    /// How many events to track (0: only resume syncing).
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// How long to keep syncing before giving up: 30s, 5m, or seconds.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::args::parse_duration)]
    timeout: Duration,
    /// Accept a plain http:// endpoint on a host other than loopback
    /// (events and the write key then travel unencrypted)
    #[arg(long)]
    allow_insecure_http: bool,
}

pub fn run(args: EmitArgs) -> anyhow::Result<()> {
    let props = match &args.props {
        Some(text) => Props::from_json(text).context("--props")?,
        None => Props::new(),
    };
    let tracker = Tracker::builder(&args.write_key, &args.endpoint, &args.data_dir)
        .consent(Consent::Granted)
        .when_full(WhenFull::Block(BLOCK_WHEN_FULL_MS))
        .auto_upload(false)
        .allow_insecure_http(args.allow_insecure_http)
        .build()
        .context("starting the SDK")?;
    if args.count > 0 {
        if let Some(user) = &args.user {
            tracker
                .identify(user, Props::new())
                .map_err(|r| anyhow::anyhow!("identify refused: {r}"))?;
        }
    }
    let mut refused = 0u64;
    for _ in 0..args.count {
        if tracker.track(&args.event, props.clone()).is_err() {
            refused += 1;
        }
    }
    tracker.flush().context("flushing the SDK log")?;
    eprintln!("flushed {}", args.count - refused);
    let synced = tracker.wait_until_synced(args.timeout);
    let health = tracker.health();
    println!("{}", serde_json::to_string(&health)?);
    tracker
        .shutdown(SHUTDOWN_TIMEOUT)
        .context("stopping the SDK")?;
    if !synced || health.pending > 0 {
        std::process::exit(EXIT_PENDING);
    }
    Ok(())
}
