//! The OpenAPI 3.1 document of the main listener, served at
//! `GET /openapi.json` and committed as `docs/openapi.json` (a test fails
//! when they differ).
//!
//! It is made from the code: the paths, methods and roles from the route
//! table ([`super::routes::table`]), the request and answer schemas from
//! the wire types (`tally-proto`'s, with their doc comments) and from the
//! types the handlers serialize, and each route's parameters, body,
//! answer and errors from [`operations`], which a test keeps complete.

mod operations;
mod schemas;

use std::sync::OnceLock;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref,
    RefOr, Required, ResponseBuilder,
};

use super::routes::{table, Access, RouteInfo};
use operations::{describe, Spec};
use schemas::{integer_from, named_ref, string};

/// The routes of the table that [`operations`] does not describe (empty
/// unless a route was added without its description).
pub fn undescribed() -> Vec<(&'static str, &'static str)> {
    table()
        .into_iter()
        .flat_map(|r| r.methods.iter().map(move |m| (r.path, *m)))
        .filter(|(path, method)| describe(path, method).is_none())
        .collect()
}

/// The document.
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for route in table() {
        for method in route.methods {
            if let Some(spec) = describe(route.path, method) {
                let item = PathItem::new(http_method(method), operation(&route, spec));
                paths = paths.path(route.path, item);
            }
        }
    }
    let mut components = ComponentsBuilder::new()
        .schemas_from_iter(schemas::components())
        .security_scheme(
            "token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        )
        .security_scheme(
            "writeKey",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        )
        .security_scheme(
            "writeKeyQuery",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("writeKey"))),
        );
    for status in ERROR_STATUSES {
        components = components.response(error_name(status), error_response(status));
    }
    let tags = [
        (
            "ingest",
            "What apps and SDKs call, with a write key or nothing.",
        ),
        ("queries", "Product queries and totals (read token)."),
        (
            "governance",
            "Export, deletion, access requests and the tracking plan.",
        ),
        (
            "operations",
            "Health, metrics, dead letters, installs and alerts.",
        ),
        ("access", "Keys and the audit log (admin token)."),
    ];
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Tally collector")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Every route of `tally serve`'s main listener. A token goes in \
                     `Authorization: Bearer`; a write key as the user name of Basic \
                     authentication, the `writeKey` query parameter, or the batch's \
                     `writeKey`. Every error is `{\"code\", \"message\"}`.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .tags(Some(tags.map(|(name, text)| {
            TagBuilder::new().name(name).description(Some(text)).build()
        })))
        .build()
}

/// The document as served and committed: pretty JSON and a newline.
pub fn json() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut text = document()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        text.push('\n');
        text
    })
}

fn http_method(method: &str) -> HttpMethod {
    match method {
        "POST" => HttpMethod::Post,
        _ => HttpMethod::Get,
    }
}

/// The statuses a route's role adds: no credential or an unknown one,
/// one short of the role, too many wrong ones from the address (or, for
/// a write key, over its rate).
fn access_errors(access: Access) -> &'static [u16] {
    match access {
        Access::WriteKey => &[401, 429],
        Access::Read | Access::Admin | Access::Metrics => &[401, 403, 429],
        Access::WriteKeyInRequest | Access::App | Access::Public => &[],
    }
}

/// Every error status of an operation: its own and its role's, ascending.
fn error_statuses(own: &[u16], access: Access) -> Vec<u16> {
    let mut errors: Vec<u16> = own.to_vec();
    errors.extend(access_errors(access));
    errors.sort_unstable();
    errors.dedup();
    errors
}

fn security(access: Access) -> Vec<SecurityRequirement> {
    let one = |name: &str| SecurityRequirement::new::<_, _, &str>(name, []);
    match access {
        Access::WriteKey => vec![
            one("writeKey"),
            one("writeKeyQuery"),
            SecurityRequirement::default(),
        ],
        Access::Read | Access::Admin | Access::Metrics => vec![one("token")],
        Access::WriteKeyInRequest | Access::App | Access::Public => Vec::new(),
    }
}

fn operation(route: &RouteInfo, spec: Spec) -> utoipa::openapi::path::Operation {
    let role = route.access.as_str();
    let mut op = OperationBuilder::new()
        .operation_id(Some(spec.id))
        .summary(Some(spec.summary))
        .description(Some(format!("Role: {role}.")))
        .tag(spec.tag);
    for name in path_parameters(route.path) {
        op = op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(string())),
        );
    }
    for p in spec.query {
        op = op.parameter(p);
    }
    if let Some((media, schema)) = spec.body {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(media, ContentBuilder::new().schema(Some(schema)).build())
                .required(Some(Required::True))
                .build(),
        ));
    }
    let (status, media, schema) = spec.ok;
    op = op.response(
        status.to_string(),
        ResponseBuilder::new()
            .description("Success.")
            .content(media, ContentBuilder::new().schema(Some(schema)).build())
            .build(),
    );
    for status in error_statuses(spec.errors, route.access) {
        op = op.response(
            status.to_string(),
            RefOr::Ref(Ref::from_response_name(error_name(status))),
        );
    }
    let security = security(route.access);
    if !security.is_empty() {
        op = op.securities(Some(security));
    }
    op.build()
}

/// Every error status an operation may answer.
const ERROR_STATUSES: [u16; 9] = [400, 401, 403, 404, 408, 413, 415, 429, 503];

/// The name of an error status's shared response.
fn error_name(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        408 => "RequestTimeout",
        413 => "PayloadTooLarge",
        415 => "UnsupportedEncoding",
        429 => "TooManyRequests",
        _ => "Unavailable",
    }
}

fn error_response(status: u16) -> utoipa::openapi::Response {
    let what = match status {
        400 => "The request is malformed: the message says which parameter or member.",
        401 => "No credential, or one the collector does not know.",
        403 => "A known credential short of the route's role.",
        404 => "No such resource.",
        408 => "The body did not arrive in time; send it again.",
        413 => "The body, decoded body or message count is over its limit.",
        415 => "A Content-Encoding other than identity, gzip or zstd.",
        429 => "Too many requests (or wrong credentials) from this client; wait Retry-After.",
        _ => "The store is saturated or down; retry after Retry-After.",
    };
    let mut response = ResponseBuilder::new().description(what).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(named_ref("ErrorBody")))
            .build(),
    );
    if matches!(status, 429 | 503) {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(integer_from(0)))
                .description(Some("Seconds to wait."))
                .build(),
        );
    }
    response.build()
}

/// The `{name}`s of a path.
fn path_parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// The route reference of `docs/http-api.md` (between its `routes`
/// markers): one row per operation with its role, success and errors, as
/// the document states them.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "| method | route | role | success | errors | what |\n|---|---|---|---|---|---|\n",
    );
    for route in table() {
        for method in route.methods {
            let Some(spec) = describe(route.path, method) else {
                continue;
            };
            let errors: Vec<String> = error_statuses(spec.errors, route.access)
                .iter()
                .map(u16::to_string)
                .collect();
            let (status, media, _) = spec.ok;
            out.push_str(&format!(
                "| {method} | `{}` | {} | {status} `{media}` | {} | {} |\n",
                route.path,
                route.access.as_str(),
                if errors.is_empty() {
                    "—".to_owned()
                } else {
                    errors.join(", ")
                },
                spec.summary.replace('|', "\\|"),
            ));
        }
    }
    out
}
