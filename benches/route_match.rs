//! Route selection with 10,000 routes. Target: under 200 ns per match.
#![allow(clippy::unwrap_used)]
//!
//! `cargo bench --bench route_match`

use divan::{Bencher, black_box};
use http::{HeaderMap, Method};
use membrane_proxy::route::{
    DomainPattern, PathMatch, RequestView, Route, RouteTable, VirtualHost,
};

fn main() {
    divan::main();
}

fn route(path: PathMatch, action: u32) -> Route<u32> {
    Route {
        path,
        methods: Box::new([]),
        headers: Box::new([]),
        action,
    }
}

/// One virtual host with 10,000 routes: 5,000 prefixes, 4,900 exact paths, and 100 regexes
/// at the end, the way a large generated config looks.
fn one_host_10k() -> RouteTable<u32> {
    let mut routes = Vec::with_capacity(10_000);
    for i in 0..5_000u32 {
        routes.push(route(
            PathMatch::Exact(format!("/api/v1/svc-{i}/health").into()),
            i * 2,
        ));
        routes.push(route(
            PathMatch::Prefix(format!("/api/v1/svc-{i}/").into()),
            i * 2 + 1,
        ));
    }
    routes.truncate(9_900);
    for i in 0..100u32 {
        routes.push(route(
            PathMatch::full_regex(&format!("/regex-{i}/[0-9]+")).unwrap(),
            20_000 + i,
        ));
    }
    RouteTable::new(vec![(
        vec![DomainPattern::Any],
        VirtualHost::new("all", routes),
    )])
    .unwrap()
}

/// 1,000 virtual hosts (exact and wildcard names) with 10 routes each.
fn many_hosts_10k() -> RouteTable<u32> {
    let mut vhosts = Vec::new();
    for h in 0..1_000u32 {
        let routes = (0..10u32)
            .map(|r| route(PathMatch::Prefix(format!("/r{r}/").into()), h * 10 + r))
            .collect();
        let domain = if h % 2 == 0 {
            format!("svc-{h}.cell.example.com")
        } else {
            format!("*.svc-{h}.example.com")
        };
        vhosts.push((
            vec![DomainPattern::parse(&domain).unwrap()],
            VirtualHost::new("v", routes),
        ));
    }
    RouteTable::new(vhosts).unwrap()
}

fn bench_match(b: Bencher, table: &RouteTable<u32>, host: &str, path: &str, want: Option<u32>) {
    let headers = HeaderMap::new();
    let method = Method::GET;
    let view = RequestView {
        host,
        path,
        method: &method,
        headers: &headers,
    };
    assert_eq!(table.find(&view).map(|r| r.action), want, "{host}{path}");
    b.bench(|| black_box(table).find(black_box(&view)).map(|r| r.action));
}

#[divan::bench]
fn prefix_hit(b: Bencher) {
    let t = one_host_10k();
    bench_match(
        b,
        &t,
        "api.example.com",
        "/api/v1/svc-2500/orders/42",
        Some(5001),
    );
}

#[divan::bench]
fn exact_hit(b: Bencher) {
    let t = one_host_10k();
    bench_match(
        b,
        &t,
        "api.example.com",
        "/api/v1/svc-4000/health",
        Some(8000),
    );
}

#[divan::bench]
fn miss(b: Bencher) {
    let t = one_host_10k();
    bench_match(b, &t, "api.example.com", "/nothing/here", None);
}

/// The worst case: only a regex route matches, so all 100 regexes before it are tried.
#[divan::bench]
fn regex_last(b: Bencher) {
    let t = one_host_10k();
    bench_match(b, &t, "api.example.com", "/regex-99/123", Some(20_099));
}

#[divan::bench]
fn wildcard_host_among_1000(b: Bencher) {
    let t = many_hosts_10k();
    bench_match(b, &t, "a.svc-501.example.com", "/r7/x", Some(5017));
}

#[divan::bench]
fn exact_host_among_1000(b: Bencher) {
    let t = many_hosts_10k();
    bench_match(b, &t, "svc-500.cell.example.com", "/r3/x", Some(5003));
}
