//! Handshake failures, sorted into the reasons counted in
//! `membrane_tls_handshake_failures_total`. The set is fixed, so the label stays bounded.

use super::server::BadSan;
use super::svid::SvidError;
use rustls::{CertificateError, Error};
use std::io;

/// Every reason a handshake can be counted under.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Reason {
    NoClientCert,
    UnknownCa,
    Expired,
    NotYetValid,
    BadUsage,
    BadSan,
    NotSvid,
    Revoked,
    BadCertificate,
    PeerAlert,
    Protocol,
    Timeout,
    Closed,
}

impl Reason {
    /// Every value, in the order of the variants (`Reason as usize` indexes it).
    pub const ALL: [Reason; 13] = [
        Reason::NoClientCert,
        Reason::UnknownCa,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::BadUsage,
        Reason::BadSan,
        Reason::NotSvid,
        Reason::Revoked,
        Reason::BadCertificate,
        Reason::PeerAlert,
        Reason::Protocol,
        Reason::Timeout,
        Reason::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoClientCert => "no_client_cert",
            Reason::UnknownCa => "unknown_ca",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::BadUsage => "bad_usage",
            Reason::BadSan => "bad_san",
            Reason::NotSvid => "not_svid",
            Reason::Revoked => "revoked",
            Reason::BadCertificate => "bad_certificate",
            Reason::PeerAlert => "peer_alert",
            Reason::Protocol => "protocol",
            Reason::Timeout => "timeout",
            Reason::Closed => "closed",
        }
    }
}
crate::label_value!(Reason);

/// The reason for a failed `accept` or `connect`.
pub fn reason(e: &io::Error) -> Reason {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        return of_rustls(tls);
    }
    match e.kind() {
        io::ErrorKind::TimedOut => Reason::Timeout,
        _ => Reason::Closed,
    }
}

pub fn of_rustls(e: &Error) -> Reason {
    match e {
        Error::NoCertificatesPresented => Reason::NoClientCert,
        Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => Reason::UnknownCa,
            CertificateError::Revoked => Reason::Revoked,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Reason::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Reason::NotYetValid
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                Reason::BadUsage
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Reason::BadSan
            }
            CertificateError::Other(o) if o.0.downcast_ref::<BadSan>().is_some() => Reason::BadSan,
            CertificateError::Other(o) if o.0.downcast_ref::<SvidError>().is_some() => {
                Reason::NotSvid
            }
            _ => Reason::BadCertificate,
        },
        Error::AlertReceived(_) => Reason::PeerAlert,
        _ => Reason::Protocol,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_lists_every_reason_at_its_index() {
        for (i, r) in super::Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.as_str());
        }
    }
}
