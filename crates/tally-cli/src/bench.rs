//! `tally bench collector`: load on a collector over loopback.
//!
//! Starts the collector in this process (real store, real HTTP on
//! 127.0.0.1), builds realistic batches up front (500 Tally SDK-shaped
//! messages of about 700 bytes each, gzip, 5% of each batch repeated from
//! an earlier batch), then:
//!
//! 1. **full load**: `--connections` clients post batches back to back;
//!    events/s is messages answered over wall time;
//! 2. **half load**: the same clients paced to half the throughput of
//!    phase 1; p50/p99 batch latency there is the figure the targets name.
//!
//! Every answer is checked (200, one result per message), and at the end
//! the store's totals must equal exactly what was sent: unique messages
//! accepted, repeats counted as duplicates. The server's own histograms
//! tell where the time went (store commit vs the rest of the request).
//!
//! With `--retention-backlog N`, the store first receives N events whose
//! corrected time is 400 days old, then three times `--events` more are
//! sent at full load in six segments, alternately without and with the
//! retention job (365 days) deleting that backlog (A B B A A B, so drift
//! weighs on both sides). The figure is the rate with the job over the
//! rate without it; the run fails if the job ran out of backlog, since its
//! segments would then not measure deletion. The stored `events` counter
//! must end exactly at what was sent plus the backlog minus what the job
//! deleted.

use std::io::Read as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tally_collector::api::{app, AppState};
use tally_collector::ingest::auth::{source_id, Keys};
use tally_collector::{server, store};
use tally_proto::{format_timestamp, Batch, ContentEncoding, EncodedBatch, Message, RawJson};

/// What to benchmark.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Ingest throughput and latency of the collector over loopback.
    Collector(CollectorArgs),
    /// Fill a store with a realistic product-analytics history (bulk, for
    /// `bench queries`).
    Seed(SeedArgs),
    /// Time the product queries on a seeded store (median of 5 runs).
    Queries(QueriesArgs),
}

/// Which store the collector under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// SQLite in a fresh temporary directory.
    Sqlite,
    /// PostgreSQL at --database-url (or TALLY_DATABASE_URL).
    Postgres,
}

/// Arguments of `tally bench collector`.
#[derive(Debug, clap::Args)]
pub struct CollectorArgs {
    /// Events sent at full load (half as many more are sent at half load)
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Store behind the collector
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// PostgreSQL URL for --store postgres
    #[arg(long, env = "TALLY_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Concurrent client connections
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Messages per batch
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Percent of each batch repeated from an earlier batch
    #[arg(long, default_value_t = 5)]
    duplicate_percent: usize,
    /// Also measure full load while the retention job deletes a backlog of
    /// this many expired events (0: skip)
    #[arg(long, default_value_t = 0, value_name = "N")]
    retention_backlog: usize,
    /// SQLite: do not overwrite deleted content (`tally serve` always
    /// does); only to measure what secure delete costs
    #[arg(long)]
    no_secure_delete: bool,
}

const WRITE_KEY: &str = "bench-write-key";
const ADMIN_TOKEN: &str = "bench-admin-token";

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Collector(args) => collector(args),
        BenchCommand::Seed(args) => seed(args),
        BenchCommand::Queries(args) => queries(args),
    }
}

struct Workload {
    batches: Vec<EncodedBatch>,
    unique: u64,
    duplicates: u64,
}

