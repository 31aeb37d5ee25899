// The pure parts against the shared vectors (vectors/ at the repository
// root), which the Rust SDK and the proto read too: both sides must agree.
import { describe, expect, it } from "vitest";
import { MIN_BACKOFF_MS, MAX_RETRY_AFTER_MS } from "../../src/limits";
import { Backoff, Budget, ceilingMs, classify, envelope, retryAfterMs } from "../../src/policy";
import { Privacy, type KeyScope } from "../../src/privacy";
import { addRange, base64, jsonDepth, subtract, utf8Len, uuid7, type Range } from "../../src/util";
import { validate } from "../../src/validate";
import { expand, vector } from "./vectors";

describe("vectors/messages.json", () => {
  const { cases } = vector<{ cases: { name: string; expect: string; message: unknown }[] }>("messages.json");

  it.each(cases.map((c) => [c.name, c] as const))("%s", (_, c) => {
    const message = expand(c.message);
    expect(validate(message, JSON.stringify(message)) ?? "ok").toBe(c.expect);
  });

  it("has a case for every reason the SDK can meet", () => {
    const reasons = new Set(cases.map((c) => c.expect));
    for (const r of ["ok", "malformed_message", "missing_type", "unknown_type", "missing_message_id",
      "message_id_too_long", "missing_identity", "id_too_long", "missing_event_name", "event_name_too_long",
      "missing_group_id", "missing_previous_id", "properties_not_object", "properties_too_large",
      "message_too_large", "nesting_too_deep", "bad_timestamp", "seq_zero", "bad_install_id", "unsupported_schema"]) {
      expect(reasons).toContain(r);
    }
  });
});

describe("vectors/privacy.json", () => {
  const v = vector<any>("privacy.json");
  const privacy = new Privacy(v.config.scopes as Record<string, KeyScope>, v.config.sensitive_keys);

  it.each((v.filter as any[]).map((c) => [c.name, c] as [string, any]))("%s", (_: string, c: any) => {
    const input = JSON.stringify(c.input);
    expect(JSON.parse(privacy.filter(c.event ?? undefined, input))).toEqual(c.output);
  });

  it("returns text needing no change as is", () => {
    const json = '{"screen":"home","n":1}';
    expect(privacy.filter("View", json)).toBe(json);
  });

  it("pseudonymises user ids with HMAC-SHA256", async () => {
    for (const c of v.pseudonymise) {
      expect(await new Privacy({}, [], c.key).userId(c.user_id)).toBe(c.output);
    }
    expect(await privacy.userId("u-1")).toBe("u-1");
  });
});

describe("vectors/backoff.json and answers.json", () => {
  const v = vector("backoff.json");

  it("ceilings double from 1 s to 5 min", () => {
    expect(v.min_ms).toBe(MIN_BACKOFF_MS);
    expect(v.max_retry_after_ms).toBe(MAX_RETRY_AFTER_MS);
    for (const [n, ceiling] of v.ceilings) expect(ceilingMs(n)).toBe(ceiling);
  });

  it("draws within [min, ceiling] and resets", () => {
    let draw = 0;
    const draws = [0, 0.5, 0.999999];
    const b = new Backoff(() => draws[draw++ % 3] as number);
    for (let n = 1; n <= 30; n++) {
      const d = b.fail();
      expect(d).toBeGreaterThanOrEqual(MIN_BACKOFF_MS);
      expect(d).toBeLessThanOrEqual(ceilingMs(n));
    }
    expect(b.failures).toBe(30);
    expect(b.failWith(7_000)).toBe(7_000);
    expect(b.failWith(Number.MAX_SAFE_INTEGER)).toBe(MAX_RETRY_AFTER_MS);
  });

  it("reads Retry-After in both forms", () => {
    for (const c of v.retry_after) expect(retryAfterMs(c.header, c.now_ms)).toBe(c.ms);
  });

  it("classifies every answer", () => {
    for (const c of vector("answers.json").cases) {
      const o = classify(c.status, c.retry_after, c.body, c.sent, 0);
      expect(o.kind).toBe(c.outcome);
      if (o.kind === "retry_after") expect(o.ms).toBe(c.ms);
    }
  });

  it("sizes batches: doubles on fast sends, halves on slow ones and 413, within bounds", () => {
    const b = new Budget();
    expect(b.bytes).toBe(256 * 1024);
    b.shrink();
    b.afterSuccess(10);
    expect(b.bytes).toBe(256 * 1024);
    for (let i = 0; i < 20; i++) b.afterSuccess(10);
    expect(b.bytes).toBe(500 * 1024 - 64);
    b.afterSuccess(5_000);
    expect(b.bytes).toBe(500 * 1024 - 64);
    b.afterSuccess(10_000);
    expect(b.bytes).toBe(Math.floor((500 * 1024 - 64) / 2));
    for (let i = 0; i < 20; i++) b.shrink();
    expect(b.bytes).toBe(4 * 1024);
  });
});

describe("ids, envelope, digest", () => {
  it("vectors/uuid7.json", () => {
    for (const c of vector("uuid7.json").cases) {
      const random = Uint8Array.from((c.random_hex as string).match(/../g) ?? [], (h) => parseInt(h, 16));
      expect(uuid7(c.unix_ms, random)).toBe(c.uuid);
    }
  });

  it("vectors/envelope.json", () => {
    for (const c of vector("envelope.json").cases) expect(envelope(c.payloads, c.sent_at)).toBe(c.body);
  });

  it("vectors/digest.json", async () => {
    for (const c of vector("digest.json").cases) {
      const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(c.body));
      expect(`sha-256=:${base64(new Uint8Array(digest))}:`).toBe(c.content_digest);
    }
  });
});

describe("helpers", () => {
  it("utf8Len matches TextEncoder", () => {
    for (const s of ["", "abc", "É", "日本", "🎵x", "a\u0000b", "€€"]) {
      expect(utf8Len(s)).toBe(new TextEncoder().encode(s).length);
    }
  });

  it("jsonDepth ignores brackets inside strings", () => {
    expect(jsonDepth('{"a":[1,{"b":2}]}', 32)).toBe(3);
    const deep = "[".repeat(40) + "]".repeat(40);
    expect(jsonDepth(deep, 32)).toBe(40);
    expect(jsonDepth(`{"s":"${"[".repeat(40)}"}`, 32)).toBe(1);
  });

  it("ranges merge and subtract", () => {
    const r: Range[] = [];
    addRange(r, 5, 5);
    addRange(r, 7, 9);
    addRange(r, 6, 6);
    addRange(r, 1, 2);
    expect(r).toEqual([[1, 2], [5, 9]]);
    expect(subtract(r, [[6, 7], [1, 1]])).toEqual([[2, 2], [5, 5], [8, 9]]);
    expect(subtract([[1, 3]], [[1, 3]])).toEqual([]);
  });
});
