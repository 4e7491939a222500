//! What each node was sent, what it ACKed and what it NACKed, with the reason; shown on the
//! control server's admin endpoint and in its metrics.
//!
//! The table is bounded: a node with no open stream is forgotten after `forget_after`; past
//! `max_nodes` the longest-disconnected is forgotten first, and when every node is
//! connected a new one is refused; streams are limited per node and in all. Without these, a
//! client that cycles through node ids grew the table (and `/nodes`, and `/metrics`)
//! without end.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tonic::Status;

/// The table's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_nodes: usize,
    pub max_streams_per_node: u32,
    pub max_streams: u32,
    pub forget_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_nodes: 10_000,
            // A gateway opens one ADS stream; a few allow a reconnect to overlap the stream
            // the server has not seen closed yet.
            max_streams_per_node: 4,
            max_streams: 20_000,
            forget_after: Duration::from_secs(600),
        }
    }
}

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
    #[serde(skip)]
    pub seen_at: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct NodeTable {
    nodes: Mutex<Nodes>,
    pub limits: Limits,
}

#[derive(Debug, Default)]
struct Nodes {
    by_id: BTreeMap<String, NodeStatus>,
    /// Open streams of all nodes.
    streams: u32,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl NodeTable {
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            nodes: Mutex::default(),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<R>(&self, node: &str, f: impl FnOnce(&mut NodeStatus) -> R) -> R {
        let mut nodes = self.lock();
        let n = nodes.by_id.entry(node.to_owned()).or_default();
        n.last_seen = unix_now();
        n.seen_at = Some(Instant::now());
        f(n)
    }

    /// Counts a new stream of `node`, or refuses it when a bound is reached.
    pub fn connected(&self, node: &str, protocol: &'static str) -> Result<(), Status> {
        let l = self.limits;
        let mut nodes = self.lock();
        if nodes.streams >= l.max_streams {
            return Err(Status::resource_exhausted(format!(
                "the control server has {} streams open, its limit",
                nodes.streams
            )));
        }
        let now = Instant::now();
        nodes.by_id.retain(|_, n| {
            n.streams > 0
                || n.seen_at
                    .is_some_and(|t| now.duration_since(t) < l.forget_after)
        });
        if !nodes.by_id.contains_key(node) && nodes.by_id.len() >= l.max_nodes {
            let oldest = nodes
                .by_id
                .iter()
                .filter(|(_, n)| n.streams == 0)
                .min_by_key(|(_, n)| n.seen_at)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => {
                    nodes.by_id.remove(&id);
                }
                None => {
                    return Err(Status::resource_exhausted(format!(
                        "the control server serves {} nodes, its limit",
                        l.max_nodes
                    )));
                }
            }
        }
        let n = nodes.by_id.entry(node.to_owned()).or_default();
        if n.streams >= l.max_streams_per_node {
            return Err(Status::resource_exhausted(format!(
                "node `{node}` has {} streams open already",
                n.streams
            )));
        }
        n.streams += 1;
        n.protocol = protocol;
        n.last_seen = unix_now();
        n.seen_at = Some(now);
        nodes.streams += 1;
        Ok(())
    }

    pub fn disconnected(&self, node: &str) {
        let mut nodes = self.lock();
        if let Some(n) = nodes.by_id.get_mut(node)
            && n.streams > 0
        {
            n.streams -= 1;
            n.seen_at = Some(Instant::now());
            nodes.streams = nodes.streams.saturating_sub(1);
        }
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
        self.lock().by_id.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_forgets_old_nodes_and_bounds_nodes_and_streams() {
        let t = NodeTable::with_limits(Limits {
            max_nodes: 2,
            max_streams_per_node: 1,
            max_streams: 3,
            forget_after: Duration::from_millis(50),
        });
        t.connected("a/1", "delta").unwrap();
        assert_eq!(
            t.connected("a/1", "delta").unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        t.connected("b/1", "delta").unwrap();
        // Both connected: a third node does not fit.
        assert!(t.connected("c/1", "delta").is_err());
        // One leaves: the newcomer takes its place.
        t.disconnected("b/1");
        t.connected("c/1", "delta").unwrap();
        assert_eq!(
            t.snapshot().keys().cloned().collect::<Vec<_>>(),
            vec!["a/1", "c/1"]
        );
        // A disconnected node is forgotten after a while.
        t.disconnected("c/1");
        std::thread::sleep(Duration::from_millis(60));
        t.connected("d/1", "delta").unwrap();
        assert!(!t.snapshot().contains_key("c/1"));
        // Streams in all.
        t.disconnected("a/1");
        t.disconnected("d/1");
        let big = NodeTable::with_limits(Limits {
            max_streams: 1,
            ..Limits::default()
        });
        big.connected("a/1", "sotw").unwrap();
        assert!(big.connected("b/1", "sotw").is_err());
    }
}
