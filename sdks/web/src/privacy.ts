// Privacy, decided on the device before anything is stored, with the Rust
// SDK's rules (crates/tally-sdk/src/pipeline/privacy.rs) and test vectors
// (vectors/privacy.json): per-event property scopes, redaction of values
// under sensitive-looking keys at any depth, pseudonymised user ids.

import { hex } from "./util";

/** The replacement for a redacted value. */
export const REDACTED = "[redacted]";

/**
 * Key fragments that mark a value as sensitive, matched case-insensitively
 * against the key with `_`, `-`, `.` and spaces removed: what apps most
 * often leak into analytics by accident, contact details and credentials.
 */
export const DEFAULT_SENSITIVE_KEYS = [
  "email", "phone", "token", "password", "passwd", "secret", "apikey", "authorization",
];

/** Which property keys an event may carry. */
export type KeyScope = { allow: string[] } | { deny: string[] };

const normalise = (key: string) => key.toLowerCase().replace(/[_\-. ]/g, "");

/** The privacy stage, fixed when the tracker opens. */
export class Privacy {
  readonly #fragments: string[];
  #hmac: Promise<CryptoKey> | undefined;
  readonly #pseudonyms = new Map<string, Promise<string>>();

  readonly #scopes: Record<string, KeyScope>;

  constructor(
    scopes: Record<string, KeyScope> = {},
    sensitiveKeys: string[] = [],
    pseudonymiseKey?: string | Uint8Array<ArrayBuffer>,
  ) {
    this.#scopes = scopes;
    this.#fragments = DEFAULT_SENSITIVE_KEYS.concat(sensitiveKeys.map(normalise));
    if (pseudonymiseKey !== undefined) {
      const raw = typeof pseudonymiseKey === "string" ? new TextEncoder().encode(pseudonymiseKey) : pseudonymiseKey;
      this.#hmac = crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    }
  }

  #sensitive(text: string): boolean {
    const n = normalise(text);
    return this.#fragments.some((f) => n.includes(f));
  }

  #redact(value: unknown): unknown {
    if (Array.isArray(value)) return value.map((v) => this.#redact(v));
    if (value === null || typeof value !== "object") return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = this.#sensitive(k) ? REDACTED : this.#redact(v);
    return out;
  }

  /**
   * The properties (JSON object text) of event `event` to store (`event`
   * undefined: traits, where only redaction applies). Text needing no
   * change is returned as is.
   */
  filter(event: string | undefined, json: string): string {
    const scope = event === undefined ? undefined : this.#scopes[event];
    if (!scope && !this.#sensitive(json)) return json;
    const members = JSON.parse(json) as Record<string, unknown>;
    const kept: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(members)) {
      if (scope && ("allow" in scope ? !scope.allow.includes(k) : scope.deny.includes(k))) continue;
      kept[k] = this.#sensitive(k) ? REDACTED : this.#redact(v);
    }
    return JSON.stringify(kept);
  }

  /** The user id to store: as given, or HMAC-SHA256(key, id) in hex. */
  userId(id: string): Promise<string> {
    const key = this.#hmac;
    if (!key) return Promise.resolve(id);
    let p = this.#pseudonyms.get(id);
    if (!p) {
      p = key
        .then((k) => crypto.subtle.sign("HMAC", k, new TextEncoder().encode(id)))
        .then((mac) => hex(new Uint8Array(mac)));
      this.#pseudonyms.set(id, p);
    }
    return p;
  }
}
