//! Segment's and RudderStack's own client libraries, installed from PyPI
//! and npm inside the test, sending to the real `tally serve` on loopback.
//! The collector must take what they send unchanged, and count it exactly.
//!
//! Needs `python3` (with venv), `node` and `npm`, and access to PyPI and
//! the npm registry.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::path::Path;
use std::process::Command;

use serve_support::*;

/// Runs `cmd`, failing the test with its output if it fails.
fn run(cmd: &mut Command, what: &str) -> String {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn count(agent: &ureq::Agent, server: &Server, event: &str) -> u64 {
    let url = server.url(&format!(
        "/v1/events/count?event={}",
        event.replace(' ', "%20")
    ));
    let (status, body) = admin_get(agent, &url);
    assert_eq!(status, 200, "{body}");
    body["count"].as_u64().unwrap()
}

const PYTHON_SCRIPT: &str = r#"
import sys
import segment.analytics.client as segment_client
import rudderstack.analytics.client as rudder_client

host, key = sys.argv[1], sys.argv[2]
errors = []

def on_error(error, items):
    errors.append(repr(error))

for name, module, event in [
    ("segment", segment_client, "Python Segment Event"),
    ("rudder", rudder_client, "Python Rudder Event"),
]:
    # Sync mode: one request per call, errors raised.
    sync = module.Client(key, host=host, sync_mode=True, gzip=True, on_error=on_error, max_retries=1)
    for i in range(5):
        sync.track(user_id=None, anonymous_id=f"{name}-anon", event=event, properties={"i": i, "mode": "sync"})
    sync.identify(user_id=f"{name}-user", traits={"plan": "pro"})
    # Batching mode: a background consumer posts gzip batches.
    batching = module.Client(key, host=host, gzip=True, on_error=on_error, max_retries=1)
    for i in range(40):
        batching.track(user_id=f"{name}-user", event=event, properties={"i": i, "mode": "batch"})
    batching.page(user_id=f"{name}-user", name="Home")
    batching.flush()
    batching.join()

if errors:
    print("errors:", errors)
    sys.exit(1)
print("ok")
"#;

#[test]
fn segment_and_rudderstack_python_libraries() {
    let dir = temp_dir("python");
    let server = Server::start(&dir.path().join("data"), None, &[]);
    let venv = dir.path().join("venv");
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    );
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(["segment-analytics-python>=2,<3", "rudder-sdk-python>=2,<3"]),
        "pip install",
    );
    let script = dir.path().join("send.py");
    std::fs::write(&script, PYTHON_SCRIPT).unwrap();
    let out = run(
        Command::new(venv.join("bin/python"))
            .arg(&script)
            .arg(&server.base)
            .arg(WRITE_KEY),
        "python clients",
    );
    assert!(out.contains("ok"), "{out}");

    let agent = agent();
    assert_eq!(count(&agent, &server, "Python Segment Event"), 45);
    assert_eq!(count(&agent, &server, "Python Rudder Event"), 45);
    assert_eq!(count(&agent, &server, "Home"), 2);
    // 45 tracks + 1 identify + 1 page per library, nothing rejected.
    assert_eq!(stats(&agent, &server), (94, 0, 0, 94));
    // A wrong key is refused in a way the library reports as an error.
    let bad = dir.path().join("bad.py");
    std::fs::write(
        &bad,
        "import sys\nimport rudderstack.analytics.client as c\n\
         cl = c.Client('wrong', host=sys.argv[1], sync_mode=True, max_retries=0)\n\
         try:\n    cl.track(user_id='u', event='Nope')\nexcept Exception as e:\n    print('refused', getattr(e, 'status', ''), getattr(e, 'code', ''))\n",
    )
    .unwrap();
    let out = run(
        Command::new(venv.join("bin/python"))
            .arg(&bad)
            .arg(&server.base),
        "rudder wrong key",
    );
    assert!(out.contains("refused 401 unauthorized"), "{out}");
    assert_eq!(count(&agent, &server, "Nope"), 0);
}

const NODE_SCRIPT: &str = r#"
const { Analytics } = require('@segment/analytics-node');
const [host, writeKey] = process.argv.slice(2);
const analytics = new Analytics({ writeKey, host, flushAt: 15, maxRetries: 2 });
let errors = 0;
analytics.on('error', (e) => { errors++; console.error('error', e); });
(async () => {
  for (let i = 0; i < 40; i++) {
    analytics.track({ anonymousId: 'node-anon', event: 'Node Event', properties: { i } });
  }
  analytics.identify({ userId: 'node-user', traits: { plan: 'pro' } });
  analytics.alias({ userId: 'node-user', previousId: 'node-anon' });
  await analytics.closeAndFlush({ timeout: 30000 });
  if (errors) process.exit(1);
  console.log('ok');
})();
"#;

fn node_available(dir: &Path) -> bool {
    Command::new("node")
        .arg("--version")
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn segment_node_library() {
    let dir = temp_dir("node");
    assert!(node_available(dir.path()), "node is not installed");
    let server = Server::start(&dir.path().join("data"), None, &[]);
    let project = dir.path().join("client");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("package.json"),
        r#"{"name":"tally-node-client","private":true}"#,
    )
    .unwrap();
    run(
        Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "@segment/analytics-node@^3",
            ])
            .current_dir(&project),
        "npm install",
    );
    std::fs::write(project.join("send.js"), NODE_SCRIPT).unwrap();
    let out = run(
        Command::new("node")
            .arg("send.js")
            .arg(&server.base)
            .arg(WRITE_KEY)
            .current_dir(&project),
        "node client",
    );
    assert!(out.contains("ok"), "{out}");
    let agent = agent();
    assert_eq!(count(&agent, &server, "Node Event"), 40);
    assert_eq!(stats(&agent, &server), (42, 0, 0, 42));
}
