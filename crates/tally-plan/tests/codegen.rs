//! Generated code for the fixture plan, compared line for line with the
//! files in `tests/fixtures/codegen/` (run with `UPDATE_CODEGEN=1` to
//! rewrite them after an intended change, and review the diff), and the
//! errors of plans whose names collide.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use tally_plan::codegen::{generate, CodegenError, Lang};
use tally_plan::{Format, Plan};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture() -> Plan {
    Plan::load(&dir().join("plan.yaml")).unwrap()
}

#[test]
fn each_language_matches_its_reviewed_output() {
    let plan = fixture();
    for (lang, file) in [
        (Lang::Rust, "tracking.rs"),
        (Lang::TypeScript, "tracking.ts"),
        (Lang::Kotlin, "Tracking.kt"),
        (Lang::Swift, "Tracking.swift"),
    ] {
        let code = generate(&plan, lang).unwrap();
        let path = dir().join("codegen").join(file);
        if std::env::var_os("UPDATE_CODEGEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &code).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap();
        assert_eq!(code, expected, "{lang}: {}", path.display());
    }
}

#[test]
fn deprecated_events_get_no_code() {
    let code = generate(&fixture(), Lang::Rust).unwrap();
    assert!(!code.contains("Checkout Started"));
    assert!(code.contains("pub fn track_order_completed("));
}

#[test]
fn names_that_become_one_identifier_are_refused() {
    let plan = Plan::parse(
        "events: [{name: Order Completed, versions: [{version: 1}]}, {name: order_completed, versions: [{version: 1}]}]",
        Format::Yaml,
    )
    .unwrap();
    assert_eq!(
        generate(&plan, Lang::TypeScript).unwrap_err(),
        CodegenError::Collision {
            first: "Order Completed".into(),
            second: "order_completed".into(),
            ident: "OrderCompleted".into()
        }
    );
    let plan = Plan::parse(
        "events: [{name: A B, versions: [{version: 1, properties: {type: object, properties: {x: {enum: [a-b, a_b]}}}}]}]",
        Format::Yaml,
    )
    .unwrap();
    assert_eq!(
        generate(&plan, Lang::Rust).unwrap_err().to_string(),
        r#""a-b" and "a_b" both become `AB` in generated code: rename one"#
    );
    assert_eq!(
        "cobol".parse::<Lang>().unwrap_err().to_string(),
        r#"unknown language "cobol": rust, typescript, kotlin or swift"#
    );
}

#[test]
fn swift_keywords_among_event_names_are_escaped_where_the_version_is_named() {
    let plan = Plan::parse(
        "events: [{name: Default, versions: [{version: 1}, {version: 2}]}]",
        Format::Yaml,
    )
    .unwrap();
    let swift = generate(&plan, Lang::Swift).unwrap();
    assert!(
        swift.contains("    public static let `default`: UInt32 = 2\n"),
        "{swift}"
    );
    assert!(
        swift.contains("eventVersion: TallyPlanVersions.`default`))"),
        "{swift}"
    );
    let kotlin = generate(&plan, Lang::Kotlin).unwrap();
    assert!(
        kotlin.contains("const val DEFAULT_VERSION: UInt = 2u\n"),
        "{kotlin}"
    );
    assert!(
        kotlin.contains("eventVersion = DEFAULT_VERSION))"),
        "{kotlin}"
    );
}
