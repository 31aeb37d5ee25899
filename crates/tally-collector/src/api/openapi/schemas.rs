//! The schemas of the answers: the types the handlers serialize where
//! there is one (derived with `utoipa::ToSchema` beside the type), and
//! for the answers a handler builds as JSON, the members it writes.

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::ToSchema;

/// Every named schema of the document, with what they refer to.
pub(super) fn components() -> Vec<(String, RefOr<Schema>)> {
    let mut all = Vec::new();
    named::<tally_proto::Batch>(&mut all);
    named::<tally_proto::Message>(&mut all);
    named::<tally_proto::BatchResponse>(&mut all);
    named::<tally_proto::ErrorBody>(&mut all);
    named::<crate::store::Stats>(&mut all);
    named::<crate::store::DeadLetterTotals>(&mut all);
    named::<crate::store::EventCount>(&mut all);
    named::<crate::store::InstallReport>(&mut all);
    named::<crate::store::InstallEvent>(&mut all);
    named::<crate::store::DeletionReport>(&mut all);
    named::<crate::store::StoredDeadLetter>(&mut all);
    named::<crate::store::quality::QualityRow>(&mut all);
    named::<crate::store::health::Beacon>(&mut all);
    named::<crate::health::PipelineReport>(&mut all);
    named::<crate::alerts::AlertsView>(&mut all);
    all.push(("Key".into(), key().into()));
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.dedup_by(|a, b| a.0 == b.0);
    all
}

fn named<T: ToSchema>(all: &mut Vec<(String, RefOr<Schema>)>) {
    all.push((T::name().into_owned(), T::schema()));
    T::schemas(all);
}

/// A reference to the named schema `name`.
pub(super) fn named_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

pub(super) fn string() -> Schema {
    ObjectBuilder::new().schema_type(Type::String).into()
}

pub(super) fn date_time() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .into()
}

pub(super) fn integer() -> Schema {
    ObjectBuilder::new().schema_type(Type::Integer).into()
}

/// A whole number from `min` (inclusive).
pub(super) fn integer_from(min: i64) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min))
        .into()
}

pub(super) fn number() -> Schema {
    ObjectBuilder::new().schema_type(Type::Number).into()
}

pub(super) fn boolean() -> Schema {
    ObjectBuilder::new().schema_type(Type::Boolean).into()
}

pub(super) fn any() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .into()
}

/// One of `values`.
pub(super) fn one_of(values: &[&str]) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .into()
}

pub(super) fn nullable(schema: impl Into<RefOr<Schema>>) -> Schema {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(schema)
        .into()
}

pub(super) fn array(items: impl Into<RefOr<Schema>>) -> Schema {
    ArrayBuilder::new().items(items.into()).into()
}

/// An object with every member of `members` required, others allowed.
pub(super) fn object(members: Vec<(&str, RefOr<Schema>)>) -> Schema {
    let mut builder = ObjectBuilder::new().schema_type(Type::Object);
    for (name, schema) in members {
        builder = builder.property(name, schema).required(name);
    }
    builder.into()
}

/// An object whose members are all `values`.
pub(super) fn map_of(values: Schema) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(values))))
        .into()
}

/// Shorthand for a member list.
macro_rules! members {
    ($($name:literal: $schema:expr),* $(,)?) => {
        vec![$(($name, utoipa::openapi::RefOr::from($schema))),*]
    };
}
pub(super) use members;

/// A key as `/v1/keys` lists it: never a secret nor a digest.
fn key() -> Schema {
    object(members! {
        "id": string(),
        "kind": one_of(&["write", "read", "admin"]),
        "name": string(),
        "origin": one_of(&["config", "api"]),
        "created_at": date_time(),
        "revoked_at": nullable(date_time()),
        "secrets": array(object(members! {
            "created_at": date_time(),
            "expires_at": nullable(date_time()),
            "configured": boolean(),
        })),
    })
}

/// A key and the secret just made for it.
pub(super) fn key_with_secret(rotated: bool) -> Schema {
    let mut extra = members! { "secret": string() };
    if rotated {
        extra.extend(members! { "previous_expires_at": date_time() });
    }
    utoipa::openapi::schema::AllOfBuilder::new()
        .item(named_ref("Key"))
        .item(object(extra))
        .into()
}

