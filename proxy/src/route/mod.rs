//! Route selection: listener → virtual host (by host) → first route whose path, method and
//! headers all match, in the order the routes were written (Envoy's semantics).
//!
//! The table is compiled once per config generation into indexes, so that selecting a route
//! costs about the same with ten routes as with ten thousand: a hash lookup for the host, a
//! hash lookup for exact paths, one walk of a radix tree for prefixes, and a scan only of the
//! regex routes that come before the best match found so far.

mod host_index;
mod matchers;
mod prefix_trie;

pub use host_index::{DomainError, DomainPattern, HostIndex, strip_port};
pub use matchers::{HeaderMatcher, HeaderRule, PathMatch};

use http::{HeaderMap, Method};
use prefix_trie::PrefixTrie;
use rustc_hash::FxHashMap;

/// One route with its action `A` (the proxy's action, or anything a test or bench needs).
#[derive(Debug, Clone)]
pub struct Route<A> {
    pub path: PathMatch,
    /// Empty means any method.
    pub methods: Box<[Method]>,
    pub headers: Box<[HeaderMatcher]>,
    pub action: A,
}

impl<A> Route<A> {
    #[inline]
    fn matches_rest(&self, req: &RequestView<'_>) -> bool {
        (self.methods.is_empty() || self.methods.contains(req.method))
            && self.headers.iter().all(|h| h.matches(req.headers))
    }
}

/// What route selection looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Lower case, without port.
    pub host: &'a str,
    /// Without the query.
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

/// The routes of one virtual host with their path index.
#[derive(Debug, Clone)]
pub struct VirtualHost<A> {
    pub name: Box<str>,
    routes: Vec<Route<A>>,
    exact: FxHashMap<Box<str>, Vec<u32>>,
    prefixes: PrefixTrie,
    regexes: Vec<u32>,
    /// All regex routes in one automaton: one pass over the path finds every regex that
    /// matches, instead of one pass per route. `None` if the set would be too large, in
    /// which case the regexes are tried one by one.
    regex_set: Option<regex::RegexSet>,
}

impl<A> VirtualHost<A> {
    pub fn new(name: impl Into<Box<str>>, routes: Vec<Route<A>>) -> Self {
        let mut exact: FxHashMap<Box<str>, Vec<u32>> = FxHashMap::default();
        let mut prefixes = PrefixTrie::default();
        let mut regexes = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let i = i as u32;
            match &r.path {
                PathMatch::Exact(p) => exact.entry(p.clone()).or_default().push(i),
                PathMatch::Prefix(p) => prefixes.insert(p.as_bytes(), i),
                PathMatch::Regex(_) => regexes.push(i),
            }
        }
        let regex_set =
            if regexes.len() > 1 {
                regex::RegexSet::new(regexes.iter().filter_map(
                    |&i| match &routes[i as usize].path {
                        PathMatch::Regex(re) => Some(re.as_str()),
                        _ => None,
                    },
                ))
                .ok()
            } else {
                None
            };
        Self {
            name: name.into(),
            routes,
            exact,
            prefixes,
            regexes,
            regex_set,
        }
    }

    pub fn routes(&self) -> &[Route<A>] {
        &self.routes
    }

    /// The first route, in config order, that matches the request.
    #[inline]
    pub fn find(&self, req: &RequestView<'_>) -> Option<&Route<A>> {
        let mut best = u32::MAX;
        let routes = &self.routes;
        // Each candidate list is ascending, so the first hit in a list is that list's best.
        let mut consider = |list: &[u32]| {
            for &i in list {
                if i >= best {
                    break;
                }
                if routes[i as usize].matches_rest(req) {
                    best = i;
                    break;
                }
            }
        };
        if !self.exact.is_empty()
            && let Some(list) = self.exact.get(req.path)
        {
            consider(list);
        }
        self.prefixes.walk(req.path.as_bytes(), |list| {
            consider(list);
            true
        });
        if self.regexes.first().is_some_and(|&first| first < best) {
            match &self.regex_set {
                Some(set) => {
                    for k in set.matches(req.path).iter() {
                        let i = self.regexes[k];
                        if i >= best {
                            break;
                        }
                        if routes[i as usize].matches_rest(req) {
                            best = i;
                            break;
                        }
                    }
                }
                None => {
                    for &i in &self.regexes {
                        if i >= best {
                            break;
                        }
                        let r = &routes[i as usize];
                        if let PathMatch::Regex(re) = &r.path
                            && r.matches_rest(req)
                            && re.is_match(req.path)
                        {
                            best = i;
                            break;
                        }
                    }
                }
            }
        }
        routes.get(best as usize)
    }
}

/// All virtual hosts of one listener.
#[derive(Debug, Clone, Default)]
pub struct RouteTable<A> {
    hosts: HostIndex,
    vhosts: Vec<VirtualHost<A>>,
}

/// A domain claimed by two virtual hosts of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateDomain {
    pub vhost: usize,
    pub domain: usize,
}

impl<A> RouteTable<A> {
    /// Builds the table; each virtual host comes with its domain patterns.
    pub fn new(vhosts: Vec<(Vec<DomainPattern>, VirtualHost<A>)>) -> Result<Self, DuplicateDomain> {
        let mut hosts = HostIndex::default();
        let mut list = Vec::with_capacity(vhosts.len());
        for (vi, (domains, vh)) in vhosts.into_iter().enumerate() {
            for (di, d) in domains.into_iter().enumerate() {
                if !hosts.insert(d, vi as u32) {
                    return Err(DuplicateDomain {
                        vhost: vi,
                        domain: di,
                    });
                }
            }
            list.push(vh);
        }
        Ok(Self {
            hosts,
            vhosts: list,
        })
    }

