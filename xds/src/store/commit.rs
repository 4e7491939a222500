//! Changes to the store as the control API makes them: read everything at one revision,
//! then write a set of documents only if nothing under the prefix changed since (a
//! compare-and-swap on the store revision), so that two operators' changes never lose one
//! another and every change was validated against the state it lands on.
//!
//! etcd's range comparison sees keys written or created since the revision, not keys
//! deleted: the API's own deletes also bump `<prefix>#api/serial`, compared beside it.
//! A key deleted outside the API (`etcdctl del`) between a read and a write goes unseen;
//! the written set is still validated as a whole by every control server before serving.

use super::etcd_wire::{Compare, EQUAL, LESS, MOD, RequestOp, prefix_end};
use super::{Etcd, StoreError};

/// The spec documents at one revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The store revision they were read at.
    pub revision: i64,
    /// `(name under the prefix, text)`, every key ending in `.yaml`/`.yml`, in key order.
    pub documents: Vec<(String, String)>,
    serial: i64,
}

/// One write of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put { name: String, text: String },
    Delete { name: String },
}

impl Etcd {
    /// Every spec document and the revision they were read at, in one read.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut c = self.connect().await?;
        let (revision, documents) = self.spec_documents(&mut c).await?;
        // The serial is read after the range: a delete between the two makes the commit
        // fail and be retried, never pass unseen.
        let serial = c
            .get(self.serial_key().as_bytes())
            .await
            .map_err(|e| self.err(e.message().to_owned()))?
            .map_or(0, |kv| kv.mod_revision);
        Ok(Snapshot {
            revision,
            documents,
            serial,
        })
    }

    fn serial_key(&self) -> String {
        self.side_key("api", "serial")
    }

    /// Makes `writes` if no spec key changed since `base` was read (or since `revision`,
    /// when the caller read at an earlier one). The new store revision, or `None` when
    /// another writer got there first.
    pub async fn commit(
        &self,
        base: &Snapshot,
        revision: Option<i64>,
        writes: &[Write],
    ) -> Result<Option<i64>, StoreError> {
        let since = revision.unwrap_or(base.revision);
        let prefix = self.prefix.as_bytes();
        let serial = self.serial_key();
        let compare = vec![
            Compare {
                result: LESS,
                target: MOD,
                key: prefix.to_vec(),
                mod_revision: Some(since + 1),
                range_end: prefix_end(prefix),
            },
            Compare {
                result: EQUAL,
                target: MOD,
                key: serial.as_bytes().to_vec(),
                mod_revision: Some(base.serial),
                range_end: Vec::new(),
            },
        ];
        let mut ops: Vec<RequestOp> = writes
            .iter()
            .map(|w| match w {
                Write::Put { name, text } => {
                    RequestOp::put(format!("{}{name}", self.prefix).as_bytes(), text.as_bytes())
                }
                Write::Delete { name } => {
                    RequestOp::delete(format!("{}{name}", self.prefix).as_bytes())
                }
            })
            .collect();
        ops.push(RequestOp::put(serial.as_bytes(), b""));
        let mut c = self.connect().await?;
        let resp = c
            .txn(compare, ops)
            .await
            .map_err(|e| self.err(e.message().to_owned()))?;
        Ok(resp
            .succeeded
            .then(|| resp.header.map_or(0, |h| h.revision)))
    }

    /// Writes one record under `<prefix>#<area>/<name>`.
    pub async fn put_side(&self, area: &str, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut c = self.connect().await?;
        c.put(self.side_key(area, name).as_bytes(), value)
            .await
            .map_err(|e| self.err(e.message().to_owned()))?;
        Ok(())
    }

    /// Every record under `<prefix>#<area>/`, in key order.
    pub async fn side_records(&self, area: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut c = self.connect().await?;
        let resp = c
            .range_prefix(self.side_key(area, "").as_bytes())
            .await
            .map_err(|e| self.err(e.message().to_owned()))?;
        Ok(resp.kvs.into_iter().map(|kv| kv.value).collect())
    }
}
