//! Revoked peers: certificates that still chain to a trusted root but must not be accepted.
//! An entry is `spiffe://…` (every certificate with that SPIFFE ID) or `sha256:<hex>` (one
//! certificate, by the SHA-256 of its DER encoding, as XFCC's `Hash=` shows it).

use membrane_policy::identity::SpiffeId;
use std::collections::BTreeSet;

/// Why a deny-list entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokedError {
    #[error("`{0}` is neither a SPIFFE ID nor sha256:<64 hex digits>")]
    Entry(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Revoked {
    ids: BTreeSet<String>,
    hashes: BTreeSet<String>,
}

/// The hex SHA-256 of a certificate's DER encoding.
pub fn cert_sha256(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Revoked {
    pub fn new<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, RevokedError> {
        let mut r = Revoked::default();
        for e in entries {
            if let Some(h) = e.strip_prefix("sha256:") {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(RevokedError::Entry(e.to_owned()));
                }
                r.hashes.insert(h.to_ascii_lowercase());
            } else {
                let id = SpiffeId::parse(e).map_err(|_| RevokedError::Entry(e.to_owned()))?;
                r.ids.insert(id.to_string());
            }
        }
        Ok(r)
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.hashes.is_empty()
    }

    /// Whether a peer with `id` and a certificate hashed `cert_sha256` is revoked.
    pub fn denies(&self, id: Option<&SpiffeId>, cert_sha256: Option<&str>) -> bool {
        id.is_some_and(|id| self.ids.contains(id.as_str()))
            || cert_sha256.is_some_and(|h| self.hashes.contains(h))
    }
}
