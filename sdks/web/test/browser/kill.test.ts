// The browser killed with SIGKILL (every process of it) in the middle of a
// burst, then started again on the same profile: every event flush()
// confirmed arrives exactly once, the others either arrive or never took a
// seq (lost in flight), nothing arrives twice, and the install has no gap.
import { expect, it } from "vitest";
import { Chromium, Collector, Pages, until } from "./harness";
import { drained, openTracker } from "./page";

it("SIGKILL mid-burst, relaunch on the same profile: confirmed events once, nothing doubled, no gap", async () => {
  const [collector, pages] = await Promise.all([Collector.start(), Pages.start()]);
  let browser = await Chromium.launch();
  try {
    const page = await browser.context.newPage();
    let confirmed = 0;
    let tracked = 0;
    await page.exposeFunction("progress", (t: number, c: number) => {
      tracked = Math.max(tracked, t);
      confirmed = Math.max(confirmed, c);
    });
    await openTracker(page, pages, collector, { name: "kill" });
    // An endless burst: 50 calls, a flush, a report of what flush confirmed.
    void page.evaluate(async () => {
      const progress = (window as unknown as { progress: (t: number, c: number) => Promise<void> }).progress;
      for (let i = 0; ; ) {
        for (let k = 0; k < 50; k++, i++) window.t.track("Burst", { i });
        await progress(i, 0);
        await window.t.flush();
        await progress(i, i);
      }
    }).catch(() => undefined);
    await until("1,000 confirmed events", async () => (confirmed >= 1_000 ? true : undefined));
    await browser.kill9();
    const killedAt = { tracked, confirmed };

    browser = await Chromium.launch(browser.profile);
    const again = await browser.context.newPage();
    await openTracker(again, pages, collector, { name: "kill" });
    const h = await drained(again);
    const stored = (await collector.exported()).filter((e) => e.event === "Burst");
    const seen = new Map<number, number>();
    for (const e of stored) seen.set(e.properties.i, (seen.get(e.properties.i) ?? 0) + 1);
    // Nothing doubled.
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
    // Stored in call order, so what arrived is a prefix of what was tracked:
    // every confirmed event, and perhaps some after it.
    const arrived = seen.size;
    expect([...seen.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: arrived }, (_, i) => i));
    expect(arrived).toBeGreaterThanOrEqual(killedAt.confirmed);
    const install = await collector.install(h.install_id as string);
    expect([install.max_seq, install.missing]).toEqual([arrived, []]);
    console.log(
      JSON.stringify({
        confirmed_by_flush: killedAt.confirmed,
        tracked_reported_before_kill: killedAt.tracked,
        arrived,
        lost_in_flight_at_least: Math.max(0, killedAt.tracked - arrived),
      }),
    );
  } finally {
    await browser.close();
    await Promise.all([collector.stop(), pages.close()]);
  }
});
