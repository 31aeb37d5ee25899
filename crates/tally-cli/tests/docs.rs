//! The documentation cannot rot: every command and payload in `README.md`
//! and `docs/*.md` runs here, against the real `tally` binary.
//!
//! Code fences are read by their info string:
//!
//! | fence | what this test does |
//! |---|---|
//! | ` ```sh server ` | starts the command in the background (with `--listen 127.0.0.1:0 --data-dir tally-data` appended; a running one is stopped first) and waits for it to listen; later blocks of the page talk to it |
//! | ` ```sh ` | runs the block with `bash -euo pipefail` in the page's working directory; it must exit 0 |
//! | ` ```json post=PATH [expect=STATUS[:REASON]] ` | POSTs the payload to PATH with the write key; every result must have that status (default `accepted`) |
//! | ` ```sh no-run `, anything else | not run (output samples, commands that would recurse or take minutes) |
//!
//! Before a block runs, `cargo run --release --` becomes the `tally` binary
//! under test, `cargo run --release -p tally-sdk --example NAME --` becomes
//! the example binary the workspace's test build made, and
//! `http://127.0.0.1:8080` becomes the page's server. Pages run one after
//! another, each with its own server and working directory. A block that
//! needs a server when its page started none gets one with the keys the
//! docs use (`dev-write-key`, `dev-admin-token-local`).

#![allow(clippy::unwrap_used)]

#[path = "serve_support/child.rs"]
mod child;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The keys every page uses.
const WRITE_KEY: &str = "dev-write-key";
const ADMIN_TOKEN: &str = "dev-admin-token-local";
/// What the quickstart's server is started with.
const DEFAULT_SERVER: &str =
    "cargo run --release -- serve --write-key dev-write-key --admin-token dev-admin-token-local";
/// The address the docs show.
const DOC_BASE: &str = "http://127.0.0.1:8080";

#[derive(Debug, Clone, PartialEq)]
enum Block {
    Server(String),
    Shell(String),
    Post {
        path: String,
        expect: String,
        body: String,
    },
}

#[derive(Debug)]
struct Located {
    line: usize,
    block: Block,
}

/// The runnable blocks of one Markdown page, in order.
fn blocks(markdown: &str) -> Vec<Located> {
    let mut out = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let trimmed = line.trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let mut body = String::new();
        for (_, inner) in lines.by_ref() {
            if inner.trim_start().starts_with("```") {
                break;
            }
            body.push_str(inner.get(indent..).unwrap_or(inner.trim_start()));
            body.push('\n');
        }
        let mut words = info.split_whitespace();
        let block = match (words.next(), words.next()) {
            (Some("sh"), None) => Block::Shell(body),
            (Some("sh"), Some("server")) => Block::Server(body),
            (Some("json"), Some(post)) if post.starts_with("post=") => {
                let expect = words
                    .find_map(|w| w.strip_prefix("expect="))
                    .unwrap_or("accepted");
                Block::Post {
                    path: post["post=".len()..].to_owned(),
                    expect: expect.to_owned(),
                    body,
                }
            }
            _ => continue,
        };
        out.push(Located { line: n + 1, block });
    }
    out
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_owned()
}

/// The directory the test build puts example binaries in.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/docs-HASH → target/<profile>/examples
    exe.parent().unwrap().parent().unwrap().join("examples")
}

