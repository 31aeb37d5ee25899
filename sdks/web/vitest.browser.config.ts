import { defineConfig } from "vitest/config";

// Browser tests: real Chromium (Debian's, driven by playwright-core) against
// the real `tally serve`. One file at a time: each starts its own browser
// and collector, and the CI machine has two cores.
export default defineConfig({
  test: {
    include: ["test/browser/**/*.test.ts"],
    environment: "node",
    fileParallelism: false,
    testTimeout: 240_000,
    hookTimeout: 60_000,
  },
});
