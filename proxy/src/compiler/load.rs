//! The first step of a reload: everything a configuration needs from outside the process,
//! gathered before it is compiled. The bootstrap file itself, every file it names
//! (certificates, keys, trust bundles, key sets), the addresses of endpoints given by name,
//! and the system's CA store when something trusts it. This step blocks (file reads, DNS):
//! the control thread runs it on tokio's blocking pool, so `/ready` and `/metrics` keep
//! answering while a resolver is slow.

use crate::config::{self, Bootstrap, ConfigError, JwksSource, Located};
use rustc_hash::FxHashMap;
use rustls::RootCertStore;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file's bytes, or why it could not be read.
pub type FileContent = Result<Arc<[u8]>, String>;

/// A configuration with everything it names from outside, ready for the pure compiler.
pub struct Loaded {
    /// The bootstrap file: names errors, and relative paths are read from its directory.
    pub file: PathBuf,
    /// Its text (the version hashes it).
    pub text: String,
    pub config: Bootstrap,
    /// Every file the configuration names, by resolved path.
    pub files: FxHashMap<PathBuf, FileContent>,
    /// `host:port` endpoints to the addresses they resolved to (IPv4 first; empty when the
    /// name did not resolve).
    pub resolved: FxHashMap<String, Vec<SocketAddr>>,
    /// The system's CA store, when a cluster or key set server has no trust bundle.
    pub system_roots: Option<Arc<RootCertStore>>,
}

impl Loaded {
    /// Reads and parses the bootstrap file, then gathers what it names.
    pub fn read(file: &Path) -> Result<Self, ConfigError> {
        let (config, text) = config::read_file(file)?;
        Ok(Self::gather(file, text, config))
    }

    /// Gathers what an already parsed configuration names.
    pub fn gather(file: &Path, text: String, config: Bootstrap) -> Self {
        Self::gather_with(file, text, config, FxHashMap::default())
    }

    /// As `gather`, but the files in `provided` are taken as given instead of being read
    /// (the xDS client's trust bundles, written only once the generation is accepted).
    pub fn gather_with(
        file: &Path,
        text: String,
        config: Bootstrap,
        mut provided: FxHashMap<PathBuf, Arc<[u8]>>,
    ) -> Self {
        let mut files = FxHashMap::default();
        for p in named_files(&config) {
            let path = resolve(file, p);
            if files.contains_key(&path) {
                continue;
            }
            let content = match provided.remove(&path) {
                Some(bytes) => Ok(bytes),
                None => std::fs::read(&path)
                    .map(Arc::from)
                    .map_err(|e| format!("{}: cannot read: {e}", path.display())),
            };
            files.insert(path, content);
        }
        let mut resolved = FxHashMap::default();
        for c in &config.clusters {
            let located = c.localities.iter().flat_map(|l| l.endpoints.iter());
            for e in c.endpoints.iter().chain(located) {
                let text = e.value();
                if text.parse::<SocketAddr>().is_err()
                    && host_port(text).is_some()
                    && !resolved.contains_key(text)
                {
                    resolved.insert(text.clone(), resolve_name(text));
                }
            }
        }
        let needs_system_roots = config
            .clusters
            .iter()
            .any(|c| c.tls.as_ref().is_some_and(|t| t.trust_bundle.is_none()))
            || config
                .jwt_providers
                .iter()
                .any(|p| matches!(&p.jwks, JwksSource::Url(r) if r.trust_bundle.is_none()));
        Loaded {
            file: file.to_owned(),
            text,
            system_roots: needs_system_roots.then(crate::tls::material::system_roots),
            config,
            files,
            resolved,
        }
    }
}

/// A path named in the configuration, relative to the bootstrap file's directory.
pub fn resolve(file: &Path, p: &Located<PathBuf>) -> PathBuf {
    let p = p.value();
    if p.is_absolute() {
        p.clone()
    } else {
        file.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// Every file a configuration names. The compiler asks for each of these and nothing else.
fn named_files(cfg: &Bootstrap) -> Vec<&Located<PathBuf>> {
    let mut out = Vec::new();
    for l in &cfg.listeners {
        if let Some(t) = &l.tls {
            for c in &t.certificates {
                out.extend([&c.cert, &c.key]);
            }
            out.extend(&t.trust_bundle);
        }
    }
    for c in &cfg.clusters {
        if let Some(t) = &c.tls {
            out.extend(&t.trust_bundle);
            if let Some(c) = &t.client_certificate {
                out.extend([&c.cert, &c.key]);
            }
        }
    }
    for p in &cfg.jwt_providers {
        match &p.jwks {
            JwksSource::Inline(_) => {}
            JwksSource::File(f) => out.push(f),
            JwksSource::Url(r) => out.extend(&r.trust_bundle),
        }
    }
    out
}

/// `host:port` split, when the text has that shape (the host may still not resolve).
pub fn host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

/// Resolves `host:port` (IPv4 addresses first). A name that does not resolve leaves the
/// endpoint out until a later reload, as Envoy's strict DNS clusters do; a malformed one is
/// the compiler's to refuse.
fn resolve_name(text: &str) -> Vec<SocketAddr> {
    match text.to_socket_addrs() {
        Ok(addrs) => {
            let mut all: Vec<SocketAddr> = addrs.collect();
            all.sort_by_key(|a| a.is_ipv6());
            if all.is_empty() {
                tracing::warn!(endpoint = %text, "resolves to no address; left out for now");
            }
            all
        }
        Err(err) => {
            tracing::warn!(endpoint = %text, error = %err, "does not resolve; left out for now");
            Vec::new()
        }
    }
}
