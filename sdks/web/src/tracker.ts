// The public API: Tracker.open, the calls, flush, sync, health, close.
//
// ## What runs where
//
// | step | when | does |
// |---|---|---|
// | a call (`track`, ...) | synchronously, in the caller's task | checks the limits, serializes the properties once, queues the call in memory (byte-budgeted) and returns what happened; never throws, never waits |
// | a commit | a microtask later, in every tab | under the origin's Web Lock: reads the state, takes seqs, builds and seals the messages, stores them with the state in one IndexedDB transaction, tells the uploading tab |
// | upload | in the one tab holding the upload lock | reads stored records, sends, applies the answers (`uploader.ts`) |
//
// A call accepted here takes its seq when it is stored, in the transaction
// that stores it: `durable` resolves with that seq. A tab closed or killed
// before the commit loses the calls it held in memory, as a process loses
// what it had not written; they never took a seq, so the collector sees
// no gap. `flush()` is the barrier for what must not be lost.

import {
  DEFAULT_MAX_AGE_MS,
  DEFAULT_MAX_BYTES,
  DEFAULT_MAX_EVENTS,
  DEFAULT_QUEUE_BUDGET_BYTES,
  DEFAULT_SESSION_TIMEOUT_MS,
  MAX_COMMIT_ITEMS,
  MAX_EVENT_NAME_BYTES,
  MAX_ID_BYTES,
  MAX_JSON_DEPTH,
  MAX_PROPERTIES_BYTES,
  MAX_PROPERTY_COUNT,
  STORAGE_RETRY_MS,
  SYNC_REPLY_TIMEOUT_MS,
} from "./limits";
import { withLock } from "./locks";
import { Log, type Durable, type Item, type Kind, type Lane } from "./log";
import { Privacy, type KeyScope } from "./privacy";
import type { Consent, State, SyncStats } from "./store";
import { freshStats, Uploader } from "./uploader";
import { jsonDepth, utf8Len, uuid4 } from "./util";

/** The library's name and version in `context.library`. */
export const LIBRARY = { name: "tally-web", version: "0.1.0" };

export type { Consent, Durable, Kind, KeyScope };

/** Options of Tracker.open. Only writeKey and endpoint are required. */
export interface Options {
  writeKey: string;
  /** The collector's base URL (`https://collector.example.com`). */
  endpoint: string;
  /** Consent of a new install (an existing one keeps what was set). Default: pending (opt-in). */
  consent?: Consent;
  /** While consent is pending, refuse calls (`consent_pending`) instead of storing them. */
  storeNothingWhilePending?: boolean;
  /** Per event name, which property keys it may carry. */
  scopes?: Record<string, KeyScope>;
  /** Key fragments whose values are redacted, besides the defaults. */
  sensitiveKeys?: string[];
  /** Replace user ids by HMAC-SHA256(key, id) before anything is stored. */
  pseudonymiseKey?: string | Uint8Array<ArrayBuffer>;
  /** Inactivity that ends a session (default 30 min). */
  sessionTimeoutMs?: number;
  /** Log bounds: events, bytes and age kept pending (defaults 200,000, 64 MiB, 30 days). */
  maxEvents?: number;
  maxBytes?: number;
  maxAgeMs?: number;
  /** Memory the calls waiting to be stored may hold (default 5 MiB). */
  queueBudgetBytes?: number;
  /** Upload in the background (default true); off, only sync() uploads. */
  autoUpload?: boolean;
  /** Send a tally.health beacon this often (ms); off by default. */
  healthBeaconMs?: number;
  /** `context.app` of every message. */
  app?: { name?: string; version?: string; build?: string; namespace?: string };
  /** Name of the IndexedDB database (default "tally"): one install per name, origin and profile. */
  name?: string;
  /** Development builds: judge track calls against the tracking plan (`planCheck` of `@tally/web/plan`). */
  plan?: PlanCheck | undefined;
}

/** Options of one call. */
export interface CallOptions {
  /** critical: kept longest on the device and sent first. */
  priority?: "normal" | "critical";
  /** A business idempotency key (an order id): counted once across every device. */
  dedupKey?: string;
  /** The event's version in the tracking plan the app was built against (`context.tally.event_version`); generated code sets it. */
  eventVersion?: number;
}

