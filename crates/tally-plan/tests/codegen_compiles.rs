//! The generated Rust and TypeScript compile against the real SDKs, and a
//! wrong call (a missing required property, a value outside an enum) does
//! not.
//!
//! Rust: a crate in a temporary directory depends on `tally-sdk` by path,
//! with the workspace's `Cargo.lock` (so it resolves offline to the
//! versions the workspace builds) and a target directory kept under the
//! workspace's `target/` (so only the first run compiles the SDK's
//! dependencies), and `cargo check --offline` runs on it.
//!
//! TypeScript: `tsc --noEmit` from `sdks/web/node_modules` checks the
//! generated module and a caller against `sdks/web/src`, with the web
//! SDK's compiler options. `npm ci` runs first if `node_modules` is
//! missing; the test is skipped, saying so, only when node is not
//! installed.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tally_plan::codegen::{generate, Lang};
use tally_plan::Plan;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_owned()
}

fn fixture() -> Plan {
    Plan::load(&root().join("crates/tally-plan/tests/fixtures/plan.yaml")).unwrap()
}

/// Runs `cmd`; returns whether it succeeded and what it printed.
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const RUST_CALLER: &str = r##"
mod tracking;
use tracking::*;

pub fn checkout(tracker: &tally_sdk::Tracker) -> tally_sdk::TrackResult {
    track_cart_item_added(
        tracker,
        CartItemAdded {
            product_id: "p1".into(),
            quantity: 2,
            gift: None,
            tags: Some(vec!["sale".into()]),
            variant: None,
        },
    )?;
    track_newsletter_subscribed(
        tracker,
        NewsletterSubscribed { email: "a@example.com".into(), consented_at: None },
    )?;
    track_order_completed(
        tracker,
        OrderCompleted {
            order_id: "0192f5e4-3c1a-7b2e-9a4d-5f6e7d8c9b0a".into(),
            amount: 42.5,
            currency: OrderCompletedCurrency::Eur,
            coupon: None,
            item_count: Some(3),
        },
    )
}

