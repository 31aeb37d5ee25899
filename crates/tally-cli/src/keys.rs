//! `tally keys create|list|rotate|revoke`: the collector's keys, managed
//! through its admin API (`/v1/keys`) with the admin token. A new secret
//! is printed once, on stdout, and never again: the collector keeps only
//! its digest.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

/// The collector and the admin token every admin command takes.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
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
    #[arg(long, global = true, env = "TALLY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Print the API's JSON instead of a table
    #[arg(long, global = true)]
    pub json: bool,
}

impl AdminArgs {
    fn token(&self) -> anyhow::Result<&str> {
        self.admin_token
            .as_deref()
            .context("the admin token is needed: --admin-token or TALLY_ADMIN_TOKEN")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint.trim_end_matches('/'))
    }

    /// Calls `path` with the admin token; a JSON `body` makes it a POST.
    pub fn call(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = self.url(path);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let auth = format!("Bearer {}", self.token()?);
        let response = match body {
            Some(body) => agent
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(body.to_string()),
            None => agent.get(&url).header("authorization", &auth).call(),
        };
        let mut response =
            response.with_context(|| format!("cannot reach the collector at {url}"))?;
        let status = response.status();
        let text = response.body_mut().read_to_string()?;
        let body: Value = serde_json::from_str(&text).with_context(|| {
            format!("the collector answered {status} with a body that is not JSON")
        })?;
        if !status.is_success() {
            let message = body["message"].as_str().unwrap_or("no message");
            bail!("the collector answered {status}: {message}");
        }
        Ok(body)
    }
}

/// Arguments of `tally keys`.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    what: What,
    #[command(flatten)]
    admin: AdminArgs,
}

/// A kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    /// Sends events (ingest only); one per app or source.
    Write,
    /// Product queries, totals, export, the dashboard.
    Read,
    /// Everything, keys included.
    Admin,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Write => "write",
            Kind::Read => "read",
            Kind::Admin => "admin",
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Make a key; its secret is printed once, on stdout.
    Create {
        /// What the key may do
        #[arg(long, value_enum)]
        kind: Kind,
        /// A label for people (the app, the team)
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List the keys (never their secrets).
    List,
    /// Give a key a new secret (printed once); the old one stays valid
    /// for the grace period.
    Rotate {
        /// The key's id (wk_…, rt_…, at_…)
        id: String,
        /// How long the old secret stays valid: 90s, 10m, 24h, 7d; 0 ends
        /// it now [default: 24h]
        #[arg(long, value_parser = crate::args::parse_duration)]
        grace: Option<Duration>,
    },
    /// Refuse a key from now on, on every collector sharing the store.
    Revoke {
        /// The key's id (wk_…, rt_…, at_…)
        id: String,
    },
}

pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    let admin = &args.admin;
    let answer = match &args.what {
        What::Create { kind, name } => admin.call(
            "/v1/keys",
            Some(json!({ "kind": kind.as_str(), "name": name })),
        )?,
        What::List => admin.call("/v1/keys", None)?,
        What::Rotate { id, grace } => {
            let mut body = json!({});
            if let Some(grace) = grace {
                body["grace_s"] = json!(crate::args::whole_seconds(*grace, "--grace")?);
            }
            admin.call(&format!("/v1/keys/{}/rotate", path_segment(id)), Some(body))?
        }
        What::Revoke { id } => admin.call(
            &format!("/v1/keys/{}/revoke", path_segment(id)),
            Some(json!({})),
        )?,
    };
    if admin.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    match &args.what {
        What::List => print!("{}", list_table(&answer)),
        What::Create { .. } | What::Rotate { .. } => {
            // The secret alone on stdout (for a pipe into a secret store);
            // what it is, on stderr.
            let secret = answer["secret"]
                .as_str()
                .context("the collector's answer has no secret")?;
            println!("{secret}");
            eprintln!(
                "key {} ({}): this secret is shown once; store it now",
                text(&answer["id"]),
                text(&answer["kind"])
            );
            if let Some(until) = answer["previous_expires_at"].as_str() {
                eprintln!("the previous secret stays valid until {until}");
            }
        }
        What::Revoke { .. } => println!(
            "revoked {} at {}",
            text(&answer["id"]),
            text(&answer["revoked_at"])
        ),
    }
    Ok(())
}

/// An id as one path segment (ids are `[a-z0-9_]`, but a typo must not
/// change the path).
fn path_segment(id: &str) -> String {
    form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The key list as a table: one row per key, its live secrets counted.
fn list_table(answer: &Value) -> String {
    let headers = ["id", "kind", "origin", "state", "secrets", "name"];
    let rows: Vec<[String; 6]> = answer["keys"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|k| {
            let state = match k["revoked_at"].as_str() {
                Some(at) => format!("revoked {at}"),
                None => "active".to_owned(),
            };
            let secrets = k["secrets"].as_array().map_or(0, Vec::len);
            [
                text(&k["id"]),
                text(&k["kind"]),
                text(&k["origin"]),
                state,
                secrets.to_string(),
                text(&k["name"]),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(&headers.map(str::to_owned));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_a_table_without_secrets() {
        let answer = json!({"keys": [
            {"id": "wk_0123456789abcdef", "kind": "write", "origin": "config", "name": "configured write key",
             "created_at": "2026-12-07T10:00:00.000Z", "revoked_at": null,
             "secrets": [{"created_at": "2026-12-07T10:00:00.000Z", "expires_at": null, "configured": true}]},
            {"id": "at_fedcba9876543210", "kind": "admin", "origin": "api", "name": "ops",
             "created_at": "2026-12-07T10:00:00.000Z", "revoked_at": "2026-12-07T11:00:00.000Z",
             "secrets": []}
        ]});
        assert_eq!(
            list_table(&answer),
            "id                   kind   origin  state                             secrets  name\n\
             wk_0123456789abcdef  write  config  active                            1        configured write key\n\
             at_fedcba9876543210  admin  api     revoked 2026-12-07T11:00:00.000Z  0        ops\n"
        );
        assert_eq!(path_segment("wk_1/../x"), "wk_1%2F..%2Fx");
    }
}
