//! xDS conformance: the rules of Envoy's `xds_protocol` document that an independent client
//! relies on, checked over real gRPC streams on 127.0.0.1 with messages built only from the
//! discovery service's published protos. Each rule has its own test; where a rule applies to
//! both variants (state of the world and delta), both are checked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use membrane_xds::compile::{Compiled, Resources, TYPE_CLUSTER, TYPE_LISTENER, Versioned};
use membrane_xds::proto::envoy::config::core::v3::Node;
use membrane_xds::proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient as Client;
use membrane_xds::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use membrane_xds::proto::google::rpc::Status as RpcStatus;
use membrane_xds::server::{Ads, ChannelStream};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tonic::Code;
use tonic::transport::Channel;

/// `orders` has two listeners and a cluster; `billing` one listener.
fn world() -> Compiled {
    let mut c = Compiled::default();
    for (cell, type_url, name, version) in [
        ("orders", TYPE_LISTENER, "north", "n1"),
        ("orders", TYPE_LISTENER, "west", "w1"),
        ("orders", TYPE_CLUSTER, "c", "c1"),
        ("billing", TYPE_LISTENER, "west", "bw1"),
    ] {
        let r: &mut Resources =
            std::sync::Arc::make_mut(c.gateways.entry(cell.to_owned()).or_default());
        r.insert(
            (type_url.to_owned(), name.to_owned()),
            Versioned {
                version: version.to_owned(),
                resource: prost_types::Any {
                    type_url: type_url.to_owned(),
                    value: version.as_bytes().to_vec(),
                },
            },
        );
    }
    c
}

struct Server {
    url: String,
    ads: Ads,
    _publish: watch::Sender<Arc<Compiled>>,
}

async fn server() -> Server {
    let (publish, rx) = watch::channel(Arc::new(world()));
    let ads = Ads::new(rx);
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", incoming.local_addr().unwrap());
    let svc = membrane_xds::server::service(ads.clone());
    tokio::spawn(
        membrane_xds::server::transport()
            .add_service(svc)
            .serve_with_incoming(incoming),
    );
    Server {
        url,
        ads,
        _publish: publish,
    }
}

async fn client(url: &str) -> Client<Channel> {
    Client::connect(url.to_owned()).await.unwrap()
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.into(),
        ..Default::default()
    })
}

