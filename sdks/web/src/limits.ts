// Every limit and delay of the web SDK, with where the number comes from.
// The wire limits and the upload policy are the Rust SDK's and the
// collector's (crates/tally-proto/src/limits.rs,
// crates/tally-sdk/src/upload/policy.rs): both SDKs must behave alike
// against one collector, and the shared vectors in vectors/ check it.

/** Largest message as JSON: Segment's documented 32 KB. */
export const MAX_MESSAGE_BYTES = 32 * 1024;
/** Largest properties or traits object: 8 KiB under the message, for context. */
export const MAX_PROPERTIES_BYTES = 24 * 1024;
/** A batch up to this many bytes of JSON is always accepted (Segment's 500 KB). */
export const MAX_BATCH_BYTES = 500 * 1024;
/** Longest event, page or screen name, in bytes. */
export const MAX_EVENT_NAME_BYTES = 255;
/** Longest messageId, in bytes. */
export const MAX_MESSAGE_ID_BYTES = 128;
/** Longest userId, anonymousId, groupId, previousId, install or session id, dedup key. */
export const MAX_ID_BYTES = 255;
/** Deepest nesting of objects and arrays in one message. */
export const MAX_JSON_DEPTH = 32;
/** Most top-level properties: Mixpanel's documented limit, as the Rust SDK. */
export const MAX_PROPERTY_COUNT = 255;
/** `context.tally.schema` written by this SDK. */
export const SCHEMA_VERSION = 1;

/** First backoff ceiling: a blip costs nothing, a failed collector is not hammered. */
export const BASE_BACKOFF_MS = 1_000;
/** Largest backoff ceiling: 5 minutes, as Segment's and Glean's uploaders. */
export const MAX_BACKOFF_MS = 300_000;
/** Smallest drawn delay: a zero draw never turns into a retry loop. */
export const MIN_BACKOFF_MS = 50;
/** Longest Retry-After honoured: 1 hour; more is a misconfigured server. */
export const MAX_RETRY_AFTER_MS = 3_600_000;
/** Retry-After assumed for a 429 or 503 without a readable header. */
export const DEFAULT_RETRY_AFTER_MS = BASE_BACKOFF_MS;
/** Smallest batch budget: below it a batch is one message anyway. */
export const MIN_BATCH_BYTES = 4 * 1024;
/** Starting batch budget: about 400 enriched events, seconds on a 2G link. */
export const INITIAL_BATCH_BYTES = 256 * 1024;
/** Largest batch budget: the always-accepted batch less the envelope. */
export const MAX_BUDGET_BYTES = MAX_BATCH_BYTES - 64;
/** Most messages per batch, the Rust SDK's default. */
export const MAX_BATCH_RECORDS = 500;
/** A send within this is fast: the budget doubles (500 KB on 4 Mbit/s). */
export const FAST_SEND_MS = 1_000;
/** A send slower than this is a slow link: the budget halves. */
export const SLOW_SEND_MS = 10_000;
/** No answer within this is a timeout: the largest batch on a slow link fits. */
export const REQUEST_TIMEOUT_MS = 30_000;
/** 5xx answers in a row for one first message before its batch is split. */
export const POISON_SPLIT_AFTER = 4;
/** 5xx answers in a row for a message sent alone before it is quarantined. */
export const POISON_QUARANTINE_AFTER = 12;
/** Recent send latencies kept for p50/p99. */
export const LATENCY_WINDOW = 256;
/** Recent clock-offset samples; the one with the shortest round trip wins (NTP). */
export const OFFSET_WINDOW = 16;
/** Most ranges in one tally.dropped report: its properties stay far under 24 KiB. */
export const MAX_RANGES_PER_REPORT = 400;
/** Idle poll of the uploader: new records wake it, so this bounds a missed wake-up. */
export const IDLE_POLL_MS = 5_000;

/** Default bound on pending bytes: a week of heavy use many times over. */
export const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;
/** Default bound on pending events. */
export const DEFAULT_MAX_EVENTS = 200_000;
/** Default bound on a pending event's age: 30 days. */
export const DEFAULT_MAX_AGE_MS = 30 * 24 * 3_600_000;
/** Inactivity that ends a session: 30 minutes, the industry convention. */
export const DEFAULT_SESSION_TIMEOUT_MS = 30 * 60_000;
/**
 * Memory the calls waiting to be persisted may hold before `track()`
 * refuses with `queue_full`: the Rust SDK's hand-off budget, which absorbs
 * a burst of about 60,000 small events while IndexedDB catches up.
 */
export const DEFAULT_QUEUE_BUDGET_BYTES = 5 * 1024 * 1024;
/**
 * Pause before writing again after the browser refused a write for want of
 * quota: long enough not to spin, short against a user's patience; acks
 * that free room wake the writer sooner.
 */
export const STORAGE_RETRY_MS = 2_000;
/** How long `sync()` in a tab that does not upload waits for the uploading tab. */
export const SYNC_REPLY_TIMEOUT_MS = 60_000;
/**
 * Calls stored per transaction: a burst is written in several commits, so
 * the lock other tabs wait for is held for milliseconds, not seconds.
 */
export const MAX_COMMIT_ITEMS = 1_000;
