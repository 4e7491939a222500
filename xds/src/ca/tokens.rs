//! Join tokens: how a gateway proves, once, which cell it serves before it has a
//! certificate. `membrane control token --cell orders --ttl 10m` mints one; the first
//! certificate request that presents it redeems it.
//!
//! - A token is 32 random bytes, base64url, prefixed `mbt_` (so a leaked one is easy to
//!   find in logs and repositories).
//! - Only its SHA-256 is stored, with its cell and expiry, in `<ca dir>/tokens.json`.
//! - Single use: redeeming marks it used; a second use is refused as reuse, not as unknown,
//!   so the operator sees that it leaked.
//! - The file is shared by the `token` command and a running control server: every change
//!   is a read-modify-write under an exclusive lock on `tokens.lock`, written by rename.
//!   Records past their expiry by more than a day are dropped on the next write.

use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "mbt_";

/// Why a token was not minted or not accepted. Each refusal is also a metric reason.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("unknown join token")]
    Unknown,
    #[error("the join token expired {0} s ago")]
    Expired(u64),
    #[error("the join token was used already (at unix time {0}); mint a new one")]
    Reused(u64),
    #[error("the join token is for cell `{token}`, the request is for cell `{asked}`")]
    WrongCell { token: String, asked: String },
    #[error("{path}: {source}")]
    Store {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a token store: {source}")]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the system's random number generator failed")]
    Random,
}

impl TokenError {
    /// The metric reason.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Unknown => "token_unknown",
            TokenError::Expired(_) => "token_expired",
            TokenError::Reused(_) => "token_reused",
            TokenError::WrongCell { .. } => "token_wrong_cell",
            TokenError::Store { .. } | TokenError::Format { .. } | TokenError::Random => "internal",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Hex SHA-256 of the token.
    pub(crate) sha256: String,
    pub(crate) cell: String,
    pub(crate) expires_unix: u64,
    pub(crate) used_unix: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    tokens: Vec<Record>,
}

/// The token store in a CA directory.
#[derive(Debug, Clone)]
pub struct TokenStore {
    dir: PathBuf,
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn hash(token: &str) -> String {
    membrane_identity::sha256_hex(token.as_bytes())
}

/// A fresh join token and its hash (the only form in which it is stored).
pub(crate) fn new_token() -> Result<(String, String), TokenError> {
    random_token(PREFIX).ok_or(TokenError::Random)
}

/// 32 random bytes, base64url, after `prefix`, and the token's SHA-256 (hex); `None` when
/// the system's random number generator failed. Join and operator tokens are made so.
pub(crate) fn random_token(prefix: &str) -> Option<(String, String)> {
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).ok()?;
    let token = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let sha256 = hash(&token);
    Some((token, sha256))
}

/// Whether `token` has the form of one (anything else is unknown, unlooked-up).
pub(crate) fn well_formed(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// Uses up `r` for a request from `cell` at `now`, or says why not. A token presented for
/// another cell is not used up (the request is refused, and whoever holds it for the right
/// cell can still join).
pub(crate) fn use_up(r: &mut Record, cell: &str, now: u64) -> Result<(), TokenError> {
    if let Some(at) = r.used_unix {
        return Err(TokenError::Reused(at));
    }
    if r.expires_unix <= now {
        return Err(TokenError::Expired(now - r.expires_unix));
    }
    if r.cell != cell {
        return Err(TokenError::WrongCell {
            token: r.cell.clone(),
            asked: cell.to_owned(),
        });
    }
    r.used_unix = Some(now);
    Ok(())
}

impl TokenStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("tokens.json")
    }

    /// Runs `f` on the stored records under the lock and writes them back when it returns
    /// `Ok`.
    fn change<T>(
        &self,
        f: impl FnOnce(&mut Vec<Record>, u64) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        let io = |path: PathBuf| move |source| TokenError::Store { path, source };
        let lock_path = self.dir.join("tokens.lock");
        let lock = File::create(&lock_path).map_err(io(lock_path.clone()))?;
        lock.lock().map_err(io(lock_path))?;
        let file = self.file();
        let mut stored: Stored = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| TokenError::Format {
                path: file.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(io(file)(e)),
        };
        let now = now_unix();
        let out = f(&mut stored.tokens, now);
        // Refusals change records too (nothing today), so write back either way.
        stored.tokens.retain(|r| r.expires_unix + 86_400 > now);
        let text = serde_json::to_vec_pretty(&stored).unwrap_or_default();
        let tmp = self.dir.join("tokens.json.tmp");
        std::fs::write(&tmp, text).map_err(io(tmp.clone()))?;
        std::fs::rename(&tmp, &file).map_err(io(file))?;
        out
    }

    /// A new token for `cell`, valid for `ttl`.
    pub fn mint(&self, cell: &str, ttl: Duration) -> Result<String, TokenError> {
        let (token, sha256) = new_token()?;
        self.change(|records, now| {
            records.push(Record {
                sha256,
                cell: cell.to_owned(),
                expires_unix: now + ttl.as_secs(),
                used_unix: None,
            });
            Ok(())
        })?;
        Ok(token)
    }

    /// Redeems `token` for a request from `cell`: accepted once, before it expires, for its
    /// own cell only ([`use_up`]).
    pub fn redeem(&self, token: &str, cell: &str) -> Result<(), TokenError> {
        if !well_formed(token) {
            return Err(TokenError::Unknown);
        }
        let sha256 = hash(token);
        self.change(|records, now| {
            let r = records
                .iter_mut()
                .find(|r| r.sha256 == sha256)
                .ok_or(TokenError::Unknown)?;
            use_up(r, cell, now)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_joins_its_own_cell_once_before_it_expires() {
        let dir = std::env::temp_dir().join(format!("membrane-tokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = TokenStore::new(&dir);
        let t = store.mint("orders", Duration::from_secs(600)).unwrap();
        assert!(t.starts_with("mbt_") && t.len() > 40, "{t}");
        let text = std::fs::read_to_string(dir.join("tokens.json")).unwrap();
        assert!(!text.contains(&t[4..]), "the token itself is never stored");

        assert!(matches!(
            store.redeem(&t, "billing"),
            Err(TokenError::WrongCell { .. })
        ));
        store.redeem(&t, "orders").unwrap();
        assert!(matches!(
            store.redeem(&t, "orders"),
            Err(TokenError::Reused(_))
        ));
        assert!(matches!(
            store.redeem("mbt_AAAA", "orders"),
            Err(TokenError::Unknown)
        ));
        assert!(matches!(
            store.redeem("", "orders"),
            Err(TokenError::Unknown)
        ));

        let gone = store.mint("orders", Duration::ZERO).unwrap();
        assert!(matches!(
            store.redeem(&gone, "orders"),
            Err(TokenError::Expired(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
