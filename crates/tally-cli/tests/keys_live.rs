//! Keys managed live, against real `tally serve` processes over HTTP and
//! through `tally keys`: a key revoked while a batch is in flight (that
//! batch answered, the next refused), a rotation's grace period ending,
//! the configured keys listed and the last admin key kept, and two
//! collectors on one PostgreSQL database (a key revoked on one is refused
//! by the other within the poll interval, without a restart).

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serve_support::*;
use tally_collector::ingest::auth::source_id;

/// Runs `tally keys ARGS` against `server` with the admin token; (stdout,
/// stderr), after checking it succeeded.
fn tally_keys(server: &Server, args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("keys")
        .args(args)
        .args(["--endpoint", &server.base])
        .env("TALLY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("TALLY_ENDPOINT")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "tally keys {args:?}: {stderr}");
    (stdout, stderr)
}

/// The id of the key `tally keys list --json` shows with `kind` and `name`.
fn key_id(server: &Server, kind: &str, name: &str) -> String {
    let (list, _) = tally_keys(server, &["list", "--json"]);
    let list: Value = serde_json::from_str(&list).unwrap();
    list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == kind && k["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} key {name} in {list}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn one_event(id: &str) -> String {
    json!({"batch": [{
        "type": "track", "messageId": id, "anonymousId": "anon-keys",
        "event": "Signed Up",
        "timestamp": tally_proto::format_timestamp(tally_collector::clock::now_ms() - 1_000),
    }]})
    .to_string()
}

/// Posts a one-event batch with `key`; (status, answer).
fn post_with(agent: &ureq::Agent, base: &str, key: &str, id: &str) -> (u16, Value) {
    read(
        agent
            .post(format!("{base}/v1/batch"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .send(one_event(id))
            .unwrap(),
    )
}

fn get_with(agent: &ureq::Agent, url: &str, token: &str) -> (u16, Value) {
    read(
        agent
            .get(url)
            .header("authorization", format!("Bearer {token}"))
            .call()
            .unwrap(),
    )
}

/// Polls `probe` until it answers `want`, for at most `limit`; how long
/// it took.
fn until_status(limit: Duration, want: u16, mut probe: impl FnMut() -> u16) -> Duration {
    let started = Instant::now();
    loop {
        let status = probe();
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "still {status} after {limit:?}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_key_revoked_mid_batch_answers_that_batch_and_refuses_the_next() {
    let dir = temp_dir("keys-revoke");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    let (secret, note) = tally_keys(&server, &["create", "--kind", "write", "--name", "ios"]);
    let secret = secret.trim().to_owned();
    assert!(secret.starts_with("tally_write_"), "{secret}");
    assert!(note.contains("shown once"), "{note}");
    let id = key_id(&server, "write", "ios");
    assert!(id.starts_with("wk_") && id.len() == 19, "{id}");
    // The secret is nowhere in the list.
    let (list, _) = tally_keys(&server, &["list", "--json"]);
    assert!(!list.contains(&secret));
    assert_eq!(post_with(&agent, &server.base, &secret, "before").0, 200);

    // A batch whose headers (and key) arrived, its body still coming.
    let body = one_event("in-flight");
    let (head, tail) = body.as_bytes().split_at(body.len() / 2);
    let address = server.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "POST /v1/batch HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {secret}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(head).unwrap();
    stream.flush().unwrap();
    // Let the collector read the head and check the key.
    std::thread::sleep(Duration::from_millis(300));

    let (revoked, _) = tally_keys(&server, &["revoke", &id]);
    assert!(
        revoked.starts_with(&format!("revoked {id} at ")),
        "{revoked}"
    );
    // Refused at once by the collector that revoked it.
    let (status, answer) = post_with(&agent, &server.base, &secret, "after");
    assert_eq!(status, 401, "{answer}");

    stream.write_all(tail).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let json: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["accepted"], 1, "{json}");
    // The in-flight batch and the first were stored under the key's id.
    let (_, exported) = get_with(
        &agent,
        &server.url("/v1/events/count?event=Signed%20Up"),
        ADMIN_TOKEN,
    );
    assert_eq!(exported["count"], 2, "{exported}");
    let (status, _) = post_with(&agent, &server.base, &secret, "next");
    assert_eq!(status, 401);
    // Revoking twice is refused; the list says when it was revoked.
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["keys", "revoke", &id, "--endpoint", &server.base])
        .env("TALLY_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the key is revoked"));
    let (table, _) = tally_keys(&server, &["list"]);
    let row = table.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(row.contains("revoked 20"), "{table}");
}

#[test]
fn a_rotated_token_keeps_working_until_its_grace_period_ends() {
    let dir = temp_dir("keys-rotate");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    let (old, _) = tally_keys(&server, &["create", "--kind", "read", "--name", "bi"]);
    let old = old.trim().to_owned();
    let id = key_id(&server, "read", "bi");
    let me = server.url("/v1/me");
    assert_eq!(get_with(&agent, &me, &old), (200, json!({"role": "read"})));
    // A read token is refused on an admin path (403), not unknown.
    assert_eq!(get_with(&agent, &server.url("/v1/keys"), &old).0, 403);

    // Taken before the request: the grace period starts when the
    // collector handles it, which is later.
    let rotated_at = Instant::now();
    let (new, note) = tally_keys(&server, &["rotate", &id, "--grace", "2s"]);
    let new = new.trim().to_owned();
    assert_ne!(new, old);
    assert!(
        note.contains("the previous secret stays valid until"),
        "{note}"
    );
    // Both are valid during the grace period.
    assert_eq!(get_with(&agent, &me, &old).0, 200);
    assert_eq!(get_with(&agent, &me, &new).0, 200);
    // Then the old one is refused, the new one still taken.
    let waited = until_status(Duration::from_secs(10), 401, || {
        get_with(&agent, &me, &old).0
    });
    let ended = rotated_at.elapsed();
    assert!(
        ended >= Duration::from_millis(1_990),
        "the old secret ended after {ended:?} ({waited:?} of polling), before its 2 s grace"
    );
    assert_eq!(get_with(&agent, &me, &new), (200, json!({"role": "read"})));
    // Grace 0: the previous secret ends at once.
    let (newest, _) = tally_keys(&server, &["rotate", &id, "--grace", "0"]);
    assert_eq!(get_with(&agent, &me, &new).0, 401);
    assert_eq!(get_with(&agent, &me, newest.trim()).0, 200);
}

#[test]
fn configured_keys_are_listed_and_the_last_admin_key_is_kept() {
    let dir = temp_dir("keys-config");
    let server = Server::start(dir.path(), None, &[]);
    let (list, _) = tally_keys(&server, &["list", "--json"]);
    let list: Value = serde_json::from_str(&list).unwrap();
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{list}");
    // The configured write key keeps the source id its events recorded.
    let write = keys.iter().find(|k| k["kind"] == "write").unwrap();
    assert_eq!(write["id"], source_id(WRITE_KEY));
    assert_eq!(write["origin"], "config");
    assert_eq!(write["secrets"][0]["configured"], true);
    let admin = keys.iter().find(|k| k["kind"] == "admin").unwrap();
    let admin_id = admin["id"].as_str().unwrap();
    // Nothing in the list is a secret or its digest.
    let text = list.to_string();
    assert!(!text.contains(ADMIN_TOKEN) && !text.contains(WRITE_KEY));
    let agent = agent();
    let (status, answer) = read(
        agent
            .post(server.url(&format!("/v1/keys/{admin_id}/revoke")))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .send("")
            .unwrap(),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"]
        .as_str()
        .unwrap()
        .contains("last admin key"));
    // With another admin key, the configured token can be revoked, and a
    // restart still configured with it does not revive it.
    let (second, _) = tally_keys(&server, &["create", "--kind", "admin", "--name", "ops"]);
    let second = second.trim().to_owned();
    tally_keys(&server, &["revoke", admin_id]);
    assert_eq!(get_with(&agent, &server.url("/v1/me"), ADMIN_TOKEN).0, 401);
    let data_dir = server.data_dir.clone();
    assert_eq!(server.terminate(Duration::from_secs(10)).code(), Some(0));
    let again = Server::start(&data_dir, None, &[]);
    assert_eq!(get_with(&agent, &again.url("/v1/me"), ADMIN_TOKEN).0, 401);
    assert_eq!(
        get_with(&agent, &again.url("/v1/me"), &second),
        (200, json!({"role": "admin"}))
    );
}

#[test]
fn a_key_revoked_on_one_collector_is_refused_by_another_on_the_same_database() {
    let db = TestDb::named("keys");
    let dir = temp_dir("keys-pg");
    let a = Server::start_postgres(&dir.path().join("a"), &db.url);
    let b = Server::start_postgres(&dir.path().join("b"), &db.url);
    let agent = agent();
    let (secret, _) = tally_keys(&a, &["create", "--kind", "write", "--name", "android"]);
    let secret = secret.trim().to_owned();
    let id = key_id(&a, "write", "android");
    // B learns of the new key by polling the store.
    let mut n = 0;
    let learned = until_status(Duration::from_secs(10), 200, || {
        n += 1;
        post_with(&agent, &b.base, &secret, &format!("learn-{n}")).0
    });
    assert!(learned < Duration::from_secs(5), "{learned:?}");
    tally_keys(&a, &["revoke", &id]);
    assert_eq!(post_with(&agent, &a.base, &secret, "on-a").0, 401);
    let mut n = 0;
    let refused = until_status(Duration::from_secs(10), 401, || {
        n += 1;
        post_with(&agent, &b.base, &secret, &format!("after-{n}")).0
    });
    // The poll interval is 1 s: refused within seconds (the bound leaves
    // room for a loaded machine).
    assert!(
        refused < Duration::from_secs(5),
        "refused after {refused:?}"
    );
    // Both collectors list the same keys.
    let (from_a, _) = tally_keys(&a, &["list", "--json"]);
    let (from_b, _) = tally_keys(&b, &["list", "--json"]);
    assert_eq!(from_a, from_b);
    for server in [a, b] {
        assert_eq!(server.terminate(Duration::from_secs(10)).code(), Some(0));
    }
}
