//! Targets the gateway makes: the path a rewriting route sends upstream, and a redirect's
//! `Location`.

use super::body::RequestBody;
use super::error::ProxyError;
use crate::snapshot::Rewrite;
use bytes::Bytes;
use http::Request;
use http::header;
use http::uri::{PathAndQuery, Uri};

/// A redirect's `Location`: the route's scheme, host and path where given, the request's
/// otherwise; the query is kept.
pub(super) fn redirect_location(
    req: &Request<RequestBody>,
    scheme: &Option<Box<str>>,
    host: &Option<Box<str>>,
    path: &Option<Box<str>>,
) -> String {
    let scheme = scheme.as_deref().unwrap_or("http");
    let host = host.as_deref().unwrap_or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
    });
    let p = path.as_deref().unwrap_or(req.uri().path());
    match req.uri().query() {
        Some(q) => format!("{scheme}://{host}{p}?{q}"),
        None => format!("{scheme}://{host}{p}"),
    }
}

/// The path a rewriting route sends upstream: the matched prefix replaced, the rest and the
/// query kept, and the result normalized by the listener's rules (a rewrite to `/` of the
/// prefix `/api` would otherwise send `//x` for `/api/x`).
pub(super) fn rewritten_path(
    uri: &Uri,
    rewrite: Option<&Rewrite>,
    rules: &crate::normalize::PathRules,
) -> Result<PathAndQuery, ProxyError> {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let Some(Rewrite { strip, with }) = rewrite else {
        return Ok(original);
    };
    let path = original.path();
    let rest = path.get(*strip..).unwrap_or("");
    let mut joined = String::with_capacity(with.len() + rest.len() + 1);
    if !with.starts_with('/') {
        joined.push('/');
    }
    joined.push_str(with);
    joined.push_str(rest);
    let mut out = crate::normalize::path::normalize(&joined, rules)
        .map_err(|e| ProxyError::Malformed(e.into()))?
        .into_owned();
    if let Some(q) = original.query() {
        out.push('?');
        out.push_str(q);
    }
    PathAndQuery::from_maybe_shared(Bytes::from(out))
        .map_err(|_| ProxyError::BadRequest("the rewritten path is not a valid URI path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrite_keeps_the_rest_and_the_query() {
        let rules = crate::normalize::PathRules::default();
        let uri: Uri = "/api/v1/users?id=7".parse().unwrap();
        let r = Rewrite {
            strip: 7,
            with: "/v2".into(),
        };
        assert_eq!(
            rewritten_path(&uri, Some(&r), &rules).unwrap(),
            "/v2/users?id=7"
        );
        let r = Rewrite {
            strip: 4,
            with: "".into(),
        };
        assert_eq!(
            rewritten_path(&uri, Some(&r), &rules).unwrap(),
            "/v1/users?id=7"
        );
        let uri: Uri = "/api".parse().unwrap();
        assert_eq!(rewritten_path(&uri, Some(&r), &rules).unwrap(), "/");
        assert_eq!(rewritten_path(&uri, None, &rules).unwrap(), "/api");
        // A rewrite to `/` of a prefix without its slash leaves no `//` behind.
        let uri: Uri = "/api/admin".parse().unwrap();
        let r = Rewrite {
            strip: 4,
            with: "/".into(),
        };
        assert_eq!(rewritten_path(&uri, Some(&r), &rules).unwrap(), "/admin");
    }
}
