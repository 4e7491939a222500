//! Making a configuration generation, in three steps:
//!
//! 1. `load`: read the bootstrap and everything it names (files, DNS, the system CA store).
//!    This is the only step with I/O; the control thread runs it on tokio's blocking pool.
//! 2. [`compile`]: the loaded configuration to a [`Snapshot`], checking everything
//!    (references, names, regexes, status codes, certificates) and reporting every mistake
//!    of every top-level entry. Pure: no I/O, no threads, nothing shared is changed. State
//!    that outlives a generation (pools, token caches, rate-limit buckets, session ticket
//!    keys) is lent from the previous snapshot; what would change it is left in the
//!    snapshot's `pending` list.
//! 3. [`activate`]: start what the snapshot needs running (key set fetchers) and install
//!    what it changes in shared state (key sets), just before the swap.
//!
//! A file reload, the xDS client and `membrane explain` all go through these three steps, so
//! the snapshot the xDS client validated is the one it applies.

mod activate;
mod authz;
mod cluster;
mod listener;
pub mod load;
mod provider;
mod rate_limit;
mod resilience;
mod route;
mod tls;
mod tracing;

pub use activate::activate;
pub use load::Loaded;

use crate::config::{ConfigError, Located, Owner};
use crate::metrics::Metrics;
use crate::snapshot::{Pending, RateLimitState, Snapshot};
use crate::upstream::ClusterShared;
use rustc_hash::FxHashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

/// Compiles a loaded configuration. `prev`, the generation now serving, lends the state that
/// outlives a generation; the result is generation `prev + 1`. Clusters and JWT providers
/// are compiled first: when any of them is refused, listeners (which name them) are not
/// compiled, so that a listener is not refused for a mistake in what it names.
pub fn compile(
    loaded: &Loaded,
    prev: Option<&Snapshot>,
    metrics: &Metrics,
) -> Result<Snapshot, Vec<ConfigError>> {
    let c = Compiler {
        loaded,
        metrics,
        prev,
    };
    let cfg = &loaded.config;
    let mut errors = Vec::new();
    if cfg.workers == Some(0) {
        errors.push(c.err_at(0, 0, "workers", "must be at least 1".into()));
    }
    let mut clusters = FxHashMap::default();
    let mut pending = Pending::default();
    for (i, cl) in cfg.clusters.iter().enumerate() {
        let name: Arc<str> = cl.name.value().as_str().into();
        let shared = prev
            .and_then(|p| p.clusters.get(&name))
            .map(|old| old.shared.clone())
            .unwrap_or_else(ClusterShared::new);
        let compiled = c
            .cluster(i, cl, name.clone(), shared, &mut pending)
            .and_then(|cluster| match clusters.insert(name, Arc::new(cluster)) {
                None => Ok(()),
                Some(_) => Err(c.err(
                    &cl.name,
                    format!("clusters[{i}].name"),
                    "a cluster of this name is defined already".into(),
                )),
            });
        if let Err(e) = compiled {
            errors.push(e.owned_by(Owner::Cluster(i)));
        }
    }
    let mut providers = FxHashMap::default();
    for (i, p) in cfg.jwt_providers.iter().enumerate() {
        let compiled = c.provider(i, p, &mut pending).and_then(|provider| {
            match providers.insert(provider.name.clone(), Arc::new(provider)) {
                None => Ok(()),
                Some(_) => Err(c.err(
                    &p.name,
                    format!("jwt_providers[{i}].name"),
                    "a provider of this name is defined already".into(),
                )),
            }
        });
        if let Err(e) = compiled {
            errors.push(e.owned_by(Owner::JwtProvider(i)));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let tracing = c.tracing(cfg.tracing.as_ref()).map_err(|e| vec![e])?;
    let mut listeners = FxHashMap::default();
    let mut addresses = FxHashMap::default();
    let mut rate_limits = RateLimitState::default();
    let named = listener::Named {
        clusters: &clusters,
        providers: &providers,
        tracing: tracing.as_ref(),
    };
    for (i, l) in cfg.listeners.iter().enumerate() {
        let compiled = c
            .listener(i, l, &named, &mut rate_limits)
            .and_then(|listener| {
                if l.address.port() != 0
                    && let Some(other) = addresses.insert(l.address, l.name.value().clone())
                {
                    return Err(c.err(
                        &l.name,
                        format!("listeners[{i}].address"),
                        format!("{} is the address of listener `{other}` already", l.address),
                    ));
                }
                match listeners.insert(listener.name.clone(), Arc::new(listener)) {
                    None => Ok(()),
                    Some(_) => Err(c.err(
                        &l.name,
                        format!("listeners[{i}].name"),
                        "a listener of this name is defined already".into(),
                    )),
                }
            });
        if let Err(e) = compiled {
            errors.push(e.owned_by(Owner::Listener(i)));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut watched_files: Vec<PathBuf> = loaded.files.keys().cloned().collect();
    watched_files.sort_unstable();
    Ok(Snapshot {
        generation: prev.map_or(1, |p| p.generation + 1),
        version: version(loaded, &watched_files),
        watched_files,
        providers,
        rate_limits,
        listeners,
        clusters,
        source: cfg.clone(),
        pending,
        tracing,
    })
}

/// A hash of the bootstrap text and of every file it names: equal inputs give equal
/// versions, and a rotated certificate under an unchanged bootstrap makes a new one.
fn version(loaded: &Loaded, files: &[PathBuf]) -> String {
    let mut h = rustc_hash::FxHasher::default();
    loaded.text.hash(&mut h);
    for f in files {
        if let Some(Ok(bytes)) = loaded.files.get(f) {
            (f, &bytes[..]).hash(&mut h);
        }
    }
    format!("{:016x}", h.finish())
}

/// What every step of the compiler reads: the loaded configuration, the metrics registry
/// (label sets are made as entries are compiled) and the previous generation.
struct Compiler<'a> {
    loaded: &'a Loaded,
    metrics: &'a Metrics,
    prev: Option<&'a Snapshot>,
}

impl Compiler<'_> {
    fn err_at(&self, line: u64, column: u64, field: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.loaded.file.clone(),
            line,
            column,
            field: field.to_owned(),
            message,
            owner: None,
        }
    }

    fn err<T>(&self, at: &Located<T>, field: String, message: String) -> ConfigError {
        self.err_at(at.line(), at.column(), &field, message)
    }

    /// The bytes of a file the configuration names (read by `load`), with its path.
    fn file(&self, p: &Located<PathBuf>, field: &str) -> Result<(PathBuf, &[u8]), ConfigError> {
        let path = load::resolve(&self.loaded.file, p);
        match self.loaded.files.get(&path) {
            Some(Ok(bytes)) => Ok((path, bytes)),
            Some(Err(why)) => Err(self.err(p, field.to_owned(), why.clone())),
            None => Err(self.err(
                p,
                field.to_owned(),
                format!(
                    "{}: was not loaded (a bug: please report it)",
                    path.display()
                ),
            )),
        }
    }

    /// The system CA store (loaded when the configuration has a use for it).
    fn system_roots(&self) -> Arc<rustls::RootCertStore> {
        self.loaded
            .system_roots
            .clone()
            .unwrap_or_else(|| Arc::new(rustls::RootCertStore::empty()))
    }
}

#[cfg(test)]
mod tests;
