//! `tally query ...`: the collector's product query API from the command
//! line. Each subcommand calls one `GET /v1/query/...` endpoint with the
//! admin token and prints a table, or the API's JSON with `--json`.

use std::time::Duration;

use serde_json::Value;

use crate::client::{cell, rows_of, table, Collector};

/// Arguments of `tally query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(subcommand)]
    what: What,
    #[command(flatten)]
    collector: Collector,
    /// Print the API's JSON instead of a table
    #[arg(long, global = true)]
    json: bool,
    /// Start of the window, RFC 3339, inclusive [default: to - 30 days]
    #[arg(long, global = true)]
    from: Option<String>,
    /// End of the window, RFC 3339, exclusive [default: now]
    #[arg(long, global = true)]
    to: Option<String>,
    /// Only the events this source sent (a write key id, wk_…) [default: every source]
    #[arg(long, global = true)]
    source: Option<String>,
}

/// Buckets of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Interval {
    /// One bucket per hour.
    Hour,
    /// One bucket per day.
    Day,
}

impl Interval {
    fn as_str(self) -> &'static str {
        match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
        }
    }
}

/// The span over which a person counts as active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Window {
    /// Daily active people.
    Day,
    /// Weekly: the 7 days ending on each day.
    Week,
    /// Monthly: the 30 days ending on each day.
    Month,
}

impl Window {
    fn as_str(self) -> &'static str {
        match self {
            Window::Day => "day",
            Window::Week => "week",
            Window::Month => "month",
        }
    }
}

