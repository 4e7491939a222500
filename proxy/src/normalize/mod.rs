//! One canonical form of a request, made once, before routing: the security rule of the
//! house is that whatever policy decides on (path, host, identity, token) is exactly what the
//! upstream receives. Routing, policy, rate limits, the access log and the upstream all see
//! the request as this module leaves it, and nothing later reads the raw form.
//!
//! - the path: [`path`] (dot segments, slashes, escapes);
//! - the authority: [`authority`]; the request then has exactly one `Host` field holding it
//!   and an origin-form target (`/path?query`), whatever form the client used: the
//!   absolute-form target's authority wins over `Host` (RFC 9112 §3.2.2), HTTP/2's
//!   `:authority` must agree with a `Host` field if both are sent (RFC 9113 §8.3.1), more than
//!   one `Host` is refused (RFC 9112 §3.2);
//! - the header fields: [`headers`].
//!
//! It imports nothing from the rest of the proxy.

pub mod authority;
pub mod headers;
pub mod path;

pub use authority::AuthorityError;
pub use headers::{Fields, HeaderError, Underscores};
pub use path::{EscapedSlashes, PathError, PathParameters, PathRules};

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri, Version};

/// A listener's normalization settings; the defaults are the safe ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rules {
    pub path: PathRules,
    pub underscores: Underscores,
    /// Proxies in front of this listener whose forwarding fields are believed.
    pub trusted_hops: u8,
}

/// Why a request was refused before routing; each is a 400 that says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("the request has more than one Host header")]
    DuplicateHost,
    #[error("the request has no Host header")]
    MissingHost,
    #[error("the Host header is not valid text")]
    HostNotText,
    #[error("the Host header names another host than the request's :authority")]
    HostMismatch,
    #[error("only OPTIONS may have the request target `*`")]
    Asterisk,
    #[error("CONNECT is not supported")]
    Connect,
    #[error(
        "method `{0}` has lower-case letters; methods are case-sensitive, and the registered ones are upper case"
    )]
    Method(String),
    #[error(
        "header `{0}` appears more than once, and this listener's routes or rules decide on it"
    )]
    Repeated(String),
}

impl NormalizeError {
    /// The stable error code for the response.
    pub fn code(&self) -> &'static str {
        match self {
            NormalizeError::Path(_) | NormalizeError::Asterisk => "invalid_path",
            NormalizeError::Authority(_)
            | NormalizeError::DuplicateHost
            | NormalizeError::MissingHost
            | NormalizeError::HostNotText
            | NormalizeError::HostMismatch => "invalid_host",
            NormalizeError::Header(_) | NormalizeError::Repeated(_) => "invalid_header",
            NormalizeError::Connect | NormalizeError::Method(_) => "bad_request",
        }
    }
}

/// What normalization learnt on the way, for the phases after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Normalized {
    /// How many bytes of the `Host` field's value are the host (the rest is `:port`), for
    /// routing to read without parsing it again.
    pub host_len: usize,
    pub fields: Fields,
}

/// Makes `req` canonical in place (see the module's text). `tls`: the connection's scheme is
/// https, whose default port is 443.
pub fn request<B>(
    req: &mut Request<B>,
    rules: &Rules,
    tls: bool,
) -> Result<Normalized, NormalizeError> {
    if req.method() == Method::CONNECT {
        return Err(NormalizeError::Connect);
    }
    // `get` is not `GET` to a rule about GET, but some upstreams upper-case what they are
    // sent (nginx refuses it, as Membrane does now).
    if req
        .method()
        .as_str()
        .bytes()
        .any(|b| b.is_ascii_lowercase())
    {
        return Err(NormalizeError::Method(req.method().as_str().to_owned()));
    }
    let fields = headers::canonicalize(req.headers_mut(), rules.underscores, rules.trusted_hops)?;
    let host_len = authority_of(req, tls)?;
    path_of(req, rules)?;
    Ok(Normalized { host_len, fields })
}

/// Leaves exactly one `Host` field with the canonical authority (none for an HTTP/1.0
/// request that named no host); returns the length of its host part.
fn authority_of<B>(req: &mut Request<B>, tls: bool) -> Result<usize, NormalizeError> {
    let default_port = match req.uri().scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => 443,
        Some(_) => 80,
        None if tls => 443,
        None => 80,
    };
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host_field = hosts.next();
    if hosts.next().is_some() {
        return Err(NormalizeError::DuplicateHost);
    }
    let canonical = match (req.uri().authority(), host_field) {
        // The common case: an origin-form request whose Host is canonical already.
        (None, Some(field))
            if let Some(len) = authority::already_canonical(field.as_bytes(), default_port) =>
        {
            return Ok(len);
        }
        (Some(a), field) => {
            let from_target = authority::canonical(a.as_str(), default_port)?;
            // HTTP/2: `:authority` and `Host` must agree. HTTP/1.1 absolute-form: the target
            // wins and `Host` is replaced (RFC 9112 §3.2.2).
            if req.version() == Version::HTTP_2
                && let Some(f) = field
            {
                let f = f.to_str().map_err(|_| NormalizeError::HostNotText)?;
                if authority::canonical(f, default_port)?.text != from_target.text {
                    return Err(NormalizeError::HostMismatch);
                }
            }
            Some((from_target.text.into_owned(), from_target.host_len))
        }
        (None, Some(field)) => {
            let raw = field.to_str().map_err(|_| NormalizeError::HostNotText)?;
            let a = authority::canonical(raw, default_port)?;
            match a.text {
                std::borrow::Cow::Borrowed(_) => return Ok(a.host_len),
                std::borrow::Cow::Owned(text) => Some((text, a.host_len)),
            }
        }
        (None, None) if req.version() == Version::HTTP_10 => return Ok(0),
        (None, None) => return Err(NormalizeError::MissingHost),
    };
    let Some((text, host_len)) = canonical else {
        return Ok(0);
    };
    let v = HeaderValue::from_str(&text).map_err(|_| NormalizeError::HostNotText)?;
    req.headers_mut().insert(header::HOST, v);
    Ok(host_len)
}

