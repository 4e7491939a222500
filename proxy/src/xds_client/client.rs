//! The proxy as an xDS client (delta ADS): subscribes to every Membrane resource type for
//! its node, turns each batch of updates into one new generation, NACKs the resources that
//! fail (one by one, with their reasons) while the rest applies, and keeps serving the last
//! good generation. Each applied generation is written to the state directory, which the
//! proxy boots from when the control server is unreachable; reconnects use jittered
//! exponential backoff and send the versions they hold (`initial_resource_versions`).

use super::apply::apply;
use super::channel::{ConnectError, Security, connect};
use super::held::{Held, HeldResource};
use super::identity::{self, Issued};
use super::state_dir::{claim_state_dir, generation_file, load_held, write_atomically};
use crate::config::{AdminConfig, Bootstrap};
use crate::server::{ProxyHandle, StartError, StartOptions};
use crate::tls::metrics::Renewal;
use membrane_api::proto::envoy::config::core::v3::Node;
use membrane_api::proto::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use membrane_api::proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use membrane_api::proto::google::rpc::Status as RpcStatus;
use membrane_api::stream::ChannelStream;
use membrane_api::types::{TYPE_CLUSTER, TYPE_JWT_PROVIDER, TYPE_LISTENER, TYPE_TRUST_BUNDLE};
use membrane_identity::channel::Rotating;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Every type a gateway subscribes to, trust bundles first (listeners name them).
pub const TYPES: [&str; 4] = [
    TYPE_TRUST_BUNDLE,
    TYPE_CLUSTER,
    TYPE_JWT_PROVIDER,
    TYPE_LISTENER,
];

#[derive(Debug, Clone)]
pub struct XdsOptions {
    /// `https://host:port` of the control server (`http://` with `Security::Plaintext`).
    pub url: String,
    /// Other replicas of the control server, tried in turn after `url` when a stream
    /// cannot be had or ends (the same security applies to all). Replicas compile the same
    /// specs into the same resources and versions (content hashes), so the one a gateway
    /// moves to sends it nothing it holds.
    pub also: Vec<String>,
    /// `<cell>/<instance>`.
    pub node: String,
    pub state_dir: PathBuf,
    pub admin: SocketAddr,
    /// TLS (from `channel::security`, which checks it against the URL) or plaintext.
    pub security: Security,
    /// For the first certificate, when the state directory holds no valid one.
    pub join_token: Option<String>,
    /// Traces (`--otlp-endpoint`): the control server's resources do not carry them, so
    /// the gateway adds this to every generation it compiles.
    pub tracing: Option<crate::config::TracingConfig>,
    /// Where this gateway runs (`--region`, `--zone`): a property of the host, not of the
    /// cell, so it is the gateway's to add to every generation, as `tracing` is.
    pub locality: Option<crate::config::LocalityConfig>,
}

