//! The Prometheus rules in deploy/prometheus/: valid (`promtool check rules`) and doing what
//! their unit tests say (`promtool test rules`). promtool is Debian's `prometheus` package;
//! without it the test fails in CI and is skipped elsewhere (tests/common::missing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

fn promtool() -> Option<Command> {
    let ok = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| {
        let mut c = Command::new("promtool");
        c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus"));
        c
    })
}

#[test]
fn the_rules_are_valid_and_their_unit_tests_pass() {
    let Some(mut check) = promtool() else {
        common::missing("promtool (Debian package prometheus)");
        return;
    };
    let out = check
        .args([
            "check",
            "rules",
            "membrane-rules.yaml",
            "membrane-identity-rules.yaml",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = promtool()
        .unwrap()
        .args(["test", "rules", "tests/identity-rules.test.yaml"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("SUCCESS"), "{text}");
}