/** Why the tracking plan refused a track call: the rule and where, never the value. */
export type PlanRefusal =
  | { reason: "plan_violation"; event: string; version: number; rule: string; path: string; count: number }
  | { reason: "unknown_version"; event: string; version: number }
  | { reason: "unplanned"; event: string };

/** Judges a call (its kind, name, properties as JSON text, options): null when the plan accepts it. */
export type PlanCheck = (kind: Kind, event: string, props: string | undefined, options: CallOptions | undefined) => PlanRefusal | null;

/** What a call did: accepted (its seq comes once stored) or refused with a reason (and the plan's, when the plan refused it). */
export type TrackResult = { ok: true; durable: Promise<Durable> } | { ok: false; reason: string; plan?: PlanRefusal | undefined };

/** Why flush() or sync() could not do what was asked. */
export class TallyError extends Error {
  constructor(
    /** `storage_unavailable`, `closed`, or the storage error's name (`QuotaExceededError`). */
    readonly code: string,
  ) {
    super(`tally: ${code}`);
    this.name = "TallyError";
  }
}

/** The health report (see docs/web.md for each member). */
export interface Health {
  install_id: string | null;
  pending: number;
  pending_bytes: number;
  oldest_pending_age_s: number;
  tracked: number;
  refused: Record<string, number>;
  accepted: number;
  duplicate: number;
  rejected: Record<string, number>;
  dropped: Record<string, number>;
  corrupt: number;
  persistence_errors: number;
  /** `ok`, `unavailable` (no IndexedDB or WebCrypto), or the name of the last write's error (`QuotaExceededError`) until a write succeeds. */
  storage: string;
  storage_usage_bytes: number | null;
  storage_quota_bytes: number | null;
  consecutive_failures: number;
  backoff_ms: number;
  last_success_ms: number | null;
  sync_attempts: number;
  sync_success_rate: number | null;
  sync_latency_p50_ms: number | null;
  sync_latency_p99_ms: number | null;
  clock_offset_ms: number | null;
  clock_offset_rtt_ms: number | null;
  consent: Consent;
  auth_failed: boolean;
  /** This tab holds the upload lock. */
  uploader: boolean;
}

type Message = { t: "w" } | { t: "c"; c: Consent } | { t: "s"; id: string } | { t: "d"; id: string; ok: boolean };

/**
 * Memory a queued call holds besides its strings: the queue entry, its
 * promise and resolver, counted against the queue budget (an estimate, as
 * the Rust SDK's 30-byte record header is for its hand-off queue).
 */
const CALL_OVERHEAD_BYTES = 64;

const percentile = (sorted: number[], q: number): number | null =>
  sorted.length ? (sorted[Math.min(sorted.length, Math.max(1, Math.ceil(sorted.length * q))) - 1] as number) : null;

const count = (map: Record<string, number>, reason: string) => void (map[reason] = (map[reason] ?? 0) + 1);

export class Tracker {
  #log: Log | undefined;
  #consent: Consent;
  #install: string | null = null;
  #storage = "ok";
  readonly #queue: Item[] = [];
  #queued = 0;
  #writing = false;
  #retry: ReturnType<typeof setTimeout> | undefined;
  /** Failed writes in a row of the batch at the head of the queue. */
  #failures = 0;
  /** Calls are refused until then (performance.now()): the browser refuses to store. */
  #blockedUntil = 0;
  /** Calls dropped before taking a seq, not yet counted in the stored state. */
  #lost: Record<string, number> = {};
  #pushed = 0;
  #stored = 0;
  /** Commits started: a flush is settled by a durable commit started after it. */
  #commits = 0;
  #flushes: { upTo: number; after: number; resolve: () => void; reject: (e: TallyError) => void }[] = [];
  #closed = false;
  #tracked = 0;
  readonly #refused: Record<string, number> = {};
  #persistenceErrors = 0;
  #uploader: Uploader | undefined;
  #releaseUpload: (() => void) | undefined;
  #channel: BroadcastChannel | undefined;
  readonly #replies = new Map<string, (ok: boolean) => void>();
  #lastBeacon = performance.now();
  readonly #cleanup: (() => void)[] = [];
  readonly #name: string;

