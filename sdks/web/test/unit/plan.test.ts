// The tracking plan at the call (`@tally/web/plan`, development builds):
// the shared vectors (vectors/plan_checks.json, which the Rust SDK's tests
// read too), a refused call taking no seq and storing nothing, the version
// the generated code sends, and plans the checker cannot judge refused.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Tracker, type Options, type PlanRefusal, type TrackResult } from "../../src";
import { planCheck, PlanError, type PlanFile } from "../../src/plan";
// The generated code for the fixture plan, as `tally plan codegen --lang typescript` writes it.
import { trackCartItemAdded, trackOrderCompleted, ORDER_COMPLETED_VERSION } from "../../../../crates/tally-plan/tests/fixtures/codegen/tracking";
import { TestCollector } from "./collector";
import { vector } from "./vectors";

interface Case {
  name: string;
  plan?: string;
  event: string;
  version?: number;
  refuse_unplanned?: boolean;
  properties: Record<string, unknown>;
  expect: "ok" | { code: string; version?: number; rule?: string; path?: string; count?: number };
}
const vectors = vector<{ plans: Record<string, PlanFile>; cases: Case[] }>("plan_checks.json");
const shop = vectors.plans.shop as PlanFile;

/** The refusal as the vectors write it. */
function asVector(r: PlanRefusal | null): Case["expect"] {
  if (!r) return "ok";
  const { reason: code, ...rest } = r;
  const { event: _, ...fields } = rest as Record<string, unknown>;
  return { code, ...fields };
}

describe("the shared vectors", () => {
  const checks = new Map<string, ReturnType<typeof planCheck>>();
  const check = (c: Case) => {
    const key = `${c.plan ?? "shop"}:${c.refuse_unplanned ?? false}`;
    if (!checks.has(key)) checks.set(key, planCheck(vectors.plans[c.plan ?? "shop"] as PlanFile, { refuseUnplanned: c.refuse_unplanned ?? false }));
    return checks.get(key)!;
  };
  for (const c of vectors.cases) {
    it(c.name, () => {
      const options = c.version === undefined ? undefined : { eventVersion: c.version };
      expect(asVector(check(c)("track", c.event, JSON.stringify(c.properties), options))).toEqual(c.expect);
    });
  }

  it("judges track calls only: a screen or a page names no planned event", () => {
    const strict = planCheck(shop, { refuseUnplanned: true });
    expect(strict("screen", "Cart", "{}", undefined)).toBeNull();
    expect(strict("page", "Order Completed", "{}", undefined)).toBeNull();
    expect(strict("track", "Cart", "{}", undefined)?.reason).toBe("unplanned");
  });
});

