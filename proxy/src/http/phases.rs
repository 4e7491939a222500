//! The policy phases of the request path, after routing and before the action:
//! authentication (JWT), authorization (the listener's policy), rate limit (the route's).
//! Also the identity headers: incoming `x-membrane-*` headers and the route provider's claim
//! headers are removed, then claim headers are set from a verified token.

use super::error::ProxyError;
use crate::config::RateKeyConfig;
use crate::context::ConnContext;
use crate::enforce::authn::AuthnError;
use crate::enforce::authz::HeaderView;
use crate::enforce::metrics::JwtResult;
use crate::route::RequestView;
use crate::snapshot::{Listener, RouteEntry, RouteJwt};
use http::{HeaderMap, HeaderValue};
use membrane_policy::authz::Request as AuthzRequest;
use membrane_policy::jwt::Claims;
use serde_json::Value;
use std::sync::Arc;

/// What authorization decided, as the access log and `membrane explain` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    /// A deny in a dry-run policy: the request went on.
    DryRunDeny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::DryRunDeny => "dry_run_deny",
        }
    }
}

/// An authorization decision and the rule that made it (`default` when none matched).
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdict: Verdict,
    pub rule: String,
}

/// What the phases found out, for the access log.
#[derive(Default)]
pub struct PolicyNote {
    pub decision: Option<Decision>,
    pub subject: Option<String>,
    /// The rate limit's state after an allowed request, for the `RateLimit-*` fields.
    pub rate: Option<membrane_policy::ratelimit::Verdict>,
}

/// Authentication: the route's JWT, if it has one. `Ok(None)`: no token on a route where
/// it is optional.
pub fn authenticate(
    j: &RouteJwt,
    headers: &HeaderMap,
    note: &mut PolicyNote,
) -> Result<Option<Arc<Claims>>, ProxyError> {
    let claims = match j.provider.token(headers).map_err(ProxyError::BadRequest)? {
        None if !j.required => None,
        None => {
            j.provider.keys.metrics.count(JwtResult::Missing);
            return Err(ProxyError::Unauthorized(AuthnError::Missing));
        }
        Some(token) => Some(j.provider.verify(token).map_err(ProxyError::Unauthorized)?),
    };
    if let Some(c) = &claims {
        note.subject = c.map.get("sub").and_then(Value::as_str).map(str::to_owned);
    }
    Ok(claims)
}

/// Authorization (the listener's policy), then the route's rate limit. `upstream_path`:
/// the path a rewriting route will send upstream, when it differs from the request's.
///
/// Which path policy sees: the request's (normalized) path decides, as the client asked
/// for it and the route matched it. When the route rewrites, the rewritten path is checked
/// too, and a deny rule that matches it refuses the request: so `/api/admin` rewritten to
/// `/admin` is refused when `/admin` is denied. Only deny rules count on the second look;
/// the default does not (a default-deny listener allows its endpoints by their public
/// paths, which the rewrite then strips).
pub fn authorize(
    ctx: &ConnContext,
    listener: &Listener,
    entry: &RouteEntry,
    view: &RequestView<'_>,
    upstream_path: Option<&str>,
    claims: Option<&Claims>,
    note: &mut PolicyNote,
) -> Result<(), ProxyError> {
    let (host, method, path, headers) = (view.host, view.method.as_str(), view.path, view.headers);
    let peer = ctx.tls.as_ref().and_then(|t| t.identity.spiffe.as_ref());
    if let Some(az) = &listener.authz {
        let view = HeaderView(headers);
        let req = AuthzRequest {
            peer,
            claims: claims.map(|c| &c.map),
            host,
            method,
            path,
            headers: &view,
            source: ctx.peer_ip,
        };
        let mut d = az.policy.decide(&req);
        if d.effect == membrane_policy::authz::Effect::Allow
            && let Some(up) = upstream_path.filter(|up| *up != path)
        {
            let second = az.policy.decide(&AuthzRequest { path: up, ..req });
            if second.effect == membrane_policy::authz::Effect::Deny && second.rule.is_some() {
                d = second;
            }
        }
        let rule = az.policy.rule_name(&d).to_owned();
        let go = az.apply(&d);
        let verdict = match (d.effect, go) {
            (membrane_policy::authz::Effect::Allow, _) => Verdict::Allow,
            (_, true) => Verdict::DryRunDeny,
            (_, false) => Verdict::Deny,
        };
        note.decision = Some(Decision {
            verdict,
            rule: rule.clone(),
        });
        if !go {
            return Err(ProxyError::Forbidden {
                policy: az.policy.name.clone(),
                rule,
            });
        }
    }
    if let Some(rl) = &entry.rate_limit {
        let ip;
        let key: &str = match &rl.key {
            RateKeyConfig::Peer if peer.is_some() => peer.map_or("", |p| p.as_str()),
            RateKeyConfig::Claim(name) => {
                match claims
                    .and_then(|c| membrane_policy::authz::claim_at(&c.map, name))
                    .and_then(Value::as_str)
                {
                    Some(v) => v,
                    None => {
                        ip = ctx.peer_ip.to_string();
                        &ip
                    }
                }
            }
            _ => {
                ip = ctx.peer_ip.to_string();
                &ip
            }
        };
        let v = rl.check(key);
        if !v.allowed {
            return Err(ProxyError::RateLimited(v));
        }
        note.rate = Some(v);
    }
    Ok(())
}

/// Sets the route provider's claim headers from a verified token. The same names, and every
/// `x-membrane-*` field, were removed from the request before routing (`normalize` and the
/// listener's `owned_headers`), so what a client sent under them never gets this far.
pub fn identity_headers(h: &mut HeaderMap, entry: &RouteEntry, claims: &Claims) {
    let Some(j) = &entry.jwt else { return };
    for (claim, header) in &j.provider.forward {
        let Some(v) = membrane_policy::authz::claim_at(&claims.map, claim) else {
            continue;
        };
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&text) {
            h.insert(header.clone(), v);
        }
    }
}
