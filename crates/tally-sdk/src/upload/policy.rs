//! Every limit and delay of the uploader, in one place, with where the
//! number comes from.

/// First backoff ceiling: 1 s. Short enough that a blip costs the user
/// nothing, long enough not to hammer a collector that just failed.
pub const BASE_BACKOFF_MS: u64 = 1_000;

/// Largest backoff ceiling: 5 minutes, as Segment's and Glean's uploaders
/// cap theirs; a device offline for a day retries a few hundred times.
pub const MAX_BACKOFF_MS: u64 = 5 * 60 * 1_000;

/// Smallest drawn delay: keeps a zero draw from turning full jitter into an
/// immediate retry loop.
pub const MIN_BACKOFF_MS: u64 = 50;

/// Longest `Retry-After` honoured: 1 hour. A server asking for more is
/// misconfigured; the device retries after an hour rather than for days.
pub const MAX_RETRY_AFTER_MS: u64 = 60 * 60 * 1_000;

/// `Retry-After` assumed for a 429 or 503 without the header (or with an
/// unreadable one): the first backoff step.
pub const DEFAULT_RETRY_AFTER_MS: u64 = BASE_BACKOFF_MS;

/// Smallest batch budget in bytes of message JSON: below this a batch is
/// one message anyway (messages are up to 32 KiB).
pub const MIN_BATCH_BYTES: usize = 4 * 1024;

/// Starting batch budget: 256 KiB of message JSON. An enriched event is
/// 550-700 bytes (its context makes most of it), so this is about 400
/// events; zstd, with the context repeated in every message, sends it in
/// a few tens of KB at most (100 simulated events took 2.8 KB): seconds
/// on a 2G link, under [`SLOW_SEND_MS`]. A device back from a day offline
/// sends its backlog in a few requests instead of one per 50 events, which
/// halves the requests of a reconnect storm. Grows to
/// [`tally_proto::limits::MAX_BATCH_BYTES`] on fast successes.
pub const INITIAL_BATCH_BYTES: usize = 256 * 1024;

/// Most messages per batch: 500, the SDK default the proto limits assume
/// (`MAX_BATCH_MESSAGES` is 20 times this).
pub const MAX_BATCH_RECORDS: usize = 500;

/// A send that completes within this is "fast": the budget doubles.
/// A 500 KB batch on a 4 Mbit/s mobile link takes about a second.
pub const FAST_SEND_MS: u64 = 1_000;

/// A send slower than this counts as a slow link: the budget halves.
pub const SLOW_SEND_MS: u64 = 10_000;

/// Request timeout of the default HTTP transport: 30 s, long enough for
/// the largest batch on a slow link, short enough to notice a dead one.
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Consecutive 5xx answers for the same first message before the batch is
/// split to isolate a poison message.
pub const POISON_SPLIT_AFTER: u32 = 4;

/// Consecutive 5xx answers for a single message, alone in its batch,
/// before it is quarantined (`server_error`) so it cannot block the queue
/// forever. With the backoff above that is about half an hour of retries.
pub const POISON_QUARANTINE_AFTER: u32 = 12;

/// How many recent send latencies health keeps for p50/p99.
pub const LATENCY_WINDOW: usize = 256;

/// How many recent clock-offset samples are kept; the one with the
/// shortest round trip wins (the NTP rule: least transit, least error).
pub const OFFSET_WINDOW: usize = 16;
