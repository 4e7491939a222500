//! `membrane demo --check`: the whole product on one machine (dev CA, control server over
//! examples/cells, a gateway per cell over xDS, upstreams, a demo token), and the calls the
//! demo suggests answer as promised: a public call with the token 200, without it 401, an
//! allowed inter-cell call 200, a denied one 403, an endpoint a cell keeps to itself 403,
//! and on a west listener: an allowed cell's certificate 200, another cell's 403, none
//! refused in the handshake.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

#[test]
fn the_demo_runs_and_its_calls_answer_as_promised() {
    if Command::new("curl").arg("--version").output().is_err() {
        common::missing("curl is not installed (.ci/run installs it)");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("membrane-demo-test-{}", std::process::id()));
    let demo = || {
        Command::new(env!("CARGO_BIN_EXE_membrane"))
            .args(["demo", "--check", "--spec-dir"])
            .arg(root.join("examples/cells"))
            .arg("--work-dir")
            .arg(&work)
            .output()
            .unwrap()
    };
    let out = demo();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("check: ").count(), 8, "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
    assert!(stdout.contains("curl --cacert"), "{stdout}");

    // The gateways' private keys are the owner's alone, as `membrane cert` writes them.
    use std::os::unix::fs::PermissionsExt;
    let keys: Vec<_> = std::fs::read_dir(work.join("pki"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("-key.pem"))
        .collect();
    assert!(!keys.is_empty());
    for k in keys {
        let mode = k.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", k.path().display());
    }

    // A second demo while the first holds its ports (here: the control server's, held by
    // this test) fails before it touches the first one's directory.
    let marker = work.join("pki").join("ca.pem");
    let before = std::fs::read(&marker).unwrap();
    let _held = std::net::TcpListener::bind("127.0.0.1:18000").unwrap();
    let out = demo();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("127.0.0.1:18000 is in use") && stderr.contains("nothing in"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&marker).unwrap(),
        before,
        "the directory was wiped"
    );
}
