//! One config generation as the request path sees it: listeners with their route tables,
//! clusters, JWT providers, and the state handed from one generation to the next. Made by
//! `compiler`; a request loads the snapshot once and sees one consistent view.

use crate::config::{Bootstrap, ListenerProtocol};
use crate::enforce::authn::JwtProvider;
use crate::enforce::jwks::{ProviderKeys, RemoteSpec};
use crate::metrics::{ListenerMetrics, RouteMetrics};
use crate::route::RouteTable;
use crate::tls::server::ServerTls;
use crate::upstream::Cluster;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use membrane_policy::jwt::KeySet;
use membrane_policy::ratelimit::{Buckets, Limit};
use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A compiled config generation.
pub struct Snapshot {
    pub generation: u64,
    /// Hash of the source text and the files it names: equal inputs, equal versions.
    pub version: String,
    pub listeners: FxHashMap<Arc<str>, Arc<Listener>>,
    pub clusters: FxHashMap<Arc<str>, Arc<Cluster>>,
    pub source: Bootstrap,
    /// Every certificate, key, bundle and key set file read for this generation (watched
    /// for rotation).
    pub watched_files: Vec<PathBuf>,
    pub providers: FxHashMap<Arc<str>, Arc<JwtProvider>>,
    /// Rate-limit buckets by (listener, route), handed to the next generation.
    pub rate_limits: RateLimitState,
    /// What activating this generation does (`compiler::activate`, just before the swap);
    /// empty once done.
    pub pending: Pending,
    /// Traces, when `tracing` is configured (the exporter is handed to the next generation
    /// while its settings are unchanged).
    pub tracing: Option<Arc<crate::trace::Tracing>>,
}

/// Rate-limit state that outlives a generation, by (listener, route).
pub type RateLimitState = FxHashMap<(Arc<str>, Arc<str>), KeptBuckets>;

/// A route's buckets and the limit they were made for: kept while the limit is unchanged.
pub struct KeptBuckets {
    pub limit: Limit,
    pub buckets: Arc<Buckets>,
}

/// Changes to state shared with the generation now serving, and threads to start: left by
/// the compiler (which changes nothing) for `activate`.
#[derive(Default)]
pub struct Pending {
    /// Static key sets for providers kept from the previous generation.
    pub key_sets: Vec<KeyInstall>,
    /// Remote key sets of new providers, fetched from when the generation is activated.
    pub fetchers: Vec<Fetcher>,
    /// Health-check probers of every cluster (`spec: None` where a cluster has no checks).
    pub probers: Vec<crate::upstream::health_check::Probers>,
}

pub struct KeyInstall {
    pub keys: Arc<ProviderKeys>,
    /// A hash of the key set's text: the same text keeps the verified tokens cached.
    pub content: u64,
    pub set: KeySet,
}

pub struct Fetcher {
    pub keys: Arc<ProviderKeys>,
    pub spec: RemoteSpec,
}

pub struct Listener {
    pub name: Arc<str>,
    pub address: SocketAddr,
    pub protocol: ListenerProtocol,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    /// HTTP/2 connections with no open stream for this long are closed.
    pub idle_timeout: Duration,
    /// How long the client may take no response bytes before its connection is closed.
    pub send_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
    pub http2_stream_send_buffer: usize,
    /// How requests are made canonical before routing (`normalize`).
    pub normalization: crate::normalize::Rules,
    /// Protocols an `Upgrade` request may switch to (lower case); never `h2c`.
    pub upgrades: Box<[Box<str>]>,
    /// Headers only the gateway sets on this listener (the claim headers of the JWT
    /// providers its routes use): removed from every request before routing, so that
    /// neither a route, a rule nor the upstream reads a client's forgery of them.
    pub owned_headers: Box<[HeaderName]>,
    /// Headers that a route or a rule of this listener decides on: a request that carries
    /// one of them twice is refused (`cookie` aside), as the rule would read the first
    /// value and an upstream may read another.
    pub inspected_headers: Box<[HeaderName]>,
    /// TLS termination; `None` for plain TCP.
    pub tls: Option<Arc<ServerTls>>,
    pub tls_metrics: Option<crate::tls::metrics::TlsListenerMetrics>,
    pub authz: Option<crate::enforce::authz::ListenerAuthz>,
    /// The access log; `None` when off.
    pub access_log: Option<crate::access_log::AccessLog>,
    /// Traces of this listener's requests; `None` without `tracing`.
    pub tracing: Option<crate::trace::ListenerTracing>,
    pub routes: RouteTable<RouteEntry>,
    /// Counts requests that matched no route.
    pub unrouted: RouteMetrics,
    pub metrics: ListenerMetrics,
}

pub struct RouteJwt {
    pub provider: Arc<JwtProvider>,
    /// `false`: requests without a token pass unauthenticated.
    pub required: bool,
}

/// What a matched route does, with its name and counters.
pub struct RouteEntry {
    pub name: Arc<str>,
    pub action: Action,
    pub metrics: RouteMetrics,
    /// A JWT is checked before the action.
    pub jwt: Option<RouteJwt>,
    pub rate_limit: Option<Arc<crate::enforce::ratelimit::RouteRateLimit>>,
}

/// A prefix rewrite: the first `strip` bytes of the path (the matched prefix) become `with`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub strip: usize,
    pub with: Box<str>,
}

pub enum Action {
    Forward {
        cluster: Arc<Cluster>,
        rewrite: Option<Rewrite>,
        timeout: Duration,
    },
    Redirect {
        status: StatusCode,
        scheme: Option<Box<str>>,
        host: Option<Box<str>>,
        path: Option<Box<str>>,
    },
    Direct {
        status: StatusCode,
        body: Bytes,
        content_type: HeaderValue,
    },
}

impl Snapshot {
    /// Every loaded certificate as (owner, label, not-after in Unix seconds), for the
    /// expiry gauges.
    pub fn certificates(&self) -> Vec<crate::tls::metrics::CertExpiry> {
        let mut out = Vec::new();
        let mut add = |owner: String, infos: &[crate::tls::cert_info::CertInfo]| {
            for i in infos {
                out.push(crate::tls::metrics::CertExpiry {
                    owner: owner.clone(),
                    certificate: i.label(),
                    not_after: i.not_after,
                });
            }
        };
        for (name, l) in &self.listeners {
            if let Some(t) = &l.tls {
                add(format!("listener/{name}"), &t.certs);
                add(format!("listener/{name}/trust_bundle"), &t.bundle);
            }
        }
        for (name, c) in &self.clusters {
            if let Some(t) = &c.tls {
                add(format!("cluster/{name}/client"), t.client_cert.as_slice());
                add(format!("cluster/{name}/trust_bundle"), &t.bundle);
            }
        }
        out
    }
}