#[test]
fn props_follow_the_plan() {
    let event = OrderCompleted {
        order_id: "o".into(),
        amount: 1.0,
        currency: OrderCompletedCurrency::Gbp,
        coupon: Some("C".into()),
        item_count: None,
    };
    assert_eq!(event.props().as_json(), r#"{"amount":1.0,"currency":"GBP","order_id":"o","coupon":"C"}"#);
    assert_eq!((OrderCompleted::NAME, OrderCompleted::VERSION), ("Order Completed", 2));
}
"##;

#[test]
fn generated_rust_compiles_and_wrong_calls_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path();
    let sdk = root().join("crates/tally-sdk");
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"plan-codegen-check\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
             [dependencies]\ntally-sdk = {{ path = {:?} }}\nserde_json = \"1\"\n\n\
             [workspace]\n\n[profile.dev]\ndebug = false\n",
            sdk.display().to_string()
        ),
    )
    .unwrap();
    std::fs::copy(root().join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    std::fs::create_dir(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("src/tracking.rs"),
        generate(&fixture(), Lang::Rust).unwrap(),
    )
    .unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = root().join("target/plan-codegen-check");
    let check = |caller: &str| {
        std::fs::write(krate.join("src/lib.rs"), caller).unwrap();
        run(Command::new(&cargo)
            .args(["check", "--offline", "--tests", "--quiet"])
            .current_dir(krate)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS"))
    };

    let (ok, out) = check(RUST_CALLER);
    assert!(ok, "the generated Rust does not compile:\n{out}");
    let (ok, out) = run(Command::new(&cargo)
        .args(["test", "--offline", "--quiet", "--lib"])
        .current_dir(krate)
        .env("CARGO_TARGET_DIR", &target));
    assert!(ok, "the generated Rust's properties are wrong:\n{out}");

    let missing = RUST_CALLER.replace("currency: OrderCompletedCurrency::Eur,", "");
    let (ok, out) = check(&missing);
    assert!(!ok, "a missing required property compiled");
    assert!(
        out.contains("missing field `currency` in initializer of `tracking::OrderCompleted`"),
        "{out}"
    );

    let wrong_enum =
        RUST_CALLER.replace("OrderCompletedCurrency::Eur", "OrderCompletedCurrency::Jpy");
    let (ok, out) = check(&wrong_enum);
    assert!(!ok, "a value outside the enum compiled");
    assert!(
        out.contains("no variant or associated item named `Jpy`"),
        "{out}"
    );

    let wrong_type = RUST_CALLER.replace("quantity: 2,", "quantity: \"2\",");
    let (ok, out) = check(&wrong_type);
    assert!(!ok, "a property of the wrong type compiled");
    assert!(out.contains("mismatched types"), "{out}");
}

const TS_CALLER: &str = r#"
import { Tracker } from "@tally/web";
import { trackCartItemAdded, trackOrderCompleted, ORDER_COMPLETED_VERSION } from "./tracking";

export function checkout(tracker: Tracker): boolean {
  const added = trackCartItemAdded(tracker, { product_id: "p1", quantity: 2, tags: ["sale"] });
  const done = trackOrderCompleted(
    tracker,
    { order_id: "0192f5e4-3c1a-7b2e-9a4d-5f6e7d8c9b0a", amount: 42.5, currency: "EUR", item_count: 3 },
    { dedupKey: "o-1" },
  );
  return added.ok && done.ok && ORDER_COMPLETED_VERSION === 2;
}
"#;

#[test]
fn generated_typescript_compiles_and_wrong_calls_do_not() {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED: node is not installed, so the generated TypeScript is not compiled");
        return;
    }
    let web = root().join("sdks/web");
    let tsc = web.join("node_modules/.bin/tsc");
    if !tsc.exists() {
        let (ok, out) = run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&web));
        assert!(ok, "npm ci in sdks/web failed:\n{out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    std::fs::write(
        project.join("tracking.ts"),
        generate(&fixture(), Lang::TypeScript).unwrap(),
    )
    .unwrap();
    // The web SDK's own compiler options, strictest included.
    let tsconfig = serde_json::json!({
        "compilerOptions": {
            "target": "ES2022",
            "module": "ES2022",
            "moduleResolution": "bundler",
            "lib": ["ES2022", "DOM", "DOM.Iterable"],
            "strict": true,
            "noUncheckedIndexedAccess": true,
            "exactOptionalPropertyTypes": true,
            "noImplicitOverride": true,
            "noFallthroughCasesInSwitch": true,
            "noUnusedLocals": true,
            "noUnusedParameters": true,
            "isolatedModules": true,
            "skipLibCheck": true,
            "noEmit": true,
            "types": [],
            "paths": { "@tally/web": [web.join("src/index.ts").display().to_string()] }
        },
        "files": ["caller.ts"]
    });
    std::fs::write(project.join("tsconfig.json"), tsconfig.to_string()).unwrap();
    let check = |caller: &str| {
        std::fs::write(project.join("caller.ts"), caller).unwrap();
        run(Command::new(&tsc)
            .args(["-p", "tsconfig.json"])
            .current_dir(project))
    };

    let (ok, out) = check(TS_CALLER);
    assert!(ok, "the generated TypeScript does not compile:\n{out}");

    let missing = TS_CALLER.replace(" currency: \"EUR\",", "");
    let (ok, out) = check(&missing);
    assert!(!ok, "a missing required property compiled");
    assert!(out.contains("Property 'currency' is missing"), "{out}");

    let wrong_enum = TS_CALLER.replace("\"EUR\"", "\"JPY\"");
    let (ok, out) = check(&wrong_enum);
    assert!(!ok, "a value outside the enum compiled");
    assert!(
        out.contains("Type '\"JPY\"' is not assignable to type 'OrderCompletedCurrency'"),
        "{out}"
    );

    let misspelt = TS_CALLER.replace("quantity: 2", "quantity: 2, colour: \"red\"");
    let (ok, out) = check(&misspelt);
    assert!(!ok, "an unplanned property compiled");
    assert!(
        out.contains("'colour' does not exist in type 'CartItemAddedProps'"),
        "{out}"
    );
}
