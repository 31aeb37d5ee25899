//! Two `tally serve` processes on one PostgreSQL database, receiving the
//! same batches at the same time: every event is counted once.
//!
//! The test creates a database of its own and drops it after (see
//! `tally-collector/tests/support/test_db.rs` for which server).

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::sync::Arc;

use serve_support::*;

const BATCHES: usize = 40;
const BATCH_SIZE: usize = 100;

#[test]
fn two_collectors_on_one_database_count_every_event_once() {
    let db = TestDb::named("http");
    let dir = temp_dir("pg");
    let a = Server::start_postgres(&dir.path().join("a"), &db.url);
    let b = Server::start_postgres(&dir.path().join("b"), &db.url);
    let all = Arc::new(batches("pg", BATCHES, BATCH_SIZE));
    // Each batch goes to both collectors at once, from two threads each,
    // so the same messages race in concurrent transactions.
    let senders: Vec<_> = [
        a.base.clone(),
        a.base.clone(),
        b.base.clone(),
        b.base.clone(),
    ]
    .into_iter()
    .enumerate()
    .map(|(n, base)| {
        let all = all.clone();
        std::thread::spawn(move || {
            let agent = agent();
            let (mut accepted, mut duplicate) = (0u64, 0u64);
            // Two threads per server take the batches in opposite orders.
            let order: Vec<usize> = if n % 2 == 0 {
                (0..BATCHES).collect()
            } else {
                (0..BATCHES).rev().collect()
            };
            for i in order {
                let (status, answer) = post_batch(&agent, &base, &all[i]).unwrap();
                assert_eq!(status, 200, "{answer}");
                accepted += answer["accepted"].as_u64().unwrap();
                duplicate += answer["duplicate"].as_u64().unwrap();
            }
            (accepted, duplicate)
        })
    })
    .collect();
    let (mut accepted, mut duplicate) = (0, 0);
    for s in senders {
        let (acc, dup) = s.join().unwrap();
        accepted += acc;
        duplicate += dup;
    }
    let total = (BATCHES * BATCH_SIZE) as u64;
    assert_eq!(
        accepted, total,
        "answers said accepted {accepted} times for {total} events"
    );
    assert_eq!(duplicate, 3 * total);
    let agent = agent();
    // Both collectors read the same totals.
    assert_eq!(stats(&agent, &a), (total, 3 * total, 0, total));
    assert_eq!(stats(&agent, &b), (total, 3 * total, 0, total));
    // SIGTERM: both drain and exit 0 (the PostgreSQL client is closed
    // outside the async runtime).
    for server in [a, b] {
        let status = server.terminate(std::time::Duration::from_secs(10));
        assert_eq!(status.code(), Some(0));
    }
}
