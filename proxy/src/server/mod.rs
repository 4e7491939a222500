//! Running the proxy: worker threads, bound listeners, the admin listener, and a control
//! thread that owns reloads and shutdown. The control thread is the only writer of the
//! snapshot; workers only read it.

mod admin;
mod bind;
mod h2_idle;
mod listeners;
mod sniff;
mod watch;
mod worker;

use crate::compiler::{self, Loaded};
use crate::config::{ConfigError, ConfigErrors};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use admin::AdminState;
use arc_swap::ArcSwap;
use listeners::ListenerSet;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use worker::Worker;

/// How the proxy is started.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub config_path: PathBuf,
    /// Reload when the file changes (also when it is replaced by rename or symlink swap).
    pub watch_file: bool,
    /// `/ready` answers 200 from the start; `false` when something else (the xDS client)
    /// says when the first complete generation is in place.
    pub ready_at_start: bool,
    /// Apply a reloaded file that is empty or has no listeners. Off for files: a file caught
    /// half-written (an editor, a non-atomic copy) would otherwise remove every listener.
    /// The xDS client, whose files are written atomically, turns it on.
    pub allow_empty_reload: bool,
}

impl StartOptions {
    /// A proxy run from a config file, ready once started.
    pub fn file(config_path: PathBuf, watch_file: bool) -> Self {
        Self {
            config_path,
            watch_file,
            ready_at_start: true,
            allow_empty_reload: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error("admin listener: cannot listen on {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start a thread or runtime: {0}")]
    Runtime(std::io::Error),
    #[error("state directory {dir}: {what} ({source})")]
    StateDir {
        dir: PathBuf,
        what: String,
        source: std::io::Error,
    },
}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(e.into())
    }
}

/// Why a reload did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Refused(#[from] ConfigErrors),
    #[error("the proxy has stopped")]
    Stopped,
}

/// Why a snapshot compiled elsewhere was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "compiled as generation {compiled}, but generation {serving} serves now: compile it again"
    )]
    Stale { compiled: u64, serving: u64 },
    #[error(transparent)]
    Refused(#[from] ConfigError),
    #[error("the proxy has stopped")]
    Stopped,
}

enum Control {
    Reload(Option<oneshot::Sender<Result<u64, ReloadError>>>),
    /// A snapshot the xDS client compiled against the generation serving.
    Apply(Box<Snapshot>, oneshot::Sender<Result<u64, ApplyError>>),
    FileChanged,
    Shutdown(oneshot::Sender<()>),
}

/// A handle on a running proxy; cheap to clone. When the last clone is dropped, the proxy
/// drains and stops as on [`ProxyHandle::shutdown`].
#[derive(Clone)]
pub struct ProxyHandle {
    control: mpsc::UnboundedSender<Control>,
    admin: Arc<AdminState>,
    admin_addr: SocketAddr,
    addresses: Arc<Mutex<HashMap<String, SocketAddr>>>,
}

impl ProxyHandle {
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where listener `name` accepts connections (the real port when configured with 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addresses.lock().ok()?.get(name).copied()
    }

    /// Re-reads the config file; returns the generation now serving, or why the file was
    /// refused (the previous generation keeps serving).
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Reload(Some(tx)))
            .map_err(|_| ReloadError::Stopped)?;
        rx.await.map_err(|_| ReloadError::Stopped)?
    }

    /// Applies a snapshot compiled (`compiler::compile`) against the generation now serving
    /// ([`ProxyHandle::current`]), as a reload would apply it: listeners are bound, the
    /// snapshot activated and swapped in. Returns the generation now serving.
    pub async fn apply(&self, snap: Snapshot) -> Result<u64, ApplyError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Apply(Box::new(snap), tx))
            .map_err(|_| ApplyError::Stopped)?;
        rx.await.map_err(|_| ApplyError::Stopped)?
    }

    /// The generation serving now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.admin.state.load_full()
    }

    /// The proxy's metrics registry (a snapshot compiled for it registers its labels here).
    pub fn metrics(&self) -> &Metrics {
        &self.admin.metrics
    }

    /// True once the proxy has stopped (its control thread is gone).
    pub fn is_stopped(&self) -> bool {
        self.control.is_closed()
    }

    /// Marks the proxy ready (or not) on `/ready`.
    pub fn set_ready(&self, ready: bool) {
        self.admin.ready.store(ready, Ordering::Relaxed);
    }

    /// Extra status shown under `xds` on `/config`.
    pub fn set_status(&self, status: serde_json::Value) {
        if let Ok(mut s) = self.admin.status.lock() {
            *s = Some(status);
        }
    }

    /// Asks for a reload without waiting for it (for signal handlers).
    pub fn request_reload(&self) {
        let _ = self.control.send(Control::Reload(None));
    }

    /// Stops accepting, lets in-flight requests finish up to the drain timeout, and stops.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the proxy on threads of its own and returns once every listener is bound.
