//! Instrumenting an app with Tally: the calls an app makes, end to end.
//!
//! ```text
//! cargo run --release -p tally-sdk --example quickstart -- ENDPOINT WRITE_KEY DATA_DIR
//! ```
//!
//! A music app starts, asks for consent, plays songs, signs a user in, and
//! checks that every event reached the collector. Run it twice with the
//! same data directory: the second run keeps the install id and continues
//! the per-install sequence, as an app restart does. With the collector
//! stopped the events wait in `DATA_DIR/log` and the example exits 1; run it
//! again once the collector is up and they are sent.

use std::process::ExitCode;
use std::time::Duration;

use tally_sdk::{Consent, KeyScope, Props, Tracker};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(endpoint), Some(write_key), Some(data_dir)) = (args.next(), args.next(), args.next())
    else {
        eprintln!("usage: quickstart ENDPOINT WRITE_KEY DATA_DIR");
        return ExitCode::from(2);
    };
    match run(&endpoint, &write_key, &data_dir) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("some events are still pending; run again when the collector is reachable");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(
    endpoint: &str,
    write_key: &str,
    data_dir: &str,
) -> Result<bool, Box<dyn std::error::Error>> {
    let tracker = Tracker::builder(write_key, endpoint, data_dir)
        // Opt-in analytics: nothing leaves the device before consent.
        .consent(Consent::Pending)
        // Only these properties of "Song Played" are ever stored or sent.
        .property_scope(
            "Song Played",
            KeyScope::Allow(vec!["genre".into(), "duration_s".into()]),
        )
        .build()?;

    // The user accepts analytics in the app's consent dialog.
    tracker.set_consent(Consent::Granted)?;

    tracker.screen("Home", Props::new())?;
    for (genre, seconds) in [("jazz", 214), ("rock", 187), ("ambient", 402)] {
        // `track` returns as soon as the event is handed to the pipeline:
        // no disk or network on the caller's thread. The "email" property
        // is not in the scope above, so it never leaves this call.
        tracker.track(
            "Song Played",
            Props::new()
                .with("genre", genre)
                .with("duration_s", seconds)
                .with("email", "listener@example.com"),
        )?;
    }

    // Sign-up: from here on the install is linked to the user, and the
    // collector attributes the anonymous events above to them too.
    tracker.identify("user-42", Props::new().with("plan", "pro"))?;
    tracker.track("Subscription Started", Props::new().with("plan", "pro"))?;

    // The durability barrier: once this returns, a crash loses nothing.
    tracker.flush()?;

    let synced = tracker.wait_until_synced(Duration::from_secs(10));
    println!("{}", serde_json::to_string_pretty(&tracker.health())?);
    tracker.shutdown(Duration::from_secs(5))?;
    Ok(synced)
}
