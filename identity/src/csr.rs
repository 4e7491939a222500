//! A gateway's side of issuance: a fresh ECDSA P-256 key, made where it is used and never
//! sent anywhere, and a certificate request naming only the gateway's SPIFFE ID.

use membrane_policy::identity::SpiffeId;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

/// A new key and the PEM certificate request for `id` signed with it.
pub struct KeyAndRequest {
    /// PKCS#8, PEM. Kept by the gateway only (in memory, or 0600 in its state directory).
    pub key_pem: String,
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyAndRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndRequest")
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

pub fn request(id: &SpiffeId) -> Result<KeyAndRequest, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
    let csr = p.serialize_request(&key)?;
    Ok(KeyAndRequest {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem()?,
    })
}

/// A request for any SAN list, signed with a fresh key: for tests that must ask for what a
/// careful gateway never asks for.
pub fn request_for(sans: Vec<SanType>) -> Result<KeyAndRequest, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = sans;
    let csr = p.serialize_request(&key)?;
    Ok(KeyAndRequest {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::{Authority, IssueError};
    use crate::devca::DevCa;
    use rustls_pki_types::pem::PemObject;
    use std::time::Duration;

    fn authority(dir: &std::path::Path) -> Authority {
        let ca = DevCa::new("test root", Duration::from_secs(3600)).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.join("ca-key.pem"), ca.key_pem()).unwrap();
        Authority::load(dir, Duration::from_secs(600)).unwrap()
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("membrane-identity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_request_for_the_bound_id_is_signed_as_an_svid_and_nothing_else_is() {
        let dir = tmp("sign");
        let ca = authority(&dir);
        let orders =
            SpiffeId::parse("spiffe://acme.internal/org/acme/env/dev/cell/orders").unwrap();
        let billing =
            SpiffeId::parse("spiffe://acme.internal/org/acme/env/dev/cell/billing").unwrap();

        let ok = request(&orders).unwrap();
        let signed = ca
            .sign_request(&ok.csr_pem, &orders, &["orders.acme.internal".into()])
            .unwrap();
        assert_eq!(signed.chain.len(), 2, "leaf then the CA");
        let leaf = rustls_pki_types::CertificateDer::from_pem_slice(signed.chain[0].as_bytes());
        let leaf = leaf.unwrap();
        assert_eq!(
            crate::svid::check_leaf(&leaf).unwrap(),
            Some(orders.clone())
        );
        let left = signed.not_after - time::OffsetDateTime::now_utc();
        assert!(left <= time::Duration::seconds(600) && left > time::Duration::seconds(590));

        // Another cell's identity.
        let e = ca
            .sign_request(&request(&billing).unwrap().csr_pem, &orders, &[])
            .unwrap_err();
        assert!(matches!(e, IssueError::Identity { .. }), "{e}");
        // A DNS name beside the right ID.
        let extra = request_for(vec![
            SanType::URI(orders.as_str().try_into().unwrap()),
            SanType::DnsName("admin.acme.example".try_into().unwrap()),
        ])
        .unwrap();
        let e = ca.sign_request(&extra.csr_pem, &orders, &[]).unwrap_err();
        assert!(matches!(e, IssueError::ExtraNames(1)), "{e}");
        // Two URIs, one of them right.
        let two = request_for(vec![
            SanType::URI(orders.as_str().try_into().unwrap()),
            SanType::URI(billing.as_str().try_into().unwrap()),
        ])
        .unwrap();
        assert!(matches!(
            ca.sign_request(&two.csr_pem, &orders, &[]).unwrap_err(),
            IssueError::Identity { .. }
        ));
        // No SAN: the bound identity.
        let any = ca
            .sign_request(&request_for(vec![]).unwrap().csr_pem, &orders, &[])
            .unwrap();
        let leaf =
            rustls_pki_types::CertificateDer::from_pem_slice(any.chain[0].as_bytes()).unwrap();
        assert_eq!(
            crate::svid::check_leaf(&leaf).unwrap(),
            Some(orders.clone())
        );
        // Not a CSR; a CSR whose signature does not match its key.
        assert!(matches!(
            ca.sign_request(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                &orders,
                &[]
            )
            .unwrap_err(),
            IssueError::Csr(_)
        ));
        let mut tampered = ok.csr_pem.clone().into_bytes();
        let mid = tampered.len() / 2;
        tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
        assert!(
            ca.sign_request(&String::from_utf8(tampered).unwrap(), &orders, &[])
                .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
