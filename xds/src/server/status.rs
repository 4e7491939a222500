//! What each node was sent, what it ACKed and what it NACKed, with the reason; shown on the
//! control server's admin endpoint and in its metrics.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    pub sent_version: String,
    pub acked_version: String,
    /// The last NACK: the version refused and why.
    pub nack: Option<(String, String)>,
    pub pushes: u64,
    pub nacks: u64,
    #[serde(skip)]
    pub sent_at: Option<Instant>,
    #[serde(skip)]
    pub acked_at: Option<Instant>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeStatus {
    /// Open streams from this node.
    pub streams: u32,
    pub protocol: &'static str,
    pub types: BTreeMap<String, TypeStatus>,
    /// Unix seconds of the last request.
    pub last_seen: u64,
}

#[derive(Debug, Default)]
pub struct NodeTable {
    nodes: Mutex<BTreeMap<String, NodeStatus>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl NodeTable {
    fn with<R>(&self, node: &str, f: impl FnOnce(&mut NodeStatus) -> R) -> R {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let n = nodes.entry(node.to_owned()).or_default();
        n.last_seen = unix_now();
        f(n)
    }

    pub fn connected(&self, node: &str, protocol: &'static str) {
        self.with(node, |n| {
            n.streams += 1;
            n.protocol = protocol;
        });
    }

    pub fn disconnected(&self, node: &str) {
        self.with(node, |n| n.streams = n.streams.saturating_sub(1));
    }

    pub fn sent(&self, node: &str, type_url: &str, version: &str) {
        self.with(node, |n| {
            let t = n.types.entry(type_url.to_owned()).or_default();
            t.sent_version = version.to_owned();
            t.sent_at = Some(Instant::now());
            t.pushes += 1;
        });
    }

    pub fn acked(&self, node: &str, type_url: &str, version: &str) {
        self.with(node, |n| {
            let t = n.types.entry(type_url.to_owned()).or_default();
            t.acked_version = version.to_owned();
            t.acked_at = Some(Instant::now());
        });
    }

    pub fn nacked(&self, node: &str, type_url: &str, version: &str, reason: &str) {
        tracing::warn!(%node, %type_url, %version, %reason, "NACK");
        self.with(node, |n| {
            let t = n.types.entry(type_url.to_owned()).or_default();
            t.nack = Some((version.to_owned(), reason.to_owned()));
            t.nacks += 1;
        });
    }

    pub fn snapshot(&self) -> BTreeMap<String, NodeStatus> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
