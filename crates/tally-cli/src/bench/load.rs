//! The load clients of `tally bench collector`: the workload of
//! SDK-shaped batches, clients posting them with every answer checked, and
//! the server's own figures scraped between phases.

use std::io::Read as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tally_proto::{format_timestamp, Batch, ContentEncoding, EncodedBatch, Message, RawJson};

pub(super) const WRITE_KEY: &str = "bench-write-key";
pub(super) const ADMIN_TOKEN: &str = "bench-admin-token";

pub(super) struct Workload {
    pub(super) batches: Vec<EncodedBatch>,
    pub(super) unique: u64,
    pub(super) duplicates: u64,
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Batches of Tally SDK-shaped messages; in each batch `dup_percent` of the
/// messages repeat messages of the batch before (same id, same bytes), the
/// way a client resends after a lost answer.
pub(super) fn workload(batches: usize, size: usize, dup_percent: usize) -> Workload {
    workload_of(std::process::id(), batches, size, dup_percent)
}

/// [`workload`] with ids (messages, installs, people) of their own for
/// each `run`: workloads of different runs share no message.
pub(super) fn workload_of(run: u32, batches: usize, size: usize, dup_percent: usize) -> Workload {
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

pub(super) fn message(run: u32, seq: u64, ts: i64) -> Message {
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

pub(super) struct Run {
    pub(super) messages: u64,
    /// Messages answered `rejected`.
    pub(super) rejected: u64,
    pub(super) wall: Duration,
    pub(super) latencies: Vec<Duration>,
}

impl Run {
    pub(super) fn percentile(&self, p: usize) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = (self.latencies.len() * p / 100).min(self.latencies.len() - 1);
        self.latencies[i]
    }
}

pub(super) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Posts `batches` from `connections` threads with the bench's write key;
/// with `interval`, the batches are paced to one every `interval` overall.
/// Every message must be taken (accepted or a duplicate).
pub(super) fn load(
    base: &str,
    batches: &[EncodedBatch],
    batch_size: usize,
    connections: usize,
    interval: Option<Duration>,
) -> anyhow::Result<Run> {
    let run = load_as(base, WRITE_KEY, batches, batch_size, connections, interval)?;
    if run.rejected != 0 {
        bail!("{} messages were rejected", run.rejected);
    }
    Ok(run)
}

/// [`load`] with write key `key`, rejections counted rather than refused.
pub(super) fn load_as(
    base: &str,
    key: &str,
    batches: &[EncodedBatch],
    batch_size: usize,
    connections: usize,
    interval: Option<Duration>,
) -> anyhow::Result<Run> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let url = format!("{base}/v1/batch");
    let results: Vec<anyhow::Result<(u64, u64, Vec<Duration>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..connections)
            .map(|_| {
                let next = next.clone();
                let url = url.clone();
                scope.spawn(move || -> anyhow::Result<(u64, u64, Vec<Duration>)> {
                    let agent = agent();
                    let (mut messages, mut rejected) = (0u64, 0u64);
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
                            .header("authorization", format!("Bearer {key}"))
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
                        if answer.results.len() != batch_size {
                            bail!(
                                "batch {i}: unexpected answer: {} results",
                                answer.results.len()
                            );
                        }
                        messages += answer.results.len() as u64;
                        rejected += answer.rejected;
                    }
                    Ok((messages, rejected, latencies))
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
        rejected: 0,
        wall,
        latencies: Vec::new(),
    };
    for r in results {
        let (m, rejected, l) = r?;
        run.messages += m;
        run.rejected += rejected;
        run.latencies.extend(l);
    }
    run.latencies.sort_unstable();
    Ok(run)
}

pub(super) fn get_json(agent: &ureq::Agent, url: &str) -> anyhow::Result<serde_json::Value> {
    let mut response = agent
        .get(url)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()?;
    let text = response.body_mut().read_to_string()?;
    Ok(serde_json::from_str(&text)?)
}

pub(super) fn server_metrics(agent: &ureq::Agent, base: &str) -> anyhow::Result<String> {
    let mut response = agent
        .get(&format!("{base}/metrics"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()?;
    Ok(response.body_mut().read_to_string()?)
}

/// (batch seconds, commit seconds, requests) between two scrapes.
pub(super) fn time_split(before: &str, after: &str) -> (f64, f64, f64) {
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
