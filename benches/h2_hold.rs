//! Memory under the HTTP/2 "large windows, never read" attack: clients open connections with
//! windows as large as HTTP/2 allows, ask on each stream for a body far larger than any
//! buffer, and then stop reading. Reports the growth of this process's RSS per stream and
//! per connection, with the listener's default buffers and with hyper's (200 streams x
//! 400 KiB, what Membrane used before), each a `RESULT` line.
//!
//!   cargo bench --bench h2_hold
//!
//! The proxy is the release binary, run as a child process on 127.0.0.1 and measured from
//! its `/proc/<pid>/status` (the clients in this process buffer what they took before they
//! paused; that must not count). The upstream runs here too. Bounded: a fixed number of
//! connections and streams, a few seconds each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::Full;
use membrane_proxy::testing::{Pausable, Upstream};
use std::sync::atomic::Ordering;
use std::time::Duration;

const CONNECTIONS: usize = 8;

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Opens the connections, `streams` each, pauses them, and returns the proxy's RSS growth
/// and how many streams were open.
async fn attack(limits: &str, streams: usize) -> (u64, usize) {
    let up = Upstream::start("up").await;
    let yaml = format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\nlisteners:\n  - name: edge\n    address: 127.0.0.1:0\n    protocol: http2\n    limits: {{{limits}}}\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: all, forward: {{cluster: c}}}}]}}]\nclusters: [{{name: c, endpoints: ['{}'], max_connections: 100000}}]\n",
        up.addr
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let yaml = yaml.replace(
        "address: 127.0.0.1:0\n    protocol",
        &format!("address: 127.0.0.1:{port}\n    protocol"),
    );
    let path = membrane_proxy::testing::write_config(&yaml);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["proxy", "--no-watch", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the proxy starts");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id();
    let before = rss_bytes(pid);
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let (io, paused) =
            Pausable::new(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        let (sender, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(i32::MAX as u32)
                .initial_connection_window_size(i32::MAX as u32)
                .max_concurrent_reset_streams(0)
                .handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(io))
                .await
                .expect("handshake");
        let conn = tokio::spawn(conn);
        let mut bodies = Vec::new();
        for _ in 0..streams {
            let mut s = sender.clone();
            let req = http::Request::get("http://x/stream/1000000000")
                .body(Full::new(Bytes::new()))
                .expect("request");
            match tokio::time::timeout(Duration::from_secs(5), s.send_request(req)).await {
                Ok(Ok(resp)) => bodies.push(resp.into_body()),
                _ => break,
            }
        }
        paused.store(true, Ordering::Relaxed);
        held.push((conn, bodies, sender));
    }
    // Let the proxy fill whatever it buffers (H2_HOLD_SECS, 3 s by default: long enough to
    // fill, shorter than the send timeout that would close the connections).
    let secs = std::env::var("H2_HOLD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = rss_bytes(pid);
    let opened: usize = held.iter().map(|(_, b, _)| b.len()).sum();
    eprintln!("{limits}: {opened} streams, RSS {before} -> {after}");
    for (conn, _, _) in &held {
        conn.abort();
    }
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
    (after.saturating_sub(before), opened)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let only = std::env::var("H2_HOLD_ONLY").ok();
        for (label, limits, streams) in [
            (
                "hyper_defaults",
                "http2_max_concurrent_streams: 200, http2_stream_send_buffer: 409600",
                200,
            ),
            ("membrane_defaults", "", 100),
            (
                "big_buffers",
                "http2_max_concurrent_streams: 100, http2_stream_send_buffer: 16777216",
                100,
            ),
        ] {
            if only.as_deref().is_some_and(|o| o != label) {
                continue;
            }
            let (grown, opened) = attack(limits, streams).await;
            let n = opened as u64;
            println!(
                "RESULT h2_hold_rss_bytes_per_stream{{config=\"{label}\"}} {}",
                grown / n.max(1)
            );
            println!(
                "RESULT h2_hold_rss_bytes_per_connection{{config=\"{label}\"}} {}",
                grown / CONNECTIONS as u64
            );
        }
    });
}