pub fn start(opts: StartOptions) -> Result<ProxyHandle, StartError> {
    let path = opts.config_path.clone();
    let metrics = Arc::new(Metrics::new());
    let loaded = Loaded::read(&path)?;
    let admin_addr = loaded.config.admin.address;
    let workers_n = loaded.config.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let mut snap = compiler::compile(&loaded, None, &metrics).map_err(ConfigErrors)?;
    let listeners = ListenerSet::default();
    let prepared = listeners.prepare(&path, &snap, workers_n)?;
    compiler::activate(&mut snap, &path)?;
    let admin_socket = std::net::TcpListener::bind(admin_addr)
        .and_then(|s| s.set_nonblocking(true).map(|_| s))
        .map_err(|source| StartError::Admin {
            addr: admin_addr,
            source,
        })?;
    let admin_addr = admin_socket.local_addr().unwrap_or(admin_addr);
    let state = Arc::new(ArcSwap::from_pointee(snap));
    metrics.reload(true);
    metrics.set_generation(1);

    let mut workers = Vec::with_capacity(workers_n);
    for id in 0..workers_n {
        workers.push(worker::spawn(id, state.clone()).map_err(StartError::Runtime)?);
    }
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let addresses = Arc::new(Mutex::new(HashMap::new()));
    let admin = Arc::new(AdminState {
        metrics: metrics.clone(),
        state: state.clone(),
        config_path: path.clone(),
        draining: false.into(),
        ready: opts.ready_at_start.into(),
        last_error: Mutex::new(None),
        status: Mutex::new(None),
    });
    let admin_state = admin.clone();
    let mut ctl = Controller {
        allow_empty_reload: opts.allow_empty_reload,
        path,
        metrics,
        state,
        listeners,
        workers,
        admin,
        addresses: addresses.clone(),
        watch: None,
    };
    ctl.listeners
        .commit(prepared, &ctl.state.load(), &ctl.workers);
    ctl.publish_addresses();

    if opts.watch_file {
        ctl.watch = watch::FileWatch::new(control_tx.clone());
        ctl.track_files();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    std::thread::Builder::new()
        .name("membrane-control".into())
        .spawn(move || {
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(admin_socket) {
                    Ok(l) => {
                        tracing::info!(address = %admin_addr, "admin listening");
                        tokio::spawn(admin::serve(l, ctl.admin.clone()));
                    }
                    Err(e) => tracing::error!(error = %e, "admin listener failed"),
                }
                ctl.run(control_rx).await;
            });
        })
        .map_err(StartError::Runtime)?;
    Ok(ProxyHandle {
        control: control_tx,
        admin: admin_state,
        admin_addr,
        addresses,
    })
}

struct Controller {
    path: PathBuf,
    allow_empty_reload: bool,
    metrics: Arc<Metrics>,
    state: Arc<ArcSwap<Snapshot>>,
    listeners: ListenerSet,
    workers: Vec<Worker>,
    admin: Arc<AdminState>,
    addresses: Arc<Mutex<HashMap<String, SocketAddr>>>,
    watch: Option<watch::FileWatch>,
}

/// File events come in bursts (an editor writes, renames, touches); one reload per burst.
const DEBOUNCE: Duration = Duration::from_millis(150);

