//! An OTLP/gRPC trace receiver (tonic, with the `opentelemetry-proto` types) that keeps
//! every span it is sent, and helpers to read them.

use super::eventually;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
pub use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;

/// A span and its resource's attributes (`service.name`, `membrane.cell`).
#[derive(Clone, Debug)]
pub struct Got {
    pub span: Span,
    pub resource: Vec<(String, String)>,
}

/// The spans received, and how many spans each export request held.
#[derive(Clone, Default)]
pub struct Receiver(Arc<Mutex<Vec<Got>>>, Arc<Mutex<Vec<usize>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        let before = got.len();
        for rs in req.into_inner().resource_spans {
            let resource: Vec<(String, String)> = rs
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|kv| match kv.value?.value? {
                    Any::StringValue(s) => Some((kv.key, s)),
                    _ => None,
                })
                .collect();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    got.push(Got {
                        span,
                        resource: resource.clone(),
                    });
                }
            }
        }
        self.1.lock().unwrap().push(got.len() - before);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    pub async fn start() -> (Self, SocketAddr) {
        let r = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = TraceServiceServer::new(r.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream_incoming(listener))
                .await
                .unwrap();
        });
        (r, addr)
    }

    /// The number of spans in each export request, in the order they came.
    pub fn requests(&self) -> Vec<usize> {
        self.1.lock().unwrap().clone()
    }

    pub fn spans(&self) -> Vec<Got> {
        self.0.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, what: &str, n: usize, f: impl Fn(&Got) -> bool) -> Vec<Got> {
        eventually(what, Duration::from_secs(20), || {
            let ok = self.spans().iter().filter(|g| f(g)).count() >= n;
            async move { ok }
        })
        .await;
        self.spans().into_iter().filter(|g| f(g)).collect()
    }
}

/// tonic's incoming stream from a bound listener.
fn tokio_stream_incoming(
    listener: tokio::net::TcpListener,
) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
}

pub fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Any> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

pub fn attr_str<'a>(s: &'a Span, key: &str) -> Option<&'a str> {
    match attr(s, key)? {
        Any::StringValue(v) => Some(v),
        _ => None,
    }
}

pub fn attr_int(s: &Span, key: &str) -> Option<i64> {
    match attr(s, key)? {
        Any::IntValue(v) => Some(*v),
        _ => None,
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
