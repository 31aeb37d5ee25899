//! `tally plan check|diff|codegen` against the tracking-plan fixtures of
//! `crates/tally-plan/tests/fixtures`: exact output, exit codes, `--json`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tally-plan/tests/fixtures")
}

fn tally(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .current_dir(fixtures())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn check_passes_a_clean_plan() {
    let out = tally(&["plan", "check", "plan.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "plan.yaml: 4 events, 0 errors, 0 warnings\n");
}

#[test]
fn check_fails_on_errors_and_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.json");
    std::fs::write(
        &file,
        r#"{"naming": {"event_case": "Title Case"}, "events": [
            {"name": "order completed", "versions": [{"version": 1}]}
        ]}"#,
    )
    .unwrap();
    let path = file.display().to_string();
    let out = tally(&["plan", "check", &path]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        format!(
            "error[event-name-case] \"order completed\": not Title Case\n\
             warning[missing-description] \"order completed\": no description: say what the event means and when it is sent\n\
             {path}: 1 events, 1 errors, 1 warnings\n"
        )
    );
    let out = tally(&["plan", "check", "--json", &path]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["errors"], 1);
    assert_eq!(doc["warnings"], 1);
    assert_eq!(doc["findings"][0]["code"], "event-name-case");
    assert_eq!(doc["findings"][0]["severity"], "error");
}

#[test]
fn check_reports_a_file_that_is_not_a_plan() {
    let out = tally(&["plan", "check", "no-such-plan.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("loading the plan no-such-plan.yaml"), "{err}");
}

#[test]
fn diff_lists_changes_and_fails_when_one_breaks() {
    let out = tally(&["plan", "diff", "plan.yaml", "plan-next.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 13, "{text}");
    assert_eq!(
        lines[3],
        r#"ok       version-added "Order Completed" v3: added"#
    );
    assert_eq!(lines[12], "12 changes, 5 breaking");

    let out = tally(&["plan", "diff", "--json", "plan.yaml", "plan-next.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["breaking"], true);
    assert_eq!(doc["changes"].as_array().unwrap().len(), 12);
    assert_eq!(doc["changes"][7]["code"], "event-removed");

    let out = tally(&["plan", "diff", "plan.yaml", "plan.yaml"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "0 changes, 0 breaking\n");
}

#[test]
fn codegen_writes_what_the_library_generates() {
    for (lang, file) in [
        ("rust", "tracking.rs"),
        ("typescript", "tracking.ts"),
        ("kotlin", "Tracking.kt"),
        ("swift", "Tracking.swift"),
    ] {
        let expected = std::fs::read_to_string(fixtures().join("codegen").join(file)).unwrap();
        let out = tally(&["plan", "codegen", "--lang", lang, "plan.yaml"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(stdout(&out), expected, "{lang}");
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("tracking.ts");
    let out = tally(&[
        "plan",
        "codegen",
        "--lang",
        "typescript",
        "--out",
        target.to_str().unwrap(),
        "plan.yaml",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(target).unwrap(),
        std::fs::read_to_string(fixtures().join("codegen/tracking.ts")).unwrap()
    );
    let out = tally(&["plan", "codegen", "--lang", "cobol", "plan.yaml"]);
    assert_eq!(out.status.code(), Some(2));
}