/// Leaves an origin-form target with the canonical path and the query as it came.
fn path_of<B>(req: &mut Request<B>, rules: &Rules) -> Result<(), NormalizeError> {
    let uri = req.uri();
    let target = uri.path_and_query().map_or("", PathAndQuery::as_str);
    if target == "*" {
        return if req.method() == Method::OPTIONS {
            Ok(())
        } else {
            Err(NormalizeError::Asterisk)
        };
    }
    let absolute = uri.scheme().is_some() || uri.authority().is_some();
    // The path as sent: up to the query (an absolute-form target may have none: `/`).
    let (raw_path, query) = match target.bytes().position(|b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    };
    let raw_path = if raw_path.is_empty() && absolute {
        "/"
    } else {
        raw_path
    };
    let normal = path::normalize(raw_path, &rules.path)?;
    if !absolute && matches!(normal, std::borrow::Cow::Borrowed(_)) {
        return Ok(());
    }
    let mut text = normal.into_owned();
    if let Some(q) = query {
        text.push('?');
        text.push_str(q);
    }
    let pq = PathAndQuery::from_maybe_shared(bytes::Bytes::from(text))
        .map_err(|_| NormalizeError::Path(PathError::BadEscape))?;
    *req.uri_mut() = Uri::from(pq);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forms a request takes in a test: method, target, version, header fields.
    fn make(method: &str, target: &str, version: Version, fields: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder()
            .method(method)
            .uri(target)
            .version(version);
        for (n, v) in fields {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    fn norm(req: &mut Request<()>) -> Result<(String, Option<String>), NormalizeError> {
        let host_len = request(req, &Rules::default(), false)?.host_len;
        let host = req.headers().get(header::HOST);
        assert_eq!(
            host_len,
            host.map_or(0, |h| super::authority::strip_port_len(h.as_bytes()))
        );
        Ok((
            req.uri().to_string(),
            req.headers()
                .get(header::HOST)
                .map(|h| h.to_str().unwrap().to_owned()),
        ))
    }

    #[test]
    fn every_form_ends_origin_form_with_one_host() {
        let cases = [
            (
                make(
                    "GET",
                    "http://Admin.Test.:80/x/../admin?q=1",
                    Version::HTTP_11,
                    &[("host", "public.test")],
                ),
                "/admin?q=1",
                "admin.test",
            ),
            (
                make(
                    "GET",
                    "/%61dmin",
                    Version::HTTP_11,
                    &[("host", "ADMIN.test.")],
                ),
                "/admin",
                "admin.test",
            ),
            (
                make("GET", "http://admin.test:8080", Version::HTTP_11, &[]),
                "/",
                "admin.test:8080",
            ),
            (
                make(
                    "GET",
                    "https://admin.test:443/a",
                    Version::HTTP_2,
                    &[("host", "admin.test")],
                ),
                "/a",
                "admin.test",
            ),
        ];
        for (mut req, uri, host) in cases {
            assert_eq!(norm(&mut req), Ok((uri.to_owned(), Some(host.to_owned()))));
        }
    }

    #[test]
    fn hosts_that_disagree_or_repeat_are_refused() {
        let mut two = make(
            "GET",
            "/",
            Version::HTTP_11,
            &[("host", "a"), ("host", "b")],
        );
        assert_eq!(norm(&mut two), Err(NormalizeError::DuplicateHost));
        let mut none = make("GET", "/", Version::HTTP_11, &[]);
        assert_eq!(norm(&mut none), Err(NormalizeError::MissingHost));
        let mut h2 = make(
            "GET",
            "http://a.test/",
            Version::HTTP_2,
            &[("host", "admin.test")],
        );
        assert_eq!(norm(&mut h2), Err(NormalizeError::HostMismatch));
        let mut old = make("GET", "/", Version::HTTP_10, &[]);
        assert_eq!(norm(&mut old), Ok(("/".to_owned(), None)));
        let mut star = make("GET", "*", Version::HTTP_11, &[("host", "a")]);
        assert_eq!(norm(&mut star), Err(NormalizeError::Asterisk));
        let mut options = make("OPTIONS", "*", Version::HTTP_11, &[("host", "a")]);
        assert_eq!(
            norm(&mut options),
            Ok(("*".to_owned(), Some("a".to_owned())))
        );
    }

    #[test]
    fn a_canonical_request_is_left_as_it_is() {
        let mut req = make(
            "GET",
            "/api/v1?x=%2f",
            Version::HTTP_11,
            &[("host", "a.test:8080")],
        );
        let before = req.uri().clone();
        assert_eq!(
            norm(&mut req),
            Ok(("/api/v1?x=%2f".to_owned(), Some("a.test:8080".to_owned())))
        );
        assert_eq!(req.uri(), &before);
    }
}
