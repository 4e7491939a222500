use http::header::{HeaderMap, HeaderName};
use regex::Regex;

/// How a route matches the request path (the part before `?`). Paths are case-sensitive.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(Box<str>),
    /// A plain string prefix, as in Envoy: `/api` also matches `/apiv2`.
    Prefix(Box<str>),
    /// Must match the whole path; anchors are added when compiled.
    Regex(Regex),
}

impl PathMatch {
    /// A regex that must match the whole path, as Envoy's `safe_regex` does.
    pub fn full_regex(pattern: &str) -> Result<Self, regex::Error> {
        Ok(PathMatch::Regex(Regex::new(&format!("^(?:{pattern})$"))?))
    }
}

#[derive(Debug, Clone)]
pub enum HeaderRule {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Regex(Regex),
    /// `true`: the header must be there; `false`: it must be absent.
    Present(bool),
}

/// One header condition. With several values of one header, the first is tested.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    pub name: HeaderName,
    pub rule: HeaderRule,
    pub invert: bool,
}

impl HeaderMatcher {
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let value = headers.get(&self.name);
        let hit = match (&self.rule, value) {
            (HeaderRule::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (HeaderRule::Exact(e), Some(v)) => v.as_bytes() == &e[..],
            (HeaderRule::Prefix(p), Some(v)) => v.as_bytes().starts_with(p),
            (HeaderRule::Regex(r), Some(v)) => v.to_str().is_ok_and(|s| r.is_match(s)),
        };
        hit != self.invert
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn header_rules_and_inversion() {
        let mut h = HeaderMap::new();
        h.insert("x-env", HeaderValue::from_static("canary-1"));
        let m = |rule, invert| HeaderMatcher {
            name: HeaderName::from_static("x-env"),
            rule,
            invert,
        };
        assert!(m(HeaderRule::Exact(b"canary-1".as_slice().into()), false).matches(&h));
        assert!(!m(HeaderRule::Exact(b"canary".as_slice().into()), false).matches(&h));
        assert!(m(HeaderRule::Prefix(b"canary".as_slice().into()), false).matches(&h));
        assert!(m(HeaderRule::Regex(Regex::new("^c.*1$").unwrap()), false).matches(&h));
        assert!(m(HeaderRule::Present(true), false).matches(&h));
        assert!(!m(HeaderRule::Present(false), false).matches(&h));
        assert!(m(HeaderRule::Present(false), true).matches(&h));
        assert!(!m(HeaderRule::Exact(b"x".as_slice().into()), false).matches(&HeaderMap::new()));
        assert!(m(HeaderRule::Exact(b"x".as_slice().into()), true).matches(&HeaderMap::new()));
    }
}
