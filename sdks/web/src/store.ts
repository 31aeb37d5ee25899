// IndexedDB: the database of one install (per origin and browser profile),
// its two object stores, and promise helpers around requests, cursors and
// transactions.
//
// | store    | key                 | holds                                                     |
// |----------|---------------------|-----------------------------------------------------------|
// | `meta`   | `"state"`           | the install's [`State`]: identity, session, seq, counters |
// | `meta`   | `"sync"`            | the uploading tab's [`SyncStats`]                         |
// | `meta`   | `"key"`             | the sealing key: a non-extractable AES-GCM `CryptoKey`    |
// | `events` | `seq` (keyPath)     | one sealed message per record; index `lane` on [l, seq]   |

import type { Range } from "./util";

/** Consent to analytics. */
export type Consent = "pending" | "granted" | "denied";

/** A `tally.dropped` report stored and not yet answered for by the collector. */
export interface Report {
  seq: number;
  reason: string;
  ranges: Range[];
}

/** Everything the install keeps besides its events, in one record. */
export interface State {
  install: string;
  anon: string;
  user: string | null;
  consent: Consent;
  /** The next sequence number: taken in the transaction that stores its record. */
  next: number;
  session: { id: string; index: number; last: number } | null;
  /** Records stored and not yet answered for, and their bytes. */
  pending: number;
  bytes: number;
  /** Seq ranges dropped on the device, by reason, not yet answered for in a report. */
  drops: Record<string, Range[]>;
  /** Reports whose record is stored and unanswered: their ranges are not reported again. */
  inflight: Report[];
  /** Counts for the life of the install. */
  dropped: Record<string, number>;
  rejected: Record<string, number>;
  accepted: number;
  duplicate: number;
  corrupt: number;
}

/** The uploading tab's figures, shared with every tab's health(). */
export interface SyncStats {
  attempts: number;
  successes: number;
  failures: number;
  backoff: number;
  last: number | null;
  latencies: number[];
  offsets: [number, number][];
  authFailed: boolean;
}

/** A stored, sealed message. */
export interface StoredRecord {
  seq: number;
  /** Lane: 0 critical (kept longest, sent first), 1 normal. */
  l: 0 | 1;
  /** When it was stored (Unix ms, device clock): the age bound. */
  at: number;
  /** Id of the key that sealed it. */
  k: number;
  iv: Uint8Array<ArrayBuffer>;
  ct: ArrayBuffer;
  /** Size as stored: the bytes bound. */
  n: number;
}

export const META = "meta";
export const EVENTS = "events";

/** Resolves with a request's result. */
export const req = <T>(r: IDBRequest<T>): Promise<T> =>
  new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });

/** Resolves when `tx` commits; rejects with its error when it aborts. */
export const done = (tx: IDBTransaction): Promise<void> =>
  new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = tx.onabort = () => reject(tx.error ?? new DOMException("transaction aborted", "AbortError"));
  });

/** Walks a cursor, `visit` returning whether to go on. */
export const walk = (
  source: IDBObjectStore | IDBIndex,
  range: IDBKeyRange | null,
  visit: (c: IDBCursorWithValue) => boolean,
): Promise<void> =>
  new Promise((resolve, reject) => {
    const r = source.openCursor(range);
    r.onerror = () => reject(r.error);
    r.onsuccess = () => {
      const c = r.result;
      if (c && visit(c)) c.continue();
      else resolve();
    };
  });

/** The key range of one lane, in seq order. */
export const laneRange = (lane: 0 | 1): IDBKeyRange => IDBKeyRange.bound([lane, 0], [lane, Infinity]);

/** Opens (or creates) the install's database. */
export function openDb(name: string): Promise<IDBDatabase> {
  const r = indexedDB.open(name, 1);
  r.onupgradeneeded = () => {
    r.result.createObjectStore(META);
    r.result.createObjectStore(EVENTS, { keyPath: "seq" }).createIndex("lane", ["l", "seq"]);
  };
  return req(r);
}
