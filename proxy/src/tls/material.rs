//! Reading certificates, keys and trust bundles from PEM files, with errors that say which
//! file and what is wrong with it.

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

/// Reads a PEM chain (leaf first) and its private key, and checks that they belong together.
pub fn load_cert_key(
    provider: &CryptoProvider,
    cert_file: &Path,
    key_file: &Path,
) -> Result<LoadedCert, MaterialError> {
    let chain = read_certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
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

/// Reads every certificate of a PEM file; at least one must be there.
pub fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| err(file, format!("cannot read: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(file, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(file, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// A trust bundle: every certificate in the file becomes a trust anchor.
pub fn load_bundle(file: &Path) -> Result<(Arc<RootCertStore>, Vec<CertInfo>), MaterialError> {
    let certs = read_certs(file)?;
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
