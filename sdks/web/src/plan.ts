// `@tally/web/plan`: the tracking plan judged at the call, for development
// builds. A separate entry point: the core (`@tally/web`) only calls the
// function given as `Options.plan`, so a production build that does not
// import this module carries none of it.
//
//   import { Tracker } from "@tally/web";
//   import { planCheck } from "@tally/web/plan";
//   import plan from "./plan.json";
//   const tracker = await Tracker.open({ writeKey, endpoint, plan: import.meta.env.DEV ? planCheck(plan) : undefined });
//
// What is judged is what the collector judges (crates/tally-plan, and the
// collector's plan module): track calls only, by the version the call names
// in `eventVersion`, or the latest version when it names none. A violation
// is refused with the first failing rule and its JSON pointer (never the
// value), in the order the Rust engine reports them: a node's keywords by
// the engine's priority (type, const, enum, bounds, lengths, required,
// pattern, format, uniqueItems, then the children), an object's members by
// name. vectors/plan_checks.json pins the verdicts both SDKs give.
//
// The plan is the plan file's model as JSON (a `.json` plan, or a YAML one
// converted). The JSON Schema keywords a plan uses are checked here; a
// schema using one this checker does not implement (allOf, if, patternProperties,
// ...), or a format it does not know, makes planCheck throw a PlanError
// rather than pass what the collector would refuse.

import type { CallOptions, Kind, PlanCheck, PlanRefusal } from "./tracker";

export type { PlanCheck, PlanRefusal };

/** A tracking plan as the plan file holds it (docs/tracking-plan.md). */
export interface PlanFile {
  name?: string;
  naming?: unknown;
  events?: {
    name: string;
    description?: string;
    priority?: "normal" | "critical";
    deprecated?: boolean;
    versions: { version: number; description?: string; properties?: unknown }[];
  }[];
}

/** Options of planCheck. */
export interface PlanCheckOptions {
  /** Refuse events the plan does not have (`unplanned`) instead of accepting them as the collector does. */
  refuseUnplanned?: boolean;
}

/** Why a plan cannot be used: the event, the version and where in its schema. */
export class PlanError extends Error {
  constructor(
    readonly event: string,
    readonly version: number,
    /** JSON pointer into the version's properties schema. */
    readonly pointer: string,
    detail: string,
  ) {
    super(`${event} v${version} ${pointer || "/"}: ${detail}`);
    this.name = "PlanError";
  }
}

type Obj = Record<string, unknown>;
type Error1 = [rule: string, path: string];
type Check = (value: unknown, path: string, out: Error1[]) => void;

const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/** JSON Schema's type of a JSON value (an integral number is both `integer` and `number`). */
const typeOf = (v: unknown): string =>
  v === null ? "null" : Array.isArray(v) ? "array" : typeof v === "number" ? "number" : typeof v;

const hasType = (v: unknown, t: string): boolean =>
  t === "integer" ? Number.isInteger(v) : t === "number" ? typeof v === "number" : typeOf(v) === t;

/** JSON equality: numbers by value, objects regardless of member order. */
function equal(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => equal(x, b[i]));
  if (isObj(a) && isObj(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => k in b && equal(a[k], b[k]));
  }
  return false;
}

/** Object member names in the order the Rust engine visits them: by Unicode code point. */
function byName(o: Obj): string[] {
  return Object.keys(o).sort((a, b) => {
    const x = [...a];
    const y = [...b];
    for (let i = 0; i < Math.min(x.length, y.length); i++) {
      const d = (x[i] as string).codePointAt(0)! - (y[i] as string).codePointAt(0)!;
      if (d) return d;
    }
    return x.length - y.length;
  });
}

const child = (path: string, key: string | number) => `${path}/${String(key).replace(/~/g, "~0").replace(/\//g, "~1")}`;

const chars = (s: string) => [...s].length;

