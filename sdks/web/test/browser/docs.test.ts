// The page examples of docs/web.md, as written, in Chromium against `tally
// serve`: the ES module page and the <script> tag page, with the builds
// beside them and the endpoint pointed at the test's collector.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { pkgDir, repoDir, until, WRITE_KEY } from "./harness";
import { world } from "./world";

const w = world();

/** The ```html blocks of docs/web.md, in order. */
function examples(): string[] {
  const doc = readFileSync(join(repoDir, "docs/web.md"), "utf8");
  return [...doc.matchAll(/```html\n([\s\S]*?)```/g)].map((m) => m[1] as string);
}

const counted = (event: string, n: number) =>
  until(`${n} × ${event}`, async () => ((await w.collector.count(event)) === n ? true : undefined));

it("the page examples of docs/web.md track to the collector", async () => {
  const [module, script] = examples();
  expect(module).toContain('import { Tracker } from "./tally.mjs"');
  expect(script).toContain('<script src="tally.iife.js"></script>');
  // The docs' collector and write key become the test's.
  const point = (html: string) =>
    html.replaceAll("http://127.0.0.1:8080", w.collector.base).replaceAll('"dev-write-key"', JSON.stringify(WRITE_KEY));
  w.pages.extra.set("/example/index.html", point(module as string));
  w.pages.extra.set("/example/script.html", point(script as string));
  for (const file of ["tally.mjs", "tally.iife.js"]) {
    w.pages.extra.set(`/example/${file}`, readFileSync(join(pkgDir, "dist", file), "utf8"));
  }
  const errors: string[] = [];
  const page = await w.browser.context.newPage();
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${w.pages.base}/example/index.html`);
  // The page listens for clicks once its tracker is open, right after it
  // tracks "Home": a click before that is not the page's to count.
  await counted("Home", 1);
  for (let i = 0; i < 3; i++) await page.click("#play");
  await counted("Song Played", 3);
  await until("the health report on the page", async () =>
    (await page.textContent("#health"))?.includes('"pending": 0') ? true : undefined,
  );
  await page.goto(`${w.pages.base}/example/script.html`);
  await counted("Signed Up", 1);
  expect(errors).toEqual([]);
  await page.close();
});
