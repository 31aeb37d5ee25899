//! `tally installs`, `tally dead-letters` and `tally delete`: the
//! operator's questions "which devices are not draining their queue?" and
//! "what was rejected, and why?", and a person's deletion, from the
//! command line, through the collector's admin API (`GET /v1/installs`,
//! `GET /v1/installs/{id}`, `GET /v1/dead-letters`, `POST /v1/deletions`).

use std::time::Duration;

use serde_json::Value;

use crate::client::{cell, rows_of, table, Collector};

/// The collector, and whether to print the API's JSON.
#[derive(Debug, clap::Args)]
pub struct AdminApi {
    #[command(flatten)]
    collector: Collector,
    /// Print the API's JSON instead of a table
    #[arg(long)]
    json: bool,
}

impl AdminApi {
    fn get(&self, path_and_query: &str) -> anyhow::Result<Value> {
        self.collector.get(path_and_query)
    }
}

/// Arguments of `tally installs`.
#[derive(Debug, clap::Args)]
pub struct InstallsArgs {
    /// One install's completeness (highest seq, missing ranges, drops)
    /// instead of the list of stalled ones
    install_id: Option<String>,
    /// List the installs whose latest health beacon shows an event pending
    /// longer than this: 30m, 24h, 7d, or seconds [default: 24h]
    #[arg(long, value_name = "DURATION", value_parser = crate::args::parse_duration)]
    stalled: Option<Duration>,
    /// Rows at most [default: 100, at most 1000]
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    api: AdminApi,
}

/// Arguments of `tally dead-letters`.
#[derive(Debug, clap::Args)]
pub struct DeadLettersArgs {
    /// Only messages rejected for this reason code (bad_timestamp, seq_zero, ...)
    #[arg(long)]
    reason: Option<String>,
    /// Only those received at or after this time, RFC 3339
    #[arg(long)]
    since: Option<String>,
    /// Only those received before this time, RFC 3339
    #[arg(long)]
    until: Option<String>,
    /// Rows per page [default: 100, at most 1000]
    #[arg(long)]
    limit: Option<usize>,
    /// Start after this row id (the `--before` a previous page printed)
    #[arg(long, value_name = "ID")]
    before: Option<i64>,
    /// Follow the pages to the last (with --json, one answer per line)
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    api: AdminApi,
}

/// Arguments of `tally delete`: one id, and optionally a source.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("person").required(true).multiple(false)))]
pub struct DeleteArgs {
    /// Delete a user: their events and those stitched to them
    #[arg(long, value_name = "ID", group = "person")]
    user_id: Option<String>,
    /// Delete a person who never identified, by anonymous id
    #[arg(long, value_name = "ID", group = "person")]
    anonymous_id: Option<String>,
    /// Delete a person who never identified, by install id
    #[arg(long, value_name = "ID", group = "person")]
    install_id: Option<String>,
    /// Only this source's data (a write key id); only its late events are
    /// refused [default: every source]
    #[arg(long, value_name = "KEY_ID")]
    source: Option<String>,
    #[command(flatten)]
    api: AdminApi,
}

/// `tally delete`: `POST /v1/deletions`, and what it removed.
pub fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let (name, id) = match (&args.user_id, &args.anonymous_id, &args.install_id) {
        (Some(id), _, _) => ("userId", id),
        (_, Some(id), _) => ("anonymousId", id),
        (_, _, Some(id)) => ("installId", id),
        _ => anyhow::bail!("one of --user-id, --anonymous-id, --install-id is needed"),
    };
    let mut body = serde_json::Map::new();
    body.insert(name.to_owned(), Value::String(id.clone()));
    if let Some(source) = &args.source {
        body.insert("source".to_owned(), Value::String(source.clone()));
    }
    let report = args
        .api
        .collector
        .call("/v1/deletions", Some(Value::Object(body)))?;
    if args.api.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let scope = match &args.source {
        Some(source) => format!("source {source}"),
        None => "every source".to_owned(),
    };
    println!(
        "{name} {id} ({scope}): {} events and {} dead letters deleted",
        cell(&report["deleted_events"]),
        cell(&report["deleted_dead_letters"])
    );
    for (key, what) in [
        ("aliased_user_ids", "aliased user ids (not deleted)"),
        ("linked_user_ids", "linked user ids (not deleted)"),
    ] {
        let ids: Vec<String> = report[key]
            .as_array()
            .map(|a| a.iter().map(cell).collect())
            .unwrap_or_default();
        if !ids.is_empty() {
            println!("{what}: {}", ids.join(", "));
        }
    }
    Ok(())
}

/// `name=value` pairs of a query string, form-encoded.
pub(crate) fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let encoded: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| {
            let value = value.as_deref()?;
            let value: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
            Some(format!("{name}={value}"))
        })
        .collect();
    if encoded.is_empty() {
        String::new()
    } else {
        format!("?{}", encoded.join("&"))
    }
}

pub fn installs(args: InstallsArgs) -> anyhow::Result<()> {
    if let Some(id) = &args.install_id {
        let id: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let answer = args.api.get(&format!("/v1/installs/{id}"))?;
        if args.api.json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        } else {
            print!("{}", install_report(&answer));
        }
        return Ok(());
    }
    let stalled = args.stalled.map(|d| d.as_secs_f64().to_string());
    let limit = args.limit.map(|n| n.to_string());
    let answer = args.api.get(&format!(
        "/v1/installs{}",
        query_string(&[("stalled", stalled), ("limit", limit)])
    ))?;
    if args.api.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    print!("{}", stalled_table(&answer));
    Ok(())
}

