//! The `membrane` binary itself: SIGHUP reloads, SIGTERM drains in-flight requests and
//! exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use membrane_proxy::testing::{Upstream, write_config};
use std::process::{Command, Stdio};
use std::time::Duration;

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_drains_then_exits_zero() {
    let up = Upstream::start("a").await;
    let (port, admin_port) = (closed_port(), closed_port());
    let cfg = |body: &str| {
        format!(
            "admin: {{address: '127.0.0.1:{admin_port}'}}\nworkers: 2\ndrain_timeout: 10s\nlisteners:\n  - name: main\n    address: 127.0.0.1:{port}\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n        routes:\n          - {{name: b, match: {{path: {{exact: /body}}}}, direct_response: {{status: 200, body: {body}}}}}\n          - {{name: up, forward: {{cluster: c}}}}\nclusters: [{{name: c, endpoints: ['{}']}}]\n",
            up.addr
        )
    };
    let path = write_config(&cfg("one"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["proxy", "--no-watch", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let c = client_h1();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let url = format!("http://127.0.0.1:{port}");
    eventually("the binary is ready", Duration::from_secs(20), || {
        let (c, admin) = (c.clone(), admin.clone());
        async move {
            match c.get(format!("{admin}/ready").parse().unwrap()).await {
                Ok(r) => r.status() == 200,
                Err(_) => false,
            }
        }
    })
    .await;
    assert_eq!(
        get(&c, &format!("{url}/body"), "x", &[]).await.text(),
        "one"
    );

    std::fs::write(&path, cfg("two")).unwrap();
    signal(pid, "-HUP");
    eventually("SIGHUP reloaded the file", Duration::from_secs(10), || {
        let (c, url) = (c.clone(), url.clone());
        async move { get(&c, &format!("{url}/body"), "x", &[]).await.text() == "two" }
    })
    .await;

    // A slow request is in flight when SIGTERM arrives; it must still complete.
    let slow = {
        let (c, url) = (client_h1(), url.clone());
        tokio::spawn(async move { get(&c, &format!("{url}/delay/1000"), "x", &[]).await })
    };
    served_at_least(&up, 1).await;
    signal(pid, "-TERM");
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request was cut: {}", r.text());
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap()
    .expect("membrane did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
}
