// The uploader: runs in exactly one tab of the origin at a time (the holder
// of the upload Web Lock), from stored records to the collector's answers
// and back to the log as acks.
//
// ## Invariants (the Rust SDK's, crates/tally-sdk/src/upload/mod.rs)
//
// - A record leaves the log only once the collector answered for it
//   (accepted, duplicate, rejected into the counted quarantine) or a named
//   policy dropped it (`deleted_user`).
// - Order: batches are taken from the head of each lane in seq order; a
//   failed batch is retried before anything after it, and a split sends
//   its halves in order, stopping at the first half that fails.
// - No batch is resent forever: a 400 is re-encoded once and then bisected
//   until the one record at fault is quarantined; a 413 is split, and a
//   single record still too large is quarantined; a batch whose first
//   record keeps getting 5xx is narrowed to it, which is quarantined after
//   POISON_QUARANTINE_AFTER tries.

import {
  IDLE_POLL_MS,
  LATENCY_WINDOW,
  MAX_BATCH_RECORDS,
  OFFSET_WINDOW,
  POISON_QUARANTINE_AFTER,
  POISON_SPLIT_AFTER,
  REQUEST_TIMEOUT_MS,
} from "./limits";
import type { Disposition, Log, Pending } from "./log";
import { Backoff, Budget, classify, envelope, type BatchAnswer } from "./policy";
import type { SyncStats } from "./store";
import { base64, formatTimestamp } from "./util";

/** What one attempt achieved. */
export type Step = "progress" | "idle" | "failed" | "blocked";

/** What the uploader needs from its tracker. */
export interface Host {
  log: Log;
  endpoint: string;
  writeKey: string;
  consented(): boolean;
  /** Properties of a health beacon when one is due, else undefined. */
  beacon(): Promise<string | undefined>;
}

const enc = new TextEncoder();

/** The stats of a fresh install. */
export const freshStats = (): SyncStats => ({
  attempts: 0, successes: 0, failures: 0, backoff: 0, last: null, latencies: [], offsets: [], authFailed: false,
});

const push = <T>(window: T[], value: T, max: number) => {
  window.push(value);
  if (window.length > max) window.shift();
};

/** gzip through CompressionStream where the browser has it. */
async function encode(json: string): Promise<[Uint8Array<ArrayBuffer>, string | undefined]> {
  const plain = enc.encode(json);
  if (typeof CompressionStream !== "function") return [plain, undefined];
  const gz = new Blob([plain]).stream().pipeThrough(new CompressionStream("gzip"));
  return [new Uint8Array(await new Response(gz).arrayBuffer()), "gzip"];
}

export class Uploader {
  readonly #backoff = new Backoff();
  readonly #budget = new Budget();
  #maxRecords = MAX_BATCH_RECORDS;
  #head: [number, number] | undefined;
  #nextTry = 0;
  #running = false;
  #paused = false;
  #wakeUp: (() => void) | undefined;
  #woken = false;
  #chain: Promise<unknown> = Promise.resolve();

  readonly #host: Host;
  readonly #auto: boolean;

  constructor(host: Host, public stats: SyncStats, auto: boolean) {
    this.#host = host;
    this.#auto = auto;
  }

  /** Runs the background loop until stop(). */
  start(): void {
    this.#running = true;
    void this.#loop();
  }

  /** Stops the loop; resolves once no attempt runs. */
  stop(): Promise<void> {
    this.#running = false;
    this.wake();
    return this.#chain.then(() => undefined);
  }

  /** Offline: no attempt until online again. */
  pause(paused: boolean): void {
    this.#paused = paused;
    if (!paused) this.#nextTry = 0;
    this.wake();
  }

