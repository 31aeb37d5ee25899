// Prints the size of the builds, minified and gzipped, beside Segment's
// analytics-next core measured the same way: one JSON line per file, then
// a summary. Fails when the core passes its budget.
import { sizes } from "./sizes.mjs";

/** The core's budget, min+gzip: 10 KB, a third of analytics-next's core (30 KB). */
const BUDGET_BYTES = 10_000;

const all = sizes();
for (const [file, size] of Object.entries(all)) console.log(JSON.stringify({ file, ...size }));
const tally = all["tally.min.mjs"].gzip_bytes;
const segment = all["analytics-next umd/index.js"].gzip_bytes;
console.log(
  `tally core ${tally} bytes min+gzip (budget ${BUDGET_BYTES}); ` +
    `analytics-next core ${segment} bytes; analytics-next / tally = ${(segment / tally).toFixed(2)}`,
);
if (tally > BUDGET_BYTES) {
  console.error(`the core is ${tally} bytes min+gzip, over its budget of ${BUDGET_BYTES}`);
  process.exit(1);
}
