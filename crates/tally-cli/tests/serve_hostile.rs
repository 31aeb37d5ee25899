//! What a client without credentials, or with only the public write key,
//! can cost the real `tally serve`: slots, connections, descriptors, and
//! guesses at the admin token. Raw sockets on 127.0.0.1 play the hostile
//! clients; a well-behaved client must be served at once beside them.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serve_support::*;

/// The server's address as a socket address.
fn addr(server: &Server) -> SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

/// Opens a socket and sends a POST head announcing `content_length` bytes,
/// then `first` bytes of the body, and nothing more.
fn stalled_post(server: &Server, path: &str, auth: Option<&str>, first: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr(server)).unwrap();
    let auth = auth
        .map(|a| format!("authorization: {a}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: tally\r\ncontent-type: application/json\r\n{auth}content-length: 100000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(first).unwrap();
    stream
}

/// The status of the first answer on `stream`, if one comes within
/// `timeout` (`None`: nothing, or the connection closed without one).
fn status_within(stream: &mut TcpStream, timeout: Duration) -> Option<u16> {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&got);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the server closed `stream` within `timeout` (EOF or reset).
fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn bearer() -> String {
    format!("Bearer {WRITE_KEY}")
}

/// Posts one good batch with the key in a header; (status, time taken).
fn keyed_post(agent: &ureq::Agent, server: &Server, prefix: &str) -> (u16, Duration) {
    let started = Instant::now();
    let (status, answer) = post_batch(agent, &server.base, &batches(prefix, 1, 5)[0]).unwrap();
    if status == 200 {
        assert_eq!(answer["accepted"], 5, "{answer}");
    }
    (status, started.elapsed())
}

/// Hostile clients send a request head without credentials, one byte of
/// body, and nothing more: 80 of them, more than the 64 ingest slots. With
/// the key only in the body the server cannot know it before reading, so
/// they go to the small body-key pool, 4 per client address at most; a
/// client whose key is in a header gets 200 at once. The same when the
/// bodies begin with a write key.
#[test]
fn clients_without_credentials_cannot_take_the_ingest_slots() {
    let dir = temp_dir("hostile-slots");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    let claim = format!("{{\"writeKey\":\"{WRITE_KEY}\",\"batch\":[");
    let claims = [&b"{"[..], claim.as_bytes()];
    for (round, first) in claims.iter().enumerate() {
        let hostile: Vec<TcpStream> = (0..80)
            .map(|_| stalled_post(&server, "/v1/batch", None, first))
            .collect();
        // The share of the body-key pool one address may hold is taken, the
        // rest are refused at once.
        let started = Instant::now();
        let (refused, mut holding): (Vec<TcpStream>, Vec<TcpStream>) =
            hostile.into_iter().partition(|s| {
                status_within(&mut s.try_clone().unwrap(), Duration::from_millis(500)) == Some(429)
            });
        assert_eq!((refused.len(), holding.len()), (76, 4), "round {round}");
        // Keyed clients are not affected, again and again.
        for n in 0..5 {
            let (status, took) = keyed_post(&agent, &server, &format!("r{round}-{n}"));
            assert_eq!(status, 200, "round {round}");
            assert!(took < Duration::from_secs(2), "{took:?}");
        }
        // The four holding a slot are cut off by the read deadline (5 s
        // for a stalled body), not after a minute.
        for s in &mut holding {
            assert_eq!(status_within(s, Duration::from_secs(10)), Some(408));
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(8), "{took:?}");
    }
    assert_eq!(stats(&agent, &server), (50, 0, 0, 50));
}

/// A wrong key in a header or in the query is refused before the body is
/// read: the answer comes while the body has not been sent.
#[test]
fn a_wrong_key_in_a_header_or_the_query_is_refused_before_the_body() {
    let dir = temp_dir("hostile-prekey");
    let server = Server::start(dir.path(), None, &[]);
    for (path, auth) in [
        ("/v1/batch", Some("Bearer wrong-key")),
        ("/v1/batch?writeKey=wrong-key", None),
        ("/beacon/v1/batch?writeKey=wrong-key", None),
    ] {
        let mut s = stalled_post(&server, path, auth, b"{");
        assert_eq!(
            status_within(&mut s, Duration::from_secs(2)),
            Some(401),
            "{path}"
        );
    }
    // A good key in the query takes a keyed slot and the body is read.
    let (status, answer) = read(
        agent()
            .post(server.url(&format!("/v1/batch?writeKey={WRITE_KEY}")))
            .header("content-type", "application/json")
            .send(
                br#"{"batch":[{"type":"track","messageId":"q-1","anonymousId":"a","event":"E"}]}"#,
            )
            .unwrap(),
    );
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(1)));
}

