//! Black-box tests of `tally serve`: the real binary on 127.0.0.1, driven
//! over HTTP as a client would.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use serve_support::*;
use tally_proto::{content_digest, ContentEncoding};

#[test]
fn a_replayed_batch_is_all_duplicate_and_counts_do_not_move() {
    let dir = temp_dir("replay");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    let batch = &batches("replay", 1, 50)[0];
    let (status, first) = post_batch(&agent, &server.base, batch).unwrap();
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (first["accepted"].as_u64(), first["duplicate"].as_u64()),
        (Some(50), Some(0))
    );
    let before = stats(&agent, &server);
    assert_eq!(before, (50, 0, 0, 50));
    let (status, again) = post_batch(&agent, &server.base, batch).unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicate"].as_u64()),
        (Some(0), Some(50))
    );
    assert!(again["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "duplicate"));
    assert_eq!(stats(&agent, &server), (50, 50, 0, 50));
    let (_, count) = admin_get(&agent, &server.url("/v1/events/count?event=Item%20Added"));
    assert_eq!(count["count"], 50);
}

#[test]
fn a_wrong_digest_is_400_and_nothing_is_stored() {
    let dir = temp_dir("digest");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    let mut batch = batches("digest", 1, 10).remove(0);
    batch.digest = content_digest(b"not this body");
    let (status, body) = post_batch(&agent, &server.base, &batch).unwrap();
    assert_eq!(status, 400);
    assert_eq!(body["code"], "digest_mismatch");
    // One flipped bit in the body with the original digest: also refused.
    let mut flipped = batches("digest", 1, 10).remove(0);
    let last = flipped.body.len() - 1;
    flipped.body[last] ^= 1;
    let (status, _) = post_batch(&agent, &server.base, &flipped).unwrap();
    assert_eq!(status, 400);
    assert_eq!(stats(&agent, &server), (0, 0, 0, 0));
}

/// 1 GiB of zeros as `members` concatenated compressed members of 1 MiB
/// each (decoders read them as one stream).
fn bomb(encoding: ContentEncoding) -> Vec<u8> {
    let zeros = vec![0u8; 1024 * 1024];
    let member = match encoding {
        ContentEncoding::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&zeros).unwrap();
            gz.finish().unwrap()
        }
        ContentEncoding::Zstd => zstd::bulk::compress(&zeros, 19).unwrap(),
        ContentEncoding::Identity => unreachable!(),
    };
    member.repeat(1024)
}

