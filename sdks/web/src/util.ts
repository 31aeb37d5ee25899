// Small pure helpers: UTF-8 sizes, JSON depth, timestamps, seq ranges,
// encodings and ids.

/** An inclusive run of sequence numbers. */
export type Range = [number, number];

/** UTF-8 byte length of `s` without encoding it. */
export function utf8Len(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
      // A surrogate pair: one 4-byte code point.
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/**
 * Deepest nesting of objects and arrays in JSON `text`. Brackets are
 * counted first: text with no more than `limit` of them cannot be deeper,
 * so almost every message skips the string-aware scan (as the collector).
 */
export function jsonDepth(text: string, limit: number): number {
  let brackets = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 123 || c === 91) brackets++;
  }
  if (brackets <= limit) return brackets;
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++;
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91) max = Math.max(max, ++depth);
    else if (c === 125 || c === 93) depth--;
  }
  return max;
}

/** Unix ms as RFC 3339 UTC with milliseconds, as the collector writes them. */
export const formatTimestamp = (ms: number): string => new Date(ms).toISOString();

/** Adds `[from, to]` to sorted, merged `ranges` in place. */
export function addRange(ranges: Range[], from: number, to: number): void {
  ranges.push([from, to]);
  ranges.sort((a, b) => a[0] - b[0]);
  let w = 0;
  for (const r of ranges) {
    const last = ranges[w - 1];
    if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else ranges[w++] = [r[0], r[1]];
  }
  ranges.length = w;
}

/** The parts of `ranges` covered by none of `covered`. */
export function subtract(ranges: readonly Range[], covered: readonly Range[]): Range[] {
  const cut = [...covered].sort((a, b) => a[0] - b[0]);
  const out: Range[] = [];
  for (const [from, to] of ranges) {
    let next = from;
    for (const [a, b] of cut) {
      if (b < next || a > to) continue;
      if (a > next) out.push([next, a - 1]);
      next = b + 1;
    }
    if (next <= to) out.push([next, to]);
  }
  return out;
}

/** Base64 of bytes. */
export function base64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i] as number);
  return btoa(s);
}

/** Lower-case hex of bytes. */
export function hex(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += ((bytes[i] as number) | 256).toString(16).slice(1);
  return s;
}

const fmtUuid = (h: string) =>
  `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;

/**
 * A UUIDv7 of Unix ms `ms` and 10 random bytes, laid out as the Rust SDK's
 * (uuid's `Builder::from_unix_timestamp_millis`): ids sort by capture time.
 */
export function uuid7(ms: number, random: Uint8Array): string {
  const b = new Uint8Array(16);
  let t = ms;
  for (let i = 5; i >= 0; i--) {
    b[i] = t % 256;
    t = Math.floor(t / 256);
  }
  b[6] = 0x70 | ((random[0] as number) & 0x0f);
  b[7] = random[1] as number;
  b[8] = 0x80 | ((random[2] as number) & 0x3f);
  b.set(random.subarray(3, 10), 9);
  return fmtUuid(hex(b));
}

/** A random UUIDv4 (install, anonymous and session ids). */
export function uuid4(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = ((b[6] as number) & 0x0f) | 0x40;
  b[8] = ((b[8] as number) & 0x3f) | 0x80;
  return fmtUuid(hex(b));
}
