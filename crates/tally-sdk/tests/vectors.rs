//! The shared test vectors in `vectors/` at the repository root, which the
//! web SDK's tests read too: privacy, retry timing, answers, message ids,
//! the batch envelope, drop reports and the health beacon. Both SDKs must
//! agree with every vector; the scenarios run a real tracker.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_proto::{
    decode_json, decompress, format_timestamp, BatchResponse, ContentEncoding, DecodeLimits,
    MessageResult,
};
use tally_sdk::pipeline::privacy::{KeyScope, Privacy, PrivacyConfig};
use tally_sdk::upload::backoff::Backoff;
use tally_sdk::upload::batcher::envelope;
use tally_sdk::upload::outcome::{classify, retry_after_ms, Outcome};
use tally_sdk::upload::policy::{MAX_RETRY_AFTER_MS, MIN_BACKOFF_MS};
use tally_sdk::{
    Consent, Priority, Props, Request, Response, TrackOptions, Tracker, Transport, TransportError,
};

fn vector(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../vectors")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn privacy_filters_and_pseudonyms() {
    let v = vector("privacy.json");
    let mut scopes = HashMap::new();
    for (event, scope) in v["config"]["scopes"].as_object().unwrap() {
        let scope = match (scope.get("allow"), scope.get("deny")) {
            (Some(keys), None) => KeyScope::Allow(strings(keys)),
            (None, Some(keys)) => KeyScope::Deny(strings(keys)),
            _ => panic!("a scope is allow or deny: {scope}"),
        };
        scopes.insert(event.clone(), scope);
    }
    let privacy = Privacy::new(PrivacyConfig {
        scopes,
        extra_sensitive_keys: strings(&v["config"]["sensitive_keys"]),
        pseudonymisation_key: None,
    });
    for case in v["filter"].as_array().unwrap() {
        let input = case["input"].to_string();
        let (out, _) = privacy.filter_properties(case["event"].as_str(), &input);
        let out: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out, case["output"], "{}", case["name"]);
    }
    for case in v["pseudonymise"].as_array().unwrap() {
        let privacy = Privacy::new(PrivacyConfig {
            pseudonymisation_key: Some(case["key"].as_str().unwrap().as_bytes().to_vec()),
            ..PrivacyConfig::default()
        });
        assert_eq!(
            privacy.user_id(case["user_id"].as_str().unwrap()),
            case["output"].as_str().unwrap()
        );
    }
}

#[test]
fn backoff_ceilings_and_retry_after() {
    let v = vector("backoff.json");
    assert_eq!(v["min_ms"], MIN_BACKOFF_MS);
    assert_eq!(v["max_retry_after_ms"], MAX_RETRY_AFTER_MS);
    for pair in v["ceilings"].as_array().unwrap() {
        let n = u32::try_from(pair[0].as_u64().unwrap()).unwrap();
        assert_eq!(Backoff::ceiling_ms(n), pair[1].as_u64().unwrap(), "n={n}");
    }
    for case in v["retry_after"].as_array().unwrap() {
        let ms = retry_after_ms(case["header"].as_str(), case["now_ms"].as_i64().unwrap());
        assert_eq!(ms, case["ms"].as_u64().unwrap(), "{case}");
    }
}

#[test]
fn answers_are_classified_alike() {
    let v = vector("answers.json");
    for case in v["cases"].as_array().unwrap() {
        let response = Response {
            status: u16::try_from(case["status"].as_u64().unwrap()).unwrap(),
            retry_after: case["retry_after"].as_str().map(str::to_owned),
            body: case["body"].as_str().unwrap().as_bytes().to_vec(),
        };
        let sent = case["sent"].as_u64().unwrap() as usize;
        let (name, ms) = match classify(Ok(response), sent, 0) {
            Outcome::Results(_) => ("results", None),
            Outcome::BadRequest => ("bad_request", None),
            Outcome::Unauthorized(_) => ("unauthorized", None),
            Outcome::TooLarge => ("too_large", None),
            Outcome::RetryAfter(ms) => ("retry_after", Some(ms)),
            Outcome::ServerError(_) => ("server_error", None),
            Outcome::Network(_) => ("network", None),
        };
        assert_eq!(name, case["outcome"].as_str().unwrap(), "{case}");
        assert_eq!(ms, case["ms"].as_u64(), "{case}");
    }
}

#[test]
fn message_ids_are_uuid7_of_the_capture_time() {
    let v = vector("uuid7.json");
    for case in v["cases"].as_array().unwrap() {
        let hex = case["random_hex"].as_str().unwrap();
        let mut random = [0u8; 10];
        for (i, byte) in random.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        let id =
            uuid::Builder::from_unix_timestamp_millis(case["unix_ms"].as_u64().unwrap(), &random)
                .into_uuid()
                .to_string();
        assert_eq!(id, case["uuid"].as_str().unwrap());
    }
}

