//! Handshake failures, sorted into the reasons counted in
//! `membrane_tls_handshake_failures_total`. The set is fixed, so the label stays bounded.

use super::server::BadSan;
use super::svid::SvidError;
use rustls::{CertificateError, Error};
use std::io;

/// Every reason a handshake can be counted under.
pub const REASONS: &[&str] = &[
    "no_client_cert",
    "unknown_ca",
    "expired",
    "not_yet_valid",
    "bad_usage",
    "bad_san",
    "not_svid",
    "bad_certificate",
    "peer_alert",
    "protocol",
    "timeout",
    "closed",
];

/// The reason for a failed `accept` or `connect`.
pub fn reason(e: &io::Error) -> &'static str {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        return of_rustls(tls);
    }
    match e.kind() {
        io::ErrorKind::TimedOut => "timeout",
        _ => "closed",
    }
}

pub fn of_rustls(e: &Error) -> &'static str {
    match e {
        Error::NoCertificatesPresented => "no_client_cert",
        Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "bad_usage"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "bad_san"
            }
            CertificateError::Other(o) if o.0.downcast_ref::<BadSan>().is_some() => "bad_san",
            CertificateError::Other(o) if o.0.downcast_ref::<SvidError>().is_some() => "not_svid",
            _ => "bad_certificate",
        },
        Error::AlertReceived(_) => "peer_alert",
        _ => "protocol",
    }
}
