//! A collector the simulator runs itself: `tally serve` from this very
//! binary, on 127.0.0.1 with a SQLite store in a directory of the run (or
//! the PostgreSQL URL it was given), stopped and started again on the same
//! address by the `restart` fault.
//!
//! The child is a separate process, so the simulator's own CPU time (what
//! the storm report calls SDK CPU time) never includes the collector's.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How long a collector may take to print its address: it opens (and may
/// migrate) its store first.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a collector may take to exit after SIGTERM: its own grace
/// period for requests in flight is 30 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// Tries to bind the old address again: a port just released can stay
/// busy for a moment while the kernel tears the listener down.
const RESTART_ATTEMPTS: u32 = 20;
const RESTART_PAUSE: Duration = Duration::from_millis(100);

/// The collector's last lines kept for an error message.
const LOG_TAIL_LINES: usize = 40;

/// How a collector is stopped before a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: graceful, requests in flight complete.
    Term,
    /// SIGKILL: whatever was not committed is lost to the client, which
    /// must resend.
    Kill,
}

impl Stop {
    /// Its name in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::Term => "sigterm",
            Stop::Kill => "sigkill",
        }
    }
}

/// What `tally serve` is started with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub write_key: String,
    pub admin_token: String,
    pub database_url: Option<String>,
    pub max_in_flight: Option<usize>,
}

/// A running `tally serve` child.
#[derive(Debug)]
pub struct Collector {
    settings: Settings,
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    listen: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    /// Starts a collector on a free port.
    pub fn start(settings: Settings) -> anyhow::Result<Self> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (child, base) = spawn(&settings, "127.0.0.1:0", &log)?;
        let listen = base
            .strip_prefix("http://")
            .unwrap_or(base.as_str())
            .to_owned();
        Ok(Self {
            settings,
            child,
            base,
            listen,
            log,
        })
    }

    /// Stops the collector as `how` says and starts it again on the same
    /// address and store.
    pub fn restart(&mut self, how: Stop) -> anyhow::Result<()> {
        self.stop(how)?;
        let mut last_error = None;
        for _ in 0..RESTART_ATTEMPTS {
            match spawn(&self.settings, &self.listen, &self.log) {
                Ok((child, _)) => {
                    self.child = child;
                    return Ok(());
                }
                Err(e) => {
                    last_error = Some(e);
                    std::thread::sleep(RESTART_PAUSE);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the collector did not restart")))
    }

    fn stop(&mut self, how: Stop) -> anyhow::Result<()> {
        match how {
            Stop::Kill => {
                self.child.kill().context("killing the collector")?;
                self.child.wait().context("waiting for the collector")?;
            }
            Stop::Term => {
                let status = Command::new("kill")
                    .args(["-TERM", &self.child.id().to_string()])
                    .status()
                    .context("running kill -TERM")?;
                if !status.success() {
                    bail!("kill -TERM {} failed", self.child.id());
                }
                let deadline = Instant::now() + STOP_TIMEOUT;
                while self.child.try_wait()?.is_none() {
                    if Instant::now() >= deadline {
                        bail!(
                            "the collector did not exit within {STOP_TIMEOUT:?} of SIGTERM:\n{}",
                            self.log_tail()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Ok(())
    }

    /// The collector's last lines (for an error message).
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.join("\n")
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.stop(Stop::Term);
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn(
    settings: &Settings,
    listen: &str,
    log: &Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe().context("finding the tally binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .args(["--listen", listen])
        .arg("--data-dir")
        .arg(&settings.data_dir)
        .args(["--write-key", &settings.write_key])
        .args(["--admin-token", &settings.admin_token])
        // Only the arguments above configure it, not this shell's settings.
        .env_remove("TALLY_WRITE_KEYS")
        .env_remove("TALLY_ADMIN_TOKEN")
        .env_remove("TALLY_DATABASE_URL")
        .env_remove("TALLY_LISTEN")
        .env_remove("TALLY_DATA_DIR")
        .env_remove("TALLY_CONFIG")
        .env_remove("TALLY_MAX_IN_FLIGHT")
        .env("TALLY_LOG", "warn,tally=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(url) = &settings.database_url {
        cmd.args(["--database-url", url]);
    }
    if let Some(n) = settings.max_in_flight {
        cmd.args(["--max-in-flight", &n.to_string()]);
    }
    let mut child = cmd.spawn().context("starting tally serve")?;
    let stderr = child
        .stderr
        .take()
        .context("reading the collector's stderr")?;
    let (tx, rx) = mpsc::channel();
    let sink = Arc::clone(log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(i) = line.find("listening on ") {
                let url = line[i + "listening on ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send(url);
            }
            let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
            if log.len() >= LOG_TAIL_LINES {
                log.remove(0);
            }
            log.push(line);
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(base) => Ok((child, base)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = log.lock().unwrap_or_else(|p| p.into_inner());
            bail!("tally serve did not start:\n{}", log.join("\n"))
        }
    }
}
