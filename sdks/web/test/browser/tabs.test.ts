// Two and four tabs of one origin tracking at once: one install, no seq
// collision, exactly one tab uploading, every event counted once; when
// the uploading tab closes another takes over.
import type { Page } from "playwright-core";
import { expect, it } from "vitest";
import { until } from "./harness";
import { world } from "./world";
import { drained, health, openTracker } from "./page";

const PER_TAB = 250;

const w = world();

it.each([2, 4])("%i tabs: one install, gapless seqs, one uploader, exact counts", async (n) => {
  const name = `tabs-${n}`;
  const event = `Tab Event ${n}`;
  const tabs: Page[] = [];
  const posts = new Map<Page, number>();
  for (let k = 0; k < n; k++) {
    const page = await w.browser.context.newPage();
    page.on("request", (r) => {
      if (r.method() === "POST" && r.url() === `${w.collector.base}/v1/batch`) posts.set(page, (posts.get(page) ?? 0) + 1);
    });
    await openTracker(page, w.pages, w.collector, { name });
    tabs.push(page);
  }
  await Promise.all(
    tabs.map((page, k) =>
      page.evaluate(
        async ([k, count, event]) => {
          for (let i = 0; i < count; i++) {
            if (!window.t.track(event, { tab: k, i }).ok) throw new Error("refused");
            // Yield now and then, so the tabs' commits interleave.
            if (i % 10 === 9) await new Promise((r) => setTimeout(r, 0));
          }
          await window.t.flush();
        },
        [k, PER_TAB, event] as const,
      ),
    ),
  );
  const h = await drained(tabs[0] as Page);
  const healths = await Promise.all(tabs.map(health));
  expect(new Set(healths.map((x) => x.install_id)).size).toBe(1);
  expect(healths.filter((x) => x.uploader)).toHaveLength(1);
  const uploader = tabs[healths.findIndex((x) => x.uploader)] as Page;
  expect([...posts.keys()]).toEqual([uploader]);
  expect(healths.reduce((sum, x) => sum + x.tracked, 0)).toBe(n * PER_TAB);

  expect(await w.collector.count(event)).toBe(n * PER_TAB);
  const install = await w.collector.install(h.install_id as string);
  expect([install.max_seq, install.missing]).toEqual([n * PER_TAB, []]);
  const seqs = (await w.collector.installEvents(h.install_id as string)).map((e) => e.seq);
  expect(seqs).toEqual(Array.from({ length: n * PER_TAB }, (_, i) => i + 1));
  // Each tab's own events kept their order.
  const stored = (await w.collector.exported()).filter((e) => e.event === event);
  for (let k = 0; k < n; k++) {
    const mine = stored.filter((e) => e.properties.tab === k).sort((a, b) => a.context.tally.seq - b.context.tally.seq);
    expect(mine.map((e) => e.properties.i)).toEqual(Array.from({ length: PER_TAB }, (_, i) => i));
  }

  // The uploading tab closes: another takes the lock and sends.
  await uploader.close();
  const rest = tabs.filter((p) => p !== uploader);
  await until("a new uploader", async () => ((await Promise.all(rest.map(health))).some((x) => x.uploader) ? true : undefined));
  await (rest[0] as Page).evaluate(async (event) => {
    window.t.track(event, { after: true });
    await window.t.flush();
  }, event);
  await until("the event after the hand-over", async () => ((await w.collector.count(event)) === n * PER_TAB + 1 ? true : undefined));
  for (const page of rest) await page.close();
});