  /** New records, or a reason to look again (kept if nobody sleeps yet). */
  wake(): void {
    this.#woken = true;
    this.#wakeUp?.();
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#wakeUp?.(), ms);
      this.#wakeUp = () => {
        clearTimeout(timer);
        this.#wakeUp = undefined;
        this.#woken = false;
        resolve();
      };
      if (this.#woken) this.#wakeUp();
    });
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn);
    this.#chain = run.catch(() => undefined);
    return run;
  }

  async #loop(): Promise<void> {
    while (this.#running) {
      const wait = this.#paused || !this.#auto ? IDLE_POLL_MS : this.#nextTry - performance.now();
      if (wait > 0) {
        await this.#sleep(wait);
        continue;
      }
      const step = await this.#exclusive(() => this.#attempt(false, true));
      if (step === "idle" || step === "blocked") await this.#sleep(IDLE_POLL_MS);
    }
  }

  /**
   * Tries now, skipping a running backoff and an auth stop, until nothing
   * is pending (true) or an attempt fails (false). A health beacon due is
   * made on the first attempt only, so a short beacon period cannot keep
   * the log from ever being empty.
   */
  drain(): Promise<boolean> {
    this.#nextTry = 0;
    this.stats.authFailed = false;
    return this.#exclusive(async () => {
      for (let first = true; ; first = false) {
        const step = await this.#attempt(true, first);
        if (step !== "progress") return step === "idle";
      }
    });
  }

  /** One attempt; IndexedDB failing (quota, a closed database) counts as a failed attempt, with backoff. */
  async #attempt(forced: boolean, beacon: boolean): Promise<Step> {
    try {
      return await this.#tryOnce(forced, beacon);
    } catch {
      return this.#fail(this.#backoff.fail());
    }
  }

  async #tryOnce(forced: boolean, due: boolean): Promise<Step> {
    const { log } = this.#host;
    if (!this.#host.consented() || (this.stats.authFailed && !forced)) return "blocked";
    const beacon = due ? await this.#host.beacon() : undefined;
    await log.commit([], beacon === undefined ? { reports: true } : { reports: true, beacon });
    const records = await log.pending(this.#maxRecords, this.#budget.bytes);
    if (records.length === 0) return "idle";
    const step = await this.#deliver(records, false);
    // Only figures for health(): a failed save is not a failed attempt.
    await log.saveSync(this.stats).catch(() => undefined);
    return step;
  }

  #fail(delay: number): Step {
    this.#nextTry = performance.now() + delay;
    this.stats.failures = this.#backoff.failures;
    this.stats.backoff = delay;
    return "failed";
  }

  #succeeded(): void {
    this.#backoff.failures = 0;
    this.#head = undefined;
    this.#maxRecords = MAX_BATCH_RECORDS;
    this.stats.failures = this.stats.backoff = 0;
  }

  async #deliver(records: Pending[], reencoded: boolean): Promise<Step> {
    const { endpoint, writeKey } = this.#host;
    const [body, encoding] = await encode(envelope(records.map((r) => r.json), formatTimestamp(Date.now())));
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
    const headers: Record<string, string> = {
      // Segment's convention: the write key is the Basic user name.
      Authorization: `Basic ${base64(enc.encode(`${writeKey}:`))}`,
      "Content-Type": "application/json",
      "Content-Digest": `sha-256=:${base64(digest)}:`,
    };
    if (encoding) headers["Content-Encoding"] = encoding;
    this.stats.attempts++;
    const tSend = Date.now();
    const t0 = performance.now();
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    let outcome;
    try {
      const res = await fetch(`${endpoint.replace(/\/+$/, "")}/v1/batch`, {
        method: "POST", headers, body, credentials: "omit", signal: abort.signal,
      });
      const text = await res.text();
      outcome = classify(res.status, res.headers.get("Retry-After"), text, records.length, Date.now());
    } catch (e) {
      outcome = { kind: "network" as const, timeout: (e as Error).name === "AbortError" };
    } finally {
      clearTimeout(timer);
    }
    const elapsed = performance.now() - t0;
    switch (outcome.kind) {
      case "results":
        await this.#onResults(records, outcome.answer, tSend, Date.now());
        this.#budget.afterSuccess(elapsed);
        push(this.stats.latencies, Math.round(elapsed), LATENCY_WINDOW);
        return "progress";
      case "bad_request":
        if (!reencoded) return this.#deliver(records, true);
        return records.length > 1 ? this.#split(records) : this.#quarantine(records[0] as Pending, "undecodable");
      case "too_large":
        this.#budget.shrink();
        return records.length > 1 ? this.#split(records) : this.#quarantine(records[0] as Pending, "too_large");
      case "unauthorized":
        this.stats.authFailed = true;
        return "failed";
      case "retry_after":
        return this.#fail(this.#backoff.failWith(outcome.ms));
      case "server_error":
        return this.#serverError(records);
      case "network":
        if (outcome.timeout) this.#budget.shrink();
        return this.#fail(this.#backoff.fail());
    }
  }

  async #split(records: Pending[]): Promise<Step> {
    const mid = Math.floor(records.length / 2);
    const first = await this.#deliver(records.slice(0, mid), false);
    return first === "progress" ? this.#deliver(records.slice(mid), false) : first;
  }

  /** Poison isolation: the same first record failing again and again is narrowed to itself, then quarantined. */
  #serverError(records: Pending[]): Step | Promise<Step> {
    const first = records[0] as Pending;
    const n = this.#head?.[0] === first.seq ? this.#head[1] + 1 : 1;
    this.#head = [first.seq, n];
    if (records.length === 1 && n >= POISON_QUARANTINE_AFTER) return this.#quarantine(first, "server_error");
    if (n >= POISON_SPLIT_AFTER) this.#maxRecords = Math.max(1, Math.floor(records.length / 2));
    return this.#fail(this.#backoff.fail());
  }

  /**
   * Gives up on a record the collector cannot take: counted as rejected,
   * and its seq reported as dropped (`quarantined_<reason>`) so the
   * collector does not count it missing.
   */
  async #quarantine(record: Pending, reason: string): Promise<Step> {
    await this.#host.log.settle([[record.seq, ["quarantined", reason]]]);
    this.#succeeded();
    return "progress";
  }

  async #onResults(records: Pending[], answer: BatchAnswer, tSend: number, tRecv: number): Promise<void> {
    const server = Date.parse(answer.server_time);
    if (!isNaN(server)) {
      // NTP-style: the server stamped the midpoint of the round trip.
      const rtt = Math.max(0, tRecv - tSend);
      push(this.stats.offsets, [tSend + Math.floor(rtt / 2) - server, rtt], OFFSET_WINDOW);
    }
    const acks = records.map((r, i): [number, Disposition] => {
      const result = answer.results[i];
      if (result?.status === "accepted" || result?.status === "duplicate") return [r.seq, [result.status]];
      return [r.seq, ["rejected", result?.reason ?? "unrecognized"]];
    });
    await this.#host.log.settle(acks);
    this.stats.successes++;
    this.stats.last = tRecv;
    this.#succeeded();
    if (answer.deleted_users?.length) await this.#host.log.purgeUsers(answer.deleted_users);
  }
}
