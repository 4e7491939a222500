//! Compiling clusters: endpoints, load balancing, timeouts and their TLS.

use super::{Compiler, load};
use crate::config::{ClusterConfig, ConfigError, Located};
use crate::upstream::{Cluster, ClusterShared, Endpoint};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

impl Compiler<'_> {
    pub(super) fn cluster(
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
