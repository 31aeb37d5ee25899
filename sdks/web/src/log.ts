// The durable log: calls become sealed records in IndexedDB, numbered in
// the transaction that stores them, and leave only when the collector
// answered for them or a named policy dropped them (and the drop is
// recorded as a seq range, to be reported).
//
// ## Invariants
//
// - **Gapless seqs across tabs.** A record's seq is taken from the state in
//   the same transaction that stores the record, so a seq exists only if
//   its record (or its drop) was committed: a tab killed mid-write leaves
//   no hole. Every change of the state happens under one Web Lock (the
//   state is read, messages are built and sealed, then written), so two
//   tabs never take the same seq.
// - **Sealed at rest.** Each record is its message's JSON sealed with
//   AES-GCM under a non-extractable key kept in the same database; seq,
//   lane and time are authenticated as associated data.
// - **Every drop counted.** A bound (`expired`, `log_full`), a message the
//   collector would reject
//   (`invalid:<reason>`), an undecryptable record (`corrupt`), withdrawn
//   consent (`consent_denied`), a deleted user (`deleted_user`), and the
//   uploader's quarantine (`quarantined_<reason>`) record their seqs in
//   `state.drops` until a `tally.dropped` report of them is answered.

import { MAX_RANGES_PER_REPORT, SCHEMA_VERSION } from "./limits";
import { withLock } from "./locks";
import type { Privacy } from "./privacy";
import {
  done, EVENTS, laneRange, META, openDb, req, walk,
  type Consent, type State, type StoredRecord, type SyncStats,
} from "./store";
import { addRange, formatTimestamp, subtract, utf8Len, uuid4, uuid7 } from "./util";
import { validate } from "./validate";

/** Lane 0 is critical (kept longest, sent first), 1 normal. */
export type Lane = 0 | 1;

/** What became of an accepted call: its seq once stored, or why it was dropped. */
export type Durable = { seq: number } | { dropped: string };

/** Kinds of calls: the six message types, and `reset` (logout). */
export type Kind = "track" | "page" | "screen" | "identify" | "alias" | "group" | "reset";

/** A call waiting to be stored. */
export interface Item {
  k: Kind;
  /** The event, page or screen name, user id or group id. */
  a: string;
  /** Properties or traits as JSON object text. */
  p?: string | undefined;
  /** Capture time (Unix ms, device clock). */
  ts: number;
  lane: Lane;
  dedup?: string | undefined;
  /** The event's plan version. */
  v?: number | undefined;
  /** Bytes held in memory, against the queue budget. */
  cost: number;
  done?: ((d: Durable) => void) | undefined;
}

/** What the collector's answer (or the uploader) decided for a record. */
export type Disposition =
  | ["accepted" | "duplicate"]
  | ["rejected" | "quarantined" | "dropped", string];

/** Options of one commit. */
export interface CommitOptions {
  /** Also report the drops not reported yet. */
  reports?: boolean;
  /** Also store a health beacon with these properties (JSON text). */
  beacon?: string;
  /** Make the write durable before resolving (an app's flush). */
  durable?: boolean;
  /** Calls dropped before they took a seq (the browser refused to store them), by reason: counted in the state. */
  lost?: Record<string, number>;
}

/** A pending record, opened. */
export interface Pending {
  seq: number;
  lane: Lane;
  json: string;
}

export interface LogConfig {
  /** The database's name; the locks are named after it. */
  name: string;
  maxEvents: number;
  maxBytes: number;
  maxAgeMs: number;
  sessionTimeoutMs: number;
  /** Context members every message carries besides `tally`. */
  context: Record<string, unknown>;
  privacy: Privacy;
}

/** Prefix of the SDK's own events, which carry no user id. */
export const INTERNAL_PREFIX = "tally.";
/** The report of device-side drops. */
export const DROPPED_EVENT = "tally.dropped";
/** Random bytes of a UUIDv7 besides its time: its 74 random bits, as the uuid crate takes them. */
const UUID7_RANDOM_BYTES = 10;
/** AES-GCM nonce length recommended by NIST SP 800-38D. */
const IV_BYTES = 12;

