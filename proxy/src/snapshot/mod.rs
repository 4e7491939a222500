//! One config generation, compiled for the request path, and the compiler that makes it.
//!
//! Everything is checked here, before the swap: references (route → cluster), names,
//! regexes, status codes. A request loads the snapshot once and sees one consistent view.

use crate::config::{
    Bootstrap, ClusterConfig, ConfigError, ListenerConfig, ListenerProtocol, Located,
    PathMatchConfig, RouteConfig,
};
use crate::metrics::{ListenerMetrics, Metrics, RouteMetrics};
use crate::route::{
    DomainPattern, HeaderMatcher, HeaderRule, PathMatch, Route, RouteTable, VirtualHost,
};
use crate::tls::server::ServerTls;
use crate::upstream::{Cluster, ClusterShared, Endpoint};

mod policy;
mod tls;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

/// A compiled config generation.
pub struct Snapshot {
    pub generation: u64,
    /// Hash of the source text: equal texts give equal versions.
    pub version: String,
    pub listeners: FxHashMap<Arc<str>, Arc<Listener>>,
    pub clusters: FxHashMap<Arc<str>, Arc<Cluster>>,
    pub source: Bootstrap,
    /// Every certificate, key, bundle and key set file read for this generation (watched
    /// for rotation).
    pub watched_files: Vec<PathBuf>,
    pub providers: FxHashMap<Arc<str>, Arc<crate::enforce::authn::JwtProvider>>,
    /// Rate-limit buckets by (listener, route), handed to the next generation.
    pub rate_limits: policy::RateLimitState,
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
    pub access_log: crate::access_log::AccessLogTarget,
    pub routes: RouteTable<RouteEntry>,
    /// Counts requests that matched no route.
    pub unrouted: RouteMetrics,
    pub metrics: ListenerMetrics,
}

