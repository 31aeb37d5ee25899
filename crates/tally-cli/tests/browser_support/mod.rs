//! Headless Chromium for black-box tests, driven through chromedriver with a
//! small W3C WebDriver client over HTTP (ureq): no browser automation crate,
//! no Node, only Debian's `chromium` and `chromium-driver` packages
//! (`.ci/run` installs them).
//!
//! [`Browser::launch`] finds both programs (on `PATH`, or
//! `TALLY_CHROMIUM` / `TALLY_CHROMEDRIVER`). When they are missing it panics
//! under `CI=true`, and otherwise returns `None` after printing why, so a
//! developer without Chromium still runs the rest of the suite.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The W3C key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long chromedriver may take to answer `/status` after its start.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Programs named like Chromium on the Linux distributions CI may use.
const CHROMIUM_NAMES: [&str; 4] = ["chromium", "chromium-browser", "google-chrome", "chrome"];

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os(env) {
        let explicit = PathBuf::from(explicit);
        return explicit.is_file().then_some(explicit);
    }
    names.iter().find_map(|name| on_path(name))
}

/// A chromedriver child and one browser session.
pub struct Browser {
    driver: Child,
    agent: ureq::Agent,
    session: String,
    base: String,
    _profile: tempfile::TempDir,
}

/// An element reference.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width`×`height`
    /// whose time zone is `tz` (the `TZ` of the browser process), or
    /// `None` when they are not installed and this is not CI.
    pub fn launch(width: u32, height: u32, tz: &str) -> Option<Browser> {
        let chromium = program("TALLY_CHROMIUM", &CHROMIUM_NAMES);
        let driver = program("TALLY_CHROMEDRIVER", &["chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            let why = "Chromium and chromedriver are needed for the browser tests \
                       (Debian: apt-get install chromium chromium-driver; or set \
                       TALLY_CHROMIUM and TALLY_CHROMEDRIVER)";
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("{why}; CI must run them, and .ci/run installs both");
            }
            // Straight to the process's stderr: libtest captures eprintln!
            // of a passing test, and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
            return None;
        };
        Some(Self::start(&chromium, &driver, width, height, tz))
    }

    fn start(chromium: &Path, driver: &Path, width: u32, height: u32, tz: &str) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .env("TZ", tz)
            .env("LANG", "en_US.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + DRIVER_START_TIMEOUT;
        loop {
            let ready = agent
                .get(format!("{base}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::Builder::new()
            .prefix("tally-chromium-")
            .tempdir()
            .unwrap();
        let mut browser = Browser {
            driver: child,
            agent,
            session: String::new(),
            base,
            _profile: profile,
        };
        let args = [
            "--headless=new".to_owned(),
            // Tests run as root in CI containers, where the sandbox cannot start.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--lang=en-US".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let session = browser.raw(
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": chromium, "args": args},
                "goog:loggingPrefs": {"browser": "ALL"},
            }}})),
        );
        browser.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_owned();
        browser
    }

    /// One WebDriver command; panics with the driver's error.
    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string().as_bytes()),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let answer: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.raw(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// The first element matching `css`, or `None`.
    pub fn try_find(&self, css: &str) -> Option<Element> {
        let found = self.execute(
            "return document.querySelector(arguments[0]);",
            &[json!(css)],
        );
        found[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned()))
    }

    pub fn find(&self, css: &str) -> Element {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no element matches {css}"))
    }

    pub fn click(&self, element: &Element) {
        self.cmd("POST", &format!("/element/{}/click", element.0), None);
    }

    pub fn click_css(&self, css: &str) {
        let element = self.find(css);
        self.click(&element);
    }

    pub fn clear(&self, element: &Element) {
        self.cmd("POST", &format!("/element/{}/clear", element.0), None);
    }

    pub fn type_text(&self, element: &Element, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        );
    }

    /// The rendered text of an element, as a person sees it.
    pub fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.cmd("GET", &format!("/element/{}/text", element.0), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn displayed(&self, css: &str) -> bool {
        self.try_find(css).is_some_and(|element| {
            self.cmd("GET", &format!("/element/{}/displayed", element.0), None) == true
        })
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Polls `script` until it returns something other than null/false.
    pub fn wait_for(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.execute(script, &[]);
            if !value.is_null() && value != false {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Moves the pointer to the centre of `element` (hover), by way of the
    /// viewport's corner: with chromedriver 156, a direct move from one
    /// point of a chart to another was seen to reach no listener, while a
    /// move from outside always enters the element as a person's would.
    pub fn hover(&self, element: &Element) {
        self.cmd(
            "POST",
            "/actions",
            Some(json!({"actions": [{
                "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                "actions": [
                    {"type": "pointerMove", "duration": 0, "x": 1, "y": 1, "origin": "viewport"},
                    {"type": "pointerMove", "duration": 0, "x": 0, "y": 0,
                     "origin": {ELEMENT_KEY: element.0}},
                ]
            }]})),
        );
    }

    pub fn set_window_size(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// A PNG of the whole page at `width` CSS pixels (through the
    /// DevTools protocol, which can capture beyond the viewport; a headless
    /// window cannot grow past its screen), at most `max_height` tall.
    pub fn screenshot_full(&self, width: u32, max_height: u32, path: &Path) {
        let height = self
            .execute(
                "return Math.ceil(document.documentElement.scrollHeight);",
                &[],
            )
            .as_u64()
            .unwrap_or(900)
            .min(u64::from(max_height));
        let shot = self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": "Page.captureScreenshot", "params": {
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            }})),
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// The browser console since the last call (chromedriver's log).
    pub fn console(&self) -> Vec<String> {
        let log = self.cmd("POST", "/se/log", Some(json!({ "type": "browser" })));
        log.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
