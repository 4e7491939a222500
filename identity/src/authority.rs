//! The certificate authority of `membrane control --ca DIR`: signs a gateway's certificate
//! request for exactly the SPIFFE ID its credential is bound to, and nothing else.
//!
//! The directory holds `ca.pem` (the signing certificate, optionally followed by the
//! certificates above it) and `ca-key.pem` (its key), as `membrane cert ca` writes them, or
//! an intermediate an operator's PKI issued, so that an existing root stays the root. An
//! optional `bundle.pem` lists every root gateways should trust; without it the last
//! certificate of `ca.pem` is the root. During a roll-over `bundle.pem` holds the old and the
//! new root, while `ca.pem` already signs with the new one.
//!
//! What the request asks for beyond its key and its one URI SAN is ignored: the leaf is made
//! here, as an X.509-SVID (the SPIFFE ID, and DNS names the caller derives from it) (critical key usage `digitalSignature`, server and client
//! authentication, not a CA, an empty subject with a critical SAN), with a random serial
//! and the lifetime the authority is set to.

use crate::svid::check_leaf;
use membrane_policy::identity::SpiffeId;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, ExtendedKeyUsagePurpose,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

/// Clock skew allowed for: a certificate is valid from this long before it was signed.
const BACKDATE: Duration = Duration::from_secs(300);

/// Why an authority could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {source}")]
    Pem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{dir}: not a usable CA certificate and key: {source}")]
    Key { dir: PathBuf, source: rcgen::Error },
    #[error("{key} is not the key of the first certificate in {cert}")]
    KeyMismatch { key: PathBuf, cert: PathBuf },
}

/// Why a certificate request was not signed. Each variant is also a metric reason.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the certificate request does not parse or its signature is wrong: {0}")]
    Csr(rcgen::Error),
    #[error("the certificate request asks for {asked}; its credential is bound to {bound}")]
    Identity { asked: String, bound: SpiffeId },
    #[error(
        "the certificate request asks for names besides its SPIFFE ID ({0}); a gateway's \
         certificate carries only its SPIFFE ID"
    )]
    ExtraNames(usize),
    #[error("the system's random number generator failed")]
    Random,
    #[error("signing failed: {0}")]
    Sign(rcgen::Error),
    #[error("the signed certificate is not a valid X.509-SVID: {0}")]
    NotSvid(#[from] crate::svid::SvidError),
}

/// A signed leaf with the chain above it (not the root).
#[derive(Debug, Clone)]
pub struct SignedChain {
    /// PEM, the leaf first.
    pub chain: Vec<String>,
    pub not_after: OffsetDateTime,
}

pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// PEM of the signing certificate and those above it, sent after each leaf.
    above: Vec<String>,
    /// PEM of every root to trust.
    bundle: String,
    lifetime: Duration,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_certs(path: &Path, text: &str) -> Result<Vec<String>, LoadError> {
    let ders = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| LoadError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if ders.is_empty() {
        return Err(LoadError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(ders.iter().map(|d| pem("CERTIFICATE", d)).collect())
}

/// PEM-encodes one DER object.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl Authority {
    /// Loads `ca.pem`, `ca-key.pem` and, when present, `bundle.pem` from `dir`.
    pub fn load(dir: &Path, lifetime: Duration) -> Result<Self, LoadError> {
        let bundle_path = dir.join("bundle.pem");
        let bundle = bundle_path.exists().then_some(bundle_path.as_path());
        Self::load_files(
            dir,
            &dir.join("ca.pem"),
            &dir.join("ca-key.pem"),
            bundle,
            lifetime,
        )
    }

    /// Loads a CA from named files in `dir` (a roll-over's next CA has its own names).
    /// Without `bundle_path` the last certificate of `ca_path` is the one root.
    pub fn load_files(
        dir: &Path,
        ca_path: &Path,
        key_path: &Path,
        bundle_path: Option<&Path>,
        lifetime: Duration,
    ) -> Result<Self, LoadError> {
        let ca_text = read(ca_path)?;
        let above = pem_certs(ca_path, &ca_text)?;
        let key_text = read(key_path)?;
        let bundle = match bundle_path {
            Some(p) => pem_certs(p, &read(p)?)?.concat(),
            None => above.last().cloned().unwrap_or_default(),
        };
        let key_err = |source| LoadError::Key {
            dir: dir.to_owned(),
            source,
        };
        let key = KeyPair::from_pem(&key_text).map_err(key_err)?;
        // A key that is not the certificate's would sign leaves nobody can verify (as when a
        // roll-over has written one file and not yet the other).
        let cert_der = CertificateDer::from_pem_slice(above[0].as_bytes()).map_err(|source| {
            LoadError::Pem {
                path: ca_path.to_owned(),
                source,
            }
        })?;
        let spki_matches = x509_parser::parse_x509_certificate(&cert_der)
            .map(|(_, c)| {
                c.tbs_certificate.subject_pki.raw
                    == rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
            })
            .unwrap_or(false);
        if !spki_matches {
            return Err(LoadError::KeyMismatch {
                key: key_path.to_owned(),
                cert: ca_path.to_owned(),
            });
        }
        let issuer = Issuer::from_ca_cert_pem(&above[0], key).map_err(key_err)?;
        Ok(Self {
            issuer,
            above,
            bundle,
            lifetime,
        })
    }

    /// The roots gateways should trust, PEM.
    pub fn bundle_pem(&self) -> &str {
        &self.bundle
    }

    /// Trusts `pem`'s certificates too (roots of a roll-over: the next CA's, or the previous
    /// one's until its last leaf expires); those already trusted are not repeated.
    pub fn trusting(mut self, pem: &str) -> Self {
        let ders = CertificateDer::pem_slice_iter(pem.as_bytes()).flatten();
        for d in ders {
            let p = self::pem("CERTIFICATE", &d);
            if !self.bundle.contains(&p) {
                self.bundle.push_str(&p);
            }
        }
        self
    }

    /// The root this CA chains to: the last certificate it sends after a leaf.
    pub fn own_root_pem(&self) -> &str {
        self.above.last().map_or("", String::as_str)
    }

    /// Whether `other` signs with the same chain and trusts the same roots.
    pub fn same_as(&self, other: &Authority) -> bool {
        self.above == other.above && self.bundle == other.bundle
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Signs `csr_pem` when it asks for no identity or exactly `bound` (one URI SAN), and
    /// for no other name. The leaf gets `bound` and the DNS names in `dns` (names the
    /// authority derives from the identity, never ones the request asks for).
    pub fn sign_request(
        &self,
        csr_pem: &str,
        bound: &SpiffeId,
        dns: &[String],
    ) -> Result<SignedChain, IssueError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(IssueError::Csr)?;
        let mut uris = Vec::new();
        let mut others = 0;
        for san in &csr.params.subject_alt_names {
            match san {
                SanType::URI(u) => uris.push(u.as_str().to_owned()),
                _ => others += 1,
            }
        }
        match uris.as_slice() {
            // No SAN: "the identity my credential is bound to" (a gateway's first request,
            // before it knows its trust domain).
            [] => {}
            [one] if one == bound.as_str() => {}
            more => {
                return Err(IssueError::Identity {
                    asked: more.join(", "),
                    bound: bound.clone(),
                });
            }
        }
        if others > 0 {
            return Err(IssueError::ExtraNames(others));
        }
        self.sign_key(&csr.public_key, bound, dns)
    }

    /// Signs a leaf for `id` over `public_key` (the control server's own certificate, whose
    /// key never leaves it, is made this way too).
    pub fn sign_key(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        id: &SpiffeId,
        dns: &[String],
    ) -> Result<SignedChain, IssueError> {
        let now = OffsetDateTime::now_utc();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(
            id.as_str().try_into().map_err(IssueError::Sign)?,
        )];
        for d in dns {
            p.subject_alt_names.push(SanType::DnsName(
                d.as_str().try_into().map_err(IssueError::Sign)?,
            ));
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(random_serial()?);
        p.not_before = now - BACKDATE;
        p.not_after = now + self.lifetime;
        let cert = p
            .signed_by(public_key, &self.issuer)
            .map_err(IssueError::Sign)?;
        check_leaf(cert.der())?;
        let mut chain = vec![cert.pem()];
        chain.extend(self.above.iter().cloned());
        Ok(SignedChain {
            chain,
            not_after: p.not_after,
        })
    }
}

/// 16 random bytes, the first bit clear so the serial is positive (RFC 5280 §4.1.2.2).
fn random_serial() -> Result<SerialNumber, IssueError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| IssueError::Random)?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devca::DevCa;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, UnixTime};

    /// An operator's PKI: the root stays offline, the control server signs with an
    /// intermediate (`ca.pem` = intermediate then root, `bundle.pem` = the root). A leaf it
    /// issues chains to the root through the intermediate it sends along.
    #[test]
    fn an_intermediate_signs_and_its_leaves_chain_to_the_operator_root() {
        let dir = std::env::temp_dir().join(format!("membrane-authority-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = DevCa::new("operator root", Duration::from_secs(86_400)).unwrap();
        let inter = root
            .intermediate("membrane issuing CA", Duration::from_secs(86_400))
            .unwrap();
        std::fs::write(
            dir.join("ca.pem"),
            format!("{}{}", inter.cert_pem(), root.cert_pem()),
        )
        .unwrap();
        std::fs::write(dir.join("ca-key.pem"), inter.key_pem()).unwrap();
        std::fs::write(dir.join("bundle.pem"), root.cert_pem()).unwrap();
        let ca = Authority::load(&dir, Duration::from_secs(600)).unwrap();
        assert_eq!(ca.bundle_pem(), root.cert_pem().replace("\r\n", "\n"));

        let id = SpiffeId::parse("spiffe://acme.internal/org/acme/env/dev/cell/orders").unwrap();
        let req = crate::csr::request(&id).unwrap();
        let signed = ca.sign_request(&req.csr_pem, &id, &[]).unwrap();
        assert_eq!(signed.chain.len(), 3, "leaf, intermediate, root");

        // rustls' WebPKI path building, as a peer's verifier would run it.
        let der = |p: &str| CertificateDer::from_pem_slice(p.as_bytes()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(root.cert_pem())).unwrap();
        let leaf = der(&signed.chain[0]);
        let parsed = rustls::server::ParsedCertificate::try_from(&leaf).unwrap();
        let intermediates = [der(&signed.chain[1])];
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &intermediates,
            UnixTime::now(),
            crate::provider().signature_verification_algorithms.all,
        )
        .unwrap();
        // Without the intermediate, no path to the root.
        assert!(
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &roots,
                &[],
                UnixTime::now(),
                crate::provider().signature_verification_algorithms.all,
            )
            .is_err()
        );
        // A key that is not the certificate's (half of a roll-over written) is refused.
        std::fs::write(dir.join("ca-key.pem"), root.key_pem()).unwrap();
        assert!(matches!(
            Authority::load(&dir, Duration::from_secs(600)),
            Err(LoadError::KeyMismatch { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