pub struct RouteJwt {
    pub provider: Arc<crate::enforce::authn::JwtProvider>,
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

pub enum Action {
    Forward {
        cluster: Arc<Cluster>,
        /// Replaces the first `strip` bytes of the path.
        rewrite: Option<(usize, Box<str>)>,
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

/// Compiles a parsed bootstrap. `prev` lends reload-stable cluster state (pools, counts).
pub fn compile(
    file: &Path,
    text: &str,
    cfg: Bootstrap,
    generation: u64,
    prev: Option<&Snapshot>,
    metrics: &Metrics,
) -> Result<Snapshot, ConfigError> {
    let c = Compiler {
        file,
        metrics,
        watched_files: RefCell::new(Vec::new()),
        material: Cell::new(0),
        providers: RefCell::new(FxHashMap::default()),
        prev_rate: prev.map(|p| &p.rate_limits),
        rate: RefCell::new(FxHashMap::default()),
    };
    if cfg.workers == Some(0) {
        return Err(c.err_at(0, 0, "workers", "must be at least 1".into()));
    }
    let mut clusters = FxHashMap::default();
    for (i, cl) in cfg.clusters.iter().enumerate() {
        let name: Arc<str> = cl.name.value().as_str().into();
        let shared = prev
            .and_then(|p| p.clusters.get(&name))
            .map(|old| old.shared.clone())
            .unwrap_or_else(ClusterShared::new);
        let cluster = c.cluster(i, cl, name.clone(), shared)?;
        if clusters.insert(name, Arc::new(cluster)).is_some() {
            return Err(c.err(
                &cl.name,
                format!("clusters[{i}].name"),
                "a cluster of this name is defined already".into(),
            ));
        }
    }
    let providers = c.providers(&cfg.jwt_providers, prev.map(|p| &p.providers))?;
    *c.providers.borrow_mut() = providers.clone();
    let mut listeners = FxHashMap::default();
    let mut addresses = FxHashMap::default();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let prev_resumption = prev
            .and_then(|p| p.listeners.get(l.name.value().as_str()))
            .and_then(|old| old.tls.as_ref())
            .map(|t| &t.resumption);
        let listener = c.listener(i, l, &clusters, prev_resumption)?;
        if l.address.port() != 0
            && let Some(other) = addresses.insert(l.address, l.name.value().clone())
        {
            return Err(c.err(
                &l.name,
                format!("listeners[{i}].address"),
                format!("{} is the address of listener `{other}` already", l.address),
            ));
        }
        if listeners
            .insert(listener.name.clone(), Arc::new(listener))
            .is_some()
        {
            return Err(c.err(
                &l.name,
                format!("listeners[{i}].name"),
                "a listener of this name is defined already".into(),
            ));
        }
    }
    // The version covers the TLS material too, so that a rotated certificate under an
    // unchanged config file still makes a new generation.
    let version = content_version(text, c.material.get());
    Ok(Snapshot {
        generation,
        version,
        watched_files: c.watched_files.into_inner(),
        providers,
        rate_limits: c.rate.into_inner(),
        listeners,
        clusters,
        source: cfg,
    })
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

fn content_version(text: &str, material: u64) -> String {
    let mut h = rustc_hash::FxHasher::default();
    text.hash(&mut h);
    if material != 0 {
        material.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

struct Compiler<'a> {
    file: &'a Path,
    metrics: &'a Metrics,
    watched_files: RefCell<Vec<PathBuf>>,
    /// A hash over the TLS files' contents read so far.
    material: Cell<u64>,
    providers: RefCell<FxHashMap<Arc<str>, Arc<crate::enforce::authn::JwtProvider>>>,
    prev_rate: Option<&'a policy::RateLimitState>,
    rate: RefCell<policy::RateLimitState>,
}

impl Compiler<'_> {
    fn err_at(&self, line: u64, column: u64, field: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            file: PathBuf::from(self.file),
            line,
            column,
            field: field.to_owned(),
            message,
        }
    }

    fn err<T>(&self, at: &Located<T>, field: String, message: String) -> ConfigError {
        self.err_at(at.line(), at.column(), &field, message)
    }

    fn cluster(
        &self,
        i: usize,
        cl: &ClusterConfig,
        name: Arc<str>,
        shared: Arc<ClusterShared>,
    ) -> Result<Cluster, ConfigError> {
        if cl.max_connections == 0 {
            return Err(self.err(
                &cl.name,
                format!("clusters[{i}].max_connections"),
                "must be at least 1".into(),
            ));
        }
        let tls = match &cl.tls {
            Some(t) => {
                Some(self.cluster_tls(&format!("clusters[{i}].tls"), t, cl.protocol, &cl.name)?)
            }
            None => None,
        };
        let (tls, tls_fingerprint) = match tls {
            Some((t, f)) => (Some(Arc::new(t)), f),
            None => (None, 0),
        };
        let mut endpoints = Vec::with_capacity(cl.endpoints.len());
        for (ei, e) in cl.endpoints.iter().enumerate() {
            let Some(addr) = self.endpoint(e, &format!("clusters[{i}].endpoints[{ei}]"))? else {
                continue;
            };
            endpoints.push(Endpoint {
                addr,
                active: AtomicUsize::new(0),
            });
        }
        Ok(Cluster {
            tls,
            tls_fingerprint,
            metrics: self.metrics.cluster(&name),
            name,
            endpoints: endpoints.into(),
            lb: cl.lb,
            protocol: cl.protocol,
            connect_timeout: cl.connect_timeout.0,
            request_timeout: cl.request_timeout.0,
            pool_idle_timeout: cl.pool_idle_timeout.0,
            body_idle_timeout: cl.body_idle_timeout.0,
            max_connections: cl.max_connections,
            shared,
        })
    }

    /// An endpoint address: `ip:port` as it is, `host:port` resolved now (IPv4 first). A name
    /// that does not resolve is left out with a warning; a malformed address is an error.
    fn endpoint(
        &self,
        e: &Located<String>,
        field: &str,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        let text = e.value();
        if let Ok(a) = text.parse::<SocketAddr>() {
            return Ok(Some(a));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(self.err(e, field.to_owned(), format!("`{text}` is not `host:port`")));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(self.err(e, field.to_owned(), format!("`{text}` is not `host:port`")));
        }
        use std::net::ToSocketAddrs;
        match text.to_socket_addrs() {
            Ok(addrs) => {
                let mut all: Vec<SocketAddr> = addrs.collect();
                all.sort_by_key(|a| a.is_ipv6());
                if all.is_empty() {
                    tracing::warn!(endpoint = %text, "resolves to no address; left out for now");
                }
                Ok(all.into_iter().next())
            }
            Err(err) => {
                tracing::warn!(endpoint = %text, error = %err, "does not resolve; left out for now");
                Ok(None)
            }
        }
    }

    fn listener(
        &self,
        i: usize,
        l: &ListenerConfig,
        clusters: &FxHashMap<Arc<str>, Arc<Cluster>>,
        prev_resumption: Option<&Arc<crate::tls::server::Resumption>>,
    ) -> Result<Listener, ConfigError> {
        let name: Arc<str> = l.name.value().as_str().into();
        let n = &l.normalization;
        let rules = crate::normalize::Rules {
            path: crate::normalize::PathRules {
                dot_segments: n.dot_segments,
                merge_slashes: n.merge_slashes,
                escaped_slashes: n.escaped_slashes,
                parameters: n.path_parameters,
            },
            underscores: n.headers_with_underscores,
            trusted_hops: l.trusted_hops,
        };
        if l.limits.http2_max_concurrent_streams == 0
            || !(1024..=16 * 1024 * 1024).contains(&l.limits.http2_stream_send_buffer)
        {
            return Err(self.err(
                &l.name,
                format!("listeners[{i}].limits"),
                "http2_max_concurrent_streams must be at least 1 and http2_stream_send_buffer from 1024 to 16777216 bytes".into(),
            ));
        }
        let mut upgrades = Vec::with_capacity(l.upgrades.len());
        for (ui, u) in l.upgrades.iter().enumerate() {
            let p = u.value().to_ascii_lowercase();
            if p == "h2c" || p.is_empty() || !p.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                return Err(self.err(
                    u,
                    format!("listeners[{i}].upgrades[{ui}]"),
                    format!(
                        "`{}` cannot be allowed: an h2c upgrade would carry requests no policy sees; name a protocol token such as websocket",
                        u.value()
                    ),
                ));
            }
            upgrades.push(p.into_boxed_str());
        }
        let tls = match &l.tls {
            Some(t) => Some(Arc::new(self.listener_tls(
                &format!("listeners[{i}].tls"),
                t,
                l.protocol,
                prev_resumption,
                &l.name,
            )?)),
            None => None,
        };
        let mut vhosts = Vec::new();
        let mut route_names = FxHashMap::default();
        let mut owned_headers: Vec<HeaderName> = Vec::new();
        let mut inspected: Vec<HeaderName> = Vec::new();
        for (vi, vh) in l.virtual_hosts.iter().enumerate() {
            let at = format!("listeners[{i}].virtual_hosts[{vi}]");
            let mut domains = Vec::new();
            for (di, d) in vh.domains.iter().enumerate() {
                let p = DomainPattern::parse(d.value())
                    .map_err(|m| self.err(d, format!("{at}.domains[{di}]"), m))?;
                domains.push(p);
            }
            let mut routes = Vec::new();
            for (ri, r) in vh.routes.iter().enumerate() {
                let at = format!("{at}.routes[{ri}]");
                if route_names.insert(r.name.value().clone(), ()).is_some() {
                    return Err(self.err(
                        &r.name,
                        format!("{at}.name"),
                        "route names must be unique within a listener (they label metrics)".into(),
                    ));
                }
                let route = self.route(&at, &name, &rules, r, clusters)?;
                for h in route.headers.iter() {
                    inspected.push(h.name.clone());
                }
                if let Some(j) = &route.action.jwt {
                    for (_, h) in &j.provider.forward {
                        if !owned_headers.contains(h) {
                            owned_headers.push(h.clone());
                        }
                    }
                }
                routes.push(route);
            }
            vhosts.push((domains, VirtualHost::new(vh.name.as_str(), routes)));
        }
        let routes = RouteTable::new(vhosts).map_err(|dup| {
            let d = &l.virtual_hosts[dup.vhost].domains[dup.domain];
            self.err(
                d,
                format!(
                    "listeners[{i}].virtual_hosts[{}].domains[{}]",
                    dup.vhost, dup.domain
                ),
                format!(
                    "domain `{}` belongs to another virtual host of this listener already",
                    d.value()
                ),
            )
        })?;
        let authz = match &l.authorization {
            None => None,
            Some(a) => Some(
                self.listener_authz(
                    &format!("listeners[{i}].authorization"),
                    &name,
                    a,
                    l.tls
                        .as_ref()
                        .is_some_and(|t| t.client_auth == crate::config::ClientAuth::Require),
                    &rules,
                )?,
            ),
        };
        if let Some(az) = &authz {
            for rule in az.policy.rules() {
                for c in &rule.when {
                    if let membrane_policy::authz::Condition::Header { name, .. } = c
                        && let Ok(h) = HeaderName::from_bytes(name.as_bytes())
                    {
                        inspected.push(h);
                    }
                }
            }
        }
        inspected.retain(|h| h != http::header::COOKIE);
        inspected.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        inspected.dedup();
        Ok(Listener {
            tls_metrics: tls.as_ref().map(|_| self.metrics.listener_tls(&name)),
            authz,
            access_log: l.access_log,
            unrouted: self.metrics.route(&name, "", ""),
            metrics: self.metrics.listener(&name),
            name,
            address: l.address,
            protocol: l.protocol,
            max_header_bytes: l.limits.max_request_header_bytes,
            max_headers: l.limits.max_request_headers,
            header_read_timeout: l.limits.header_read_timeout.0,
            idle_timeout: l.limits.idle_timeout.0,
            send_timeout: l.limits.send_timeout.0,
            http2_max_concurrent_streams: l.limits.http2_max_concurrent_streams,
            http2_stream_send_buffer: l.limits.http2_stream_send_buffer,
            normalization: rules,
            upgrades: upgrades.into(),
            owned_headers: owned_headers.into(),
            inspected_headers: inspected.into(),
            tls,
            routes,
        })
    }

