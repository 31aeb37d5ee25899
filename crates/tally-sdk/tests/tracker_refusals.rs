//! Bad input is refused at the call with the collector's own reason code,
//! counted in health, and takes no sequence number: a NUL character in a
//! name or an id (which the collector rejects as `nul_character`) never
//! reaches the log.

#![allow(clippy::unwrap_used)]

use tally_proto::RejectReason;
use tally_sdk::{Consent, Props, Refusal, TrackOptions, Tracker};

#[test]
fn a_nul_in_a_name_or_an_id_is_refused_at_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tracker::builder("wk", "http://127.0.0.1:9", dir.path())
        .consent(Consent::Granted)
        .auto_upload(false)
        .build()
        .unwrap();
    let nul = Err(Refusal::Invalid(RejectReason::NulCharacter));
    let seq = |r: tally_sdk::TrackResult| r.map(|a| a.seq);
    assert_eq!(seq(t.track("Bu\0y", Props::new())), nul);
    assert_eq!(seq(t.screen("Ca\0rt", Props::new())), nul);
    assert_eq!(seq(t.page("\0", Props::new())), nul);
    assert_eq!(seq(t.identify("u\0", Props::new())), nul);
    assert_eq!(seq(t.alias("\0u")), nul);
    assert_eq!(seq(t.group("g\0", Props::new())), nul);
    let keyed = TrackOptions {
        dedup_key: Some("order\0".into()),
        ..TrackOptions::default()
    };
    assert_eq!(seq(t.track_with("Buy", Props::new(), keyed)), nul);
    // A NUL inside a property is data, not an identifier.
    assert_eq!(
        seq(t.track("Buy", Props::new().with("note", "a\0b"))),
        Ok(1)
    );
    assert_eq!(t.health().refused.get("nul_character"), Some(&7));
    t.shutdown(std::time::Duration::from_secs(5)).unwrap();
}
