// Builds dist/: the ES module (readable and minified), the IIFE for a
// <script> tag (global `Tally`), the development-build plan checker
// (`@tally/web/plan`, its own entry point: the core never imports it), and
// the type declarations.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";

const common = { entryPoints: ["src/index.ts"], bundle: true, target: "es2022", logLevel: "warning" };
await build({ ...common, format: "esm", outfile: "dist/tally.mjs", sourcemap: true });
await build({ ...common, format: "esm", outfile: "dist/tally.min.mjs", minify: true, sourcemap: true });
await build({ ...common, format: "iife", globalName: "Tally", outfile: "dist/tally.iife.js", minify: true, sourcemap: true });
await build({ ...common, entryPoints: ["src/plan.ts"], format: "esm", outfile: "dist/plan.mjs", sourcemap: true });
await build({ ...common, entryPoints: ["src/plan.ts"], format: "esm", outfile: "dist/plan.min.mjs", minify: true, sourcemap: true });
execFileSync("npx", ["tsc", "-p", "tsconfig.json"], { stdio: "inherit" });
