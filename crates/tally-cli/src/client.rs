//! What the commands that call a collector's HTTP API share: the
//! collector and admin-token flags, one request of a JSON answer with a
//! token (a failure says the status and the collector's own message), and
//! plain-text tables of its rows.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;

/// The collector and the admin token, as every admin command takes them
/// (`--endpoint`, `--admin-token`, or `TALLY_ENDPOINT`,
/// `TALLY_ADMIN_TOKEN`).
#[derive(Debug, clap::Args)]
pub struct Collector {
    /// Base URL of the collector
    #[arg(
        long,
        global = true,
        env = "TALLY_ENDPOINT",
        value_name = "URL",
        default_value = crate::args::DEFAULT_ENDPOINT
    )]
    pub endpoint: String,
    /// Admin token of the collector
    #[arg(
        long,
        global = true,
        env = "TALLY_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
}

impl Collector {
    /// The admin token, or an error that says how to give it.
    pub fn token(&self) -> anyhow::Result<&str> {
        self.admin_token
            .as_deref()
            .context("the admin token is needed: --admin-token or TALLY_ADMIN_TOKEN")
    }

    /// `path` (with its query) on the collector.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint.trim_end_matches('/'))
    }

    /// `GET path` with the admin token (see [`request`]).
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        request(&self.url(path), self.token()?, None)
    }

    /// `GET path`, or `POST` of the JSON `body`, with the admin token.
    pub fn call(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        request(&self.url(path), self.token()?, body)
    }
}

/// `GET url`, or `POST` of the JSON `body`, with `Authorization: Bearer
/// token`: the JSON answer. An answer other than 2xx is an error carrying
/// the status and the collector's own message.
pub fn request(url: &str, token: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let auth = format!("Bearer {token}");
    let response = match body {
        Some(body) => agent
            .post(url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(body.to_string()),
        None => agent.get(url).header("authorization", &auth).call(),
    };
    let mut response = response.with_context(|| format!("cannot reach the collector at {url}"))?;
    let status = response.status();
    let text = response.body_mut().read_to_string()?;
    let body: Value = serde_json::from_str(&text)
        .with_context(|| format!("the collector answered {status} with a body that is not JSON"))?;
    if !status.is_success() {
        // The error body is `{"code", "message"}` (docs/http-api.md).
        let message = body["message"].as_str().unwrap_or("no message");
        bail!("the collector answered {status}: {message}");
    }
    Ok(body)
}

/// A cell: strings as themselves, numbers compact, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.3}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// `rows` of `keys` under `headers`, columns padded; numbers right-aligned.
///
/// Kept by hand rather than a table crate: it is a screenful of code, its
/// plain aligned columns (no box drawing) are what scripts cut and the
/// docs show, and the table crates' rules span the padding too.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                let numeric = i > 0 && c.parse::<f64>().is_ok();
                if numeric {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// The `keys` of each object of the array `list`, as cells.
pub fn rows_of(list: &Value, keys: &[&str]) -> Vec<Vec<String>> {
    list.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| keys.iter().map(|k| cell(&r[*k])).collect())
                .collect()
        })
        .unwrap_or_default()
}
