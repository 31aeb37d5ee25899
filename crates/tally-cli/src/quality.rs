//! `tally quality`: "what does the tracking plan find in our events?",
//! per event, rule and path, with the newest examples, through the
//! collector's `GET /v1/quality` (read token): the fleet's counts, kept
//! by the store.

use serde_json::Value;

use crate::client::{cell, table, Collector};
use crate::operate::query_string;

/// Arguments of `tally quality`.
#[derive(Debug, clap::Args)]
pub struct QualityArgs {
    /// Only this source's events (write key id)
    #[arg(long)]
    source: Option<String>,
    /// Only events of this name
    #[arg(long)]
    event: Option<String>,
    /// Only findings received at or after this time, RFC 3339 (counts are
    /// kept by the hour)
    #[arg(long)]
    from: Option<String>,
    /// Only findings received before this time, RFC 3339
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    collector: Collector,
    /// Print the API's JSON instead of tables
    #[arg(long)]
    json: bool,
}

pub fn run(args: QualityArgs) -> anyhow::Result<()> {
    let answer = args.collector.get(&format!(
        "/v1/quality{}",
        query_string(&[
            ("from", args.from.clone()),
            ("to", args.to.clone()),
            ("source", args.source.clone()),
            ("event", args.event.clone()),
        ])
    ))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", report(&answer));
    }
    Ok(())
}

/// The findings, then the unplanned events, then the newest examples.
fn report(v: &Value) -> String {
    let findings: Vec<&Value> = v["findings"].as_array().into_iter().flatten().collect();
    let unplanned: Vec<&Value> = v["unplanned"].as_array().into_iter().flatten().collect();
    let seen = |r: &Value| tally_proto::format_timestamp(r["last_seen"].as_i64().unwrap_or(0));
    let rows: Vec<Vec<String>> = findings
        .iter()
        .map(|r| {
            vec![
                cell(&r["event"]),
                cell(&r["version"]),
                cell(&r["finding"]),
                cell(&r["rule"]),
                cell(&r["path"]),
                cell(&r["flagged"]),
                cell(&r["rejected"]),
                seen(r),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "event",
            "version",
            "finding",
            "rule",
            "path",
            "flagged",
            "rejected",
            "last_seen",
        ],
        &rows,
    );
    let rows: Vec<Vec<String>> = unplanned
        .iter()
        .map(|r| vec![cell(&r["event"]), cell(&r["flagged"]), seen(r)])
        .collect();
    out.push_str("\nunplanned events\n");
    out.push_str(&table(&["event", "count", "last_seen"], &rows));
    let rows: Vec<Vec<String>> = findings
        .iter()
        .flat_map(|r| r["examples"].as_array().into_iter().flatten())
        .map(|e| {
            vec![
                tally_proto::format_timestamp(e["received_at"].as_i64().unwrap_or(0)),
                cell(&e["source"]),
                cell(&e["message_id"]),
                if e["rejected"].as_bool() == Some(true) {
                    "rejected"
                } else {
                    "flagged"
                }
                .to_owned(),
                cell(&e["detail"]),
            ]
        })
        .collect();
    out.push_str("\nnewest examples\n");
    out.push_str(&table(
        &["received_at", "source", "message_id", "outcome", "detail"],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_report_lists_findings_unplanned_events_and_examples() {
        let v = json!({
            "findings": [{
                "event": "Item Added", "version": 1, "finding": "plan_violation",
                "rule": "required", "path": "/sku", "flagged": 2, "rejected": 1,
                "first_seen": 0, "last_seen": 0,
                "examples": [{"message_id": "m1", "source": "wk_a", "received_at": 0,
                    "detail": "Item Added v1: required at /sku", "rejected": true}]
            }],
            "unplanned": [{"event": "Mystery", "flagged": 4, "last_seen": 0}]
        });
        let out = report(&v);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[2],
            "Item Added        1  plan_violation  required  /sku        2         1  \
             1970-01-01T00:00:00.000Z",
            "{out}"
        );
        assert!(out.contains("Mystery"), "{out}");
        assert!(out.contains("m1") && out.contains("rejected"), "{out}");
    }
}
