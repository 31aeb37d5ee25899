//! `tally keys create|list|rotate|revoke`: the collector's keys, managed
//! through its admin API (`/v1/keys`) with the admin token. A new secret
//! is printed once, on stdout, and never again: the collector keeps only
//! its digest.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::client::{cell, table, Collector};

/// Arguments of `tally keys`.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    what: What,
    #[command(flatten)]
    admin: Collector,
    /// Print the API's JSON instead of a table
    #[arg(long, global = true)]
    json: bool,
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
    if args.json {
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
                cell(&answer["id"]),
                cell(&answer["kind"])
            );
            if let Some(until) = answer["previous_expires_at"].as_str() {
                eprintln!("the previous secret stays valid until {until}");
            }
        }
        What::Revoke { .. } => println!(
            "revoked {} at {}",
            cell(&answer["id"]),
            cell(&answer["revoked_at"])
        ),
    }
    Ok(())
}

/// An id as one path segment (ids are `[a-z0-9_]`, but a typo must not
/// change the path).
fn path_segment(id: &str) -> String {
    form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// The key list as a table: one row per key, its live secrets counted.
fn list_table(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["keys"]
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
            vec![
                cell(&k["id"]),
                cell(&k["kind"]),
                cell(&k["origin"]),
                state,
                secrets.to_string(),
                cell(&k["name"]),
            ]
        })
        .collect();
    table(&["id", "kind", "origin", "state", "secrets", "name"], &rows)
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
             -------------------  -----  ------  --------------------------------  -------  --------------------\n\
             wk_0123456789abcdef  write  config  active                                  1  configured write key\n\
             at_fedcba9876543210  admin  api     revoked 2026-12-07T11:00:00.000Z        0  ops\n"
        );
        assert_eq!(path_segment("wk_1/../x"), "wk_1%2F..%2Fx");
    }
}
