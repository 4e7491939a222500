//! Traces over real sockets: an OTLP/gRPC receiver (tonic, with the `opentelemetry-proto`
//! types) takes the spans of two gateways in a row and of refusals; a collector that never
//! answers makes the exporter's queue drop spans while requests go on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::otlp::{Any, CLIENT, Receiver, SERVER, attr_int, attr_str, hex};
use common::*;
use membrane_proxy::testing::{Upstream, start_proxy};
use membrane_telemetry::TraceParent;
use std::net::SocketAddr;
use std::time::Duration;

fn tracing_yaml(collector: SocketAddr, cell: &str, ratio: f64) -> String {
    format!(
        "tracing: {{otlp_endpoint: 'http://{collector}', sample_ratio: {ratio}, flush_interval: 20ms, cell: {cell}}}\n"
    )
}

/// billing's east gateway calls orders' west gateway, which calls the orders service: one
/// trace with four spans, each the parent of the next, and the service sees the last
/// client span as its parent. East starts a new trace (its default without client
/// certificates) linked to the caller's; west continues it (`trace_context: continue`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_two_gateways_is_one_trace_of_parent_and_child_spans() {
    let (rx, collector) = Receiver::start().await;
    let up = Upstream::start("orders").await;
    let (west_port, east_port) = (closed_port(), closed_port());
    let (west, _) = start_proxy(&format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\n{}listeners:\n  - name: west\n    address: 127.0.0.1:{west_port}\n    trace_context: continue\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: orders-api, forward: {{cluster: orders-svc}}}}]}}]\nclusters: [{{name: orders-svc, endpoints: ['{}']}}]\n",
        tracing_yaml(collector, "orders", 1.0),
        up.addr
    ));
    let (east, _) = start_proxy(&format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\n{}listeners:\n  - name: east\n    address: 127.0.0.1:{east_port}\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: to-orders, forward: {{cluster: orders}}}}]}}]\nclusters: [{{name: orders, endpoints: ['127.0.0.1:{west_port}']}}]\n",
        tracing_yaml(collector, "billing", 1.0),
    ));
    let c = client_h1();
    let url = format!("http://127.0.0.1:{east_port}/orders/7?token=secret");
    eventually("the gateways answer", Duration::from_secs(20), || {
        let (c, url) = (c.clone(), url.clone());
        async move { get(&c, &url, "orders", &[]).await.status == 200 }
    })
    .await;
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let reply = get(
        &c,
        &url,
        "orders",
        &[("traceparent", incoming), ("tracestate", "vendor=abc")],
    )
    .await;
    assert_eq!(reply.status, 200);
    let echoed: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    // East restarted the trace: the caller's `tracestate` is not this trace's.
    assert!(echoed["headers"]["tracestate"].is_null(), "{echoed}");
    let seen = echoed["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = TraceParent::parse(seen.as_bytes()).unwrap();
    let trace = seen.trace_id;
    assert_ne!(
        trace.hex(),
        "0af7651916cd43dd8448eb211c80319c",
        "east restarts the caller's trace"
    );
    assert!(seen.sampled());

    let spans = rx
        .wait_for("four spans of the trace", 4, |g| g.span.trace_id == trace.0)
        .await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let find = |cell: &str, kind: i32| {
        spans
            .iter()
            .find(|g| {
                g.span.kind == kind && g.resource.contains(&("membrane.cell".into(), cell.into()))
            })
            .unwrap_or_else(|| panic!("no {kind} span of {cell}: {spans:#?}"))
            .span
            .clone()
    };
    let (east_server, east_client) = (find("billing", SERVER), find("billing", CLIENT));
    let (west_server, west_client) = (find("orders", SERVER), find("orders", CLIENT));
    // East: a new trace, linked to the caller's context.
    assert!(east_server.parent_span_id.is_empty());
    assert_eq!(east_server.links.len(), 1);
    assert_eq!(
        east_server.links[0].span_id,
        vec![0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]
    );
    assert_eq!(east_client.parent_span_id, east_server.span_id);
    // West continues: its server span is east's client span's child.
    assert_eq!(west_server.parent_span_id, east_client.span_id);
    assert!(west_server.links.is_empty());
    assert_eq!(west_client.parent_span_id, west_server.span_id);
    // The service's parent is west's client span.
    assert_eq!(west_client.span_id, seen.parent_id.0.to_vec());

    // Attributes, by OpenTelemetry's HTTP conventions and Membrane's own.
    assert_eq!(east_server.name, "GET to-orders");
    assert_eq!(attr_str(&east_server, "http.request.method"), Some("GET"));
    assert_eq!(attr_str(&east_server, "url.path"), Some("/orders/7"));
    assert_eq!(
        attr_int(&east_server, "http.response.status_code"),
        Some(200)
    );
    assert_eq!(attr_str(&east_server, "membrane.listener"), Some("east"));
    assert_eq!(attr_str(&east_server, "membrane.route"), Some("to-orders"));
    assert_eq!(attr_str(&east_server, "membrane.cluster"), Some("orders"));
    assert_eq!(attr_str(&east_server, "membrane.cell"), Some("billing"));
    assert_eq!(attr_str(&west_server, "membrane.listener"), Some("west"));
    assert_eq!(
        attr_int(&west_client, "server.port"),
        Some(i64::from(up.addr.port()))
    );
    assert_eq!(
        attr_int(&east_client, "server.port"),
        Some(i64::from(west_port))
    );
    assert!(
        spans
            .iter()
            .all(|g| g.span.end_time_unix_nano >= g.span.start_time_unix_nano)
    );
    assert!(east_server.start_time_unix_nano <= east_client.start_time_unix_nano);
    assert!(east_client.end_time_unix_nano <= east_server.end_time_unix_nano);
    // No span carries the query (tokens travel there).
    for g in &spans {
        for kv in &g.span.attributes {
            if let Some(Any::StringValue(v)) = kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                assert!(!v.contains("secret"), "{}: {v}", kv.key);
            }
        }
    }
    // The trace is the exemplar of its latency bucket, in OpenMetrics only.
    let metrics = format!("http://{}/metrics", east.admin_addr());
    let om = get(
        &c,
        &metrics,
        "admin",
        &[("accept", "application/openmetrics-text; version=1.0.0")],
    )
    .await
    .text();
    let tagged = format!("# {{trace_id=\"{}\"}}", trace.hex());
    assert!(
        om.lines().any(
            |l| l.starts_with("membrane_request_duration_seconds_bucket{")
                && l.contains("route=\"to-orders\"")
                && l.contains(&tagged)
        ),
        "{om}"
    );
    let classic = get(&c, &metrics, "admin", &[]).await.text();
    assert!(!classic.contains("trace_id="), "{classic}");
    // West continues a caller's context, `tracestate` included, and sends one
    // `traceparent`: the caller's trace with west's client span as the parent.
    let direct = format!("http://127.0.0.1:{west_port}/orders/8");
    let reply = get(
        &c,
        &direct,
        "orders",
        &[("traceparent", incoming), ("tracestate", "vendor=abc")],
    )
    .await;
    let echoed: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(echoed["headers"]["tracestate"], "vendor=abc", "{echoed}");
    let tp = echoed["headers"]["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && tp.ends_with("-01"),
        "{tp}"
    );
    assert!(
        !tp.contains("b7ad6b7169203331"),
        "the caller's span is not the parent"
    );
    east.shutdown().await;
    west.shutdown().await;
}

