//! Worker threads. Each runs its own single-threaded tokio runtime with its own accept socket
//! per listener, its own connections and its own upstream pool: nothing on the request path
//! is shared between cores except the config snapshot (read through `ArcSwap`) and a few
//! atomic counters.

use crate::config::ListenerProtocol;
use crate::http::service::{self, ConnContext};
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};

pub enum Command {
    /// Accept on this socket until `stop` turns true; then let its connections finish.
    Serve {
        name: Arc<str>,
        socket: std::net::TcpListener,
        stop: watch::Receiver<bool>,
    },
    /// Wait for this worker's connections to finish, up to `deadline`, then exit.
    Drain {
        deadline: Instant,
        done: oneshot::Sender<()>,
    },
}

pub struct Worker {
    pub commands: mpsc::UnboundedSender<Command>,
    pub thread: std::thread::JoinHandle<()>,
}

pub fn spawn(id: usize, state: Arc<ArcSwap<Snapshot>>) -> std::io::Result<Worker> {
    let (tx, rx) = mpsc::unbounded_channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name(format!("membrane-worker-{id}"))
        .spawn(move || rt.block_on(run(rx, state)))?;
    Ok(Worker {
        commands: tx,
        thread,
    })
}

async fn run(mut commands: mpsc::UnboundedReceiver<Command>, state: Arc<ArcSwap<Snapshot>>) {
    // Every connection task holds a clone of `alive`; draining waits until all are dropped.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let mut alive = Some(alive);
    while let Some(cmd) = commands.recv().await {
        match cmd {
            Command::Serve { name, socket, stop } => {
                let Some(alive) = alive.clone() else { continue };
                match tokio::net::TcpListener::from_std(socket) {
                    Ok(l) => {
                        tokio::spawn(accept_loop(name, l, stop, state.clone(), alive));
                    }
                    Err(e) => tracing::error!(listener = %name, error = %e, "cannot serve socket"),
                }
            }
            Command::Drain { deadline, done } => {
                drop(alive.take());
                let deadline = tokio::time::Instant::from_std(deadline);
                if tokio::time::timeout_at(deadline, all_closed.recv())
                    .await
                    .is_err()
                {
                    tracing::warn!("drain timeout reached; closing the connections still open");
                }
                let _ = done.send(());
                return;
            }
        }
    }
}

async fn accept_loop(
    name: Arc<str>,
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
    state: Arc<ArcSwap<Snapshot>>,
    alive: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let ctx = Arc::new(ConnContext::new(name.clone(), state.clone(), peer));
                tokio::spawn(serve_connection(ctx, stream, stop.clone(), alive.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

async fn serve_connection(
    ctx: Arc<ConnContext>,
    stream: tokio::net::TcpStream,
    mut stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) {
    let Some(listener) = ctx.state.load().listeners.get(&ctx.listener).cloned() else {
        return;
    };
    let metrics = listener.metrics.clone();
    metrics.accepted.inc();
    metrics.active.inc();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own limits sit above the listener's, which are checked per request to give a
    // JSON 431 with a reason; past hyper's, it answers a bare 431 and closes.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(listener.header_read_timeout)
        .writev(false)
        .max_buf_size((listener.max_header_bytes * 2).max(16 * 1024))
        .max_headers(listener.max_headers * 2);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size((listener.max_header_bytes * 2).min(u32::MAX as usize) as u32);
    let builder = match listener.protocol {
        ListenerProtocol::Http1 => builder.http1_only(),
        ListenerProtocol::Http2 => builder.http2_only(),
        ListenerProtocol::Auto => builder,
    };
    drop(listener);
    let svc_ctx = ctx.clone();
    let svc = service_fn(move |req| service::handle(svc_ctx.clone(), req));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            // Finish the request in flight, refuse new ones (HTTP/1.1: `Connection: close`;
            // HTTP/2: GOAWAY), then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = %ctx.listener, error = %e, "connection ended with an error");
    }
    metrics.active.dec();
}

/// Resolves once the listener is told to stop (or its controller is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
