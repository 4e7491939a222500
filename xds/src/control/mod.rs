//! The control server: watches a spec directory or an etcd prefix (`store`), recompiles on
//! change (debounced), and
//! serves each gateway its cell's resources over ADS. A change that fails `check` or the
//! compiler is refused with the errors, and the last good resources keep being served.
//! A small admin endpoint shows what each node was sent, ACKed and NACKed.

mod admin;
mod own;
mod state;
mod trace;

pub use state::ControlState;

use crate::ca::CurrentCa;
use crate::compile::{self, Compiled, Options};
use crate::server::Ads;
use crate::spec;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// The spec directory; with a `store`, where the files specs name are read from.
    pub spec_dir: PathBuf,
    /// Specs from etcd instead of `spec_dir` (`--store etcd://...`).
    pub store: Option<crate::store::Etcd>,
    /// gRPC (ADS) address.
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    /// Where each gateway finds `<cell>.pem` and `<cell>-key.pem`.
    pub cert_dir: PathBuf,
    /// The org CA, PEM, sent to gateways as their trust bundle.
    pub trust_bundle_pem: String,
    /// File events are gathered this long before recompiling.
    pub debounce: Duration,
    /// Serve over mTLS and issue certificates (`--ca`); plaintext without (`--insecure`).
    pub ca: Option<CaOptions>,
    /// Trace each spec change to this OTLP/gRPC collector (`--otlp-endpoint`).
    pub otlp_endpoint: Option<String>,
    /// The control API's address (`--api`); it needs a `store`.
    pub api: Option<SocketAddr>,
    /// The control API's audit records as JSON lines, besides the store (`--audit-log`).
    pub audit_log: Option<PathBuf>,
}

/// The control server as the cells' CA.
#[derive(Debug, Clone)]
pub struct CaOptions {
    /// `ca.pem`, `ca-key.pem`, optional `bundle.pem`; join tokens are kept here too.
    pub dir: PathBuf,
    /// Lifetime of the certificates issued (gateways renew at half of it).
    pub lifetime: Duration,
}

pub struct ControlHandle {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub api_addr: Option<SocketAddr>,
    pub state: Arc<ControlState>,
    reload: mpsc::UnboundedSender<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
    _ca_watcher: Option<notify::RecommendedWatcher>,
    _store_watch: Option<AbortOnDrop>,
}

impl ControlHandle {
    /// Stops serving ADS (open streams end; gateways keep their configuration).
    pub fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Re-reads the directory now (as a file change would).
    pub fn reload(&self) {
        let _ = self.reload.send(());
    }
}

