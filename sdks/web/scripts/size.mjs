// Prints the size of the builds, minified and gzipped, beside Segment's
// analytics-next core measured the same way: one JSON line per file, then
// a summary. Fails when the core passes its budget.
import { sizes } from "./sizes.mjs";

/** The core's budget, min+gzip: a third of analytics-next's core (about 30 KB). */
const BUDGET_BYTES = 10 * 1024;

const all = sizes();
for (const [file, size] of Object.entries(all)) console.log(JSON.stringify({ file, ...size }));
const tally = all["tally.min.mjs"].gzip_bytes;
const segment = all["analytics-next umd/index.js"].gzip_bytes;
console.log(
  `tally core ${(tally / 1024).toFixed(1)} KiB min+gzip (budget ${BUDGET_BYTES / 1024} KiB); ` +
    `analytics-next core ${(segment / 1024).toFixed(1)} KiB; analytics-next / tally = ${(segment / tally).toFixed(2)}`,
);
if (tally > BUDGET_BYTES) {
  console.error(`the core is ${tally} bytes min+gzip, over its budget of ${BUDGET_BYTES}`);
  process.exit(1);
}
