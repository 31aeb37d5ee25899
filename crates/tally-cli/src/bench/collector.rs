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
//! On SQLite, the database file's bytes per stored event (indexes
//! included) and each B-tree's share are printed last ([`super::disk`]).
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
//!
//! With `--plan FILE`, three times `--events` more are sent at full load
//! in six segments, alternately from a source the plan is not checked for
//! and from one it is enforced for ([`super::plan`]); the figure is the
//! rate with enforcement over the rate without it, beside the plan's
//! check alone on one thread (events judged a second) and the messages it
//! rejected.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tally_collector::api::{app, AppState};
use tally_collector::ingest::auth::{source_id, Keys};
use tally_collector::{server, store};
use tally_proto::EncodedBatch;

use super::disk::DiskUse;
use super::load::{
    agent, get_json, load, ms, server_metrics, time_split, workload, ADMIN_TOKEN, WRITE_KEY,
};
use super::plan::{bench_plans, enforced_check, plan_phases, plan_workloads, PLAN_WRITE_KEY};
use super::retention::retention_phases;
use super::StoreKind;

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
    /// Also measure full load with this tracking plan enforced, against
    /// full load without it (a plan that covers the bench's events measures
    /// the check; see docs/tracking-plan.md)
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
}

pub(super) fn collector(args: CollectorArgs) -> anyhow::Result<()> {
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
    let plans = args.plan.as_deref().map(bench_plans).transpose()?;
    let state = AppState::new(
        store.clone(),
        Keys::new(
            [WRITE_KEY.to_owned(), PLAN_WRITE_KEY.to_owned()],
            Some(ADMIN_TOKEN.to_owned()),
        ),
    )
    .with_plans(plans.clone());
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
    let plan_work = match &args.plan {
        Some(_) => plan_workloads(full_batches / 2, args.batch, args.duplicate_percent)?,
        None => Vec::new(),
    };
    let plan_unique: u64 = plan_work.iter().map(|w| w.unique).sum();
    let plan_repeated: u64 = plan_work.iter().map(|w| w.duplicates).sum();

    let check = plans.as_deref().and_then(enforced_check);
    let baseline = baseline(full, args.store, check.as_ref())?;
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
            args.retention_backlog,
            (args.batch, args.connections),
        )?)
    } else {
        None
    };
    let plan = match &args.plan {
        Some(file) => Some(plan_phases(
            &base,
            file,
            &plan_work,
            (args.batch, args.connections),
        )?),
        None => None,
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
    let disk = if args.store == StoreKind::Sqlite {
        let disk = DiskUse::of(&data_dir.join(store::SQLITE_FILE_NAME));
        let _ = std::fs::remove_dir_all(&data_dir);
        Some(disk?)
    } else {
        None
    };

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
    if let Some(disk) = &disk {
        println!("on disk: {}", disk.per_event(stored));
    }
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
    if let Some(p) = &plan {
        println!(
            "plan: full load {:.0} events/s without the check, {:.0} enforcing {} \
             ({} of {} messages rejected): ratio {:.3}; the check alone {:.0} events/s on one thread",
            p.without,
            p.with_plan,
            p.file.display(),
            p.rejected,
            p.checked,
            p.ratio(),
            baseline.judge_rate.unwrap_or_default(),
        );
    }
    let (unique, repeated) = (work.unique + plan_unique, work.duplicates + plan_repeated);
    println!(
        "exactness: accepted {accepted} (sent unique {unique} + backlog {backlog}), duplicate {duplicate} \
         (sent repeated {repeated}), stored {stored} (expired {expired})"
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
            "sent_unique": unique,
            "sent_repeated": repeated,
            "bytes_per_event": disk.as_ref().map(|d| (d.file as f64 / stored.max(1) as f64).round()),
            "retention": retention.as_ref().map(|r| serde_json::json!({
                "backlog": r.backlog,
                "events_per_s_without_job": r.without.round(),
                "events_per_s_with_job": r.with_job.round(),
                "expired": r.expired,
                "ratio": (r.ratio() * 1000.0).round() / 1000.0,
            })),
            "plan": plan.as_ref().map(|p| serde_json::json!({
                "file": p.file.display().to_string(),
                "events_per_s_without_plan": p.without.round(),
                "events_per_s_with_plan": p.with_plan.round(),
                "ratio": (p.ratio() * 1000.0).round() / 1000.0,
                "checked": p.checked,
                "rejected": p.rejected,
                "baseline_check_events_per_s": baseline.judge_rate.map(f64::round),
            })),
        })
    );
    let rejected = plan.as_ref().map_or(0, |p| p.rejected);
    if rejected > 0 {
        // A rejected message is not stored, and its resent copy is
        // rejected again rather than a duplicate: the totals cannot be
        // compared message for message.
        println!("exactness not checked: the plan rejected {rejected} messages");
        return Ok(());
    }
    if accepted != unique + backlog || duplicate != repeated {
        bail!("the store's totals do not match what was sent");
    }
    if retention.is_some() && stored != work.unique + backlog - expired {
        bail!("the stored events counter does not match what was sent minus what expired");
    }
    Ok(())
}

struct Baseline {
    decode_rate: f64,
    store_rate: Option<f64>,
    /// Messages the plan's check judged a second (`--plan`).
    judge_rate: Option<f64>,
}

/// The same batches through the collector's own stages on one thread,
/// without HTTP: decompress, decode, validate, build events (the CPU
/// cost of the ingest path), then, for SQLite, `write_batch` on a fresh
/// store of its own (the store's cost alone), and with `check` the
/// plan's judgement of each message alone.
fn baseline(
    batches: &[EncodedBatch],
    kind: StoreKind,
    check: Option<&tally_collector::plan::PlanCheck>,
) -> anyhow::Result<Baseline> {
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
    let mut judge_time = Duration::ZERO;
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
        if let Some(check) = check {
            let t = Instant::now();
            for m in &body.messages {
                if let Ok(msg) = &m.parsed {
                    std::hint::black_box(check.judge(msg));
                }
            }
            judge_time += t.elapsed();
        }
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
        judge_rate: check.map(|_| messages as f64 / judge_time.as_secs_f64()),
    })
}
