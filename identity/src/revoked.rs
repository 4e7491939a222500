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

    /// The entry (as the list writes it) that revokes a peer with `id` and a certificate
    /// hashed `cert_sha256`, if any.
    pub fn denies(&self, id: Option<&SpiffeId>, cert_sha256: Option<&str>) -> Option<String> {
        if let Some(id) = id.filter(|id| self.ids.contains(id.as_str())) {
            return Some(id.to_string());
        }
        cert_sha256
            .map(str::to_ascii_lowercase)
            .filter(|h| self.hashes.contains(h))
            .map(|h| format!("sha256:{h}"))
    }
}
