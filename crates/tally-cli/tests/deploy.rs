//! `deploy/`: the example `tally.toml` is what the collector's own loader
//! reads, with every commented key valid too, and the systemd unit runs
//! flags `tally serve` has, on the paths the two files agree on.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tally_collector::config::Settings;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .join("deploy")
}

#[test]
fn the_example_config_loads_with_the_values_it_shows() {
    let path = deploy().join("tally.toml");
    let settings = Settings::from_file(&path).unwrap();
    assert_eq!(settings.listen.as_deref(), Some("127.0.0.1:8080"));
    assert_eq!(settings.data_dir, Some(PathBuf::from("/var/lib/tally")));
    assert_eq!(
        settings.write_keys,
        Some(vec!["ios-app-key".to_owned(), "android-app-key".to_owned()])
    );
    assert_eq!(settings.admin_token, None);
    assert_eq!(settings.read_tokens, None);
    assert_eq!(settings.database_url, None);
    let config = settings.resolve().unwrap();
    assert_eq!(
        config.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.max_in_flight, 64);
    assert_eq!(config.connections.idle_timeout, Duration::from_secs(65));
    assert_eq!(config.alerts.interval, Duration::from_secs(15));
    assert_eq!(config.alerts.window, Duration::from_secs(3600));
    let stale = config
        .alerts
        .rules
        .iter()
        .find(|(name, _)| *name == "stale_client_queues")
        .unwrap()
        .1;
    assert_eq!((stale.threshold, stale.for_s), (0.05, 0.0));
    assert_eq!(config.retention.default_days, None);
    assert_eq!(config.retention.dead_letters_days, 30);
    assert_eq!(config.retention.audit_days, 365);
    assert_eq!(config.retention.interval, Duration::from_secs(3600));
    assert_eq!(config.retention.chunk_rows, 5000);
    assert_eq!(config.dead_letters.max_rows, 100_000);
    assert_eq!(config.dead_letters.max_bytes, 268_435_456);
    assert_eq!(config.dead_letters.max_message_bytes, 32_768);
}

/// The file with every commented key (`# key = value`, `# [table]`,
/// `# "Event" = days`) switched on.
fn every_key_on(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.starts_with('"')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
            {
                rest.to_owned()
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `tally.toml` keys of the flags' rows of the configuration reference
/// in docs/operating.md (its third column).
fn reference_keys() -> Vec<String> {
    let guide = std::fs::read_to_string(deploy().join("../docs/operating.md")).unwrap();
    guide
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .filter_map(|l| l.split('|').nth(3))
        .flat_map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_commented_key_is_a_valid_setting() {
    let text = std::fs::read_to_string(deploy().join("tally.toml")).unwrap();
    let all = every_key_on(&text);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.toml");
    std::fs::write(&path, &all).unwrap();
    let settings = Settings::from_file(&path).unwrap_or_else(|e| panic!("{e}\n{all}"));
    // Every key of the reference is there.
    assert!(settings.database_url.is_some());
    assert!(settings.admin_token.is_some());
    assert_eq!(
        settings.read_tokens,
        Some(vec!["change-me-analyst-read-token".to_owned()])
    );
    assert!(settings.tls_cert.is_some() && settings.tls_key.is_some());
    assert_eq!(settings.max_connections, Some(4096));
    assert!(settings.cors_origins.is_some());
    assert!(settings.metrics_token.is_some());
    assert!(settings.metrics_listen.is_some());
    assert!(settings.alert_webhook.is_some());
    let config = settings.resolve().unwrap();
    assert_eq!(config.retention.default_days, Some(395));
    assert_eq!(config.retention.events.len(), 2);
    let rule = |name: &str| {
        config
            .alerts
            .rules
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    };
    assert_eq!(
        (
            rule("dedup_rate_high").threshold,
            rule("dedup_rate_high").for_s
        ),
        (0.1, 300.0)
    );
    assert_eq!(rule("rejection_rate_high").threshold, 0.01);
    assert_eq!(rule("completeness_gaps_growing").threshold, 0.0);
    let violations = rule("plan_violation_rate_high");
    assert_eq!((violations.threshold, violations.min_count), (0.05, 10));
    // Every top-level key of the reference in docs/operating.md, in its
    // order: a setting added there and not here fails.
    let top: Vec<&str> = all
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
        .collect();
    assert_eq!(top, reference_keys(), "{all}");
    assert!(config.key_rate.is_some());
    let tables: Vec<&str> = all.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(
        tables,
        [
            "[alerts]",
            "[alerts.stale_client_queues]",
            "[alerts.dedup_rate_high]",
            "[alerts.rejection_rate_high]",
            "[alerts.completeness_gaps_growing]",
            "[alerts.plan_violation_rate_high]",
            "[retention]",
            "[retention.events]",
            "[dead_letters]",
            "[plan]",
            "[plan.sources]",
        ]
    );
}

#[test]
fn the_unit_runs_flags_serve_has_on_the_paths_the_config_names() {
    let unit = std::fs::read_to_string(deploy().join("tally.service")).unwrap();
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(unit.lines().any(|l| l == section), "no {section}");
    }
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[..2], ["/usr/local/bin/tally", "serve"]);
    // The flags parse: `tally serve` with them and --help exits 0.
    let mut args: Vec<&str> = words[1..].to_vec();
    args.push("--help");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(exec.contains("--config /etc/tally/tally.toml"));
    // StateDirectory=tally is /var/lib/tally, the config's data_dir.
    let settings = Settings::from_file(&deploy().join("tally.toml")).unwrap();
    assert!(unit.lines().any(|l| l == "StateDirectory=tally"));
    assert_eq!(settings.data_dir, Some(PathBuf::from("/var/lib/tally")));
    for hardening in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "StateDirectoryMode=0700",
    ] {
        assert!(unit.lines().any(|l| l == hardening), "no {hardening}");
    }
}