fn collector(args: CollectorArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.connections == 0 || args.events < args.batch {
        bail!("--events must be at least --batch, and --batch and --connections positive");
    }
    let data_dir = std::env::temp_dir().join(format!("tally-bench-{}", std::process::id()));
    let database_url = match args.store {
        StoreKind::Sqlite => None,
        StoreKind::Postgres => Some(
            args.database_url
                .clone()
                .context("--store postgres needs --database-url")?,
        ),
    };
    let store: Arc<dyn store::Store> = match (&database_url, args.no_secure_delete) {
        (None, true) => {
            std::fs::create_dir_all(&data_dir)?;
            Arc::new(store::SqliteStore::open_with(
                &data_dir.join(store::SQLITE_FILE_NAME),
                store::SqliteOptions {
                    secure_delete: false,
                    ..store::SqliteOptions::default()
                },
            )?)
        }
        _ => store::open(&data_dir, database_url.as_deref()).context("cannot open the store")?,
    };
    let state = AppState::new(
        store.clone(),
        Keys::new([WRITE_KEY.to_owned()], Some(ADMIN_TOKEN.to_owned())),
    );
    let metrics = state.metrics.clone();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(server::serve(
        listener,
        app(state),
        None,
        server::Limits::default(),
        metrics.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));

    let full_batches = args.events / args.batch;
    let half_batches = (full_batches / 2).max(1);
    let retention_batches = if args.retention_backlog > 0 {
        3 * full_batches
    } else {
        0
    };
    eprintln!(
        "building {} batches of {} messages ({}% repeated), gzip",
        full_batches + half_batches + retention_batches,
        args.batch,
        args.duplicate_percent
    );
    let work = workload(
        full_batches + half_batches + retention_batches,
        args.batch,
        args.duplicate_percent,
    );
    let (full, rest) = work.batches.split_at(full_batches);
    let (half, retention_work) = rest.split_at(half_batches);

    let baseline = baseline(full, args.store)?;
    let agent = agent();
    let before = server_metrics(&agent, &base)?;
    let full_run = load(&base, full, args.batch, args.connections, None)?;
    let full_rate = full_run.messages as f64 / full_run.wall.as_secs_f64();
    let after_full = server_metrics(&agent, &base)?;
    let interval = Duration::from_secs_f64(2.0 * args.batch as f64 / full_rate);
    let half_run = load(&base, half, args.batch, args.connections, Some(interval))?;
    let half_rate = half_run.messages as f64 / half_run.wall.as_secs_f64();
    let retention = if args.retention_backlog > 0 {
        Some(retention_phases(
            &base,
            &store,
            &metrics,
            retention_work,
            &args,
        )?)
    } else {
        None
    };

    let stats = get_json(&agent, &format!("{base}/v1/stats"))?;
    let accepted = stats["accepted"].as_u64().unwrap_or_default();
    let duplicate = stats["duplicate"].as_u64().unwrap_or_default();
    let stored = stats["events"].as_u64().unwrap_or_default();
    let _ = stop_tx.send(());
    runtime.block_on(server)?;
    // Dropped outside the runtime (see serve.rs: the PostgreSQL client
    // cannot be dropped on a tokio thread).
    runtime.shutdown_timeout(Duration::from_secs(5));
    drop(store);
    if args.store == StoreKind::Sqlite {
        let _ = std::fs::remove_dir_all(&data_dir);
    }

    let (batch_s, commit_s, requests) = time_split(&before, &after_full);
    println!(
        "store: {:?}, {} connections, batches of {}",
        args.store, args.connections, args.batch
    );
    println!(
        "full load: {:.0} events/s ({} events in {:.2} s), batch latency p50 {:.1} ms, p99 {:.1} ms",
        full_rate,
        full_run.messages,
        full_run.wall.as_secs_f64(),
        ms(full_run.percentile(50)),
        ms(full_run.percentile(99)),
    );
    println!(
        "half load: {:.0} events/s offered {:.0}, batch latency p50 {:.1} ms, p99 {:.1} ms",
        half_rate,
        full_rate / 2.0,
        ms(half_run.percentile(50)),
        ms(half_run.percentile(99)),
    );
    if requests > 0.0 {
        println!(
            "server time per batch at full load: {:.2} ms, of which store commit {:.2} ms ({:.0}%)",
            1e3 * batch_s / requests,
            1e3 * commit_s / requests,
            100.0 * commit_s / batch_s.max(f64::MIN_POSITIVE),
        );
    }
    println!(
        "baseline, same batches on one thread without HTTP: decode+validate {:.0} events/s{}",
        baseline.decode_rate,
        baseline
            .store_rate
            .map(|r| format!(
                ", store write_batch alone {r:.0} events/s (HTTP path at {:.0}% of it)",
                100.0 * full_rate / r
            ))
            .unwrap_or_default(),
    );
    let (backlog, expired) = retention
        .as_ref()
        .map_or((0, 0), |r| (r.backlog, r.expired));
    if let Some(r) = &retention {
        println!(
            "retention: full load {:.0} events/s without the job, {:.0} with it deleting a backlog of {} \
             ({} deleted, {:.0}/s while it ran): ratio {:.3}",
            r.without,
            r.with_job,
            r.backlog,
            r.expired,
            r.expired as f64 / r.with_job_wall.as_secs_f64(),
            r.ratio(),
        );
    }
    println!(
        "exactness: accepted {accepted} (sent unique {} + backlog {backlog}), duplicate {duplicate} \
         (sent repeated {}), stored {stored} (expired {expired})",
        work.unique, work.duplicates
    );
    println!(
        "{}",
        serde_json::json!({
            "store": format!("{:?}", args.store).to_lowercase(),
            "events_per_s": full_rate.round(),
            "p50_ms": ms(full_run.percentile(50)),
            "p99_ms": ms(full_run.percentile(99)),
            "half_load_events_per_s": half_rate.round(),
            "half_load_p50_ms": ms(half_run.percentile(50)),
            "half_load_p99_ms": ms(half_run.percentile(99)),
            "baseline_decode_events_per_s": baseline.decode_rate.round(),
            "baseline_store_events_per_s": baseline.store_rate.map(f64::round),
            "accepted": accepted,
            "duplicate": duplicate,
            "sent_unique": work.unique,
            "sent_repeated": work.duplicates,
            "retention": retention.as_ref().map(|r| serde_json::json!({
                "backlog": r.backlog,
                "events_per_s_without_job": r.without.round(),
                "events_per_s_with_job": r.with_job.round(),
                "expired": r.expired,
                "ratio": (r.ratio() * 1000.0).round() / 1000.0,
            })),
        })
    );
    if accepted != work.unique + backlog || duplicate != work.duplicates {
        bail!("the store's totals do not match what was sent");
    }
    if retention.is_some() && stored != work.unique + backlog - expired {
        bail!("the stored events counter does not match what was sent minus what expired");
    }
    Ok(())
}

