// The tracker on fake-indexeddb: seqs, durability across reopen, refusals,
// bounds and drop reports, consent, identity, sessions, and several
// trackers on one database (tabs) sharing one install and one uploader.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Tracker, type Options, type TrackResult } from "../../src";
import { openDb, EVENTS, META, req, type StoredRecord } from "../../src/store";
import { TestCollector, type Msg } from "./collector";
import { vector } from "./vectors";

let collector: TestCollector;
let n = 0;
const open: Tracker[] = [];

beforeEach(async () => {
  collector = await TestCollector.start();
});
afterEach(async () => {
  for (const t of open.splice(0)) await t.close();
  await collector.close();
});

const dbName = () => `unit-${process.pid}-${++n}`;

async function tracker(opts: Partial<Options> = {}): Promise<Tracker> {
  const t = await Tracker.open({
    writeKey: "wk",
    endpoint: collector.url,
    consent: "granted",
    autoUpload: false,
    name: opts.name ?? dbName(),
    ...opts,
  });
  open.push(t);
  return t;
}

async function seqOf(r: TrackResult): Promise<number> {
  if (!r.ok) throw new Error(`refused: ${r.reason}`);
  const d = await r.durable;
  if (!("seq" in d)) throw new Error(`dropped: ${d.dropped}`);
  return d.seq;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("the log", () => {
  it("numbers accepted calls 1, 2, 3... and keeps them across a reopen", async () => {
    const name = dbName();
    const t = await tracker({ name });
    const results = Array.from({ length: 10 }, (_, i) => t.track("Song Played", { i }));
    await t.flush();
    expect(await Promise.all(results.map(seqOf))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const h = await t.health();
    expect(h.pending).toBe(10);
    expect(h.tracked).toBe(10);
    await t.close();
    open.splice(open.indexOf(t), 1);

    const again = await tracker({ name });
    expect((await again.health()).pending).toBe(10);
    expect(await seqOf(again.track("Song Played"))).toBe(11);
    expect((await again.health()).install_id).toBe(h.install_id);
  });

  it("refuses at the call what the collector would reject, without taking a seq", async () => {
    const t = await tracker();
    const reason = (r: TrackResult) => (r.ok ? "ok" : r.reason);
    const many = Object.fromEntries(Array.from({ length: 256 }, (_, i) => [`k${i}`, i]));
    let deep: unknown = 0;
    for (let i = 0; i < 32; i++) deep = [deep];
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(reason(t.track(""))).toBe("missing_event_name");
    expect(reason(t.track("e".repeat(256)))).toBe("event_name_too_long");
    expect(reason(t.track("x", [1, 2] as never))).toBe("properties_not_object");
    expect(reason(t.track("x", many))).toBe("too_many_properties");
    expect(reason(t.track("x", { deep }))).toBe("nesting_too_deep");
    expect(reason(t.track("x", { k: "x".repeat(25_000) }))).toBe("properties_too_large");
    expect(reason(t.track("x", cyclic))).toBe("malformed_message");
    expect(reason(t.track("x", {}, { dedupKey: "d".repeat(256) }))).toBe("id_too_long");
    expect(reason(t.identify(""))).toBe("missing_identity");
    expect(reason(t.group(""))).toBe("missing_group_id");
    expect(reason(t.alias("u".repeat(256)))).toBe("id_too_long");
    expect(await seqOf(t.track("ok"))).toBe(1);
    const h = await t.health();
    expect(h.refused).toEqual({
      missing_event_name: 1, event_name_too_long: 1, properties_not_object: 1, too_many_properties: 1,
      nesting_too_deep: 1, properties_too_large: 1, malformed_message: 1, id_too_long: 2,
      missing_identity: 1, missing_group_id: 1,
    });
    expect(h.tracked).toBe(1);
  });

  it("refuses past the queue budget with queue_full, memory bounded", async () => {
    const t = await tracker({ queueBudgetBytes: 10_000 });
    const results = Array.from({ length: 200 }, () => t.track("Burst", { pad: "x".repeat(100) }));
    const accepted = results.filter((r) => r.ok).length;
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(200);
    await t.flush();
    const h = await t.health();
    expect(h.refused.queue_full).toBe(200 - accepted);
    expect(h.pending).toBe(accepted);
  });

  it("stores messages sealed: no property value in IndexedDB, a key that cannot be exported", async () => {
    const name = dbName();
    const t = await tracker({ name });
    t.track("Secret", { note: "plain-text-marker-4711" });
    await t.flush();
    const db = await openDb(name);
    const records = (await req(db.transaction(EVENTS).objectStore(EVENTS).getAll())) as StoredRecord[];
    expect(records).toHaveLength(1);
    const bytes = Buffer.from(records[0]!.ct).toString("latin1");
    expect(bytes).not.toContain("plain-text-marker");
    expect(bytes).not.toContain("Secret");
    const stored = (await req(db.transaction(META).objectStore(META).get("key"))) as { key: CryptoKey };
    expect(stored.key.extractable).toBe(false);
    await expect(crypto.subtle.exportKey("raw", stored.key)).rejects.toThrow();
    db.close();
  });

  it("drops past the age bound as expired, reported as a range", async () => {
    const t = await tracker({ maxAgeMs: 50 });
    for (let i = 0; i < 3; i++) t.track("Old");
    await t.flush();
    await sleep(120);
    expect(await seqOf(t.track("New"))).toBe(4);
    expect((await t.health()).dropped).toEqual({ expired: 3 });
    expect(await t.sync()).toBe(true);
    const report = collector.stored.find((m) => m.event === "tally.dropped");
    expect(report?.properties).toEqual({ reason: "expired", ranges: [[1, 3]] });
    expect(collector.seqs().sort((a, b) => a - b)).toEqual([4, 5]);
  });
});

describe("drop reports", () => {
  it("past 400 ranges a report is split; the critical lane is kept and sent first", async () => {
    const t = await tracker({ maxEvents: 502 });
    // Odd seqs critical, even ones normal: the bound drops the 498 oldest
    // normal ones, 498 separate ranges, reported in two events (400 + 98),
    // whose storing drops the last 2 normal ones, reported next.
    for (let i = 1; i <= 1000; i++) t.track(`E${i}`, undefined, { priority: i % 2 ? "critical" : "normal" });
    await t.flush();
    expect((await t.health()).dropped).toEqual({ log_full: 498 });
    expect(await t.sync()).toBe(true);
    expect((await t.health()).dropped).toEqual({ log_full: 500 });
    const reports = collector.stored.filter((m) => m.event === "tally.dropped");
    expect(reports.map((r) => [r.context.tally.seq, r.properties.reason, r.properties.ranges.length])).toEqual([
      [1001, "log_full", 400],
      [1002, "log_full", 98],
      [1003, "log_full", 2],
    ]);
    const ranges = reports.flatMap((r) => r.properties.ranges as [number, number][]);
    expect(ranges).toEqual(Array.from({ length: 500 }, (_, i) => [2 * (i + 1), 2 * (i + 1)]));
    expect(collector.seqs()).toEqual([...Array.from({ length: 500 }, (_, i) => 2 * i + 1), 1001, 1002, 1003]);
    expect(new Set(collector.stored.map((m) => m.messageId)).size).toBe(503);
  });
});

describe("vectors/drop_reports.json", () => {
  const { scenarios } = vector<{ scenarios: any[] }>("drop_reports.json");
  it.each(scenarios.map((s: any) => [s.name, s] as [string, any]))("%s", async (_: string, s: any) => {
    const t = await tracker({ consent: s.initial_consent, ...(s.max_events ? { maxEvents: s.max_events } : {}) });
    for (const step of s.steps) {
      if (step.identify) t.identify(step.identify);
      else if (step.track) {
        for (let i = 0; i < step.count; i++) t.track(step.track, undefined, { priority: step.priority ?? "normal" });
      } else if (step.flush) await t.flush();
      else if (step.consent) await t.setConsent(step.consent);
      else throw new Error(`unknown step ${JSON.stringify(step)}`);
    }
    expect(await t.sync()).toBe(true);
    const got = collector.stored.map((m: Msg) => {
      const out: Record<string, unknown> = {
        type: m.type, event: m.event, seq: m.context.tally.seq,
        priority: m.context.tally.priority ?? null, userId: m.userId ?? null,
      };
      return out;
    });
    const want = s.sent.map((w: any) => ({ type: w.type, event: w.event, seq: w.seq, priority: w.priority, userId: w.userId }));
    expect(got).toEqual(want);
    s.sent.forEach((w: any, i: number) => {
      if (w.properties) expect(collector.stored[i]?.properties).toEqual(w.properties);
    });
    expect((await t.health()).pending).toBe(0);
  });
});

describe("health", () => {
  it("vectors/health_beacon.json: a beacon carries exactly the documented members", async () => {
    const v = vector<{ always: string[]; when_measured: string[] }>("health_beacon.json");
    const t = await tracker({ healthBeaconMs: 1 });
    t.track("Song Played");
    await sleep(5);
    // The first sync sends the beacon made before any send succeeded (no
    // latency or offset yet); the second, one with them.
    expect(await t.sync()).toBe(true);
    await sleep(5);
    expect(await t.sync()).toBe(true);
    const beacons = collector.stored.filter((m) => m.event === "tally.health");
    expect(beacons.length).toBeGreaterThanOrEqual(2);
    expect(Object.keys(beacons[0]!.properties).sort()).toEqual([...v.always].sort());
    expect(Object.keys(beacons.at(-1)!.properties).sort()).toEqual([...v.always, ...v.when_measured].sort());
    expect(beacons.every((b) => b.userId === undefined)).toBe(true);
  });

  it("without IndexedDB the tracker opens and refuses every call, counted", async () => {
    const idb = globalThis.indexedDB;
    delete (globalThis as { indexedDB?: IDBFactory }).indexedDB;
    try {
      const t = await Tracker.open({ writeKey: "wk", endpoint: collector.url, consent: "granted" });
      expect(t.track("x")).toEqual({ ok: false, reason: "storage_unavailable" });
      await expect(t.flush()).rejects.toMatchObject({ code: "storage_unavailable" });
      expect(await t.sync()).toBe(false);
      const h = await t.health();
      expect([h.storage, h.refused, h.install_id]).toEqual(["unavailable", { storage_unavailable: 1 }, null]);
      await t.close();
    } finally {
      globalThis.indexedDB = idb;
    }
  });
});

describe("identity, consent and sessions", () => {
  it("reset() forgets the user, draws a new anonymous id and session, in order with the calls", async () => {
    const t = await tracker();
    t.identify("user-7", { plan: "pro" });
    t.track("Before");
    t.reset();
    t.track("After");
    expect(await t.sync()).toBe(true);
    const [identify, before, after] = collector.stored;
    expect(identify?.userId).toBe("user-7");
    expect(identify?.traits).toEqual({ plan: "pro" });
    expect(before?.userId).toBe("user-7");
    expect(before?.anonymousId).toBe(identify?.anonymousId);
    expect(after?.userId).toBeUndefined();
    expect(after?.anonymousId).not.toBe(before?.anonymousId);
    expect(after?.context.tally.session_index).toBe(before!.context.tally.session_index + 1);
    expect(after?.context.tally.install_id).toBe(before?.context.tally.install_id);
  });

  it("alias names the previous id; pseudonymised ids never leave the device in clear", async () => {
    const t = await tracker({ pseudonymiseKey: "key" });
    t.alias("The quick brown fox jumps over the lazy dog");
    t.track("Played", { email: "a@b.c", genre: "jazz" });
    expect(await t.sync()).toBe(true);
    const [alias, played] = collector.stored;
    const hashed = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
    expect(alias?.userId).toBe(hashed);
    expect(alias?.previousId).toBe(alias?.anonymousId);
    expect(played?.userId).toBe(hashed);
    expect(played?.properties).toEqual({ email: "[redacted]", genre: "jazz" });
  });

  it("stores nothing before consent when so configured, and sends nothing while pending", async () => {
    const strict = await tracker({ consent: "pending", storeNothingWhilePending: true });
    expect(strict.track("x")).toEqual({ ok: false, reason: "consent_pending" });
    const t = await tracker({ consent: "pending" });
    expect(await seqOf(t.track("Kept"))).toBe(1);
    expect(await t.sync()).toBe(false);
    expect(collector.requests).toHaveLength(0);
    await t.setConsent("granted");
    expect(await t.sync()).toBe(true);
    expect(collector.seqs()).toEqual([1]);
    await t.setConsent("denied");
    expect(t.track("No")).toEqual({ ok: false, reason: "consent_denied" });
  });

  it("a session continues within the timeout across tabs and ends after it", async () => {
    const name = dbName();
    const a = await tracker({ name, sessionTimeoutMs: 300 });
    const b = await tracker({ name, sessionTimeoutMs: 300 });
    a.track("A1");
    await a.flush();
    b.track("B1");
    await b.flush();
    await sleep(450);
    a.track("A2");
    expect(await a.sync()).toBe(true);
    const [a1, b1, a2] = collector.stored;
    expect(b1?.context.tally.session_id).toBe(a1?.context.tally.session_id);
    expect(a2?.context.tally.session_index).toBe(a1!.context.tally.session_index + 1);
    expect(a2?.context.tally.session_id).not.toBe(a1?.context.tally.session_id);
  });
});

describe("tabs", () => {
  it("several trackers on one install: no seq collision, one uploader, hand-over on close", async () => {
    const name = dbName();
    const tabs = [await tracker({ name }), await tracker({ name }), await tracker({ name })];
    const results: TrackResult[] = [];
    for (let i = 0; i < 100; i++) for (const t of tabs) results.push(t.track("Tab Event", { i }));
    await Promise.all(tabs.map((t) => t.flush()));
    const seqs = await Promise.all(results.map(seqOf));
    expect([...seqs].sort((x, y) => x - y)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    const uploaders = (await Promise.all(tabs.map((t) => t.health()))).filter((h) => h.uploader);
    expect(uploaders).toHaveLength(1);
    // A tab that does not upload asks the one that does.
    const follower = tabs.find((_, i) => i !== 0);
    expect(await follower!.sync()).toBe(true);
    expect(collector.stored).toHaveLength(300);
    // The uploading tab closes: another takes over.
    await tabs[0]!.close();
    open.splice(open.indexOf(tabs[0]!), 1);
    await sleep(50);
    const rest = await Promise.all(tabs.slice(1).map((t) => t.health()));
    expect(rest.filter((h) => h.uploader)).toHaveLength(1);
    tabs[1]!.track("After Hand-over");
    expect(await tabs[2]!.sync()).toBe(true);
    expect(collector.seqs().sort((x, y) => x - y)).toEqual(Array.from({ length: 301 }, (_, i) => i + 1));
  });
});