/// A client with the key that sends its body slowly is cut off by the
/// rate rule: 408 after about 5 s of stalling, not after a minute.
#[test]
fn a_keyed_client_trickling_its_body_is_cut_off_after_the_base() {
    let dir = temp_dir("hostile-trickle");
    let server = Server::start(dir.path(), None, &[]);
    let started = Instant::now();
    let mut s = stalled_post(&server, "/v1/batch", Some(&bearer()), b"{");
    let trickle = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(500));
                if s.write_all(b" ").is_err() {
                    break;
                }
            }
        })
    };
    assert_eq!(status_within(&mut s, Duration::from_secs(15)), Some(408));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(7),
        "{took:?}"
    );
    trickle.join().unwrap();
}

/// More idle connections than the limit: the longest idle are closed to
/// admit new ones, the descriptors the server holds stay within the limit,
/// a client with a request is served at once, and every idle connection
/// is closed after the idle timeout.
#[test]
fn idle_connections_are_shed_at_the_limit_and_closed_when_idle() {
    let dir = temp_dir("hostile-conns");
    let server = Server::start(
        dir.path(),
        None,
        &["--max-connections", "50", "--idle-timeout", "2"],
    );
    let agent = agent();
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .unwrap()
            .count()
    };
    // Whatever the store opens on its first write is open before counting.
    assert_eq!(keyed_post(&agent, &server, "warm").0, 200);
    assert_eq!(admin_metrics(&agent, &server).0, 200);
    std::thread::sleep(Duration::from_millis(2500));
    let baseline = fds();
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(addr(&server)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let held = fds() - baseline;
    assert!(held <= 50, "{held} descriptors for 300 idle connections");
    let (status, took) = keyed_post(&agent, &server, "conns");
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Every idle socket is closed by the server: the first 250 or so at
    // once to admit later ones, the rest after 2 s idle (within 10 s of
    // opening, so a loaded machine's late timer does not fail the test;
    // without the idle timeout they would stay open for good).
    for (i, s) in idle.iter_mut().enumerate() {
        let left = Duration::from_secs(10).saturating_sub(started.elapsed());
        assert!(
            closed_within(s, left.max(Duration::from_millis(1))),
            "connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    let (_, metrics) = admin_metrics(&agent, &server);
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in\n{metrics}"))
    };
    let shed = metric("tally_connections_shed_total{reason=\"over_limit\"}")
        + metric("tally_connections_shed_total{reason=\"idle_timeout\"}");
    assert!(shed >= 300.0, "{shed}");
    assert_eq!(metric("tally_connections_refused_total"), 0.0);
    // Only the connection asking for the metrics is open.
    assert_eq!(metric("tally_connections_open"), 1.0);
    assert!(fds() <= baseline + 3, "{} > {baseline} + 3", fds());
}

/// A connection limit set above what the process may open: `accept`
/// fails with the descriptors exhausted. The server closes the longest-idle
/// connection to free one, so a client with a request is still served, and
/// says so in the log once, not every 50 ms.
#[test]
fn out_of_descriptors_an_idle_connection_makes_room_and_the_log_stays_quiet() {
    let dir = temp_dir("hostile-fds");
    let server = Server::start_after(dir.path(), "ulimit -n 96", &["--max-connections", "1000"]);
    let agent = agent();
    let _idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(addr(&server)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for n in 0..3 {
        let (status, took) = keyed_post(&agent, &server, &format!("fds-{n}"));
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    let (_, metrics) = admin_metrics(&agent, &server);
    let failures: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("tally_accept_errors_total")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap();
    assert!(failures >= 100.0, "{failures} accept failures");
    let warnings = server.log().matches("accept failed").count();
    assert_eq!(warnings, 1, "{}", server.log());
}

/// A GET with `token` (Bearer), sent from `source` (a loopback address),
/// on a connection of its own: (status, body).
fn get_from(source: &str, server: &Server, path: &str, token: Option<&str>) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let target = addr(server);
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(target).await.unwrap()
    });
    let mut stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: tally\r\n{auth}connection: close\r\n\r\n"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// Wrong admin tokens are throttled per client address: 10 at once, then
/// one per 6 s. While an address is throttled it is refused whatever token
/// it shows; another address with the right token is not affected, and a
/// request without a token is not a guess.
#[test]
fn wrong_admin_tokens_are_throttled_per_client_address() {
    let dir = temp_dir("hostile-admin");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    let guess = |token: &str| {
        let response = agent
            .get(server.url("/v1/stats"))
            .header("authorization", format!("Bearer {token}"))
            .call()
            .unwrap();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        (response.status().as_u16(), retry_after)
    };
    let mut answers = std::collections::BTreeMap::<u16, u32>::new();
    for n in 0..200 {
        let (status, retry_after) = guess(&format!("guess-{n:012}"));
        *answers.entry(status).or_default() += 1;
        if status == 429 {
            assert!(matches!(retry_after, Some(1..=6)), "{retry_after:?}");
        }
    }
    assert_eq!(answers, [(401, 10), (429, 190)].into());
    // A write key is a wrong admin token too: refused as throttled.
    assert_eq!(guess(WRITE_KEY).0, 429);
    // The right token from the throttled address: refused the same way.
    assert_eq!(guess(ADMIN_TOKEN).0, 429);
    // No token is not a guess.
    assert_eq!(
        read(agent.get(server.url("/v1/stats")).call().unwrap()).0,
        401
    );
    // Another address with the right token is served.
    let (status, body) = get_from("127.0.0.2", &server, "/v1/stats", Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "{body}");
    let (status, metrics) = get_from("127.0.0.2", &server, "/metrics", Some(ADMIN_TOKEN));
    assert_eq!(status, 200);
    for line in [
        "tally_auth_failures_total 10",
        "tally_auth_throttled_total 192",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
}

/// An admin token shorter than 16 characters is refused at start.
#[test]
fn a_short_admin_token_is_refused_at_start() {
    let dir = temp_dir("hostile-short-token");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", "127.0.0.1:0", "--write-key", WRITE_KEY])
        .args(["--admin-token", "fifteen-chars-x"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("TALLY_ADMIN_TOKEN")
        .env_remove("TALLY_WRITE_KEYS")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the admin token is too short: use at least 16 characters"),
        "{stderr}"
    );
}

/// `/metrics` as the admin sees it.
fn admin_metrics(agent: &ureq::Agent, server: &Server) -> (u16, String) {
    let mut response = agent
        .get(server.url("/metrics"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// A second app's write key.
const OTHER_KEY: &str = "other-app-write-key";

/// Posts one event with `key` in the `Authorization` header, or in the
/// batch envelope when `in_body`: (status, `Retry-After`).
fn post_as(
    agent: &ureq::Agent,
    server: &Server,
    key: &str,
    in_body: bool,
    n: usize,
) -> (u16, Option<u64>) {
    let mut batch = serde_json::json!({"batch": [{
        "type": "track", "messageId": format!("rate-{key}-{n}"),
        "anonymousId": "a", "event": "Tapped"
    }]});
    let mut request = agent
        .post(server.url("/v1/batch"))
        .header("content-type", "application/json");
    if in_body {
        batch["writeKey"] = serde_json::json!(key);
    } else {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = request.send(batch.to_string().as_bytes()).unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (response.status().as_u16(), retry_after)
}

#[test]
fn one_apps_request_rate_never_spends_another_apps() {
    let dir = temp_dir("key-rate");
    // A burst of 3, then one request every 100 s: the test sees the burst
    // and nothing of the refill.
    let server = Server::start(
        dir.path(),
        None,
        &[
            "--write-key",
            WRITE_KEY,
            "--write-key",
            OTHER_KEY,
            "--admin-token",
            ADMIN_TOKEN,
            "--key-rate",
            "0.01",
            "--key-burst",
            "3",
        ],
    );
    let agent = agent();
    let noisy: Vec<(u16, Option<u64>)> = (0..6)
        .map(|n| post_as(&agent, &server, WRITE_KEY, false, n))
        .collect();
    assert_eq!(
        noisy.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [200, 200, 200, 429, 429, 429]
    );
    // One token every 100 s: told to come back within that, not sooner
    // than a second.
    for (_, retry_after) in &noisy[3..] {
        let retry_after = retry_after.expect("a 429 says when to retry");
        assert!((1..=100).contains(&retry_after), "{retry_after}");
    }
    // The same key in the body is the same source: refused too.
    assert_eq!(post_as(&agent, &server, WRITE_KEY, true, 6).0, 429);
    // The other app has its whole burst.
    let quiet: Vec<u16> = (0..3)
        .map(|n| post_as(&agent, &server, OTHER_KEY, n == 2, n).0)
        .collect();
    assert_eq!(quiet, [200, 200, 200]);
    // Exactly the accepted requests were stored, and the refusals counted
    // by source (the key's id, never the key).
    let (status, stats) = read(
        agent
            .get(server.url("/v1/stats"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .call()
            .unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(stats["accepted"], 6, "{stats}");
    let (_, metrics) = admin_metrics(&agent, &server);
    let source = tally_collector::ingest::auth::source_id(WRITE_KEY);
    let line = format!("tally_ingest_key_limited_total{{source=\"{source}\"}} 4");
    assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    assert!(!metrics.contains(WRITE_KEY));
    assert!(!metrics.contains(&tally_collector::ingest::auth::source_id(OTHER_KEY)));
}
