// The collector answering 500, 429 with Retry-After and 413 (injected in
// front of the real `tally serve` by routing the page's requests), and a
// batch in which the real collector rejects some events (a deleted user):
// backoff within bounds, the wait the server asked for, the batch split,
// the rejected events counted and never resent, their neighbours delivered.
import { gunzipSync } from "node:zlib";
import type { Page, Route } from "playwright-core";
import { expect, it } from "vitest";
import { ceilingMs } from "../../src/policy";
import { world } from "./world";
import { health, openTracker } from "./page";

const w = world();

/** Messages of a batch request as sent (gzip). */
const messages = (route: Route): { event: string }[] =>
  JSON.parse(gunzipSync(route.request().postDataBuffer() as Buffer).toString()).batch;

/** Answers `status` as the collector would, readable cross-origin. */
const answer = (route: Route, status: number, headers: Record<string, string> = {}) =>
  route.fulfill({
    status,
    contentType: "application/json",
    headers: { "access-control-allow-origin": w.pages.base, "access-control-expose-headers": "Retry-After", ...headers },
    body: '{"code":"injected","message":"injected by the test"}',
  });

async function tracked(name: string, events: string[]): Promise<Page> {
  const page = await w.browser.context.newPage();
  await openTracker(page, w.pages, w.collector, { name, autoUpload: false });
  await page.evaluate(async (events) => {
    for (const e of events) window.t.track(e);
    await window.t.flush();
  }, events);
  return page;
}

const sync = (page: Page) => page.evaluate(() => window.t.sync());
const batchUrl = () => `${w.collector.base}/v1/batch`;

it("500: full-jitter backoff within bounds, then every event once, in order", async () => {
  const events = Array.from({ length: 20 }, (_, i) => `Five Hundred ${i}`);
  const page = await tracked("e500", events);
  let failing = 3;
  await page.route(batchUrl(), (route) => (failing-- > 0 ? answer(route, 500) : route.continue()));
  for (let n = 1; n <= 3; n++) {
    expect(await sync(page)).toBe(false);
    const h = await health(page);
    expect(h.consecutive_failures).toBe(n);
    expect(h.backoff_ms).toBeGreaterThanOrEqual(50);
    expect(h.backoff_ms).toBeLessThanOrEqual(ceilingMs(n));
    expect(h.pending).toBe(20);
  }
  expect(await sync(page)).toBe(true);
  const h = await health(page);
  expect([h.consecutive_failures, h.backoff_ms, h.accepted, h.pending]).toEqual([0, 0, 20, 0]);
  const seqs = (await w.collector.installEvents(h.install_id as string)).map((e) => e.seq);
  expect(seqs).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  for (const e of events) expect(await w.collector.count(e)).toBe(1);
  await page.close();
});

it("429 with Retry-After: waits exactly as asked, nothing lost", async () => {
  const page = await tracked("e429", ["Rate Limited"]);
  let failing = 1;
  await page.route(batchUrl(), (route) => (failing-- > 0 ? answer(route, 429, { "Retry-After": "7" }) : route.continue()));
  expect(await sync(page)).toBe(false);
  const h = await health(page);
  expect([h.backoff_ms, h.consecutive_failures, h.pending]).toEqual([7_000, 1, 1]);
  expect(await sync(page)).toBe(true);
  expect(await w.collector.count("Rate Limited")).toBe(1);
  await page.close();
});

it("413: the batch is split in halves until it fits, order kept", async () => {
  const events = Array.from({ length: 20 }, (_, i) => `Too Large ${i}`);
  const page = await tracked("e413", events);
  const sizes: number[] = [];
  await page.route(batchUrl(), (route) => {
    const n = messages(route).length;
    sizes.push(n);
    return n > 5 ? answer(route, 413) : route.continue();
  });
  expect(await sync(page)).toBe(true);
  expect(sizes).toEqual([20, 10, 5, 5, 10, 5, 5]);
  const h = await health(page);
  const seqs = (await w.collector.installEvents(h.install_id as string)).map((e) => e.seq);
  expect(seqs).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  await page.close();
});

it("events the collector rejects are counted, never resent, and their neighbours delivered", async () => {
  const page = await w.browser.context.newPage();
  await openTracker(page, w.pages, w.collector, { name: "rejected", autoUpload: false });
  await page.evaluate(async () => {
    const t = window.t;
    t.track("Before Sign In");
    t.identify("doomed-user");
    t.track("Signed In Event");
    t.reset();
    t.track("After Sign Out");
    await t.flush();
  });
  // Deleted before the batch arrives: the collector refuses that user's events.
  await w.collector.adminPost("/v1/deletions", { userId: "doomed-user" });
  const sizes: number[] = [];
  await page.route(batchUrl(), (route) => {
    sizes.push(messages(route).length);
    return route.continue();
  });
  expect(await page.evaluate(() => window.t.sync())).toBe(true);
  const h = await health(page);
  expect(h.rejected).toEqual({ deleted_user: 2 });
  expect([h.accepted, h.pending]).toEqual([2, 0]);
  expect(await w.collector.count("Before Sign In")).toBe(1);
  expect(await w.collector.count("After Sign Out")).toBe(1);
  expect(await w.collector.count("Signed In Event")).toBe(0);
  // Quarantined on the device: never sent again.
  expect(await page.evaluate(() => window.t.sync())).toBe(true);
  expect(sizes).toEqual([4]);
  const dead = await w.collector.admin<{ dead_letters: { reason: string }[] }>("/v1/dead-letters?limit=10");
  expect(dead.dead_letters.filter((d) => d.reason === "deleted_user")).toHaveLength(2);
  await page.close();
});