/// Why the control server did not start, or a spec directory was not served.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Specs(#[from] spec::SpecErrors),
    #[error(transparent)]
    Compile(#[from] compile::CompileError),
    #[error(transparent)]
    Ca(#[from] membrane_identity::authority::LoadError),
    #[error("the spec store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the control server's own certificate: {0}")]
    OwnCertificate(String),
    #[error("--api needs --store: a directory of specs is changed by the tools that manage it")]
    ApiWithoutStore,
    #[error("--otlp-endpoint: {0}")]
    Tracing(#[from] membrane_telemetry::export::ExportError),
    #[error("{what}: cannot listen on {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The specs, validated exactly as `membrane check` validates them: from the directory, or
/// from the store.
/// Files (or keys) whose text did not change since the last read are not parsed again.
async fn load_specs(
    opts: &ControlOptions,
    cache: &mut spec::ParseCache,
) -> Result<spec::Specs, ControlError> {
    match &opts.store {
        None => Ok(cache
            .validate_dir(&opts.spec_dir)
            .map_err(spec::SpecErrors)?),
        Some(store) => {
            let docs = store.documents().await?;
            let origin = PathBuf::from(format!("etcd:{}", store.prefix));
            Ok(cache
                .validate_documents(&docs, &opts.spec_dir, &origin)
                .map_err(spec::SpecErrors)?)
        }
    }
}

/// Only the gateways whose inputs changed are compiled again (`compile::Compiler`).
fn build(
    opts: &ControlOptions,
    ca: Option<&CurrentCa>,
    specs: spec::Specs,
    compiler: &mut compile::Compiler,
) -> Result<Compiled, ControlError> {
    Ok(compiler.compile(
        &specs,
        &Options {
            spec_dir: opts.spec_dir.clone(),
            cert_dir: opts.cert_dir.clone(),
            // The CA's roots as they are now (a roll-over changes them), else the files'.
            trust_bundle_pem: ca.map_or_else(
                || opts.trust_bundle_pem.clone(),
                |c| c.get().bundle_pem().to_owned(),
            ),
            own_svid: opts.ca.is_some(),
            revoked: opts
                .ca
                .as_ref()
                .map(|ca| crate::revoked::DenyList::new(&ca.dir).entries())
                .unwrap_or_default(),
        },
    )?)
}

/// Starts serving (inside a tokio runtime). Refuses to start on invalid specs.
pub async fn start(opts: ControlOptions) -> Result<ControlHandle, ControlError> {
    if opts.api.is_some() && opts.store.is_none() {
        return Err(ControlError::ApiWithoutStore);
    }
    let ca_now = match &opts.ca {
        Some(ca) => Some(CurrentCa::load(&ca.dir, ca.lifetime)?),
        None => None,
    };
    let mut parsed = spec::ParseCache::default();
    let mut compiler = compile::Compiler::default();
    let specs = load_specs(&opts, &mut parsed).await?;
    let first = build(&opts, ca_now.as_deref(), specs, &mut compiler)?;
    let (publish, current) = watch::channel(Arc::new(first));
    let ads = match &opts.ca {
        Some(ca) => {
            Ads::new(current.clone()).requiring_peers(crate::revoked::DenyList::new(&ca.dir))
        }
        None => Ads::new(current.clone()),
    };
    let state = Arc::new(ControlState {
        nodes: ads.nodes.clone(),
        current,
        last_error: Mutex::new(None),
        changed_at: Mutex::new(Instant::now()),
        generation: Mutex::new(1),
        refused_streams: ads.refused.clone(),
        ca: Mutex::new(None),
        ca_now: ca_now.clone(),
    });
    let listen_err = |source| ControlError::Listen {
        what: "ADS",
        addr: opts.listen,
        source,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let mut api_tls = None;
    let addr = match &opts.ca {
        None => {
            let incoming =
                tonic::transport::server::TcpIncoming::bind(opts.listen).map_err(listen_err)?;
            let addr = incoming.local_addr().map_err(listen_err)?;
            let svc = crate::server::service(ads);
            tokio::spawn(async move {
                if let Err(e) = crate::server::transport()
                    .add_service(svc)
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await
                {
                    tracing::error!(error = %e, "ADS server stopped");
                }
            });
            tracing::warn!(%addr, "ADS listening in plaintext (--insecure): anyone who reaches it can read any cell's configuration");
            addr
        }
        Some(ca) => {
            let now = ca_now
                .clone()
                .ok_or_else(|| ControlError::OwnCertificate("the CA was not loaded".into()))?;
            let (served, tls) = own::serve_tls(ca, now, &opts, ads, state.clone(), stopped).await?;
            tracing::info!(addr = %served, "ADS and the certificate service listening (mTLS)");
            api_tls = Some(tls);
            served
        }
    };
    let admin_addr = match opts.admin {
        Some(a) => Some(admin::serve(a, state.clone()).await?),
        None => None,
    };
    let api_addr = match (opts.api, &opts.store) {
        (Some(a), Some(store)) => {
            let audit = crate::manage::audit::Audit::new(store.clone(), opts.audit_log.clone());
            let manager = crate::manage::Manager::new(store.clone(), opts.spec_dir.clone(), audit);
            let tls = api_tls.is_some();
            let bound = crate::manage::http::serve(a, Arc::new(manager), api_tls)
                .await
                .map_err(|source| ControlError::Listen {
                    what: "the control API",
                    addr: a,
                    source,
                })?;
            if tls {
                tracing::info!(addr = %bound, "control API listening (HTTPS)");
            } else {
                tracing::warn!(addr = %bound, "control API listening in plaintext (--insecure): operator tokens cross the network in the clear");
            }
            Some(bound)
        }
        _ => None,
    };

    let (reload, mut reloads) = mpsc::unbounded_channel::<()>();
    // A store is watched through etcd; a directory through the file system.
    let (watcher, store_watch) = match &opts.store {
        Some(store) => (
            None,
            Some(AbortOnDrop(tokio::spawn(
                store.clone().watch(reload.clone()),
            ))),
        ),
        None => (watch_dir(&opts.spec_dir, reload.clone(), |_| true), None),
    };
    // The deny list is pushed too: a change to it recompiles (token redemptions, which
    // write in the same directory, do not).
    let ca_watcher = opts.ca.as_ref().and_then(|ca| {
        watch_dir(&ca.dir, reload.clone(), |p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n == "revoked"
                    || n == "ca.pem"
                    || n == "ca-key.pem"
                    || n == "bundle.pem"
                    || crate::ca::rollover::is_rollover_file(n)
            })
        })
    });
    let tracer = match &opts.otlp_endpoint {
        Some(e) => Some(Arc::new(trace::ChangeTracer::start(e)?)),
        None => None,
    };
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            // A change in a watched directory, or the roll-over's next step falling due.
            let step = ca_now.as_ref().and_then(|c| c.next_step());
            let due = async {
                match step {
                    Some(at) => {
                        let wait = at
                            .duration_since(std::time::SystemTime::now())
                            .unwrap_or_default();
                        tokio::time::sleep(wait).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = reloads.recv() => if r.is_none() { break },
                () = due => {}
            }
            let event = Instant::now();
            tokio::time::sleep(opts.debounce).await;
            while reloads.try_recv().is_ok() {}
            if let Some(c) = &ca_now {
                c.reload();
            }
            let compile_start = Instant::now();
            let built = match load_specs(&opts, &mut parsed).await {
                Ok(specs) => build(&opts, ca_now.as_deref(), specs, &mut compiler),
                Err(e) => Err(e),
            };
            let compiled = Instant::now();
            let traced = |outcome| trace::Change {
                event,
                compile: (compile_start, compiled),
                outcome,
            };
            match built {
                Ok(next) => {
                    if let Ok(mut e) = st.last_error.lock() {
                        *e = None;
                    }
                    let changed = publish.send_if_modified(|cur| {
                        if **cur == next {
                            return false;
                        }
                        *cur = Arc::new(next);
                        true
                    });
                    if changed {
                        if let Ok(mut t) = st.changed_at.lock() {
                            *t = Instant::now();
                        }
                        let generation = match st.generation.lock() {
                            Ok(mut g) => {
                                *g += 1;
                                *g
                            }
                            Err(_) => 0,
                        };
                        tracing::info!("specs changed; pushing to the gateways that need it");
                        if let Some(t) = &tracer {
                            t.changed(traced(Ok(generation)), st.clone());
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(errors = %e, "spec change refused; the last good resources keep being served");
                    if let Ok(mut last) = st.last_error.lock() {
                        *last = Some(e.to_string());
                    }
                    if let Some(t) = &tracer {
                        t.changed(traced(Err(e.to_string())), st.clone());
                    }
                }
            }
        }
    });
    Ok(ControlHandle {
        addr,
        admin_addr,
        api_addr,
        state,
        reload,
        stop: Some(stop),
        _watcher: watcher,
        _ca_watcher: ca_watcher,
        _store_watch: store_watch,
    })
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches `dir`; a change to a path that `wanted` accepts asks for a rebuild.
fn watch_dir(
    dir: &std::path::Path,
    tx: mpsc::UnboundedSender<()>,
    wanted: fn(&std::path::Path) -> bool,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && !ev.kind.is_access()
            && (ev.paths.is_empty() || ev.paths.iter().any(|p| wanted(p)))
        {
            let _ = tx.send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch the spec directory"))
    .ok()?;
    w.watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| tracing::warn!(error = %e, "cannot watch the spec directory"))
        .ok()?;
    Some(w)
}
