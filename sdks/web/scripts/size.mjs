// Prints the size of the builds, minified and gzipped (level 9, as a CDN
// serves them), beside Segment's analytics-next core measured the same way
// from its published bundle. One JSON line per file, then a summary line.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const require = createRequire(import.meta.url);
const segmentDir = join(dirname(require.resolve("@segment/analytics-next/package.json")), "dist", "umd");
const files = {
  "tally.min.mjs": "dist/tally.min.mjs",
  "tally.iife.js": "dist/tally.iife.js",
  "analytics-next umd/index.js": join(segmentDir, "index.js"),
};
const sizes = {};
for (const [name, path] of Object.entries(files)) {
  const bytes = readFileSync(path);
  sizes[name] = { min: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
  console.log(JSON.stringify({ file: name, min_bytes: sizes[name].min, gzip_bytes: sizes[name].gzip }));
}
const tally = sizes["tally.min.mjs"].gzip;
const segment = sizes["analytics-next umd/index.js"].gzip;
console.log(
  `tally core ${(tally / 1024).toFixed(1)} KiB min+gzip; analytics-next core ${(segment / 1024).toFixed(1)} KiB; ratio ${(segment / tally).toFixed(2)}x`,
);
