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

/// Runs `promtool check metrics` on `text`; its complaints, empty when it has none.
fn promtool_check_metrics(text: &str) -> String {
    use std::io::Write;
    let mut child = promtool()
        .unwrap()
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() && said.is_empty() {
        return "promtool failed without a word".into();
    }
    said
}

/// The gateway's and the control server's /metrics pass `promtool check metrics` without a
/// remark, in the classic format a plain scrape gets; a scraper that asks for OpenMetrics
/// gets it, and the process and build series are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expositions_pass_promtool_check_metrics() {
    if promtool().is_none() {
        common::missing("promtool (Debian package prometheus)");
        return;
    }
    let up = membrane_proxy::testing::Upstream::start("a").await;
    let port = common::closed_port();
    let (gw, _) = membrane_proxy::testing::start_proxy(&format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\ntracing: {{otlp_endpoint: 'http://127.0.0.1:9', sample_ratio: 0.0}}\nlisteners:\n  - name: north\n    address: 127.0.0.1:{port}\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, forward: {{cluster: c}}}}]}}]\nclusters: [{{name: c, endpoints: ['{}']}}]\n",
        up.addr
    ));
    let c = common::client_h1();
    let url = format!("http://127.0.0.1:{port}/x");
    common::eventually(
        "the gateway answers",
        std::time::Duration::from_secs(20),
        || {
            let (c, url) = (c.clone(), url.clone());
            async move { common::get(&c, &url, "a", &[]).await.status == 200 }
        },
    )
    .await;
    let _ = common::get(&c, &url, "a", &[]).await;
    let metrics = format!("http://{}/metrics", gw.admin_addr());
    let classic = common::get(&c, &metrics, "admin", &[]).await;
    assert!(
        classic.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        classic.headers
    );
    let text = classic.text();
    for series in [
        "membrane_build_info{version=",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "membrane_requests_total{",
        "membrane_request_duration_seconds_bucket{",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    assert_eq!(promtool_check_metrics(&text), "", "{text}");
    let om = common::get(
        &c,
        &metrics,
        "admin",
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )],
    )
    .await;
    assert!(
        om.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    assert!(om.text().ends_with("# EOF\n"));
    gw.shutdown().await;

    // The control server, on the example cells.
    let dir = std::env::temp_dir().join(format!("membrane-promtool-ctl-{}", std::process::id()));
    let ctl = membrane_xds::control::start(membrane_xds::control::ControlOptions {
        spec_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cells").into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        cert_dir: dir.join("pki"),
        trust_bundle_pem: String::new(),
        debounce: std::time::Duration::from_millis(50),
        ca: None,
    })
    .await
    .unwrap();
    let text = common::get(
        &c,
        &format!("http://{}/metrics", ctl.admin_addr.unwrap()),
        "admin",
        &[],
    )
    .await
    .text();
    assert!(text.contains("membrane_control_"), "{text}");
    assert_eq!(promtool_check_metrics(&text), "", "{text}");
    ctl.shutdown();
}
