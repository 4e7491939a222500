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

/// Fails with what promtool printed unless it exited 0.
fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
    assert_succeeded(&out);
    let out = promtool()
        .unwrap()
        .args([
            "test",
            "rules",
            "tests/identity-rules.test.yaml",
            "tests/membrane-rules.test.yaml",
        ])
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

    // The control server, on the example cells, as their CA.
    let dir = std::env::temp_dir().join(format!("membrane-promtool-ctl-{}", std::process::id()));
    let ca_dir = dir.join("ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    let ca =
        membrane_proxy::tls::devca::DevCa::new("test CA", std::time::Duration::from_secs(86_400))
            .unwrap();
    std::fs::write(ca_dir.join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(ca_dir.join("ca-key.pem"), ca.key_pem()).unwrap();
    let ctl = membrane_xds::control::start(membrane_xds::control::ControlOptions {
        spec_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cells").into(),
        store: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        cert_dir: dir.join("pki"),
        trust_bundle_pem: ca.cert_pem().to_owned(),
        debounce: std::time::Duration::from_millis(50),
        ca: Some(membrane_xds::control::CaOptions {
            dir: ca_dir,
            lifetime: std::time::Duration::from_secs(3600),
        }),
        otlp_endpoint: None,
        api: None,
        audit_log: None,
    })
    .await
    .unwrap();
    let control_text = common::get(
        &c,
        &format!("http://{}/metrics", ctl.admin_addr.unwrap()),
        "admin",
        &[],
    )
    .await
    .text();
    assert!(control_text.contains("membrane_control_"), "{control_text}");
    assert_eq!(promtool_check_metrics(&control_text), "", "{control_text}");
    ctl.shutdown();
    let registered = registered_families();
    let gateway = families(&text, &registered);
    let control = families(&control_text, &[]);
    dashboards_read_what_is_exposed(&[
        ("membrane-gateway.json", &gateway),
        ("membrane-control.json", &control),
    ]);
}

/// The family and series names an exposition shows, and `more`.
fn families<'a>(exposition: &'a str, more: &'a [String]) -> std::collections::HashSet<&'a str> {
    exposition
        .lines()
        .filter_map(|l| {
            let l = l
                .strip_prefix("# HELP ")
                .or_else(|| l.strip_prefix("# TYPE "))
                .unwrap_or(l);
            l.split(['{', ' ']).next()
        })
        .chain(more.iter().map(String::as_str))
        .collect()
}

/// The gateway's registered metric families, as exposed (`membrane_<name>` and, for
/// counters, `_total`): read from the `register("name", …)` calls in proxy/src, since a
/// family shows in the exposition only once it has a series.
fn registered_families() -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for part in text.split("register(").skip(1) {
                    let Some(rest) = part.trim_start().strip_prefix('"') else {
                        continue;
                    };
                    if let Some((name, _)) = rest.split_once('"') {
                        out.push(format!("membrane_{name}"));
                        out.push(format!("membrane_{name}_total"));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy/src"),
        &mut out,
    );
    out
}

/// Every query of the Grafana dashboards in deploy/grafana/ parses (promtool checks each as
/// a recording rule), and each dashboard (its panels and its variables) names only series
/// its own server exposes.
fn dashboards_read_what_is_exposed(dashboards: &[(&str, &std::collections::HashSet<&str>)]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana");
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut n = 0;
    for (file, names) in dashboards {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        let reads = |what: &str, expr: &str| {
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("membrane_") || word.starts_with("process_") {
                    let base = ["_bucket", "_count", "_sum"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .filter(|b| names.contains(b.to_owned()) || names.contains(word));
                    assert!(
                        names.contains(word) || base.is_some(),
                        "{file}: {what} reads {word}, which its server does not expose"
                    );
                }
            }
        };
        for v in d["templating"]["list"].as_array().unwrap() {
            if let Some(q) = v["query"].as_str() {
                reads(&format!("variable {}", v["name"]), q);
            }
        }
        for panel in d["panels"].as_array().unwrap() {
            for t in panel["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                reads(&format!("panel {}", panel["title"]), expr);
                let expr = expr.replace("$__rate_interval", "5m");
                rules.push_str(&format!(
                    "      - record: dashboard:q{n}\n        expr: {}\n",
                    serde_json::to_string(&expr).unwrap()
                ));
                n += 1;
            }
        }
    }
    assert!(n > 20, "only {n} queries");
    let file =
        std::env::temp_dir().join(format!("membrane-dashboards-{}.yaml", std::process::id()));
    std::fs::write(&file, rules).unwrap();
    let out = promtool()
        .unwrap()
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert_succeeded(&out);
}
