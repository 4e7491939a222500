//! Join tokens kept in the spec store (etcd) instead of the CA directory, so that every
//! control server on one prefix redeems the tokens any of them, or `membrane control token
//! --store`, minted: each record is one key (`<prefix>#tokens/<sha256>`), and a token is
//! used up by a compare-and-swap on that key's revision, so two replicas presented the same
//! token accept it once between them. The rules are the directory store's
//! ([`super::tokens::use_up`]).

use super::tokens::{
    Record, TokenError, TokenStore, hash, new_token, now_unix, use_up, well_formed,
};
use crate::store::Etcd;
use std::path::PathBuf;
use std::time::Duration;

/// Where a control server's join tokens are kept.
#[derive(Debug, Clone)]
pub enum Tokens {
    Dir(TokenStore),
    Etcd(Etcd),
}

fn store_err(e: impl std::fmt::Display) -> TokenError {
    TokenError::Store {
        path: PathBuf::from("etcd"),
        source: std::io::Error::other(e.to_string()),
    }
}

/// The directory store's calls block (a file lock): they run on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TokenError> + Send + 'static,
) -> Result<T, TokenError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TokenError::Store {
            path: PathBuf::from("tokens.json"),
            source: std::io::Error::other(e.to_string()),
        })?
}

fn format_err(key: &str, source: serde_json::Error) -> TokenError {
    TokenError::Format {
        path: PathBuf::from(format!("etcd:{key}")),
        source,
    }
}

impl Tokens {
    /// A new token for `cell`, valid for `ttl`.
    pub async fn mint(&self, cell: &str, ttl: Duration) -> Result<String, TokenError> {
        match self {
            Tokens::Dir(d) => {
                let (d, cell) = (d.clone(), cell.to_owned());
                blocking(move || d.mint(&cell, ttl)).await
            }
            Tokens::Etcd(e) => {
                let (token, sha256) = new_token()?;
                let key = e.side_key("tokens", &sha256);
                let record = Record {
                    sha256,
                    cell: cell.to_owned(),
                    expires_unix: now_unix() + ttl.as_secs(),
                    used_unix: None,
                };
                let bytes = serde_json::to_vec(&record).map_err(|s| format_err(&key, s))?;
                if !e.put_key_if(&key, &bytes, 0).await.map_err(store_err)? {
                    // 256 random bits met an existing hash: not in this universe.
                    return Err(TokenError::Random);
                }
                Ok(token)
            }
        }
    }

    /// Redeems `token` for a request from `cell` (once, before it expires, for its own
    /// cell only).
    pub async fn redeem(&self, token: &str, cell: &str) -> Result<(), TokenError> {
        match self {
            Tokens::Dir(d) => {
                let (d, token, cell) = (d.clone(), token.to_owned(), cell.to_owned());
                blocking(move || d.redeem(&token, &cell)).await
            }
            Tokens::Etcd(e) => {
                if !well_formed(token) {
                    return Err(TokenError::Unknown);
                }
                let key = e.side_key("tokens", &hash(token));
                // A lost race is tried again: the record then says it was used.
                for _ in 0..8 {
                    let Some((bytes, revision)) = e.get_key(&key).await.map_err(store_err)? else {
                        return Err(TokenError::Unknown);
                    };
                    let mut r: Record =
                        serde_json::from_slice(&bytes).map_err(|s| format_err(&key, s))?;
                    use_up(&mut r, cell, now_unix())?;
                    let bytes = serde_json::to_vec(&r).map_err(|s| format_err(&key, s))?;
                    if e.put_key_if(&key, &bytes, revision)
                        .await
                        .map_err(store_err)?
                    {
                        return Ok(());
                    }
                }
                Err(store_err("the token's record kept changing"))
            }
        }
    }
}
