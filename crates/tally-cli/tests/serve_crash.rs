//! kill -9 of `tally serve` during a load of retried batches: after a
//! restart on the same data directory and a resend of everything, every
//! event is counted exactly once (0 lost, 0 doubled).

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serve_support::*;

const BATCHES: usize = 150;
const BATCH_SIZE: usize = 150;
const CLIENTS: usize = 3;
const KILLS: usize = 6;
/// The whole test, load and restarts, must finish within this.
const DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn kill_9_under_load_loses_nothing_and_doubles_nothing() {
    let dir = temp_dir("crash");
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Arc::new(Mutex::new(Some(Server::start(
        dir.path(),
        Some(&listen),
        &[],
    ))));
    let base = server.lock().unwrap().as_ref().unwrap().base.clone();
    let all = Arc::new(batches("crash", BATCHES, BATCH_SIZE));
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let answered_accepted = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (all, next, done, base) = (all.clone(), next.clone(), done.clone(), base.clone());
            let (answered_accepted, retries) = (answered_accepted.clone(), retries.clone());
            std::thread::spawn(move || {
                let agent = agent();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(batch) = all.get(i) else { break };
                    // Retry the same batch until it is answered, as the SDK does.
                    loop {
                        assert!(started.elapsed() < DEADLINE, "batch {i} never answered");
                        match post_batch(&agent, &base, batch) {
                            Ok((200, answer)) => {
                                let accepted = answer["accepted"].as_u64().unwrap();
                                let duplicate = answer["duplicate"].as_u64().unwrap();
                                assert_eq!(accepted + duplicate, BATCH_SIZE as u64, "{answer}");
                                answered_accepted.fetch_add(accepted, Ordering::SeqCst);
                                break;
                            }
                            Ok((429 | 503, _)) => {
                                retries.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            Ok((status, answer)) => panic!("batch {i}: HTTP {status}: {answer}"),
                            Err(_) => {
                                retries.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // Kill at evenly spaced points of progress, so every kill lands while
    // batches are in flight, then restart on the same address and data.
    for k in 0..KILLS {
        let target = (k + 1) * BATCHES / (KILLS + 2);
        while done.load(Ordering::SeqCst) < target {
            assert!(started.elapsed() < DEADLINE);
            std::thread::sleep(Duration::from_millis(2));
        }
        server.lock().unwrap().take().unwrap().kill9();
        *server.lock().unwrap() = Some(Server::start(dir.path(), Some(&listen), &[]));
    }
    for c in clients {
        c.join().unwrap();
    }

    let agent = agent();
    let guard = server.lock().unwrap();
    let server = guard.as_ref().unwrap();
    // Resend everything: all duplicates now.
    for batch in all.iter() {
        let (status, answer) = post_batch(&agent, &server.base, batch).unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            answer["duplicate"].as_u64(),
            Some(BATCH_SIZE as u64),
            "{answer}"
        );
    }
    let total = (BATCHES * BATCH_SIZE) as u64;
    let (accepted, duplicate, rejected, events) = stats(&agent, server);
    assert_eq!(
        (accepted, rejected, events),
        (total, 0, total),
        "lost or doubled events"
    );
    // A batch committed just before a kill was answered `duplicate` on its
    // retry, so answers saw at most `total` accepted, never more.
    let answered = answered_accepted.load(Ordering::SeqCst);
    assert!(answered <= total, "{answered} answered accepted of {total}");
    assert!(duplicate >= total, "the resend alone is {total} duplicates");
    let retries = retries.load(Ordering::SeqCst);
    assert!(retries > 0, "no request was interrupted by the kills");
    eprintln!(
        "kill -9 trial: {KILLS} kills, {total} events, {retries} retried requests, \
         {answered} answered accepted, {} answered duplicate after commit, counted {accepted}",
        total - answered
    );
}
