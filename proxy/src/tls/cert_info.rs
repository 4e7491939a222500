//! The facts Membrane reads from an X.509 certificate: names and validity.

use membrane_policy::identity::SpiffeId;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    pub dns_names: Vec<String>,
    /// The SPIFFE ID of the URI SAN. An X509-SVID carries exactly one URI SAN; a
    /// certificate with several, or one that is not a valid SPIFFE ID, has none here.
    pub spiffe: Option<SpiffeId>,
    /// Validity bounds, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum CertInfoError {
    #[error("not a DER X.509 certificate: {0}")]
    Der(String),
    #[error("its subjectAltName extension is malformed: {0}")]
    San(String),
}

impl CertInfo {
    pub fn parse(der: &[u8]) -> Result<Self, CertInfoError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| CertInfoError::Der(e.to_string()))?;
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        if let Some(san) = cert
            .subject_alternative_name()
            .map_err(|e| CertInfoError::San(e.to_string()))?
        {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns_names.push(d.to_ascii_lowercase()),
                    GeneralName::URI(u) => uris.push(*u),
                    _ => {}
                }
            }
        }
        let spiffe = match uris.as_slice() {
            [one] => SpiffeId::parse(one).ok(),
            _ => None,
        };
        let validity = cert.validity();
        Ok(Self {
            subject: cert.subject().to_string(),
            dns_names,
            spiffe,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// A short, stable name for metric labels and messages: the SPIFFE ID, else the first
    /// DNS name, else the subject.
    pub fn label(&self) -> String {
        if let Some(id) = &self.spiffe {
            return id.to_string();
        }
        if let Some(d) = self.dns_names.first() {
            return d.clone();
        }
        self.subject.clone()
    }
}
