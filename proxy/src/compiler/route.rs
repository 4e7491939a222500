//! Compiling routes: matchers (path, methods, headers), the action (forward, redirect,
//! direct response), the route's JWT provider and rate limit. A path a route or rule matches
//! must be in the form requests are matched in (normalized by the listener's rules).

use super::Compiler;
use super::listener::Named;
use crate::config::{ConfigError, Located, PathMatchConfig, RouteConfig};
use crate::route::{HeaderMatcher, HeaderRule, PathMatch, Route};
use crate::snapshot::{Action, RateLimitState, Rewrite, RouteEntry, RouteJwt};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use rustc_hash::FxHashMap;
use std::sync::Arc;

impl Compiler<'_> {
    pub(super) fn route(
        &self,
        at: &str,
        listener: &Arc<str>,
        norm: &crate::normalize::Rules,
        r: &RouteConfig,
        named: &Named<'_>,
        rate_limits: &mut RateLimitState,
    ) -> Result<Route<RouteEntry>, ConfigError> {
        let clusters = named.clusters;
        let name: Arc<str> = r.name.value().as_str().into();
        let m = &r.matcher;
        let path = match &m.path {
            None => PathMatch::Prefix("".into()),
            Some(PathMatchConfig::Exact(p)) => {
                self.check_path(p, &format!("{at}.match.path.exact"), &norm.path)?;
                PathMatch::Exact(p.value().as_str().into())
            }
            Some(PathMatchConfig::Prefix(p)) => {
                self.check_path(p, &format!("{at}.match.path.prefix"), &norm.path)?;
                PathMatch::Prefix(p.value().as_str().into())
            }
            Some(PathMatchConfig::Regex(p)) => PathMatch::full_regex(p.value()).map_err(|e| {
                self.err(
                    p,
                    format!("{at}.match.path.regex"),
                    format!("not a valid regex: {e}"),
                )
            })?,
        };
        let mut methods = Vec::new();
        for (mi, meth) in m.methods.iter().enumerate() {
            let parsed = Method::from_bytes(meth.value().as_bytes())
                .ok()
                .filter(|_| meth.value().bytes().all(|b| b.is_ascii_uppercase()))
                .ok_or_else(|| {
                    self.err(
                        meth,
                        format!("{at}.match.methods[{mi}]"),
                        format!(
                            "`{}` is not an HTTP method; write it in upper case, like GET",
                            meth.value()
                        ),
                    )
                })?;
            methods.push(parsed);
        }
        let mut headers = Vec::new();
        for (hi, h) in m.headers.iter().enumerate() {
            let f = format!("{at}.match.headers[{hi}]");
            let hname = HeaderName::from_bytes(h.name.value().as_bytes()).map_err(|_| {
                self.err(
                    &h.name,
                    format!("{f}.name"),
                    format!("`{}` is not a valid header name", h.name.value()),
                )
            })?;
            if hname.as_str().contains('_')
                && norm.underscores != crate::normalize::Underscores::Allow
            {
                return Err(self.err(
                    &h.name,
                    format!("{f}.name"),
                    format!(
                        "`{}` has `_`, and this listener never lets such a header through (normalization.headers_with_underscores)",
                        h.name.value()
                    ),
                ));
            }
            let rule = match (&h.exact, &h.prefix, &h.regex, h.present) {
                (Some(e), None, None, None) => HeaderRule::Exact(e.as_bytes().into()),
                (None, Some(p), None, None) => HeaderRule::Prefix(p.as_bytes().into()),
                (None, None, Some(re), None) => {
                    HeaderRule::Regex(regex::Regex::new(re.value()).map_err(|e| {
                        self.err(re, format!("{f}.regex"), format!("not a valid regex: {e}"))
                    })?)
                }
                (None, None, None, Some(p)) => HeaderRule::Present(p),
                _ => {
                    return Err(self.err(
                        &h.name,
                        f,
                        "give exactly one of exact, prefix, regex or present".into(),
                    ));
                }
            };
            headers.push(HeaderMatcher {
                name: hname,
                rule,
                invert: h.invert,
            });
        }
        let action = match (&r.forward, &r.redirect, &r.direct_response) {
            (Some(fw), None, None) => {
                let cluster = self.named(
                    clusters,
                    &fw.cluster,
                    format!("{at}.forward.cluster"),
                    "cluster",
                    "clusters",
                )?;
                let rewrite = match (&fw.prefix_rewrite, &path) {
                    (None, _) => None,
                    (Some(to), PathMatch::Prefix(p)) => Some(Rewrite {
                        strip: p.len(),
                        with: to.value().as_str().into(),
                    }),
                    (Some(to), PathMatch::Exact(p)) => Some(Rewrite {
                        strip: p.len(),
                        with: to.value().as_str().into(),
                    }),
                    (Some(to), PathMatch::Regex(_)) => {
                        return Err(self.err(
                            to,
                            format!("{at}.forward.prefix_rewrite"),
                            "needs a prefix or exact path match, not a regex".into(),
                        ));
                    }
                };
                Action::Forward {
                    timeout: fw.timeout.map(|d| d.0).unwrap_or(cluster.request_timeout),
                    cluster: cluster.clone(),
                    rewrite,
                }
            }
            (None, Some(rd), None) => {
                let s = *rd.status.value();
                if ![301, 302, 303, 307, 308].contains(&s) {
                    return Err(self.err(
                        &rd.status,
                        format!("{at}.redirect.status"),
                        format!("{s} is not a redirect; use 301, 302, 303, 307 or 308"),
                    ));
                }
                Action::Redirect {
                    status: StatusCode::from_u16(s).unwrap_or(StatusCode::MOVED_PERMANENTLY),
                    scheme: rd.scheme.as_deref().map(Into::into),
                    host: rd.host.as_deref().map(Into::into),
                    path: rd.path.as_deref().map(Into::into),
                }
            }
            (None, None, Some(d)) => {
                let s = *d.status.value();
                let status = StatusCode::from_u16(s)
                    .ok()
                    .filter(|_| (200..=599).contains(&s))
                    .ok_or_else(|| {
                        self.err(
                            &d.status,
                            format!("{at}.direct_response.status"),
                            format!("{s} is not a status from 200 to 599"),
                        )
                    })?;
                Action::Direct {
                    status,
                    body: Bytes::from(d.body.clone()),
                    content_type: HeaderValue::from_str(&d.content_type).map_err(|_| {
                        self.err(
                            &d.status,
                            format!("{at}.direct_response.content_type"),
                            "not a valid header value".into(),
                        )
                    })?,
                }
            }
            _ => {
                return Err(self.err(
                    &r.name,
                    at.to_owned(),
                    "a route needs exactly one of forward, redirect or direct_response".into(),
                ));
            }
        };
        let cluster_name = match &action {
            Action::Forward { cluster, .. } => cluster.name.clone(),
            _ => "".into(),
        };
        let jwt = match &r.jwt {
            None => None,
            Some(j) => {
                let provider = self.named(
                    named.providers,
                    &j.provider,
                    format!("{at}.jwt.provider"),
                    "JWT provider",
                    "providers",
                )?;
                Some(RouteJwt {
                    provider: provider.clone(),
                    required: j.required,
                })
            }
        };
        let rate_limit = match &r.rate_limit {
            None => None,
            Some(rl) => Some(self.route_rate_limit(
                &format!("{at}.rate_limit"),
                listener,
                &name,
                rl,
                rate_limits,
            )?),
        };
        Ok(Route {
            path,
            methods: methods.into(),
            headers: headers.into(),
            action: RouteEntry {
                metrics: self.metrics.route(listener, &name, &cluster_name),
                name,
                action,
                jwt,
                rate_limit,
            },
        })
    }

    /// A route's path must be in the form requests are matched in (normalized by the
    /// listener's rules), or it could never match.
    fn check_path(
        &self,
        p: &Located<String>,
        field: &str,
        rules: &crate::normalize::PathRules,
    ) -> Result<(), ConfigError> {
        let text = p.value();
        if !text.starts_with('/') {
            return Err(self.err(p, field.to_owned(), format!("`{text}` must start with `/`")));
        }
        match crate::normalize::path::normalize(text, rules) {
            Ok(n) if n == text.as_str() => Ok(()),
            Ok(n) => Err(self.err(
                p,
                field.to_owned(),
                format!(
                    "`{text}` would never match: requests are matched after normalization, so write `{n}`"
                ),
            )),
            Err(e) => Err(self.err(
                p,
                field.to_owned(),
                format!("`{text}` would never match: a request with this path is refused ({e})"),
            )),
        }
    }

    /// The entry `name` refers to, or an error that lists the names defined.
    fn named<'m, T>(
        &self,
        map: &'m FxHashMap<Arc<str>, Arc<T>>,
        name: &Located<String>,
        field: String,
        kind: &str,
        kinds: &str,
    ) -> Result<&'m Arc<T>, ConfigError> {
        map.get(name.value().as_str()).ok_or_else(|| {
            let mut known: Vec<&str> = map.keys().map(|k| &**k).collect();
            known.sort_unstable();
            self.err(
                name,
                field,
                format!(
                    "no {kind} is named `{}`; defined {kinds}: [{}]",
                    name.value(),
                    known.join(", ")
                ),
            )
        })
    }
}
