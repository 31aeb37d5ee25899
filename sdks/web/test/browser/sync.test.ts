// The SDK in Chromium against the real `tally serve`: every call type
// counted exactly, and 500 events tracked while the browser is offline
// arriving once each, in order, without a gap, when it is back online.
import { expect, it } from "vitest";
import { until } from "./harness";
import { world } from "./world";
import { drained, health, loadPage, openTracker } from "./page";

const w = world();

it("every call type reaches the collector once, with its seq, gzip and Content-Digest", async () => {
  const page = await w.browser.context.newPage();
  await openTracker(page, w.pages, w.collector, { name: "calls" });
  const seqs = await page.evaluate(async () => {
    const t = window.t;
    const results = [
      t.page("Home", { path: "/" }),
      t.track("Song Played", { genre: "jazz", email: "a@b.c" }),
      // The anonymous device becomes user-1: what an alias is for.
      t.alias("user-1"),
      t.identify("user-1", { plan: "pro" }),
      t.screen("Player"),
      t.group("acme", { seats: 3 }),
      // Merging an identified user into another is refused by the
      // collector (alias_of_identified_user): counted, its seq explained.
      t.alias("user-2"),
      t.track("Order Completed", { total: 42.5 }, { priority: "critical", dedupKey: "ord-1" }),
    ];
    await t.flush();
    return Promise.all(results.map(async (r) => (r.ok ? await r.durable : r.reason)));
  });
  expect(seqs).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((seq) => ({ seq })));
  const requests: string[] = [];
  page.on("request", (r) => {
    if (r.method() === "POST") requests.push(JSON.stringify(r.headers()));
  });
  expect(await page.evaluate(() => window.t.sync())).toBe(true);
  const h = await health(page);
  expect([h.pending, h.accepted, h.tracked]).toEqual([0, 7, 8]);
  expect(h.rejected).toEqual({ alias_of_identified_user: 1 });
  expect(h.clock_offset_ms).not.toBeNull();
  expect(requests.some((r) => r.includes('"content-encoding":"gzip"') && r.includes('"content-digest":"sha-256=:'))).toBe(true);
  expect(await w.collector.count("Song Played")).toBe(1);
  const install = await w.collector.install(h.install_id as string);
  expect([install.max_seq, install.missing]).toEqual([8, []]);
  const events = await w.collector.installEvents(h.install_id as string);
  // Critical first, then the rest in seq order.
  expect(events.map((e) => [e.seq, e.type])).toEqual([
    [1, "page"], [2, "track"], [3, "alias"], [4, "identify"], [5, "screen"], [6, "group"], [8, "track"],
  ]);
  const stored = (await w.collector.exported()).filter((e) => e.context?.tally?.install_id === h.install_id);
  const played = stored.find((e) => e.event === "Song Played");
  expect(played.properties).toEqual({ genre: "jazz", email: "[redacted]" });
  expect(played.context.library.name).toBe("tally-web");
  const order = stored.find((e) => e.event === "Order Completed");
  expect(order.userId).toBe("user-2");
  expect(order.context.tally).toMatchObject({ priority: "critical", dedup_key: "ord-1", seq: 8 });
  await page.close();
});

it("500 events tracked offline arrive exactly once, in order, when the browser is back online", async () => {
  const page = await w.browser.context.newPage();
  const posts: string[] = [];
  page.on("request", (r) => {
    if (r.method() === "POST" && r.url().startsWith(w.collector.base)) posts.push(r.url());
  });
  // The page is loaded (as a PWA's, from its cache), then the network goes.
  await loadPage(page, w.pages);
  await w.browser.context.setOffline(true);
  await openTracker(page, w.pages, w.collector, { name: "offline" }, true);
  const accepted = await page.evaluate(async () => {
    let ok = 0;
    for (let i = 0; i < 500; i++) if (window.t.track("Offline Event", { i }).ok) ok++;
    await window.t.flush();
    return ok;
  });
  expect(accepted).toBe(500);
  // Offline: the uploader does not even try.
  await new Promise((r) => setTimeout(r, 1_500));
  let h = await health(page);
  expect([h.pending, h.accepted, h.consecutive_failures]).toEqual([500, 0, 0]);
  expect(posts).toEqual([]);
  expect(await w.collector.count("Offline Event")).toBe(0);

  await w.browser.context.setOffline(false);
  h = await drained(page);
  expect([h.accepted, h.duplicate, h.rejected, h.dropped]).toEqual([500, 0, {}, {}]);
  expect(await w.collector.count("Offline Event")).toBe(500);
  const install = await w.collector.install(h.install_id as string);
  expect([install.max_seq, install.missing, install.dropped]).toEqual([500, [], 0]);
  const events = await w.collector.installEvents(h.install_id as string);
  expect(events.map((e) => e.seq)).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
  const stored = (await w.collector.exported()).filter((e) => e.event === "Offline Event");
  const bySeq = stored.sort((a, b) => a.context.tally.seq - b.context.tally.seq).map((e) => e.properties.i);
  expect(bySeq).toEqual(Array.from({ length: 500 }, (_, i) => i));
  await until("no request in flight", async () => ((await health(page)).pending === 0 ? true : undefined));
  await page.close();
});
