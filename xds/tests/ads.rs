//! The ADS server over real gRPC streams on 127.0.0.1: state of the world and delta pass the
//! same protocol cases (ACK, NACK, unsubscribe, removal, reconnect), and each node sees only
//! its cell's resources.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use membrane_xds::compile::{Compiled, Resources, TYPE_CLUSTER, TYPE_LISTENER, Versioned};
use membrane_xds::proto::envoy::config::core::v3::Node;
use membrane_xds::proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use membrane_xds::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use membrane_xds::proto::google::rpc::Status as RpcStatus;
use membrane_xds::server::ChannelStream;
use membrane_xds::server::{Ads, AggregatedDiscoveryServiceServer};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

fn res(entries: &[(&str, &str, &str, &str)]) -> Compiled {
    let mut c = Compiled::default();
    for (cell, type_url, name, version) in entries {
        let r: &mut Resources =
            std::sync::Arc::make_mut(c.gateways.entry((*cell).to_owned()).or_default());
        r.insert(
            ((*type_url).to_owned(), (*name).to_owned()),
            Versioned {
                version: (*version).to_owned(),
                resource: prost_types::Any {
                    type_url: (*type_url).to_owned(),
                    value: version.as_bytes().to_vec(),
                },
            },
        );
    }
    c
}

async fn start(initial: Compiled) -> (String, watch::Sender<Arc<Compiled>>, Ads) {
    let (tx, rx) = watch::channel(Arc::new(initial));
    let ads = Ads::new(rx);
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let svc = AggregatedDiscoveryServiceServer::new(ads.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
    });
    (format!("http://{addr}"), tx, ads)
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.into(),
        ..Default::default()
    })
}

async fn next<T>(s: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("a response in time")
        .unwrap()
        .unwrap()
}