const enc = new TextEncoder();
const dec = new TextDecoder();
const AES = "AES-GCM";

const ad = (seq: number, lane: Lane, at: number) => enc.encode(`${seq}.${lane}.${at}`);

function count(map: Record<string, number>, reason: string, n = 1): void {
  map[reason] = (map[reason] ?? 0) + n;
}

/** Records seq as dropped for `reason` (counted unless `uncounted`). */
export function dropSeq(state: State, reason: string, seq: number, uncounted = false): void {
  addRange((state.drops[reason] ??= []), seq, seq);
  if (!uncounted) count(state.dropped, reason);
}

/** Forgets the in-flight report stored as `seq` (dropped on the device): its ranges are reported again. */
function lostReport(state: State, seq: number): void {
  state.inflight = state.inflight.filter((r) => r.seq !== seq);
}

/** A new install's state. */
export function freshState(consent: Consent): State {
  return {
    install: uuid4(), anon: uuid4(), user: null, consent, next: 1, session: null,
    pending: 0, bytes: 0, drops: {}, inflight: [], dropped: {}, rejected: {},
    accepted: 0, duplicate: 0, corrupt: 0,
  };
}

export class Log {
  readonly #keys = new Map<number, CryptoKey>();

  readonly #db: IDBDatabase;
  readonly #cfg: LogConfig;

  private constructor(db: IDBDatabase, cfg: LogConfig) {
    this.#db = db;
    this.#cfg = cfg;
  }

