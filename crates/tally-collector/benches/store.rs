//! `write_batch` throughput of both stores: batches of 500 events from one
//! device each (one install, consecutive seqs), 5% of every batch resent
//! from the previous one (duplicates), raw JSON of about 400 bytes, the
//! shape a Segment-compatible SDK sends.
//!
//! `cargo bench -p tally-collector --bench store`; criterion reports
//! elements/s (events/s). The PostgreSQL cases use a database created for
//! the run from `TALLY_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and dropped after; they are
//! skipped when the server is unreachable.

#![allow(clippy::unwrap_used)] // a benchmark that cannot set up should stop loudly

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_collector::store::{
    NewEvent, PostgresStore, SqliteOptions, SqliteStore, Store, Synchronous,
};
use tally_proto::{MessageType, Priority};

/// Events per batch: the SDK's default batch and the issue's target shape.
const BATCH: usize = 500;
/// Resent events per batch (5%).
const RESENT: usize = 25;

/// Makes batches for distinct devices; every call continues the numbering.
struct Generator {
    next_device: AtomicU64,
}

impl Generator {
    fn batch(&self, previous_tail: Option<&[NewEvent]>) -> Vec<NewEvent> {
        let device = self.next_device.fetch_add(1, Ordering::Relaxed);
        let fresh = BATCH - previous_tail.map_or(0, <[NewEvent]>::len);
        let base_ms = 1_714_564_800_000 + device as i64 * 1_000;
        let install = format!("inst-{device:08x}-5c1e-4a8e-9b1f-3f0c2d7e6a41");
        let anon = format!("anon-{device:08x}-77b2-4c0d-8e3a-6c5f1b9d2e70");
        let user = (device % 3 == 0).then(|| format!("user-{}", device / 3));
        let mut out: Vec<NewEvent> = previous_tail.map(<[NewEvent]>::to_vec).unwrap_or_default();
        for i in 0..fresh {
            let ts = base_ms + i as i64;
            let id = format!("0190a8c4-{device:08x}-7c3a-9d2e-{i:012x}");
            let name = [
                "Screen Viewed",
                "Button Tapped",
                "Order Completed",
                "Search",
            ][i % 4];
            let raw = format!(
                r#"{{"type":"track","messageId":"{id}","event":"{name}","anonymousId":"{anon}","timestamp":"2024-05-01T12:00:00.000Z","properties":{{"screen":"checkout","item_count":3,"total":42.5,"currency":"EUR"}},"context":{{"app":{{"name":"Shop","version":"3.2.1","build":"321"}},"os":{{"name":"Android","version":"14"}},"locale":"de-DE","library":{{"name":"tally-sdk","version":"0.1.0"}},"tally":{{"install_id":"{install}","seq":{},"session_id":"s-1"}}}}}}"#,
                i + 1
            );
            out.push(NewEvent {
                source: "wk_bench".to_owned(),
                message_id: id,
                kind: MessageType::Track,
                event: Some(name.to_owned()),
                user_id: user.clone(),
                anonymous_id: Some(anon.clone()),
                group_id: None,
                previous_id: None,
                install_id: Some(install.clone()),
                seq: Some(i as u64 + 1),
                session_id: Some("s-1".to_owned()),
                session_index: Some(1),
                dedup_key: None,
                priority: Priority::Normal,
                timestamp: Some(ts),
                sent_at: Some(ts + 5_000),
                received_at: ts + 5_050,
                ts_corrected: ts + 50,
                clamped: false,
                drops: Vec::new(),
                raw,
            });
        }
        out
    }

    /// `n` batches, each resending the last 5% of the one before.
    fn batches(&self, n: u64) -> Vec<Vec<NewEvent>> {
        let mut out: Vec<Vec<NewEvent>> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let tail = out.last().map(|b| &b[BATCH - RESENT..]);
            let next = self.batch(tail);
            out.push(next);
        }
        out
    }
}

/// CPU time this process has used (all threads), from `/proc/self/stat`
/// (utime + stime, in clock ticks of 10 ms). The machine the benches run
/// on is shared, so wall-clock throughput moves with the load; CPU time
/// per event does not, and says what one free core would sustain.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Clock ticks of one process, from `/proc/PID/stat` (utime + stime).
fn ticks_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The PostgreSQL database whose backends' CPU is metered too (the server
/// runs on the same machine): `(admin url, database name)`.
static SERVER: std::sync::Mutex<Option<(String, String)>> = std::sync::Mutex::new(None);

