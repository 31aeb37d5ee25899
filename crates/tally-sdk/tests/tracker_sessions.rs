//! Events naming a session: accepted only for the session that exists now;
//! one that never existed or has ended is refused at the call, counted as
//! `unknown_session`, and takes no sequence number. No collector is
//! needed: nothing is uploaded.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use tally_sdk::{Consent, Props, Refusal, TrackOptions, Tracker};

/// Long enough for a restart on a busy machine to continue the session.
const TIMEOUT: Duration = Duration::from_secs(3);

fn tracker(dir: &Path) -> Tracker {
    Tracker::builder("wk", "http://127.0.0.1:9", dir)
        .consent(Consent::Granted)
        .auto_upload(false)
        .session_timeout(TIMEOUT)
        .build()
        .unwrap()
}

fn named(t: &Tracker, session: &str) -> Result<u64, Refusal> {
    t.track_in_session(session, "Named", Props::new(), TrackOptions::default())
        .map(|a| a.seq)
}

#[test]
fn only_the_live_session_can_be_named_across_reset_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let (first, index) = t.session();
    assert_eq!(index, 1);
    assert_eq!(named(&t, &first), Ok(1));
    assert_eq!(
        named(&t, "0192e5c4-never-started"),
        Err(Refusal::UnknownSession)
    );
    t.reset().unwrap();
    let (second, index) = t.session();
    assert_eq!(index, 2);
    assert_ne!(first, second);
    assert_eq!(
        named(&t, &first),
        Err(Refusal::UnknownSession),
        "ended by reset"
    );
    // Refusals took no seq.
    assert_eq!(named(&t, &second), Ok(2));
    let h = t.health();
    assert_eq!(h.refused.get("unknown_session"), Some(&2));
    assert_eq!(h.tracked, 2);
    t.shutdown(Duration::from_secs(10)).unwrap();

    // A restart within the timeout continues the session; its id stays good.
    let t = tracker(dir.path());
    assert_eq!(t.session(), (second.clone(), 2));
    assert_eq!(named(&t, &second), Ok(3));
    assert_eq!(named(&t, &first), Err(Refusal::UnknownSession));
    t.shutdown(Duration::from_secs(10)).unwrap();

    // A restart after the timeout starts the next session: the old id is over.
    std::thread::sleep(TIMEOUT + Duration::from_millis(200));
    let t = tracker(dir.path());
    let (third, index) = t.session();
    assert_eq!(index, 3);
    assert_ne!(third, second);
    assert_eq!(named(&t, &second), Err(Refusal::UnknownSession));
    assert_eq!(named(&t, &third), Ok(4));
    // Refusals count for the life of the install: 2 + 1 + 1.
    assert_eq!(t.health().refused.get("unknown_session"), Some(&4));
    t.flush().unwrap();
    // Exactly the accepted events are in the log: 4 records, seqs 1..=4.
    assert_eq!(t.health().pending, 4);
    t.shutdown(Duration::from_secs(10)).unwrap();
}
