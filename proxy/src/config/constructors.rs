//! Constructors for configurations made by a program (the xDS client): the required fields
//! as arguments, every other field at the default a file would get.

use super::defaults;
use super::{
    ClusterConfig, DirectResponseConfig, ForwardConfig, ListenerConfig, Located, RouteConfig,
};
use std::net::SocketAddr;

impl ListenerConfig {
    pub fn new(name: String, address: SocketAddr) -> Self {
        Self {
            name: name.into(),
            address,
            protocol: defaults::listener_protocol(),
            tls: None,
            access_log: Default::default(),
            access_log_fields: Vec::new(),
            access_log_sample: 1.0,
            trace_context: None,
            authorization: None,
            limits: Default::default(),
            normalization: Default::default(),
            trusted_hops: 0,
            upgrades: defaults::upgrades(),
            virtual_hosts: Vec::new(),
        }
    }
}

impl RouteConfig {
    /// A route matching every path, with no action yet.
    pub fn new(name: String) -> Self {
        Self {
            name: name.into(),
            matcher: Default::default(),
            forward: None,
            redirect: None,
            direct_response: None,
            jwt: None,
            rate_limit: None,
        }
    }
}

impl ForwardConfig {
    pub fn new(cluster: String) -> Self {
        Self {
            cluster: cluster.into(),
            prefix_rewrite: None,
            timeout: None,
        }
    }
}

impl DirectResponseConfig {
    pub fn new(status: u16, body: String) -> Self {
        Self {
            status: status.into(),
            body,
            content_type: defaults::content_type(),
        }
    }
}

impl ClusterConfig {
    pub fn new(name: String, endpoints: Vec<String>) -> Self {
        Self {
            name: name.into(),
            endpoints: endpoints.into_iter().map(Located::from).collect(),
            lb: defaults::lb(),
            protocol: defaults::upstream_protocol(),
            connect_timeout: defaults::connect_timeout(),
            request_timeout: defaults::request_timeout(),
            max_connections: defaults::max_connections(),
            pool_idle_timeout: defaults::pool_idle_timeout(),
            body_idle_timeout: defaults::body_idle_timeout(),
            tls: None,
            retries: None,
            outlier_detection: None,
            circuit_breakers: None,
            health_check: None,
            localities: Vec::new(),
            failover_healthy_percent: defaults::failover_percent(),
        }
    }
}
