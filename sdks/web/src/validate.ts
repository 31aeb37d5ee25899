// The collector's validation rules (crates/tally-proto/src/validate.rs),
// checked in the same order so a message breaking several rules gets the
// same reason. The SDK validates every message it builds before storing
// it: what the collector would reject is dropped on the device with its
// reason, never stored and resent. vectors/messages.json pins the verdicts.

import {
  MAX_EVENT_NAME_BYTES,
  MAX_ID_BYTES,
  MAX_JSON_DEPTH,
  MAX_MESSAGE_BYTES,
  MAX_MESSAGE_ID_BYTES,
  MAX_PROPERTIES_BYTES,
} from "./limits";
import { jsonDepth, utf8Len } from "./util";

type Obj = Record<string, unknown>;

const TYPES = ["track", "identify", "page", "screen", "group", "alias"];
const STRINGS = [
  "type", "messageId", "timestamp", "originalTimestamp", "sentAt", "userId",
  "anonymousId", "event", "name", "groupId", "previousId", "writeKey",
];
// RFC 3339, and ISO 8601 without an offset (read as UTC), as the collector.
const DATE = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?$/i;

const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const text = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);
const tooLong = (v: unknown, max: number) => typeof v === "string" && utf8Len(v) > max;
const badDate = (v: unknown) => text(v) !== undefined && !(DATE.test(v as string) && !isNaN(Date.parse(v as string)));
const uint = (v: unknown) => v == null || (Number.isInteger(v) && (v as number) >= 0);

/**
 * The reject reason for message `m` whose JSON text is `raw`, or null when
 * the collector accepts it. A message the SDK built passes `bagBytes`, the
 * size of the properties or traits object it spliced into `raw` (then `m`
 * holds none): they were checked to be an object when tracked.
 */
export function validate(m: unknown, raw: string, bagBytes = 0): string | null {
  if (!isObj(m) || STRINGS.some((k) => m[k] != null && typeof m[k] !== "string")) return "malformed_message";
  const ctx = m.context;
  const tally = isObj(ctx) ? ctx.tally : undefined;
  if (ctx != null && !isObj(ctx)) return "malformed_message";
  if (tally != null) {
    if (!isObj(tally)) return "malformed_message";
    const { install_id, session_id, dedup_key, priority } = tally;
    if (
      [install_id, session_id, dedup_key].some((v) => v != null && typeof v !== "string") ||
      ![tally.seq, tally.session_index, tally.schema, tally.event_version].every(uint) ||
      (priority != null && priority !== "normal" && priority !== "critical")
    )
      return "malformed_message";
  }
  const type = text(m.type);
  if (!type) return "missing_type";
  if (!TYPES.includes(type)) return "unknown_type";
  const id = text(m.messageId);
  if (!id) return "missing_message_id";
  if (utf8Len(id) > MAX_MESSAGE_ID_BYTES) return "message_id_too_long";
  if (!text(m.userId) && !text(m.anonymousId)) return "missing_identity";
  if ([m.userId, m.anonymousId, m.groupId, m.previousId].some((v) => tooLong(v, MAX_ID_BYTES))) return "id_too_long";
  if (type === "track") {
    if (!text(m.event)) return "missing_event_name";
    if (tooLong(m.event, MAX_EVENT_NAME_BYTES)) return "event_name_too_long";
  } else if ((type === "page" || type === "screen") && tooLong(m.name, MAX_EVENT_NAME_BYTES)) {
    return "event_name_too_long";
  } else if (type === "group" && !text(m.groupId)) return "missing_group_id";
  else if (type === "alias" && !text(m.previousId)) return "missing_previous_id";
  const indexed = [m.messageId, m.userId, m.anonymousId, m.groupId, m.previousId, m.event, m.name];
  if (isObj(tally)) indexed.push(tally.install_id, tally.session_id, tally.dedup_key);
  if (indexed.some((v) => typeof v === "string" && v.includes("\u0000"))) return "nul_character";
  if (bagBytes > MAX_PROPERTIES_BYTES) return "properties_too_large";
  for (const bag of [m.properties, m.traits]) {
    if (bag == null) continue;
    if (!isObj(bag)) return "properties_not_object";
    if (utf8Len(JSON.stringify(bag)) > MAX_PROPERTIES_BYTES) return "properties_too_large";
  }
  if (utf8Len(raw) > MAX_MESSAGE_BYTES) return "message_too_large";
  if (jsonDepth(raw, MAX_JSON_DEPTH) > MAX_JSON_DEPTH) return "nesting_too_deep";
  if (badDate(m.timestamp) || (!text(m.timestamp) && badDate(m.originalTimestamp)) || badDate(m.sentAt)) {
    return "bad_timestamp";
  }
  if (isObj(tally)) {
    if (tally.schema === 0) return "unsupported_schema";
    if (tally.seq === 0) return "seq_zero";
    const install = tally.install_id;
    if ((install == null && tally.seq != null) || install === "" || tooLong(install, MAX_ID_BYTES)) {
      return "bad_install_id";
    }
    if (tooLong(tally.session_id, MAX_ID_BYTES) || tooLong(tally.dedup_key, MAX_ID_BYTES)) return "id_too_long";
  }
  // A drop report the SDK built (its properties spliced into `raw`) is
  // right by construction; one given whole is checked as the collector does.
  if (type === "track" && m.event === "tally.dropped" && (m.properties != null || !bagBytes)) {
    const seq = isObj(tally) ? tally.seq : undefined;
    const p = m.properties;
    const ranges = isObj(p) && Array.isArray(p.ranges) ? p.ranges : undefined;
    if (
      !isObj(tally) || !text(tally.install_id) || typeof seq !== "number" || !ranges ||
      typeof (p as Obj).reason !== "string" || !/^[a-z0-9_]{1,64}$/.test((p as Obj).reason as string) ||
      !ranges.every((r) => Array.isArray(r) && r.length === 2 && r.every(Number.isInteger) && r[0] >= 1 && r[0] <= r[1] && r[1] < seq)
    )
      return "invalid_drop_report";
  }
  return null;
}
