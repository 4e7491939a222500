//! Worker threads. Each runs its own single-threaded tokio runtime with its own accept socket
//! per listener, its own connections and its own upstream pool: nothing on the request path
//! is shared between cores except the config snapshot (read through `ArcSwap`) and a few
//! atomic counters.

use super::h2_idle;
use super::sniff;
use crate::config::ListenerProtocol;
use crate::context::ConnContext;
use crate::deadline::{Deadline, Timers};
use crate::downstream::DownStream;
use crate::http::body::RequestBody;
use crate::http::service;
use crate::snapshot::{Listener, Snapshot};
use crate::stream::DownIo;
use crate::stream::TlsStream;
use crate::tls::failure;
use crate::tls::metrics::TlsListenerMetrics;
use crate::tls::peer::PeerTls;
use crate::tls::server::ServerTls;
use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

pub enum Command {
    /// Accept on this socket until `stop` turns true; then let its connections finish.
    Serve {
        name: Arc<str>,
        socket: std::net::TcpListener,
        stop: watch::Receiver<bool>,
    },
    /// A new deny list is in: every connection looks at whether it refuses its peer.
    Sweep,
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
    let timers = Timers::start();
    // Every connection task holds a clone of `alive`; draining waits until all are dropped.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let mut alive = Some(alive);
    while let Some(cmd) = commands.recv().await {
        match cmd {
            Command::Serve { name, socket, stop } => {
                let Some(alive) = alive.clone() else { continue };
                match tokio::net::TcpListener::from_std(socket) {
                    Ok(l) => {
                        let accept =
                            accept_loop(name, l, stop, state.clone(), timers.clone(), alive);
                        tokio::spawn(accept);
                    }
                    Err(e) => tracing::error!(listener = %name, error = %e, "cannot serve socket"),
                }
            }
            Command::Sweep => timers.sweep(),
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
    timers: Timers,
    alive: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped(&mut stop) => {
                // Idle HTTP/1.x connections wait on their deadline, not on the stop signal:
                // wake them to look at it.
                timers.wake_all();
                return;
            }
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(
                    name.clone(),
                    state.clone(),
                    peer,
                    stream,
                    stop.clone(),
                    timers.deadline(),
                    alive.clone(),
                ));
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
    name: Arc<str>,
    state: Arc<ArcSwap<Snapshot>>,
    peer: SocketAddr,
    stream: TcpStream,
    stop: watch::Receiver<bool>,
    deadline: Deadline,
    _alive: mpsc::Sender<()>,
) {
    let Some(listener) = state.load().listeners.get(&name).cloned() else {
        return;
    };
    let metrics = listener.metrics.clone();
    metrics.accepted.inc();
    metrics.active.inc();
    serve_accepted(name, state, peer, stream, listener, stop, deadline).await;
    metrics.active.dec();
}

async fn serve_accepted(
    name: Arc<str>,
    state: Arc<ArcSwap<Snapshot>>,
    peer: SocketAddr,
    stream: TcpStream,
    listener: Arc<Listener>,
    stop: watch::Receiver<bool>,
    deadline: Deadline,
) {
    // hyper's own limits sit above the listener's, which are checked per request to give a
    // JSON 431 with a reason; past hyper's, it answers a bare 431 and closes.
    let max_buf = (listener.max_header_bytes * 2).max(16 * 1024);
    let max_list = (listener.max_header_bytes * 2).min(u32::MAX as usize) as u32;
    let read_timeout = listener.header_read_timeout;
    let limits = crate::downstream::Limits {
        max_head: max_buf,
        header_read_timeout: read_timeout,
        send_timeout: listener.send_timeout,
    };
    let mut ctx = ConnContext::new(name, state, peer);
    let bytes = listener.metrics.bytes.clone();
    let (mut stream, alpn) = match (&listener.tls, &listener.tls_metrics) {
        // Boxed: the handshake's future is kilobytes, which inline would stay in every
        // connection's future after the handshake too (HTTP/1.1 ones without TLS too).
        (Some(tls), Some(m)) => match opening(&stop, Box::pin(handshake(stream, tls, m)))
            .await
            .flatten()
        {
            Some((s, peer_tls, alpn)) => {
                ctx.set_tls(peer_tls);
                (DownStream::new(DownIo::Tls(s), bytes), alpn)
            }
            None => return,
        },
        _ => (DownStream::new(DownIo::Tcp(stream), bytes), Alpn::None),
    };
    let protocol = listener.protocol;
    let idle_timeout = listener.idle_timeout;
    let send_timeout = listener.send_timeout;
    let (h2_streams, h2_buffer) = (
        listener.http2_max_concurrent_streams,
        listener.http2_stream_send_buffer,
    );
    drop(listener);
    let ctx = Arc::new(ctx);
    // ALPN decides when the client offered it; an `auto` listener sniffs otherwise.
    let h2_only = match (protocol, alpn) {
        (ListenerProtocol::Http1, _) | (ListenerProtocol::Auto, Alpn::Http11) => {
            // The native HTTP/1.x loop bounds its own head read and sees the stop itself.
            let initial = bytes::BytesMut::new();
            crate::downstream::serve(ctx.clone(), stream, initial, limits, stop, deadline).await;
            return;
        }
        (ListenerProtocol::Http2, _) | (ListenerProtocol::Auto, Alpn::H2) => true,
        (ListenerProtocol::Auto, Alpn::None) => false,
    };
    // HTTP/2 clients too are read up to their preface here, with the header-read timeout
    // and the listener's stop: hyper would wait for a preface without a limit.
    let sniffed = opening(&stop, sniff::sniff(&mut stream, read_timeout)).await;
    let prefix = match sniffed.unwrap_or(sniff::Sniffed::Gone) {
        sniff::Sniffed::Http1(initial) if !h2_only => {
            crate::downstream::serve(ctx.clone(), stream, initial, limits, stop, deadline).await;
            return;
        }
        // Not a preface where one is due: hyper refuses it (a GOAWAY) as it would have.
        sniff::Sniffed::Http1(initial) => initial.freeze(),
        sniff::Sniffed::Http2(prefix) => prefix,
        sniff::Sniffed::Gone => return,
    };
    let io = TokioIo::new(sniff::Prefixed {
        prefix,
        inner: stream,
    });
    let activity = h2_idle::Activity::new();
    let (svc_ctx, svc_activity) = (ctx.clone(), activity.clone());
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let open = svc_activity.open();
        // Boxed: hyper moves a stream's future a few times before it runs, and the request
        // future is kilobytes (measured: boxing it saves more memcpy than the malloc costs).
        let served = Box::pin(service::handle(
            svc_ctx.clone(),
            req.map(RequestBody::Hyper),
        ));
        async move {
            let resp = served.await?;
            Ok::<_, std::convert::Infallible>(resp.map(|body| h2_idle::Tracked::new(body, open)))
        }
    });
    let conn = h2_builder(max_list, h2_streams, h2_buffer).serve_connection(io, svc);
    let idle = activity.idle(idle_timeout);
    let stalled = activity.stalled(send_timeout);
    let revoked = revoked_peer(&ctx, deadline);
    // Boxed: hyper's connection is kilobytes, and every connection's task (HTTP/1.1 ones
    // too) would otherwise be sized for it.
    log_end(
        &ctx,
        Box::pin(drive(conn, stop, idle, stalled, revoked)).await,
    );
}

