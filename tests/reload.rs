//! Reloads: a bad file is refused with its position and the old config keeps serving; a
//! reload under load loses no request; file changes are picked up; listeners come and go.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use membrane_proxy::testing::{Upstream, start_proxy, write_config};
use std::time::Duration;

fn config(body: &str, extra_listener: bool) -> String {
    let extra = if extra_listener {
        "  - name: second\n    address: 127.0.0.1:0\n    virtual_hosts: [{name: v, domains: ['*'], routes: [{name: s, direct_response: {status: 200, body: second}}]}]\n"
    } else {
        ""
    };
    format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 2\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n        routes:\n          - name: body\n            match: {{path: {{exact: /body}}}}\n            direct_response: {{status: 200, body: {body}}}\n          - name: up\n            forward: {{cluster: c}}\n{extra}clusters: [{{name: c, endpoints: ['UPSTREAM']}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_refused_and_the_old_config_keeps_serving() {
    let up = Upstream::start("a").await;
    let good = config("one", false).replace("UPSTREAM", &up.addr.to_string());
    let (proxy, path) = start_proxy(&good);
    let url = format!("http://{}/body", proxy.listener_addr("main").unwrap());
    let c = client_h1();
    assert_eq!(get(&c, &url, "x", &[]).await.text(), "one");

    // A reference to a cluster that does not exist, on line 14.
    let bad = good
        .replace("body: one", "body: two")
        .replace("forward: {cluster: c}", "forward: {cluster: nope}");
    std::fs::write(&path, &bad).unwrap();
    let err = proxy.reload().await.unwrap_err().to_string();
    assert!(
        err.contains("membrane.yaml:14:"),
        "the error names file and line: {err}"
    );
    assert!(
        err.contains("routes[1].forward.cluster"),
        "and the field: {err}"
    );
    assert_eq!(get(&c, &url, "x", &[]).await.text(), "one");

    // Broken YAML as well.
    std::fs::write(&path, "listeners: [\n").unwrap();
    let err = proxy.reload().await.unwrap_err().to_string();
    assert!(err.contains("membrane.yaml:1:"), "{err}");
    assert_eq!(get(&c, &url, "x", &[]).await.text(), "one");

    let admin = format!("http://{}", proxy.admin_addr());
    let cfg = get(&c, &format!("{admin}/config"), "admin", &[])
        .await
        .json();
    assert_eq!(cfg["generation"], 1);
    assert!(
        cfg["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("membrane.yaml:1:")
    );
    let m = parse_metrics(
        &get(&c, &format!("{admin}/metrics"), "admin", &[])
            .await
            .text(),
    );
    assert_eq!(m["membrane_config_reloads_total{result=\"failed\"}"], 2.0);

    std::fs::write(&path, good.replace("body: one", "body: two")).unwrap();
    assert_eq!(proxy.reload().await.unwrap(), 2);
    assert_eq!(get(&c, &url, "x", &[]).await.text(), "two");
    let cfg = get(&c, &format!("{admin}/config"), "admin", &[])
        .await
        .json();
    assert!(cfg["last_reload_error"].is_null(), "{cfg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_concurrent_load_lose_no_request() {
    let up = Upstream::start("a").await;
    let one = config("one", false).replace("UPSTREAM", &up.addr.to_string());
    let two = config("two", true).replace("UPSTREAM", &up.addr.to_string());
    let (proxy, path) = start_proxy(&one);
    let base = format!("http://{}", proxy.listener_addr("main").unwrap());
    let mut load = Vec::new();
    for i in 0..4 {
        let base = base.clone();
        load.push(tokio::spawn(async move {
            // Half keep-alive, half a new connection per request.
            let mut ok = 0;
            let shared = client_h1();
            for n in 0..300 {
                let c = if i % 2 == 0 {
                    shared.clone()
                } else {
                    client_h1()
                };
                let path = if n % 2 == 0 { "/body" } else { "/any" };
                let r = get(&c, &format!("{base}{path}"), "x", &[]).await;
                assert_eq!(r.status, 200, "request {n} of task {i}: {}", r.text());
                ok += 1;
            }
            ok
        }));
    }
    for i in 0..20 {
        std::fs::write(&path, if i % 2 == 0 { &two } else { &one }).unwrap();
        proxy.reload().await.unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let mut total = 0;
    for t in load {
        total += t.await.unwrap();
    }
    assert_eq!(total, 1200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changes_are_picked_up_and_listeners_come_and_go() {
    let up = Upstream::start("a").await;
    let one = config("one", false).replace("UPSTREAM", &up.addr.to_string());
    let path = write_config(&one);
    let proxy =
        membrane_proxy::start(membrane_proxy::StartOptions::file(path.clone(), true)).unwrap();
    assert!(proxy.listener_addr("second").is_none());
    let url = format!("http://{}/body", proxy.listener_addr("main").unwrap());
    let c = client_h1();

    // Replace the file by rename, as editors and config-map updates do.
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        config("two", true).replace("UPSTREAM", &up.addr.to_string()),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    eventually("the new file is served", Duration::from_secs(10), || {
        let (c, url) = (c.clone(), url.clone());
        async move { get(&c, &url, "x", &[]).await.text() == "two" }
    })
    .await;
    eventually("the new listener is bound", Duration::from_secs(5), || {
        let p = proxy.clone();
        async move { p.listener_addr("second").is_some() }
    })
    .await;
    let second = proxy.listener_addr("second").unwrap();
    let r = get(&c, &format!("http://{second}/"), "x", &[]).await;
    assert_eq!(r.text(), "second");

    std::fs::write(&path, &one).unwrap();
    eventually("the listener is removed", Duration::from_secs(10), || {
        let p = proxy.clone();
        async move { p.listener_addr("second").is_none() }
    })
    .await;
    eventually(
        "the removed listener refuses connections",
        Duration::from_secs(5),
        || async move { tokio::net::TcpStream::connect(second).await.is_err() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_listenerless_file_is_refused_on_reload_unless_allowed() {
    let up = Upstream::start("a").await;
    let good = config("one", false).replace("UPSTREAM", &up.addr.to_string());
    let (proxy, path) = start_proxy(&good);
    let url = format!("http://{}/body", proxy.listener_addr("main").unwrap());
    let c = client_h1();
    // A file truncated by a non-atomic write, and one with everything but listeners.
    for (text, why) in [
        ("", "the file is empty"),
        ("  \n", "the file is empty"),
        (
            "admin: {address: '127.0.0.1:0'}\nworkers: 2\n",
            "the file has no listeners",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let err = proxy.reload().await.unwrap_err().to_string();
        assert!(
            err.contains(why) && err.contains("--allow-empty-config"),
            "{err}"
        );
        assert_eq!(get(&c, &url, "x", &[]).await.text(), "one");
    }

    // With the flag, an operator can remove every listener on purpose.
    let path = write_config(&good);
    let mut opts = membrane_proxy::StartOptions::file(path.clone(), false);
    opts.allow_empty_reload = true;
    let proxy = membrane_proxy::start(opts).unwrap();
    assert!(proxy.listener_addr("main").is_some());
    std::fs::write(&path, "admin: {address: '127.0.0.1:0'}\n").unwrap();
    assert_eq!(proxy.reload().await.unwrap(), 2);
    assert!(proxy.listener_addr("main").is_none());
}
