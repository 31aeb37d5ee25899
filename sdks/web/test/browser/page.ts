// Driving the SDK in a test page: open a tracker, call it, read its health.
import type { Page } from "playwright-core";
import type { Health, Options } from "../../src";
import { Collector, Pages, until, WRITE_KEY } from "./harness";

declare global {
  interface Window {
    Tally: typeof import("../../src");
    t: import("../../src").Tracker;
  }
}

/** Loads the test page in `page` (from `base`, another origin of the same server, if given). */
export async function loadPage(page: Page, pages: Pages, base = pages.base): Promise<void> {
  await page.goto(`${base}/tracker.html`);
  await page.waitForFunction(() => document.title === "ready");
}

/** Opens a tracker as `window.t` in the test page (loaded unless `loaded`), sending to `collector`. */
export async function openTracker(
  page: Page,
  pages: Pages,
  collector: Collector,
  opts: Partial<Options> = {},
  loaded = false,
): Promise<void> {
  if (!loaded) await loadPage(page, pages);
  await page.evaluate(async (o) => {
    window.t = await window.Tally.Tracker.open(o as Options);
  }, { writeKey: WRITE_KEY, endpoint: collector.base, consent: "granted", ...opts });
}

export const health = (page: Page): Promise<Health> => page.evaluate(() => window.t.health());

/** Waits until the page's tracker has nothing pending. */
export function drained(page: Page, ms = 120_000): Promise<Health> {
  return until("nothing pending", async () => {
    const h = await health(page);
    return h.pending === 0 ? h : undefined;
  }, ms);
}
