//! What a client without credentials, or with only the public write key,
//! can cost the real `tally serve`: slots, connections, descriptors, and
//! guesses at the admin token. Raw sockets on 127.0.0.1 play the hostile
//! clients; a well-behaved client must be served at once beside them.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serve_support::*;

/// The server's address as a socket address.
fn addr(server: &Server) -> SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
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

/// Posts one good batch with the key in a header; (status, time taken).
fn keyed_post(agent: &ureq::Agent, server: &Server, prefix: &str) -> (u16, Duration) {
    let started = Instant::now();
    let (status, answer) = post_batch(agent, &server.base, &batches(prefix, 1, 5)[0]).unwrap();
    if status == 200 {
        assert_eq!(answer["accepted"], 5, "{answer}");
    }
    (status, started.elapsed())
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
    // once to admit later ones, the rest after 2 s idle.
    for (i, s) in idle.iter_mut().enumerate() {
        let left = Duration::from_secs(4).saturating_sub(started.elapsed());
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
    let server = Server::start_with_open_file_limit(dir.path(), 96, &["--max-connections", "1000"]);
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
