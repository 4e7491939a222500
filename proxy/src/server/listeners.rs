//! The set of bound listeners, reconciled with each config generation: new listeners are
//! bound before the swap (so a bind error refuses the reload and changes nothing), removed
//! ones stop accepting after it and let their connections finish.

use super::bind::bind_reuseport;
use super::worker::{Command, Worker};
use crate::config::ConfigError;
use crate::snapshot::Snapshot;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

struct Bound {
    configured: SocketAddr,
    local: SocketAddr,
    stop: watch::Sender<bool>,
}

#[derive(Default)]
pub struct ListenerSet {
    bound: HashMap<Arc<str>, Bound>,
}

/// Sockets bound for a generation that is about to be published.
pub struct Prepared {
    new: Vec<(Arc<str>, SocketAddr, Vec<TcpListener>)>,
}

impl ListenerSet {
    pub fn prepare(
        &self,
        file: &Path,
        snap: &Snapshot,
        workers: usize,
    ) -> Result<Prepared, ConfigError> {
        let mut new = Vec::new();
        for (name, l) in &snap.listeners {
            if self
                .bound
                .get(name)
                .is_some_and(|b| b.configured == l.address)
            {
                continue;
            }
            let sockets = bind_reuseport(l.address, workers).map_err(|e| ConfigError::Apply {
                file: file.to_owned(),
                message: format!("listener `{name}`: cannot listen on {}: {e}", l.address),
            })?;
            new.push((name.clone(), l.address, sockets));
        }
        Ok(Prepared { new })
    }

    /// Starts the prepared listeners on every worker and stops those the snapshot dropped.
    pub fn commit(&mut self, prepared: Prepared, snap: &Snapshot, workers: &[Worker]) {
        for (name, configured, sockets) in prepared.new {
            if let Some(old) = self.bound.remove(&name) {
                let _ = old.stop.send_replace(true);
            }
            let local = sockets
                .first()
                .and_then(|s| s.local_addr().ok())
                .unwrap_or(configured);
            let (stop, stop_rx) = watch::channel(false);
            for (socket, worker) in sockets.into_iter().zip(workers) {
                let _ = worker.commands.send(Command::Serve {
                    name: name.clone(),
                    socket,
                    stop: stop_rx.clone(),
                });
            }
            tracing::info!(listener = %name, address = %local, "listening");
            self.bound.insert(
                name,
                Bound {
                    configured,
                    local,
                    stop,
                },
            );
        }
        self.bound.retain(|name, b| {
            let keep = snap.listeners.contains_key(name);
            if !keep {
                tracing::info!(listener = %name, "listener removed; draining its connections");
                let _ = b.stop.send_replace(true);
            }
            keep
        });
    }

    pub fn addresses(&self) -> HashMap<String, SocketAddr> {
        self.bound
            .iter()
            .map(|(n, b)| (n.to_string(), b.local))
            .collect()
    }

    /// Stops accepting everywhere; open connections finish their request and close.
    pub fn stop_all(&self) {
        for b in self.bound.values() {
            let _ = b.stop.send_replace(true);
        }
    }
}
