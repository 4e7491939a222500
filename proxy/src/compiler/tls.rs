//! Compiling the TLS parts of listeners and clusters from the files `load` read: a missing
//! or bad certificate refuses the generation with the field that names it.

use super::Compiler;
use crate::config::{
    CertKeyConfig, ClientAuth, ClusterTlsConfig, ConfigError, ListenerProtocol, ListenerTlsConfig,
    Located, UpstreamProtocol, UpstreamVerify,
};
use crate::tls::cert_info::CertInfo;
use crate::tls::client::{self, ClientTls, Expect};
use crate::tls::material::{self, LoadedCert};
use crate::tls::server::{self, Resumption, ServerTls, ServerTlsParts};
use membrane_policy::identity::{SpiffeId, check_trust_domain};
use rustls_pki_types::ServerName;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

impl Compiler<'_> {
    fn cert_key(&self, at: &str, c: &CertKeyConfig) -> Result<LoadedCert, ConfigError> {
        let (cert, cert_pem) = self.file(&c.cert, &format!("{at}.cert"))?;
        let (key, key_pem) = self.file(&c.key, &format!("{at}.key"))?;
        material::cert_key(&crate::tls::provider(), &cert, cert_pem, &key, key_pem).map_err(|e| {
            let material::MaterialError::File { file, .. } = &e;
            let (field, loc) = if *file == key {
                ("key", &c.key)
            } else {
                ("cert", &c.cert)
            };
            self.err(loc, format!("{at}.{field}"), e.to_string())
        })
    }

    fn bundle(
        &self,
        b: &Located<PathBuf>,
        field: String,
    ) -> Result<(Arc<rustls::RootCertStore>, Vec<CertInfo>), ConfigError> {
        let (path, pem) = self.file(b, &field)?;
        material::bundle(&path, pem).map_err(|e| self.err(b, field, e.to_string()))
    }

    pub(super) fn listener_tls(
        &self,
        at: &str,
        t: &ListenerTlsConfig,
        protocol: ListenerProtocol,
        prev: Option<&Arc<Resumption>>,
        anchor: &Located<String>,
    ) -> Result<ServerTls, ConfigError> {
        let mut certs = Vec::with_capacity(t.certificates.len());
        for (i, c) in t.certificates.iter().enumerate() {
            certs.push(self.cert_key(&format!("{at}.certificates[{i}]"), c)?);
        }
        if certs.is_empty() {
            return Err(self.err(
                anchor,
                format!("{at}.certificates"),
                "a TLS listener needs at least one certificate".into(),
            ));
        }
        let (roots, bundle) = match (&t.trust_bundle, t.client_auth) {
            (Some(b), _) => {
                let (roots, infos) = self.bundle(b, format!("{at}.trust_bundle"))?;
                (Some(roots), infos)
            }
            (None, ClientAuth::None) => (None, Vec::new()),
            (None, _) => {
                return Err(self.err(
                    anchor,
                    format!("{at}.trust_bundle"),
                    "client_auth `optional` or `require` needs a trust_bundle".into(),
                ));
            }
        };
        let mut trust_domains = Vec::new();
        for (i, d) in t.trust_domains.iter().enumerate() {
            check_trust_domain(d.value())
                .map_err(|e| self.err(d, format!("{at}.trust_domains[{i}]"), e.to_string()))?;
            trust_domains.push(d.value().clone());
        }
        let revoked = self.revoked(at, &t.revoked, anchor)?;

        let mut h = rustc_hash::FxHasher::default();
        // A session resumed skips the client certificate check: one made before a peer was
        // revoked must not resume.
        (
            t.client_auth,
            &t.trust_bundle.as_ref().map(|b| b.value()),
            &trust_domains,
            &revoked,
        )
            .hash(&mut h);
        let fingerprint = h.finish();
        let resumption = match prev {
            Some(r) if r.fingerprint == fingerprint => r.clone(),
            _ => Resumption::new(fingerprint).map_err(|e| {
                self.err(
                    anchor,
                    at.to_owned(),
                    format!("cannot make session ticket keys: {e}"),
                )
            })?,
        };
        let alpn = match protocol {
            ListenerProtocol::Http1 => vec![b"http/1.1".to_vec()],
            ListenerProtocol::Http2 => vec![b"h2".to_vec()],
            ListenerProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        let parts = ServerTlsParts {
            certs,
            client_auth: t.client_auth,
            roots,
            bundle,
            trust_domains,
            revoked: Arc::new(revoked),
            min_version: t.min_version,
            alpn,
        };
        server::build(parts, t.handshake_timeout.0, resumption)
            .map_err(|m| self.err(anchor, at.to_owned(), m.to_string()))
    }

    /// The cluster's TLS, and a fingerprint of everything that makes its connections'
    /// identity (for the pool key).
    pub(super) fn cluster_tls(
        &self,
        at: &str,
        t: &ClusterTlsConfig,
        protocol: UpstreamProtocol,
        anchor: &Located<String>,
    ) -> Result<(ClientTls, u64), ConfigError> {
        let server_name = ServerName::try_from(t.sni.value().clone()).map_err(|e| {
            self.err(
                &t.sni,
                format!("{at}.sni"),
                format!("not a valid server name: {e}"),
            )
        })?;
        let (roots, bundle) = match &t.trust_bundle {
            Some(b) => self.bundle(b, format!("{at}.trust_bundle"))?,
            None => (self.system_roots(), Vec::new()),
        };
        let expect = match &t.verify {
            None => Expect::Dns(server_name.clone()),
            Some(UpstreamVerify::Dns(d)) => {
                Expect::Dns(ServerName::try_from(d.value().clone()).map_err(|e| {
                    self.err(
                        d,
                        format!("{at}.verify.dns"),
                        format!("not a DNS name: {e}"),
                    )
                })?)
            }
            Some(UpstreamVerify::SpiffeId(s)) => Expect::SpiffeId(
                SpiffeId::parse(s.value())
                    .map_err(|e| self.err(s, format!("{at}.verify.spiffe_id"), e.to_string()))?,
            ),
            Some(UpstreamVerify::TrustDomain(d)) => {
                check_trust_domain(d.value())
                    .map_err(|e| self.err(d, format!("{at}.verify.trust_domain"), e.to_string()))?;
                Expect::TrustDomain(d.value().clone())
            }
        };
        let client_cert = match &t.client_certificate {
            Some(c) => Some(self.cert_key(&format!("{at}.client_certificate"), c)?),
            None => None,
        };
        let revoked = self.revoked(at, &t.revoked, anchor)?;
        let mut h = rustc_hash::FxHasher::default();
        // The deny list is part of the pool key: a connection made before a server was
        // revoked is not reused after.
        (
            t.sni.value(),
            &expect,
            t.trust_bundle.as_ref().map(|b| b.value()),
            &revoked,
        )
            .hash(&mut h);
        if let Some(c) = &client_cert {
            for der in &c.key.cert {
                der.as_ref().hash(&mut h);
            }
        }
        let alpn = match protocol {
            UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
            UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
        };
        let mut tls = client::build(
            roots,
            expect,
            server_name,
            client_cert,
            t.min_version,
            alpn,
            Arc::new(revoked),
        )
        .map_err(|m| self.err(anchor, at.to_owned(), m.to_string()))?;
        tls.bundle = bundle;
        Ok((tls, h.finish()))
    }

    /// A TLS section's deny list, refused with the position of its first bad entry.
    fn revoked(
        &self,
        at: &str,
        entries: &[Located<String>],
        anchor: &Located<String>,
    ) -> Result<membrane_identity::revoked::Revoked, ConfigError> {
        membrane_identity::revoked::Revoked::new(entries.iter().map(|e| e.value().as_str()))
            .map_err(|e| {
                let bad = entries
                    .iter()
                    .find(|r| e.to_string().contains(r.value().as_str()));
                self.err(
                    bad.unwrap_or(anchor),
                    format!("{at}.revoked"),
                    e.to_string(),
                )
            })
    }
}
