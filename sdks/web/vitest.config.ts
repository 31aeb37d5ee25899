import { defineConfig } from "vitest/config";

// Unit tests: Node, with fake-indexeddb standing in for the browser's
// IndexedDB (the browser tests run the real one in Chromium).
export default defineConfig({
  test: {
    include: ["test/unit/**/*.test.ts"],
    environment: "node",
    setupFiles: ["fake-indexeddb/auto"],
    testTimeout: 20_000,
  },
});