    fn route(
        &self,
        at: &str,
        listener: &Arc<str>,
        norm: &crate::normalize::Rules,
        r: &RouteConfig,
        clusters: &FxHashMap<Arc<str>, Arc<Cluster>>,
    ) -> Result<Route<RouteEntry>, ConfigError> {
        let name: Arc<str> = r.name.value().as_str().into();
        let m = &r.matcher;
        let path = match &m.path {
            None => PathMatch::Prefix("".into()),
            Some(PathMatchConfig::Exact(p)) => {
                self.check_path(p, &format!("{at}.match.path.exact"), &norm.path)?;
                PathMatch::Exact(p.value().as_str().into())
            }
            Some(PathMatchConfig::Prefix(p)) => {
                self.check_path(p, &format!("{at}.match.path.prefix"), &norm.path)?;
                PathMatch::Prefix(p.value().as_str().into())
            }
            Some(PathMatchConfig::Regex(p)) => PathMatch::full_regex(p.value()).map_err(|e| {
                self.err(
                    p,
                    format!("{at}.match.path.regex"),
                    format!("not a valid regex: {e}"),
                )
            })?,
        };
        let mut methods = Vec::new();
        for (mi, meth) in m.methods.iter().enumerate() {
            let parsed = Method::from_bytes(meth.value().as_bytes())
                .ok()
                .filter(|_| meth.value().bytes().all(|b| b.is_ascii_uppercase()))
                .ok_or_else(|| {
                    self.err(
                        meth,
                        format!("{at}.match.methods[{mi}]"),
                        format!(
                            "`{}` is not an HTTP method; write it in upper case, like GET",
                            meth.value()
                        ),
                    )
                })?;
            methods.push(parsed);
        }
        let mut headers = Vec::new();
        for (hi, h) in m.headers.iter().enumerate() {
            let f = format!("{at}.match.headers[{hi}]");
            let hname = HeaderName::from_bytes(h.name.value().as_bytes()).map_err(|_| {
                self.err(
                    &h.name,
                    format!("{f}.name"),
                    format!("`{}` is not a valid header name", h.name.value()),
                )
            })?;
            if hname.as_str().contains('_')
                && norm.underscores != crate::normalize::Underscores::Allow
            {
                return Err(self.err(
                    &h.name,
                    format!("{f}.name"),
                    format!(
                        "`{}` has `_`, and this listener never lets such a header through (normalization.headers_with_underscores)",
                        h.name.value()
                    ),
                ));
            }
            let rule = match (&h.exact, &h.prefix, &h.regex, h.present) {
                (Some(e), None, None, None) => HeaderRule::Exact(e.as_bytes().into()),
                (None, Some(p), None, None) => HeaderRule::Prefix(p.as_bytes().into()),
                (None, None, Some(re), None) => {
                    HeaderRule::Regex(regex::Regex::new(re.value()).map_err(|e| {
                        self.err(re, format!("{f}.regex"), format!("not a valid regex: {e}"))
                    })?)
                }
                (None, None, None, Some(p)) => HeaderRule::Present(p),
                _ => {
                    return Err(self.err(
                        &h.name,
                        f,
                        "give exactly one of exact, prefix, regex or present".into(),
                    ));
                }
            };
            headers.push(HeaderMatcher {
                name: hname,
                rule,
                invert: h.invert,
            });
        }
        let action = match (&r.forward, &r.redirect, &r.direct_response) {
            (Some(fw), None, None) => {
                let cluster = clusters.get(fw.cluster.value().as_str()).ok_or_else(|| {
                    let mut known: Vec<&str> = clusters.keys().map(|k| &**k).collect();
                    known.sort_unstable();
                    self.err(
                        &fw.cluster,
                        format!("{at}.forward.cluster"),
                        format!(
                            "no cluster is named `{}`; defined clusters: [{}]",
                            fw.cluster.value(),
                            known.join(", ")
                        ),
                    )
                })?;
                let rewrite = match (&fw.prefix_rewrite, &path) {
                    (None, _) => None,
                    (Some(to), PathMatch::Prefix(p)) => Some((p.len(), to.value().as_str().into())),
                    (Some(to), PathMatch::Exact(p)) => Some((p.len(), to.value().as_str().into())),
                    (Some(to), PathMatch::Regex(_)) => {
                        return Err(self.err(
                            to,
                            format!("{at}.forward.prefix_rewrite"),
                            "needs a prefix or exact path match, not a regex".into(),
                        ));
                    }
                };
                Action::Forward {
                    timeout: fw.timeout.map(|d| d.0).unwrap_or(cluster.request_timeout),
                    cluster: cluster.clone(),
                    rewrite,
                }
            }
            (None, Some(rd), None) => {
                let s = *rd.status.value();
                if ![301, 302, 303, 307, 308].contains(&s) {
                    return Err(self.err(
                        &rd.status,
                        format!("{at}.redirect.status"),
                        format!("{s} is not a redirect; use 301, 302, 303, 307 or 308"),
                    ));
                }
                Action::Redirect {
                    status: StatusCode::from_u16(s).unwrap_or(StatusCode::MOVED_PERMANENTLY),
                    scheme: rd.scheme.as_deref().map(Into::into),
                    host: rd.host.as_deref().map(Into::into),
                    path: rd.path.as_deref().map(Into::into),
                }
            }
            (None, None, Some(d)) => {
                let s = *d.status.value();
                let status = StatusCode::from_u16(s)
                    .ok()
                    .filter(|_| (200..=599).contains(&s))
                    .ok_or_else(|| {
                        self.err(
                            &d.status,
                            format!("{at}.direct_response.status"),
                            format!("{s} is not a status from 200 to 599"),
                        )
                    })?;
                Action::Direct {
                    status,
                    body: Bytes::from(d.body.clone()),
                    content_type: HeaderValue::from_str(&d.content_type).map_err(|_| {
                        self.err(
                            &d.status,
                            format!("{at}.direct_response.content_type"),
                            "not a valid header value".into(),
                        )
                    })?,
                }
            }
            _ => {
                return Err(self.err(
                    &r.name,
                    at.to_owned(),
                    "a route needs exactly one of forward, redirect or direct_response".into(),
                ));
            }
        };
        let cluster_name = match &action {
            Action::Forward { cluster, .. } => cluster.name.clone(),
            _ => "".into(),
        };
        let jwt = match &r.jwt {
            None => None,
            Some(j) => {
                let providers = self.providers.borrow();
                let provider = providers.get(j.provider.value().as_str()).ok_or_else(|| {
                    let mut known: Vec<&str> = providers.keys().map(|k| &**k).collect();
                    known.sort_unstable();
                    self.err(
                        &j.provider,
                        format!("{at}.jwt.provider"),
                        format!(
                            "no JWT provider is named `{}`; defined providers: [{}]",
                            j.provider.value(),
                            known.join(", ")
                        ),
                    )
                })?;
                Some(RouteJwt {
                    provider: provider.clone(),
                    required: j.required,
                })
            }
        };
        let rate_limit = match &r.rate_limit {
            None => None,
            Some(rl) => Some(self.route_rate_limit(
                &format!("{at}.rate_limit"),
                listener,
                &name,
                rl,
                self.prev_rate,
                &mut self.rate.borrow_mut(),
            )?),
        };
        Ok(Route {
            path,
            methods: methods.into(),
            headers: headers.into(),
            action: RouteEntry {
                metrics: self.metrics.route(listener, &name, &cluster_name),
                name,
                action,
                jwt,
                rate_limit,
            },
        })
    }