/// Resolves when a deny list pushed after the handshake refuses the connection's peer (the
/// worker sweeps its connections on each new one). HTTP/2 connections use their deadline
/// only for this: it stays disarmed and is woken by the sweep.
async fn revoked_peer(ctx: &ConnContext, mut deadline: Deadline) {
    if ctx.tls.is_none() {
        return std::future::pending().await;
    }
    let mut sweeps = 0;
    std::future::poll_fn(|cx| {
        let _ = deadline.poll_expired(cx);
        if deadline.swept(&mut sweeps) && ctx.revoked_now() {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    })
    .await
}

/// hyper's HTTP/2 server with bounded buffers: a client that opens large windows and never
/// reads pins at most `max_streams` x `stream_send_buffer` bytes of response data here
/// (hyper's defaults: 200 x 400 KiB, ~80 MiB per connection), and past that hyper stops
/// pulling bodies, which stops the reads from their upstreams (backpressure). Receive
/// windows (1 MiB per stream and per connection, hyper's) bound what a client can push.
fn h2_builder(
    max_list: u32,
    max_streams: u32,
    stream_send_buffer: usize,
) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(max_list)
        .max_concurrent_streams(max_streams)
        .max_send_buf_size(stream_send_buffer);
    b
}

fn log_end(ctx: &ConnContext, r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        tracing::debug!(listener = %ctx.listener, error = %e, "connection ended with an error");
    }
}

