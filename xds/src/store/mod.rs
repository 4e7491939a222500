//! Where the specs come from: a directory (GitOps: what `membrane check` reads) or etcd.
//!
//! In etcd (`etcd://host:port[,host:port...]/prefix`), each key under the prefix that ends
//! in `.yaml` or `.yml` holds one file's text (`/membrane/orders.yaml`), and errors name
//! the key as their file (`etcd:/membrane/orders.yaml:3:5`). Any change under the prefix
//! asks for a recompile. Several control servers watch one prefix and compile the same
//! resources (versions are content hashes), so a gateway may use any of them.
//!
//! Files that specs name (a JWKS file, a trust bundle) are still read from the local
//! directory given with the store (`--config-dir`), as they are with a directory store.
//!
//! Assumption: no TLS or authentication to etcd yet (a loopback or private-network etcd, as
//! in the tests); that is the next step. Several endpoints are tried in order.

mod commit;
mod etcd_wire;

pub use commit::{Snapshot, Write};

use etcd_wire::EtcdClient;
use std::time::Duration;
use tokio::sync::mpsc;

/// An etcd prefix holding specs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etcd {
    pub endpoints: Vec<String>,
    /// Starts and ends with `/` (`/membrane/`).
    pub prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{0}`: give etcd://host:port[,host:port...]/prefix")]
    Url(String),
    #[error("etcd at {endpoints}: {reason}")]
    Etcd { endpoints: String, reason: String },
    #[error("etcd key {key}: not UTF-8 text")]
    NotText { key: String },
}

impl Etcd {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::Url(url.to_owned());
        let rest = url.strip_prefix("etcd://").ok_or_else(bad)?;
        let (hosts, prefix) = rest.split_once('/').ok_or_else(bad)?;
        let endpoints: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("http://{h}"))
            .collect();
        let prefix = prefix.trim_matches('/');
        if endpoints.is_empty() || prefix.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            endpoints,
            prefix: format!("/{prefix}/"),
        })
    }

    fn err(&self, source: impl std::fmt::Display) -> StoreError {
        StoreError::Etcd {
            endpoints: self.endpoints.join(","),
            reason: source.to_string(),
        }
    }

    /// A connection to the first endpoint that answers.
    async fn connect(&self) -> Result<EtcdClient, StoreError> {
        let mut last = String::new();
        for e in &self.endpoints {
            let endpoint = match tonic::transport::Endpoint::from_shared(e.clone()) {
                Ok(ep) => ep
                    .connect_timeout(Duration::from_secs(3))
                    .timeout(Duration::from_secs(5)),
                Err(err) => {
                    last = err.to_string();
                    continue;
                }
            };
            match endpoint.connect().await {
                Ok(ch) => return Ok(EtcdClient::new(ch)),
                Err(err) => last = format!("{e}: {err}"),
            }
        }
        Err(self.err(last))
    }

    /// The spec documents under the prefix, `(name, text)` in key order; names are
    /// `etcd:<key>`.
    pub async fn documents(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut c = self.connect().await?;
        let (_, docs) = self.spec_documents(&mut c).await?;
        Ok(docs
            .into_iter()
            .map(|(name, text)| (format!("etcd:{}{name}", self.prefix), text))
            .collect())
    }

    /// The revision read at, and every key under the prefix ending in `.yaml`/`.yml` as
    /// `(name under the prefix, text)`, in key order.
    async fn spec_documents(
        &self,
        c: &mut EtcdClient,
    ) -> Result<(i64, Vec<(String, String)>), StoreError> {
        let resp = c
            .range_prefix(self.prefix.as_bytes())
            .await
            .map_err(|e| self.err(e.message().to_owned()))?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        let mut docs = Vec::new();
        for kv in resp.kvs {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            let Some(name) = key.strip_prefix(&self.prefix) else {
                continue;
            };
            if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
                continue;
            }
            let name = name.to_owned();
            let text = String::from_utf8(kv.value).map_err(|_| StoreError::NotText { key })?;
            docs.push((name, text));
        }
        // etcd answers in key order; said here, not relied on.
        docs.sort();
        Ok((revision, docs))
    }

    /// Writes one document (`name` is the key under the prefix: `orders.yaml`).
    pub async fn put(&self, name: &str, text: &str) -> Result<(), StoreError> {
        let mut c = self.connect().await?;
        c.put(format!("{}{name}", self.prefix).as_bytes(), text.as_bytes())
            .await
            .map_err(|e| self.err(e.message().to_owned()))?;
        Ok(())
    }

    /// Removes one document.
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let mut c = self.connect().await?;
        c.delete(format!("{}{name}", self.prefix).as_bytes())
            .await
            .map_err(|e| self.err(e.message().to_owned()))?;
        Ok(())
    }

    /// A key outside the specs' range that belongs with them: `<prefix>#<area>/<name>`
    /// (`/membrane/prod#tokens/<hash>`). `#` sorts before `/`, so such keys are neither
    /// loaded as specs nor seen by the specs' watch.
    pub fn side_key(&self, area: &str, name: &str) -> String {
        format!("{}#{area}/{name}", self.prefix.trim_end_matches('/'))
    }

    /// One key's value and the revision it was last written at, when it exists.
    pub async fn get_key(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
        let mut c = self.connect().await?;
        let kv = c
            .get(key.as_bytes())
            .await
            .map_err(|e| self.err(e.message().to_owned()))?;
        Ok(kv.map(|kv| (kv.value, kv.mod_revision)))
    }

    /// Writes `value` at `key` if it was last written at `revision` (0: if it does not
    /// exist); whether it was written (another writer got there first when not).
    pub async fn put_key_if(
        &self,
        key: &str,
        value: &[u8],
        revision: i64,
    ) -> Result<bool, StoreError> {
        let mut c = self.connect().await?;
        c.put_if(key.as_bytes(), value, revision)
            .await
            .map_err(|e| self.err(e.message().to_owned()))
    }

    /// Watches the prefix: every change, and every (re)connection of the watch (changes
    /// may have been missed before it, the first time too), sends on `changed`. Reconnects
    /// with backoff while etcd is away; ends when `changed` is closed.
    pub async fn watch(self, changed: mpsc::UnboundedSender<()>) {
        let mut backoff = Duration::from_millis(250);
        while !changed.is_closed() {
            match self.watch_once(&changed).await {
                Ok(()) => backoff = Duration::from_millis(250),
                Err(e) => {
                    tracing::warn!(error = %e, "watching the spec store failed; retrying (the last good specs keep being served)");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    async fn watch_once(&self, changed: &mpsc::UnboundedSender<()>) -> Result<(), StoreError> {
        let mut c = self.connect().await?;
        let (_keep, mut stream) = c
            .watch_prefix(self.prefix.as_bytes())
            .await
            .map_err(|e| self.err(e.message().to_owned()))?;
        let _ = changed.send(());
        while let Some(resp) = stream
            .message()
            .await
            .map_err(|e| self.err(e.message().to_owned()))?
        {
            if resp.canceled {
                return Err(self.err(format!("the watch was cancelled: {}", resp.cancel_reason)));
            }
            if !resp.events.is_empty() && changed.send(()).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = Etcd::parse("etcd://127.0.0.1:2379,10.0.0.2:2379/membrane/prod").unwrap();
        assert_eq!(
            e.endpoints,
            ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(e.prefix, "/membrane/prod/");
        for bad in [
            "etcd://127.0.0.1:2379",
            "etcd:///x",
            "http://h:1/x",
            "etcd://h:1/",
        ] {
            assert!(Etcd::parse(bad).is_err(), "{bad}");
        }
    }
}
