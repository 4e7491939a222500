//! TLS settings of listeners (termination, client certificates) and clusters (origination).
//! Relative file paths are read relative to the bootstrap file's directory.

use super::{Dur, Located};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// One or more certificates. A client's SNI picks the certificate whose DNS names match
    /// it (exact first, then `*.` wildcards); the first is the default for clients without
    /// SNI or with a name no certificate has.
    pub certificates: Vec<CertKeyConfig>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// PEM file of the CAs that client certificates must chain to (several allowed;
    /// clients send their intermediates). Needed unless `client_auth` is `none`.
    #[serde(default)]
    pub trust_bundle: Option<Located<PathBuf>>,
    /// When set, a client certificate must carry a SPIFFE ID in one of these trust domains.
    #[serde(default)]
    pub trust_domains: Vec<Located<String>>,
    /// `"1.2"` (the default: TLS 1.2 and 1.3) or `"1.3"` (TLS 1.3 only).
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Client certificates refused although they chain to the trust bundle: `spiffe://…`
    /// (every certificate with that ID) or `sha256:<hex>` (one certificate). Refused at the
    /// handshake, and on each request of a connection opened before the entry was added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<Located<String>>,
    /// A handshake not complete by then is dropped.
    #[serde(default = "handshake_timeout")]
    pub handshake_timeout: Dur,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertKeyConfig {
    /// PEM: the certificate, then its intermediates.
    pub cert: Located<PathBuf>,
    /// PEM: the private key (PKCS#8, SEC1 or PKCS#1).
    pub key: Located<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// Asked for and verified when sent; a client without one still connects.
    Optional,
    /// Without a valid client certificate the handshake fails.
    Require,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsConfig {
    /// Server name sent in SNI; also the DNS name verified when `verify` is not given.
    pub sni: Located<String>,
    /// PEM file of the CAs the upstream's certificate must chain to; the system's CA store
    /// when absent (for public upstreams).
    #[serde(default)]
    pub trust_bundle: Option<Located<PathBuf>>,
    /// How the upstream's certificate is checked beyond its chain. Default: the DNS name
    /// in `sni`.
    #[serde(default)]
    pub verify: Option<UpstreamVerify>,
    /// A client certificate for mTLS origination.
    #[serde(default)]
    pub client_certificate: Option<CertKeyConfig>,
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Upstream certificates refused although they chain to the trust bundle, as for a
    /// listener's `revoked`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<Located<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum UpstreamVerify {
    /// The certificate's URI SAN must be exactly this SPIFFE ID.
    SpiffeId(Located<String>),
    /// The certificate's SPIFFE ID must be in this trust domain.
    TrustDomain(Located<String>),
    /// The certificate must be valid for this DNS name.
    Dns(Located<String>),
}

impl ListenerTlsConfig {
    pub fn new(certificates: Vec<CertKeyConfig>) -> Self {
        Self {
            certificates,
            client_auth: ClientAuth::default(),
            trust_bundle: None,
            trust_domains: Vec::new(),
            min_version: TlsVersion::default(),
            revoked: Vec::new(),
            handshake_timeout: handshake_timeout(),
        }
    }
}

impl ClusterTlsConfig {
    pub fn new(sni: String) -> Self {
        Self {
            sni: sni.into(),
            trust_bundle: None,
            verify: None,
            client_certificate: None,
            min_version: TlsVersion::default(),
            revoked: Vec::new(),
        }
    }
}

impl CertKeyConfig {
    pub fn new(cert: PathBuf, key: PathBuf) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
        }
    }
}

fn handshake_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}