  readonly #opts: Options;

  private constructor(opts: Options) {
    this.#opts = opts;
    this.#consent = opts.consent ?? "pending";
    this.#name = opts.name ?? "tally";
  }

  /**
   * Opens the install's log (creating the install on first use) and starts
   * uploading from whichever tab holds the upload lock. Needs no network.
   * Without IndexedDB or WebCrypto (an insecure context), the tracker still
   * opens and refuses every call as `storage_unavailable`.
   */
  static async open(opts: Options): Promise<Tracker> {
    const t = new Tracker(opts);
    const nav = globalThis.navigator as Navigator | undefined;
    try {
      if (!globalThis.indexedDB || !globalThis.crypto?.subtle) throw new Error("unavailable");
      const ctx: Record<string, unknown> = { library: LIBRARY };
      if (opts.app) ctx.app = opts.app;
      if (nav?.language) ctx.locale = nav.language;
      const timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
      if (timezone) ctx.timezone = timezone;
      const [log, state] = await Log.open(
        {
          name: t.#name,
          maxEvents: opts.maxEvents ?? DEFAULT_MAX_EVENTS,
          maxBytes: opts.maxBytes ?? DEFAULT_MAX_BYTES,
          maxAgeMs: opts.maxAgeMs ?? DEFAULT_MAX_AGE_MS,
          sessionTimeoutMs: opts.sessionTimeoutMs ?? DEFAULT_SESSION_TIMEOUT_MS,
          context: ctx,
          privacy: new Privacy(opts.scopes, opts.sensitiveKeys, opts.pseudonymiseKey),
        },
        t.#consent,
      );
      t.#log = log;
      t.#consent = state.consent;
      t.#install = state.install;
    } catch {
      t.#storage = "unavailable";
      return t;
    }
    t.#start(nav);
    return t;
  }

