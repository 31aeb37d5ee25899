//! What the simulator reads back from the collector: its totals, each
//! install's completeness and stored events, through the admin API
//! ([`Client`]). The report checks the ledger against these.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tally_proto::DROPPED_EVENT;
use tally_sdk::upload::HEALTH_EVENT;

/// Event names whose counts the report checks (the scenario's, and the
/// SDK's own reports that must be subtracted).
pub fn event_names() -> Vec<&'static str> {
    vec![
        "app_open",
        "view_item",
        "add_to_cart",
        "purchase",
        "Home",
        "Search",
        "Item",
        "Cart",
        DROPPED_EVENT,
        HEALTH_EVENT,
    ]
}

/// The collector's figures at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
    /// `(count, users)` per event name.
    pub by_name: BTreeMap<String, (u64, u64)>,
}

/// An install's completeness as the collector reports it.
#[derive(Debug, Clone, Default)]
pub struct InstallFigures {
    pub max_seq: u64,
    pub missing: u64,
    /// Seqs reported dropped that the collector does not store.
    pub dropped: u64,
    /// Every seq reported dropped, stored or not: inclusive ranges,
    /// merged and ascending.
    pub dropped_ranges: Vec<(u64, u64)>,
}

impl InstallFigures {
    /// Seqs the device reported dropped although the collector stores
    /// them (sent, answer lost, then dropped from a full log).
    pub fn dropped_but_stored(&self) -> u64 {
        let reported: u64 = self
            .dropped_ranges
            .iter()
            .map(|&(from, to)| to.saturating_sub(from) + 1)
            .sum();
        reported.saturating_sub(self.dropped)
    }

    /// Whether the device reported `seq` dropped.
    pub fn reported_dropped(&self, seq: u64) -> bool {
        let i = self.dropped_ranges.partition_point(|&(_, to)| to < seq);
        self.dropped_ranges
            .get(i)
            .is_some_and(|&(from, _)| from <= seq)
    }
}

/// One stored event of an install, as `GET /v1/installs/{id}/events`
/// returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    /// The event name, or `identify` for an identify.
    pub label: String,
    /// The stitched person.
    pub person: String,
}

/// Events per page of `GET /v1/installs/{id}/events`.
const EVENTS_PAGE: usize = 1_000;

/// Admin reads against the collector(s).
pub struct Client {
    endpoint: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// Reads go to the first endpoint: collectors behind one simulator share
    /// one store.
    pub fn new(endpoints: &[String], token: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Self {
            endpoint: endpoints
                .first()
                .cloned()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned(),
            token: token.to_owned(),
            agent,
        }
    }

    fn get(&self, path_and_query: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path_and_query}", self.endpoint);
        let mut response = self
            .agent
            .get(&url)
            .header("authorization", &format!("Bearer {}", self.token))
            .call()?;
        let text = response.body_mut().read_to_string()?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Totals and per-name counts.
    pub fn snapshot(&self, names: &[&str]) -> anyhow::Result<Snapshot> {
        let stats = self.get("/v1/stats")?;
        let mut snap = Snapshot {
            accepted: stats["accepted"].as_u64().unwrap_or(0),
            duplicate: stats["duplicate"].as_u64().unwrap_or(0),
            rejected: stats["rejected"].as_u64().unwrap_or(0),
            by_name: BTreeMap::new(),
        };
        for name in names {
            let v = self.get(&format!("/v1/events/count?event={}", encode(name)))?;
            snap.by_name.insert(
                (*name).to_owned(),
                (
                    v["count"].as_u64().unwrap_or(0),
                    v["users"].as_u64().unwrap_or(0),
                ),
            );
        }
        Ok(snap)
    }

    /// The collector's `accepted` total.
    pub fn accepted(&self) -> anyhow::Result<u64> {
        let stats = self.get("/v1/stats")?;
        stats["accepted"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("/v1/stats has no accepted total"))
    }

    /// Every stored event of each install, in seq order.
    pub fn install_events(
        &self,
        ids: &[String],
    ) -> anyhow::Result<BTreeMap<String, Vec<StoredEvent>>> {
        let mut all = BTreeMap::new();
        for id in ids {
            let mut events = Vec::new();
            let mut after = 0u64;
            loop {
                let page = self.get(&format!(
                    "/v1/installs/{}/events?after_seq={after}&limit={EVENTS_PAGE}",
                    encode(id)
                ))?;
                let rows = page
                    .as_array()
                    .ok_or_else(|| anyhow::anyhow!("install events: not a JSON array"))?;
                for row in rows {
                    let seq = row["seq"]
                        .as_u64()
                        .ok_or_else(|| anyhow::anyhow!("install events: an event has no seq"))?;
                    let label = if row["type"] == "identify" {
                        super::ledger::IDENTIFY.to_owned()
                    } else {
                        row["event"].as_str().unwrap_or_default().to_owned()
                    };
                    events.push(StoredEvent {
                        seq,
                        label,
                        person: row["person"].as_str().unwrap_or_default().to_owned(),
                    });
                    after = seq;
                }
                if rows.len() < EVENTS_PAGE {
                    break;
                }
            }
            all.insert(id.clone(), events);
        }
        Ok(all)
    }

    /// Completeness of each install the collector knows.
    pub fn installs(&self, ids: &[String]) -> BTreeMap<String, InstallFigures> {
        ids.iter()
            .filter_map(|id| {
                let v = self.get(&format!("/v1/installs/{}", encode(id))).ok()?;
                let missing = ranges(&v["missing"])
                    .iter()
                    .map(|&(from, to)| to.saturating_sub(from) + 1)
                    .sum();
                Some((
                    id.clone(),
                    InstallFigures {
                        max_seq: v["max_seq"].as_u64().unwrap_or(0),
                        missing,
                        dropped: v["dropped"].as_u64().unwrap_or(0),
                        dropped_ranges: ranges(&v["dropped_ranges"]),
                    },
                ))
            })
            .collect()
    }
}

/// A JSON list of `[from, to]` pairs; anything else reads as none.
fn ranges(v: &Value) -> Vec<(u64, u64)> {
    v.as_array()
        .map(|ranges| {
            ranges
                .iter()
                .map(|r| (r[0].as_u64().unwrap_or(0), r[1].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