  /** Opens the install's log, creating the install (with `consent`) on first use. */
  static async open(cfg: LogConfig, consent: Consent): Promise<[Log, State]> {
    const log = new Log(await openDb(cfg.name), cfg);
    const state = await log.#locked(async () => {
      const tx = log.#db.transaction(META, "readwrite");
      const meta = tx.objectStore(META);
      const finished = done(tx);
      let s = (await req(meta.get("state"))) as State | undefined;
      if (!s) meta.put((s = freshState(consent)), "state");
      await finished;
      return s;
    });
    return [log, state];
  }

  #locked<T>(fn: () => Promise<T>): Promise<T> {
    return withLock(`${this.#cfg.name}:db`, fn);
  }

  close(): void {
    this.#db.close();
  }

  /** A transaction over both stores, run by `body`; rejects (rolled back) if either fails. */
  async #tx<T>(
    mode: IDBTransactionMode,
    body: (meta: IDBObjectStore, events: IDBObjectStore) => Promise<T>,
    durability: "strict" | "default" = "default",
  ): Promise<T> {
    const tx = this.#db.transaction([META, EVENTS], mode, { durability });
    const finished = done(tx);
    let out: T;
    try {
      out = await body(tx.objectStore(META), tx.objectStore(EVENTS));
    } catch (e) {
      try {
        tx.abort();
      } catch {
        // Already finished: its own error is the one to report.
      }
      await finished.catch(() => undefined);
      throw e;
    }
    await finished;
    return out;
  }

  /** The state, the uploader's figures, and when the oldest pending record was stored. */
  snapshot(): Promise<[State, SyncStats | undefined, number | undefined]> {
    return this.#tx("readonly", async (meta, events) => {
      const lane = events.index("lane");
      let oldest: number | undefined;
      for (const l of [0, 1] as const) {
        await walk(lane, laneRange(l), (c) => {
          const at = (c.value as StoredRecord).at;
          oldest = oldest === undefined ? at : Math.min(oldest, at);
          return false;
        });
      }
      return [
        (await req(meta.get("state"))) as State,
        (await req(meta.get("sync"))) as SyncStats | undefined,
        oldest,
      ];
    });
  }

  /** Saves the uploading tab's figures (only that tab writes them). */
  saveSync(stats: SyncStats): Promise<void> {
    return this.#tx("readwrite", async (meta) => void meta.put(stats, "sync"));
  }

  /** The message of `item` as JSON (or the reason the collector would reject it), taking a seq. */
  #build(state: State, item: Item, user: string | undefined): [number, string | null, string] {
    const internal = item.a.startsWith(INTERNAL_PREFIX) && item.k === "track";
    let s = state.session;
    if (!s || item.ts - s.last > this.#cfg.sessionTimeoutMs) {
      s = state.session = { id: uuid4(), index: (s?.index ?? 0) + 1, last: item.ts };
    } else s.last = Math.max(s.last, item.ts);
    const m: Record<string, unknown> = { type: item.k, messageId: uuid7(item.ts, crypto.getRandomValues(new Uint8Array(UUID7_RANDOM_BYTES))), anonymousId: state.anon };
    if (item.k === "identify") state.user = user ?? item.a;
    if (item.k === "alias") {
      m.previousId = state.user ?? state.anon;
      state.user = user ?? item.a;
    }
    if (state.user !== null && !internal) m.userId = state.user;
    if (item.k === "track") m.event = item.a;
    if ((item.k === "page" || item.k === "screen") && item.a) m.name = item.a;
    if (item.k === "group") m.groupId = item.a;
    m.timestamp = formatTimestamp(item.ts);
    const seq = state.next++;
    m.context = {
      ...this.#cfg.context,
      tally: {
        install_id: state.install, seq, session_id: s.id, session_index: s.index, schema: SCHEMA_VERSION,
        // Members left undefined are left out of the JSON.
        priority: item.lane === 0 ? "critical" : undefined, dedup_key: item.dedup, event_version: item.v,
      },
    };
    let json = JSON.stringify(m);
    let bag = 0;
    if (item.p !== undefined && item.p !== "{}") {
      const named = item.k === "track" || item.k === "page" || item.k === "screen";
      const text = this.#cfg.privacy.filter(named ? item.a : undefined, item.p);
      bag = utf8Len(text);
      json = `${json.slice(0, -1)},"${named ? "properties" : "traits"}":${text}}`;
    }
    return [seq, validate(m, json, bag), json];
  }

  async #key(meta: IDBObjectStore): Promise<[number, CryptoKey] | undefined> {
    const stored = (await req(meta.get("key"))) as { id: number; key: CryptoKey } | undefined;
    if (stored) this.#keys.set(stored.id, stored.key);
    return stored && [stored.id, stored.key];
  }

  /**
   * Stores `items` in order, with reports of unreported drops when
   * `reports`, and a health beacon's properties `beacon`; resolves each
   * item. Rejects, storing nothing, when IndexedDB refuses the write.
   */
  async commit(items: Item[], opts: CommitOptions = {}): Promise<void> {
    const privacy = this.#cfg.privacy;
    const users = await Promise.all(
      items.map((i) => (i.k === "identify" || i.k === "alias" ? privacy.userId(i.a) : undefined)),
    );
    const results = await this.#locked(async () => {
      const [state, stored] = await this.#tx("readonly", async (meta) => [
        (await req(meta.get("state"))) as State,
        await this.#key(meta),
      ] as const);
      const built: [number, Lane, string][] = [];
      const results: [Item, Durable][] = [];
      const add = (item: Item, user?: string): Durable => {
        if (state.consent === "denied") {
          count(state.dropped, "consent_denied");
          return { dropped: "consent_denied" };
        }
        const [seq, invalid, json] = this.#build(state, item, user);
        if (invalid) {
          dropSeq(state, `invalid:${invalid}`, seq);
          return { dropped: `invalid:${invalid}` };
        }
        built.push([seq, item.lane, json]);
        return { seq };
      };
      items.forEach((item, i) => {
        if (item.k === "reset") {
          state.anon = uuid4();
          state.user = null;
          state.session = { id: uuid4(), index: (state.session?.index ?? 0) + 1, last: item.ts };
          results.push([item, { seq: 0 }]);
        } else results.push([item, add(item, users[i])]);
      });
      const now = Date.now();
      const internal = (event: string, props: string, lane: Lane) =>
        add({ k: "track", a: event, p: props, ts: now, lane, cost: 0 });
      if (opts.reports && state.consent !== "denied") {
        for (const reason of Object.keys(state.drops).sort()) {
          const flying = state.inflight.filter((f) => f.reason === reason).flatMap((f) => f.ranges);
          const todo = subtract(state.drops[reason] ?? [], flying);
          for (let j = 0; j < todo.length; j += MAX_RANGES_PER_REPORT) {
            const ranges = todo.slice(j, j + MAX_RANGES_PER_REPORT);
            const d = internal(DROPPED_EVENT, JSON.stringify({ reason, ranges }), 0);
            if ("seq" in d) state.inflight.push({ seq: d.seq, reason, ranges });
          }
        }
      }
      if (opts.beacon !== undefined) internal("tally.health", opts.beacon, 1);
      if (items.length === 0 && built.length === 0 && !opts.lost && !opts.durable) return results;
      let key = stored;
      if (!key && built.length > 0) {
        const fresh = await crypto.subtle.generateKey({ name: AES, length: 256 }, false, ["encrypt", "decrypt"]);
        key = [crypto.getRandomValues(new Uint32Array(1))[0] as number, fresh];
      }
      const records = await Promise.all(
        built.map(async ([seq, l, json]): Promise<StoredRecord> => {
          const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
          const [k, cryptoKey] = key as [number, CryptoKey];
          const ct = await crypto.subtle.encrypt({ name: AES, iv, additionalData: ad(seq, l, now) }, cryptoKey, enc.encode(json));
          return { seq, l, at: now, k, iv, ct, n: ct.byteLength + IV_BYTES };
        }),
      );
      await this.#tx(
        "readwrite",
        async (meta, events) => {
          if (key && key !== stored) meta.put({ id: key[0], key: key[1] }, "key");
          for (const rec of records) {
            events.put(rec);
            state.pending++;
            state.bytes += rec.n;
          }
          for (const [reason, n] of Object.entries(opts.lost ?? {})) count(state.dropped, reason, n);
          await this.#enforce(state, events, now);
          meta.put(state, "state");
        },
        opts.durable ? "strict" : "default",
      );
      if (key) this.#keys.set(key[0], key[1]);
      return results;
    });
    for (const [item, d] of results) item.done?.(d);
  }

  /** Removes a stored record for `reason` (a bound's drop, or a settled record when reason is undefined). */
  #remove(state: State, rec: StoredRecord, events: IDBObjectStore, reason?: string): void {
    events.delete(rec.seq);
    state.pending--;
    state.bytes -= rec.n;
    if (reason !== undefined) {
      dropSeq(state, reason, rec.seq);
      lostReport(state, rec.seq);
    }
  }

  /**
   * The bounds, oldest first: records past the age bound (`expired`), then
   * normal records while over the events or bytes bound (`log_full`),
   * critical ones only when no normal one is left.
   */
  async #enforce(state: State, events: IDBObjectStore, now: number): Promise<void> {
    const lanes = events.index("lane");
    const cutoff = now - this.#cfg.maxAgeMs;
    const drop = (l: Lane, reason: string, go: (rec: StoredRecord) => boolean) =>
      walk(lanes, laneRange(l), (c) => {
        const rec = c.value as StoredRecord;
        if (!go(rec)) return false;
        this.#remove(state, rec, events, reason);
        return true;
      });
    for (const l of [0, 1] as const) await drop(l, "expired", (rec) => rec.at < cutoff);
    const over = () => state.pending > this.#cfg.maxEvents || state.bytes > this.#cfg.maxBytes;
    for (const l of [1, 0] as const) await drop(l, "log_full", over);
  }

  /** Up to `max` pending records of at most `budget` bytes (at least one), critical lane first, each in seq order. */
  async pending(max: number, budget: number): Promise<Pending[]> {
    const [recs, stored] = await this.#tx("readonly", async (meta, events) => {
      const out: StoredRecord[] = [];
      let bytes = 0;
      await walk(events.index("lane"), null, (c) => {
        const rec = c.value as StoredRecord;
        if (out.length >= max || (out.length > 0 && bytes + rec.n > budget)) return false;
        out.push(rec);
        bytes += rec.n;
        return true;
      });
      return [out, await this.#key(meta)] as const;
    });
    const opened = await Promise.all(
      recs.map(async (rec) => {
        const key = this.#keys.get(rec.k) ?? (stored && stored[0] === rec.k ? stored[1] : undefined);
        try {
          if (!key) throw new Error("no key");
          const plain = await crypto.subtle.decrypt({ name: AES, iv: rec.iv, additionalData: ad(rec.seq, rec.l, rec.at) }, key, rec.ct);
          return { seq: rec.seq, lane: rec.l, json: dec.decode(plain) };
        } catch {
          return rec;
        }
      }),
    );
    const corrupt = opened.filter((o): o is StoredRecord => "ct" in o);
    if (corrupt.length > 0) {
      await this.settle(corrupt.map((c) => [c.seq, ["dropped", "corrupt"]]));
      return this.pending(max, budget);
    }
    return opened as Pending[];
  }

  /**
   * Applies the collector's answers (and the uploader's decisions): the
   * records leave the log, counted by disposition. A report answered for
   * settles its ranges for good; a report dropped here is made again.
   */
  settle(acks: [number, Disposition][], forget?: string[]): Promise<void> {
    return this.#locked(() =>
      this.#tx("readwrite", async (meta, events) => {
        const state = (await req(meta.get("state"))) as State;
        const recs = await Promise.all(acks.map(([seq]) => req(events.get(seq)) as Promise<StoredRecord | undefined>));
        acks.forEach(([seq, [what, reason]], i) => {
          const rec = recs[i];
          if (!rec) return;
          this.#remove(state, rec, events);
          const report = state.inflight.find((f) => f.seq === seq);
          if (what === "dropped") {
            dropSeq(state, reason as string, seq);
            if (reason === "corrupt") state.corrupt++;
            lostReport(state, seq);
            return;
          }
          if (what === "accepted") state.accepted++;
          else if (what === "duplicate") state.duplicate++;
          else count(state.rejected, reason as string);
          if (what === "quarantined") dropSeq(state, `quarantined_${reason}`, seq, true);
          if (report) {
            lostReport(state, seq);
            state.drops[report.reason] = subtract(state.drops[report.reason] ?? [], report.ranges);
            if (state.drops[report.reason]?.length === 0) delete state.drops[report.reason];
          }
        });
        if (forget?.includes(state.user ?? "")) {
          state.user = null;
          state.anon = uuid4();
        }
        meta.put(state, "state");
      }),
    );
  }

  /**
   * Sets consent. Denied crypto-shreds the log: the key and every record
   * go in one transaction, and their seqs are recorded as dropped
   * (`consent_denied`), so if consent returns the collector sees them
   * explained, not missing.
   */
  setConsent(consent: Consent): Promise<void> {
    return this.#locked(() =>
      this.#tx("readwrite", async (meta, events) => {
        const state = (await req(meta.get("state"))) as State;
        state.consent = consent;
        if (consent === "denied") {
          for (const seq of (await req(events.getAllKeys())) as number[]) dropSeq(state, "consent_denied", seq);
          events.clear();
          meta.delete("key");
          state.pending = state.bytes = 0;
          state.inflight = [];
          this.#keys.clear();
        }
        meta.put(state, "state");
      }, "strict"),
    );
  }

  /** Drops every pending record of these (deleted) users as `deleted_user`, and forgets them if current. */
  async purgeUsers(users: string[]): Promise<void> {
    const all = await this.pending(Infinity, Infinity);
    const doomed = all.filter((p) => {
      const user = (JSON.parse(p.json) as { userId?: unknown }).userId;
      return typeof user === "string" && users.includes(user);
    });
    await this.settle(doomed.map((p) => [p.seq, ["dropped", "deleted_user"]]), users);
  }
}