  #start(nav: Navigator | undefined): void {
    if (typeof BroadcastChannel === "function") {
      const channel = (this.#channel = new BroadcastChannel(`tally:${this.#name}`));
      channel.onmessage = (e: MessageEvent<Message>) => this.#onMessage(e.data);
    }
    const on = (target: EventTarget | undefined, type: string, fn: () => void) => {
      if (!target?.addEventListener) return;
      target.addEventListener(type, fn);
      this.#cleanup.push(() => target.removeEventListener(type, fn));
    };
    const win = globalThis.window as Window | undefined;
    on(win, "online", () => this.#uploader?.pause(false));
    on(win, "offline", () => this.#uploader?.pause(true));
    // Hidden may be the last chance to send: look now (within the backoff).
    on(globalThis.document, "visibilitychange", () => this.#uploader?.wake());
    void withLock(
      `${this.#name}:upload`,
      () =>
        new Promise<void>((release) => {
          if (this.#closed || !this.#log) return release();
          this.#releaseUpload = release;
          void this.#becomeUploader(nav);
        }),
    );
  }

  async #becomeUploader(nav: Navigator | undefined): Promise<void> {
    const log = this.#log as Log;
    const [, stats] = await log.snapshot();
    const uploader = new Uploader(
      {
        log,
        endpoint: this.#opts.endpoint,
        writeKey: this.#opts.writeKey,
        consented: () => this.#consent === "granted",
        beacon: () => this.#beacon(),
      },
      stats ?? freshStats(),
      this.#opts.autoUpload ?? true,
    );
    if (this.#closed) return;
    this.#uploader = uploader;
    uploader.pause(nav?.onLine === false);
    uploader.start();
  }

  #onMessage(m: Message): void {
    if (m.t === "w") this.#uploader?.wake();
    else if (m.t === "c") {
      this.#consent = m.c;
      this.#uploader?.wake();
    } else if (m.t === "s" && this.#uploader) {
      void this.#uploader.drain().then((ok) => this.#channel?.postMessage({ t: "d", id: m.id, ok }));
    } else if (m.t === "d") this.#replies.get(m.id)?.(m.ok);
  }

  #refuse(reason: string): TrackResult {
    count(this.#refused, reason);
    return { ok: false, reason };
  }

  /** The synchronous half of every call. */
  #call(k: Kind, a: string, props: unknown, o: CallOptions | undefined, bad: string | null): TrackResult {
    if (this.#closed) return this.#refuse("shut_down");
    if (!this.#log) return this.#refuse("storage_unavailable");
    if (this.#consent === "denied") return this.#refuse("consent_denied");
    if (this.#consent === "pending" && this.#opts.storeNothingWhilePending) return this.#refuse("consent_pending");
    if (performance.now() < this.#blockedUntil) return this.#refuse(this.#storageReason());
    if (bad) return this.#refuse(bad);
    let p: string | undefined;
    if (props != null) {
      if (typeof props !== "object" || Array.isArray(props)) return this.#refuse("properties_not_object");
      try {
        p = JSON.stringify(props);
      } catch {
        // A cycle or a BigInt: not JSON.
        return this.#refuse("malformed_message");
      }
      if (utf8Len(p) > MAX_PROPERTIES_BYTES) return this.#refuse("properties_too_large");
      if (Object.keys(props).length > MAX_PROPERTY_COUNT) return this.#refuse("too_many_properties");
      // The properties sit one level inside the message.
      if (jsonDepth(p, MAX_JSON_DEPTH) + 1 > MAX_JSON_DEPTH) return this.#refuse("nesting_too_deep");
    }
    const dedup = o?.dedupKey;
    if (dedup !== undefined && (typeof dedup !== "string" || utf8Len(dedup) > MAX_ID_BYTES)) {
      return this.#refuse("id_too_long");
    }
    const plan = this.#opts.plan?.(k, a, p, o);
    if (plan) return Object.assign(this.#refuse(plan.reason), plan);
    const cost = CALL_OVERHEAD_BYTES + a.length + (p?.length ?? 0);
    if (this.#queued + cost > (this.#opts.queueBudgetBytes ?? DEFAULT_QUEUE_BUDGET_BYTES)) return this.#refuse("queue_full");
    let resolve: (d: Durable) => void = () => undefined;
    const durable = new Promise<Durable>((r) => (resolve = r));
    const lane: Lane = o?.priority === "critical" ? 0 : 1;
    this.#push({ k, a, p, ts: Date.now(), lane, dedup, v: o?.eventVersion, cost, done: resolve });
    this.#tracked++;
    return { ok: true, durable };
  }

  #push(item: Item): void {
    this.#queue.push(item);
    this.#queued += item.cost;
    this.#pushed++;
    if (this.#queue.length === 1) queueMicrotask(() => this.#pump());
  }

  /** The reason a call is refused or dropped while the browser refuses to store. */
  #storageReason(): string {
    return this.#storage === "QuotaExceededError" ? "storage_full" : "persist_failed";
  }

  /**
   * Stores what is queued, a commit at a time, in order. While a flush
   * waits, commits are durable ("strict"), and one is made even with
   * nothing queued: it makes the earlier, relaxed ones durable too.
   */
  #pump(): void {
    const log = this.#log;
    const durable = this.#flushes.length > 0;
    if (this.#writing || this.#retry !== undefined || !log || (this.#queue.length === 0 && !durable)) return;
    this.#writing = true;
    const commit = ++this.#commits;
    const items = this.#queue.splice(0, MAX_COMMIT_ITEMS);
    const lost = this.#lost;
    const hasLost = Object.keys(lost).length > 0;
    log.commit(items, hasLost ? { durable, lost } : { durable }).then(
      () => {
        if (hasLost) this.#lost = {};
        this.#failures = 0;
        this.#blockedUntil = 0;
        this.#storage = "ok";
        this.#stored += items.length;
        for (const i of items) this.#queued -= i.cost;
        if (durable) this.#settleFlushes(commit);
        if (this.#uploader) this.#uploader.wake();
        else this.#channel?.postMessage({ t: "w" });
      },
      (e: unknown) => this.#writeFailed(items, e),
    ).finally(() => {
      this.#writing = false;
      this.#pump();
    });
  }

  /**
   * IndexedDB refused a commit (quota exceeded, or another failure). New
   * calls are refused for a while so memory stays bounded; the batch is
   * tried once more, then dropped: counted by reason, with no seq taken,
   * so the collector sees no gap and health() explains them.
   */
  #writeFailed(items: Item[], e: unknown): void {
    this.#persistenceErrors++;
    this.#storage = (e as Error)?.name || "UnknownError";
    this.#blockedUntil = performance.now() + STORAGE_RETRY_MS;
    const error = new TallyError(this.#storage);
    for (const f of this.#flushes.splice(0)) f.reject(error);
    if (++this.#failures < 2) {
      this.#queue.unshift(...items);
      this.#retry = setTimeout(() => {
        this.#retry = undefined;
        this.#pump();
      }, STORAGE_RETRY_MS);
      return;
    }
    this.#failures = 0;
    const reason = this.#storageReason();
    this.#lost[reason] = (this.#lost[reason] ?? 0) + items.length;
    this.#stored += items.length;
    for (const i of items) {
      this.#queued -= i.cost;
      i.done?.({ dropped: reason });
    }
  }

  /** Resolves the flushes a durable commit numbered `commit` covered. */
  #settleFlushes(commit: number): void {
    this.#flushes = this.#flushes.filter((f) => f.after >= commit || f.upTo > this.#stored || void f.resolve());
  }

  /** Tracks event `name`. */
  track(name: string, props?: Record<string, unknown>, options?: CallOptions): TrackResult {
    const bad = typeof name !== "string" || name === "" ? "missing_event_name" : utf8Len(name) > MAX_EVENT_NAME_BYTES ? "event_name_too_long" : null;
    return this.#call("track", String(name), props, options, bad);
  }

  /** A page view. */
  page(name = "", props?: Record<string, unknown>): TrackResult {
    return this.#call("page", String(name), props, undefined, utf8Len(String(name)) > MAX_EVENT_NAME_BYTES ? "event_name_too_long" : null);
  }

  /** A screen view. */
  screen(name: string, props?: Record<string, unknown>): TrackResult {
    return this.#call("screen", String(name), props, undefined, utf8Len(String(name)) > MAX_EVENT_NAME_BYTES ? "event_name_too_long" : null);
  }

  #idCheck(id: unknown, missing: string): string | null {
    return typeof id !== "string" || id === "" ? missing : utf8Len(id) > MAX_ID_BYTES ? "id_too_long" : null;
  }

  /** Names the user from this call on (last identify wins). */
  identify(userId: string, traits?: Record<string, unknown>): TrackResult {
    return this.#call("identify", String(userId), traits, undefined, this.#idCheck(userId, "missing_identity"));
  }

  /** Says the current identity and `userId` are one person; the user is `userId` from now on. */
  alias(userId: string): TrackResult {
    return this.#call("alias", String(userId), undefined, undefined, this.#idCheck(userId, "missing_identity"));
  }

  /** Links the user to group `groupId`. */
  group(groupId: string, traits?: Record<string, unknown>): TrackResult {
    return this.#call("group", String(groupId), traits, undefined, this.#idCheck(groupId, "missing_group_id"));
  }

  /** Logout: forgets the user, draws a new anonymous id and starts a new session, in order with the calls. */
  reset(): void {
    if (this.#log && !this.#closed) this.#push({ k: "reset", a: "", ts: Date.now(), lane: 1, cost: CALL_OVERHEAD_BYTES });
  }

  /**
   * Sets consent for the install (every tab). Denied refuses new calls and
   * crypto-shreds what is stored; granted lets the uploader send.
   */
  async setConsent(consent: Consent): Promise<void> {
    if (!this.#log) throw new TallyError("storage_unavailable");
    this.#consent = consent;
    await this.#log.setConsent(consent);
    this.#channel?.postMessage({ t: "c", c: consent });
    this.#uploader?.wake();
  }

  /** Resolves once every call accepted before it is stored durably in IndexedDB. */
  flush(): Promise<void> {
    if (!this.#log) return Promise.reject(new TallyError("storage_unavailable"));
    return new Promise((resolve, reject) => {
      this.#flushes.push({ upTo: this.#pushed, after: this.#commits, resolve, reject });
      if (this.#retry !== undefined) {
        clearTimeout(this.#retry);
        this.#retry = undefined;
      }
      this.#pump();
    });
  }

  /**
   * Flushes, then has the uploading tab send until nothing is pending
   * (true) or an attempt failed (false). Skips a running backoff.
   */
  async sync(): Promise<boolean> {
    try {
      await this.flush();
    } catch {
      return false;
    }
    if (this.#uploader) return this.#uploader.drain();
    const channel = this.#channel;
    if (!channel) return false;
    const id = uuid4();
    return new Promise((resolve) => {
      const timer = setTimeout(() => answer(false), SYNC_REPLY_TIMEOUT_MS);
      const answer = (ok: boolean) => {
        clearTimeout(timer);
        this.#replies.delete(id);
        resolve(ok);
      };
      this.#replies.set(id, answer);
      channel.postMessage({ t: "s", id });
    });
  }

  async #beacon(): Promise<string | undefined> {
    const every = this.#opts.healthBeaconMs;
    if (every === undefined || performance.now() - this.#lastBeacon < every) return undefined;
    this.#lastBeacon = performance.now();
    const h = await this.health();
    const props: Record<string, unknown> = {
      pending: h.pending,
      pending_bytes: h.pending_bytes,
      oldest_pending_age_s: h.oldest_pending_age_s,
      consecutive_failures: h.consecutive_failures,
      backoff_ms: h.backoff_ms,
      persistence_errors: h.persistence_errors,
    };
    // Not measured yet is left out rather than sent as 0, which would read as a measurement.
    for (const k of ["sync_latency_p50_ms", "sync_latency_p99_ms", "clock_offset_ms"] as const) {
      if (h[k] !== null) props[k] = h[k];
    }
    Object.assign(props, { consent: h.consent, dropped: h.dropped, rejected: h.rejected });
    return JSON.stringify(props);
  }

  /** The health report: the install's figures (every tab's) and this tab's. */
  async health(): Promise<Health> {
    let state: State | undefined;
    let sync: SyncStats = freshStats();
    let oldest: number | undefined;
    if (this.#log) {
      try {
        let shared: SyncStats | undefined;
        [state, shared, oldest] = await this.#log.snapshot();
        sync = this.#uploader?.stats ?? shared ?? sync;
      } catch {
        this.#persistenceErrors++;
      }
    }
    const estimate = await globalThis.navigator?.storage?.estimate?.().catch(() => undefined);
    const latencies = [...sync.latencies].sort((a, b) => a - b);
    const offset = [...sync.offsets].sort((a, b) => a[1] - b[1])[0];
    return {
      install_id: this.#install,
      pending: state?.pending ?? 0,
      pending_bytes: state?.bytes ?? 0,
      oldest_pending_age_s: oldest === undefined ? 0 : Math.max(0, Date.now() - oldest) / 1_000,
      tracked: this.#tracked,
      refused: { ...this.#refused },
      accepted: state?.accepted ?? 0,
      duplicate: state?.duplicate ?? 0,
      rejected: { ...state?.rejected },
      dropped: Object.entries(this.#lost).reduce(
        (all, [reason, n]) => ({ ...all, [reason]: (all[reason] ?? 0) + n }),
        { ...state?.dropped } as Record<string, number>,
      ),
      corrupt: state?.corrupt ?? 0,
      persistence_errors: this.#persistenceErrors,
      storage: this.#storage,
      storage_usage_bytes: estimate?.usage ?? null,
      storage_quota_bytes: estimate?.quota ?? null,
      consecutive_failures: sync.failures,
      backoff_ms: sync.backoff,
      last_success_ms: sync.last,
      sync_attempts: sync.attempts,
      sync_success_rate: sync.attempts ? sync.successes / sync.attempts : null,
      sync_latency_p50_ms: percentile(latencies, 0.5),
      sync_latency_p99_ms: percentile(latencies, 0.99),
      clock_offset_ms: offset ? offset[0] : null,
      clock_offset_rtt_ms: offset ? offset[1] : null,
      consent: state?.consent ?? this.#consent,
      auth_failed: sync.authFailed,
      uploader: this.#uploader !== undefined,
    };
  }

  /** Flushes, stops uploading (another tab takes over) and closes the database. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.flush().catch(() => undefined);
    this.#closed = true;
    await this.#uploader?.stop();
    this.#uploader = undefined;
    this.#releaseUpload?.();
    this.#channel?.close();
    for (const undo of this.#cleanup) undo();
    this.#log?.close();
  }
}
