//! JWT authentication of a request: find the token, verify it (a cached result when the same
//! token was verified before), and say why not when it fails.

use super::jwks::ProviderKeys;
use super::metrics::JwtResult;
use crate::config::TokenSource;
use http::{HeaderMap, HeaderName, header};
use membrane_policy::jwt::{self, Claims, JwtError, Validation};
use std::sync::Arc;

/// A provider as one config generation compiled it.
pub struct JwtProvider {
    pub name: Arc<str>,
    pub validation: Validation,
    pub from: TokenSource,
    /// Claim path → request header for the upstream.
    pub forward: Vec<(String, HeaderName)>,
    /// Keys, cache and metrics; they outlive generations while the key source stays.
    pub keys: Arc<ProviderKeys>,
}

/// The one value of a header field that may appear once; `Err` when it appears more often.
fn single<K: http::header::AsHeaderName>(
    h: &HeaderMap,
    name: K,
) -> Result<Option<&str>, &'static str> {
    let mut all = h.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err("the request carries more than one token header");
    }
    Ok(first.and_then(|v| v.to_str().ok()))
}

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("a bearer token is required")]
    Missing,
    #[error("{0}")]
    Invalid(JwtError),
}

impl AuthnError {
    /// The bounded reason label for metrics.
    pub fn reason(&self) -> JwtResult {
        match self {
            AuthnError::Missing => JwtResult::Missing,
            AuthnError::Invalid(e) => match e {
                JwtError::Malformed(_) | JwtError::TooLong | JwtError::Payload => {
                    JwtResult::Malformed
                }
                JwtError::AlgNone | JwtError::Hmac(_) | JwtError::UnsupportedAlg(_) => {
                    JwtResult::Algorithm
                }
                JwtError::Crit(_) => JwtResult::Crit,
                JwtError::UnknownKid(_) | JwtError::NoKey(_) => JwtResult::UnknownKey,
                JwtError::BadSignature => JwtResult::Signature,
                JwtError::Expired => JwtResult::Expired,
                JwtError::NotYetValid | JwtError::IssuedInFuture => JwtResult::NotYetValid,
                JwtError::Issuer => JwtResult::Issuer,
                JwtError::Audience => JwtResult::Audience,
                JwtError::MissingClaim(_) | JwtError::ClaimType(_) => JwtResult::Claims,
            },
        }
    }
}

impl JwtProvider {
    /// Reads the token from where this provider expects it. More than one candidate (two
    /// `Authorization` fields, two of the named header, the cookie twice) is refused with the
    /// reason: the upstream could read another token than the one verified here.
    pub fn token<'a>(&self, h: &'a HeaderMap) -> Result<Option<&'a str>, &'static str> {
        match &self.from {
            TokenSource::Bearer => {
                let Some(v) = single(h, header::AUTHORIZATION)? else {
                    return Ok(None);
                };
                let Some((scheme, token)) = v.split_once(' ') else {
                    return Ok(None);
                };
                Ok(scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim())
                    .filter(|t| !t.is_empty()))
            }
            TokenSource::Header(name) => Ok(single(h, name.as_str())?.map(str::trim)),
            TokenSource::Cookie(name) => {
                let mut found = h
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .filter_map(|kv| kv.trim().split_once('='))
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| v);
                let first = found.next();
                if found.next().is_some() {
                    return Err("the request carries the token cookie more than once");
                }
                Ok(first)
            }
        }
    }

    /// Verifies `token` now: the cache first, then the signature and claims. A token naming
    /// a key this provider does not know may start a refetch of a remote key set (at most one
    /// at a time, and not more often than the provider allows).
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthnError> {
        let now = super::unix_now();
        let keys = &self.keys;
        if let Some(c) = keys.cache.get(token, now) {
            keys.metrics.count(JwtResult::Cached);
            return Ok(c);
        }
        let set = keys.current();
        match jwt::verify(token, &set, &self.validation, now) {
            Ok(claims) => {
                keys.metrics.count(JwtResult::Verified);
                let claims = Arc::new(claims);
                keys.cache
                    .insert(token, claims.clone(), now, self.validation.leeway);
                Ok(claims)
            }
            Err(e) => {
                if let JwtError::UnknownKid(_) = &e {
                    keys.unknown_kid();
                }
                let e = AuthnError::Invalid(e);
                keys.metrics.count(e.reason());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use membrane_policy::jwt::KeySet;

    fn provider(from: TokenSource) -> JwtProvider {
        JwtProvider {
            name: "p".into(),
            validation: Validation::default(),
            from,
            forward: Vec::new(),
            keys: super::super::jwks::ProviderKeys::new(
                "inline".into(),
                KeySet::default(),
                Metrics::new().provider("p"),
                false,
            ),
        }
    }

    #[test]
    fn tokens_are_found_where_the_provider_says() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "bearer  abc.def.ghi ".parse().unwrap(),
        );
        h.insert("x-token", "tok-1".parse().unwrap());
        h.append(header::COOKIE, "a=1; session=tok-2".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(
            provider(TokenSource::Bearer).token(&h),
            Ok(Some("abc.def.ghi"))
        );
        assert_eq!(
            provider(TokenSource::Header("x-token".into())).token(&h),
            Ok(Some("tok-1"))
        );
        assert_eq!(
            provider(TokenSource::Cookie("session".into())).token(&h),
            Ok(Some("tok-2"))
        );
        assert_eq!(
            provider(TokenSource::Cookie("none".into())).token(&h),
            Ok(None)
        );
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(provider(TokenSource::Bearer).token(&basic), Ok(None));
        basic.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(provider(TokenSource::Bearer).token(&basic), Ok(None));
        // Two candidates: refused, whichever source.
        h.append(header::AUTHORIZATION, "Bearer other".parse().unwrap());
        h.append("x-token", "tok-3".parse().unwrap());
        h.append(header::COOKIE, "session=tok-4".parse().unwrap());
        for from in [
            TokenSource::Bearer,
            TokenSource::Header("x-token".into()),
            TokenSource::Cookie("session".into()),
        ] {
            assert!(provider(from).token(&h).is_err());
        }
    }
}