fn sotw(node_id: Option<&str>, type_url: &str, names: &[&str], nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node_id.and_then(node),
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| (*s).to_owned()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn delta(node_id: Option<&str>, type_url: &str, subscribe: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: node_id.and_then(node),
        type_url: type_url.into(),
        resource_names_subscribe: subscribe.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

type Sotw = (
    mpsc::Sender<DiscoveryRequest>,
    tonic::Streaming<DiscoveryResponse>,
);

async fn open_sotw(c: &mut Client<Channel>, first: DiscoveryRequest) -> Sotw {
    let (tx, rx) = mpsc::channel(8);
    tx.send(first).await.unwrap();
    let s = c
        .stream_aggregated_resources(ChannelStream(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, s)
}

type Delta = (
    mpsc::Sender<DeltaDiscoveryRequest>,
    tonic::Streaming<DeltaDiscoveryResponse>,
);

async fn open_delta(c: &mut Client<Channel>, first: DeltaDiscoveryRequest) -> Delta {
    let (tx, rx) = mpsc::channel(8);
    tx.send(first).await.unwrap();
    let s = c
        .delta_aggregated_resources(ChannelStream(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, s)
}

/// The next message, or the status that ended the stream.
async fn next<T>(s: &mut tonic::Streaming<T>) -> Result<T, tonic::Status> {
    match tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("an answer in time")
    {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(tonic::Status::ok("the stream ended with OK")),
        Err(status) => Err(status),
    }
}

async fn silent<T: std::fmt::Debug>(s: &mut tonic::Streaming<T>) {
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), s.message()).await {
        panic!("unexpected: {m:?}");
    }
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| String::from_utf8(a.value.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn sotw_an_explicit_star_is_the_wildcard_not_a_name() {
    let srv = server().await;
    let mut c = client(&srv.url).await;
    let (_tx, mut s) =
        open_sotw(&mut c, sotw(Some("orders/gw-1"), TYPE_LISTENER, &["*"], "")).await;
    assert_eq!(names(&next(&mut s).await.unwrap()), ["n1", "w1"]);
    // `*` with a name is still everything.
    let (_tx, mut s) = open_sotw(
        &mut c,
        sotw(Some("orders/gw-2"), TYPE_LISTENER, &["*", "west"], ""),
    )
    .await;
    assert_eq!(names(&next(&mut s).await.unwrap()), ["n1", "w1"]);
}

#[tokio::test]
async fn sotw_an_empty_list_after_names_unsubscribes() {
    let srv = server().await;
    let mut c = client(&srv.url).await;
    let (tx, mut s) = open_sotw(
        &mut c,
        sotw(Some("orders/gw-1"), TYPE_LISTENER, &["west"], ""),
    )
    .await;
    let r = next(&mut s).await.unwrap();
    assert_eq!(names(&r), ["w1"]);
    tx.send(sotw(None, TYPE_LISTENER, &[], &r.nonce))
        .await
        .unwrap();
    let r = next(&mut s).await.unwrap();
    assert!(r.resources.is_empty(), "everything again: {:?}", names(&r));
}

#[tokio::test]
async fn sotw_the_legacy_wildcard_holds_while_acks_name_nothing() {
    let srv = server().await;
    let mut c = client(&srv.url).await;
    let (tx, mut s) = open_sotw(&mut c, sotw(Some("orders/gw-1"), TYPE_LISTENER, &[], "")).await;
    let r = next(&mut s).await.unwrap();
    assert_eq!(names(&r), ["n1", "w1"]);
    // The ACK names nothing, as Envoy's do: still subscribed to everything, nothing re-sent.
    tx.send(sotw(None, TYPE_LISTENER, &[], &r.nonce))
        .await
        .unwrap();
    silent(&mut s).await;
    let status = srv.ads.nodes.snapshot();
    assert_eq!(
        status["orders/gw-1"].types[TYPE_LISTENER].acked_version,
        r.version_info
    );
}

#[tokio::test]
async fn sotw_a_first_request_with_another_types_nonce_is_answered() {
    let srv = server().await;
    let mut c = client(&srv.url).await;
    let (tx, mut s) = open_sotw(&mut c, sotw(Some("orders/gw-1"), TYPE_LISTENER, &[], "")).await;
    let r = next(&mut s).await.unwrap();
    // The cluster type's first request carries the listener response's nonce (or a stale one
    // from an earlier stream): a new subscription all the same.
    tx.send(sotw(None, TYPE_CLUSTER, &[], &r.nonce))
        .await
        .unwrap();
    let r = next(&mut s).await.unwrap();
    assert_eq!(r.type_url, TYPE_CLUSTER);
    assert_eq!(names(&r), ["c1"]);
    tx.send(sotw(None, TYPE_CLUSTER, &[], "no-such-nonce"))
        .await
        .unwrap();
    silent(&mut s).await;
}

#[tokio::test]
async fn delta_a_first_request_with_another_types_nonce_is_answered() {
    let srv = server().await;
    let mut c = client(&srv.url).await;
    let (tx, mut s) = open_delta(&mut c, delta(Some("orders/gw-1"), TYPE_LISTENER, &[])).await;
    let r = next(&mut s).await.unwrap();
    let mut req = delta(None, TYPE_CLUSTER, &[]);
    req.response_nonce = r.nonce.clone();
    tx.send(req).await.unwrap();
    let r = next(&mut s).await.unwrap();
    assert_eq!(r.type_url, TYPE_CLUSTER);
    assert_eq!(r.resources.len(), 1);
}

#[tokio::test]
async fn sotw_a_nack_refuses_the_version_sent_with_its_nonce() {
    let srv = server().await;
    let mut c = client(&srv.url).await;
    let (tx, mut s) = open_sotw(&mut c, sotw(Some("orders/gw-1"), TYPE_LISTENER, &[], "")).await;
    let r = next(&mut s).await.unwrap();
    // The client says it still has nothing (or anything else) in version_info.
    let mut nack = sotw(None, TYPE_LISTENER, &[], &r.nonce);
    nack.version_info = "what-the-client-still-has".into();
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "north: bad".into(),
        details: vec![],
    });
    tx.send(nack).await.unwrap();
    silent(&mut s).await;
    let t = srv.ads.nodes.snapshot()["orders/gw-1"].types[TYPE_LISTENER].clone();
    assert_eq!(
        t.nack,
        Some((r.version_info.clone(), "north: bad".to_owned()))
    );
    assert_eq!(t.acked_version, "");
}

#[tokio::test]
async fn delta_a_name_that_does_not_exist_is_said_removed() {
    let srv = server().await;
    let mut c = client(&srv.url).await;
    let (tx, mut s) = open_delta(
        &mut c,
        delta(Some("orders/gw-1"), TYPE_LISTENER, &["west", "nowhere"]),
    )
    .await;
    let r = next(&mut s).await.unwrap();
    assert_eq!(r.resources.len(), 1);
    assert_eq!(r.resources[0].name, "west");
    assert_eq!(r.removed_resources, ["nowhere"]);
    // Subscribing later to another absent name: said too.
    let mut more = delta(None, TYPE_LISTENER, &["gone"]);
    more.response_nonce = r.nonce.clone();
    tx.send(more).await.unwrap();
    let r = next(&mut s).await.unwrap();
    assert!(r.resources.is_empty());
    assert_eq!(r.removed_resources, ["gone"]);
}

/// The status a stream opened with `id` ends with, on both variants.
async fn refused(url: &str, id: Option<&str>) -> [tonic::Status; 2] {
    let mut c = client(url).await;
    let (_tx, mut s) = open_sotw(&mut c, sotw(id, TYPE_LISTENER, &[], "")).await;
    let a = next(&mut s).await.expect_err("refused");
    let (_tx, mut s) = open_delta(&mut c, delta(id, TYPE_LISTENER, &[])).await;
    let b = next(&mut s).await.expect_err("refused");
    [a, b]
}

#[tokio::test]
async fn node_ids_that_name_no_cell_or_no_instance_are_refused() {
    let srv = server().await;
    for st in refused(&srv.url, Some("payments/gw-1")).await {
        assert_eq!(st.code(), Code::NotFound, "{st:?}");
        assert!(st.message().contains("payments"), "{st:?}");
    }
    for id in [
        Some("orders"),
        Some("orders/"),
        None,
        Some("orders/a b"),
        Some("a\"}/x"),
    ] {
        for st in refused(&srv.url, id).await {
            assert_eq!(st.code(), Code::InvalidArgument, "{id:?}: {st:?}");
        }
    }
    // None of them is in the node table.
    assert!(srv.ads.nodes.snapshot().is_empty());
}

#[tokio::test]
async fn a_node_cannot_open_streams_without_end() {
    let srv = server().await;
    let mut c = client(&srv.url).await;
    let mut open = Vec::new();
    let limit = srv.ads.nodes.limits.max_streams_per_node;
    for _ in 0..limit {
        let (tx, mut s) = open_delta(&mut c, delta(Some("orders/gw-1"), TYPE_LISTENER, &[])).await;
        next(&mut s).await.unwrap();
        open.push((tx, s));
    }
    let (_tx, mut s) = open_delta(&mut c, delta(Some("orders/gw-1"), TYPE_LISTENER, &[])).await;
    let st = next(&mut s).await.expect_err("over the limit");
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    // Another node is not affected.
    let (_tx, mut s) = open_delta(&mut c, delta(Some("orders/gw-2"), TYPE_LISTENER, &[])).await;
    next(&mut s).await.unwrap();
}

#[tokio::test]
async fn an_oversized_request_ends_the_stream_with_a_non_ok_status() {
    let srv = server().await;
    let mut c = client(&srv.url).await;
    let mut big = sotw(Some("orders/gw-1"), TYPE_LISTENER, &[], "");
    big.version_info = "x".repeat(membrane_xds::server::MAX_REQUEST_BYTES + 1);
    let (_tx, mut s) = open_sotw(&mut c, big).await;
    let st = next(&mut s).await.expect_err("refused");
    assert_ne!(st.code(), Code::Ok, "{st:?}");
    let mut big = delta(Some("orders/gw-1"), TYPE_LISTENER, &[]);
    big.resource_names_subscribe = vec!["y".repeat(membrane_xds::server::MAX_REQUEST_BYTES + 1)];
    let (_tx, mut s) = open_delta(&mut c, big).await;
    let st = next(&mut s).await.expect_err("refused");
    assert_ne!(st.code(), Code::Ok, "{st:?}");
}

/// A gRPC request whose message is not a valid protobuf, sent as raw HTTP/2: the server's
/// answer ends with a non-OK `grpc-status`.
async fn garbage(url: &str, method: &str) -> String {
    use http_body_util::BodyExt;
    let addr = url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // Field 1 (a string) claims 100 bytes and has 3: not a message.
    let payload = [0x0au8, 100, b'a', b'b', b'c'];
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    let req = http::Request::post(format!(
        "http://{addr}/envoy.service.discovery.v3.AggregatedDiscoveryService/{method}"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
    .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let collected = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("an answer in time")
        .unwrap();
    let from_trailers = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned());
    let from_headers = parts
        .headers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    from_trailers
        .or(from_headers)
        .unwrap_or_else(|| "none".into())
}

#[tokio::test]
async fn a_request_that_does_not_decode_ends_the_stream_with_a_non_ok_status() {
    let srv = server().await;
    for method in ["StreamAggregatedResources", "DeltaAggregatedResources"] {
        let status = garbage(&srv.url, method).await;
        assert!(
            status != "0" && status != "none",
            "{method}: grpc-status {status}"
        );
    }
}