/// The figures of the retention phases.
struct RetentionRun {
    backlog: u64,
    /// Full-load events/s of the segments without the job.
    without: f64,
    /// Full-load events/s of the segments with the job deleting.
    with_job: f64,
    /// Wall time of the segments with the job.
    with_job_wall: Duration,
    /// Deleted by the job in all.
    expired: u64,
}

impl RetentionRun {
    /// Throughput with the job over throughput without it.
    fn ratio(&self) -> f64 {
        self.with_job / self.without
    }
}

/// Days the bench's retention policy keeps events; the backlog is older.
const BENCH_RETENTION_DAYS: u32 = 365;
const BACKLOG_AGE_DAYS: i64 = 400;

/// Segments of the retention phases, with (`true`) and without the job:
/// A B B A A B, so that a drift over the run (a growing table, the load of
/// other processes) weighs on both sides alike.
const RETENTION_SEGMENTS: [bool; 6] = [false, true, true, false, false, true];

/// Seeds the backlog, then runs full load in [`RETENTION_SEGMENTS`], the
/// retention job (started afresh, so deleting from its first moment)
/// running during the segments marked `true`.
fn retention_phases(
    base: &str,
    store: &Arc<dyn store::Store>,
    metrics: &Arc<tally_collector::metrics::Metrics>,
    batches: &[EncodedBatch],
    args: &CollectorArgs,
) -> anyhow::Result<RetentionRun> {
    use tally_collector::governance::retention::{RetentionJob, RetentionPolicy};
    let backlog = args.retention_backlog as u64;
    eprintln!("seeding {backlog} events {BACKLOG_AGE_DAYS} days old");
    seed_backlog(store.as_ref(), args.retention_backlog)?;
    let segment = batches.len() / RETENTION_SEGMENTS.len();
    if segment == 0 {
        bail!("too few batches for the retention phases: raise --events");
    }
    let (mut with, mut without) = ((0u64, Duration::ZERO), (0u64, Duration::ZERO));
    for (i, job_on) in RETENTION_SEGMENTS.into_iter().enumerate() {
        let work = &batches[i * segment..(i + 1) * segment];
        let job = if job_on {
            Some(RetentionJob::start(
                store.clone(),
                metrics.clone(),
                RetentionPolicy {
                    default_days: Some(BENCH_RETENTION_DAYS),
                    ..RetentionPolicy::default()
                },
            )?)
        } else {
            None
        };
        let expired_before = expired_total(metrics);
        let run = load(base, work, args.batch, args.connections, None)?;
        if job.is_some() && expired_total(metrics) == expired_before {
            bail!("the retention job deleted nothing during segment {i}");
        }
        drop(job);
        let side = if job_on { &mut with } else { &mut without };
        side.0 += run.messages;
        side.1 += run.wall;
    }
    let expired = expired_total(metrics);
    if expired >= backlog {
        bail!(
            "the job deleted the whole backlog ({backlog}) before its segments ended: \
             use a larger --retention-backlog"
        );
    }
    Ok(RetentionRun {
        backlog,
        without: without.0 as f64 / without.1.as_secs_f64(),
        with_job: with.0 as f64 / with.1.as_secs_f64(),
        with_job_wall: with.1,
        expired,
    })
}

