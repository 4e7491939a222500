//! TLS termination for a listener: certificates chosen by SNI, client certificates verified
//! against a trust bundle and, optionally, a list of SPIFFE trust domains.

use super::cert_info::CertInfo;
use super::material::LoadedCert;
use super::provider;
use crate::config::{ClientAuth, TlsVersion};
pub use membrane_identity::verify::BadSan;
use membrane_identity::verify::SpiffeClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use std::sync::Arc;
use std::time::Duration;

/// Session state that outlives a config generation, so that rotating a certificate does
/// not void every ticket and cached session. Kept per listener, and only while the
/// listener's client-certificate settings stay the same: a session resumed on a listener
/// skips the client certificate check, so one made under other settings must not resume.
pub struct Resumption {
    pub fingerprint: u64,
    pub ticketer: Arc<dyn ProducesTickets>,
    pub cache: Arc<dyn StoresServerSessions>,
}

/// Sessions remembered for resumption by session ID (TLS 1.2) and as stateful fallback.
const SESSION_CACHE_ENTRIES: usize = 16 * 1024;

impl Resumption {
    pub fn new(fingerprint: u64) -> Result<Arc<Self>, rustls::Error> {
        Ok(Arc::new(Self {
            fingerprint,
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new()?,
            cache: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
        }))
    }
}

/// What a listener's TLS needs, already loaded.
pub struct ServerTlsParts {
    pub certs: Vec<LoadedCert>,
    pub client_auth: ClientAuth,
    pub roots: Option<Arc<RootCertStore>>,
    pub bundle: Vec<CertInfo>,
    pub trust_domains: Vec<String>,
    pub revoked: Arc<membrane_identity::revoked::Revoked>,
    pub min_version: TlsVersion,
    pub alpn: Vec<Vec<u8>>,
}

/// A listener's compiled TLS: the rustls config and what operators and XFCC need to know.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub handshake_timeout: Duration,
    pub certs: Vec<CertInfo>,
    pub client_auth: ClientAuth,
    pub resumption: Arc<Resumption>,
    /// The SPIFFE ID of the listener's first certificate: `By=` in XFCC.
    pub own_id: Option<membrane_policy::identity::SpiffeId>,
    /// The trust bundle's certificates, for expiry metrics.
    pub bundle: Vec<CertInfo>,
    /// Client certificates must carry a SPIFFE ID of one of these (empty: any).
    pub trust_domains: Vec<String>,
    /// Peers refused although they chain to the bundle (checked again per request).
    pub revoked: Arc<membrane_identity::revoked::Revoked>,
}

pub fn build(
    parts: ServerTlsParts,
    handshake_timeout: Duration,
    resumption: Arc<Resumption>,
) -> Result<ServerTls, super::BuildError> {
    let provider = provider();
    let versions = super::versions(parts.min_version);
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let verifier: Arc<dyn ClientCertVerifier> = match (parts.client_auth, parts.roots) {
        (ClientAuth::None, _) => Arc::new(rustls::server::NoClientAuth),
        (_, None) => return Err(super::BuildError::NoTrustBundle),
        (auth, Some(roots)) => {
            let b = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let b = if auth == ClientAuth::Optional {
                b.allow_unauthenticated()
            } else {
                b
            };
            let inner = b.build()?;
            Arc::new(
                SpiffeClientVerifier::new(inner, parts.trust_domains.clone())
                    .with_revoked(parts.revoked.clone()),
            )
        }
    };
    let resolver = SniResolver::new(&parts.certs).ok_or(super::BuildError::NoCertificate)?;
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = parts.alpn;
    config.ticketer = resumption.ticketer.clone();
    config.session_storage = resumption.cache.clone();
    Ok(ServerTls {
        config: Arc::new(config),
        handshake_timeout,
        own_id: parts.certs.first().and_then(|c| c.info.spiffe.clone()),
        certs: parts.certs.iter().map(|c| c.info.clone()).collect(),
        client_auth: parts.client_auth,
        resumption,
        bundle: parts.bundle,
        trust_domains: parts.trust_domains,
        revoked: parts.revoked,
    })
}

/// Picks the certificate for a client's SNI: an exact DNS name, then a `*.` wildcard one
/// label up, then the listener's first certificate.
#[derive(Debug)]
struct SniResolver {
    exact: rustc_hash::FxHashMap<String, Arc<CertifiedKey>>,
    wildcard: rustc_hash::FxHashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn new(certs: &[LoadedCert]) -> Option<Self> {
        let default = certs.first()?.key.clone();
        let mut exact = rustc_hash::FxHashMap::default();
        let mut wildcard = rustc_hash::FxHashMap::default();
        // The first certificate to name a host wins, as listed.
        for c in certs {
            for name in &c.info.dns_names {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_owned()),
                    None => exact.entry(name.clone()),
                }
                .or_insert_with(|| c.key.clone());
            }
        }
        Some(Self {
            exact,
            wildcard,
            default,
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(k) = self.wildcard.get(parent)
        {
            return Some(k.clone());
        }
        Some(self.default.clone())
    }
}
