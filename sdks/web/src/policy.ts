// What the uploader does with each answer, how long it waits, and how large
// its next batch is: the Rust SDK's policy (crates/tally-sdk/src/upload/
// outcome.rs, backoff.rs, batcher.rs), pinned by vectors/answers.json and
// vectors/backoff.json.
//
// | answer                                   | outcome        | the uploader                                   |
// |------------------------------------------|----------------|------------------------------------------------|
// | 2xx with one result per message          | results        | ack accepted/duplicate, quarantine rejected    |
// | 2xx unreadable or not matching the batch | server_error   | back off and retry: the data is fine           |
// | 400                                      | bad_request    | re-encode once, then bisect to the bad record  |
// | 401, 403                                 | unauthorized   | stop sending, keep everything                  |
// | 413                                      | too_large      | split and shrink the budget                    |
// | 429, 503                                 | retry_after    | wait as told                                   |
// | other status                             | server_error   | full-jitter backoff, poison isolation          |
// | no answer                                | network        | full-jitter backoff (a timeout shrinks budget) |

import {
  BASE_BACKOFF_MS,
  DEFAULT_RETRY_AFTER_MS,
  FAST_SEND_MS,
  INITIAL_BATCH_BYTES,
  MAX_BACKOFF_MS,
  MAX_BUDGET_BYTES,
  MAX_RETRY_AFTER_MS,
  MIN_BACKOFF_MS,
  MIN_BATCH_BYTES,
  SLOW_SEND_MS,
} from "./limits";

/** One result of the collector's batch answer. */
export interface MessageResult {
  status: "accepted" | "duplicate" | "rejected";
  reason?: string;
}

/** The collector's 200 answer to a batch. */
export interface BatchAnswer {
  server_time: string;
  results: MessageResult[];
  deleted_users?: string[];
}

/** What an answer means for the batch sent. */
export type Outcome =
  | { kind: "results"; answer: BatchAnswer }
  | { kind: "bad_request" | "unauthorized" | "too_large" | "server_error" | "network"; timeout?: boolean }
  | { kind: "retry_after"; ms: number };

/**
 * Reads Retry-After as delta-seconds or an HTTP-date against the device
 * clock `nowMs`; absent or unreadable gives the default, and the wait is
 * at least the smallest backoff, so a past date never becomes a tight loop.
 */
export function retryAfterMs(header: string | null, nowMs: number): number {
  if (header === null) return DEFAULT_RETRY_AFTER_MS;
  const value = header.trim();
  let wait = DEFAULT_RETRY_AFTER_MS;
  if (/^\d+$/.test(value)) wait = Number(value) * 1_000;
  else {
    const at = Date.parse(value);
    if (!isNaN(at)) wait = Math.max(0, at - nowMs);
  }
  return Math.max(wait, MIN_BACKOFF_MS);
}

/** Classifies an answer (status, Retry-After, body) to a batch of `sent` messages, read at `nowMs`. */
export function classify(status: number, retryAfter: string | null, body: string, sent: number, nowMs: number): Outcome {
  if (status >= 200 && status < 300) {
    try {
      const answer = JSON.parse(body) as BatchAnswer;
      if (Array.isArray(answer.results) && answer.results.length === sent) return { kind: "results", answer };
    } catch {
      // A 2xx that is not the answer: the server is broken, not the data.
    }
    return { kind: "server_error" };
  }
  if (status === 400) return { kind: "bad_request" };
  if (status === 401 || status === 403) return { kind: "unauthorized" };
  if (status === 413) return { kind: "too_large" };
  if (status === 429 || status === 503) return { kind: "retry_after", ms: retryAfterMs(retryAfter, nowMs) };
  return { kind: "server_error" };
}

/** The full-jitter ceiling after the `failures`-th failure in a row: 1 s doubling to 5 min. */
export const ceilingMs = (failures: number): number =>
  Math.min(MAX_BACKOFF_MS, BASE_BACKOFF_MS * 2 ** Math.min(Math.max(failures - 1, 0), 32));

/** Exponential backoff with full jitter; a success resets it. */
export class Backoff {
  failures = 0;
  readonly #random: () => number;

  constructor(random: () => number = Math.random) {
    this.#random = random;
  }

  /** Records a failure; the wait before the next try. */
  fail(): number {
    const ceiling = ceilingMs(++this.failures);
    return MIN_BACKOFF_MS + Math.floor(this.#random() * (ceiling - MIN_BACKOFF_MS + 1));
  }

  /** Records a failure whose wait the server set. */
  failWith(ms: number): number {
    this.failures++;
    return Math.min(ms, MAX_RETRY_AFTER_MS);
  }
}

/** The adaptive batch budget in bytes of message JSON. */
export class Budget {
  bytes = INITIAL_BATCH_BYTES;

  /** Adapts to a successful send that took `ms`: doubles when fast, halves when slow. */
  afterSuccess(ms: number): void {
    if (ms <= FAST_SEND_MS) this.bytes = Math.min(this.bytes * 2, MAX_BUDGET_BYTES);
    else if (ms >= SLOW_SEND_MS) this.shrink();
  }

  /** Halves the budget (413, timeout, slow link). */
  shrink(): void {
    this.bytes = Math.max(Math.floor(this.bytes / 2), MIN_BATCH_BYTES);
  }
}

/** The batch body around stored message JSON, verbatim, stamped `sentAt`. */
export const envelope = (payloads: string[], sentAt: string): string =>
  `{"batch":[${payloads.join(",")}],"sentAt":"${sentAt}"}`;
