//! Running the real `tally serve` binary on loopback for black-box tests.

#![allow(dead_code, clippy::unwrap_used)]

pub mod child;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tally_proto::{format_timestamp, Batch, ContentEncoding, EncodedBatch, Message};

pub const WRITE_KEY: &str = "test-write-key";
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A `tally serve` child process.
pub struct Server {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `tally serve` on 127.0.0.1 (port 0 unless `listen` says) with
    /// the test keys and `extra` arguments.
    pub fn start(data_dir: &Path, listen: Option<&str>, extra: &[&str]) -> Server {
        Self::start_with_env(data_dir, listen, extra, &[])
    }

    /// Starts `tally serve` with the test keys on the command line and the
    /// settings of the `config` file, plus `extra` arguments.
    pub fn start_with_config(data_dir: &Path, config: &Path, extra: &[&str]) -> Server {
        let config = config.to_str().unwrap();
        let mut args = vec![
            "--write-key",
            WRITE_KEY,
            "--admin-token",
            ADMIN_TOKEN,
            "--config",
            config,
        ];
        args.extend_from_slice(extra);
        Self::start(data_dir, None, &args)
    }

    /// Starts `tally serve` with the test keys, storing in the PostgreSQL
    /// database at `url`.
    pub fn start_postgres(data_dir: &Path, url: &str) -> Server {
        let args = [
            "--write-key",
            WRITE_KEY,
            "--admin-token",
            ADMIN_TOKEN,
            "--database-url",
            url,
        ];
        Self::start(data_dir, None, &args)
    }

    pub fn start_with_env(
        data_dir: &Path,
        listen: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        Self::spawn(
            Command::new(env!("CARGO_BIN_EXE_tally")),
            data_dir,
            listen,
            extra,
            env,
        )
    }

    /// Starts `tally serve` as [`Server::start`] does, after the shell
    /// command `setup` (`ulimit -n 96`, `umask 000`) in the same process.
    pub fn start_after(data_dir: &Path, setup: &str, extra: &[&str]) -> Server {
        let mut cmd = Command::new("bash");
        cmd.args([
            "-c",
            &format!("{setup} && exec \"$@\""),
            "tally",
            env!("CARGO_BIN_EXE_tally"),
        ]);
        Self::spawn(cmd, data_dir, None, extra, &[])
    }

    fn spawn(
        mut cmd: Command,
        data_dir: &Path,
        listen: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        cmd.arg("serve")
            .args(["--listen", listen.unwrap_or("127.0.0.1:0")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        child::clean_env(&mut cmd);
        if !extra
            .iter()
            .any(|a| *a == "--write-key" || *a == "--config")
            && !env.iter().any(|(k, _)| *k == "TALLY_WRITE_KEYS")
        {
            cmd.args(["--write-key", WRITE_KEY, "--admin-token", ADMIN_TOKEN]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = child::start(cmd, "tally serve");
        Server {
            child: started.child,
            base: started.base,
            data_dir: data_dir.to_owned(),
            log: started.log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)
                    .and_then(|v| v.trim_start_matches(':').trim().strip_suffix("kB"))
            })
            .map(|v| v.trim().parse().unwrap())
            .unwrap()
    }

    /// kill -9.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits up to `timeout` for the exit.
    pub fn terminate(mut self, timeout: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A client that returns every status as a response.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// (status, body as JSON, or as a string when it is not JSON).
pub fn read(mut response: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Posts an encoded batch to /v1/batch with the test write key.
pub fn post_batch(
    agent: &ureq::Agent,
    server_base: &str,
    batch: &EncodedBatch,
) -> Result<(u16, Value), ureq::Error> {
    let response = agent
        .post(format!("{server_base}/v1/batch"))
        .header("authorization", format!("Bearer {WRITE_KEY}"))
        .header("content-type", "application/json")
        .header("content-encoding", batch.encoding.as_str())
        .header("content-digest", &batch.digest)
        .send(&batch.body[..])?;
    Ok(read(response))
}

pub fn admin_get(agent: &ureq::Agent, url: &str) -> (u16, Value) {
    read(
        agent
            .get(url)
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .call()
            .unwrap(),
    )
}

/// `/v1/stats` as (accepted, duplicate, rejected, events).
pub fn stats(agent: &ureq::Agent, server: &Server) -> (u64, u64, u64, u64) {
    let (status, s) = admin_get(agent, &server.url("/v1/stats"));
    assert_eq!(status, 200, "{s}");
    let n = |k: &str| s[k].as_u64().unwrap();
    (n("accepted"), n("duplicate"), n("rejected"), n("events"))
}

/// A Tally SDK-shaped track message.
pub fn message(prefix: &str, n: u64) -> Message {
    let mut msg = Message::track(
        format!("{prefix}-{n:08}"),
        format_timestamp(tally_collector::clock::now_ms() - 5_000),
        "Item Added",
    );
    msg.anonymous_id = Some(format!("anon-{}", n % 17));
    msg.properties =
        tally_proto::RawJson::from_text(&json!({"n": n, "sku": "sku-1"}).to_string()).ok();
    let tally = msg.tally_mut();
    tally.install_id = Some(format!("{prefix}-install"));
    tally.seq = Some(n + 1);
    msg
}

/// `count` batches of `size` distinct messages each, zstd like the SDK.
pub fn batches(prefix: &str, count: usize, size: usize) -> Vec<EncodedBatch> {
    (0..count)
        .map(|b| {
            let messages = (0..size)
                .map(|i| message(prefix, (b * size + i) as u64))
                .collect();
            Batch::new(messages, format_timestamp(tally_collector::clock::now_ms()))
                .encode(ContentEncoding::Zstd)
        })
        .collect()
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tally-{name}-"))
        .tempdir()
        .unwrap()
}

/// A port that was free a moment ago (for a server restarted on the same
/// address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[path = "../../../tally-collector/tests/support/test_db.rs"]
mod test_db;
/// A database of its own on the PostgreSQL server, dropped when the value
/// is (the collector's tests use the same one).
#[allow(unused_imports)] // test files without PostgreSQL include this module too
pub use test_db::TestDb;