    pub fn vhosts(&self) -> &[VirtualHost<A>] {
        &self.vhosts
    }

    #[inline]
    pub fn find(&self, req: &RequestView<'_>) -> Option<&Route<A>> {
        let v = self.hosts.find(req.host)?;
        self.vhosts[v as usize].find(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn route(path: PathMatch, methods: &[Method], action: u32) -> Route<u32> {
        Route {
            path,
            methods: methods.into(),
            headers: Box::new([]),
            action,
        }
    }

    fn req<'a>(path: &'a str, method: &'a Method, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            host: "x",
            path,
            method,
            headers,
        }
    }

    #[test]
    fn first_match_in_config_order_wins_across_match_kinds() {
        let vh = VirtualHost::new(
            "v",
            vec![
                route(PathMatch::full_regex("/users/[0-9]+").unwrap(), &[], 0),
                route(PathMatch::Prefix("/users".into()), &[Method::POST], 1),
                route(PathMatch::Exact("/users/me".into()), &[], 2),
                route(PathMatch::Prefix("/users".into()), &[], 3),
                route(PathMatch::Prefix("".into()), &[], 4),
            ],
        );
        let h = HeaderMap::new();
        let get = Method::GET;
        let post = Method::POST;
        let f = |p, m| vh.find(&req(p, m, &h)).map(|r| r.action);
        assert_eq!(f("/users/42", &get), Some(0));
        assert_eq!(f("/users/4x", &get), Some(3));
        assert_eq!(f("/users/me", &post), Some(1));
        assert_eq!(f("/users/me", &get), Some(2));
        assert_eq!(f("/other", &get), Some(4));
    }

    #[test]
    fn header_conditions_select_between_equal_paths() {
        let mut canary = route(PathMatch::Prefix("/".into()), &[], 0);
        canary.headers = Box::new([HeaderMatcher {
            name: http::header::HeaderName::from_static("x-canary"),
            rule: HeaderRule::Exact(b"1".as_slice().into()),
            invert: false,
        }]);
        let vh = VirtualHost::new(
            "v",
            vec![canary, route(PathMatch::Prefix("/".into()), &[], 1)],
        );
        let mut h = HeaderMap::new();
        assert_eq!(vh.find(&req("/a", &Method::GET, &h)).unwrap().action, 1);
        h.insert("x-canary", HeaderValue::from_static("1"));
        assert_eq!(vh.find(&req("/a", &Method::GET, &h)).unwrap().action, 0);
    }

    #[test]
    fn indexed_lookup_agrees_with_a_linear_scan() {
        let mut rng = fastrand::Rng::with_seed(11);
        let segs = ["/a", "/b", "/ab", "/", "/a/b"];
        let methods = [Method::GET, Method::POST];
        for _ in 0..100 {
            let n = rng.usize(1..30);
            let routes: Vec<Route<u32>> = (0..n)
                .map(|i| {
                    let p = segs[rng.usize(0..segs.len())];
                    let path = match rng.usize(0..3) {
                        0 => PathMatch::Exact(p.into()),
                        1 => PathMatch::Prefix(p.into()),
                        _ => PathMatch::full_regex(&format!("{p}.*")).unwrap(),
                    };
                    let m: Vec<Method> = if rng.bool() {
                        vec![methods[rng.usize(0..2)].clone()]
                    } else {
                        vec![]
                    };
                    route(path, &m, i as u32)
                })
                .collect();
            let vh = VirtualHost::new("v", routes.clone());
            let h = HeaderMap::new();
            for _ in 0..30 {
                let path: String = (0..rng.usize(1..3))
                    .map(|_| segs[rng.usize(0..segs.len())])
                    .collect();
                let m = &methods[rng.usize(0..2)];
                let r = req(&path, m, &h);
                let naive = routes.iter().find(|rt| {
                    let path_ok = match &rt.path {
                        PathMatch::Exact(p) => **p == path,
                        PathMatch::Prefix(p) => path.starts_with(&**p),
                        PathMatch::Regex(re) => re.is_match(&path),
                    };
                    path_ok && rt.matches_rest(&r)
                });
                assert_eq!(vh.find(&r).map(|x| x.action), naive.map(|x| x.action));
            }
        }
    }

    #[test]
    fn table_picks_vhost_by_host_and_refuses_duplicates() {
        let vh = |a| VirtualHost::new("v", vec![route(PathMatch::Prefix("".into()), &[], a)]);
        let t = RouteTable::new(vec![
            (vec![DomainPattern::parse("*.x.com").unwrap()], vh(0)),
            (vec![DomainPattern::Any], vh(1)),
        ])
        .unwrap();
        let h = HeaderMap::new();
        let mut r = req("/", &Method::GET, &h);
        r.host = "a.x.com";
        assert_eq!(t.find(&r).unwrap().action, 0);
        r.host = "y.com";
        assert_eq!(t.find(&r).unwrap().action, 1);
        let dup = RouteTable::new(vec![
            (vec![DomainPattern::Any], vh(0)),
            (
                vec![DomainPattern::parse("a").unwrap(), DomainPattern::Any],
                vh(1),
            ),
        ]);
        assert_eq!(
            dup.unwrap_err(),
            DuplicateDomain {
                vhost: 1,
                domain: 1
            }
        );
    }
}
