//! A peer's leaf certificate held to the X.509-SVID standard (spiffe/spiffe
//! `standards/X509-SVID.md`), section by section, before its SPIFFE ID becomes anyone's
//! identity. Path validation (§5.1) is rustls' WebPKI verifier's, before this runs.
//!
//! A certificate with no URI SAN is not an SVID and carries no identity (`Ok(None)`): the
//! caller decides whether it may connect at all. One with a URI SAN claims a SPIFFE
//! identity and must meet every rule:
//!
//! | rule | section |
//! |---|---|
//! | exactly one URI SAN | §2, §5.2 |
//! | it is a SPIFFE ID (`spiffe` scheme, valid trust domain and path) | §2, §5.2 |
//! | a non-root path (`spiffe://td` alone names a trust domain, not a workload) | §3.1, §5.2 |
//! | an empty subject needs a critical SAN extension | §3.1 (RFC 5280 §4.1.2.6) |
//! | basic constraints: not a CA | §4.1, §5.2 |
//! | a key usage extension, marked critical | §4.3 |
//! | key usage without `keyCertSign` and `cRLSign` | §4.3, §5.2 |
//! | key usage with `digitalSignature` | §4.3 |
//! | an extended key usage, when present, with both `serverAuth` and `clientAuth` | §4.4 |

use membrane_policy::identity::SpiffeId;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a leaf is not a valid X.509-SVID; each says the section it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    #[error("not a DER X.509 certificate: {0}")]
    Der(String),
    #[error("X.509-SVID §2: the certificate has {0} URI SANs; an SVID has exactly one")]
    UriSans(usize),
    #[error("X.509-SVID §2: the URI SAN `{uri}` is not a SPIFFE ID: {why}")]
    NotSpiffe { uri: String, why: String },
    #[error("X.509-SVID §3.1: `{0}` has no path; a leaf's SPIFFE ID names a workload")]
    RootId(String),
    #[error("X.509-SVID §3.1: the subject is empty and the SAN extension is not critical")]
    SanNotCritical,
    #[error("X.509-SVID §4.1: the leaf is a CA (basic constraints cA=true)")]
    Ca,
    #[error("X.509-SVID §4.3: the leaf has no key usage extension")]
    NoKeyUsage,
    #[error("X.509-SVID §4.3: the key usage extension is not marked critical")]
    KeyUsageNotCritical,
    #[error("X.509-SVID §4.3: a leaf must not set keyCertSign or cRLSign")]
    SigningKeyUsage,
    #[error("X.509-SVID §4.3: a leaf must set digitalSignature")]
    NoDigitalSignature,
    #[error("X.509-SVID §4.4: an extended key usage must include both serverAuth and clientAuth")]
    ExtendedKeyUsage,
    #[error("the certificate's extensions do not parse: {0}")]
    Extensions(String),
}

/// The leaf's SPIFFE ID when it is a valid X.509-SVID, `None` when it claims none (no URI
/// SAN), the broken rule otherwise.
pub fn check_leaf(der: &[u8]) -> Result<Option<SpiffeId>, SvidError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| SvidError::Der(e.to_string()))?;
    let ext = |e: x509_parser::error::X509Error| SvidError::Extensions(e.to_string());
    let san = cert.subject_alternative_name().map_err(ext)?;
    let uris: Vec<&str> = san
        .as_ref()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let uri = match uris.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        more => return Err(SvidError::UriSans(more.len())),
    };
    let id = SpiffeId::parse(uri).map_err(|e| SvidError::NotSpiffe {
        uri: uri.to_owned(),
        why: e.to_string(),
    })?;
    if id.path().is_empty() {
        return Err(SvidError::RootId(uri.to_owned()));
    }
    if cert.subject().iter().next().is_none() && !san.is_some_and(|s| s.critical) {
        return Err(SvidError::SanNotCritical);
    }
    if cert
        .basic_constraints()
        .map_err(ext)?
        .is_some_and(|b| b.value.ca)
    {
        return Err(SvidError::Ca);
    }
    let Some(ku) = cert.key_usage().map_err(ext)? else {
        return Err(SvidError::NoKeyUsage);
    };
    if !ku.critical {
        return Err(SvidError::KeyUsageNotCritical);
    }
    if ku.value.key_cert_sign() || ku.value.crl_sign() {
        return Err(SvidError::SigningKeyUsage);
    }
    if !ku.value.digital_signature() {
        return Err(SvidError::NoDigitalSignature);
    }
    if let Some(eku) = cert.extended_key_usage().map_err(ext)?
        && !(eku.value.server_auth && eku.value.client_auth)
    {
        return Err(SvidError::ExtendedKeyUsage);
    }
    Ok(Some(id))
}
