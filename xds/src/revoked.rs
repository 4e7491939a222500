//! The deny list of a CA directory (`<ca dir>/revoked`): identities and certificates the
//! control server no longer serves. One entry per line; `#` starts a comment.
//!
//! - `spiffe://…`: every certificate with that SPIFFE ID (a whole cell's gateways);
//! - `sha256:<hex>`: one certificate, by the SHA-256 of its DER encoding (one gateway).
//!
//! A listed client is refused a certificate (renewal or join) and an ADS stream, with
//! PERMISSION_DENIED naming the entry that matched. The file is read at each check (it is
//! small and checks are rare: a stream's start, a certificate request), so an edit takes
//! effect at once without a restart. The control server also sends the list to the gateways
//! with the org's trust bundle (the CA directory is watched), whose listeners then refuse
//! those peers at the handshake and on every request of a connection already open.

use aws_lc_rs::digest;
use membrane_policy::identity::SpiffeId;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct DenyList {
    path: PathBuf,
}

/// The hex SHA-256 of a certificate's DER encoding, as the deny list names it.
fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
}

pub fn cert_hash(der: &[u8]) -> String {
    digest::digest(&digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl DenyList {
    pub fn new(ca_dir: &Path) -> Self {
        Self {
            path: ca_dir.join("revoked"),
        }
    }

    /// Every entry, in file order (none when the file is missing or unreadable).
    pub fn entries(&self) -> Vec<String> {
        std::fs::read_to_string(&self.path)
            .map(|t| entries(&t).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The entry that denies `id` or the certificate hashed `hash`, if any. A file that
    /// cannot be read denies nothing and is logged (a missing file is the usual case).
    pub fn denies(&self, id: &SpiffeId, hash: Option<&str>) -> Option<String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::error!(file = %self.path.display(), error = %e, "cannot read the deny list");
                }
                return None;
            }
        };
        entries(&text)
            .find(|entry| match entry.strip_prefix("sha256:") {
                Some(h) => hash.is_some_and(|c| c.eq_ignore_ascii_case(h)),
                None => *entry == id.as_str(),
            })
            .map(str::to_owned)
    }
}