#[test]
fn gzip_and_zstd_bombs_are_413_fast_in_bounded_memory() {
    let dir = temp_dir("bombs");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    // Warm the server up so its baseline includes its own buffers.
    post_batch(&agent, &server.base, &batches("warm", 1, 10)[0]).unwrap();
    let baseline = server.memory_kib("VmRSS");
    for encoding in [ContentEncoding::Gzip, ContentEncoding::Zstd] {
        let body = bomb(encoding);
        for _ in 0..3 {
            let started = Instant::now();
            let response = agent
                .post(server.url("/v1/batch"))
                .header("authorization", format!("Bearer {WRITE_KEY}"))
                .header("content-encoding", encoding.as_str())
                .send(&body[..])
                .unwrap();
            let (status, answer) = read(response);
            let took = started.elapsed();
            assert_eq!(status, 413, "{encoding:?}: {answer}");
            assert_eq!(answer["code"], "payload_too_large");
            assert!(took < Duration::from_secs(1), "{encoding:?} took {took:?}");
        }
    }
    // The peak over the whole test: a 1 GiB bomb must not have come close
    // to being held. The decode limit is 16 MiB per request.
    let peak = server.memory_kib("VmHWM");
    assert!(
        peak < baseline + 64 * 1024,
        "peak RSS {peak} KiB over baseline {baseline} KiB"
    );
    assert_eq!(stats(&agent, &server), (10, 0, 0, 10));
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_0() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = temp_dir("sigterm");
    let server = Server::start(dir.path(), None, &[]);
    let base = server.base.clone();
    let all = Arc::new(batches("term", 300, 100));
    let answered = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (all, answered) = (all.clone(), answered.clone());
        std::thread::spawn(move || {
            let agent = agent();
            let mut accepted = 0u64;
            for batch in all.iter() {
                match post_batch(&agent, &base, batch) {
                    Ok((200, answer)) => accepted += answer["accepted"].as_u64().unwrap(),
                    Ok((status, answer)) => panic!("HTTP {status}: {answer}"),
                    // The listener is closed: the server is gone.
                    Err(_) => break,
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
            accepted
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::SeqCst) < 5 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let status = server.terminate(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    let accepted = sender.join().unwrap();
    assert!(accepted < 300 * 100, "SIGTERM came after the load ended");
    // Every message answered accepted is there after a restart, and
    // nothing unanswered was half-stored.
    let server = Server::start(dir.path(), None, &[]);
    let (stored, duplicate, _, events) = stats(&agent(), &server);
    assert_eq!((stored, duplicate, events), (accepted, 0, accepted));
}

#[test]
fn tls_with_a_self_signed_ca() {
    let dir = temp_dir("tls");
    let files = tls::TlsFiles::generate(&dir.path().join("tls"));
    let (cert_path, key_path) = (files.cert, files.key);
    let server = Server::start(
        &dir.path().join("data"),
        None,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);

    let root = ureq::tls::Certificate::from_pem(&files.ca_pem)
        .unwrap()
        .to_owned();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into();
    let (status, answer) = post_batch(&agent, &server.base, &batches("tls", 1, 5)[0]).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 5);
    // A client that does not trust the CA gets no answer at all.
    assert!(post_batch(
        &serve_support::agent(),
        &server.base,
        &batches("tls2", 1, 1)[0]
    )
    .is_err());
    // Plain HTTP on the TLS port is not served.
    let plain = server.base.replace("https://", "http://");
    assert!(post_batch(&serve_support::agent(), &plain, &batches("tls3", 1, 1)[0]).is_err());
    assert_eq!(stats(&agent, &server), (5, 0, 0, 5));
}

#[test]
fn settings_come_from_flags_then_env_then_file() {
    let dir = temp_dir("config");
    let file = dir.path().join("tally.toml");
    std::fs::write(
        &file,
        "write_keys = [\"file-key\"]\nadmin_token = \"file-admin-token-01\"\nlisten = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    // Env has write keys (over the file's), the flag a listen address (over
    // the file's), the file the admin token.
    let server = Server::start_with_env(
        &dir.path().join("data"),
        Some("127.0.0.1:0"),
        &["--config", file.to_str().unwrap()],
        &[("TALLY_WRITE_KEYS", "env-key-1,env-key-2")],
    );
    let agent = agent();
    let send = |key: &str, id: &str| {
        let msg = json!({"type": "track", "messageId": id, "userId": "u", "event": "E"});
        read(
            agent
                .post(server.url("/v1/track"))
                .header("authorization", format!("Bearer {key}"))
                .send(msg.to_string().as_bytes())
                .unwrap(),
        )
        .0
    };
    assert_eq!(send("env-key-2", "c-1"), 200);
    assert_eq!(send("env-key-1", "c-2"), 200);
    assert_eq!(send("file-key", "c-3"), 401);
    let (status, s) = read(
        agent
            .get(server.url("/v1/stats"))
            .header("authorization", "Bearer file-admin-token-01")
            .call()
            .unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(s["accepted"], 2);
}

#[test]
fn no_write_key_is_refused_at_start() {
    let dir = temp_dir("nokey");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("TALLY_WRITE_KEYS")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no write key"));
}

#[test]
fn logs_hold_no_keys_and_no_event_content() {
    let dir = temp_dir("logs");
    let secret_key = "write-key-that-must-not-leak";
    let admin = "admin-token-that-must-not-leak";
    let server = Server::start_with_env(
        dir.path(),
        None,
        &["--write-key", secret_key, "--admin-token", admin],
        &[("TALLY_LOG", "trace")],
    );
    let agent = agent();
    let value = "property-value-that-must-not-leak";
    let msg = json!({"type": "track", "messageId": "log-1", "userId": "user-that-must-not-leak",
        "event": "Event-that-must-not-leak", "properties": {"secret": value}});
    let post = |key: &str, body: &str| {
        read(
            agent
                .post(server.url("/v1/batch"))
                .header("authorization", format!("Bearer {key}"))
                .send(body.as_bytes())
                .unwrap(),
        )
        .0
    };
    let batch = json!({"batch": [msg]}).to_string();
    assert_eq!(post(secret_key, &batch), 200);
    assert_eq!(post("wrong-key-that-must-not-leak", &batch), 401);
    assert_eq!(
        post(
            secret_key,
            &format!("{{\"batch\":[{{\"secret\":\"{value}\"")
        ),
        400
    );
    assert_eq!(post(admin, &batch), 401);
    let (status, _) = admin_get(&agent, &server.url("/v1/stats"));
    assert_eq!(status, 401, "the test's admin token is not this server's");
    let log = server.log();
    assert!(log.contains("listening on"), "{log}");
    // Every secret and value above ends with this marker.
    assert!(!log.contains("must-not-leak"), "the log leaks:\n{log}");
}
