//! The gateway's issued identity: a key made here, a certificate from the control server's
//! certificate service, both kept in the state directory (the key 0600) so that a restart
//! while the control server is away still serves with a valid certificate.
//!
//! - First contact: a join token (`--join-token`) authenticates the request; the
//!   certificate request names no identity, and the control server answers with the one
//!   the token is bound to (a request that names another is refused there).
//! - Renewal: at half of the certificate's lifetime (plus up to a tenth of it, at random,
//!   so a fleet issued together does not renew together), over mTLS with the current
//!   certificate, asking for the same SPIFFE ID with a new key. A failed renewal is retried
//!   with jittered backoff (1 s doubling to a minute) while the current certificate is valid.
//! - A new certificate is written to the files first, then swapped in for new control
//!   channel handshakes and, by a reload, for listeners and clusters that use the gateway's
//!   own SVID. Open connections keep the certificate they were made with.

use super::channel::{ConnectError, Security, connect};
use crate::tls::cert_info::CertInfo;
use membrane_api::proto::membrane::ca::v1 as pb;
use membrane_identity::channel::{ChannelError, Rotating, certified_key};
use membrane_policy::identity::SpiffeId;
use pb::certificate_service_client::CertificateServiceClient;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The certificate chain (leaf first), its key and the roots it was issued with.
pub const CERT_FILE: &str = "svid.pem";
pub const KEY_FILE: &str = "svid-key.pem";
pub const BUNDLE_FILE: &str = "svid-bundle.pem";

/// A certificate the gateway holds.
#[derive(Clone)]
pub struct Issued {
    pub id: SpiffeId,
    pub chain_pem: String,
    pub key_pem: String,
    pub bundle_pem: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Why a certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("connect: {}", .0.detail())]
    Connect(#[from] ConnectError),
    #[error("the certificate service refused: {}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    #[error("cannot make a key and request: {0}")]
    Request(#[from] rcgen::Error),
    #[error("the certificate received is unusable: {0}")]
    Unusable(String),
    #[error("{path}: {source}")]
    Files {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the key and certificate do not make a TLS identity: {0}")]
    Key(#[from] ChannelError),
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Issued {
    fn from_parts(
        chain_pem: String,
        key_pem: String,
        bundle_pem: String,
    ) -> Result<Self, IdentityError> {
        let bad = |e: &dyn std::fmt::Display| IdentityError::Unusable(e.to_string());
        let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .next()
            .ok_or_else(|| bad(&"no certificate"))?
            .map_err(|e| bad(&e))?;
        let id = membrane_identity::svid::check_leaf(&leaf)
            .map_err(|e| bad(&e))?
            .ok_or_else(|| bad(&"the certificate carries no SPIFFE ID"))?;
        let info = CertInfo::parse(&leaf).map_err(|e| bad(&e))?;
        Ok(Self {
            id,
            chain_pem,
            key_pem,
            bundle_pem,
            not_before: info.not_before,
            not_after: info.not_after,
        })
    }

    /// Still valid now.
    pub fn valid(&self) -> bool {
        let now = now_unix();
        self.not_before <= now && now < self.not_after
    }

    /// Seconds until it expires (negative: expired).
    pub fn seconds_left(&self) -> i64 {
        self.not_after - now_unix()
    }

    /// When to renew: after half of the time it has left, plus up to a tenth of that at
    /// random. Counted from now, not from `notBefore`, which the CA sets a little in the
    /// past for clock skew: for a certificate just received this is half of its lifetime.
    pub fn renew_in(&self) -> Duration {
        let left = u64::try_from(self.not_after - now_unix()).unwrap_or(0);
        Duration::from_secs(left / 2) + Duration::from_millis(fastrand::u64(0..=left * 100))
    }

    pub fn certified(&self) -> Result<Arc<rustls::sign::CertifiedKey>, ChannelError> {
        certified_key(&self.chain_pem, &self.key_pem)
    }
}

/// The paths of the own-SVID files in `dir`, when a certificate was issued there.
pub fn own_files(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let cert = dir.join(CERT_FILE);
    cert.exists().then(|| (cert, dir.join(KEY_FILE)))
}

/// The certificate kept in `dir`, whether or not still valid; `None` when there is none or
/// it is unreadable.
pub fn load(dir: &Path) -> Option<Issued> {
    let read = |f| std::fs::read_to_string(dir.join(f)).ok();
    let issued = Issued::from_parts(read(CERT_FILE)?, read(KEY_FILE)?, read(BUNDLE_FILE)?);
    match issued {
        Ok(i) => Some(i),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "the kept certificate is unusable");
            None
        }
    }
}

fn save(dir: &Path, issued: &Issued) -> Result<(), IdentityError> {
    let write = |name: &str, text: &str, private: bool| {
        let path = dir.join(name);
        let tmp = path.with_extension("tmp");
        let err = |source| IdentityError::Files {
            path: path.clone(),
            source,
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        use std::io::Write;
        let mut f = opts.open(&tmp).map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    };
    // The key first: a certificate on disk always has its key beside it.
    write(KEY_FILE, &issued.key_pem, true)?;
    write(BUNDLE_FILE, &issued.bundle_pem, false)?;
    write(CERT_FILE, &issued.chain_pem, false)
}

/// Asks the certificate service for a certificate: with `token` on first contact, or over
/// mTLS with `current` to renew (then for the same SPIFFE ID). Saves it in `dir`.
pub async fn request(
    url: &str,
    security: &Security,
    node: &str,
    token: Option<&str>,
    current: Option<(&Issued, Arc<Rotating>)>,
    dir: &Path,
) -> Result<Issued, IdentityError> {
    let (want, own) = match current {
        Some((issued, rotating)) => (Some(&issued.id), Some(rotating)),
        None => (None, None),
    };
    let made = match want {
        Some(id) => membrane_identity::csr::request(id)?,
        None => membrane_identity::csr::request_for(Vec::new())?,
    };
    let channel = connect(url, security, own).await?;
    let mut client = CertificateServiceClient::new(channel);
    let answer = client
        .create_certificate(pb::CreateCertificateRequest {
            csr: made.csr_pem,
            node: node.to_owned(),
            join_token: token.unwrap_or_default().to_owned(),
        })
        .await
        .map_err(IdentityError::Refused)?
        .into_inner();
    let issued = Issued::from_parts(
        answer.cert_chain.concat(),
        made.key_pem,
        answer.trust_bundle,
    )?;
    if let Some(id) = want
        && &issued.id != id
    {
        return Err(IdentityError::Unusable(format!(
            "asked to renew {id}, received {}",
            issued.id
        )));
    }
    // The key must match the certificate before anything is replaced.
    issued.certified()?;
    save(dir, &issued)?;
    Ok(issued)
}