/// A retried request has a client span per attempt: the attempt refused by a dead
/// endpoint with its error and that endpoint, then the one answered, both children of the
/// server span; the upstream's parent is the attempt that reached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_upstream_attempt_is_a_client_span_of_its_own() {
    let (rx, collector) = Receiver::start().await;
    let up = Upstream::start("orders").await;
    let (port, dead) = (closed_port(), closed_port());
    let (gw, _) = start_proxy(&format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\n{}listeners:\n  - name: north\n    address: 127.0.0.1:{port}\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, forward: {{cluster: orders}}}}]}}]\nclusters: [{{name: orders, endpoints: ['127.0.0.1:{dead}', '{}'], retries: {{retry_on: [connect_failure], max_retries: 1, backoff_base: 1ms, backoff_max: 2ms}}}}]\n",
        tracing_yaml(collector, "orders", 1.0),
        up.addr
    ));
    let c = client_h1();
    let url = format!("http://127.0.0.1:{port}/o");
    eventually("the gateway answers", Duration::from_secs(20), || {
        let (c, url) = (c.clone(), url.clone());
        async move { get(&c, &url, "orders", &[]).await.status == 200 }
    })
    .await;
    // Round robin over two endpoints: one of two requests goes to the dead one first.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let reply = get(&c, &url, "orders", &[]).await;
        assert_eq!(reply.status, 200);
        let echoed: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        let tp = echoed["headers"]["traceparent"]
            .as_str()
            .unwrap()
            .to_owned();
        seen.push(TraceParent::parse(tp.as_bytes()).unwrap());
    }
    let mut retried = None;
    for tp in &seen {
        let spans = rx
            .wait_for("a request's spans", 2, |g| g.span.trace_id == tp.trace_id.0)
            .await;
        // Spans of one request arrive together.
        if spans.len() == 3 {
            retried = Some((tp, spans));
        }
    }
    let (tp, spans) = retried.expect("one request of two was retried");
    let server = spans
        .iter()
        .find(|g| g.span.kind == SERVER)
        .unwrap()
        .span
        .clone();
    let mut clients: Vec<_> = spans
        .iter()
        .filter(|g| g.span.kind == CLIENT)
        .map(|g| g.span.clone())
        .collect();
    clients.sort_by_key(|s| s.start_time_unix_nano);
    let (first, second) = (&clients[0], &clients[1]);
    assert!(clients.iter().all(|s| s.parent_span_id == server.span_id));
    assert_ne!(first.span_id, second.span_id);
    assert_eq!(attr_int(first, "server.port"), Some(i64::from(dead)));
    assert_eq!(
        attr_str(first, "error.type"),
        Some("upstream_connect_refused")
    );
    assert_eq!(first.status.as_ref().map(|s| s.code), Some(2));
    assert_eq!(
        attr_int(second, "server.port"),
        Some(i64::from(up.addr.port()))
    );
    assert_eq!(attr_int(second, "http.response.status_code"), Some(200));
    assert_eq!(attr_str(second, "membrane.cluster"), Some("orders"));
    assert!(first.end_time_unix_nano <= second.start_time_unix_nano);
    assert!(second.end_time_unix_nano <= server.end_time_unix_nano);
    // The upstream saw the second attempt as its parent.
    assert_eq!(second.span_id, tp.parent_id.0.to_vec());
    // Attempt latency counts every attempt: each request's, and each retry.
    let admin = gw.admin_addr();
    let requests = metric_sum(admin, "membrane_requests_total").await;
    let retries = metric_sum(admin, "membrane_upstream_retries_total").await;
    let attempts = metric_sum(admin, "membrane_upstream_request_duration_seconds_count").await;
    assert!(retries >= 1.0);
    assert_eq!(attempts, requests + retries);
    gw.shutdown().await;
}

