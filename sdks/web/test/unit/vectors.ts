// Reads the shared test vectors at the repository root (vectors/), which
// the Rust SDK's and the proto's tests read too.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../../../vectors/", import.meta.url));

export function vector<T = any>(name: string): T {
  return JSON.parse(readFileSync(root + name, "utf8")) as T;
}

/** Expands {"$repeat": [c, n]} and {"$nest": n}, as tally-proto's tests/vectors.rs does. */
export function expand(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(expand);
  if (value && typeof value === "object") {
    const o = value as Record<string, unknown>;
    const keys = Object.keys(o);
    if (keys.length === 1 && keys[0] === "$repeat") {
      const [unit, n] = o.$repeat as [string, number];
      return unit.repeat(n);
    }
    if (keys.length === 1 && keys[0] === "$nest") {
      let nested: unknown = 0;
      for (let i = 0; i < (o.$nest as number); i++) nested = [nested];
      return nested;
    }
    return Object.fromEntries(keys.map((k) => [k, expand(o[k])]));
  }
  return value;
}
