// The device's own troubles: a clock an hour behind (corrected by the
// collector within the measured transit), and the storage quota exhausted
// (CDP Storage.overrideQuotaForOrigin): refusals and drops counted with
// their reasons, the page working throughout, and what was stored
// delivered exactly once when room returns.
import { expect, it } from "vitest";
import { world } from "./world";
import { drained, health, loadPage, openTracker } from "./page";

const HOUR = 3_600_000;

const w = world();

it("a device clock an hour behind is corrected by the collector within the measured transit", async () => {
  const page = await w.browser.context.newPage();
  // Every Date the page makes is an hour behind.
  await page.addInitScript((offset) => {
    const Real = Date;
    class Skewed extends Real {
      constructor(...args: unknown[]) {
        if (args.length === 0) super(Real.now() + offset);
        else super(...(args as [number]));
      }
      static override now() {
        return Real.now() + offset;
      }
    }
    (globalThis as { Date: DateConstructor }).Date = Skewed as DateConstructor;
  }, -HOUR);
  await openTracker(page, w.pages, w.collector, { name: "clock", autoUpload: false });
  const before = Date.now();
  const deviceNow = await page.evaluate(async () => {
    window.t.track("Skewed Clock");
    return Date.now();
  });
  expect(await page.evaluate(() => window.t.sync())).toBe(true);
  const after = Date.now();
  expect(Math.abs(deviceNow - (before - HOUR))).toBeLessThan(after - before + 1_000);
  const [stored] = (await w.collector.exported()).filter((e) => e.event === "Skewed Clock");
  const corrected = Date.parse(stored.timestamp);
  const device = Date.parse(stored.originalTimestamp);
  // The device's own stamp is an hour off; the corrected time lies between
  // the call and the answer: off by the batch's transit at most.
  expect(corrected - device).toBeGreaterThan(HOUR - 1_000);
  expect(corrected).toBeGreaterThanOrEqual(before);
  expect(corrected).toBeLessThanOrEqual(after);
  const h = await health(page);
  expect(Math.abs((h.clock_offset_ms as number) + HOUR)).toBeLessThanOrEqual((h.clock_offset_rtt_ms as number) + 1_000);
  console.log(JSON.stringify({ corrected_error_ms: corrected - before, measured_window_ms: after - before, clock_offset_ms: h.clock_offset_ms }));
  await page.close();
});

it("the storage quota exhausted: refusals and drops counted with reasons, the page keeps working", async () => {
  const page = await w.browser.context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // An origin no other test used: Chromium reads an origin's quota when it
  // first opens its storage, so the override is set before that.
  const origin = w.pages.base.replace("127.0.0.1", "localhost");
  await loadPage(page, w.pages, origin);
  const cdp = await w.browser.context.newCDPSession(page);
  await cdp.send("Storage.overrideQuotaForOrigin", { origin, quotaSize: 120 * 1024 });
  await openTracker(page, w.pages, w.collector, { name: "quota", autoUpload: false }, true);
  const rounds = await page.evaluate(async () => {
    const out = { accepted: 0, refused: {} as Record<string, number>, stored: 0, dropped: {} as Record<string, number>, flushErrors: 0 };
    const durables: Promise<unknown>[] = [];
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 25; i++) {
        const r = window.t.track("Quota Event", { round, i, pad: "x".repeat(400) });
        if (r.ok) {
          out.accepted++;
          durables.push(r.durable);
        } else out.refused[r.reason] = (out.refused[r.reason] ?? 0) + 1;
      }
      await window.t.flush().catch(() => out.flushErrors++);
      await new Promise((r) => setTimeout(r, 150));
    }
    for (const d of (await Promise.all(durables)) as ({ seq: number } | { dropped: string })[]) {
      if ("seq" in d) out.stored++;
      else out.dropped[d.dropped] = (out.dropped[d.dropped] ?? 0) + 1;
    }
    // The page still works.
    document.body.textContent = "still responsive";
    return out;
  });
  const h = await health(page);
  expect(errors).toEqual([]);
  expect(await page.textContent("body")).toBe("still responsive");
  expect(rounds.stored).toBeGreaterThan(0);
  const refused = rounds.refused.storage_full ?? 0;
  const dropped = rounds.dropped.storage_full ?? 0;
  expect(refused).toBeGreaterThan(0);
  expect(dropped).toBeGreaterThan(0);
  expect(rounds.flushErrors).toBeGreaterThan(0);
  // Every call is accounted for: stored, dropped or refused, each with its reason.
  expect(rounds.accepted + refused).toBe(1_000);
  expect(rounds.stored + dropped).toBe(rounds.accepted);
  expect(h.storage).toBe("QuotaExceededError");
  expect(h.refused).toEqual(rounds.refused);
  expect(h.dropped).toEqual(rounds.dropped);
  expect(h.pending).toBe(rounds.stored);
  expect(h.persistence_errors).toBeGreaterThan(0);

  // Room again: what was stored is delivered once, and the drops took no seq.
  await cdp.send("Storage.overrideQuotaForOrigin", { origin });
  await new Promise((r) => setTimeout(r, 2_100));
  expect(await page.evaluate(() => window.t.track("After Quota").ok)).toBe(true);
  expect(await page.evaluate(() => window.t.sync())).toBe(true);
  const after = await drained(page);
  expect(after.storage).toBe("ok");
  expect(after.dropped).toEqual(rounds.dropped);
  expect(await w.collector.count("Quota Event")).toBe(rounds.stored);
  const install = await w.collector.install(after.install_id as string);
  expect([install.max_seq, install.missing]).toEqual([rounds.stored + 1, []]);
  console.log(JSON.stringify(rounds));
  await page.close();
});