/// One install's completeness: its highest seq, the ranges never seen,
/// what the device reported dropped that the store does not hold, and
/// every seq it reported dropped (stored ones included: sent, the answer
/// lost, then dropped from a full log).
fn install_report(v: &Value) -> String {
    let ranges = |key: &str| -> String {
        let listed: Vec<String> = v[key]
            .as_array()
            .map(|ranges| {
                ranges
                    .iter()
                    .map(|r| format!("{}-{}", cell(&r[0]), cell(&r[1])))
                    .collect()
            })
            .unwrap_or_default();
        if listed.is_empty() {
            "none".to_owned()
        } else {
            listed.join(", ")
        }
    };
    format!(
        "max_seq         {}\nmissing         {}\ndropped         {}\ndropped_ranges  {}\n",
        cell(&v["max_seq"]),
        ranges("missing"),
        cell(&v["dropped"]),
        ranges("dropped_ranges"),
    )
}

/// The stalled installs, oldest queue first, and how many.
fn stalled_table(v: &Value) -> String {
    let mut rows = rows_of(
        &v["installs"],
        &[
            "install_id",
            "pending",
            "pending_bytes",
            "oldest_pending_age_s",
            "consecutive_failures",
            "persistence_errors",
        ],
    );
    // Ages in whole hours read better than seconds with decimals.
    for (row, b) in rows
        .iter_mut()
        .zip(v["installs"].as_array().into_iter().flatten())
    {
        row[3] = format!(
            "{:.1}",
            b["oldest_pending_age_s"].as_f64().unwrap_or(0.0) / 3_600.0
        );
        row.push(tally_proto::format_timestamp(b["at"].as_i64().unwrap_or(0)));
    }
    let mut out = table(
        &[
            "install",
            "pending",
            "bytes",
            "oldest_h",
            "failures",
            "disk_errors",
            "beacon_at",
        ],
        &rows,
    );
    let n = rows.len();
    out.push_str(&format!(
        "\n{n} install{} with an event pending longer than {} s\n",
        if n == 1 { "" } else { "s" },
        v["stalled_s"].as_f64().unwrap_or(0.0)
    ));
    out
}

pub fn dead_letters(args: DeadLettersArgs) -> anyhow::Result<()> {
    let mut before = args.before;
    let mut printed = 0usize;
    let mut first_page = true;
    loop {
        let answer = args.api.get(&format!(
            "/v1/dead-letters{}",
            query_string(&[
                ("reason", args.reason.clone()),
                ("since", args.since.clone()),
                ("until", args.until.clone()),
                ("limit", args.limit.map(|n| n.to_string())),
                ("before_id", before.map(|id| id.to_string())),
            ])
        ))?;
        let next = answer["next_before_id"].as_i64();
        if args.api.json {
            // One answer per line when paging through all of them.
            if args.all {
                println!("{answer}");
            } else {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            }
        } else {
            let rows = rows_of(
                &answer["dead_letters"],
                &["id", "received_at", "reason", "message_id", "detail"],
            );
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .zip(answer["dead_letters"].as_array().into_iter().flatten())
                .map(|(mut row, d)| {
                    row[1] = tally_proto::format_timestamp(d["received_at"].as_i64().unwrap_or(0));
                    row
                })
                .collect();
            printed += rows.len();
            if first_page || !rows.is_empty() {
                print!(
                    "{}",
                    table(
                        &["id", "received_at", "reason", "message_id", "detail"],
                        &rows
                    )
                );
            }
            if next.is_none() || !args.all {
                let totals = &answer["totals"];
                // What the store did not keep is said on stderr: stdout stays the table.
                eprintln!(
                    "{printed} shown{}; the store keeps {} ({} bytes), {} not kept, {} truncated",
                    next.map(|n| format!(", more with --before {n}"))
                        .unwrap_or_default(),
                    cell(&totals["kept"]),
                    cell(&totals["bytes"]),
                    cell(&totals["not_kept"]),
                    cell(&totals["truncated"]),
                );
            }
        }
        first_page = false;
        match next {
            Some(n) if args.all => before = Some(n),
            _ => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_query_string_encodes_what_is_given_and_skips_the_rest() {
        assert_eq!(query_string(&[("a", None)]), "");
        assert_eq!(
            query_string(&[
                ("since", Some("2026-12-01T00:00:00+01:00".to_owned())),
                ("reason", None),
                ("limit", Some("5".to_owned())),
            ]),
            "?since=2026-12-01T00%3A00%3A00%2B01%3A00&limit=5"
        );
    }

    #[test]
    fn an_install_report_names_its_missing_and_dropped_ranges() {
        let v = json!({"max_seq": 9, "missing": [[2, 3], [7, 7]], "dropped": 1,
                       "dropped_ranges": [[4, 5]]});
        assert_eq!(
            install_report(&v),
            "max_seq         9\nmissing         2-3, 7-7\ndropped         1\n\
             dropped_ranges  4-5\n"
        );
        let whole = json!({"max_seq": 4, "missing": [], "dropped": 0, "dropped_ranges": []});
        assert_eq!(
            install_report(&whole),
            "max_seq         4\nmissing         none\ndropped         0\ndropped_ranges  none\n"
        );
    }
}
