//! The dashboard: one public HTML page at `/` and its scripts, styles and
//! icon under `/assets/`, all embedded in the binary (no build step, nothing
//! fetched at run time).
//!
//! # Security
//!
//! The page holds no data: it is the same for everyone and is served
//! without authentication. Its script asks for the admin token, keeps it in
//! `sessionStorage` (gone when the tab closes) and sends it as
//! `Authorization: Bearer` on every data call, so every number it shows
//! comes from an admin-protected endpoint (`/v1/stats`, `/v1/query/*`,
//! `/v1/quality`, `/v1/health/pipeline`, `/v1/alerts`, `/v1/deletions`). Every answer here carries a
//! Content-Security-Policy that allows scripts, styles, images and
//! requests from this origin only and forbids inline script and style
//! attributes, so an injected string can never run; the page builds its DOM
//! with `textContent`, never `innerHTML`.
//!
//! # Caching
//!
//! Asset names carry a hash of their content (`app.1f2e3d4c5b6a7980.js`),
//! computed at compile time, so an asset is cached for a year as immutable
//! and a new binary's page names new URLs. The page itself is `no-cache`
//! with an `ETag`: browsers revalidate it and get a 304 while the binary is
//! the same.
//!
//! | file | holds |
//! |---|---|
//! | `index.html` | the layout: login form, tabs, one section per view |
//! | `charts.js` | SVG line and bar charts, tooltips, number formats |
//! | `quality.js` | the data-quality view: the tracking plan's findings, unplanned events, examples |
//! | `app.js` | login, the API client, the views |
//! | `style.css` | layout and colours (light and dark) |
//! | `icon.svg` | the favicon |

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// What every dashboard answer allows: resources from this origin only, no
/// inline script or style attribute, no plugins, no framing, no form posted
/// anywhere (the login form is handled by the script).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Assets are content-addressed (see the module doc): a year, the longest
/// lifetime RFC 9111 caches are expected to honour, and never revalidated.
const ASSET_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// One embedded file.
struct Asset {
    /// Name as written in `index.html` between `{{` and `}}`.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 5] = [
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("app.js"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("charts.js"),
    },
    Asset {
        name: "quality.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("quality.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("style.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("icon.svg"),
    },
];

const INDEX_TEMPLATE: &str = include_str!("index.html");

/// FNV-1a, 64 bits: a fingerprint for cache busting, not a security
/// property, so the simplest hash that a `const fn` can compute will do.
const fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `app.js` → `app.<hash>.js`.
fn hashed_name(asset: &Asset) -> String {
    let hash = fnv1a64(asset.body);
    match asset.name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash:016x}.{ext}"),
        None => format!("{}.{hash:016x}", asset.name),
    }
}

/// The served names of the assets, in [`ASSETS`] order.
static HASHED_NAMES: LazyLock<Vec<String>> =
    LazyLock::new(|| ASSETS.iter().map(hashed_name).collect());

/// The page with every `{{name}}` replaced by its asset's URL, and its ETag.
static INDEX: LazyLock<(String, String)> = LazyLock::new(|| {
    let mut html = INDEX_TEMPLATE.to_owned();
    for (asset, hashed) in ASSETS.iter().zip(HASHED_NAMES.iter()) {
        html = html.replace(
            &format!("{{{{{}}}}}", asset.name),
            &format!("/assets/{hashed}"),
        );
    }
    let etag = format!("\"{:016x}\"", fnv1a64(html.as_bytes()));
    (html, etag)
});

/// Headers on every dashboard answer.
fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /`: the page (public; see the module doc).
pub async fn index(request_headers: HeaderMap) -> Response {
    let (html, etag) = &*INDEX;
    let fresh = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let etag = HeaderValue::from_str(etag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    let headers = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag),
    ];
    let response = if fresh {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (
            headers,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            html.clone(),
        )
            .into_response()
    };
    secure(response)
}

/// `GET /assets/{file}`: an embedded asset by its hashed name.
pub async fn asset(Path(file): Path<String>) -> Response {
    let found = ASSETS
        .iter()
        .zip(HASHED_NAMES.iter())
        .find(|(_, hashed)| **hashed == file);
    let response = match found {
        Some((asset, _)) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, ASSET_CACHE_CONTROL),
            ],
            asset.body,
        )
            .into_response(),
        None => ApiError::NotFound("no such asset").into_response(),
    };
    secure(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::http::Request;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt as _;

    fn router() -> Router {
        Router::new()
            .route("/", get(index))
            .route("/assets/{file}", get(asset))
    }

    async fn call(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn text(response: Response) -> String {
        String::from_utf8(
            to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_page_names_every_asset_by_its_hashed_url_and_each_is_served() {
        let page = call("/", None).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(
            page.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        let html = text(page).await;
        assert!(!html.contains("{{"), "a placeholder was left: {html}");
        for (asset, hashed) in ASSETS.iter().zip(HASHED_NAMES.iter()) {
            let url = format!("/assets/{hashed}");
            assert!(html.contains(&url), "{url} is not in the page");
            let response = call(&url, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{url}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(
                response.headers()[header::CACHE_CONTROL],
                ASSET_CACHE_CONTROL
            );
            assert_eq!(
                response.headers()[header::X_CONTENT_TYPE_OPTIONS],
                "nosniff"
            );
            assert_eq!(
                to_bytes(response.into_body(), 1 << 20).await.unwrap(),
                asset.body
            );
        }
    }

    #[tokio::test]
    async fn an_unhashed_or_unknown_asset_name_is_404() {
        for path in [
            "/assets/app.js",
            "/assets/app.0000000000000000.js",
            "/assets/..%2Fmod.rs",
        ] {
            let response = call(path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(response
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY));
        }
    }

    #[tokio::test]
    async fn the_page_is_revalidated_with_its_etag() {
        let first = call("/", None).await;
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = call("/", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(text(again).await.is_empty());
        let stale = call("/", Some("\"0000000000000000\"")).await;
        assert_eq!(stale.status(), StatusCode::OK);
    }

    /// The CSP forbids inline script and style attributes; the page must not
    /// need them, or the browser would silently refuse them.
    #[test]
    fn the_page_has_no_inline_script_style_or_handler() {
        let html = INDEX_TEMPLATE.to_ascii_lowercase();
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            assert!(tag.contains(" src="), "inline script: {tag}");
        }
        assert!(!html.contains("<style"), "inline <style> element");
        assert!(!html.contains(" style="), "inline style attribute");
        assert!(!html.contains("javascript:"), "javascript: URL");
        let handler = html
            .split(|c: char| c.is_whitespace())
            .find(|w| w.starts_with("on") && w.contains('='));
        assert_eq!(handler, None, "inline event handler");
        for script in ["app.js", "charts.js", "quality.js"] {
            let body = ASSETS.iter().find(|a| a.name == script).unwrap().body;
            let source = std::str::from_utf8(body).unwrap();
            for forbidden in [
                "innerHTML",
                "eval(",
                "new Function",
                "setAttribute(\"style\"",
            ] {
                assert!(!source.contains(forbidden), "{script} uses {forbidden}");
            }
        }
    }
}