/// Nothing is sampled, but refusals are always recorded: a 429 and a 404 are spans with
/// their reason, and the JSON error names the trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_spans_with_their_reason_even_when_not_sampled() {
    let (rx, collector) = Receiver::start().await;
    let port = closed_port();
    let (gw, _) = start_proxy(&format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\n{}listeners:\n  - name: north\n    address: 127.0.0.1:{port}\n    virtual_hosts:\n      - name: v\n        domains: [api]\n        routes:\n          - {{name: limited, rate_limit: {{requests: 1, per: 60s}}, direct_response: {{status: 200, body: ok}}}}\n",
        tracing_yaml(collector, "orders", 0.0),
    ));
    let c = client_h1();
    let url = format!("http://127.0.0.1:{port}/x");
    eventually("the gateway answers", Duration::from_secs(20), || {
        let (c, url) = (c.clone(), url.clone());
        async move { get(&c, &url, "api", &[]).await.status == 200 }
    })
    .await;
    let limited = get(&c, &url, "api", &[]).await;
    assert_eq!(limited.status, 429);
    let unrouted = get(&c, &url, "nowhere", &[]).await;
    assert_eq!(unrouted.status, 404);
    for (reply, code, status) in [(limited, "rate_limited", 429), (unrouted, "no_route", 404)] {
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"], code);
        let trace = body["trace_id"].as_str().expect("no trace_id").to_owned();
        let got = rx
            .wait_for(code, 1, |g| {
                attr_str(&g.span, "error.type") == Some(code) && hex(&g.span.trace_id) == trace
            })
            .await;
        let s = &got[0].span;
        assert_eq!(s.kind, SERVER);
        assert_eq!(attr_int(s, "http.response.status_code"), Some(status));
        assert_eq!(attr_str(s, "membrane.error.code"), Some(code));
        if code == "rate_limited" {
            assert_eq!(attr_str(s, "membrane.ratelimit.outcome"), Some("limited"));
        }
    }
    // The allowed request (not sampled, not failed) made no span.
    assert!(
        rx.spans()
            .iter()
            .all(|g| attr_str(&g.span, "error.type").is_some()),
        "an allowed request was recorded at ratio 0"
    );
    gw.shutdown().await;
}

