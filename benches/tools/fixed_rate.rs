//! A constant-rate HTTP/1.1 load generator for the tail-latency rows of
//! `benches/side_by_side.sh` (`benches/rows/latency.sh`).
//!
//!   fixed-rate --addr 127.0.0.1:18080 --rate 20000 --conns 64 --duration 5
//!
//! Request k is due at start + k / rate and goes out on connection k mod conns (keep-alive,
//! one request in flight per connection, as wrk2 does). A request whose connection was
//! still waiting on the previous answer at its due time is timed from its due time, so a
//! slow answer counts against every request queued behind it (no coordinated omission); one
//! whose connection was free is timed from when it went out, so the lateness of this
//! process's own timer (tokio's is 1 ms coarse) does not count. Prints one line: `achieved_rps p50_ms p99_ms p99.9_ms errors late`,
//! where `late` is the share of requests sent more than 1 ms after they were due because
//! their connection was still busy (high when the server cannot keep up).
//!
//! Why not oha `-q`: on this 2-core machine the generator shares its core with the upstream,
//! and oha's rate-limited mode (which is not its optimised one) topped out near 22k req/s
//! with tens of milliseconds of its own queueing at half of nginx's rate. This loop parses
//! only the status line and Content-Length. Bounded: it stops scheduling after `--duration`
//! and waits at most 2 s for answers in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

struct Args {
    addr: SocketAddr,
    rate: f64,
    conns: usize,
    duration: f64,
}

fn args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:18080".parse().unwrap(),
        rate: 1000.0,
        conns: 64,
        duration: 5.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = v.parse().expect("--addr"),
            "--rate" => a.rate = v.parse().expect("--rate"),
            "--conns" => a.conns = v.parse().expect("--conns"),
            "--duration" => a.duration = v.parse().expect("--duration"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    late: u64,
}

/// Reads one response (status line, headers, Content-Length body); `buf` keeps any bytes
/// past it. Returns the status code.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(std::io::Error::other)?;
            let status: u16 = head
                .get(9..12)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other("no status"))?;
            let len = head
                .split("\r\n")
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| std::io::Error::other("no content-length"))?;
            let total = end + 4 + len;
            while buf.len() < total {
                read_more(s, buf).await?;
            }
            buf.drain(..total);
            return Ok(status);
        }
        read_more(s, buf).await?;
    }
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = s.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::Error::other("closed"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

async fn connection(a: Arc<Args>, j: usize, start: Instant, end: Instant) -> Tally {
    let mut t = Tally::default();
    let Ok(mut s) = TcpStream::connect(a.addr).await else {
        t.errors += 1;
        return t;
    };
    let _ = s.set_nodelay(true);
    let req = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n";
    let mut buf = Vec::with_capacity(8192);
    let mut free_at = start;
    let mut k = j as u64;
    loop {
        let due = start + Duration::from_secs_f64(k as f64 / a.rate);
        if due >= end {
            break;
        }
        // Free at its due time: timed from when it goes out (this process's timer may wake
        // it up to a millisecond late; that is not the server's doing). Busy past its due
        // time, waiting on the server's previous answer: timed from the due time.
        let from = if free_at <= due {
            tokio::time::sleep_until(due).await;
            Instant::now()
        } else {
            if free_at > due + Duration::from_millis(1) {
                t.late += 1;
            }
            due
        };
        let answered = tokio::time::timeout(Duration::from_secs(2), async {
            s.write_all(req).await?;
            read_response(&mut s, &mut buf).await
        })
        .await;
        free_at = Instant::now();
        match answered {
            Ok(Ok(200)) => t
                .latencies_us
                .push((free_at - from).as_micros().min(u32::MAX as u128) as u32),
            _ => {
                t.errors += 1;
                match TcpStream::connect(a.addr).await {
                    Ok(n) => {
                        s = n;
                        buf.clear();
                    }
                    Err(_) => return t,
                }
            }
        }
        k += a.conns as u64;
    }
    t
}

fn main() {
    let a = Arc::new(args());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (t, elapsed) = rt.block_on(async move {
        let start = Instant::now() + Duration::from_millis(50);
        let end = start + Duration::from_secs_f64(a.duration);
        let tasks: Vec<_> = (0..a.conns)
            .map(|j| tokio::spawn(connection(a.clone(), j, start, end)))
            .collect();
        let mut all = Tally::default();
        for task in tasks {
            let t = task.await.unwrap();
            all.latencies_us.extend(t.latencies_us);
            all.errors += t.errors;
            all.late += t.late;
        }
        (all, a.duration)
    });
    let mut l = t.latencies_us;
    l.sort_unstable();
    let pct = |p: f64| -> f64 {
        if l.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * l.len() as f64).ceil() as usize;
        l[i.clamp(1, l.len()) - 1] as f64 / 1000.0
    };
    let n = l.len().max(1) as f64;
    println!(
        "{:.0} {:.3} {:.3} {:.3} {} {:.4}",
        l.len() as f64 / elapsed,
        pct(50.0),
        pct(99.0),
        pct(99.9),
        t.errors,
        t.late as f64 / n
    );
}
