// The uploader's answer table, against a collector on 127.0.0.1 scripted to
// fail: backoff within bounds, Retry-After, 413 split, 400 bisection,
// poison isolation, rejected events quarantined while their neighbours are
// delivered, deleted users purged, a wrong key stopping without loss.
// sync() skips a running backoff, so each call is one attempt; the waits
// chosen are read from health().
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Tracker, type Options } from "../../src";
import { ceilingMs } from "../../src/policy";
import { TestCollector, type Msg } from "./collector";

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

async function tracker(opts: Partial<Options> = {}): Promise<Tracker> {
  const t = await Tracker.open({
    writeKey: "wk", endpoint: collector.url, consent: "granted", autoUpload: false,
    name: `upl-${process.pid}-${++n}`, ...opts,
  });
  open.push(t);
  return t;
}

const events = (ms: Msg[]) => ms.map((m) => m.event as string);

describe("answers", () => {
  it("5xx: full-jitter backoff within bounds, nothing lost, order kept", async () => {
    const t = await tracker();
    for (let i = 1; i <= 5; i++) t.track(`E${i}`);
    for (let i = 1; i <= 6; i++) collector.script.push(() => ({ status: 500 }));
    for (let failures = 1; failures <= 6; failures++) {
      expect(await t.sync()).toBe(false);
      const h = await t.health();
      expect(h.consecutive_failures).toBe(failures);
      expect(h.backoff_ms).toBeGreaterThanOrEqual(50);
      expect(h.backoff_ms).toBeLessThanOrEqual(ceilingMs(failures));
      expect(h.pending).toBe(5);
    }
    expect(await t.sync()).toBe(true);
    expect(events(collector.stored)).toEqual(["E1", "E2", "E3", "E4", "E5"]);
    const h = await t.health();
    expect([h.consecutive_failures, h.backoff_ms, h.pending, h.accepted]).toEqual([0, 0, 0, 5]);
    // After 4 failures on the same first message the batch is narrowed
    // (poison isolation): 6 failed sends, then 1 message, then the other 4.
    expect(collector.requests.map((r) => [r.messages.length, r.status])).toEqual([
      [5, 500], [5, 500], [5, 500], [5, 500], [2, 500], [1, 500], [1, 200], [4, 200],
    ]);
    expect(h.sync_attempts).toBe(8);
    expect(h.sync_success_rate).toBeCloseTo(2 / 8);
  });

  it("429 and 503: wait as Retry-After says, capped at an hour", async () => {
    const t = await tracker();
    t.track("E");
    collector.script.push(() => ({ status: 429, headers: { "Retry-After": "7" } }));
    expect(await t.sync()).toBe(false);
    expect((await t.health()).backoff_ms).toBe(7_000);
    collector.script.push(() => ({ status: 503, headers: { "Retry-After": "999999" } }));
    expect(await t.sync()).toBe(false);
    expect((await t.health()).backoff_ms).toBe(3_600_000);
    expect(await t.sync()).toBe(true);
    expect(collector.stored).toHaveLength(1);
  });

  it("413: the batch is split in order until it fits", async () => {
    const t = await tracker();
    for (let i = 1; i <= 8; i++) t.track(`E${i}`);
    // Too large while a batch holds more than 2 messages.
    for (let i = 0; i < 10; i++) collector.script.push((ms) => (ms.length > 2 ? { status: 413 } : undefined));
    expect(await t.sync()).toBe(true);
    expect(events(collector.stored)).toEqual(["E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8"]);
    expect(collector.requests.map((r) => [r.messages.length, r.status])).toEqual([
      [8, 413], [4, 413], [2, 200], [2, 200], [4, 413], [2, 200], [2, 200],
    ]);
  });

  it("a rejected event is counted and never resent; its neighbours are delivered", async () => {
    const t = await tracker();
    t.track("Good 1");
    t.track("Bad");
    t.track("Good 2");
    collector.reject = (m) => (m.event === "Bad" ? "properties_too_large" : undefined);
    expect(await t.sync()).toBe(true);
    expect(events(collector.stored)).toEqual(["Good 1", "Good 2"]);
    expect(await t.sync()).toBe(true);
    expect(collector.requests).toHaveLength(1);
    const h = await t.health();
    expect(h.rejected).toEqual({ properties_too_large: 1 });
    expect([h.accepted, h.pending]).toEqual([2, 0]);
  });

  it("a poison message failing with 5xx is isolated and quarantined; the rest goes through", async () => {
    const t = await tracker();
    t.track("Poison");
    for (let i = 1; i <= 3; i++) t.track(`E${i}`);
    for (let i = 0; i < 40; i++) collector.script.push((ms) => (events(ms).includes("Poison") ? { status: 500 } : undefined));
    let attempts = 0;
    while (!(await t.sync())) attempts++;
    expect(attempts).toBe(11);
    // Narrowed after 4 failures, alone after 5, quarantined after 12; then
    // the report of its seq (critical: first) and the rest in one batch.
    expect(collector.requests.map((r) => r.messages.length)).toEqual([4, 4, 4, 4, 2, 1, 1, 1, 1, 1, 1, 1, 4]);
    expect(events(collector.stored)).toEqual(["tally.dropped", "E1", "E2", "E3"]);
    expect(collector.stored[0]?.properties).toEqual({ reason: "quarantined_server_error", ranges: [[1, 1]] });
    expect((await t.health()).rejected).toEqual({ server_error: 1 });
  });

  it("400: re-encoded once, then bisected to the record at fault", async () => {
    const t = await tracker();
    for (let i = 1; i <= 4; i++) t.track(`E${i}`);
    for (let i = 0; i < 20; i++) collector.script.push((ms) => (events(ms).includes("E3") ? { status: 400 } : undefined));
    expect(await t.sync()).toBe(true);
    expect(events(collector.stored)).toEqual(["E1", "E2", "E4", "tally.dropped"]);
    expect(collector.stored[3]?.properties).toEqual({ reason: "quarantined_undecodable", ranges: [[3, 3]] });
  });

  it("a deleted user: what is still pending for them is dropped as deleted_user, and they are forgotten", async () => {
    const t = await tracker();
    t.identify("gone");
    for (let i = 0; i < 3; i++) t.track("Mine");
    await t.flush();
    collector.deleted.add("gone");
    // 413 splits the batch: the answer to its first half names the user
    // deleted while the second half is still pending.
    collector.script.push((ms) => (ms.length > 2 ? { status: 413 } : undefined));
    expect(await t.sync()).toBe(true);
    let h = await t.health();
    expect(h.rejected).toEqual({ deleted_user: 2 });
    expect(h.dropped).toEqual({ deleted_user: 2 });
    expect(h.pending).toBe(0);
    t.track("Next");
    expect(await t.sync()).toBe(true);
    const stored = collector.stored.filter((m) => m.event !== "Mine");
    expect(stored.map((m) => [m.event, m.userId])).toEqual([
      ["tally.dropped", undefined],
      ["Next", undefined],
    ]);
    expect(stored[0]?.properties).toEqual({ reason: "deleted_user", ranges: [[3, 4]] });
    h = await t.health();
    expect(h.pending).toBe(0);
  });

  it("401: stops sending, keeps every event, sync() tries again", async () => {
    const t = await tracker({ writeKey: "wrong" });
    t.track("Kept");
    expect(await t.sync()).toBe(false);
    const h = await t.health();
    expect([h.auth_failed, h.pending]).toEqual([true, 1]);
    expect(collector.requests).toHaveLength(0);
  });
});