#[test]
fn the_envelope_is_the_stored_json_verbatim() {
    let v = vector("envelope.json");
    for case in v["cases"].as_array().unwrap() {
        let payloads = strings(&case["payloads"]);
        let body = envelope(
            payloads.iter().map(|p| p.as_bytes()),
            case["sent_at"].as_str().unwrap(),
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            case["body"].as_str().unwrap()
        );
    }
}

/// A collector that accepts everything and keeps every message it got.
#[derive(Debug, Default)]
struct Collector {
    received: Mutex<Vec<Value>>,
}

impl Transport for Collector {
    fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let encoding = request
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-encoding"))
            .map_or("identity", |(_, value)| value.as_str());
        let encoding = match encoding {
            "zstd" => ContentEncoding::Zstd,
            "gzip" => ContentEncoding::Gzip,
            _ => ContentEncoding::Identity,
        };
        let limits = DecodeLimits::default();
        let json = decompress(&request.body, encoding, &limits).unwrap();
        let body = decode_json(&json, &limits).unwrap();
        let mut results = Vec::new();
        let mut received = self.received.lock().unwrap();
        for message in &body.messages {
            received.push(serde_json::from_str(message.raw).unwrap());
            results.push(MessageResult::accepted(None));
        }
        let now = format_timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64,
        );
        Ok(Response {
            status: 200,
            retry_after: None,
            body: serde_json::to_vec(&BatchResponse::from_results(now, results)).unwrap(),
        })
    }
}

fn consent(name: &str) -> Consent {
    match name {
        "pending" => Consent::Pending,
        "granted" => Consent::Granted,
        "denied" => Consent::Denied,
        other => panic!("no consent {other}"),
    }
}

#[test]
fn drop_report_scenarios() {
    let v = vector("drop_reports.json");
    for scenario in v["scenarios"].as_array().unwrap() {
        let name = scenario["name"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let collector = Arc::new(Collector::default());
        let mut builder = Tracker::builder("wk", "http://127.0.0.1:9", dir.path())
            .consent(consent(scenario["initial_consent"].as_str().unwrap()))
            .auto_upload(false)
            .transport(collector.clone());
        if let Some(max_events) = scenario["max_events"].as_u64() {
            builder = builder.log_capacity(u64::MAX, max_events);
        }
        let tracker = builder.build().unwrap();
        for step in scenario["steps"].as_array().unwrap() {
            if let Some(user) = step["identify"].as_str() {
                tracker.identify(user, Props::new()).unwrap();
            } else if let Some(event) = step["track"].as_str() {
                let options = TrackOptions {
                    priority: match step["priority"].as_str() {
                        Some("critical") => Priority::Critical,
                        _ => Priority::Normal,
                    },
                    ..TrackOptions::default()
                };
                for _ in 0..step["count"].as_u64().unwrap() {
                    tracker
                        .track_with(event, Props::new(), options.clone())
                        .unwrap();
                }
            } else if step["flush"] == true {
                tracker.flush().unwrap();
            } else if let Some(c) = step["consent"].as_str() {
                tracker.set_consent(consent(c)).unwrap();
            } else {
                panic!("{name}: unknown step {step}");
            }
        }
        assert!(tracker.wait_until_synced(Duration::from_secs(20)), "{name}");
        let received = collector.received.lock().unwrap().clone();
        let expected = scenario["sent"].as_array().unwrap();
        assert_eq!(received.len(), expected.len(), "{name}: {received:?}");
        for (got, want) in received.iter().zip(expected) {
            let tally = &got["context"]["tally"];
            assert_eq!(got["type"], want["type"], "{name}");
            assert_eq!(got["event"], want["event"], "{name}");
            assert_eq!(tally["seq"], want["seq"], "{name}");
            assert_eq!(tally["priority"], want["priority"], "{name}");
            assert_eq!(got["userId"], want["userId"], "{name}");
            if let Some(properties) = want.get("properties") {
                assert_eq!(&got["properties"], properties, "{name}");
            }
        }
        tracker.shutdown(Duration::from_secs(10)).unwrap();
    }
}

#[test]
fn the_health_beacon_carries_the_documented_members() {
    let v = vector("health_beacon.json");
    let always: BTreeSet<String> = strings(&v["always"]).into_iter().collect();
    let measured: BTreeSet<String> = strings(&v["when_measured"]).into_iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let collector = Arc::new(Collector::default());
    let tracker = Tracker::builder("wk", "http://127.0.0.1:9", dir.path())
        .consent(Consent::Granted)
        .transport(collector.clone())
        .health_beacon(Duration::from_millis(50))
        .build()
        .unwrap();
    tracker.track("Song Played", Props::new()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let beacon = loop {
        tracker.flush().unwrap();
        let received = collector.received.lock().unwrap().clone();
        if let Some(b) = received.iter().find(|m| m["event"] == "tally.health") {
            break b.clone();
        }
        assert!(Instant::now() < deadline, "no beacon: {received:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let keys: BTreeSet<String> = beacon["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(keys.is_superset(&always), "{keys:?}");
    assert!(
        keys.difference(&always).all(|k| measured.contains(k)),
        "{keys:?}"
    );
    tracker.shutdown(Duration::from_secs(10)).unwrap();
}
