//! What the commands that call a collector's HTTP API share: one GET of
//! a JSON answer with a token (a failure says the status and the
//! collector's own message), and plain-text tables of its rows.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;

/// `GET url` with `Authorization: Bearer token`, the JSON answer; an
/// answer other than 2xx is an error carrying the collector's message.
pub fn get(url: &str, token: &str) -> anyhow::Result<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .header("authorization", format!("Bearer {token}"))
        .call()
        .with_context(|| format!("cannot reach the collector at {url}"))?;
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
