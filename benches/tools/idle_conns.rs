//! Opens many connections to a proxy, sends one request on each, reads the answer, and
//! keeps every connection open and idle: for the memory-per-idle-connection rows of
//! `benches/side_by_side.sh` (`benches/rows/idle.sh`), which read the proxy's RSS before
//! and while they are held.
//!
//!   idle-conns --addr 127.0.0.1:18080 --kind h1 --count 10000 --hold 20 [--source 127.0.3.0]
//!   idle-conns --addr 127.0.0.1:18443 --kind tls|h2tls --ca ca.pem --name localhost ...
//!   idle-conns --addr 127.0.0.1:18086 --kind h2 ...
//!
//! Kinds: `h1` (HTTP/1.1 keep-alive), `tls` (HTTP/1.1 over TLS), `h2` (HTTP/2 with prior
//! knowledge), `h2tls` (HTTP/2 over TLS, ALPN h2). Connections are opened 64 at a time from
//! loopback addresses of their own per run (so no run waits on another's TIME_WAIT
//! ports): connection i binds `--source` with its last octet replaced by 1 + i mod 64.
//! One source address ran out of ports for a port-0 bind at 119 to 8,725 connections
//! (EADDRINUSE), as bind cannot know the destination; 64 addresses leave each ~160. Prints `open N` once all are open, then holds them for `--hold`
//! seconds (or until killed) and exits: the load is bounded in count and time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    H1,
    Tls,
    H2,
    H2Tls,
}

struct Args {
    addr: SocketAddr,
    kind: Kind,
    count: usize,
    hold: u64,
    source: IpAddr,
    ca: Option<String>,
    name: String,
}

fn args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:18080".parse().unwrap(),
        kind: Kind::H1,
        count: 10_000,
        hold: 20,
        source: "127.0.0.1".parse().unwrap(),
        ca: None,
        name: "localhost".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = v.parse().expect("--addr"),
            "--count" => a.count = v.parse().expect("--count"),
            "--hold" => a.hold = v.parse().expect("--hold"),
            "--source" => a.source = v.parse().expect("--source"),
            "--ca" => a.ca = Some(v),
            "--name" => a.name = v,
            "--kind" => {
                a.kind = match v.as_str() {
                    "h1" => Kind::H1,
                    "tls" => Kind::Tls,
                    "h2" => Kind::H2,
                    "h2tls" => Kind::H2Tls,
                    other => panic!("unknown --kind {other}"),
                }
            }
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn tls_config(ca: &str, h2: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("read --ca");
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.expect("a certificate")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Arc::new(cfg)
}

/// A held connection: its stream (HTTP/1.1) or its HTTP/2 handle and driver task.
enum Held {
    Stream(#[allow(dead_code)] Box<dyn Send>),
    H2(
        #[allow(dead_code)] hyper::client::conn::http2::SendRequest<Empty<bytes::Bytes>>,
        #[allow(dead_code)] tokio::task::JoinHandle<()>,
    ),
}

async fn open(a: &Args, i: usize, tls: Option<Arc<rustls::ClientConfig>>) -> std::io::Result<Held> {
    let source = match a.source {
        IpAddr::V4(v4) => {
            let [x, y, z, _] = v4.octets();
            IpAddr::from([x, y, z, 1 + (i % 64) as u8])
        }
        v6 => v6,
    };
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source, 0))?;
    let tcp = sock.connect(a.addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(a.name.clone()).map_err(std::io::Error::other)?;
    match (a.kind, tls) {
        (Kind::H1, _) => h1(tcp).await.map(|s| Held::Stream(Box::new(s))),
        (Kind::Tls, Some(cfg)) => {
            let s = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await?;
            h1(s).await.map(|s| Held::Stream(Box::new(s)))
        }
        (Kind::H2, _) => h2(tcp).await,
        (Kind::H2Tls, Some(cfg)) => {
            let s = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await?;
            h2(s).await
        }
        _ => Err(std::io::Error::other("a TLS kind needs --ca")),
    }
}

/// One HTTP/1.1 request; reads the head and a Content-Length body.
async fn h1<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> std::io::Result<S> {
    s.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")
        .await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the answer"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(std::io::Error::other(format!("answered {head}")));
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::other("closed in the body"));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(s);
        }
    }
}

async fn h2<S>(s: S) -> std::io::Result<Held>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .map_err(std::io::Error::other)?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get("http://bench/")
        .body(Empty::new())
        .map_err(std::io::Error::other)?;
    let resp = send
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    if resp.status() != 200 {
        return Err(std::io::Error::other(format!("answered {}", resp.status())));
    }
    resp.into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?;
    Ok(Held::H2(send, task))
}

fn main() {
    let a = Arc::new(args());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tls = match (a.kind, &a.ca) {
            (Kind::Tls | Kind::H2Tls, Some(ca)) => Some(tls_config(ca, a.kind == Kind::H2Tls)),
            _ => None,
        };
        let mut held = Vec::with_capacity(a.count);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while held.len() < a.count {
            let batch = (a.count - held.len()).min(64);
            let opening: Vec<_> = (0..batch)
                .map(|k| {
                    let (a, tls, i) = (a.clone(), tls.clone(), held.len() + k);
                    tokio::spawn(async move { open(&a, i, tls).await })
                })
                .collect();
            for o in opening {
                match o.await.unwrap() {
                    Ok(h) => held.push(h),
                    Err(e) => {
                        eprintln!("idle-conns: connection {}: {e}", held.len());
                        std::process::exit(1);
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                eprintln!("idle-conns: only {} open after 120 s", held.len());
                std::process::exit(1);
            }
        }
        println!("open {}", held.len());
        tokio::time::sleep(Duration::from_secs(a.hold)).await;
        drop(held);
    });
}
