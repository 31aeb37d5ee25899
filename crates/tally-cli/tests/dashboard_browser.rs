//! The dashboard in a real browser: a fresh `tally serve` filled through the
//! HTTP API with a fixture of known events, the page at `/` opened in
//! headless Chromium (chromedriver), a wrong token refused, then each view
//! read as shown and compared with the query API's own answer to the very
//! request the view made (its "API:" line). Screenshots of every view go
//! to `target/dashboard-screenshots/`.
//!
//! A view whose endpoint answers an error must show that error (status,
//! code and message), not an empty or stale chart.

#![allow(clippy::unwrap_used)]

mod browser_support;
mod serve_support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use browser_support::Browser;
use serde_json::{json, Value};
use serve_support::*;
use tally_collector::clock::now_ms;
use tally_proto::format_timestamp;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;
/// The browser's zone: not UTC, so the page's default zone is visibly the
/// browser's.
const BROWSER_TZ: &str = "Europe/Paris";
const VIEW_TIMEOUT: Duration = Duration::from_secs(30);
/// A token that may read, not administer.
const READ_TOKEN: &str = "test-read-token-0123";
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// Messages of known shape: who did what, when, on which install.
struct Fixture {
    now: i64,
    seqs: HashMap<String, u64>,
    messages: Vec<Value>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            now: now_ms(),
            seqs: HashMap::new(),
            messages: Vec::new(),
        }
    }

    fn next_seq(&mut self, install: &str) -> u64 {
        let seq = self.seqs.entry(install.to_owned()).or_insert(0);
        *seq += 1;
        *seq
    }

    /// `user` (u01..u12) does `event` `ago_ms` before now on their install.
    fn track(&mut self, user: u32, event: &str, ago_ms: i64) {
        let install = format!("inst-{user:02}");
        let seq = self.next_seq(&install);
        let n = self.messages.len();
        self.messages.push(json!({
            "type": "track",
            "messageId": format!("dash-{n:04}"),
            "userId": format!("u{user:02}"),
            "anonymousId": format!("anon-{user:02}"),
            "event": event,
            "timestamp": format_timestamp(self.now - ago_ms),
            "properties": {"plan": if user % 3 == 0 { "pro" } else { "free" }},
            "context": {
                "app": {"version": if user % 2 == 0 { "2.3.0" } else { "2.4.0" }},
                "os": {"name": if user <= 7 { "iOS" } else { "Android" }},
                "locale": "en-US",
                // One session per person and day.
                "tally": {"install_id": install, "seq": seq,
                          "session_id": format!("s-{user:02}-{}", ago_ms / DAY)},
            },
        }));
    }

    /// The SDK's `tally.health` beacon from `user`'s install.
    fn beacon(&mut self, user: u32, ago_ms: i64, properties: Value) {
        let install = format!("inst-{user:02}");
        let seq = self.next_seq(&install);
        let n = self.messages.len();
        self.messages.push(json!({
            "type": "track",
            "messageId": format!("dash-{n:04}"),
            "anonymousId": format!("anon-{user:02}"),
            "event": "tally.health",
            "timestamp": format_timestamp(self.now - ago_ms),
            "properties": properties,
            "context": {"tally": {"install_id": install, "seq": seq}},
        }));
    }

    /// Twelve people over four days: everyone opens the app three days
    /// ago, eight view an item, four buy within the hour, one buys without
    /// viewing and one buys two days later; some come back on later days.
    fn product() -> Fixture {
        let mut f = Fixture::new();
        let a = 3 * DAY;
        for u in 1..=12 {
            let t = a - i64::from(u) * 5 * MIN;
            f.track(u, "App Opened", t);
            if u <= 8 {
                f.track(u, "Viewed Item", t - 10 * MIN);
            }
            if u <= 4 {
                f.track(u, "Purchased", t - 20 * MIN);
            }
        }
        f.track(9, "Purchased", a - 2 * HOUR);
        // A lost event: install 06 skips one seq before its next event
        // (a completeness gap of 1).
        f.next_seq("inst-06");
        for u in 1..=6 {
            f.track(u, "App Opened", 2 * DAY - i64::from(u) * MIN);
        }
        for u in 1..=3 {
            f.track(u, "App Opened", DAY - i64::from(u) * MIN);
        }
        f.track(5, "Purchased", DAY - 30 * MIN);
        for u in 1..=2 {
            f.track(u, "App Opened", 2 * HOUR + i64::from(u) * MIN);
        }
        let healthy = json!({"pending": 0, "oldest_pending_age_s": 0, "sync_latency_p50_ms": 80,
                             "sync_latency_p99_ms": 300, "persistence_errors": 0, "backoff_ms": 0});
        f.beacon(1, HOUR, healthy.clone());
        f.beacon(2, HOUR, healthy);
        f.beacon(
            3,
            HOUR,
            json!({"pending": 140, "oldest_pending_age_s": 90_000, "sync_latency_p50_ms": 120,
                   "sync_latency_p99_ms": 2400, "persistence_errors": 1, "backoff_ms": 8000,
                   "consecutive_failures": 4}),
        );
        f
    }
}

