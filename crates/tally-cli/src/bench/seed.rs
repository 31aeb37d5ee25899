//! `tally bench seed` and `tally bench queries`: a realistic
//! product-analytics history written in bulk, and the product queries timed
//! on it.

use std::time::Instant;

use super::load::{ms, WRITE_KEY};
use anyhow::{bail, Context as _};
use tally_collector::ingest::auth::source_id;
use tally_collector::store;
use tally_proto::format_timestamp;

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

pub(super) fn seed(args: SeedArgs) -> anyhow::Result<()> {
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

pub(super) fn queries(args: QueriesArgs) -> anyhow::Result<()> {
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
