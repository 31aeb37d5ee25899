//! What each route takes and answers, beside what the route table says
//! (its path, methods and role): its name, summary, query parameters,
//! body, success answer and the errors of its own.

use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{RefOr, Required};

use super::schemas::*;

/// One operation of the document.
pub(super) struct Spec {
    /// `operationId`.
    pub id: String,
    /// One line.
    pub summary: &'static str,
    /// The group the reference lists it under.
    pub tag: &'static str,
    /// Query parameters.
    pub query: Vec<Parameter>,
    /// The body's media type and schema, when it takes one.
    pub body: Option<(&'static str, RefOr<Schema>)>,
    /// The success status, media type and schema.
    pub ok: (u16, &'static str, RefOr<Schema>),
    /// Error statuses of its own (those of its role are added).
    pub errors: &'static [u16],
}

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// An optional query parameter.
fn q(name: &str, schema: Schema, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// A required query parameter.
fn q_required(name: &str, schema: Schema, description: &str) -> Parameter {
    let mut p = q(name, schema, description);
    p.required = Required::True;
    p
}

fn from_to() -> Vec<Parameter> {
    vec![
        q(
            "from",
            date_time(),
            "Start of the window, inclusive (RFC 3339).",
        ),
        q(
            "to",
            date_time(),
            "End of the window, exclusive (RFC 3339); default now.",
        ),
    ]
}

fn tz() -> Parameter {
    q(
        "tz",
        string(),
        "IANA time zone that cuts days and hours; default UTC.",
    )
}

fn interval() -> Parameter {
    q(
        "interval",
        one_of(&["hour", "day"]),
        "Bucket size; default day.",
    )
}

fn limit(what: &str) -> Parameter {
    q("limit", integer_from(0), what)
}

fn json_ok(schema: impl Into<RefOr<Schema>>) -> (u16, &'static str, RefOr<Schema>) {
    (200, JSON, schema.into())
}

fn source() -> Parameter {
    q(
        "source",
        string(),
        "Only the events this source (write key id) sent; absent or empty: every source.",
    )
}

/// A product query's parameters besides the window.
fn query_params(path: &str) -> Vec<Parameter> {
    let mut params = from_to();
    params.push(source());
    match path {
        "/v1/query/events" => params.extend([
            q(
                "event",
                string(),
                "Count only this event; default every event.",
            ),
            interval(),
            tz(),
        ]),
        "/v1/query/active" => params.extend([
            q(
                "window",
                one_of(&["day", "week", "month"]),
                "DAU, WAU or MAU; default day.",
            ),
            tz(),
        ]),
        "/v1/query/sessions" => params.extend([interval(), tz()]),
        "/v1/query/funnel" => params.extend([
            q_required(
                "steps",
                string(),
                "2 to 10 event names, comma-separated, in order.",
            ),
            q(
                "window_s",
                integer_from(1),
                "Conversion window in seconds (at most 90 days); default a day.",
            ),
        ]),
        "/v1/query/retention" => params.extend([
            q(
                "days",
                integer_from(1),
                "Horizon in days, 1 to 90; default 7.",
            ),
            q(
                "event",
                string(),
                "The event that enters a cohort; default any.",
            ),
            tz(),
        ]),
        "/v1/query/breakdown" => params.extend([
            q_required("event", string(), "The event to break down."),
            q_required(
                "by",
                string(),
                "A dotted path under properties., context. or traits.",
            ),
            limit("Rows before the rest is folded, 1 to 1000; default 20."),
        ]),
        "/v1/query/top-events" => {
            params.push(limit("Rows, 1 to 1000; default 20."));
        }
        _ => params.extend([
            tz(),
            q(
                "horizon_days",
                integer_from(0),
                "Days after which a day is final regardless; default 7.",
            ),
        ]),
    }
    params
}

/// The operation of `method` on `path`, or `None` for a route this file
/// does not describe (a test keeps every route described).
pub(super) fn describe(path: &str, method: &str) -> Option<Spec> {
    let id = |name: &str| name.to_owned();
    let spec = |id: String, summary, tag, ok| Spec {
        id,
        summary,
        tag,
        query: Vec::new(),
        body: None,
        ok,
        errors: &[],
    };
    let s = match (method, path) {
        ("POST", "/v1/batch" | "/v1/b" | "/beacon/v1/batch") => Spec {
            query: vec![q(
                "writeKey",
                string(),
                "The write key, where no header can carry it.",
            )],
            body: Some((JSON, named_ref("Batch"))),
            errors: &[400, 408, 413, 415, 503],
            ..spec(
                format!("ingest_batch{}", route_suffix(path)),
                "Send a batch of messages; one result per message, in order",
                "ingest",
                json_ok(named_ref("BatchResponse")),
            )
        },
        ("POST", p) if ingest_kind(p).is_some() => {
            let kind = ingest_kind(p).unwrap_or_default();
            let short = p.len() == "/v1/t".len();
            Spec {
                query: vec![q(
                    "writeKey",
                    string(),
                    "The write key, where no header can carry it.",
                )],
                body: Some((JSON, named_ref("Message"))),
                errors: &[400, 408, 413, 415, 503],
                ..spec(
                    format!("ingest_{kind}{}", if short { "_short" } else { "" }),
                    "Send one message; a message without `type` takes the path's",
                    "ingest",
                    json_ok(named_ref("BatchResponse")),
                )
            }
        }
        ("POST", "/v1/m") => spec(
            id("client_telemetry"),
            "A browser library's own telemetry: acknowledged, never read",
            "ingest",
            json_ok(object(Vec::new())),
        ),
        ("GET", "/v1/time") => spec(
            id("server_time"),
            "The collector's clock, for a device estimating its offset",
            "ingest",
            json_ok(object(members! { "server_time": date_time() })),
        ),
        ("GET", "/v1/projects/{write_key}/settings") => Spec {
            errors: &[400, 404],
            ..spec(
                id("segment_settings"),
                "The settings document Segment's browser library fetches",
                "ingest",
                json_ok(object(members! { "integrations": any() })),
            )
        },
        ("GET", "/sourceConfig/") => Spec {
            query: vec![q("writeKey", string(), "The write key.")],
            errors: &[401],
            ..spec(
                id("rudderstack_source_config"),
                "The source configuration RudderStack's SDK fetches",
                "ingest",
                json_ok(object(members! { "source": any() })),
            )
        },
        ("GET", "/healthz") => Spec {
            errors: &[503],
            ..spec(
                id("healthz"),
                "Whether the collector can reach its store",
                "operations",
                json_ok(object(members! { "status": one_of(&["ok"]) })),
            )
        },
        ("GET", "/") => spec(
            id("dashboard"),
            "The dashboard's page",
            "operations",
            (200, "text/html", string().into()),
        ),
        ("GET", "/assets/{file}") => Spec {
            errors: &[404],
            ..spec(
                id("dashboard_asset"),
                "A file of the dashboard",
                "operations",
                (200, "*/*", string().into()),
            )
        },
        ("GET", "/metrics") => spec(
            id("metrics"),
            "Prometheus metrics, in the OpenMetrics text format",
            "operations",
            (200, "application/openmetrics-text", string().into()),
        ),
        ("GET", "/openapi.json") => spec(
            id("openapi"),
            "This document",
            "operations",
            json_ok(object(members! { "openapi": string(), "paths": any() })),
        ),
        ("GET", "/v1/me") => spec(
            id("me"),
            "What the presented token may do",
            "queries",
            json_ok(object(members! { "role": one_of(&["read", "admin"]) })),
        ),
        ("GET", "/v1/stats") => Spec {
            errors: &[503],
            ..spec(
                id("stats"),
                "Totals of answers, stored events and dead letters",
                "queries",
                json_ok(stats()),
            )
        },
        ("GET", "/v1/events/count") => Spec {
            query: {
                let mut p = vec![q_required("event", string(), "The event name.")];
                p.extend(from_to());
                p.push(source());
                p
            },
            errors: &[400, 503],
            ..spec(
                id("count_events"),
                "How many events of one name, and from how many users",
                "queries",
                json_ok(named_ref("EventCount")),
            )
        },
        ("GET", p) if p.starts_with("/v1/query/") => Spec {
            query: query_params(p),
            errors: &[400, 503],
            ..spec(
                format!(
                    "query_{}",
                    p.trim_start_matches("/v1/query/").replace('-', "_")
                ),
                "A product query (see the query API)",
                "queries",
                json_ok(query_answer(p)),
            )
        },
        ("GET", "/v1/export") => Spec {
            query: {
                let mut p = vec![q("format", one_of(&["ndjson"]), "The only format: NDJSON.")];
                p.extend(from_to());
                p.push(source());
                p
            },
            errors: &[400, 503],
            ..spec(
                id("export"),
                "Every stored event of the window, one message a line",
                "governance",
                (200, NDJSON, string().into()),
            )
        },
        ("GET", "/v1/dead-letters") => Spec {
            query: vec![
                limit("Rows a page, at most 1000; default 100."),
                q("reason", string(), "Only this rejection reason code."),
                q("since", date_time(), "Received at or after (RFC 3339)."),
                q("until", date_time(), "Received before (RFC 3339)."),
                q(
                    "before_id",
                    integer(),
                    "The page after this row id (`next_before_id`).",
                ),
            ],
            errors: &[400, 503],
            ..spec(
                id("dead_letters"),
                "Rejected messages, newest first, filtered and paged",
                "operations",
                json_ok(object(members! {
                    "dead_letters": array(named_ref("StoredDeadLetter")),
                    "next_before_id": nullable(integer()),
                    "totals": named_ref("DeadLetterTotals"),
                })),
            )
        },
        ("GET", "/v1/installs") => Spec {
            query: vec![
                q(
                    "stalled",
                    number(),
                    "Seconds an event has waited on the device; default a day.",
                ),
                limit("Installs, at most 1000; default 100."),
            ],
            errors: &[400, 503],
            ..spec(
                id("stalled_installs"),
                "Installs whose queues are not draining, oldest queue first",
                "operations",
                json_ok(object(
                    members! { "stalled_s": number(), "installs": array(named_ref("Beacon")) },
                )),
            )
        },
        ("GET", "/v1/installs/{install_id}") => Spec {
            errors: &[404, 503],
            ..spec(
                id("install"),
                "One install's completeness: highest seq, gaps, drops",
                "operations",
                json_ok(named_ref("InstallReport")),
            )
        },
        ("GET", "/v1/installs/{install_id}/events") => Spec {
            query: vec![
                q(
                    "after_seq",
                    integer_from(0),
                    "Events with a higher seq; default 0.",
                ),
                limit("Events, 1 to 10000; default 1000."),
            ],
            errors: &[400, 503],
            ..spec(
                id("install_events"),
                "One install's stored events in seq order",
                "operations",
                json_ok(array(named_ref("InstallEvent"))),
            )
        },
        ("POST", "/v1/deletions") => Spec {
            body: Some((JSON, deletion_request().into())),
            errors: &[400, 413, 503],
            ..spec(
                id("delete_person"),
                "Delete a person by exactly one of userId, anonymousId, installId, in one source or all",
                "governance",
                (202, JSON, named_ref("DeletionReport")),
            )
        },
        ("GET", "/v1/deletions") => Spec {
            query: vec![limit("Requests, newest first; default 1000.")],
            errors: &[400, 503],
            ..spec(
                id("list_deletions"),
                "Deletion requests, newest first",
                "governance",
                json_ok(object(members! {
                    "deletions": array(object(members! {
                        "kind": one_of(&["userId", "anonymousId", "installId"]),
                        "requested_at": date_time(),
                        "status": one_of(&["done"]),
                        "deleted_events": integer_from(0),
                        "source": nullable(string()),
                    })),
                })),
            )
        },
        ("GET", "/v1/health/pipeline") => Spec {
            query: from_to(),
            errors: &[400, 503],
            ..spec(
                id("pipeline_health"),
                "Lag, sync latency, batches, dedup and rejections over a window",
                "operations",
                json_ok(named_ref("PipelineReport")),
            )
        },
        ("GET", "/v1/alerts") => spec(
            id("alerts"),
            "Every alert rule with its state, and the webhook's counters",
            "operations",
            json_ok(named_ref("AlertsView")),
        ),
        ("GET", "/v1/plan") => spec(
            id("plan"),
            "The tracking plan in force",
            "governance",
            json_ok(plan_shown()),
        ),
        ("GET", "/v1/quality") => Spec {
            query: {
                let mut p = from_to();
                p.push(source());
                p.push(q("event", string(), "Only events of this name."));
                p
            },
            errors: &[400, 503],
            ..spec(
                id("quality"),
                "What the tracking plan found, per event, rule and path, with examples",
                "governance",
                json_ok(object(members! {
                    "findings": array(named_ref("QualityRow")),
                    "unplanned": array(named_ref("QualityRow")),
                })),
            )
        },
        ("POST", "/v1/plan/reload") => Spec {
            errors: &[400, 404],
            ..spec(
                id("plan_reload"),
                "Read the tracking plan file now",
                "governance",
                json_ok(plan_reloaded()),
            )
        },
        ("GET", "/v1/keys") => spec(
            id("list_keys"),
            "Every key, oldest first, without secrets",
            "access",
            json_ok(object(members! { "keys": array(named_ref("Key")) })),
        ),
        ("POST", "/v1/keys") => Spec {
            body: Some((
                JSON,
                object(members! { "kind": one_of(&["write", "read", "admin"]), "name": string() })
                    .into(),
            )),
            errors: &[400, 413, 503],
            ..spec(
                id("create_key"),
                "Make a key; its secret is shown once",
                "access",
                (201, JSON, key_with_secret(false).into()),
            )
        },
        ("POST", "/v1/keys/{key_id}/rotate") => Spec {
            body: Some((JSON, rotate_body().into())),
            errors: &[400, 404, 413, 503],
            ..spec(
                id("rotate_key"),
                "A new secret; older ones valid for a grace period",
                "access",
                json_ok(key_with_secret(true)),
            )
        },
        ("POST", "/v1/keys/{key_id}/revoke") => Spec {
            errors: &[400, 404, 503],
            ..spec(
                id("revoke_key"),
                "Refuse a key from now on, on every collector",
                "access",
                json_ok(named_ref("Key")),
            )
        },
        ("GET", "/v1/audit") => Spec {
            query: {
                let mut p = from_to();
                p.extend([
                    q("key_id", string(), "Only this key's actions."),
                    q(
                        "outcome",
                        one_of(&["ok", "failed", "denied"]),
                        "Only this outcome.",
                    ),
                    q("action", string(), "Only this action (`GET /v1/export`)."),
                    q(
                        "before_id",
                        integer(),
                        "The page after this row id (`next_before_id`).",
                    ),
                    limit("Rows, 1 to 1000; default 100."),
                ]);
                p
            },
            errors: &[400, 503],
            ..spec(
                id("audit"),
                "The audit log, newest first",
                "access",
                json_ok(audit_page()),
            )
        },
        ("GET", "/v1/people/{person_id}/export") => Spec {
            query: vec![
                q(
                    "kind",
                    one_of(&["userId", "anonymousId", "installId"]),
                    "What the id is; default userId.",
                ),
                q(
                    "source",
                    string(),
                    "Only the events this write key id sent.",
                ),
            ],
            errors: &[400, 503],
            ..spec(
                id("export_person"),
                "One person's stored events, one message a line",
                "governance",
                (200, NDJSON, string().into()),
            )
        },
        _ => return None,
    };
    Some(s)
}

/// `{}` or `{"grace_s": N}`.
fn rotate_body() -> Schema {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Object)
        .property("grace_s", integer_from(0))
        .into()
}

/// The message type a single-message path gives, if it is one.
fn ingest_kind(path: &str) -> Option<&'static str> {
    Some(match path {
        "/v1/track" | "/v1/t" => "track",
        "/v1/identify" | "/v1/i" => "identify",
        "/v1/page" | "/v1/p" => "page",
        "/v1/screen" | "/v1/s" => "screen",
        "/v1/group" | "/v1/g" => "group",
        "/v1/alias" | "/v1/a" => "alias",
        _ => return None,
    })
}

/// Distinguishes the three batch paths' operation ids.
fn route_suffix(path: &str) -> &'static str {
    match path {
        "/v1/b" => "_short",
        "/beacon/v1/batch" => "_beacon",
        _ => "",
    }
}