fn post_json(agent: &ureq::Agent, server: &Server, batch: &[Value]) -> Value {
    let body = json!({"batch": batch, "sentAt": format_timestamp(now_ms())});
    let (status, answer) = read(
        agent
            .post(server.url("/v1/batch"))
            .header("authorization", format!("Bearer {WRITE_KEY}"))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap(),
    );
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The digits of a shown number (`12,345` → `12345`).
fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// `12345` as the page shows it: `12,345`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A JSON number as the page's `data-value` writes it (`String(n)`).
fn js_string(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

struct Session<'a> {
    browser: &'a Browser,
    agent: ureq::Agent,
    server: &'a Server,
    shots: PathBuf,
    saved: Vec<PathBuf>,
}

impl Session<'_> {
    fn shot(&mut self, name: &str) {
        let path = self.shots.join(format!("{name}.png"));
        self.browser.screenshot_full(WIDTH, 4000, &path);
        self.saved.push(path);
    }

    /// Waits until `view` finished loading; its state (`ready`/`error`).
    fn settled(&self, view: &str) -> String {
        self.browser
            .wait_for(
                &format!("the {view} view to load"),
                &format!(
                    "const s = document.querySelector('#view-{view}').dataset.state;
                     return s === 'ready' || s === 'error' ? s : null;"
                ),
                VIEW_TIMEOUT,
            )
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Forgets `view`'s state, runs `act`, and waits for the reload.
    fn reload(&self, view: &str, act: impl FnOnce()) -> String {
        self.browser.execute(
            &format!("delete document.querySelector('#view-{view}').dataset.state;"),
            &[],
        );
        act();
        self.settled(view)
    }

    fn open(&self, view: &str) -> String {
        self.browser
            .click_css(&format!("#tabs .tab[data-view='{view}']"));
        self.settled(view)
    }

    /// Picks `value` in the `select` as a person would. When the collector
    /// could not list event names (top-events failed, which the page
    /// shows), the name is added the way a person would type it.
    fn choose(&self, select: &str, value: &str) {
        let option = format!("{select} option[value='{value}']");
        if self.browser.try_find(&option).is_none() {
            let (status, _) = self.api("/v1/query/top-events");
            assert_ne!(
                status, 200,
                "top-events answers, yet {value} is not offered"
            );
            self.browser.execute(
                "const s = document.querySelector(arguments[0]);
                 const o = document.createElement('option');
                 o.value = o.textContent = arguments[1];
                 s.appendChild(o);",
                &[json!(select), json!(value)],
            );
        }
        self.browser.click_css(&option);
    }

    /// The API requests `view` made, as its "API:" line lists them.
    fn paths(&self, view: &str) -> Vec<String> {
        let raw = self.browser.execute(
            &format!("return document.querySelector('#view-{view} .query code').dataset.paths;"),
            &[],
        );
        serde_json::from_str(raw.as_str().unwrap()).unwrap()
    }

    fn api(&self, path: &str) -> (u16, Value) {
        admin_get(&self.agent, &self.server.url(path))
    }

    /// The API's answer to `path`, which must be a success the view shows
    /// as ready (every endpoint the dashboard calls is served).
    fn answer_or_shown_error(&self, view: &str, state: &str, path: &str) -> Option<Value> {
        let (status, body) = self.api(path);
        assert_eq!(status, 200, "{view}: {path} answers {status} {body}");
        assert_eq!(state, "ready", "{view}: the API answers 200 for {path}");
        Some(body)
    }

    /// The view shows the API's error: its status, code and message.
    fn assert_shows_error(&self, view: &str, state: &str, status: u16, body: &Value) {
        assert_eq!(state, "error", "{view}: the API answers {status}");
        let shown = self.browser.text(&format!("#view-{view} > .error"));
        let message = body["message"].as_str().unwrap_or_default();
        let code = body["code"].as_str().unwrap_or_default();
        assert!(
            shown.contains(&format!("{status} {code}: {message}")),
            "{view}: the page shows {shown:?}, the API answered {status} {body}"
        );
    }

    /// Rows of `table` as (data-value, shown text) per cell.
    fn table(&self, css: &str) -> Vec<Vec<(String, String)>> {
        let rows = self.browser.execute(
            "return [...document.querySelectorAll(arguments[0] + ' tbody tr')]
                 .map(tr => [...tr.cells].map(td => [td.dataset.value ?? '', td.innerText]));",
            &[json!(css)],
        );
        serde_json::from_value(rows).unwrap()
    }

    /// The label the events table shows for bucket `i` (the tooltip's
    /// title is the same).
    fn text_of_cell(&self, i: usize) -> String {
        self.table("#events-table")[i][0].1.clone()
    }

    /// An integer shown in the element `css` equals `expected`, both in its
    /// text and its `data-value`.
    fn assert_int(&self, css: &str, expected: &Value) {
        let value = self.browser.execute(
            "return document.querySelector(arguments[0]).dataset.value;",
            &[json!(css)],
        );
        assert_eq!(
            value.as_str().unwrap(),
            js_string(expected),
            "{css} data-value"
        );
        assert_eq!(
            digits(&self.browser.text(css)),
            js_string(expected),
            "{css} as shown"
        );
    }

    /// A card value (`data-value`) equals the API's number exactly.
    fn assert_value(&self, css: &str, expected: &Value) {
        let value = self.browser.execute(
            "return document.querySelector(arguments[0]).dataset.value;",
            &[json!(css)],
        );
        assert_eq!(value.as_str().unwrap(), js_string(expected), "{css}");
    }
}

#[test]
fn the_dashboard_shows_what_the_query_api_answers() {
    let Some(browser) = Browser::launch(WIDTH, HEIGHT, BROWSER_TZ) else {
        return;
    };
    let dir = temp_dir("dashboard");
    // Alerts evaluated every 200 ms, and the dedup rule held pending for an
    // hour, so the health view has rules in all three states to show.
    let config = dir.path().join("tally.toml");
    std::fs::write(
        &config,
        "[alerts]\ninterval_s = 0.2\n[alerts.dedup_rate_high]\nthreshold = 0.1\nfor_s = 3600\n",
    )
    .unwrap();
    let server = Server::start_with_config(
        &dir.path().join("data"),
        &config,
        &["--read-token", READ_TOKEN],
    );
    let agent = agent();

    // The fixture, a replayed part of it (duplicates) and two bad messages.
    let fixture = Fixture::product();
    let answer = post_json(&agent, &server, &fixture.messages);
    assert_eq!(answer["accepted"], fixture.messages.len());
    let replay = post_json(&agent, &server, &fixture.messages[..5]);
    assert_eq!(replay["duplicate"], 5);
    let mut bad = fixture.messages[0].clone();
    bad["messageId"] = json!("dash-bad-1");
    bad["event"] = json!("");
    let mut bad_time = fixture.messages[0].clone();
    bad_time["messageId"] = json!("dash-bad-2");
    bad_time["timestamp"] = json!("yesterday");
    let rejected = post_json(&agent, &server, &[bad, bad_time]);
    assert_eq!(rejected["rejected"], 2, "{rejected}");
    let accepted = fixture.messages.len() as u64;
    assert_eq!(stats(&agent, &server), (accepted, 5, 2, accepted));
    // The fixture is evaluated: one install of three has waited over 24 h
    // (firing at once), 5 duplicates of 45 is over 10 % (pending an hour).
    let deadline = std::time::Instant::now() + VIEW_TIMEOUT;
    loop {
        let (status, alerts) = admin_get(&agent, &server.url("/v1/alerts"));
        assert_eq!(status, 200, "{alerts}");
        let state = |name: &str| {
            alerts["rules"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == name)
                .map(|r| r["state"].clone())
                .unwrap()
        };
        if state("stale_client_queues") == "firing" && state("dedup_rate_high") == "pending" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fixture's alerts were not evaluated: {alerts}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The page is public; its data is not.
    let (status, _) = read(agent.get(server.url("/v1/stats")).call().unwrap());
    assert_eq!(status, 401);
    let page = agent.get(server.url("/")).call().unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard-screenshots");
    let mut s = Session {
        browser: &browser,
        agent,
        server: &server,
        shots,
        saved: Vec::new(),
    };

    // A wrong token: refused, said so, nothing shown.
    browser.goto(&server.url("/"));
    browser.wait_for(
        "the login form",
        "return !document.querySelector('#login-view').hidden;",
        VIEW_TIMEOUT,
    );
    let token = browser.find("#token");
    browser.type_text(&token, "not-the-admin-token");
    browser.click_css("#login-submit");
    browser.wait_for(
        "the login error",
        "return !document.querySelector('#login-error').hidden;",
        VIEW_TIMEOUT,
    );
    let error = browser.text("#login-error");
    assert!(
        error.contains("refused") && error.contains("401"),
        "{error}"
    );
    assert!(!browser.displayed("#app"));
    let kept = browser.execute("return sessionStorage.getItem('tally.adminToken');", &[]);
    assert_eq!(kept, Value::Null, "a refused token is not kept");
    s.shot("01-login-refused");

    // The admin token: in, totals equal /v1/stats.
    let token = browser.find("#token");
    browser.clear(&token);
    browser.type_text(&token, ADMIN_TOKEN);
    browser.click_css("#login-submit");
    browser.wait_for(
        "the totals",
        "return document.querySelector('#totals').dataset.state === 'ready';",
        VIEW_TIMEOUT,
    );
    let (_, totals) = s.api("/v1/stats");
    for (id, key) in [
        ("#total-events", "events"),
        ("#total-accepted", "accepted"),
        ("#total-duplicate", "duplicate"),
        ("#total-rejected", "rejected"),
    ] {
        s.assert_int(id, &totals[key]);
    }
    assert_eq!(totals["events"], accepted);
    let health_tab = "return document.querySelector('#tabs [data-view=health]').hidden;";
    assert_eq!(
        browser.execute(health_tab, &[]),
        json!(false),
        "the admin sees pipeline health"
    );

    // Events over time, in the browser's zone by default.
    let state = s.settled("events");
    let paths = s.paths("events");
    assert!(
        paths[0].contains("tz=Europe%2FParis"),
        "the browser's zone is the default: {}",
        paths[0]
    );
    if let Some(answer) = s.answer_or_shown_error("events", &state, &paths[0]) {
        let finality = s.api(&paths[1]).1;
        check_events(&s, &answer, Some(&finality));
    }
    s.shot("02-events");
    // Pick one event: the page asks for it and shows its series.
    let state = s.reload("events", || {
        s.choose("#events-event", "App Opened");
    });
    let paths = s.paths("events");
    assert!(paths[0].contains("event=App%20Opened"), "{}", paths[0]);
    if let Some(answer) = s.answer_or_shown_error("events", &state, &paths[0]) {
        let finality = s.api(&paths[1]).1;
        check_events(&s, &answer, Some(&finality));
    }
    // By hour: one bucket per hour of the week.
    let state = s.reload("events", || {
        browser.click_css("#view-events [data-interval='hour']");
    });
    let paths = s.paths("events");
    assert!(paths[0].contains("interval=hour"), "{}", paths[0]);
    if let Some(answer) = s.answer_or_shown_error("events", &state, &paths[0]) {
        let buckets = answer["series"].as_array().unwrap().len();
        assert!((168..=169).contains(&buckets), "{buckets} hours in 7 days");
        assert_eq!(paths.len(), 1, "finality is asked for days only");
        check_events(&s, &answer, None);
    }
    s.reload("events", || {
        browser.click_css("#view-events [data-interval='day']");
    });

    // DAU, WAU, MAU.
    let state = s.open("active");
    let paths = s.paths("active");
    assert_eq!(paths.len(), 4, "DAU, WAU, MAU and sessions: {paths:?}");
    let answers: Vec<Option<Value>> = paths[..3]
        .iter()
        .map(|p| s.answer_or_shown_error("active", &state, p))
        .collect();
    let (status, sessions) = s.api(&paths[3]);
    assert_eq!(status, 200, "{}: {status} {sessions}", paths[3]);
    s.assert_int("#active-sessions", &sessions["sessions"]);
    s.assert_value("#active-session-median", &sessions["median_length_s"]);
    if answers.iter().all(Option::is_some) {
        let rows = s.table("#active-table");
        for (row, bucket) in rows.iter().zip(sessions["series"].as_array().unwrap()) {
            assert_eq!(row[0].0, js_string(&bucket["bucket"]));
            assert_eq!(digits(&row[4].1), js_string(&bucket["sessions"]));
        }
    }
    if let [Some(day), Some(week), Some(month)] = &answers[..] {
        let last = |a: &Value| a["series"].as_array().unwrap().last().unwrap()["people"].clone();
        s.assert_int("#active-dau", &last(day));
        s.assert_int("#active-wau", &last(week));
        s.assert_int("#active-mau", &last(month));
        let rows = s.table("#active-table");
        let series = day["series"].as_array().unwrap();
        assert_eq!(rows.len(), series.len());
        for (row, (d, (w, m))) in rows.iter().zip(
            series.iter().zip(
                week["series"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(month["series"].as_array().unwrap()),
            ),
        ) {
            assert_eq!(row[0].0, js_string(&d["bucket"]));
            assert_eq!(digits(&row[1].1), js_string(&d["people"]));
            assert_eq!(digits(&row[2].1), js_string(&w["people"]));
            assert_eq!(digits(&row[3].1), js_string(&m["people"]));
        }
    }
    s.shot("03-active");

    // A 3-step funnel, built in the page.
    s.open("funnel");
    let steps = ["App Opened", "Viewed Item", "Purchased"];
    let state = s.reload("funnel", || {
        // Exactly three step pickers, whatever the default was.
        browser.execute(
            "const list = document.querySelector('#funnel-steps');
             while (list.children.length > 2) list.lastElementChild.querySelector('.remove-step').click();",
            &[],
        );
        browser.click_css("#funnel-add");
        for (i, step) in steps.iter().enumerate() {
            s.choose(&format!("#funnel-steps li:nth-child({}) select", i + 1), step);
        }
        browser.click_css("#funnel-window option[value='86400']");
        browser.click_css("#funnel-run");
    });
    let paths = s.paths("funnel");
    assert!(
        paths[0].contains("steps=App%20Opened,Viewed%20Item,Purchased")
            && paths[0].contains("window_s=86400"),
        "{}",
        paths[0]
    );
    if let Some(answer) = s.answer_or_shown_error("funnel", &state, &paths[0]) {
        let rows = s.table("#funnel-table");
        let api_steps = answer["steps"].as_array().unwrap();
        assert_eq!(rows.len(), 3);
        for (row, step) in rows.iter().zip(api_steps) {
            assert_eq!(row[1].0, js_string(&step["event"]));
            assert_eq!(row[2].0, js_string(&step["people"]));
            assert_eq!(digits(&row[2].1), js_string(&step["people"]));
            let shown: f64 = row[3].1.trim_end_matches('%').parse().unwrap();
            let conversion = step["conversion"].as_f64().unwrap() * 100.0;
            assert!(
                (shown - conversion).abs() <= 0.05 + 1e-9,
                "{shown} vs {conversion}"
            );
        }
        let people: Vec<u64> = api_steps
            .iter()
            .map(|s| s["people"].as_u64().unwrap())
            .collect();
        assert_eq!(people, [12, 8, 4], "the fixture's funnel within a day");
    }
    s.shot("04-funnel");

    // Retention grid.
    let state = s.open("retention");
    let paths = s.paths("retention");
    if let Some(answer) = s.answer_or_shown_error("retention", &state, &paths[0]) {
        let rows = s.table("#retention-table");
        let cohorts = answer["cohorts"].as_array().unwrap();
        assert_eq!(rows.len(), cohorts.len());
        for (row, cohort) in rows.iter().zip(cohorts) {
            assert_eq!(row[0].0, js_string(&cohort["day"]));
            assert_eq!(row[1].0, js_string(&cohort["size"]));
            let returned: Vec<String> = cohort["returned"]
                .as_array()
                .unwrap()
                .iter()
                .map(js_string)
                .collect();
            let shown: Vec<String> = row[2..].iter().map(|c| c.0.clone()).collect();
            assert_eq!(shown, returned);
        }
    }
    s.shot("05-retention");

    // Breakdown of App Opened by app version.
    s.open("breakdown");
    let state = s.reload("breakdown", || {
        s.choose("#breakdown-event", "App Opened");
        browser.click_css("#breakdown-run");
    });
    let paths = s.paths("breakdown");
    if let Some(answer) = s.answer_or_shown_error("breakdown", &state, &paths[0]) {
        let rows = s.table("#breakdown-table");
        let api_rows = answer["rows"].as_array().unwrap();
        assert_eq!(rows.len(), api_rows.len());
        for (row, r) in rows.iter().zip(api_rows) {
            if r["other"] != true {
                assert_eq!(row[0].0, js_string(&r["value"]));
            }
            assert_eq!(digits(&row[1].1), js_string(&r["count"]));
            assert_eq!(digits(&row[2].1), js_string(&r["people"]));
        }
    }
    s.shot("06-breakdown");
    // A field path the API refuses: the page shows the API's own words, and
    // none of the previous rows.
    let state = s.reload("breakdown", || {
        let by = browser.find("#breakdown-by");
        browser.clear(&by);
        browser.type_text(&by, "nowhere.version");
        browser.click_css("#breakdown-run");
    });
    let paths = s.paths("breakdown");
    let (status, body) = s.api(&paths[0]);
    assert_eq!(status, 400, "{}: {status} {body}", paths[0]);
    s.assert_shows_error("breakdown", &state, status, &body);
    assert!(
        s.table("#breakdown-table").is_empty(),
        "stale rows beside the error"
    );

    // Deletion requests, under the pipeline health: none yet, and the
    // panel says so.
    let state = s.open("health");
    assert_eq!(state, "ready");
    let paths = s.paths("health");
    assert_eq!(paths.len(), 3, "pipeline, alerts and deletions: {paths:?}");
    assert_eq!(paths[2], "/v1/deletions?limit=100");
    let (status, listed) = s.api(&paths[2]);
    assert_eq!((status, &listed), (200, &json!({"deletions": []})));
    assert_eq!(
        s.table("#deletions-table"),
        [[(String::new(), "No deletion requests yet.".to_owned())]]
    );
    // Two requests through the admin API: u12 (one event, App Opened) and
    // a user the collector never saw. The page shows them after a refresh,
    // exactly as the API lists them.
    assert_eq!(delete_user(&s.agent, &server, "u12"), 1);
    assert_eq!(delete_user(&s.agent, &server, "u-never-seen"), 0);
    let state = s.reload("health", || browser.click_css("#refresh"));
    assert_eq!(state, "ready");
    check_deletions(
        &s,
        &s.paths("health")[2],
        &[("u-never-seen", 0), ("u12", 1)],
    );

    // Pipeline health and alerts.
    let state = s.open("health");
    assert_eq!(state, "ready");
    let paths = s.paths("health");
    let (status, h) = s.api(&paths[0]);
    assert_eq!(status, 200, "{h}");
    {
        for (id, path) in [
            ("ingest-lag-p50", "ingest_lag_ms.p50"),
            ("ingest-lag-p90", "ingest_lag_ms.p90"),
            ("ingest-lag-p99", "ingest_lag_ms.p99"),
            ("sync-latency-p50", "sync_latency_ms.p50"),
            ("sync-latency-p99", "sync_latency_ms.p99"),
            ("batch-success-rate", "batches.success_rate"),
            ("dedup-accepted", "dedup.accepted"),
            ("dedup-duplicates", "dedup.duplicates"),
            ("dedup-rate", "dedup.rate"),
            ("rejections-total", "rejections.total"),
            ("rejections-rate", "rejections.rate"),
            ("completeness-installs", "completeness.installs"),
            ("completeness-gaps", "completeness.installs_with_gaps"),
            ("completeness-missing", "completeness.missing"),
            ("fleet-installs", "fleet.installs_reporting"),
            ("fleet-pending", "fleet.pending_events"),
            ("fleet-oldest", "fleet.oldest_pending_age_s"),
            ("fleet-over-24h", "fleet.installs_oldest_pending_over_24h"),
            (
                "fleet-persistence",
                "fleet.installs_with_persistence_errors",
            ),
            ("fleet-backoff", "fleet.installs_in_backoff"),
        ] {
            let expected = path.split('.').fold(&h, |v, k| &v[k]);
            s.assert_value(&format!("#health-{id}"), expected);
        }
        // The fixture's own figures, which no window choice can change.
        for (path, expected) in [
            ("dedup.duplicates", 5),
            ("rejections.total", 2),
            ("completeness.installs_with_gaps", 1),
            ("completeness.missing", 1),
            ("fleet.installs_reporting", 3),
            ("fleet.pending_events", 140),
            ("fleet.installs_with_persistence_errors", 1),
        ] {
            let got = path.split('.').fold(&h, |v, k| &v[k]);
            assert_eq!(got, expected, "{path} of the fixture");
        }
        for id in ["dedup-duplicates", "rejections-total", "fleet-pending"] {
            let css = format!("#health-{id}");
            let value = browser.execute(
                "return document.querySelector(arguments[0]).dataset.value;",
                &[json!(css)],
            );
            assert_eq!(digits(&browser.text(&css)), value.as_str().unwrap());
        }
        let reasons = browser.execute(
            "return [...document.querySelectorAll('#health-rejections .bar-row')].map(r => r.dataset.reason);",
            &[],
        );
        let mut expected: Vec<String> = h["rejections"]["by_reason"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut shown: Vec<String> = serde_json::from_value(reasons).unwrap();
        expected.sort();
        shown.sort();
        assert_eq!(shown, expected, "rejection reasons");
    }
    let (status, alerts) = s.api(&paths[1]);
    assert_eq!(status, 200, "{alerts}");
    let rows = s.table("#alerts-table");
    let rules = alerts["rules"].as_array().unwrap();
    assert_eq!(rows.len(), rules.len());
    for (row, rule) in rows.iter().zip(rules) {
        assert_eq!(row[0].0, js_string(&rule["name"]));
        assert_eq!(row[1].0, js_string(&rule["state"]));
        assert_eq!(row[1].1, js_string(&rule["state"]), "the state as shown");
        assert_eq!(
            row[2].0,
            js_string(&rule["value"]),
            "{} value",
            rule["name"]
        );
        assert_eq!(row[3].0, js_string(&rule["threshold"]));
    }
    s.shot("07-health");

    // Nothing the page ran broke its Content-Security-Policy.
    let violations: Vec<String> = browser
        .console()
        .into_iter()
        .filter(|line| line.contains("Content Security Policy"))
        .collect();
    assert!(violations.is_empty(), "{violations:?}");

    // Logout: the token is gone and so is every number.
    browser.click_css("#logout");
    browser.wait_for(
        "the login form after logout",
        "return !document.querySelector('#login-view').hidden;",
        VIEW_TIMEOUT,
    );
    let kept = browser.execute("return sessionStorage.getItem('tally.adminToken');", &[]);
    assert_eq!(kept, Value::Null);
    let left = browser.execute(
        "return document.querySelector('#total-events').textContent;",
        &[],
    );
    assert_eq!(left, "–");

    // A read token: the product views, not pipeline health, whose API
    // refuses it too.
    let token = browser.find("#token");
    browser.clear(&token);
    browser.type_text(&token, READ_TOKEN);
    browser.click_css("#login-submit");
    browser.wait_for(
        "the totals with a read token",
        "return !document.querySelector('#app').hidden \
         && document.querySelector('#totals').dataset.state === 'ready';",
        VIEW_TIMEOUT,
    );
    let (_, totals) = s.api("/v1/stats");
    s.assert_int("#total-events", &totals["events"]);
    assert_eq!(
        browser.execute(health_tab, &[]),
        json!(true),
        "health is the admin's"
    );
    browser.execute("location.hash = '#/health';", &[]);
    browser.wait_for(
        "the events view instead of health",
        "return !document.querySelector('#view-events').hidden \
         && document.querySelector('#view-health').hidden;",
        VIEW_TIMEOUT,
    );
    let (status, _) = read(
        s.agent
            .get(server.url("/v1/alerts"))
            .header("authorization", format!("Bearer {READ_TOKEN}"))
            .call()
            .unwrap(),
    );
    assert_eq!(status, 403);
    s.shot("20-read-token");

    for path in &s.saved {
        println!("screenshot: {}", path.display());
    }
}

/// A write key whose source the quality test's plan enforces.
const ENFORCE_KEY: &str = "test-enforce-key-0123";

/// The quality test's plan: an order needs an id and an amount of at
/// least 0.
const QUALITY_PLAN: &str = "events:
  - name: Order Completed
    versions:
      - version: 1
        properties:
          type: object
          required: [order_id, amount]
          properties:
            order_id: { type: string }
            amount: { type: number, minimum: 0 }
";

/// A track event with a message id, posted with `key`; the answer's
/// statuses.
fn post_track(agent: &ureq::Agent, server: &Server, key: &str, messages: &[Value]) -> Vec<String> {
    let body = json!({"batch": messages, "sentAt": format_timestamp(now_ms())});
    let (status, answer) = read(
        agent
            .post(server.url("/v1/batch"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap(),
    );
    assert_eq!(status, 200, "{answer}");
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_owned())
        .collect()
}

fn order(id: &str, properties: Value) -> Value {
    json!({"type": "track", "messageId": id, "anonymousId": "quality-a",
           "event": "Order Completed", "properties": properties})
}

/// A time cell as the page shows one: the API's Unix ms, and the
/// browser's own rendering of it.
fn time_cell(browser: &Browser, ms: &Value) -> (String, String) {
    let local = browser.execute(
        "return new Date(arguments[0]).toLocaleString();",
        std::slice::from_ref(ms),
    );
    (js_string(ms), local.as_str().unwrap().to_owned())
}

fn same(text: &str) -> (String, String) {
    (text.to_owned(), text.to_owned())
}

/// The data-quality view, signed in with a read token: a plan in `warn`
/// for one source and `enforce` for another, a violation flagged by the
/// first, one rejected by the second, another rule broken, an unplanned
/// event and a valid one; the view shows exactly the rows of
/// `GET /v1/quality` for the page's range, and follows the range.
#[test]
fn the_quality_view_shows_what_the_plan_found() {
    let Some(browser) = Browser::launch(WIDTH, HEIGHT, BROWSER_TZ) else {
        return;
    };
    let dir = temp_dir("dashboard-quality");
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, QUALITY_PLAN).unwrap();
    let warned = tally_collector::ingest::auth::source_id(WRITE_KEY);
    let enforced = tally_collector::ingest::auth::source_id(ENFORCE_KEY);
    let config = dir.path().join("tally.toml");
    std::fs::write(
        &config,
        format!(
            "[plan]\nfile = {:?}\nmode = \"warn\"\n[plan.sources]\n{enforced:?} = \"enforce\"\n",
            plan.to_str().unwrap()
        ),
    )
    .unwrap();
    let server = Server::start_with_config(
        &dir.path().join("data"),
        &config,
        &["--read-token", READ_TOKEN, "--write-key", ENFORCE_KEY],
    );
    let agent = agent();
    let unplanned = json!({"type": "track", "messageId": "q-3", "anonymousId": "quality-a",
                           "event": "Song Played"});
    let warn = [
        order("q-1", json!({"order_id": "a"})),
        order("q-2", json!({"order_id": "b", "amount": -1})),
        unplanned,
        order("q-4", json!({"order_id": "c", "amount": 5})),
    ];
    assert_eq!(
        post_track(&agent, &server, WRITE_KEY, &warn),
        ["accepted"; 4]
    );
    let enforce = [order("q-5", json!({"order_id": "d"}))];
    assert_eq!(
        post_track(&agent, &server, ENFORCE_KEY, &enforce),
        ["rejected"]
    );

    let mut s = Session {
        browser: &browser,
        agent,
        server: &server,
        shots: PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("dashboard-screenshots"),
        saved: Vec::new(),
    };
    browser.goto(&server.url("/"));
    browser.wait_for(
        "the login form",
        "return !document.querySelector('#login-view').hidden;",
        VIEW_TIMEOUT,
    );
    let token = browser.find("#token");
    browser.type_text(&token, READ_TOKEN);
    browser.click_css("#login-submit");
    browser.wait_for(
        "the totals",
        "return document.querySelector('#totals').dataset.state === 'ready';",
        VIEW_TIMEOUT,
    );
    assert!(
        browser.displayed("#tabs [data-view=quality]"),
        "a read token sees data quality"
    );
    assert_eq!(s.open("quality"), "ready");
    let paths = s.paths("quality");
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert!(paths[0].starts_with("/v1/quality?from="), "{}", paths[0]);
    let (status, answer) = s.api(&paths[0]);
    assert_eq!(status, 200, "{answer}");

    // What the API answers for the view's request: the fixture exactly.
    let key = |r: &Value| {
        [
            "event", "version", "finding", "rule", "path", "flagged", "rejected",
        ]
        .map(|k| js_string(&r[k]))
    };
    let rows = |k: &str| answer[k].as_array().unwrap().clone();
    let owned = |v: [&str; 7]| v.map(str::to_owned);
    let keys: Vec<_> = rows("findings").iter().map(key).collect();
    assert_eq!(
        keys,
        [
            owned([
                "Order Completed",
                "1",
                "plan_violation",
                "minimum",
                "/amount",
                "1",
                "0"
            ]),
            owned([
                "Order Completed",
                "1",
                "plan_violation",
                "required",
                "/amount",
                "1",
                "1"
            ]),
        ]
    );
    let keys: Vec<_> = rows("unplanned").iter().map(key).collect();
    assert_eq!(
        keys,
        [owned(["Song Played", "0", "unplanned", "", "", "1", "0"])]
    );

    // The cards and the chart.
    s.assert_int("#quality-flagged", &json!(2));
    s.assert_int("#quality-rejected", &json!(1));
    s.assert_int("#quality-unplanned-events", &json!(1));
    let bars = browser.execute(
        "return document.querySelectorAll('#quality-chart .bar-row').length;",
        &[],
    );
    assert_eq!(bars, 2, "one bar per finding");

    // The findings table: one row per finding, cell by cell.
    let findings = rows("findings");
    let expected: Vec<Vec<(String, String)>> = findings
        .iter()
        .map(|r| {
            vec![
                same("Order Completed"),
                same("1"),
                same("plan_violation"),
                same(r["rule"].as_str().unwrap()),
                same("/amount"),
                same(&js_string(&r["flagged"])),
                same(&js_string(&r["rejected"])),
                time_cell(&browser, &r["last_seen"]),
            ]
        })
        .collect();
    assert_eq!(s.table("#quality-findings"), expected);
    let song = &rows("unplanned")[0];
    assert_eq!(
        s.table("#quality-unplanned"),
        [vec![
            same("Song Played"),
            same("1"),
            time_cell(&browser, &song["first_seen"]),
            time_cell(&browser, &song["last_seen"]),
        ]]
    );

    // The newest examples of each finding, in the findings' order, newest
    // first: the rejected order came after the flagged one.
    let example = |finding: &str,
                   row: &Value,
                   i: usize,
                   id: &str,
                   source: &str,
                   outcome: &str,
                   detail: &str| {
        let e = &row["examples"][i];
        assert_eq!(e["message_id"], id, "{row}");
        vec![
            same(finding),
            time_cell(&browser, &e["received_at"]),
            same(source),
            same(id),
            same(outcome),
            same(detail),
        ]
    };
    let minimum = "Order Completed v1 · minimum at /amount";
    let required = "Order Completed v1 · required at /amount";
    assert_eq!(
        s.table("#quality-examples"),
        [
            example(
                minimum,
                &findings[0],
                0,
                "q-2",
                &warned,
                "flagged",
                "Order Completed v1: minimum at /amount"
            ),
            example(
                required,
                &findings[1],
                0,
                "q-5",
                &enforced,
                "rejected",
                "Order Completed v1: required at /amount"
            ),
            example(
                required,
                &findings[1],
                1,
                "q-1",
                &warned,
                "flagged",
                "Order Completed v1: required at /amount"
            ),
            example(
                "Song Played · unplanned",
                song,
                0,
                "q-3",
                &warned,
                "flagged",
                "Song Played v0: unplanned"
            ),
        ]
    );
    s.shot("08-quality");

    // The range: the last 24 hours asks for exactly that.
    let state = s.reload("quality", || browser.click_css("#range option[value='1']"));
    assert_eq!(state, "ready");
    let path = &s.paths("quality")[0];
    let span = browser.execute(
        "const q = new URLSearchParams(arguments[0].split('?')[1]);
         return Date.parse(q.get('to')) - Date.parse(q.get('from'));",
        &[json!(path)],
    );
    assert_eq!(span, DAY, "{path}");
    assert_eq!(s.api(path).1, answer, "the fixture is within the last day");
    assert_eq!(s.table("#quality-examples").len(), 4);

    let violations: Vec<String> = browser
        .console()
        .into_iter()
        .filter(|line| line.contains("Content Security Policy"))
        .collect();
    assert!(violations.is_empty(), "{violations:?}");
    for path in &s.saved {
        println!("screenshot: {path:?}");
    }
}

/// Files a deletion request for `user`; the events it deleted.
fn delete_user(agent: &ureq::Agent, server: &Server, user: &str) -> u64 {
    let (status, answer) = read(
        agent
            .post(server.url("/v1/deletions"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .send(json!({ "userId": user }).to_string().as_bytes())
            .unwrap(),
    );
    assert_eq!(status, 202, "{answer}");
    answer["deleted_events"].as_u64().unwrap()
}

/// The deletions panel shows exactly what `path` (`/v1/deletions`) answers,
/// row by row and cell by cell, and that is `expected` (user, events
/// deleted), newest first.
fn check_deletions(s: &Session<'_>, path: &str, expected: &[(&str, u64)]) {
    let (status, listed) = s.api(path);
    assert_eq!(status, 200, "{listed}");
    let deletions = listed["deletions"].as_array().unwrap();
    let api: Vec<(&str, u64)> = deletions
        .iter()
        .map(|d| {
            (
                d["userId"].as_str().unwrap(),
                d["deleted_events"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(api, expected, "{listed}");
    let rows = s.table("#deletions-table");
    assert_eq!(rows.len(), deletions.len(), "one row per request");
    for (row, d) in rows.iter().zip(deletions) {
        assert_eq!(row.len(), 4, "{row:?}");
        let user = js_string(&d["userId"]);
        assert_eq!(row[0], (user.clone(), user), "user");
        // The time as the API gives it, shown in the browser's own format.
        let requested = js_string(&d["requested_at"]);
        let local = s.browser.execute(
            "return new Date(arguments[0]).toLocaleString();",
            &[d["requested_at"].clone()],
        );
        assert_eq!(
            row[1],
            (requested, local.as_str().unwrap().to_owned()),
            "requested"
        );
        let status = js_string(&d["status"]);
        assert_eq!(status, "done");
        assert_eq!(row[2], (status.clone(), status), "status");
        let deleted = js_string(&d["deleted_events"]);
        assert_eq!(row[3].0, deleted, "events deleted");
        assert_eq!(digits(&row[3].1), deleted, "events deleted as shown");
    }
    assert!(
        !s.browser.displayed("#deletions-error"),
        "an error beside the deletions"
    );
}

/// What the events view says of a day of `/v1/query/finality`: why it is
/// not final yet, or how it became final.
fn finality_note(day: &Value) -> String {
    match day["status"].as_str().unwrap() {
        "in_progress" => "day in progress".to_owned(),
        "waiting" => {
            let count = |n: u64, one: &str, many: &str| {
                format!("{} {}", grouped(n), if n == 1 { one } else { many })
            };
            format!(
                "{} waiting, {} pending",
                count(
                    day["waiting_installs"].as_u64().unwrap(),
                    "install",
                    "installs"
                ),
                count(day["pending_events"].as_u64().unwrap(), "event", "events")
            )
        }
        _ => format!("yes, {}", day["final_by"].as_str().unwrap()),
    }
}

/// The events view equals the API's `/v1/query/events` answer: totals,
/// one table row per bucket, one chart point per bucket, and the tooltip
/// of the busiest bucket; by day, each day's finality (`finality`, the
/// `/v1/query/finality` answer) in the table, the chart's bands and the
/// tooltip.
fn check_events(s: &Session<'_>, answer: &Value, finality: Option<&Value>) {
    s.assert_int("#events-total-count", &answer["total"]["count"]);
    s.assert_int("#events-total-people", &answer["total"]["people"]);
    let series = answer["series"].as_array().unwrap();
    let rows = s.table("#events-table");
    assert_eq!(rows.len(), series.len(), "one row per bucket");
    let day_of = |bucket: &Value| -> Option<Value> {
        finality.and_then(|f| {
            f["days"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["day"] == bucket["bucket"])
                .cloned()
        })
    };
    let mut not_final = 0;
    for (row, bucket) in rows.iter().zip(series) {
        assert_eq!(row[0].0, js_string(&bucket["bucket"]));
        assert_eq!(digits(&row[1].1), js_string(&bucket["count"]));
        assert_eq!(digits(&row[2].1), js_string(&bucket["people"]));
        if finality.is_some() {
            let day = day_of(bucket).expect("a finality row for each day");
            assert_eq!(row[3].0, js_string(&day["status"]));
            assert_eq!(row[3].1, finality_note(&day));
            not_final += usize::from(day["status"] != "final");
        } else {
            assert_eq!(row.len(), 3, "no finality column by hour");
        }
    }
    let bands = s.browser.execute(
        "return document.querySelectorAll('#events-chart .bands.not-final rect').length;",
        &[],
    );
    assert_eq!(bands, not_final, "one band per day not final");
    let points = s.browser.execute(
        "return document.querySelectorAll('#events-chart .dots.s0 circle').length;",
        &[],
    );
    assert_eq!(points, series.len());
    let (busiest, top) = series
        .iter()
        .enumerate()
        .max_by_key(|(_, b)| b["count"].as_u64().unwrap())
        .unwrap();
    if top["count"].as_u64().unwrap() > 0 {
        // The chart redraws when its container resizes, which can replace
        // the point between finding and hovering it: find and hover again
        // until the tooltip shows.
        let deadline = std::time::Instant::now() + VIEW_TIMEOUT;
        let tip = loop {
            let point = s.browser.find(&format!(
                "#events-chart .dots.s0 circle[data-index='{busiest}']"
            ));
            s.browser.hover(&point);
            let shown = s.browser.execute(
                "const t = document.querySelector('#tooltip'); return t.hidden ? null : t.innerText;",
                &[],
            );
            if !shown.is_null() {
                break shown;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for the tooltip"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let tip = tip.as_str().unwrap();
        let flat = tip.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut shown = format!(
            "{} Events {} People {}",
            s.text_of_cell(busiest),
            grouped(top["count"].as_u64().unwrap()),
            grouped(top["people"].as_u64().unwrap())
        );
        if let Some(day) = day_of(top).filter(|d| d["status"] != "final") {
            shown.push_str(&format!(" Not final {}", finality_note(&day)));
        }
        assert_eq!(flat, shown, "the tooltip of the busiest bucket");
    }
}