    /// A route's path must be in the form requests are matched in (normalized by the
    /// listener's rules), or it could never match.
    fn check_path(
        &self,
        p: &Located<String>,
        field: &str,
        rules: &crate::normalize::PathRules,
    ) -> Result<(), ConfigError> {
        let text = p.value();
        if !text.starts_with('/') {
            return Err(self.err(p, field.to_owned(), format!("`{text}` must start with `/`")));
        }
        match crate::normalize::path::normalize(text, rules) {
            Ok(n) if n == text.as_str() => Ok(()),
            Ok(n) => Err(self.err(
                p,
                field.to_owned(),
                format!(
                    "`{text}` would never match: requests are matched after normalization, so write `{n}`"
                ),
            )),
            Err(e) => Err(self.err(
                p,
                field.to_owned(),
                format!("`{text}` would never match: a request with this path is refused ({e})"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(yaml: &str) -> Result<Snapshot, ConfigError> {
        let file = Path::new("t.yaml");
        let cfg = crate::config::parse(file, yaml)?;
        compile(file, yaml, cfg, 1, None, &Metrics::new())
    }

    const BASE: &str = "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: all\n        domains: ['*']\n        routes:\n";

    #[test]
    fn an_unknown_cluster_is_named_with_its_position_and_the_known_ones() {
        let yaml = format!(
            "{BASE}          - name: r\n            forward: {{cluster: nope}}\nclusters:\n  - name: backend\n    endpoints: [127.0.0.1:1]\n"
        );
        let e = compile_text(&yaml).err().unwrap().to_string();
        assert!(
            e.starts_with(
                "t.yaml:9:32: field `listeners[0].virtual_hosts[0].routes[0].forward.cluster`"
            ),
            "{e}"
        );
        assert!(
            e.contains("no cluster is named `nope`; defined clusters: [backend]"),
            "{e}"
        );
    }

    #[test]
    fn a_route_with_two_actions_is_refused() {
        let yaml = format!(
            "{BASE}          - name: r\n            direct_response: {{status: 200}}\n            redirect: {{host: x}}\n"
        );
        let e = compile_text(&yaml).err().unwrap().to_string();
        assert!(
            e.contains("exactly one of forward, redirect or direct_response"),
            "{e}"
        );
        assert!(e.starts_with("t.yaml:8:19:"), "{e}");
    }

    #[test]
    fn bad_regex_method_and_status_are_refused() {
        for (route, want) in [
            (
                "match: {path: {regex: '(['}}\n            direct_response: {status: 200}",
                "not a valid regex",
            ),
            (
                "match: {methods: [get]}\n            direct_response: {status: 200}",
                "not an HTTP method",
            ),
            ("redirect: {status: 200}", "is not a redirect"),
            (
                "direct_response: {status: 700}",
                "not a status from 200 to 599",
            ),
            (
                "match: {path: {prefix: api}}\n            direct_response: {status: 200}",
                "must start with `/`",
            ),
        ] {
            let yaml = format!("{BASE}          - name: r\n            {route}\n");
            let e = compile_text(&yaml).err().unwrap().to_string();
            assert!(e.contains(want), "{route}: {e}");
        }
    }

    #[test]
    fn paths_hosts_and_headers_that_no_normalized_request_has_are_refused() {
        for (listener, route, want) in [
            ("", "match: {path: {prefix: '/a//b'}}", "write `/a/b`"),
            ("", "match: {path: {exact: '/a/./b'}}", "write `/a/b`"),
            ("", "match: {path: {prefix: '/%61'}}", "write `/a`"),
            ("", "match: {path: {prefix: '/a%2Fb'}}", "is refused"),
            (
                "",
                "match: {headers: [{name: x_user, present: true}]}",
                "never lets such a header through",
            ),
            (
                "\n    authorization: {rules: [{name: r, action: deny, paths: [{prefix: '/x/../admin'}]}]}",
                "",
                "write `/admin`",
            ),
            (
                "\n    authorization: {rules: [{name: r, action: deny, paths: [{glob: '//admin/**'}]}]}",
                "",
                "would never match",
            ),
            (
                "\n    authorization: {rules: [{name: r, action: deny, hosts: ['a.test:80']}]}",
                "",
                "not a host name",
            ),
            (
                "\n    authorization: {rules: [{name: r, action: deny, headers: [{name: X_User, present: true}]}]}",
                "",
                "never lets such a header through",
            ),
        ] {
            let yaml = format!(
                "listeners:\n  - name: main\n    address: 127.0.0.1:0{listener}\n    virtual_hosts:\n      - name: all\n        domains: ['*']\n        routes:\n          - name: r\n            {route}\n            direct_response: {{status: 200}}\n"
            );
            let e = compile_text(&yaml)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(want), "{listener} {route}: {e}");
        }
        // Allowed with the listener's own settings, and hosts in any case or with the
        // trailing dot are the canonical host.
        let yaml = "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    normalization: {merge_slashes: false, headers_with_underscores: allow}\n    authorization: {rules: [{name: r, action: deny, hosts: ['Admin.Test.']}]}\n    virtual_hosts:\n      - name: all\n        domains: ['Api.Test.']\n        routes:\n          - name: r\n            match: {path: {prefix: '/a//b'}, headers: [{name: x_user, present: true}]}\n            direct_response: {status: 200}\n";
        let snap = compile_text(yaml).unwrap();
        let l = &snap.listeners["main"];
        let rule = &l.authz.as_ref().unwrap().policy.rules()[0];
        assert!(
            matches!(&rule.when[0], membrane_policy::authz::Condition::Host(h) if h == &["admin.test"]),
            "{:?}",
            rule.when
        );
    }

    #[test]
    fn duplicate_names_and_domains_are_refused() {
        let yaml = format!(
            "{BASE}          - name: r\n            direct_response: {{status: 200}}\n          - name: r\n            direct_response: {{status: 200}}\n"
        );
        assert!(
            compile_text(&yaml)
                .err()
                .unwrap()
                .to_string()
                .contains("unique")
        );
        let yaml = "listeners:\n  - name: m\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - {name: a, domains: ['x.com']}\n      - {name: b, domains: ['X.com']}\n";
        let e = compile_text(yaml).err().unwrap().to_string();
        assert!(
            e.contains("domains[0]") && e.contains("another virtual host"),
            "{e}"
        );
    }

    #[test]
    fn a_good_config_compiles_and_keeps_cluster_state_across_generations() {
        let yaml = format!(
            "{BASE}          - name: r\n            forward: {{cluster: backend}}\nclusters:\n  - name: backend\n    endpoints: [127.0.0.1:1]\n"
        );
        let m = Metrics::new();
        let file = Path::new("t.yaml");
        let s1 = compile(
            file,
            &yaml,
            crate::config::parse(file, &yaml).unwrap(),
            1,
            None,
            &m,
        )
        .unwrap();
        let s2 = compile(
            file,
            &yaml,
            crate::config::parse(file, &yaml).unwrap(),
            2,
            Some(&s1),
            &m,
        )
        .unwrap();
        assert!(Arc::ptr_eq(
            &s1.clusters["backend"].shared,
            &s2.clusters["backend"].shared
        ));
        assert_eq!(s1.version, s2.version);
    }
}
