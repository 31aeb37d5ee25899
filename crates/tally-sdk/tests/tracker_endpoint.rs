//! The tracker refuses to send in clear text over a network.

#![allow(clippy::unwrap_used)]

use tally_sdk::{BuildError, Tracker};

#[test]
fn plain_http_to_a_remote_host_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let refused = Tracker::builder("k", "http://collector.example:8080", dir.path())
        .auto_upload(false)
        .build()
        .unwrap_err();
    assert!(
        matches!(&refused, BuildError::InsecureEndpoint(host) if host == "collector.example"),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("allow_insecure_http(true)"));
    // Refused before anything is written.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let allowed = Tracker::builder("k", "http://collector.example:8080", dir.path())
        .auto_upload(false)
        .allow_insecure_http(true)
        .build()
        .unwrap();
    allowed.shutdown(std::time::Duration::from_secs(5)).unwrap();
    for endpoint in [
        "http://127.0.0.1:9",
        "http://localhost:9",
        "https://collector.example",
    ] {
        let other = tempfile::tempdir().unwrap();
        let tracker = Tracker::builder("k", endpoint, other.path())
            .auto_upload(false)
            .build()
            .unwrap();
        tracker.shutdown(std::time::Duration::from_secs(5)).unwrap();
    }
}