#[derive(Clone, Copy)]
enum Alpn {
    None,
    H2,
    Http11,
}

/// Runs the TLS handshake within the listener's timeout and counts its outcome.
async fn handshake(
    stream: TcpStream,
    tls: &ServerTls,
    m: &TlsListenerMetrics,
) -> Option<(Box<TlsStream>, PeerTls, Alpn)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    let s = match tokio::time::timeout(tls.handshake_timeout, acceptor.accept(stream)).await {
        Err(_) => {
            m.handshake_failed(failure::Reason::Timeout);
            return None;
        }
        Ok(Err(e)) => {
            let reason = failure::reason(&e);
            m.handshake_failed(reason);
            tracing::debug!(reason = reason.as_str(), error = %e, "TLS handshake failed");
            return None;
        }
        Ok(Ok(s)) => s,
    };
    let conn = s.get_ref().1;
    match conn.handshake_kind() {
        Some(rustls::HandshakeKind::Resumed) => m.resumed.inc(),
        _ => m.full.inc(),
    };
    let alpn = match conn.alpn_protocol() {
        Some(b"h2") => Alpn::H2,
        Some(b"http/1.1") => Alpn::Http11,
        _ => Alpn::None,
    };
    let peer = PeerTls::new(
        conn.peer_certificates(),
        tls.own_id.as_ref(),
        conn.server_name(),
    );
    if peer.identity.cert_sha256.is_some() {
        m.peers.count(peer.identity.cell());
    }
    Some((Box::new(s), peer, alpn))
}

/// The connection types served here, which can all be asked to finish gracefully.
trait Graceful {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Serves an HTTP/2 connection until it ends; when the listener stops, or the connection
/// has been idle (no open stream) for its timeout, the streams in flight finish, new ones
/// are refused (GOAWAY), and the connection closes. A client that stopped reading
/// (`stalled`) gets no such grace: its streams would never finish, so the connection is
/// dropped at once, and with it every upstream body it held. Nor does a peer a new deny list
/// refuses (`revoked`): its connection and streams end at once, as ztunnel ends them.
async fn drive<C, E>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    idle: impl Future<Output = ()>,
    stalled: impl Future<Output = ()>,
    revoked: impl Future<Output = ()>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>> + Graceful,
{
    let closing = async {
        tokio::select! {
            () = stopped(&mut stop) => {}
            () = idle => {}
        }
    };
    tokio::pin!(conn);
    tokio::pin!(stalled);
    tokio::pin!(revoked);
    tokio::select! {
        r = conn.as_mut() => r,
        () = stalled.as_mut() => {
            tracing::debug!("the client read nothing within the send timeout; closing");
            Ok(())
        }
        () = revoked.as_mut() => {
            tracing::info!("the peer's certificate was revoked; closing its connection");
            Ok(())
        }
        () = closing => {
            conn.as_mut().graceful();
            tokio::select! {
                r = conn => r,
                () = stalled => Ok(()),
                () = revoked => Ok(()),
            }
        }
    }
}

/// Runs a phase before a connection's first request (the TLS handshake, the protocol
/// sniff); a stopping listener abandons it (`None`), as the connection has nothing in
/// flight. Without this, a client's pre-opened connection that never sends a byte (hyper's
/// pool and browsers open them) would hold a drain until its handshake or header-read
/// timeout.
async fn opening<T>(stop: &watch::Receiver<bool>, phase: impl Future<Output = T>) -> Option<T> {
    let mut stop = stop.clone();
    tokio::select! {
        biased;
        r = phase => Some(r),
        () = stopped(&mut stop) => None,
    }
}

/// Resolves once the listener is told to stop (or its controller is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