/// Time zone of buckets and cohort days.
#[derive(Debug, clap::Args)]
struct Zone {
    /// IANA time zone (Europe/Paris) [default: UTC]
    #[arg(long)]
    tz: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Count and distinct people of one event (or all) per hour or day.
    Events {
        /// The event name [default: all product events]
        #[arg(long)]
        event: Option<String>,
        /// Buckets [default: day]
        #[arg(long, value_enum)]
        interval: Option<Interval>,
        #[command(flatten)]
        zone: Zone,
    },
    /// Daily, weekly or monthly active people, one row per day.
    Active {
        /// Active over a day, a week or a month [default: day]
        #[arg(long, value_enum)]
        window: Option<Window>,
        #[command(flatten)]
        zone: Zone,
    },
    /// Sessions per bucket and their median length.
    Sessions {
        /// Buckets [default: day]
        #[arg(long, value_enum)]
        interval: Option<Interval>,
        #[command(flatten)]
        zone: Zone,
    },
    /// People reaching each step of an ordered funnel.
    Funnel {
        /// The steps' event names, in order (2 to 10)
        #[arg(required = true, num_args = 2..=10)]
        steps: Vec<String>,
        /// Conversion window from step 1: 30m, 24h, 7d, or seconds
        /// (--window-s is the same flag) [default: 24h]
        #[arg(
            long,
            alias = "window-s",
            value_name = "DURATION",
            value_parser = crate::args::parse_duration
        )]
        window: Option<Duration>,
    },
    /// Cohorts by first-seen day and their returns on the days after.
    Retention {
        /// Days after the first (0..=N) [default: 7]
        #[arg(long)]
        days: Option<u32>,
        /// Cohorts by first use of this event [default: any event]
        #[arg(long)]
        event: Option<String>,
        #[command(flatten)]
        zone: Zone,
    },
    /// Count and people of one event by a property or context field.
    Breakdown {
        /// The event name
        #[arg(long)]
        event: String,
        /// Dotted path: properties.plan, context.app.version, context.os.name
        #[arg(long)]
        by: String,
        /// Rows before the rest is folded [default: 20]
        #[arg(long)]
        limit: Option<u32>,
    },
    /// The most frequent events.
    TopEvents {
        /// Rows [default: 20]
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// The query string: `name=value` pairs, form-encoded.
#[derive(Default)]
struct QueryString(Vec<String>);

impl QueryString {
    fn add(&mut self, name: &str, value: Option<impl ToString>) {
        if let Some(v) = value {
            let encoded: String =
                form_urlencoded::byte_serialize(v.to_string().as_bytes()).collect();
            self.0.push(format!("{name}={encoded}"));
        }
    }
}

pub fn run(args: QueryArgs) -> anyhow::Result<()> {
    args.collector.token()?;
    let mut q = QueryString::default();
    q.add("from", args.from.as_ref());
    q.add("to", args.to.as_ref());
    q.add("source", args.source.as_ref());
    let path = match &args.what {
        What::Events {
            event,
            interval,
            zone,
        } => {
            q.add("event", event.as_ref());
            q.add("interval", interval.map(Interval::as_str));
            q.add("tz", zone.tz.as_ref());
            "events"
        }
        What::Active { window, zone } => {
            q.add("window", window.map(Window::as_str));
            q.add("tz", zone.tz.as_ref());
            "active"
        }
        What::Sessions { interval, zone } => {
            q.add("interval", interval.map(Interval::as_str));
            q.add("tz", zone.tz.as_ref());
            "sessions"
        }
        What::Funnel { steps, window } => {
            // Each name encoded on its own: a comma inside one is %2C.
            let steps: Vec<String> = steps
                .iter()
                .map(|s| form_urlencoded::byte_serialize(s.as_bytes()).collect())
                .collect();
            q.0.push(format!("steps={}", steps.join(",")));
            let window_s = window
                .map(|w| crate::args::whole_seconds(w, "--window"))
                .transpose()?;
            q.add("window_s", window_s);
            "funnel"
        }
        What::Retention { days, event, zone } => {
            q.add("days", *days);
            q.add("event", event.as_ref());
            q.add("tz", zone.tz.as_ref());
            "retention"
        }
        What::Breakdown { event, by, limit } => {
            q.add("event", Some(event));
            q.add("by", Some(by));
            q.add("limit", *limit);
            "breakdown"
        }
        What::TopEvents { limit } => {
            q.add("limit", *limit);
            "top-events"
        }
    };
    let answer = args
        .collector
        .get(&format!("/v1/query/{path}?{}", q.0.join("&")))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let (table, note) = render(&args.what, &answer);
    print!("{table}");
    // What was left out is said on stderr: stdout stays the table.
    eprint!("{note}");
    Ok(())
}

/// A series without the empty buckets before its first non-zero one and
/// after its last (an hourly series over the default 30 days is 720 rows,
/// most of them zero), and a line saying how many were left out; the
/// buckets between stay, zeros included, so gaps remain visible. `--json`
/// prints every bucket.
fn without_empty_ends(rows: Vec<Vec<String>>, column: usize) -> (Vec<Vec<String>>, String) {
    let empty = |row: &Vec<String>| row.get(column).is_none_or(|c| c == "0");
    let total = rows.len();
    let first = rows.iter().position(|r| !empty(r)).unwrap_or(total);
    let last = rows
        .iter()
        .rposition(|r| !empty(r))
        .map_or(first, |i| i + 1);
    let (before, after) = (first, total - last);
    let kept = rows.into_iter().skip(first).take(last - first).collect();
    let note = if before + after == 0 {
        String::new()
    } else {
        format!(
            "({before} empty buckets before and {after} after not shown; --json has all {total})\n"
        )
    };
    (kept, note)
}

/// The table of an answer, and a note of what it leaves out (for stderr).
fn render(what: &What, v: &Value) -> (String, String) {
    let mut note = String::new();
    let mut trimmed = |rows| {
        let (rows, left_out) = without_empty_ends(rows, 1);
        note.push_str(&left_out);
        rows
    };
    let table = match what {
        What::Events { .. } => {
            let mut rows = trimmed(rows_of(&v["series"], &["bucket", "count", "people"]));
            rows.push(vec![
                "total".to_owned(),
                cell(&v["total"]["count"]),
                cell(&v["total"]["people"]),
            ]);
            table(&["bucket", "count", "people"], &rows)
        }
        What::Active { .. } => table(
            &["day", "people"],
            &rows_of(&v["series"], &["bucket", "people"]),
        ),
        What::Sessions { .. } => {
            let rows = trimmed(rows_of(&v["series"], &["bucket", "sessions"]));
            let mut out = table(&["bucket", "sessions"], &rows);
            out.push_str(&format!(
                "\n{} sessions, median length {} s\n",
                cell(&v["sessions"]),
                cell(&v["median_length_s"])
            ));
            out
        }
        What::Funnel { .. } => table(
            &["step", "people", "conversion"],
            &rows_of(&v["steps"], &["event", "people", "conversion"]),
        ),
        What::Retention { .. } => {
            let days = v["days"].as_u64().unwrap_or(0);
            let mut headers = vec!["cohort".to_owned(), "size".to_owned()];
            headers.extend((0..=days).map(|d| format!("d{d}")));
            let rows: Vec<Vec<String>> = v["cohorts"]
                .as_array()
                .map(|cohorts| {
                    cohorts
                        .iter()
                        .map(|c| {
                            let mut row = vec![cell(&c["day"]), cell(&c["size"])];
                            if let Some(returned) = c["returned"].as_array() {
                                row.extend(returned.iter().map(cell));
                            }
                            row
                        })
                        .collect()
                })
                .unwrap_or_default();
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            table(&headers, &rows)
        }
        What::Breakdown { .. } => {
            let rows: Vec<Vec<String>> =
                rows_of(&v["rows"], &["value", "count", "people", "other"])
                    .into_iter()
                    .map(|mut r| {
                        if r[3] == "true" {
                            r[0] = "(other)".to_owned();
                        }
                        r.truncate(3);
                        r
                    })
                    .collect();
            table(&["value", "count", "people"], &rows)
        }
        What::TopEvents { .. } => table(
            &["event", "count", "people"],
            &rows_of(&v["rows"], &["event", "count", "people"]),
        ),
    };
    (table, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(counts: &[u64]) -> Vec<Vec<String>> {
        counts
            .iter()
            .enumerate()
            .map(|(i, c)| vec![format!("h{i}"), c.to_string()])
            .collect()
    }

    #[test]
    fn empty_buckets_at_the_ends_are_left_out_and_counted() {
        let (rows, note) = without_empty_ends(series(&[0, 0, 3, 0, 5, 0]), 1);
        let buckets: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(buckets, ["h2", "h3", "h4"]);
        assert_eq!(
            note,
            "(2 empty buckets before and 1 after not shown; --json has all 6)\n"
        );
    }

    #[test]
    fn a_series_without_empty_ends_is_whole_and_an_empty_one_is_all_note() {
        let (rows, note) = without_empty_ends(series(&[1, 0, 2]), 1);
        assert_eq!(rows.len(), 3);
        assert_eq!(note, "");
        let (rows, note) = without_empty_ends(series(&[0, 0]), 1);
        assert!(rows.is_empty());
        assert_eq!(
            note,
            "(2 empty buckets before and 0 after not shown; --json has all 2)\n"
        );
    }
}