/// A collector that accepts connections and never answers: the exporter waits on its one
/// batch, the queue (2 spans) fills, and further spans are dropped and counted while every
/// request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_export_queue_drops_spans_and_requests_go_on() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let port = closed_port();
    let (gw, _) = start_proxy(&format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\ntracing: {{otlp_endpoint: 'http://{collector}', sample_ratio: 1.0, queue_size: 2, batch_size: 1, flush_interval: 10ms}}\nlisteners:\n  - name: north\n    address: 127.0.0.1:{port}\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, direct_response: {{status: 200, body: ok}}}}]}}]\n",
    ));
    let c = client_h1();
    let url = format!("http://127.0.0.1:{port}/");
    let mut ok = 0;
    for _ in 0..200 {
        if get(&c, &url, "x", &[]).await.status == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 200);
    let admin = gw.admin_addr();
    let text = get(&c, &format!("http://{admin}/metrics"), "admin", &[])
        .await
        .text();
    let dropped = parse_metrics(&text)
        .get("membrane_trace_spans_dropped_total{reason=\"queue_full\"}")
        .copied()
        .unwrap_or(0.0);
    assert!(dropped >= 190.0, "dropped {dropped}:\n{text}");
    gw.shutdown().await;
    held.abort();
}

/// Spans still queued when the gateway stops are sent before it is done: with a flush
/// interval far longer than the test, every request's span arrives, once the gateway has
/// shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_spans_are_sent_when_the_gateway_stops() {
    let (rx, collector) = Receiver::start().await;
    let port = closed_port();
    let (gw, _) = start_proxy(&format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\ntracing: {{otlp_endpoint: 'http://{collector}', sample_ratio: 1.0, flush_interval: 1h}}\nlisteners:\n  - name: north\n    address: 127.0.0.1:{port}\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, direct_response: {{status: 200, body: ok}}}}]}}]\n",
    ));
    let c = client_h1();
    let url = format!("http://127.0.0.1:{port}/");
    eventually("the gateway answers", Duration::from_secs(20), || {
        let (c, url) = (c.clone(), url.clone());
        async move { get(&c, &url, "x", &[]).await.status == 200 }
    })
    .await;
    for _ in 0..5 {
        assert_eq!(get(&c, &url, "x", &[]).await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.spans().is_empty(), "sent before the interval");
    gw.shutdown().await;
    let n = rx.spans().iter().filter(|g| g.span.kind == SERVER).count();
    assert!(n >= 6, "{n} server spans after the stop");
}

/// Spans written by several threads go out in requests of at most `batch` spans, every one
/// of them once, with the attributes and ids they were written with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_sends_every_span_once_in_batches_of_at_most_batch() {
    use membrane_telemetry::{
        Counters, ExportConfig, Exporter, Kind, SpanId, SpanRecord, TraceId, Value,
    };
    let (rx, collector) = Receiver::start().await;
    let counters = Counters::default();
    let exporter = std::sync::Arc::new(
        Exporter::start(
            ExportConfig {
                endpoint: format!("http://{collector}"),
                resource: vec![("service.name".into(), "batch-test".into())],
                queue: 1000,
                batch: 7,
                interval: Duration::from_secs(60),
                timeout: Duration::from_secs(5),
            },
            counters.clone(),
        )
        .unwrap(),
    );
    let trace_id = TraceId::random();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let e = exporter.clone();
            std::thread::spawn(move || {
                for i in 0..25i64 {
                    e.record(SpanRecord {
                        trace_id,
                        span_id: SpanId::random(),
                        parent: None,
                        trace_state: None,
                        name: format!("span {t}/{i}"),
                        kind: Kind::Internal,
                        start_unix_nanos: 1,
                        end_unix_nanos: 2,
                        attributes: vec![("n", Value::Int(t * 100 + i))],
                        error: None,
                        link: None,
                    });
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    exporter.flush(Duration::from_secs(10));
    let got = rx.spans();
    let mut ns: Vec<i64> = got.iter().filter_map(|g| attr_int(&g.span, "n")).collect();
    ns.sort_unstable();
    let want: Vec<i64> = (0..4)
        .flat_map(|t| (0..25).map(move |i| t * 100 + i))
        .collect();
    assert_eq!(ns, want, "every span once");
    assert!(got.iter().all(|g| g.span.trace_id == trace_id.0));
    assert!(got.iter().all(|g| g.span.name
        == format!(
            "span {}/{}",
            attr_int(&g.span, "n").unwrap() / 100,
            attr_int(&g.span, "n").unwrap() % 100
        )));
    let requests = rx.requests();
    assert!(requests.iter().all(|n| (1..=7).contains(n)), "{requests:?}");
    assert!(requests.len() >= 100usize.div_ceil(7), "{requests:?}");
    assert_eq!(counters.exported.get(), 100);
}