/// The page's text with the commands pointed at what is under test.
fn substitute(text: &str, base: Option<&str>) -> String {
    let mut out = text.replace("cargo run --release --", env!("CARGO_BIN_EXE_tally"));
    while let Some(start) = out.find("cargo run --release -p tally-sdk --example ") {
        let rest = &out[start + "cargo run --release -p tally-sdk --example ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let end = start + "cargo run --release -p tally-sdk --example ".len() + name.len();
        let end = if out[end..].starts_with(" --") {
            end + 3
        } else {
            end
        };
        let binary = examples_dir().join(&name);
        assert!(
            binary.exists(),
            "example {name} is not built at {}: run the whole suite (`cargo test --workspace` builds examples)",
            binary.display()
        );
        out.replace_range(start..end, &binary.display().to_string());
    }
    match base {
        Some(base) => out.replace(DOC_BASE, base),
        None => out,
    }
}

struct Running {
    child: Child,
    base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(command: &str, data_dir: &Path, workdir: &Path) -> Running {
    let command = substitute(command.trim(), None);
    let script = format!(
        "exec {command} --listen 127.0.0.1:0 --data-dir '{}'",
        data_dir.display()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]).current_dir(workdir);
    child::clean_env(&mut cmd);
    let started = child::start(cmd, &format!("`{command}`"));
    let (child, base) = (started.child, started.base);
    Running { child, base }
}

fn run_shell(script: &str, workdir: &Path, page: &str, line: usize) {
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", script])
        .current_dir(workdir)
        .stdin(Stdio::null());
    let output = child::clean_env(&mut cmd).output().unwrap();
    assert!(
        output.status.success(),
        "{page}:{line}: the documented command failed ({})\n--- script\n{script}--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

fn post(base: &str, path: &str, body: &str, expect: &str, page: &str, line: usize) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let credentials = base64_basic(WRITE_KEY);
    let mut response = agent
        .post(&format!("{base}{path}"))
        .header("content-type", "application/json")
        .header("authorization", &format!("Basic {credentials}"))
        .send(body)
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    let answer: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{page}:{line}: {path} answered {status}: {text}"));
    assert_eq!(status, 200, "{page}:{line}: {path} answered {answer}");
    let (want_status, want_reason) = match expect.split_once(':') {
        Some((s, r)) => (s, Some(r)),
        None => (expect, None),
    };
    let results = answer["results"].as_array().unwrap();
    assert!(!results.is_empty(), "{page}:{line}: no results in {answer}");
    for result in results {
        assert_eq!(
            result["status"], want_status,
            "{page}:{line}: expected {expect}, got {answer}"
        );
        if let Some(reason) = want_reason {
            assert_eq!(result["reason"], reason, "{page}:{line}: {answer}");
        }
    }
}

fn base64_basic(user: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:"))
}

fn run_page(page: &Path) -> usize {
    let name = page
        .strip_prefix(repo_root())
        .unwrap_or(page)
        .display()
        .to_string();
    let markdown = std::fs::read_to_string(page).unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut server: Option<Running> = None;
    let mut ran = 0;
    for Located { line, block } in blocks(&markdown) {
        if server.is_none() && !matches!(block, Block::Server(_)) {
            let data = work.path().join("tally-data");
            server = Some(start_server(DEFAULT_SERVER, &data, work.path()));
        }
        match block {
            Block::Server(command) => {
                drop(server.take());
                let data = work.path().join("tally-data");
                server = Some(start_server(&command, &data, work.path()));
            }
            Block::Shell(script) => {
                let base = server.as_ref().map(|s| s.base.as_str());
                run_shell(&substitute(&script, base), work.path(), &name, line);
            }
            Block::Post { path, expect, body } => {
                let base = &server.as_ref().unwrap().base;
                post(base, &path, &body, &expect, &name, line);
            }
        }
        ran += 1;
    }
    ran
}

fn pages() -> Vec<PathBuf> {
    let root = repo_root();
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

#[test]
fn every_documented_command_and_payload_runs() {
    let mut total = 0;
    for page in pages() {
        let ran = run_page(&page);
        eprintln!("{}: {ran} blocks ran", page.display());
        total += ran;
    }
    assert!(total >= 10, "only {total} documented blocks ran");
}

#[test]
fn fences_are_read_by_their_info_string() {
    let page = "# t\n\n```sh server\nserve --x\n```\n\n```sh\necho hi\n```\n\n```sh no-run\nnope\n```\n\n```json post=/v1/batch expect=rejected:missing_type\n{}\n```\n\n```json\n{}\n```\n";
    let got: Vec<Block> = blocks(page).into_iter().map(|l| l.block).collect();
    assert_eq!(
        got,
        vec![
            Block::Server("serve --x\n".into()),
            Block::Shell("echo hi\n".into()),
            Block::Post {
                path: "/v1/batch".into(),
                expect: "rejected:missing_type".into(),
                body: "{}\n".into()
            },
        ]
    );
}

#[test]
fn commands_are_pointed_at_the_binary_under_test() {
    let text = "cargo run --release -- emit --endpoint http://127.0.0.1:8080 --count 1";
    let got = substitute(text, Some("http://127.0.0.1:4242"));
    assert_eq!(
        got,
        format!(
            "{} emit --endpoint http://127.0.0.1:4242 --count 1",
            env!("CARGO_BIN_EXE_tally")
        )
    );
}

/// Every flag and variable of `tally serve --help` is in the operating
/// guide's reference, so a new setting cannot ship undocumented.
#[test]
fn the_configuration_reference_lists_every_serve_setting() {
    let help = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let guide = std::fs::read_to_string(repo_root().join("docs/operating.md")).unwrap();
    let mut checked = 0;
    let words = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| !w.is_empty());
    for word in words {
        let flag = word.starts_with("--") && word.len() > 2 && word != "--help";
        let variable = word.starts_with("TALLY_") && !word.ends_with('_');
        let documented = (flag || variable).then(|| format!("`{word}`"));
        if let Some(needle) = documented {
            assert!(
                guide.contains(&needle),
                "docs/operating.md does not document {word}"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 16,
        "only {checked} settings found in --help:\n{help}"
    );
}

/// Every metric family `/metrics` exports is in the metrics reference.
#[test]
fn the_metrics_reference_lists_every_exported_metric() {
    let work = tempfile::tempdir().unwrap();
    let server = start_server(DEFAULT_SERVER, &work.path().join("tally-data"), work.path());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let text = agent
        .get(&format!("{}/metrics", server.base))
        .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let guide = std::fs::read_to_string(repo_root().join("docs/operating.md")).unwrap();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.len() >= 4, "{text}");
    for family in families {
        assert!(
            guide.contains(&format!("`{family}")),
            "docs/operating.md does not document the metric {family}"
        );
    }
}
