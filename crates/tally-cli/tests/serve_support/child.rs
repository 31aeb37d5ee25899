//! A `tally serve` child process, started and waited for: the one place
//! the tests read the server's `listening on URL` line. Used by the
//! black-box server tests (`serve_support`), the SDK end-to-end tests
//! (`sdk_support`) and the docs test, which each add what they need on top.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// How long a server may take to print its address (a debug build opening
/// its store on a busy 2-core machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A started server: the process, its base URL, and every line it logged.
pub struct Started {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, or `https://…` when serving TLS.
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Removes the settings a developer's environment may carry, so a test
/// runs the server with exactly the arguments it gives.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("TALLY_WRITE_KEYS")
        .env_remove("TALLY_ADMIN_TOKEN")
        .env_remove("TALLY_DATABASE_URL")
}

/// Spawns `cmd` (which runs `tally serve`) with its stderr read on a
/// thread, and waits until the server says where it listens. Panics with
/// what it logged when it does not within [`START_TIMEOUT`].
pub fn start(mut cmd: Command, what: &str) -> Started {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(i) = line.find("listening on ") {
                // Text logs end the URL at a space, JSON logs at the quote
                // closing the message.
                let url = line[i + "listening on ".len()..]
                    .split(|c: char| c.is_whitespace() || c == '"')
                    .next()
                    .unwrap_or_default();
                let _ = tx.send(url.to_owned());
            }
            sink.lock().unwrap().push(line);
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(base) => Started { child, base, log },
        Err(_) => {
            let _ = child.kill();
            panic!("{what} did not start: {:?}", log.lock().unwrap());
        }
    }
}