describe("a tracker with the plan", () => {
  let collector: TestCollector;
  let n = 0;
  const open: Tracker[] = [];
  beforeEach(async () => {
    collector = await TestCollector.start();
  });
  afterEach(async () => {
    for (const t of open.splice(0)) await t.close();
    await collector.close();
  });
  async function tracker(opts: Partial<Options> = {}): Promise<Tracker> {
    const t = await Tracker.open({
      writeKey: "wk",
      endpoint: collector.url,
      consent: "granted",
      autoUpload: false,
      name: `plan-${process.pid}-${++n}`,
      ...opts,
    });
    open.push(t);
    return t;
  }
  const seq = async (r: TrackResult) => (r.ok ? await r.durable : r);

  it("refuses a violating track() with the rule and the path, counted, before it takes a seq", async () => {
    const t = await tracker({ plan: planCheck(shop) });
    const order = { order_id: "0192f5e4-3c1a-7b2e-9a4d-5f6e7d8c9b0a", amount: 42.5, currency: "EUR" };
    const refused = t.track("Order Completed", { ...order, currency: "JPY" }, { eventVersion: 2 });
    expect(refused).toEqual({
      ok: false,
      reason: "plan_violation",
      event: "Order Completed",
      version: 2,
      rule: "enum",
      path: "/currency",
      count: 1,
    });
    // The reason names the rule and the place, never the value.
    expect(JSON.stringify(refused)).not.toContain("JPY");
    expect(t.track("Order Completed", { order_id: "ord_1", amount: 1 }, { eventVersion: 1 }).ok).toBe(true);
    expect(t.track("Order Completed", order, { eventVersion: 7 })).toMatchObject({ ok: false, reason: "unknown_version", version: 7 });
    expect(t.track("Cart Item Added", { product_id: "p", quantity: 0 })).toMatchObject({ ok: false, rule: "minimum", path: "/quantity" });
    // Not judged: an unplanned event (accepted by default), a screen.
    expect(t.track("Search Made", { q: "x" }).ok).toBe(true);
    expect(t.screen("Order Completed", { any: 1 }).ok).toBe(true);
    const last = t.track("Order Completed", order);
    expect(await seq(last)).toEqual({ seq: 4 });
    const h = await t.health();
    expect(h.refused).toEqual({ plan_violation: 2, unknown_version: 1 });
    expect(h.tracked).toBe(4);
    expect(h.pending).toBe(4);
    expect(await t.sync()).toBe(true);
    expect(collector.stored.map((m) => [m.event ?? m.name, m.context.tally.seq, m.context.tally.event_version])).toEqual([
      ["Order Completed", 1, 1],
      ["Search Made", 2, undefined],
      ["Order Completed", 3, undefined],
      ["Order Completed", 4, undefined],
    ]);
  });

  it("refuses unplanned events when asked", async () => {
    const t = await tracker({ plan: planCheck(shop, { refuseUnplanned: true }) });
    expect(t.track("Search Made")).toEqual({ ok: false, reason: "unplanned", event: "Search Made" });
    expect((await t.health()).refused).toEqual({ unplanned: 1 });
  });

  it("sends the version the generated code names, with or without a plan", async () => {
    for (const plan of [undefined, planCheck(shop)]) {
      const t = await tracker(plan ? { plan } : {});
      const id = "0192f5e4-3c1a-7b2e-9a4d-5f6e7d8c9b0a";
      const done = trackOrderCompleted(t, { order_id: id, amount: 42.5, currency: "EUR", item_count: 3 }, { dedupKey: id });
      const added = trackCartItemAdded(t, { product_id: "p1", quantity: 2, tags: ["sale"] });
      expect([done.ok, added.ok]).toEqual([true, true]);
      expect(await t.sync()).toBe(true);
    }
    expect(collector.stored.map((m) => [m.event, m.context.tally.event_version, m.context.tally.priority, m.context.tally.dedup_key])).toEqual([
      ["Order Completed", ORDER_COMPLETED_VERSION, "critical", "0192f5e4-3c1a-7b2e-9a4d-5f6e7d8c9b0a"],
      ["Cart Item Added", 1, undefined, undefined],
      ["Order Completed", 2, "critical", "0192f5e4-3c1a-7b2e-9a4d-5f6e7d8c9b0a"],
      ["Cart Item Added", 1, undefined, undefined],
    ]);
  });

  it("drops a message whose version is not a u32, as the collector would reject it", async () => {
    const t = await tracker();
    const r = t.track("Order Completed", {}, { eventVersion: 1.5 });
    expect(await seq(r)).toEqual({ dropped: "invalid:malformed_message" });
  });
});

describe("plans the checker cannot judge", () => {
  const plan = (properties: unknown): PlanFile => ({ events: [{ name: "A B", versions: [{ version: 1, properties }] }] });
  it("are refused when loaded, naming the keyword and where", () => {
    expect(() => planCheck(plan({ type: "object", properties: { a: { allOf: [{ type: "string" }] } } }))).toThrow(
      new PlanError("A B", 1, "/properties/a/allOf", 'keyword "allOf" is not checked by the web SDK'),
    );
    expect(() => planCheck(plan({ type: "object", properties: { a: { type: "string", format: "iri" } } }))).toThrow(
      'A B v1 /properties/a/format: format "iri" is not checked by the web SDK',
    );
    expect(() => planCheck(plan({ type: "object", properties: { a: { $ref: "#/$defs/missing" } } }))).toThrow(
      "A B v1 /properties/a/$ref: #/$defs/missing points nowhere",
    );
  });
});
