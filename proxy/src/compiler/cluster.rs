//! Compiling clusters: endpoints, load balancing, timeouts and their TLS.

use super::{Compiler, load};
use crate::config::{ClusterConfig, ConfigError, Located};
use crate::snapshot::Pending;
use crate::upstream::health_check::Probers;
use crate::upstream::{Cluster, ClusterShared, Endpoint};
use std::net::SocketAddr;
use std::sync::Arc;

impl Compiler<'_> {
    pub(super) fn cluster(
        &self,
        i: usize,
        cl: &ClusterConfig,
        name: Arc<str>,
        shared: Arc<ClusterShared>,
        pending: &mut Pending,
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
        let resilience = self.resilience(i, cl)?;
        let check = self.health_check(i, cl)?;
        if !(1..=100).contains(&cl.failover_healthy_percent) {
            return Err(self.err(
                &cl.name,
                format!("clusters[{i}].failover_healthy_percent"),
                "must be between 1 and 100".into(),
            ));
        }
        // Every endpoint with its tier: 0 in this gateway's zone, 1 in its region, 2 the
        // rest (and those without a locality). Without localities on both sides, one tier.
        let own = self.loaded.config.locality.as_ref();
        let tiered = own.is_some() && !cl.localities.is_empty();
        let mut named: Vec<(u8, &Located<String>, String)> = cl
            .endpoints
            .iter()
            .enumerate()
            .map(|(ei, e)| (2, e, format!("clusters[{i}].endpoints[{ei}]")))
            .collect();
        for (li, l) in cl.localities.iter().enumerate() {
            let tier = match own {
                Some(o) if o.region == l.region && o.zone.is_some() && o.zone == l.zone => 0,
                Some(o) if o.region.is_some() && o.region == l.region => 1,
                _ => 2,
            };
            for (ei, e) in l.endpoints.iter().enumerate() {
                named.push((
                    tier,
                    e,
                    format!("clusters[{i}].localities[{li}].endpoints[{ei}]"),
                ));
            }
        }
        if tiered {
            named.sort_by_key(|(tier, ..)| *tier);
        }
        let mut addrs = Vec::with_capacity(named.len());
        let mut tiers: Vec<std::ops::Range<usize>> = Vec::new();
        let mut tier_of: Vec<u8> = Vec::new();
        for (tier, e, field) in named {
            let Some(addr) = self.endpoint(e, &field)? else {
                continue;
            };
            if tiered {
                let at = addrs.len();
                match tiers.last_mut() {
                    Some(r) if tier_of[r.start] == tier => r.end = at + 1,
                    _ => tiers.push(at..at + 1),
                }
                tier_of.push(tier);
            }
            addrs.push(addr);
        }
        // Health records are lent from the generation before, by address.
        let before = self.prev.and_then(|p| p.clusters.get(&name));
        let health: Vec<_> = addrs
            .iter()
            .map(|a| {
                before
                    .and_then(|c| c.endpoints.iter().find(|e| e.addr == *a))
                    .map(|e| e.health.clone())
                    .unwrap_or_default()
            })
            .collect();
        let metrics = self.metrics.cluster(&name);
        let check = check.map(Arc::new);
        pending.probers.push(Probers {
            spec: check.clone(),
            endpoints: addrs.iter().copied().zip(health.iter().cloned()).collect(),
            metrics: metrics.clone(),
        });
        let endpoints: Vec<Endpoint> = addrs
            .into_iter()
            .zip(health)
            .map(|(a, h)| Endpoint::new(&name, a, h))
            .collect();
        let filtered = check.is_some() || resilience.as_ref().is_some_and(|r| r.outlier.is_some());
        Ok(Cluster {
            resilience,
            filtered,
            health_check: check,
            tiers: tiers.into(),
            failover_percent: cl.failover_healthy_percent,
            tls,
            tls_fingerprint,
            metrics,
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

    /// An endpoint address: `ip:port` as it is, `host:port` as `load` resolved it (its first
    /// address, IPv4 first). A name that did not resolve is left out (`load` warned); a
    /// malformed address is an error.
    fn endpoint(
        &self,
        e: &Located<String>,
        field: &str,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        let text = e.value();
        if let Ok(a) = text.parse::<SocketAddr>() {
            return Ok(Some(a));
        }
        if load::host_port(text).is_none() {
            return Err(self.err(e, field.to_owned(), format!("`{text}` is not `host:port`")));
        }
        Ok(self
            .loaded
            .resolved
            .get(text)
            .and_then(|all| all.first().copied()))
    }
}
