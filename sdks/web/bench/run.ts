// The benchmark: bench/bench.html in Chromium against a real `tally serve`,
// Tally's SDK and Segment's analytics-next on the same page in the same
// run, then the bundle sizes. Prints one JSON line and a table. Figures,
// not a test: nothing here passes or fails on speed.
//
//   npm run build && npm run bench
//
// The collector is target/release/tally when built (cargo build --release
// -p tally-cli), else the debug build, or TALLY_BIN; the line says which.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { sizes } from "../scripts/sizes.mjs";
import { Chromium, Collector, Pages, repoDir, WRITE_KEY } from "../test/browser/harness";

const release = join(repoDir, "target/release/tally");
if (!process.env.TALLY_BIN && existsSync(release)) process.env.TALLY_BIN = release;

const [collector, pages, browser] = await Promise.all([Collector.start(), Pages.start(), Chromium.launch()]);
try {
  const page = await browser.context.newPage();
  await page.goto(`${pages.base}/bench/bench.html`);
  await page.waitForFunction(() => document.title === "ready");
  const isolated = await page.evaluate(() => crossOriginIsolated);
  const resolution = await page.evaluate(() => (window as any).timerResolutionUs());
  const tally = await page.evaluate(([e, k]) => (window as any).benchTally(e, k), [collector.base, WRITE_KEY]);
  const segment = await page.evaluate(([e, k]) => (window as any).benchSegment(e, k), [collector.base, WRITE_KEY]);
  const size = sizes();
  const chromium = browser.browser.version();
  const result = {
    chromium,
    collector: process.env.TALLY_BIN ?? "target/debug/tally",
    cross_origin_isolated: isolated,
    timer_resolution_us: resolution,
    calls: 10_000,
    tally,
    analytics_next: segment,
    sizes: size,
  };
  console.log(JSON.stringify(result));
  const t = tally.track.per_call_in_blocks_of_100;
  const s = segment.track.per_call_in_blocks_of_100;
  const ts = tally.track.single;
  const ss = segment.track.single;
  const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB`;
  const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(1)}x` : "n/a");
  const rows = [
    ["", "Tally (@tally/web)", "analytics-next", "analytics-next / Tally"],
    ["track() p50 / p99, per call in blocks of 100 (µs)", `${t.p50_us} / ${t.p99_us}`, `${s.p50_us} / ${s.p99_us}`, `${ratio(s.p50_us, t.p50_us)} / ${ratio(s.p99_us, t.p99_us)}`],
    [`track() p50 / p99, each call timed (µs, timer ${resolution} µs)`, `${ts.p50_us} / ${ts.p99_us}`, `${ss.p50_us} / ${ss.p99_us}`, ""],
    ["track() mean (µs)", `${ts.mean_us}`, `${ss.mean_us}`, ratio(ss.mean_us, ts.mean_us)],
    ["durable throughput: 10,000 calls in one task, then flush()", `${tally.burst_durable_after_ms} ms, ${tally.durable_events_per_s} events/s`, "no durable store (localStorage on pagehide)", ""],
    ["10,000 timed calls (with yields), then delivered", "", `after ${segment.delivered_after_ms} ms`, ""],
    ["refused", `${tally.refused}`, "n/a", ""],
    ["bundle min+gzip", kib(size["tally.min.mjs"].gzip_bytes), kib(size["analytics-next umd/index.js"].gzip_bytes), ratio(size["analytics-next umd/index.js"].gzip_bytes, size["tally.min.mjs"].gzip_bytes)],
  ];
  for (const row of rows) console.log(`| ${row.join(" | ")} |`);
} finally {
  await browser.close();
  await Promise.all([collector.stop(), pages.close()]);
}
