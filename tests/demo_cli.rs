//! `membrane demo --check`: the whole product on one machine (dev CA, control server over
//! examples/cells, a gateway per cell over xDS, upstreams, a demo token), and the calls the
//! demo suggests answer as promised: a public call with the token 200, without it 401, an
//! allowed inter-cell call 200, a denied one 403, an endpoint a cell keeps to itself 403,
//! and on a west listener: an allowed cell's certificate 200, another cell's 403, none
//! refused in the handshake.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_demo_runs_and_its_calls_answer_as_promised() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIPPED: curl is not installed (.ci/run installs it)");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("membrane-demo-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["demo", "--check", "--spec-dir"])
        .arg(root.join("examples/cells"))
        .arg("--work-dir")
        .arg(&work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("check: ").count(), 8, "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
    assert!(stdout.contains("curl --cacert"), "{stdout}");
}
