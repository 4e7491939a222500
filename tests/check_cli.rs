//! `membrane check DIR`: exit 0 with a summary for valid specs, 1 with every positioned error
//! otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn check(dir: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_membrane"))
        .arg("check")
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_accepts_the_examples_and_reports_every_mistake() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cells");
    let (code, out) = check(&examples);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 cells: valid"), "{out}");

    let dir = std::env::temp_dir().join(format!("membrane-check-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.yaml"),
        "kind: Cell\nname: Orders\norg: acme\nproject: p\nenvironment: dev\ngateway: {}\n---\nkind: Policy\nname: p\ncell: ghost\nlistener: west\nrules: []\n",
    )
    .unwrap();
    let (code, out) = check(&dir);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("a.yaml:2:7: field `name`: `Orders` is not a valid cell name"),
        "{out}"
    );
    assert!(
        out.contains("a.yaml:10:7: field `cell`: unknown cell `ghost`"),
        "{out}"
    );
    assert!(out.contains("2 error(s)"), "{out}");
}
