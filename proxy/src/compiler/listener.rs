//! Compiling listeners: limits, normalization rules, upgrades, TLS termination, virtual
//! hosts and their routes, and authorization; and the headers the listener owns (claim
//! headers) or inspects (those its routes and rules decide on).

use super::Compiler;
use crate::config::{ConfigError, ListenerConfig};
use crate::enforce::authn::JwtProvider;
use crate::route::{DomainPattern, RouteTable, VirtualHost};
use crate::snapshot::{Listener, RateLimitState};
use crate::upstream::Cluster;
use http::HeaderName;
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// What routes may name: the generation's clusters and JWT providers.
pub(super) struct Named<'a> {
    pub clusters: &'a FxHashMap<Arc<str>, Arc<Cluster>>,
    pub providers: &'a FxHashMap<Arc<str>, Arc<JwtProvider>>,
    pub tracing: Option<&'a Arc<crate::trace::Tracing>>,
}

impl Compiler<'_> {
    /// The listener's access log: its target opened, its fields checked against the set.
    fn access_log(
        &self,
        i: usize,
        l: &crate::config::ListenerConfig,
    ) -> Result<Option<crate::access_log::AccessLog>, ConfigError> {
        use crate::access_log::{AccessLog, FIELDS};
        let mut fields = if l.access_log_fields.is_empty() {
            AccessLog::ALL
        } else {
            0
        };
        for (j, f) in l.access_log_fields.iter().enumerate() {
            let Some(bit) = FIELDS.iter().position(|k| k == f.value()) else {
                return Err(self.err(
                    f,
                    format!("listeners[{i}].access_log_fields[{j}]"),
                    format!(
                        "`{}` is not a field; pick from {}",
                        f.value(),
                        FIELDS.join(", ")
                    ),
                ));
            };
            fields |= 1 << bit;
        }
        if !(0.0..=1.0).contains(&l.access_log_sample) {
            return Err(self.err(
                &l.name,
                format!("listeners[{i}].access_log_sample"),
                format!("{} is not between 0 and 1", l.access_log_sample),
            ));
        }
        AccessLog::new(&l.access_log, fields, l.access_log_sample)
            .map_err(|e| self.err(&l.name, format!("listeners[{i}].access_log"), e))
    }

    pub(super) fn listener(
        &self,
        i: usize,
        l: &ListenerConfig,
        named: &Named<'_>,
        rate_limits: &mut RateLimitState,
    ) -> Result<Listener, ConfigError> {
        let name: Arc<str> = l.name.value().as_str().into();
        let prev_resumption = self
            .prev
            .and_then(|p| p.listeners.get(&name))
            .and_then(|old| old.tls.as_ref())
            .map(|t| &t.resumption);
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
                    .map_err(|m| self.err(d, format!("{at}.domains[{di}]"), m.to_string()))?;
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
                let route = self.route(&at, &name, &rules, r, named, rate_limits)?;
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
            access_log: self.access_log(i, l)?,
            tracing: named.tracing.map(|t| crate::trace::ListenerTracing {
                tracing: t.clone(),
                continue_incoming: match l.trace_context {
                    Some(c) => c == crate::config::TraceContextTrust::Continue,
                    None => l
                        .tls
                        .as_ref()
                        .is_some_and(|t| t.client_auth == crate::config::ClientAuth::Require),
                },
            }),
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
}
