// @tally/web: Tally's browser SDK. See docs/web.md.
export { Tracker, TallyError, LIBRARY } from "./tracker";
export type { CallOptions, Consent, Durable, Health, KeyScope, Options, PlanCheck, PlanRefusal, TrackResult } from "./tracker";
