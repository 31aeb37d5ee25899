// Segment's analytics-next, unchanged, in Chromium against `tally serve`:
// it reads its settings from the collector (cdnURL), sends there, and every
// call is counted exactly once, also across a reload of the page.
import { expect, it } from "vitest";
import { until, WRITE_KEY } from "./harness";
import { world } from "./world";

const w = world();

it("analytics-next pointed at Tally is counted exactly", async () => {
  const page = await w.browser.context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const settings: number[] = [];
  page.on("response", (r) => {
    if (r.url().includes(`/v1/projects/${WRITE_KEY}/settings`)) settings.push(r.status());
  });
  const url = `${w.pages.base}/segment.html?writeKey=${WRITE_KEY}&collector=${encodeURIComponent(w.collector.base)}`;
  await page.goto(url);
  await page.waitForFunction(() => document.title === "ready");
  expect(settings).toEqual([200]);
  const delivered = await page.evaluate(async () => {
    const analytics = (window as any).analytics;
    const calls: Promise<unknown>[] = [analytics.page("Pricing"), analytics.identify("segment-user", { plan: "pro" })];
    for (let i = 0; i < 50; i++) calls.push(analytics.track("Segment Browser Event", { i }));
    await Promise.all(calls);
    return calls.length;
  });
  expect(delivered).toBe(52);
  await until("50 events counted", async () => ((await w.collector.count("Segment Browser Event")) === 50 ? true : undefined));
  const stored = (await w.collector.exported()).filter((e) => e.event === "Segment Browser Event");
  expect(stored.map((e) => e.properties.i).sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i));
  expect(new Set(stored.map((e) => e.messageId)).size).toBe(50);
  expect(stored.every((e) => e.userId === "segment-user")).toBe(true);
  // The page and the identify too: 52 messages, none rejected, none twice.
  await until("52 messages", async () => ((await w.collector.admin("/v1/stats")).accepted === 52 ? true : undefined));
  const stats = await w.collector.admin("/v1/stats");
  expect([stats.accepted, stats.duplicate, stats.rejected]).toEqual([52, 0, 0]);

  // A reload: nothing analytics-next kept is sent twice.
  await page.reload();
  await page.waitForFunction(() => document.title === "ready");
  await new Promise((r) => setTimeout(r, 1_500));
  expect(await w.collector.count("Segment Browser Event")).toBe(50);
  expect((await w.collector.admin("/v1/stats")).accepted).toBe(52);
  expect(errors).toEqual([]);
  await page.close();
});