// Formats, asserted as the Rust engine asserts them.
const DATE = /^(\d{4})-(\d\d)-(\d\d)$/;
const TIME = /^(\d\d):(\d\d):(\d\d)(\.\d+)?([Zz]|[+-](\d\d):(\d\d))$/;
function isDate(s: string): boolean {
  const m = DATE.exec(s);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const days = [31, y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
  return mo >= 1 && mo <= 12 && d >= 1 && d <= (days[mo - 1] as number);
}
function isTime(s: string): boolean {
  const m = TIME.exec(s);
  if (!m) return false;
  const [h, mi, sec] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (h > 23 || mi > 59 || sec > 60) return false;
  if (m[6] !== undefined && (Number(m[6]) > 23 || Number(m[7]) > 59)) return false;
  if (sec !== 60) return true;
  // A leap second only at 23:59:60 UTC.
  const sign = m[5]?.startsWith("-") ? 1 : -1;
  const utc = (h * 60 + mi + sign * (Number(m[6] ?? 0) * 60 + Number(m[7] ?? 0)) + 1440) % 1440;
  return utc === 23 * 60 + 59;
}
const HOST_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const isHostname = (s: string) => s.length > 0 && s.length <= 253 && s.replace(/\.$/, "").split(".").every((l) => HOST_LABEL.test(l));
const isIpv4 = (s: string) => /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(s);
function isIpv6(s: string): boolean {
  let t = s;
  const v4 = /:(\d+\.\d+\.\d+\.\d+)$/.exec(t);
  if (v4) {
    if (!isIpv4(v4[1] as string)) return false;
    t = `${t.slice(0, v4.index)}:0:0`;
  }
  const halves = t.split("::");
  if (halves.length > 2) return false;
  const groups = halves.map((h) => (h === "" ? [] : h.split(":")));
  if (!groups.flat().every((g) => /^[0-9A-Fa-f]{1,4}$/.test(g))) return false;
  const n = groups.flat().length;
  return halves.length === 2 ? n < 8 : n === 8;
}
const EMAIL_LOCAL = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$|^"([^"\\]|\\.)*"$/;
function isEmail(s: string): boolean {
  const at = s.lastIndexOf("@");
  if (at < 1) return false;
  const [local, domain] = [s.slice(0, at), s.slice(at + 1)];
  if (chars(local) > 64 || !EMAIL_LOCAL.test(local)) return false;
  const literal = /^\[(.*)\]$/.exec(domain);
  if (literal) {
    const inner = literal[1] as string;
    return /^ipv6:/i.test(inner) ? isIpv6(inner.slice(5)) : isIpv4(inner);
  }
  return isHostname(domain);
}
const URI = /^[A-Za-z][A-Za-z0-9+.-]*:[^\s<>"{}|\\^`]*$/;
const URI_REF = /^[^\s<>"{}|\\^`]*$/;
const UUID = /^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$/;
const DURATION = /^P(?!$)(\d+W|(\d+Y)?(\d+M)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?)$/;
function isRegex(s: string): boolean {
  try {
    new RegExp(s, "u");
    return true;
  } catch {
    return false;
  }
}

const FORMATS: Record<string, (s: string) => boolean> = {
  date: isDate,
  "date-time": (s) => {
    const t = s.search(/[Tt]/);
    return t > 0 && isDate(s.slice(0, t)) && isTime(s.slice(t + 1));
  },
  time: isTime,
  duration: (s) => DURATION.test(s),
  email: isEmail,
  hostname: isHostname,
  ipv4: isIpv4,
  ipv6: isIpv6,
  uri: (s) => URI.test(s),
  "uri-reference": (s) => URI_REF.test(s),
  uuid: (s) => UUID.test(s),
  "json-pointer": (s) => /^(\/([^~/]|~[01])*)*$/.test(s),
  regex: isRegex,
};

/** Keywords that check nothing. */
const ANNOTATIONS = new Set([
  "$schema", "$id", "$comment", "$anchor", "$defs", "definitions", "title", "description", "default",
  "examples", "deprecated", "readOnly", "writeOnly", "contentMediaType", "contentEncoding",
]);

/** Compiles one schema node: its checks in the Rust engine's keyword order. */
class Compiler {
  constructor(
    readonly root: unknown,
    readonly where: (pointer: string, detail: string) => PlanError,
  ) {}

  readonly #refs = new Map<string, Check>();

  compile(schema: unknown, at: string): Check {
    if (schema === true) return () => undefined;
    if (schema === false) return (_v, path, out) => void out.push(["false", path]);
    if (!isObj(schema)) throw this.where(at, "a schema must be an object or a boolean");
    const checks: [number, Check][] = [];
    const add = (priority: number, c: Check) => checks.push([priority, c]);
    const num = (k: string) => {
      const n = schema[k];
      if (typeof n !== "number") throw this.where(child(at, k), "must be a number");
      return n;
    };
    for (const k of Object.keys(schema)) {
      const s = schema[k];
      switch (k) {
        case "type": {
          const types = Array.isArray(s) ? s : [s];
          add(1, (v, p, out) => void (types.some((t) => hasType(v, t as string)) || out.push(["type", p])));
          break;
        }
        case "const":
          add(5, (v, p, out) => void (equal(v, s) || out.push(["const", p])));
          break;
        case "enum": {
          if (!Array.isArray(s)) throw this.where(child(at, k), "must be an array");
          add(6, (v, p, out) => void (s.some((e) => equal(v, e)) || out.push(["enum", p])));
          break;
        }
        case "minimum":
        case "maximum":
        case "exclusiveMinimum":
        case "exclusiveMaximum": {
          const n = num(k);
          const ok = { minimum: (v: number) => v >= n, maximum: (v: number) => v <= n, exclusiveMinimum: (v: number) => v > n, exclusiveMaximum: (v: number) => v < n }[k];
          const priority = { minimum: 10, maximum: 11, exclusiveMinimum: 12, exclusiveMaximum: 13 }[k];
          add(priority, (v, p, out) => void (typeof v !== "number" || ok(v) || out.push([k, p])));
          break;
        }
        case "multipleOf": {
          const n = num(k);
          add(14, (v, p, out) => {
            if (typeof v !== "number") return;
            const q = v / n;
            if (Math.abs(q - Math.round(q)) > 1e-9 * Math.max(1, Math.abs(q))) out.push([k, p]);
          });
          break;
        }
        case "minLength":
        case "maxLength": {
          const n = num(k);
          const min = k === "minLength";
          add(min ? 20 : 21, (v, p, out) => void (typeof v !== "string" || (min ? chars(v) >= n : chars(v) <= n) || out.push([k, p])));
          break;
        }
        case "minItems":
        case "maxItems": {
          const n = num(k);
          const min = k === "minItems";
          add(min ? 22 : 23, (v, p, out) => void (!Array.isArray(v) || (min ? v.length >= n : v.length <= n) || out.push([k, p])));
          break;
        }
        case "minProperties":
        case "maxProperties": {
          const n = num(k);
          const min = k === "minProperties";
          add(min ? 24 : 25, (v, p, out) => {
            if (isObj(v) && (min ? Object.keys(v).length < n : Object.keys(v).length > n)) out.push([k, p]);
          });
          break;
        }
        case "required": {
          if (!Array.isArray(s)) throw this.where(child(at, k), "must be an array");
          add(26, (v, p, out) => {
            if (isObj(v)) for (const name of s as string[]) if (!(name in v)) out.push(["required", child(p, name)]);
          });
          break;
        }
        case "pattern": {
          let re: RegExp;
          try {
            re = new RegExp(s as string, "u");
          } catch {
            throw this.where(child(at, k), "not a regular expression");
          }
          add(30, (v, p, out) => void (typeof v !== "string" || re.test(v) || out.push(["pattern", p])));
          break;
        }
        case "format": {
          const f = FORMATS[s as string];
          if (!f) throw this.where(child(at, k), `format ${JSON.stringify(s)} is not checked by the web SDK`);
          add(31, (v, p, out) => void (typeof v !== "string" || f(v) || out.push(["format", p])));
          break;
        }
        case "uniqueItems":
          if (s === true) {
            add(35, (v, p, out) => {
              if (Array.isArray(v) && v.some((x, i) => v.findIndex((y) => equal(x, y)) !== i)) out.push(["uniqueItems", p]);
            });
          }
          break;
        case "properties":
          break; // With additionalProperties, below.
        case "additionalProperties":
          if (!("properties" in schema)) add(42, this.#members(schema, at));
          break;
        case "items": {
          const item = this.compile(s, child(at, k));
          add(44, (v, p, out) => {
            if (Array.isArray(v)) v.forEach((x, i) => item(x, child(p, i), out));
          });
          break;
        }
        case "anyOf":
        case "oneOf": {
          if (!Array.isArray(s) || s.length === 0) throw this.where(child(at, k), "must be a non-empty array");
          const subs = s.map((x, i) => this.compile(x, child(child(at, k), i)));
          const any = k === "anyOf";
          add(any ? 51 : 52, (v, p, out) => {
            const valid = subs.filter((c) => passes(c, v)).length;
            if (any ? valid === 0 : valid !== 1) out.push([k, p]);
          });
          break;
        }
        case "not": {
          const sub = this.compile(s, child(at, k));
          add(53, (v, p, out) => void (passes(sub, v) && out.push(["not", p])));
          break;
        }
        case "$ref":
          add(70, this.#ref(s, child(at, k)));
          break;
        default:
          if (!ANNOTATIONS.has(k)) throw this.where(child(at, k), `keyword ${JSON.stringify(k)} is not checked by the web SDK`);
      }
    }
    if ("properties" in schema) add(40, this.#members(schema, at));
    checks.sort((a, b) => a[0] - b[0]);
    const run = checks.map((c) => c[1]);
    return (v, p, out) => {
      for (const c of run) c(v, p, out);
    };
  }

  /** `properties` and `additionalProperties`: each member by name, then the unexpected ones. */
  #members(schema: Obj, at: string): Check {
    const props = schema.properties ?? {};
    if (!isObj(props)) throw this.where(child(at, "properties"), "must be an object");
    const known = new Map(Object.keys(props).map((k) => [k, this.compile(props[k], child(child(at, "properties"), k))]));
    const extra = schema.additionalProperties;
    const other = extra === undefined || extra === false ? undefined : this.compile(extra, child(at, "additionalProperties"));
    return (v, p, out) => {
      if (!isObj(v)) return;
      let unexpected: string | undefined;
      for (const k of byName(v)) {
        const c = known.get(k) ?? other;
        if (c) c(v[k], child(p, k), out);
        else if (extra === false) unexpected ??= k;
      }
      if (unexpected !== undefined) out.push(["additionalProperties", child(p, unexpected)]);
    };
  }

  /** A `$ref` inside the schema (`#/$defs/...`), compiled once. */
  #ref(ref: unknown, at: string): Check {
    if (typeof ref !== "string" || !ref.startsWith("#")) throw this.where(at, "a $ref must point inside the schema");
    const known = this.#refs.get(ref);
    if (known) return known;
    let target: unknown = this.root;
    for (const part of ref.slice(1).split("/").slice(1)) {
      const key = decodeURIComponent(part).replace(/~1/g, "/").replace(/~0/g, "~");
      target = isObj(target) || Array.isArray(target) ? (target as Obj)[key] : undefined;
    }
    if (target === undefined) throw this.where(at, `${ref} points nowhere`);
    // A placeholder first, so a recursive $ref finds itself.
    let compiled: Check = () => undefined;
    this.#refs.set(ref, (v, p, out) => compiled(v, p, out));
    compiled = this.compile(target, ref.slice(1));
    return compiled;
  }
}

function passes(c: Check, v: unknown): boolean {
  const out: Error1[] = [];
  c(v, "", out);
  return out.length === 0;
}

interface Compiled {
  deprecated: boolean;
  versions: Map<number, Check>;
  latest: number;
}

/**
 * Compiles `plan` into the check `Options.plan` takes. Throws a PlanError
 * when a schema uses what this checker does not implement.
 */
export function planCheck(plan: PlanFile, options: PlanCheckOptions = {}): PlanCheck {
  const events = new Map<string, Compiled>();
  for (const e of plan.events ?? []) {
    const versions = new Map<number, Check>();
    let latest = 0;
    for (const v of e.versions) {
      const schema = v.properties ?? { type: "object" };
      const compiler = new Compiler(schema, (pointer, detail) => new PlanError(e.name, v.version, pointer, detail));
      versions.set(v.version, compiler.compile(schema, ""));
      latest = Math.max(latest, v.version);
    }
    events.set(e.name, { deprecated: e.deprecated ?? false, versions, latest });
  }
  return (kind: Kind, event: string, props = "{}", call?: CallOptions): PlanRefusal | null => {
    // The plan names track events: a page or screen is not judged.
    if (kind !== "track") return null;
    const e = events.get(event);
    if (!e) return options.refuseUnplanned ? { reason: "unplanned", event } : null;
    const v = call?.eventVersion ?? e.latest;
    const check = e.versions.get(v);
    if (!check) return { reason: "unknown_version", event, version: v };
    const out: Error1[] = [];
    check(JSON.parse(props), "", out);
    const first = out[0];
    return first ? { reason: "plan_violation", event, version: v, rule: first[0], path: first[1], count: out.length } : null;
  };
}
