//! What the tests of the exported API share.

use tally_ffi::{Consent, TallyConfig};

/// A tracker's configuration with consent granted, no automatic upload and
/// every optional setting left to the SDK's default; tests override what
/// they exercise.
pub fn config(endpoint: &str, dir: &std::path::Path) -> TallyConfig {
    TallyConfig {
        write_key: "k".into(),
        endpoint: endpoint.into(),
        data_dir: dir.display().to_string(),
        consent: Some(Consent::Granted),
        store_nothing_while_pending: false,
        max_log_bytes: None,
        max_log_events: None,
        max_log_age_ms: None,
        queue_budget_bytes: None,
        queue_full_wait_ms: None,
        session_timeout_ms: None,
        critical_events: vec![],
        health_beacon_ms: None,
        auto_upload: false,
        trusted_ca_pem: None,
        metered_policy: None,
        durability: None,
    }
}
