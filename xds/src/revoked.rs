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

use membrane_identity::revoked::Revoked;
use membrane_policy::identity::SpiffeId;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct DenyList {
    path: PathBuf,
}

fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
}

impl DenyList {
    pub fn new(ca_dir: &Path) -> Self {
        Self {
            path: ca_dir.join("revoked"),
        }
    }

    /// Every valid entry, in file order (none when the file is missing or unreadable), as
    /// gateways get it. A malformed line is logged and left out: the gateways would refuse
    /// the whole list for it, and keep serving without any of the other entries.
    pub fn entries(&self) -> Vec<String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::error!(file = %self.path.display(), error = %e, "cannot read the deny list");
                }
                return Vec::new();
            }
        };
        entries(&text)
            .filter(|e| match Revoked::new([*e]) {
                Ok(_) => true,
                Err(err) => {
                    tracing::error!(file = %self.path.display(), error = %err, "deny list entry left out");
                    false
                }
            })
            .map(str::to_owned)
            .collect()
    }

    /// The entry that denies `id` or the certificate hashed `hash`, if any: the gateways'
    /// matcher (`Revoked`) over the entries they are sent.
    pub fn denies(&self, id: &SpiffeId, hash: Option<&str>) -> Option<String> {
        let entries = self.entries();
        Revoked::new(entries.iter().map(String::as_str))
            .ok()?
            .denies(Some(id), hash)
    }
}
