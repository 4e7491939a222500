//! A small certificate authority for development, demos and tests (`membrane cert`).
//!
//! Keys are ECDSA P-256. Leaf certificates carry a SPIFFE ID as their one URI SAN and any
//! DNS names asked for, with both serverAuth and clientAuth usage unless told otherwise
//! (a cell gateway is a server on west and a client on east with one identity). Leaves live
//! 90 days by default, well inside the 398 days browsers and Mozilla's TLS profiles allow.
//! Not for production: the CA key is a file on disk.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::time::Duration;
use time::OffsetDateTime;

pub use rcgen::Error;

/// A CA that can sign leaves (and intermediates).
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// What a leaf certificate should say.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    pub spiffe_id: Option<String>,
    pub dns_names: Vec<String>,
    /// Validity as offsets from now (negative: in the past).
    pub not_before_secs: i64,
    pub not_after_secs: i64,
    pub server_auth: bool,
    pub client_auth: bool,
}

impl LeafSpec {
    pub fn new(common_name: &str) -> Self {
        Self {
            common_name: common_name.to_owned(),
            spiffe_id: None,
            dns_names: Vec::new(),
            not_before_secs: -3600,
            not_after_secs: 90 * 24 * 3600,
            server_auth: true,
            client_auth: true,
        }
    }

    pub fn spiffe(mut self, id: &str) -> Self {
        self.spiffe_id = Some(id.to_owned());
        self
    }

    pub fn dns(mut self, name: &str) -> Self {
        self.dns_names.push(name.to_owned());
        self
    }
}

/// A signed certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn at(offset_secs: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::seconds(offset_secs)
}

fn ca_params(common_name: &str, lifetime: Duration) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.distinguished_name
        .push(DnType::OrganizationName, "Membrane development CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = at(-3600);
    p.not_after = at(lifetime.as_secs().try_into().unwrap_or(i64::MAX / 2));
    p
}

impl DevCa {
    /// A new self-signed root.
    pub fn new(common_name: &str, lifetime: Duration) -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let params = ca_params(common_name, lifetime);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, common_name: &str, lifetime: Duration) -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let params = ca_params(common_name, lifetime);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// A CA from its PEM certificate and key (as written by `membrane cert ca`).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Self {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            cert_pem: cert_pem.to_owned(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Signs a leaf made exactly as `params` say, with a new key: for tests that need the
    /// certificates no careful issuer makes (a leaf with `keyCertSign`, a root SPIFFE ID).
    pub fn issue_with(&self, params: CertificateParams) -> Result<Issued, Error> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, Error> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, spec.common_name.as_str());
        for d in &spec.dns_names {
            p.subject_alt_names
                .push(SanType::DnsName(d.as_str().try_into()?));
        }
        if let Some(id) = &spec.spiffe_id {
            p.subject_alt_names
                .push(SanType::URI(id.as_str().try_into()?));
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.server_auth {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client_auth {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        p.use_authority_key_identifier_extension = true;
        p.not_before = at(spec.not_before_secs);
        p.not_after = at(spec.not_after_secs);
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