/// CPU ticks of the backends connected to the metered database.
fn backend_ticks() -> std::collections::HashMap<u32, u64> {
    let server = SERVER.lock().unwrap().clone();
    let Some((admin, db)) = server else {
        return Default::default();
    };
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .unwrap();
    rows.iter()
        .filter_map(|r| {
            let pid = r.get::<_, i32>(0) as u32;
            Some((pid, ticks_of(pid)?))
        })
        .collect()
}

/// CPU (this process, database backends) and events of the timed
/// sections of one benchmark.
static CPU_MICROS: AtomicU64 = AtomicU64::new(0);
static SERVER_MICROS: AtomicU64 = AtomicU64::new(0);
static EVENTS: AtomicU64 = AtomicU64::new(0);

/// Runs `f` (which writes `events` events), adds its CPU to the meter and
/// returns its wall-clock time.
fn metered(events: u64, f: impl FnOnce()) -> Duration {
    let (cpu, server) = (process_cpu(), backend_ticks());
    let start = Instant::now();
    f();
    let elapsed = start.elapsed();
    let server_after = backend_ticks();
    let server_ticks: u64 = server_after
        .iter()
        .map(|(pid, after)| after - server.get(pid).copied().unwrap_or(0).min(*after))
        .sum();
    CPU_MICROS.fetch_add((process_cpu() - cpu).as_micros() as u64, Ordering::Relaxed);
    SERVER_MICROS.fetch_add(server_ticks * 10_000, Ordering::Relaxed);
    EVENTS.fetch_add(events, Ordering::Relaxed);
    elapsed
}

/// Prints and resets the meter.
fn report_cpu(label: &str) {
    let cpu = CPU_MICROS.swap(0, Ordering::Relaxed) as f64;
    let server = SERVER_MICROS.swap(0, Ordering::Relaxed) as f64;
    let events = EVENTS.swap(0, Ordering::Relaxed) as f64;
    if events > 0.0 {
        eprintln!(
            "{label}: CPU per event {:.2} µs here + {:.2} µs in PostgreSQL backends \
             ({:.0} events per CPU-second in all)",
            cpu / events,
            server / events,
            events * 1e6 / (cpu + server).max(1.0)
        );
    }
}

/// Writes `iters` batches from `threads` threads, returns the time taken.
fn run(store: &Arc<dyn Store>, gen: &Generator, iters: u64, threads: u64) -> Duration {
    let per_thread = iters.div_ceil(threads);
    let work: Vec<Vec<Vec<NewEvent>>> = (0..threads).map(|_| gen.batches(per_thread)).collect();
    let elapsed = metered(per_thread * threads * BATCH as u64, || {
        std::thread::scope(|s| {
            for batches in &work {
                let store = Arc::clone(store);
                s.spawn(move || {
                    for batch in batches {
                        store.write_batch(batch, &[]).unwrap();
                    }
                });
            }
        });
    });
    // Scale to the `iters` batches criterion asked for.
    elapsed.mul_f64(iters as f64 / (per_thread * threads) as f64)
}

fn bench_store(c: &mut Criterion, name: &str, store: Arc<dyn Store>, threads: &[u64]) {
    let gen = Generator {
        next_device: AtomicU64::new(0),
    };
    let mut group = c.benchmark_group(format!("write_batch/{name}"));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for &t in threads {
        group.bench_function(BenchmarkId::new("threads", t), |b| {
            b.iter_custom(|iters| run(&store, &gen, iters, t))
        });
        report_cpu(&format!("{name}/threads/{t}"));
    }
    group.finish();
    eprintln!("{name}: {:?}", store.stats().unwrap());
}

fn sqlite(c: &mut Criterion) {
    for (label, synchronous) in [
        ("sqlite-normal", Synchronous::Normal),
        ("sqlite-full", Synchronous::Full),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            synchronous,
            ..SqliteOptions::default()
        };
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_with(&dir.path().join("tally.db"), options).unwrap());
        bench_store(c, label, store, &[1, 4]);
    }
}

