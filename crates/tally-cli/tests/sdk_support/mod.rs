//! Shared by the SDK's end-to-end tests: a real `tally serve` on loopback
//! (the binary this crate builds), and admin queries against it.

#![allow(dead_code, clippy::unwrap_used)]

#[path = "../serve_support/child.rs"]
mod child;
#[path = "../serve_support/tls.rs"]
mod tls;

pub use tls::TlsFiles;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use tally_sdk::{HttpTransport, Method, Request, Transport};

pub const WRITE_KEY: &str = "wk-test";
pub const ADMIN_TOKEN: &str = "sdk-test-admin-token";

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `tally serve`, killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`, or `https://` when serving TLS.
    pub url: String,
    pub port: u16,
    /// The CA the server's certificate chains to, when serving TLS.
    ca_pem: Option<Vec<u8>>,
}

impl Server {
    /// Starts a collector storing in `data_dir` on `port` (0: any).
    pub fn start(data_dir: &Path, port: u16) -> Server {
        Self::start_with(data_dir, port, None)
    }

    /// Starts a collector serving HTTPS with `tls`.
    pub fn start_tls(data_dir: &Path, tls: &TlsFiles) -> Server {
        Self::start_with(data_dir, 0, Some(tls))
    }

    fn start_with(data_dir: &Path, port: u16, tls: Option<&TlsFiles>) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--write-key", WRITE_KEY, "--admin-token", ADMIN_TOKEN]);
        if let Some(tls) = tls {
            command
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key);
        }
        command.env("TALLY_LOG", "info");
        let started = child::start(command, "tally serve");
        let (child, url) = (started.child, started.base);
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        Server {
            child,
            url,
            port,
            ca_pem: tls.map(|t| t.ca_pem.clone()),
        }
    }

    /// An admin GET, as JSON (status and body).
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let t = match &self.ca_pem {
            Some(pem) => HttpTransport::with_trusted_ca(&self.url, pem).unwrap(),
            None => HttpTransport::new(&self.url),
        };
        let r = t
            .send(&Request {
                method: Method::Get,
                path: path.to_owned(),
                headers: vec![("Authorization", format!("Bearer {ADMIN_TOKEN}"))],
                body: Vec::new(),
            })
            .unwrap();
        let body = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
        (r.status, body)
    }

    /// `/v1/stats`.
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = self.get("/v1/stats");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `/v1/installs/{id}`.
    pub fn install(&self, id: &str) -> serde_json::Value {
        let (status, body) = self.get(&format!("/v1/installs/{id}"));
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Stops the server (kill) and waits for it.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `dir/name`.
pub fn sub(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The JSON text of a batch the SDK sends (zstd-compressed on the wire).
pub fn batch_json(request: &Request) -> String {
    let limits = tally_proto::DecodeLimits::default();
    let json = tally_proto::decompress(&request.body, tally_proto::ContentEncoding::Zstd, &limits)
        .unwrap();
    String::from_utf8(json).unwrap()
}
