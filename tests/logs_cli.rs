//! Process logs of the binary: JSON lines with `--log-format json` (and by default when
//! stderr is not a terminal), plain text without colour codes with `--log-format text`, and
//! the level from `--log-level`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};

/// Starts the proxy with `flags`, returns its stderr lines up to and including the one that
/// says the admin listener is up (at most 200 lines), then stops it.
fn first_lines(flags: &[&str]) -> Vec<String> {
    let port = common::closed_port();
    let admin = common::closed_port();
    let path = membrane_proxy::testing::write_config(&format!(
        "admin: {{address: '127.0.0.1:{admin}'}}\nworkers: 1\nlisteners:\n  - name: north\n    address: 127.0.0.1:{port}\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, direct_response: {{status: 200, body: ok}}}}]}}]\n"
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(flags)
        .args(["proxy", "--no-watch", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap())
        .lines()
        .take(200)
    {
        let line = line.unwrap();
        let done = line.contains("admin listening");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn json_lines_by_default_off_a_terminal_and_text_without_colour_on_request() {
    for flags in [&[][..], &["--log-format", "json"][..]] {
        let lines = first_lines(flags);
        assert!(
            lines.iter().any(|l| l.contains("admin listening")),
            "{lines:?}"
        );
        for l in &lines {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{flags:?}: {l}: {e}"));
            assert!(
                v["timestamp"].is_string() && v["message"].is_string(),
                "{l}"
            );
            assert_eq!(v["level"], "INFO", "{l}");
        }
        let listening = lines.iter().find(|l| l.contains("\"listening\"")).unwrap();
        let v: serde_json::Value = serde_json::from_str(listening).unwrap();
        assert_eq!(
            v["listener"], "north",
            "fields are top-level keys: {listening}"
        );
    }
    let text = first_lines(&["--log-format", "text"]);
    assert!(text.iter().any(|l| l.contains(" INFO ")), "{text:?}");
    assert!(text.iter().all(|l| !l.contains('\u{1b}')), "{text:?}");
    assert!(text.iter().all(|l| !l.starts_with('{')), "{text:?}");
    // --log-level takes a filter: the listeners' module quieted, the rest at info.
    assert!(text.iter().any(|l| l.contains("listening listener=north")));
    let filtered = first_lines(&[
        "--log-format",
        "text",
        "--log-level",
        "membrane_proxy::server::listeners=warn,info",
    ]);
    assert!(
        filtered.iter().all(|l| !l.contains("listener=north")),
        "{filtered:?}"
    );
}