/// `tally_retention_expired_events_total` of the in-process collector.
fn expired_total(metrics: &tally_collector::metrics::Metrics) -> u64 {
    metrics
        .encode()
        .lines()
        .find_map(|l| {
            l.strip_prefix("tally_retention_expired_events_total ")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Writes `n` SDK-shaped events whose corrected time is
/// [`BACKLOG_AGE_DAYS`] old straight into the store, through the
/// collector's own event building (the HTTP path is not what is measured
/// here).
fn seed_backlog(store: &dyn store::Store, n: usize) -> anyhow::Result<()> {
    use tally_collector::{
        clock,
        ingest::{clock as times, events},
    };
    const DAY_MS: i64 = 24 * 60 * 60 * 1000;
    let run = std::process::id();
    let received_at = clock::now_ms();
    let old = received_at - BACKLOG_AGE_DAYS * DAY_MS;
    let mut batch = Vec::with_capacity(500);
    for i in 0..n {
        let mut msg = message(run, i as u64, old + i as i64);
        msg.message_id = Some(format!("backlog-{run}-{i:012}"));
        let raw = msg.to_json();
        let checked = tally_proto::validate(&msg, &raw)
            .map_err(|r| anyhow::anyhow!("a backlog message is invalid: {}", r.detail))?;
        // No sentAt: the corrected time is the message's own.
        let times = times::message_times(&checked, None, received_at);
        batch.push(events::new_event(
            &source_id(WRITE_KEY),
            &msg,
            checked,
            times,
            received_at,
            &raw,
        ));
        if batch.len() == 500 || i + 1 == n {
            store.write_batch(&batch, &[])?;
            batch.clear();
        }
    }
    Ok(())
}

struct Baseline {
    decode_rate: f64,
    store_rate: Option<f64>,
}

/// The same batches through the collector's own stages on one thread,
/// without HTTP: decompress, decode, validate, build events (the CPU
/// cost of the ingest path), then, for SQLite, `write_batch` on a fresh
/// store of its own (the store's cost alone).
fn baseline(batches: &[EncodedBatch], kind: StoreKind) -> anyhow::Result<Baseline> {
    use tally_collector::{
        clock,
        ingest::{clock as times, events},
    };
    let limits = tally_proto::DecodeLimits::default();
    let source = source_id(WRITE_KEY);
    let dir = std::env::temp_dir().join(format!("tally-bench-baseline-{}", std::process::id()));
    let store = match kind {
        StoreKind::Sqlite => Some(store::open(&dir, None)?),
        StoreKind::Postgres => None,
    };
    let (mut decode_time, mut store_time, mut messages) = (Duration::ZERO, Duration::ZERO, 0usize);
    for batch in batches {
        let t = Instant::now();
        let json = tally_proto::decompress(&batch.body, batch.encoding, &limits)?;
        let body = tally_proto::decode_json(&json, &limits)?;
        let received_at = clock::now_ms();
        let batch_sent_at = body.sent_at_ms();
        let mut new_events = Vec::with_capacity(body.messages.len());
        for m in &body.messages {
            let Ok(msg) = &m.parsed else { continue };
            let Ok(checked) = tally_proto::validate(msg, m.raw) else {
                continue;
            };
            let times = times::message_times(&checked, batch_sent_at, received_at);
            new_events.push(events::new_event(
                &source,
                msg,
                checked,
                times,
                received_at,
                m.raw,
            ));
        }
        decode_time += t.elapsed();
        messages += body.messages.len();
        if let Some(store) = &store {
            let t = Instant::now();
            store.write_batch(&new_events, &[])?;
            store_time += t.elapsed();
        }
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Baseline {
        decode_rate: messages as f64 / decode_time.as_secs_f64(),
        store_rate: (kind == StoreKind::Sqlite).then(|| messages as f64 / store_time.as_secs_f64()),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Batches of Tally SDK-shaped messages; in each batch `dup_percent` of the
/// messages repeat messages of the batch before (same id, same bytes), the
/// way a client resends after a lost answer.
fn workload(batches: usize, size: usize, dup_percent: usize) -> Workload {
    let run = std::process::id();
    let base_ms = tally_collector::clock::now_ms() - 60_000;
    let repeats = (size * dup_percent / 100).min(size);
    let mut previous: Vec<Message> = Vec::new();
    let mut out = Vec::with_capacity(batches);
    let (mut unique, mut duplicates) = (0u64, 0u64);
    let mut seq = 0u64;
    for b in 0..batches {
        let mut messages = Vec::with_capacity(size);
        if !previous.is_empty() {
            messages.extend(previous.iter().take(repeats).cloned());
            duplicates += messages.len() as u64;
        }
        while messages.len() < size {
            seq += 1;
            messages.push(message(run, seq, base_ms + (seq % 50_000) as i64));
            unique += 1;
        }
        let sent_at = format_timestamp(base_ms + 60_000);
        let batch = Batch::new(messages, sent_at);
        out.push(batch.encode(ContentEncoding::Gzip));
        previous = batch
            .messages
            .unwrap_or_default()
            .split_off(if b == 0 { 0 } else { repeats });
    }
    Workload {
        batches: out,
        unique,
        duplicates,
    }
}

fn message(run: u32, seq: u64, ts: i64) -> Message {
    const EVENTS: [&str; 5] = [
        "Screen Viewed",
        "Button Tapped",
        "Item Added",
        "Search",
        "Order Completed",
    ];
    let device = seq % 1_000;
    let mut msg = Message::track(
        format!("bench-{run}-{seq:012}"),
        format_timestamp(ts),
        EVENTS[(seq % 5) as usize],
    );
    msg.anonymous_id = Some(format!("anon-{run}-{device}"));
    if device % 3 == 0 {
        msg.user_id = Some(format!("user-{device}"));
    }
    msg.properties = RawJson::from_text(&format!(
        r#"{{"screen":"home","item_id":"sku-{}","price":{}.99,"currency":"EUR","position":{},"query":null,"experiment":"b"}}"#,
        seq % 977,
        seq % 200,
        seq % 20
    ))
    .ok();
    let context = msg.context.get_or_insert_with(Default::default);
    context.locale = Some("en-GB".into());
    context.timezone = Some("Europe/Paris".into());
    let tally = msg.tally_mut();
    tally.install_id = Some(format!("install-{run}-{device}"));
    tally.seq = Some(seq / 1_000 + 1);
    tally.session_id = Some(format!("session-{run}-{device}-{}", seq / 50_000));
    tally.session_index = Some(seq / 50_000 + 1);
    msg
}

struct Run {
    messages: u64,
    wall: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn percentile(&self, p: usize) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = (self.latencies.len() * p / 100).min(self.latencies.len() - 1);
        self.latencies[i]
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Posts `batches` from `connections` threads; with `interval`, the
/// batches are paced to one every `interval` overall.
fn load(
    base: &str,
    batches: &[EncodedBatch],
    batch_size: usize,
    connections: usize,
    interval: Option<Duration>,
) -> anyhow::Result<Run> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let url = format!("{base}/v1/batch");
    let results: Vec<anyhow::Result<(u64, Vec<Duration>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..connections)
            .map(|_| {
                let next = next.clone();
                let url = url.clone();
                scope.spawn(move || -> anyhow::Result<(u64, Vec<Duration>)> {
                    let agent = agent();
                    let mut messages = 0u64;
                    let mut latencies = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(batch) = batches.get(i) else { break };
                        if let Some(interval) = interval {
                            let due = started + interval.saturating_mul(i as u32);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                        }
                        let t = Instant::now();
                        let mut response = agent
                            .post(&url)
                            .header("authorization", format!("Bearer {WRITE_KEY}"))
                            .header("content-type", "application/json")
                            .header("content-encoding", batch.encoding.as_str())
                            .header("content-digest", &batch.digest)
                            .send(&batch.body[..])?;
                        let status = response.status().as_u16();
                        let mut text = String::new();
                        response.body_mut().as_reader().read_to_string(&mut text)?;
                        latencies.push(t.elapsed());
                        if status != 200 {
                            bail!("batch {i}: HTTP {status}: {text}");
                        }
                        let answer: tally_proto::BatchResponse = serde_json::from_str(&text)?;
                        if answer.results.len() != batch_size || answer.rejected != 0 {
                            bail!(
                                "batch {i}: unexpected answer: {} results, {} rejected",
                                answer.results.len(),
                                answer.rejected
                            );
                        }
                        messages += answer.results.len() as u64;
                    }
                    Ok((messages, latencies))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("client thread panicked")))
            })
            .collect()
    });
    let wall = started.elapsed();
    let mut run = Run {
        messages: 0,
        wall,
        latencies: Vec::new(),
    };
    for r in results {
        let (m, l) = r?;
        run.messages += m;
        run.latencies.extend(l);
    }
    run.latencies.sort_unstable();
    Ok(run)
}

fn get_json(agent: &ureq::Agent, url: &str) -> anyhow::Result<serde_json::Value> {
    let mut response = agent
        .get(url)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()?;
    let text = response.body_mut().read_to_string()?;
    Ok(serde_json::from_str(&text)?)
}

fn server_metrics(agent: &ureq::Agent, base: &str) -> anyhow::Result<String> {
    let mut response = agent
        .get(&format!("{base}/metrics"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()?;
    Ok(response.body_mut().read_to_string()?)
}

/// (batch seconds, commit seconds, requests) between two scrapes.
fn time_split(before: &str, after: &str) -> (f64, f64, f64) {
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    let delta = |name: &str| value(after, name) - value(before, name);
    (
        delta("tally_batch_duration_seconds_sum "),
        delta("tally_store_commit_duration_seconds_sum "),
        delta("tally_batch_duration_seconds_count "),
    )
}

/// Arguments of `tally bench seed`.
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// Events to store (identify calls included)
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    /// Distinct people
    #[arg(long, default_value_t = 200_000)]
    people: usize,
    /// Days of history, ending at today's midnight UTC
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// SQLite data directory (when no --database-url)
    #[arg(long, default_value = "tally-bench-data")]
    data_dir: std::path::PathBuf,
    /// PostgreSQL URL (an empty database)
    #[arg(long)]
    database_url: Option<String>,
    /// Seed of the generator (the same seed gives the same history)
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Arguments of `tally bench queries`.
#[derive(Debug, clap::Args)]
pub struct QueriesArgs {
    /// SQLite data directory (when no --database-url)
    #[arg(long, default_value = "tally-bench-data")]
    data_dir: std::path::PathBuf,
    /// PostgreSQL URL
    #[arg(long)]
    database_url: Option<String>,
    /// End of the 30-day window, RFC 3339 [default: today's midnight UTC,
    /// where `bench seed` histories end]
    #[arg(long)]
    to: Option<String>,
    /// Runs per query; the median is reported
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Only the queries whose description contains this text
    #[arg(long)]
    only: Option<String>,
}

const DAY_MS: i64 = 86_400_000;

/// Event names of the seeded product, most frequent first (the weight of
/// name *k* is 1/k, Zipf's law as in real event streams). Every session
/// starts with `app_open`.
const SEED_EVENTS: [&str; 30] = [
    "screen_view",
    "song_played",
    "search",
    "song_skipped",
    "like",
    "scroll_feed",
    "open_album",
    "open_artist",
    "add_to_playlist",
    "share",
    "notification_open",
    "volume_change",
    "queue_add",
    "lyrics_view",
    "download",
    "comment",
    "follow_artist",
    "settings_open",
    "profile_view",
    "create_playlist",
    "rate_song",
    "sleep_timer",
    "cast_start",
    "podcast_play",
    "radio_start",
    "invite_friend",
    "trial_start",
    "checkout_start",
    "purchase",
    "app_open",
];

/// How a seeded person is identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeedIdentity {
    /// Signed in from the first event.
    User,
    /// Anonymous for the first session, then `identify` (stitching).
    AnonymousThenUser,
    /// Never signed in.
    Anonymous,
}

#[derive(Debug, Clone, Copy)]
struct PlannedSession {
    day: u32,
    start_s: u32,
    person: u32,
    events: u32,
    first: bool,
}

/// Today's midnight UTC, Unix ms.
fn today_midnight_ms() -> i64 {
    let now = tally_collector::clock::now_ms();
    now - now.rem_euclid(DAY_MS)
}

/// Sessions of every person until `events` are planned: people arrive
/// uniformly over the days, come back every 1 to 6 days a geometric number
/// of times (mean 5), and do 1 + geometric (mean 9) events per session.
fn plan_sessions(args: &SeedArgs, rng: &mut crate::simulate::scenario::Rng) -> Vec<PlannedSession> {
    let mut sessions = Vec::new();
    let mut budget = args.events;
    let geometric = |rng: &mut crate::simulate::scenario::Rng, mean: f64| -> u32 {
        let mut n = 0;
        while rng.chance(mean / (mean + 1.0)) && n < 1000 {
            n += 1;
        }
        n
    };
    let first_days: Vec<u32> = (0..args.people)
        .map(|_| rng.below(u64::from(args.days)) as u32)
        .collect();
    let mut pass = 0;
    while budget > 0 {
        for (person, &first_day) in first_days.iter().enumerate() {
            if budget == 0 {
                break;
            }
            let visits = if pass == 0 {
                1 + geometric(rng, 4.0)
            } else {
                1
            };
            let mut day = if pass == 0 {
                first_day
            } else {
                first_day + rng.below(u64::from(args.days - first_day)) as u32
            };
            for v in 0..visits {
                if day >= args.days || budget == 0 {
                    break;
                }
                let events = ((1 + geometric(rng, 9.0)) as usize).min(budget);
                budget -= events;
                sessions.push(PlannedSession {
                    day,
                    start_s: rng.below(86_400 - 3_600) as u32,
                    person: person as u32,
                    events: events as u32,
                    first: pass == 0 && v == 0,
                });
                day += rng.between(1, 6) as u32;
            }
        }
        pass += 1;
    }
    sessions.sort_unstable_by_key(|s| (s.day, s.start_s));
    sessions
}

fn seed(args: SeedArgs) -> anyhow::Result<()> {
    use tally_collector::store::{bulk, NewEvent};
    use tally_proto::{MessageType, Priority};

    if args.people == 0 || args.days == 0 || args.events == 0 {
        bail!("--events, --people and --days must be positive");
    }
    let started = Instant::now();
    let mut rng = crate::simulate::scenario::Rng::new(args.seed, 0);
    let identities: Vec<SeedIdentity> = (0..args.people)
        .map(|_| match rng.below(10) {
            0..=4 => SeedIdentity::User,
            5..=7 => SeedIdentity::AnonymousThenUser,
            _ => SeedIdentity::Anonymous,
        })
        .collect();
    let sessions = plan_sessions(&args, &mut rng);
    eprintln!(
        "planned {} sessions of {} people over {} days in {:.1}s",
        sessions.len(),
        args.people,
        args.days,
        started.elapsed().as_secs_f64()
    );
    // Zipf weights of the names after a session's app_open.
    let weights: Vec<f64> = (1..SEED_EVENTS.len()).map(|k| 1.0 / k as f64).collect();
    let total_weight: f64 = weights.iter().sum();
    let pick = |rng: &mut crate::simulate::scenario::Rng| -> &'static str {
        let mut x = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total_weight;
        for (k, w) in weights.iter().enumerate() {
            if x < *w {
                return SEED_EVENTS[k];
            }
            x -= w;
        }
        SEED_EVENTS[0]
    };
    let start_ms = today_midnight_ms() - i64::from(args.days) * DAY_MS;
    let mut loader = bulk::loader(&args.data_dir, args.database_url.as_deref())
        .context("cannot open the store")?;
    let mut chunk: Vec<NewEvent> = Vec::with_capacity(50_000);
    let mut written = 0usize;
    let mut seqs = vec![0u64; args.people];
    let versions = ["2.1.0", "2.2.0", "2.3.0", "2.3.1"];
    let oses = ["Android", "iOS"];
    let locales = ["en-US", "fr-FR", "de-DE", "pt-BR", "ja-JP"];
    let plans = ["free", "free", "free", "premium", "family"];
    for (n, s) in sessions.iter().enumerate() {
        let p = s.person as usize;
        let identity = identities[p];
        let signed_in = match identity {
            SeedIdentity::User => true,
            SeedIdentity::AnonymousThenUser => !s.first,
            SeedIdentity::Anonymous => false,
        };
        let user = format!("user-{p}");
        let anon = format!("anon-{p}");
        let install = format!("inst-{p}");
        let session_id = format!("sess-{n}");
        let mut ts = start_ms + i64::from(s.day) * DAY_MS + i64::from(s.start_s) * 1000;
        let identify_at_end = s.first && identity == SeedIdentity::AnonymousThenUser;
        let count = s.events as usize;
        for i in 0..count {
            let is_identify = identify_at_end && i + 1 == count && count > 1;
            let name = if i == 0 { "app_open" } else { pick(&mut rng) };
            seqs[p] += 1;
            let id = format!("s{}-{:010}", args.seed, written);
            let (kind, event) = if is_identify {
                (MessageType::Identify, None)
            } else {
                (MessageType::Track, Some(name.to_owned()))
            };
            let user_id = (signed_in || is_identify).then(|| user.clone());
            let raw = serde_json::json!({
                "type": kind.as_str(), "messageId": id, "event": event, "userId": user_id,
                "anonymousId": anon, "timestamp": format_timestamp(ts),
                "properties": {"plan": plans[p % plans.len()], "position": i},
                "context": {"app": {"version": versions[(p + s.day as usize / 30) % versions.len()]},
                            "os": {"name": oses[p % 2]}, "locale": locales[p % locales.len()],
                            "tally": {"install_id": install, "seq": seqs[p], "session_id": session_id}}
            })
            .to_string();
            chunk.push(NewEvent {
                source: source_id(WRITE_KEY),
                message_id: id,
                kind,
                event,
                user_id,
                anonymous_id: Some(anon.clone()),
                group_id: None,
                previous_id: None,
                install_id: Some(install.clone()),
                seq: Some(seqs[p]),
                session_id: Some(session_id.clone()),
                session_index: None,
                dedup_key: None,
                priority: Priority::Normal,
                timestamp: Some(ts),
                sent_at: Some(ts + 2_000),
                received_at: ts + 2_100,
                ts_corrected: ts,
                clamped: false,
                drops: Vec::new(),
                raw,
            });
            written += 1;
            ts += 5_000 + rng.below(55_000) as i64;
        }
        if chunk.len() >= 50_000 {
            loader.load(&chunk)?;
            chunk.clear();
            if written % 1_000_000 < 50_000 {
                eprintln!(
                    "{written} events written ({:.0}/s)",
                    written as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
    }
    loader.load(&chunk)?;
    eprintln!("deriving persons, rollups and statistics");
    loader.finish()?;
    println!(
        "seeded {written} events, {} people, {} sessions, {} days ending {} in {:.1}s",
        args.people,
        sessions.len(),
        args.days,
        format_timestamp(today_midnight_ms()),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn queries(args: QueriesArgs) -> anyhow::Result<()> {
    use tally_collector::queries::{answer, ProductQuery};

    let store = store::open(&args.data_dir, args.database_url.as_deref())
        .context("cannot open the store")?;
    let to = match &args.to {
        Some(t) => tally_proto::parse_timestamp(t).context("--to is not RFC 3339")?,
        None => today_midnight_ms(),
    };
    let window = format!(
        "from={}&to={}",
        format_timestamp(to - 30 * DAY_MS),
        format_timestamp(to)
    );
    let stats = store.stats()?;
    println!(
        "store: {} events; window: the 30 days before {}; median of {} runs",
        stats.events,
        format_timestamp(to),
        args.runs.max(1)
    );
    let cases: Vec<(&str, ProductQuery, String)> = vec![
        (
            "count + people, one event (search), 30 days",
            ProductQuery::Events,
            format!("event=search&{window}"),
        ),
        (
            "count + people, top event (screen_view), 30 days",
            ProductQuery::Events,
            format!("event=screen_view&{window}"),
        ),
        ("DAU, 30 days", ProductQuery::Active, window.clone()),
        (
            "funnel app_open > search > purchase, 30 days",
            ProductQuery::Funnel,
            format!("steps=app_open,search,purchase&{window}"),
        ),
        (
            "WAU, 30 days",
            ProductQuery::Active,
            format!("window=week&{window}"),
        ),
        (
            "all events by day, 30 days",
            ProductQuery::Events,
            window.clone(),
        ),
        ("sessions, 30 days", ProductQuery::Sessions, window.clone()),
        (
            "retention 7 days, 30 days",
            ProductQuery::Retention,
            window.clone(),
        ),
        (
            "breakdown search by app version, 30 days",
            ProductQuery::Breakdown,
            format!("event=search&by=context.app.version&{window}"),
        ),
        (
            "top events, 30 days",
            ProductQuery::TopEvents,
            window.clone(),
        ),
    ];
    for (what, query, q) in cases {
        if args
            .only
            .as_deref()
            .is_some_and(|only| !what.contains(only))
        {
            continue;
        }
        let mut times = Vec::new();
        let mut summary = String::new();
        for _ in 0..args.runs.max(1) {
            let t = Instant::now();
            let v = answer(store.as_ref(), query, &q)?;
            times.push(t.elapsed());
            summary = match query {
                ProductQuery::Events => format!("total {}", v["total"]),
                ProductQuery::Funnel => v["steps"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .map(|x| x["people"].to_string())
                            .collect::<Vec<_>>()
                            .join(" > ")
                    })
                    .unwrap_or_default(),
                ProductQuery::Active => format!(
                    "last day {}",
                    v["series"]
                        .as_array()
                        .and_then(|s| s.last())
                        .map(|r| r["people"].to_string())
                        .unwrap_or_default()
                ),
                ProductQuery::Sessions => format!("{} sessions", v["sessions"]),
                _ => String::new(),
            };
        }
        times.sort_unstable();
        println!(
            "{:>9.1} ms  {what}  [{summary}]",
            ms(times[times.len() / 2])
        );
    }
    Ok(())
}
