//! The part of etcd's v3 gRPC API the spec store uses (KV Range, Put, DeleteRange; Watch),
//! as prost messages written here with etcd's field numbers (`etcdserverpb`, `mvccpb`),
//! over tonic. Written rather than generated: the `etcd-client` crate compiles etcd's
//! protos with `protoc` at build time, which would make protoc a prerequisite of every
//! build of Membrane, the newcomer's first `cargo run` included.

use membrane_api::stream::ChannelStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// `mvccpb.KeyValue`
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    pub more: bool,
    #[prost(int64, tag = "4")]
    pub count: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub deleted: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchCreateRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub start_revision: i64,
}

/// `WatchRequest`: the `create_request` arm of its `request_union` only.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchRequest {
    #[prost(message, optional, tag = "1")]
    pub create_request: Option<WatchCreateRequest>,
}

/// `mvccpb.Event` (type: 0 put, 1 delete).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub kv: Option<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub watch_id: i64,
    #[prost(bool, tag = "3")]
    pub created: bool,
    #[prost(bool, tag = "4")]
    pub canceled: bool,
    #[prost(int64, tag = "5")]
    pub compact_revision: i64,
    #[prost(string, tag = "6")]
    pub cancel_reason: String,
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
}

/// `Compare`: its `target_union` as the one arm used (`mod_revision`, target MOD = 2;
/// result EQUAL = 0, LESS = 2); a oneof arm is encoded as the optional field of its tag.
/// With a `range_end`, every key of the range must satisfy the comparison.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Compare {
    #[prost(int32, tag = "1")]
    pub result: i32,
    #[prost(int32, tag = "2")]
    pub target: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    #[prost(int64, optional, tag = "6")]
    pub mod_revision: Option<i64>,
    #[prost(bytes = "vec", tag = "64")]
    pub range_end: Vec<u8>,
}

pub const EQUAL: i32 = 0;
pub const LESS: i32 = 2;
pub const MOD: i32 = 2;

/// `RequestOp`: its `request_put` and `request_delete_range` arms.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestOp {
    #[prost(message, optional, tag = "2")]
    pub request_put: Option<PutRequest>,
    #[prost(message, optional, tag = "3")]
    pub request_delete_range: Option<DeleteRangeRequest>,
}

impl RequestOp {
    pub fn put(key: &[u8], value: &[u8]) -> Self {
        Self {
            request_put: Some(PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
            }),
            request_delete_range: None,
        }
    }
    pub fn delete(key: &[u8]) -> Self {
        Self {
            request_put: None,
            request_delete_range: Some(DeleteRangeRequest {
                key: key.to_vec(),
                range_end: Vec::new(),
            }),
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnRequest {
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
    #[prost(message, repeated, tag = "3")]
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
}

/// The end of the range of keys that start with `prefix` (its last byte below 0xff
/// incremented, the bytes after it dropped), as etcd's clients compute it.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: every key from the prefix on.
    vec![0]
}

/// A connection to one etcd member.
#[derive(Clone)]
pub struct EtcdClient {
    grpc: tonic::client::Grpc<Channel>,
}

type WatchParts = (
    tokio::sync::mpsc::Sender<WatchRequest>,
    tonic::Streaming<WatchResponse>,
);

impl EtcdClient {
    pub fn new(channel: Channel) -> Self {
        Self {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    async fn unary<Q, R>(&mut self, path: &'static str, req: Q) -> Result<R, tonic::Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Q, R>::default();
        let resp = self
            .grpc
            .unary(
                tonic::Request::new(req),
                PathAndQuery::from_static(path),
                codec,
            )
            .await?;
        Ok(resp.into_inner())
    }

    pub async fn range_prefix(&mut self, prefix: &[u8]) -> Result<RangeResponse, tonic::Status> {
        let req = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
        };
        self.unary("/etcdserverpb.KV/Range", req).await
    }

    /// One key, when it exists.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>, tonic::Status> {
        let req = RangeRequest {
            key: key.to_vec(),
            range_end: Vec::new(),
        };
        let resp: RangeResponse = self.unary("/etcdserverpb.KV/Range", req).await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// Writes `value` at `key` only if the key was last modified at `mod_revision` (0: if
    /// it does not exist): a compare-and-swap. Whether it was written.
    pub async fn put_if(
        &mut self,
        key: &[u8],
        value: &[u8],
        mod_revision: i64,
    ) -> Result<bool, tonic::Status> {
        let compare = vec![Compare {
            result: EQUAL,
            target: MOD,
            key: key.to_vec(),
            mod_revision: Some(mod_revision),
            range_end: Vec::new(),
        }];
        let resp = self.txn(compare, vec![RequestOp::put(key, value)]).await?;
        Ok(resp.succeeded)
    }

    /// `success` if every comparison holds, atomically; `succeeded` says which.
    pub async fn txn(
        &mut self,
        compare: Vec<Compare>,
        success: Vec<RequestOp>,
    ) -> Result<TxnResponse, tonic::Status> {
        let req = TxnRequest {
            compare,
            success,
            failure: Vec::new(),
        };
        self.unary("/etcdserverpb.KV/Txn", req).await
    }

    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<PutResponse, tonic::Status> {
        let req = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.unary("/etcdserverpb.KV/Put", req).await
    }

    pub async fn delete(&mut self, key: &[u8]) -> Result<DeleteRangeResponse, tonic::Status> {
        let req = DeleteRangeRequest {
            key: key.to_vec(),
            range_end: Vec::new(),
        };
        self.unary("/etcdserverpb.KV/DeleteRange", req).await
    }

    /// Watches the keys under `prefix`; the sender returned keeps the request side open
    /// (a watch ends with its client's stream).
    pub async fn watch_prefix(&mut self, prefix: &[u8]) -> Result<WatchParts, tonic::Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let create = WatchRequest {
            create_request: Some(WatchCreateRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                start_revision: 0,
            }),
        };
        tx.send(create)
            .await
            .map_err(|_| tonic::Status::internal("the watch request channel closed"))?;
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<WatchRequest, WatchResponse>::default();
        let resp = self
            .grpc
            .streaming(
                tonic::Request::new(ChannelStream(rx)),
                PathAndQuery::from_static("/etcdserverpb.Watch/Watch"),
                codec,
            )
            .await?;
        Ok((tx, resp.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/membrane/"), b"/membrane0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