async fn nothing_within<T: std::fmt::Debug>(s: &mut tonic::Streaming<T>, ms: u64) {
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(ms), s.message()).await {
        panic!("unexpected message: {m:?}");
    }
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| String::from_utf8(a.value.clone()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_of_the_world_protocol() {
    let (url, publish, ads) = start(res(&[
        ("orders", TYPE_LISTENER, "north", "n1"),
        ("orders", TYPE_LISTENER, "west", "w1"),
        ("orders", TYPE_CLUSTER, "c", "c1"),
        ("billing", TYPE_LISTENER, "west", "bw1"),
    ]))
    .await;
    let mut client = AggregatedDiscoveryServiceClient::connect(url.clone())
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(8);
    let req = |version: &str, nonce: &str, names: &[&str], err: Option<&str>| DiscoveryRequest {
        version_info: version.into(),
        node: node("orders/gw-1"),
        resource_names: names.iter().map(|s| (*s).to_owned()).collect(),
        type_url: TYPE_LISTENER.into(),
        response_nonce: nonce.into(),
        error_detail: err.map(|m| RpcStatus {
            code: 3,
            message: m.into(),
            details: vec![],
        }),
    };
    tx.send(req("", "", &[], None)).await.unwrap();
    let mut s = client
        .stream_aggregated_resources(ChannelStream(rx))
        .await
        .unwrap()
        .into_inner();

    // All of the type, only this cell's.
    let r1 = next(&mut s).await;
    assert_eq!(r1.type_url, TYPE_LISTENER);
    assert_eq!(names(&r1), ["n1", "w1"]);
    tx.send(req(&r1.version_info, &r1.nonce, &[], None))
        .await
        .unwrap();

    // A change: the whole set again, new version; NACKed with a reason.
    publish
        .send(Arc::new(res(&[
            ("orders", TYPE_LISTENER, "north", "n2"),
            ("orders", TYPE_LISTENER, "west", "w1"),
        ])))
        .unwrap();
    let r2 = next(&mut s).await;
    assert_eq!(names(&r2), ["n2", "w1"]);
    assert_ne!(r2.version_info, r1.version_info);
    tx.send(req(
        &r1.version_info,
        &r2.nonce,
        &[],
        Some("bad route in north"),
    ))
    .await
    .unwrap();
    nothing_within(&mut s, 300).await; // the NACKed version is not sent again

    // A stale request (old nonce) is ignored.
    tx.send(req(&r1.version_info, &r1.nonce, &["west"], None))
        .await
        .unwrap();
    nothing_within(&mut s, 300).await;

    // Narrowing the subscription: only the named resource.
    tx.send(req(&r1.version_info, &r2.nonce, &["west"], None))
        .await
        .unwrap();
    let r3 = next(&mut s).await;
    assert_eq!(names(&r3), ["w1"]);
    tx.send(req(&r3.version_info, &r3.nonce, &["west"], None))
        .await
        .unwrap();

    // Removal: the resource is absent from the next full set.
    publish
        .send(Arc::new(res(&[("orders", TYPE_LISTENER, "north", "n3")])))
        .unwrap();
    let r4 = next(&mut s).await;
    assert!(r4.resources.is_empty(), "west removed: {:?}", names(&r4));
    tx.send(req(&r4.version_info, &r4.nonce, &["west"], None))
        .await
        .unwrap();
    // The ACK is recorded (waited for, not slept on).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ads.nodes.snapshot()["orders/gw-1"].types[TYPE_LISTENER].acked_version != r4.version_info
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the ACK was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let status = ads.nodes.snapshot();
    let t = &status["orders/gw-1"].types[TYPE_LISTENER];
    assert_eq!(t.acked_version, r4.version_info);
    assert_eq!(t.nack.as_ref().unwrap().1, "bad route in north");
    assert_eq!(status["orders/gw-1"].streams, 1);

    // Reconnect: a new stream gets the current state at once.
    drop(tx);
    drop(s);
    let (tx, rx) = mpsc::channel(8);
    tx.send(req("", "", &[], None)).await.unwrap();
    let mut s = client
        .stream_aggregated_resources(ChannelStream(rx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&next(&mut s).await), ["n3"]);

    // A node of another cell sees only its cell (and orders' stream, whose set did not
    // change, is sent nothing).
    publish
        .send(Arc::new(res(&[
            ("orders", TYPE_LISTENER, "north", "n3"),
            ("billing", TYPE_LISTENER, "west", "bw2"),
        ])))
        .unwrap();
    let (tx2, rx2) = mpsc::channel(8);
    tx2.send(DiscoveryRequest {
        node: node("billing/gw-1"),
        type_url: TYPE_LISTENER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut s2 = client
        .stream_aggregated_resources(ChannelStream(rx2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&next(&mut s2).await), ["bw2"]);
    drop(tx);
}

fn delta_names(r: &DeltaDiscoveryResponse) -> Vec<(String, String)> {
    r.resources
        .iter()
        .map(|x| (x.name.clone(), x.version.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_protocol() {
    let (url, publish, ads) = start(res(&[
        ("orders", TYPE_LISTENER, "north", "n1"),
        ("orders", TYPE_LISTENER, "west", "w1"),
        ("orders", TYPE_LISTENER, "east", "e1"),
    ]))
    .await;
    let mut client = AggregatedDiscoveryServiceClient::connect(url)
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(8);
    let ack = |nonce: &str, err: Option<&str>| DeltaDiscoveryRequest {
        type_url: TYPE_LISTENER.into(),
        response_nonce: nonce.into(),
        error_detail: err.map(|m| RpcStatus {
            code: 3,
            message: m.into(),
            details: vec![],
        }),
        ..Default::default()
    };
    // Wildcard subscription (empty first subscribe).
    tx.send(DeltaDiscoveryRequest {
        node: node("orders/gw-1"),
        type_url: TYPE_LISTENER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut s = client
        .delta_aggregated_resources(ChannelStream(rx))
        .await
        .unwrap()
        .into_inner();
    let r1 = next(&mut s).await;
    assert_eq!(
        delta_names(&r1),
        [
            ("east".into(), "e1".into()),
            ("north".into(), "n1".into()),
            ("west".into(), "w1".into())
        ]
    );
    tx.send(ack(&r1.nonce, None)).await.unwrap();

    // A change: only the changed resource.
    publish
        .send(Arc::new(res(&[
            ("orders", TYPE_LISTENER, "north", "n2"),
            ("orders", TYPE_LISTENER, "west", "w1"),
            ("orders", TYPE_LISTENER, "east", "e1"),
        ])))
        .unwrap();
    let r2 = next(&mut s).await;
    assert_eq!(delta_names(&r2), [("north".into(), "n2".into())]);
    assert!(r2.removed_resources.is_empty());
    tx.send(ack(&r2.nonce, Some("north: unknown cluster")))
        .await
        .unwrap();
    nothing_within(&mut s, 300).await;

    // Removal.
    publish
        .send(Arc::new(res(&[
            ("orders", TYPE_LISTENER, "north", "n2"),
            ("orders", TYPE_LISTENER, "west", "w1"),
        ])))
        .unwrap();
    let r3 = next(&mut s).await;
    assert!(r3.resources.is_empty());
    assert_eq!(r3.removed_resources, ["east"]);
    tx.send(ack(&r3.nonce, None)).await.unwrap();

    // Leave the wildcard and keep only `west`: a change to north is no longer sent.
    tx.send(DeltaDiscoveryRequest {
        type_url: TYPE_LISTENER.into(),
        resource_names_subscribe: vec!["west".into()],
        resource_names_unsubscribe: vec!["*".into(), "north".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let r4 = next(&mut s).await; // an explicit subscribe is always answered
    assert_eq!(delta_names(&r4), [("west".into(), "w1".into())]);
    publish
        .send(Arc::new(res(&[
            ("orders", TYPE_LISTENER, "north", "n3"),
            ("orders", TYPE_LISTENER, "west", "w1"),
        ])))
        .unwrap();
    nothing_within(&mut s, 300).await;

    let status = ads.nodes.snapshot();
    let t = &status["orders/gw-1"].types[TYPE_LISTENER];
    assert_eq!(t.nack.as_ref().unwrap().1, "north: unknown cluster");
    assert_eq!(status["orders/gw-1"].protocol, "delta");

    // Reconnect with what the client kept: north at an old version, west current, and
    // `gone`, which no longer exists. Only north is sent; gone is removed.
    drop(tx);
    drop(s);
    let (tx, rx) = mpsc::channel(8);
    tx.send(DeltaDiscoveryRequest {
        node: node("orders/gw-1"),
        type_url: TYPE_LISTENER.into(),
        initial_resource_versions: HashMap::from([
            ("north".into(), "n1".into()),
            ("west".into(), "w1".into()),
            ("gone".into(), "g1".into()),
        ]),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut s = client
        .delta_aggregated_resources(ChannelStream(rx))
        .await
        .unwrap()
        .into_inner();
    let r5 = next(&mut s).await;
    assert_eq!(delta_names(&r5), [("north".into(), "n3".into())]);
    assert_eq!(r5.removed_resources, ["gone"]);
    drop(tx);
}