/// The floor: the same rows inserted by plain prepared statements into a
/// table without any index, one transaction per batch, same pragmas. The
/// store's figure divided by this one is the cost of dedup, indexes,
/// completeness and counters, measured on the same machine in the same run.
fn sqlite_baseline(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("floor.db")).unwrap();
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 16384; \
         CREATE TABLE events (message_id TEXT, kind TEXT, event TEXT, user_id TEXT, \
         anonymous_id TEXT, install_id TEXT, seq INTEGER, session_id TEXT, timestamp INTEGER, \
         sent_at INTEGER, received_at INTEGER, ts_corrected INTEGER, raw TEXT)",
    )
    .unwrap();
    let gen = Generator {
        next_device: AtomicU64::new(0),
    };
    let mut group = c.benchmark_group("write_batch/sqlite-floor");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function(BenchmarkId::new("threads", 1), |b| {
        b.iter_custom(|iters| {
            let batches = gen.batches(iters);
            metered(batches.len() as u64 * BATCH as u64, || {
                for batch in &batches {
                    conn.execute_batch("BEGIN").unwrap();
                    let mut stmt = conn
                        .prepare_cached(
                            "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                        )
                        .unwrap();
                    for e in batch {
                        stmt.execute(rusqlite::params![
                            e.message_id,
                            e.kind.as_str(),
                            e.event,
                            e.user_id,
                            e.anonymous_id,
                            e.install_id,
                            e.seq.map(|s| s as i64),
                            e.session_id,
                            e.timestamp,
                            e.sent_at,
                            e.received_at,
                            e.ts_corrected,
                            e.raw,
                        ])
                        .unwrap();
                    }
                    drop(stmt);
                    conn.execute_batch("COMMIT").unwrap();
                }
            })
        })
    });
    group.finish();
    report_cpu("sqlite-floor/threads/1");
}

/// A database for the run, dropped at the end.
struct BenchDb {
    admin: String,
    name: String,
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn postgres(c: &mut Criterion) {
    let admin = std::env::var("TALLY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let Ok(mut client) = postgres::Client::connect(&admin, postgres::NoTls) else {
        eprintln!("PostgreSQL unreachable at the test URL: skipping the PostgreSQL benches");
        return;
    };
    let name = format!("tally_bench_{}", std::process::id());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let db = BenchDb {
        admin: admin.clone(),
        name,
    };
    let prefix = &admin[..admin.rfind('/').unwrap()];
    let store: Arc<dyn Store> =
        Arc::new(PostgresStore::connect(&format!("{prefix}/{}", db.name)).unwrap());
    *SERVER.lock().unwrap() = Some((admin.clone(), db.name.clone()));
    bench_store(c, "postgres", store, &[1, 4]);
    postgres_floor(c, &format!("{prefix}/{}", db.name));
}

/// The PostgreSQL floor: the same rows in one `INSERT ... SELECT FROM
/// unnest(...)` per batch into a table without any index or constraint,
/// one transaction per batch, from one connection.
fn postgres_floor(c: &mut Criterion, url: &str) {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "CREATE TABLE floor (message_id text, kind text, event text, user_id text, \
             anonymous_id text, install_id text, seq int8, received_at int8, ts_corrected int8, raw text)",
        )
        .unwrap();
    let insert = client
        .prepare(
            "INSERT INTO floor SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
             $5::text[], $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::text[])",
        )
        .unwrap();
    let gen = Generator {
        next_device: AtomicU64::new(1 << 40),
    };
    let mut group = c.benchmark_group("write_batch/postgres-floor");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function(BenchmarkId::new("threads", 1), |b| {
        b.iter_custom(|iters| {
            let batches = gen.batches(iters);
            metered(batches.len() as u64 * BATCH as u64, || {
                for batch in &batches {
                    let text = |f: &dyn Fn(&NewEvent) -> Option<&str>| -> Vec<Option<&str>> {
                        batch.iter().map(f).collect()
                    };
                    let int = |f: &dyn Fn(&NewEvent) -> Option<i64>| -> Vec<Option<i64>> {
                        batch.iter().map(f).collect()
                    };
                    let mut tx = client.transaction().unwrap();
                    tx.execute(
                        &insert,
                        &[
                            &text(&|e| Some(e.message_id.as_str())),
                            &text(&|e| Some(e.kind.as_str())),
                            &text(&|e| e.event.as_deref()),
                            &text(&|e| e.user_id.as_deref()),
                            &text(&|e| e.anonymous_id.as_deref()),
                            &text(&|e| e.install_id.as_deref()),
                            &int(&|e| e.seq.map(|s| s as i64)),
                            &int(&|e| Some(e.received_at)),
                            &int(&|e| Some(e.ts_corrected)),
                            &text(&|e| Some(e.raw.as_str())),
                        ],
                    )
                    .unwrap();
                    tx.commit().unwrap();
                }
            })
        })
    });
    group.finish();
    report_cpu("postgres-floor/threads/1");
    *SERVER.lock().unwrap() = None;
}

criterion_group!(benches, sqlite_baseline, sqlite, postgres);
criterion_main!(benches);
