// Each browser test file's collector, page server and browser.
import { afterAll, beforeAll } from "vitest";
import { Chromium, Collector, Pages } from "./harness";

/** What a test file runs against, started before its tests and stopped after. */
export interface World {
  collector: Collector;
  pages: Pages;
  browser: Chromium;
}

/** A collector, a page server and a browser for the tests of this file. */
export function world(): World {
  const w = {} as World;
  beforeAll(async () => {
    [w.collector, w.pages, w.browser] = await Promise.all([Collector.start(), Pages.start(), Chromium.launch()]);
  });
  afterAll(async () => {
    await w.browser?.close();
    await Promise.all([w.collector?.stop(), w.pages?.close()]);
  });
  return w;
}