impl Controller {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Control>) {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Control::Reload(reply) => {
                    let r = self.reload().await;
                    if let Some(reply) = reply {
                        let _ = reply.send(r);
                    }
                }
                Control::Apply(snap, reply) => {
                    let _ = reply.send(self.apply(*snap));
                }
                Control::FileChanged => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while let Ok(Control::FileChanged) = rx.try_recv() {}
                    let _ = self.reload().await;
                }
                Control::Shutdown(done) => {
                    self.shutdown().await;
                    let _ = done.send(());
                    return;
                }
            }
        }
        // Every handle is gone: nobody can reload or stop this proxy any more, so stop it.
        self.shutdown().await;
    }

    async fn reload(&mut self) -> Result<u64, ReloadError> {
        let result = self.try_reload().await;
        self.record(
            result
                .as_ref()
                .map(|g| *g)
                .map_err(|e| e as &dyn std::fmt::Display),
        );
        Ok(result?)
    }

    fn apply(&mut self, snap: Snapshot) -> Result<u64, ApplyError> {
        let serving = self.state.load().generation;
        if snap.generation != serving + 1 {
            return Err(ApplyError::Stale {
                compiled: snap.generation,
                serving,
            });
        }
        let result = self.install(snap);
        self.record(
            result
                .as_ref()
                .map(|g| *g)
                .map_err(|e| e as &dyn std::fmt::Display),
        );
        Ok(result?)
    }

    /// Counts the outcome and keeps the refusal for `/config`.
    fn record(&self, result: Result<u64, &dyn std::fmt::Display>) {
        self.metrics.reload(result.is_ok());
        let mut last = self
            .admin
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(g) => {
                *last = None;
                tracing::info!(generation = g, "configuration applied");
            }
            Err(e) => {
                *last = Some(e.to_string());
                tracing::error!(error = %e, "configuration refused; the previous one keeps serving");
            }
        }
    }

    async fn try_reload(&mut self) -> Result<u64, ConfigErrors> {
        // File reads and DNS on the blocking pool: this thread also answers /ready and
        // /metrics.
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || Loaded::read(&path))
            .await
            .map_err(|e| ConfigError::Apply {
                file: self.path.clone(),
                message: format!("the loader did not finish: {e}"),
            })??;
        let prev = self.state.load_full();
        if !self.allow_empty_reload
            && loaded.config.listeners.is_empty()
            && !prev.listeners.is_empty()
        {
            let what = if loaded.text.trim().is_empty() {
                "the file is empty"
            } else {
                "the file has no listeners"
            };
            return Err(ConfigError::Apply {
                file: self.path.clone(),
                message: format!(
                    "{what}: refusing a reload that would remove all {} listeners (a file caught half-written?); start with --allow-empty-config to allow it",
                    prev.listeners.len()
                ),
            }
            .into());
        }
        let snap = compiler::compile(&loaded, Some(&prev), &self.metrics).map_err(ConfigErrors)?;
        Ok(self.install(snap)?)
    }

    /// Binds the snapshot's new listeners, activates it and swaps it in.
    fn install(&mut self, mut snap: Snapshot) -> Result<u64, ConfigError> {
        let prev = self.state.load_full();
        if snap.version == prev.version {
            return Ok(prev.generation);
        }
        let prepared = self
            .listeners
            .prepare(&self.path, &snap, self.workers.len())?;
        compiler::activate(&mut snap, &self.path)?;
        let generation = snap.generation;
        let sweep = deny_lists_changed(&prev, &snap);
        // Publish first, then start and stop listeners: a new listener's first connection
        // must find itself in the snapshot. Requests in flight keep the generation they
        // loaded until they finish.
        let snap = Arc::new(snap);
        self.state.store(snap.clone());
        self.listeners.commit(prepared, &snap, &self.workers);
        if sweep {
            // Open connections of peers the new lists refuse are closed by their workers.
            for w in &self.workers {
                let _ = w.commands.send(worker::Command::Sweep);
            }
        }
        self.publish_addresses();
        self.metrics.set_generation(generation);
        self.track_files();
        Ok(generation)
    }

    /// Watches the config file and the TLS files of the generation now serving.
    fn track_files(&mut self) {
        let snap = self.state.load();
        if let Some(w) = &mut self.watch {
            w.track(
                std::iter::once(self.path.as_path())
                    .chain(snap.watched_files.iter().map(|p| p.as_path())),
            );
        }
    }

    fn publish_addresses(&self) {
        if let Ok(mut a) = self.addresses.lock() {
            *a = self.listeners.addresses();
        }
    }

    async fn shutdown(&mut self) {
        self.admin.draining.store(true, Ordering::Relaxed);
        let drain = self.state.load().source.drain_timeout.0;
        tracing::info!(timeout = ?drain, "draining");
        self.listeners.stop_all();
        let deadline = Instant::now() + drain;
        let mut waits = Vec::new();
        for w in &self.workers {
            let (tx, rx) = oneshot::channel();
            if w.commands
                .send(worker::Command::Drain { deadline, done: tx })
                .is_ok()
            {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = w.await;
        }
        for w in self.workers.drain(..) {
            let _ = w.thread.join();
        }
        // The spans of the last requests go out before the process does (2 s at most).
        if let Some(t) = &self.state.load().tracing {
            t.exporter.flush(std::time::Duration::from_secs(2));
        }
        tracing::info!("drained");
    }
}

/// Whether a listener of `next` has a non-empty deny list that `prev`'s same listener did not
/// have: then open connections are to be looked at again.
fn deny_lists_changed(prev: &Snapshot, next: &Snapshot) -> bool {
    next.listeners.iter().any(|(name, l)| {
        let Some(tls) = &l.tls else { return false };
        if tls.revoked.is_empty() {
            return false;
        }
        let before = prev.listeners.get(name).and_then(|p| p.tls.as_ref());
        before.is_none_or(|b| b.revoked != tls.revoked)
    })
}
