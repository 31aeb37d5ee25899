// Bundle sizes, minified and gzipped at level 9 (as a CDN serves them): the
// builds beside Segment's analytics-next core, read from its published
// bundle. Run `npm run build` first.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const pkg = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const segment = join(dirname(require.resolve("@segment/analytics-next/package.json")), "dist", "umd", "index.js");

/** `{file: {min_bytes, gzip_bytes}}` of the Tally builds and analytics-next's core. */
export function sizes() {
  const files = {
    "tally.min.mjs": join(pkg, "dist/tally.min.mjs"),
    "tally.iife.js": join(pkg, "dist/tally.iife.js"),
    "plan.min.mjs (development builds only)": join(pkg, "dist/plan.min.mjs"),
    "analytics-next umd/index.js": segment,
  };
  return Object.fromEntries(
    Object.entries(files).map(([name, path]) => {
      const bytes = readFileSync(path);
      return [name, { min_bytes: bytes.length, gzip_bytes: gzipSync(bytes, { level: 9 }).length }];
    }),
  );
}
