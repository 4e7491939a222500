//! The access log: one JSON line per request on stdout, with the route, the status, the
//! error code of a failure and the verified peer's SPIFFE ID and cell.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use membrane_proxy::testing::tls::{Leaf, Pki, client_config, connect, get_over};
use membrane_proxy::testing::{Upstream, write_config};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_one_json_line_with_route_status_and_peer() {
    let path = write_config("");
    let pki = Pki::new(&path.parent().unwrap().join("pki"));
    let gw = pki.leaf("gw", &Leaf::new("gw").dns("gw.test"));
    let caller_id = "spiffe://acme.internal/org/acme/env/dev/cell/billing";
    let caller = pki.leaf("caller", &Leaf::new("caller").spiffe(caller_id));
    let up = Upstream::start("a").await;
    let (port, admin_port) = (closed_port(), closed_port());
    std::fs::write(
        &path,
        format!(
            "admin: {{address: '127.0.0.1:{admin_port}'}}\nworkers: 1\nlisteners:\n  - name: west\n    address: 127.0.0.1:{port}\n    access_log: stdout\n    tls:\n      certificates: [{{cert: {}, key: {}}}]\n      client_auth: require\n      trust_bundle: {}\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n        routes:\n          - {{name: orders, match: {{path: {{prefix: /orders}}}}, forward: {{cluster: c}}}}\nclusters: [{{name: c, endpoints: ['{}']}}]\n",
            gw.0.display(),
            gw.1.display(),
            pki.bundle().display(),
            up.addr
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["proxy", "--no-watch", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let c = client_h1();
    let admin = format!("http://127.0.0.1:{admin_port}/ready");
    eventually("the binary is ready", Duration::from_secs(20), || {
        let (c, admin) = (c.clone(), admin.clone());
        async move { matches!(c.get(admin.parse().unwrap()).await, Ok(r) if r.status() == 200) }
    })
    .await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg = client_config(
        &pki.bundle(),
        Some((&caller.0, &caller.1)),
        &["http/1.1"],
        &[&rustls::version::TLS13],
    );
    let ok = get_over(
        connect(addr, "gw.test", cfg.clone()).await.unwrap(),
        "/orders/7?x=1",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);
    let miss = get_over(
        connect(addr, "gw.test", cfg).await.unwrap(),
        "/nothing",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(miss.status, 404);

    let next = || -> serde_json::Value {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("an access log line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let first = next();
    assert_eq!(first["listener"], "west");
    assert_eq!(first["route"], "orders");
    assert_eq!(first["cluster"], "c");
    assert_eq!(first["method"], "GET");
    // The query's values are redacted (tokens travel there).
    assert_eq!(first["path"], "/orders/7?x=redacted");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["peer"], caller_id);
    assert_eq!(first["peer_cell"], "billing");
    assert_eq!(first["client"], "127.0.0.1");
    let echo: serde_json::Value = serde_json::from_slice(&ok.body).unwrap();
    assert_eq!(first["request_id"], echo["headers"]["x-request-id"]);
    assert!(first.get("error").is_none());
    assert!(first["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(first["ts"].as_str().unwrap().ends_with('Z'));
    let second = next();
    assert_eq!(second["status"], 404);
    assert_eq!(second["error"], "no_route");
    assert_eq!(second["route"], "");

    child.kill().unwrap();
    child.wait().unwrap();
}

/// A file target with chosen fields and no allowed request sampled: only the refusals are
/// written, each with exactly the fields asked for; an unknown field is refused with its
/// position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_log_writes_chosen_fields_and_every_refusal() {
    let port = closed_port();
    let dir = write_config("").parent().unwrap().to_owned();
    let log = dir.join("north.log");
    let (gw, _) = membrane_proxy::testing::start_proxy(&format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\nlisteners:\n  - name: north\n    address: 127.0.0.1:{port}\n    access_log: {}\n    access_log_fields: [status, path, error]\n    access_log_sample: 0\n    virtual_hosts: [{{name: v, domains: [api], routes: [{{name: r, direct_response: {{status: 200, body: ok}}}}]}}]\n",
        log.display()
    ));
    let c = client_h1();
    let url = format!("http://127.0.0.1:{port}/x?token=secret");
    eventually("the gateway answers", Duration::from_secs(20), || {
        let (c, url) = (c.clone(), url.clone());
        async move { get(&c, &url, "api", &[]).await.status == 200 }
    })
    .await;
    for _ in 0..5 {
        assert_eq!(get(&c, &url, "api", &[]).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&c, &url, "elsewhere", &[]).await.status, 404);
    }
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("two lines in the file", Duration::from_secs(10), || {
        let n = read().lines().count();
        async move { n >= 2 }
    })
    .await;
    // Nothing more arrives (the allowed requests are not sampled).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = read();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for l in &lines {
        let keys: Vec<&String> = l.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 3, "{l}");
        assert_eq!(l["status"], 404);
        assert_eq!(l["error"], "no_route");
        assert_eq!(l["path"], "/x?token=redacted");
    }
    gw.shutdown().await;

    // A field that is not one: the file, its position and the field.
    let bad = write_config(&format!(
        "listeners:\n  - name: north\n    address: 127.0.0.1:{port}\n    access_log: stdout\n    access_log_fields: [status, colour]\n"
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["proxy", "--no-watch", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("listeners[0].access_log_fields[1]")
            && err.contains("colour")
            && err.contains(":5:"),
        "{err}"
    );
}

/// Log rotation: a file renamed away (logrotate's default) is followed by a new file at
/// the path without any signal; `POST /reopen_logs` is accepted; the `membrane` binary
/// reopens on SIGUSR1 (and is not ended by it, the signal's default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_file_log_is_reopened() {
    let port = closed_port();
    let dir = write_config("").parent().unwrap().to_owned();
    let log = dir.join("rotated.log");
    let yaml = |admin: &str| {
        format!(
            "admin: {{address: '{admin}'}}\nworkers: 1\nlisteners:\n  - name: north\n    address: 127.0.0.1:{port}\n    access_log: {}\n    access_log_fields: [path]\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, direct_response: {{status: 200, body: ok}}}}]}}]\n",
            log.display()
        )
    };
    let (gw, _) = membrane_proxy::testing::start_proxy(&yaml("127.0.0.1:0"));
    let c = client_h1();
    let url = |p: &str| format!("http://127.0.0.1:{port}/{p}");
    eventually("the gateway answers", Duration::from_secs(20), || {
        let (c, u) = (c.clone(), url("first"));
        async move { get(&c, &u, "api", &[]).await.status == 200 }
    })
    .await;
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    eventually("the first lines", Duration::from_secs(10), || {
        let n = read(&log).lines().count();
        async move { n >= 1 }
    })
    .await;
    let old = dir.join("rotated.log.1");
    std::fs::rename(&log, &old).unwrap();
    // Within a second or two of the rename, lines go to a new file at the path.
    eventually("a new file at the path", Duration::from_secs(10), || {
        let (c, u, log) = (c.clone(), url("second"), log.clone());
        async move {
            get(&c, &u, "api", &[]).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/second"))
        }
    })
    .await;
    // Lines written before the writer looked (at most a second) went to the renamed file.
    assert!(read(&old).contains("/first"));
    assert!(!read(&log).contains("/first"));
    let reopen = send(
        &c,
        http::Request::post(format!("http://{}/reopen_logs", gw.admin_addr()))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reopen.status, 200);
    gw.shutdown().await;

    // The binary: rename, SIGUSR1, and the next line is in a new file.
    let admin_port = closed_port();
    let cfg = write_config(&yaml(&format!("127.0.0.1:{admin_port}")));
    let _ = std::fs::remove_file(&log);
    let mut child = Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["proxy", "--no-watch", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("the binary answers", Duration::from_secs(20), || {
        let (c, u) = (c.clone(), url("third"));
        async move {
            match c.get(u.parse().unwrap()).await {
                Ok(r) => r.status() == 200,
                Err(_) => false,
            }
        }
    })
    .await;
    eventually("the binary's first line", Duration::from_secs(10), || {
        let n = read(&log).lines().count();
        async move { n >= 1 }
    })
    .await;
    let old = dir.join("rotated.log.2");
    std::fs::rename(&log, &old).unwrap();
    let ok = Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    eventually("a new file after SIGUSR1", Duration::from_secs(10), || {
        let (c, u, log) = (c.clone(), url("fourth"), log.clone());
        async move {
            get(&c, &u, "api", &[]).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/fourth"))
        }
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGUSR1 ended the process"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
