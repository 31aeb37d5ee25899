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
//! | ` ```text output ` right after a ` ```sh ` block | that block's standard output, line for line; `…` in a line matches any text |
//! | ` ```text stderr ` right after a ` ```sh ` block | the same for its standard error (where `tally simulate` prints its summary) |
//! | ` ```text output shape `, ` ```text stderr shape ` | the same, with every number and every `{…}` group free: for outputs whose figures vary from run to run but whose lines and words do not |
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
    /// What the shell block before it must print on stdout (or stderr).
    Output {
        text: String,
        stderr: bool,
        shape: bool,
    },
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
            (Some("text"), Some(stream @ ("output" | "stderr"))) => {
                let shape = words.next() == Some("shape");
                let follows_shell = matches!(
                    out.last(),
                    Some(Located {
                        block: Block::Shell(_),
                        ..
                    })
                );
                assert!(
                    follows_shell,
                    "line {}: an output block must follow a runnable sh block",
                    n + 1
                );
                Block::Output {
                    text: body,
                    stderr: stream == "stderr",
                    shape,
                }
            }
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

/// Runs a documented block; returns what it printed on stdout and stderr.
fn run_shell(script: &str, workdir: &Path, page: &str, line: usize) -> (String, String) {
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
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Whether `printed` is the `documented` output: the same lines, where `…`
/// in a documented line stands for any text and, with `shape`, every
/// number and every `{…}` group (a JSON object, a map of counts) on either
/// side stands for any other.
fn output_matches(documented: &str, printed: &str, shape: bool) -> Result<(), String> {
    let lines = |text: &str| -> Vec<String> {
        let mut lines: Vec<String> = text
            .lines()
            .map(|l| {
                let l = l.trim_end();
                if shape {
                    numbers_free(&groups_free(l))
                } else {
                    l.to_owned()
                }
            })
            .collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    };
    let (want, got) = (lines(documented), lines(printed));
    if want.len() != got.len() {
        return Err(format!(
            "{} lines documented, {} printed",
            want.len(),
            got.len()
        ));
    }
    for (n, (w, g)) in want.iter().zip(&got).enumerate() {
        if !line_matches(w, g) {
            return Err(format!("line {}: documented `{w}`, printed `{g}`", n + 1));
        }
    }
    Ok(())
}

/// `printed` is `documented` with each `…` standing for any text.
fn line_matches(documented: &str, printed: &str) -> bool {
    let mut parts = documented.split('…');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = printed.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Every outermost `{…}` group of a line as `{}`.
fn groups_free(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut depth = 0usize;
    for c in line.chars() {
        match c {
            '{' => {
                if depth == 0 {
                    out.push_str("{}");
                }
                depth += 1;
            }
            '}' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(c),
        }
    }
    out
}

/// Every number of a line (digits, with a decimal part) as `0`.
fn numbers_free(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|n| n.is_ascii_digit() || *n == '.')
            {
                chars.next();
            }
            out.push('0');
        } else {
            out.push(c);
        }
    }
    out
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
    let mut printed = (String::new(), String::new());
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
                printed = run_shell(&substitute(&script, base), work.path(), &name, line);
            }
            Block::Output {
                text,
                stderr,
                shape,
            } => {
                let printed = if stderr { &printed.1 } else { &printed.0 };
                if let Err(why) = output_matches(&text, printed, shape) {
                    panic!(
                        "{name}:{line}: the documented output differs: {why}\n--- documented\n{text}--- printed\n{printed}"
                    );
                }
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
    let page = "# t\n\n```sh server\nserve --x\n```\n\n```sh\necho hi\n```\n\n```text stderr shape\nhi 2\n```\n\n```sh no-run\nnope\n```\n\n```json post=/v1/batch expect=rejected:missing_type\n{}\n```\n\n```json\n{}\n```\n";
    let got: Vec<Block> = blocks(page).into_iter().map(|l| l.block).collect();
    assert_eq!(
        got,
        vec![
            Block::Server("serve --x\n".into()),
            Block::Shell("echo hi\n".into()),
            Block::Output {
                text: "hi 2\n".into(),
                stderr: true,
                shape: true
            },
            Block::Post {
                path: "/v1/batch".into(),
                expect: "rejected:missing_type".into(),
                body: "{}\n".into()
            },
        ]
    );
}

#[test]
fn documented_outputs_are_compared_line_for_line() {
    assert_eq!(output_matches("a 1\nb\n", "a 1\nb\n\n", false), Ok(()));
    assert!(output_matches("a 1\n", "a 2\n", false).is_err());
    assert!(output_matches("a 1\n", "a 1\nb\n", false).is_err());
    assert_eq!(output_matches("id …, ok\n", "id x-7, ok\n", false), Ok(()));
    assert!(output_matches("id …, ok\n", "id x-7, no\n", false).is_err());
    assert!(output_matches("ab…ba\n", "aba\n", false).is_err());
    let sample = "tracked 12  dropped {\"log_full\": 3}  ok\n{\"tracked\":12,…}\n";
    let printed = "tracked 940  dropped {}  ok\n{\"tracked\":940,\"by\":{\"a\":1}}\n";
    assert_eq!(output_matches(sample, printed, true), Ok(()));
    assert!(output_matches(sample, printed, false).is_err());
    let words_differ = "tracked 940  dropped {}  failed\n{}\n";
    assert!(output_matches(sample, words_differ, true).is_err());
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
