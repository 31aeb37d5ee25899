//! `tally completions SHELL` and `tally man` print what a package installs:
//! scripts and a page that name every command.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn tally(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tally {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands every generated file must name.
const COMMANDS: [&str; 10] = [
    "serve",
    "emit",
    "inspect",
    "simulate",
    "query",
    "bench",
    "export",
    "backup",
    "completions",
    "man",
];

#[test]
fn every_shell_gets_a_script_naming_every_command() {
    for (shell, marker) in [
        ("bash", "complete -F _tally"),
        ("zsh", "#compdef tally"),
        ("fish", "complete -c tally"),
        ("elvish", "edit:completion:arg-completer[tally]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let script = tally(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for command in COMMANDS {
            assert!(script.contains(command), "{shell}: no {command}");
        }
    }
}

#[test]
fn completions_offer_the_closed_choices_of_a_flag() {
    let script = tally(&["completions", "bash"]);
    // `tally export --format` takes ndjson or parquet.
    assert!(script.contains("ndjson parquet"), "{script}");
}

#[test]
fn an_unknown_shell_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn the_man_page_has_a_section_per_command_with_its_flags() {
    let page = tally(&["man"]);
    assert!(page.contains(".TH tally 1"), "{page}");
    for command in COMMANDS {
        let heading = format!(".SH \"TALLY {}\"", command.to_uppercase());
        assert!(page.contains(&heading), "no {heading}");
    }
    assert!(page.contains(".SH \"TALLY QUERY FUNNEL\""));
    // The list of commands points at those sections, not at pages of
    // their own that are not installed.
    assert!(page.contains("\ntally serve\n"), "{page}");
    assert!(!page.contains("(1)"), "{page}");
    assert!(page.contains(".SH \"TALLY INSPECT LOG\""));
    // Flags of subcommands, as roff escapes their dashes.
    for flag in [
        r"\-\-data\-dir",
        r"\-\-admin\-token",
        r"\-\-row\-group\-rows",
    ] {
        assert!(page.contains(flag), "no {flag}");
    }
}
