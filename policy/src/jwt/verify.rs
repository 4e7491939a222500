//! Verifying a compact JWS (RFC 7515) and the JWT claims in it (RFC 7519), with the
//! refusals RFC 8725 asks for: `alg: none` and HMAC are refused, the key must fit the
//! algorithm (and its own `alg`, `use`, `key_ops`), any `crit` header is refused (none is
//! understood here), and `jku`, `x5u`, `jwk` and `x5c` are never used to find a key: keys
//! come only from the provider's configured key set.

use super::alg::Alg;
use super::b64;
use super::jwk::KeySet;
use serde_json::{Map, Value};

/// Longest token looked at; IdP tokens are a few KiB at most.
pub const MAX_TOKEN: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the token is longer than {MAX_TOKEN} bytes")]
    TooLong,
    #[error("alg `none` is not accepted")]
    AlgNone,
    #[error("HMAC algorithm `{0}` is not accepted: keys here are public keys")]
    Hmac(String),
    #[error("algorithm `{0}` is not supported")]
    UnsupportedAlg(String),
    #[error("the header marks `{0}` critical, which is not understood")]
    Crit(String),
    #[error("no key with kid `{0}`")]
    UnknownKid(String),
    #[error("no key fits algorithm {0}")]
    NoKey(Alg),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the payload is not a JSON object")]
    Payload,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("claim `{0}` has the wrong type")]
    ClaimType(&'static str),
    #[error("the issuer is not the expected one")]
    Issuer,
    #[error("the audience is not an expected one")]
    Audience,
}

/// The parts of a verified JWS.
#[derive(Debug)]
pub struct VerifiedJws {
    pub alg: Alg,
    pub kid: Option<String>,
    pub payload: Vec<u8>,
}

/// Header parameters that must never be taken as a source of keys (RFC 8725 §3.10): they
/// are read past, not used.
pub const IGNORED_KEY_SOURCES: [&str; 4] = ["jku", "x5u", "jwk", "x5c"];

/// Checks the signature of a compact JWS against `keys`.
pub fn verify_jws(token: &str, keys: &KeySet) -> Result<VerifiedJws, JwtError> {
    if token.len() > MAX_TOKEN {
        return Err(JwtError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "a compact JWS has three dot-separated parts",
        ));
    };
    let header_bytes = b64::decode(h).ok_or(JwtError::Malformed("header is not base64url"))?;
    let header: Map<String, Value> = serde_json::from_slice(&header_bytes)
        .map_err(|_| JwtError::Malformed("header is not a JSON object"))?;
    let alg = match header.get("alg").and_then(Value::as_str) {
        None => return Err(JwtError::Malformed("header has no `alg`")),
        Some("none") => return Err(JwtError::AlgNone),
        Some(a @ ("HS256" | "HS384" | "HS512")) => return Err(JwtError::Hmac(a.to_owned())),
        Some(a) => Alg::parse(a).ok_or_else(|| JwtError::UnsupportedAlg(a.to_owned()))?,
    };
    if let Some(crit) = header.get("crit") {
        let names = crit
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or(JwtError::Malformed("`crit` must be a non-empty array"))?;
        let first = names
            .first()
            .and_then(Value::as_str)
            .ok_or(JwtError::Malformed("`crit` must list header names"))?;
        return Err(JwtError::Crit(first.to_owned()));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwtError::Malformed("`kid` must be a string")),
    };
    let payload = b64::decode(p).ok_or(JwtError::Malformed("payload is not base64url"))?;
    let signature = b64::decode(s).ok_or(JwtError::Malformed("signature is not base64url"))?;
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];

    let mut tried = false;
    for key in &keys.keys {
        // A token that names its key is checked against that key only; a token without a
        // kid against every key that fits.
        if let Some(k) = &kid
            && key.kid.as_deref() != Some(k)
        {
            continue;
        }
        let Some(verifier) = key.verifier(alg) else {
            continue;
        };
        tried = true;
        if verifier.verify_sig(signing_input, &signature).is_ok() {
            return Ok(VerifiedJws { alg, kid, payload });
        }
    }
    if tried {
        return Err(JwtError::BadSignature);
    }
    match kid {
        Some(k) if !keys.has_kid(&k) => Err(JwtError::UnknownKid(k)),
        _ => Err(JwtError::NoKey(alg)),
    }
}

/// What a provider expects of the claims.
#[derive(Debug, Clone, Default)]
pub struct Validation {
    /// `iss` must equal this, when set.
    pub issuer: Option<String>,
    /// `aud` (a string or an array) must contain one of these, when any are set.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    pub leeway: u64,
    /// Refuse tokens without `exp` (the default in Membrane: a token that never expires
    /// never stops working if it leaks).
    pub require_exp: bool,
}

/// Verified claims, with the expiry the cache keys on.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub map: Map<String, Value>,
    pub exp: Option<u64>,
}

impl Claims {
    /// A claim by dotted path (`realm_access.roles`): nested objects are walked.
    pub fn get_path(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut v = self.map.get(parts.next()?)?;
        for p in parts {
            v = v.as_object()?.get(p)?;
        }
        Some(v)
    }
}

fn numeric(map: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, JwtError> {
    match map.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| Some(f as u64))
            .ok_or(JwtError::ClaimType(name)),
    }
}

/// Checks the claims of a verified payload at time `now` (Unix seconds).
pub fn validate_claims(payload: &[u8], v: &Validation, now: u64) -> Result<Claims, JwtError> {
    let map: Map<String, Value> = serde_json::from_slice(payload).map_err(|_| JwtError::Payload)?;
    let exp = numeric(&map, "exp")?;
    match exp {
        Some(exp) if now > exp.saturating_add(v.leeway) => return Err(JwtError::Expired),
        None if v.require_exp => return Err(JwtError::MissingClaim("exp")),
        _ => {}
    }
    if let Some(nbf) = numeric(&map, "nbf")?
        && now.saturating_add(v.leeway) < nbf
    {
        return Err(JwtError::NotYetValid);
    }
    if let Some(iat) = numeric(&map, "iat")?
        && iat > now.saturating_add(v.leeway)
    {
        return Err(JwtError::IssuedInFuture);
    }
    if let Some(want) = &v.issuer {
        match map.get("iss") {
            None => return Err(JwtError::MissingClaim("iss")),
            Some(Value::String(iss)) if iss == want => {}
            Some(_) => return Err(JwtError::Issuer),
        }
    }
    if !v.audiences.is_empty() {
        let ok = match map.get("aud") {
            None => return Err(JwtError::MissingClaim("aud")),
            Some(Value::String(a)) => v.audiences.iter().any(|w| w == a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| v.audiences.iter().any(|w| w == a)),
            Some(_) => return Err(JwtError::ClaimType("aud")),
        };
        if !ok {
            return Err(JwtError::Audience);
        }
    }
    Ok(Claims { map, exp })
}