/// A deletion request: exactly one of the three ids, and optionally the
/// source (write key id) it is limited to; nothing else.
pub(super) fn deletion_request() -> Schema {
    let text = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
    };
    let by = |name: &str| {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(name, text())
            .required(name)
            .property("source", text())
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
    };
    OneOfBuilder::new()
        .item(by("userId"))
        .item(by("anonymousId"))
        .item(by("installId"))
        .into()
}

/// `/v1/stats`.
pub(super) fn stats() -> Schema {
    utoipa::openapi::schema::AllOfBuilder::new()
        .item(named_ref("Stats"))
        .item(object(
            members! { "dead_letters": named_ref("DeadLetterTotals") },
        ))
        .into()
}

/// A page of the audit log.
pub(super) fn audit_page() -> Schema {
    object(members! {
        "entries": array(object(members! {
            "id": integer(),
            "at": date_time(),
            "key_id": nullable(string()),
            "role": nullable(string()),
            "action": string(),
            "params": any(),
            "client": nullable(string()),
            "status": integer(),
            "outcome": one_of(&["ok", "failed", "denied"]),
            "count": integer(),
        })),
        "next_before_id": nullable(integer()),
    })
}

/// The tracking plan in force.
fn plan() -> Schema {
    object(members! {
        "file": string(),
        "digest": string(),
        "loaded_at": date_time(),
        "events": integer_from(0),
        "mode": string(),
        "sources": map_of(string()),
    })
}

/// `GET /v1/plan`.
pub(super) fn plan_shown() -> Schema {
    object(members! { "plan": nullable(plan()) })
}

/// `POST /v1/plan/reload`.
pub(super) fn plan_reloaded() -> Schema {
    object(members! { "changed": boolean(), "plan": plan() })
}

/// A series of buckets with `fields` besides the bucket's label.
fn series(fields: Vec<(&'static str, RefOr<Schema>)>) -> Schema {
    let mut row = members! { "bucket": string() };
    row.extend(fields);
    array(object(row))
}

/// The answer of a product query, by path.
pub(super) fn query_answer(path: &str) -> Schema {
    let count = || integer_from(0);
    match path {
        "/v1/query/events" => object(members! {
            "event": nullable(string()),
            "interval": one_of(&["hour", "day"]),
            "tz": string(),
            "series": series(members! { "count": count(), "people": count() }),
            "total": object(members! { "count": count(), "people": count() }),
        }),
        "/v1/query/active" => object(members! {
            "window": one_of(&["day", "week", "month"]),
            "tz": string(),
            "series": series(members! { "people": count() }),
        }),
        "/v1/query/sessions" => object(members! {
            "sessions": count(),
            "median_length_s": nullable(number()),
            "interval": one_of(&["hour", "day"]),
            "tz": string(),
            "series": series(members! { "sessions": count() }),
        }),
        "/v1/query/funnel" => object(members! {
            "window_s": integer_from(1),
            "steps": array(object(members! {
                "event": string(), "people": count(), "conversion": number(),
            })),
        }),
        "/v1/query/retention" => object(members! {
            "tz": string(),
            "days": integer_from(1),
            "cohorts": array(object(members! {
                "day": string(), "size": count(), "returned": array(nullable(count())),
            })),
        }),
        "/v1/query/breakdown" => object(members! {
            "event": string(),
            "by": string(),
            "rows": array(object(members! {
                "value": nullable(string()), "count": count(), "people": count(), "other": boolean(),
            })),
        }),
        "/v1/query/top-events" => object(members! {
            "rows": array(object(members! { "event": string(), "count": count(), "people": count() })),
        }),
        _ => object(members! {
            "tz": string(),
            "horizon_days": integer_from(0),
            "installs_with_gaps": count(),
            "days": array(object(members! {
                "day": string(),
                "active_installs": count(),
                "synced_installs": count(),
                "synced_share": nullable(number()),
                "waiting_installs": count(),
                "pending_events": integer(),
                "status": one_of(&["in_progress", "waiting", "final"]),
                "final_by": nullable(one_of(&["synced", "horizon"])),
                "final_at": nullable(date_time()),
                "horizon_at": date_time(),
            })),
        }),
    }
}
