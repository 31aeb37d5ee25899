//! `tally audit`: the collector's audit log (`GET /v1/audit`, admin
//! token), newest first, as a table or the API's JSON.

use serde_json::Value;

use crate::client::{cell, table, Collector};

/// Arguments of `tally audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    admin: Collector,
    /// Print the API's JSON instead of a table
    #[arg(long)]
    json: bool,
    /// Rows at or after this time, RFC 3339
    #[arg(long)]
    from: Option<String>,
    /// Rows before this time, RFC 3339
    #[arg(long)]
    to: Option<String>,
    /// Rows of this key (at_…, rt_…)
    #[arg(long)]
    key_id: Option<String>,
    /// Rows with this outcome
    #[arg(long, value_parser = ["ok", "failed", "denied"])]
    outcome: Option<String>,
    /// Rows of this action ("GET /v1/export")
    #[arg(long)]
    action: Option<String>,
    /// Rows older than this id (the next page after a full one)
    #[arg(long)]
    before_id: Option<i64>,
    /// Rows at most (1 to 1000) [default: 100]
    #[arg(long)]
    limit: Option<u32>,
}

pub fn run(args: AuditArgs) -> anyhow::Result<()> {
    let mut query = Vec::new();
    let mut add = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            let v: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
            query.push(format!("{name}={v}"));
        }
    };
    add("from", args.from.clone());
    add("to", args.to.clone());
    add("key_id", args.key_id.clone());
    add("outcome", args.outcome.clone());
    add("action", args.action.clone());
    add("before_id", args.before_id.map(|n| n.to_string()));
    add("limit", args.limit.map(|n| n.to_string()));
    let answer = args
        .admin
        .call(&format!("/v1/audit?{}", query.join("&")), None)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    print!("{}", entries_table(&answer));
    if let Some(next) = answer["next_before_id"].as_i64() {
        eprintln!("more rows: --before-id {next}");
    }
    Ok(())
}

/// One row per entry; `params` last, as JSON.
fn entries_table(answer: &Value) -> String {
    let keys = [
        "id", "at", "key_id", "role", "action", "client", "status", "outcome", "count", "params",
    ];
    let rows: Vec<Vec<String>> = answer["entries"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|e| keys.iter().map(|k| cell(&e[*k])).collect())
        .collect();
    table(
        &[
            "id", "at", "key", "role", "action", "client", "status", "outcome", "count", "params",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_are_a_table_with_params_last() {
        let answer = json!({"entries": [
            {"id": 7, "at": "2026-12-07T10:00:00.000Z", "key_id": "at_0123456789abcdef", "role": "admin",
             "action": "POST /v1/deletions", "client": "127.0.0.1", "status": 202, "outcome": "ok",
             "count": 1, "params": {"userId": "u-1"}},
            {"id": 6, "at": "2026-12-07T09:59:55.000Z", "key_id": null, "role": null,
             "action": "GET /v1/stats", "client": "192.0.2.7", "status": 401, "outcome": "denied",
             "count": 10000, "params": {}}
        ], "next_before_id": null});
        assert_eq!(
            entries_table(&answer),
            "id  at                        key                  role   action              client     status  outcome  count  params\n\
             --  ------------------------  -------------------  -----  ------------------  ---------  ------  -------  -----  ----------------\n\
             7   2026-12-07T10:00:00.000Z  at_0123456789abcdef  admin  POST /v1/deletions  127.0.0.1     202  ok           1  {\"userId\":\"u-1\"}\n\
             6   2026-12-07T09:59:55.000Z  -                    -      GET /v1/stats       192.0.2.7     401  denied   10000  {}\n"
        );
    }
}