/// Starts the proxy from the last generation in the state directory (or with no listeners,
/// not ready, when there is none) and the xDS client beside it.
pub fn start(mut opts: XdsOptions) -> Result<ProxyHandle, StartError> {
    // Trust bundles are written here and named by path in the generation file: absolute.
    opts.state_dir = claim_state_dir(&opts.state_dir, &opts.node)?;
    let file = generation_file(&opts.state_dir);
    let booted_from_state = file.exists();
    if !booted_from_state {
        write_atomically(
            &file,
            serde_json::to_string_pretty(&Bootstrap {
                admin: AdminConfig {
                    address: opts.admin,
                },
                ..Bootstrap::default()
            })
            .unwrap_or_default(),
        )
        .map_err(|source| StartError::StateDir {
            dir: opts.state_dir.clone(),
            what: "cannot write the first generation file".into(),
            source,
        })?;
    } else {
        tracing::info!(file = %file.display(), "booting from the last applied generation");
    }
    let handle = crate::server::start(StartOptions {
        config_path: file,
        watch_file: false,
        ready_at_start: booted_from_state,
        // The client writes its files atomically, and a cell may have no listener.
        allow_empty_reload: true,
    })?;
    // The resources kept beside the generation, sent as known versions on connecting; none
    // without a generation to serve, so the control server answers every type (readiness
    // waits for that) even if a stale resources file is left in the directory.
    let held = if booted_from_state {
        load_held(&opts.state_dir)
    } else {
        Held::new()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let h = handle.clone();
    std::thread::Builder::new()
        .name("membrane-xds".into())
        .spawn(move || rt.block_on(run(opts, h, held)))
        .map_err(StartError::Runtime)?;
    Ok(handle)
}

#[derive(Default)]
struct Status {
    /// The control server of the current (or last) stream.
    server: String,
    connected: bool,
    generation: u64,
    versions: BTreeMap<String, String>,
    last_ack: Option<String>,
    nacks: BTreeMap<String, String>,
    /// Types the control server has answered since the start (an empty answer counts).
    answered: BTreeSet<String>,
    /// The listeners the control server has sent and not removed: the gateway is not ready
    /// until each of them serves (a NACKed new listener does not).
    wanted_listeners: BTreeSet<String>,
    ready: bool,
}

impl Status {
    fn publish(&self, opts: &XdsOptions, handle: &ProxyHandle) {
        handle.set_status(json!({
            "server": self.server,
            "node": opts.node,
            "connected": self.connected,
            "applied_generation": self.generation,
            "versions": self.versions,
            "last_ack": self.last_ack,
            "nacks": self.nacks,
            "awaiting": TYPES.iter().filter(|t| !self.answered.contains(**t)).collect::<Vec<_>>(),
            "ready": self.ready,
        }));
    }
}

/// Jittered: between half and all of `d`, so gateways do not retry in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// The gateway's certificate for the control channel: the one kept in the state directory
/// while valid, else a new one for the join token; retried until had (the proxy serves its
/// last generation meanwhile). `None` when the channel is plaintext or the proxy stops.
async fn own_identity(opts: &XdsOptions, handle: &ProxyHandle) -> Option<(Issued, Arc<Rotating>)> {
    if matches!(opts.security, Security::Plaintext) {
        return None;
    }
    let mut backoff = Duration::from_secs(1);
    let mut tries = 0usize;
    while !handle.is_stopped() {
        let kept = identity::load(&opts.state_dir).filter(Issued::valid);
        let url = opts.server(tries);
        tries += 1;
        let got = match (kept, &opts.join_token) {
            (Some(kept), _) => Ok(kept),
            (None, Some(token)) => {
                identity::request(
                    url,
                    &opts.security,
                    &opts.node,
                    Some(token),
                    None,
                    &opts.state_dir,
                )
                .await
            }
            (None, None) => Err(identity::IdentityError::Unusable(
                "no valid certificate in the state directory and no join token (--join-token)"
                    .into(),
            )),
        };
        match got.and_then(|i| Ok((i.certified()?, i))) {
            Ok((key, issued)) => {
                tracing::info!(id = %issued.id, expires_in_s = issued.seconds_left(), "gateway identity");
                handle.metrics().tls().set_svid_not_after(issued.not_after);
                return Some((issued, Rotating::new(key)));
            }
            Err(e) => {
                tracing::error!(error = %e, "no certificate for the control channel yet; retrying")
            }
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
    None
}

/// The roots the control server is checked against: `--xds-ca`, and those that came with
/// the gateway's last certificate (so a CA roll-over that the gateway was told of through
/// its renewals carries the control channel too).
type IssuedRoots = Arc<std::sync::RwLock<String>>;

fn channel_security(opts: &XdsOptions, roots: Option<&IssuedRoots>) -> Security {
    match (
        &opts.security,
        roots.and_then(|r| r.read().ok().map(|r| r.clone())),
    ) {
        (Security::Tls { bundle_pem, expect }, Some(extra)) => Security::Tls {
            bundle_pem: format!("{}\n{extra}", bundle_pem.trim_end()),
            expect: expect.clone(),
        },
        (other, _) => other.clone(),
    }
}

/// Renews at half life over mTLS and swaps the new certificate in: for the control
/// channel's next handshakes and, by a reload, for listeners and clusters that use it.
async fn renew(
    opts: XdsOptions,
    handle: ProxyHandle,
    mut issued: Issued,
    own: Arc<Rotating>,
    roots: IssuedRoots,
) {
    loop {
        tokio::time::sleep(issued.renew_in()).await;
        let mut backoff = Duration::from_secs(1);
        let mut tries = 0usize;
        loop {
            if handle.is_stopped() {
                return;
            }
            let url = opts.server(tries);
            tries += 1;
            let renewed = identity::request(
                url,
                &channel_security(&opts, Some(&roots)),
                &opts.node,
                None,
                Some((&issued, own.clone())),
                &opts.state_dir,
            )
            .await
            .and_then(|i| Ok((i.certified()?, i)));
            match renewed {
                Ok((key, next)) => {
                    own.set(key);
                    if let Ok(mut r) = roots.write() {
                        r.clone_from(&next.bundle_pem);
                    }
                    issued = next;
                    handle.metrics().tls().svid_renewed(Renewal::Ok);
                    handle.metrics().tls().set_svid_not_after(issued.not_after);
                    handle.request_reload();
                    tracing::info!(id = %issued.id, expires_in_s = issued.seconds_left(), "certificate renewed");
                    break;
                }
                Err(e) => {
                    handle.metrics().tls().svid_renewed(Renewal::Failed);
                    tracing::warn!(error = %e, expires_in_s = issued.seconds_left(), "certificate renewal failed; retrying while the current one is valid");
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

async fn run(opts: XdsOptions, handle: ProxyHandle, mut held: Held) {
    let own = own_identity(&opts, &handle).await;
    let roots = own
        .as_ref()
        .map(|(issued, _)| Arc::new(std::sync::RwLock::new(issued.bundle_pem.clone())));
    if let (Some((issued, rotating)), Some(roots)) = (&own, &roots) {
        tokio::spawn(renew(
            opts.clone(),
            handle.clone(),
            issued.clone(),
            rotating.clone(),
            roots.clone(),
        ));
    }
    let own = own.map(|(_, r)| r);
    let first = Duration::from_millis(250);
    let mut backoff = first;
    let mut status = Status::default();
    // Which server, in turn: each ended stream or failed connection moves to the next.
    let mut turn = 0usize;
    while !handle.is_stopped() {
        let security = channel_security(&opts, roots.as_ref());
        let url = opts.server(turn);
        status.server = url.to_owned();
        let had_stream = match session(
            url,
            &opts,
            &security,
            own.clone(),
            &handle,
            &mut held,
            &mut status,
        )
        .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(server = %url, error = %e, "xDS stream ended");
                e.had_stream()
            }
        };
        status.connected = false;
        status.publish(&opts, &handle);
        handle.metrics().xds().set_connected(false);
        turn += 1;
        // A stream that was had resets the wait; one more round of servers that could not
        // be reached doubles it (a gateway meanwhile serves its last generation). Within a
        // round, the next server is tried after the shortest wait.
        let round_done = turn.is_multiple_of(opts.servers());
        if had_stream {
            backoff = first;
        } else if round_done {
            backoff = (backoff * 2).min(Duration::from_secs(15));
        }
        tokio::time::sleep(jitter(if round_done { backoff } else { first })).await;
    }
}

impl XdsOptions {
    /// The control servers in turn: `url` first, then `also`.
    fn server(&self, turn: usize) -> &str {
        match turn % self.servers() {
            0 => &self.url,
            i => &self.also[i - 1],
        }
    }

    fn servers(&self) -> usize {
        1 + self.also.len()
    }
}

/// Why a session with the control server ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect: {}", .0.detail())]
    Connect(#[from] ConnectError),
    #[error("stream: {0}")]
    Stream(tonic::Status),
    #[error("receive: {0}")]
    Receive(tonic::Status),
    #[error("the control server closed the stream")]
    Ended,
    #[error("the request stream closed")]
    Closed,
}

impl SessionError {
    /// Whether a stream was open before it ended (else the server could not be reached).
    fn had_stream(&self) -> bool {
        !matches!(self, SessionError::Connect(_) | SessionError::Stream(_))
    }
}

async fn session(
    url: &str,
    opts: &XdsOptions,
    security: &Security,
    own: Option<Arc<Rotating>>,
    handle: &ProxyHandle,
    held: &mut Held,
    status: &mut Status,
) -> Result<(), SessionError> {
    let channel = connect(url, security, own).await?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(membrane_api::stream::MAX_RESPONSE_BYTES);
    let (tx, rx) = mpsc::channel(16);
    for (i, t) in TYPES.iter().enumerate() {
        let initial = held
            .iter()
            .filter(|((ty, _), _)| ty == t)
            .map(|((_, n), h)| (n.clone(), h.version.clone()))
            .collect();
        let req = DeltaDiscoveryRequest {
            node: (i == 0).then(|| Node {
                id: opts.node.clone(),
                user_agent_name: "membrane".into(),
                user_agent_version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            type_url: (*t).to_owned(),
            initial_resource_versions: initial,
            ..Default::default()
        };
        tx.send(req).await.map_err(|_| SessionError::Closed)?;
    }
    let mut stream = client
        .delta_aggregated_resources(ChannelStream(rx))
        .await
        .map_err(SessionError::Stream)?
        .into_inner();
    status.connected = true;
    status.publish(opts, handle);
    handle.metrics().xds().set_connected(true);
    loop {
        let first = stream
            .message()
            .await
            .map_err(SessionError::Receive)?
            .ok_or(SessionError::Ended)?;
        // Responses for the other types follow at once: apply them together.
        let mut batch = vec![first];
        while let Ok(Ok(Some(m))) =
            tokio::time::timeout(Duration::from_millis(50), stream.message()).await
        {
            batch.push(m);
        }
        let before = held.clone();
        for r in &batch {
            if r.type_url == TYPE_LISTENER {
                for res in &r.resources {
                    status.wanted_listeners.insert(res.name.clone());
                }
                for name in &r.removed_resources {
                    status.wanted_listeners.remove(name);
                }
            }
            for res in &r.resources {
                if let Some(any) = &res.resource {
                    held.insert(
                        (r.type_url.clone(), res.name.clone()),
                        HeldResource {
                            version: res.version.clone(),
                            any: any.clone(),
                        },
                    );
                }
            }
            for name in &r.removed_resources {
                held.remove(&(r.type_url.clone(), name.clone()));
            }
        }
        let (rejected, generation) = apply(opts, handle, held, &before).await;
        status
            .answered
            .extend(batch.iter().map(|r| r.type_url.clone()));
        if let Some(g) = generation {
            status.generation = g;
            // Ready once every type has been answered and applied, as Envoy's init waits
            // for its first CDS and LDS: a gateway that had only its clusters would say ready
            // with no listener bound; and once every listener sent serves: one whose every
            // version was NACKed is not bound, and a gateway with none bound is not ready.
            // Once ready, it stays so (a later refusal keeps the last good version serving).
            // (Booted from its state, it was ready from the start.)
            let serving = status
                .wanted_listeners
                .iter()
                .all(|n| held.contains_key(&(TYPE_LISTENER.to_owned(), n.clone())));
            if !status.ready && TYPES.iter().all(|t| status.answered.contains(*t)) && serving {
                status.ready = true;
                handle.set_ready(true);
            }
        }
        let mut replies = Vec::with_capacity(batch.len());
        for r in &batch {
            let reasons: Vec<String> = rejected
                .iter()
                .filter(|((t, _), _)| *t == r.type_url)
                .map(|((_, n), why)| format!("{n}: {why}"))
                .collect();
            status
                .versions
                .insert(r.type_url.clone(), r.system_version_info.clone());
            let error_detail = (!reasons.is_empty()).then(|| RpcStatus {
                code: 3,
                message: reasons.join("; "),
                details: Vec::new(),
            });
            if error_detail.is_none() {
                status.last_ack = Some(format!("{} {}", r.type_url, r.system_version_info));
                handle.metrics().xds().acked();
            } else {
                handle.metrics().xds().nacked();
            }
            replies.push(DeltaDiscoveryRequest {
                type_url: r.type_url.clone(),
                response_nonce: r.nonce.clone(),
                error_detail,
                ..Default::default()
            });
        }
        status.nacks = rejected
            .iter()
            .map(|((t, n), why)| (format!("{t}/{n}"), why.clone()))
            .collect();
        // Published before the ACKs leave: whoever sees an ACK at the control server finds it
        // in the gateway's own /config too.
        status.publish(opts, handle);
        for reply in replies {
            tx.send(reply).await.map_err(|_| SessionError::Closed)?;
        }
    }
}
