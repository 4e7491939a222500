//! Certificates, keys and trust bundles from PEM text, with errors that say which file the
//! text came from and what is wrong with it. The files are read by the loader
//! (`compiler::load`); nothing here does I/O but the system CA store.

use super::cert_info::CertInfo;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("{file}: {message}")]
    File { file: PathBuf, message: String },
}

fn err(file: &Path, message: impl Into<String>) -> MaterialError {
    MaterialError::File {
        file: file.to_owned(),
        message: message.into(),
    }
}

/// A certificate chain with its key, ready for rustls, and what its leaf says.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// A PEM chain (leaf first) and its private key, checked to belong together.
pub fn cert_key(
    provider: &CryptoProvider,
    cert_file: &Path,
    cert_pem: &[u8],
    key_file: &Path,
    key_pem: &[u8],
) -> Result<LoadedCert, MaterialError> {
    let chain = certs(cert_file, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| err(key_file, format!("no usable private key: {e}")))?;
    let info = CertInfo::parse(&chain[0]).map_err(|e| err(cert_file, e.to_string()))?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        err(
            key_file,
            format!(
                "does not fit the certificate in {}: {e}",
                cert_file.display()
            ),
        )
    })?;
    Ok(LoadedCert {
        key: Arc::new(key),
        info,
    })
}

/// Every certificate of a PEM text; at least one must be there.
pub fn certs(file: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(file, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(file, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// A trust bundle: every certificate in the text becomes a trust anchor.
pub fn bundle(
    file: &Path,
    pem: &[u8],
) -> Result<(Arc<RootCertStore>, Vec<CertInfo>), MaterialError> {
    let certs = certs(file, pem)?;
    let mut roots = RootCertStore::empty();
    let mut infos = Vec::with_capacity(certs.len());
    for (i, cert) in certs.into_iter().enumerate() {
        infos.push(
            CertInfo::parse(&cert).map_err(|e| err(file, format!("certificate {}: {e}", i + 1)))?,
        );
        roots.add(cert).map_err(|e| {
            err(
                file,
                format!("certificate {} is not a usable CA: {e}", i + 1),
            )
        })?;
    }
    Ok((Arc::new(roots), infos))
}

/// The system's CA store (for upstreams and key set servers with public certificates).
/// Loaded once per process.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the system's CA certificates");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("no system CA certificates found: give a trust_bundle");
            }
            Arc::new(roots)
        })
        .clone()
}
