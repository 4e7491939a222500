//! Policy settings: JWT providers (top level), route authentication and rate limits, and a
//! listener's authorization rules.

use super::{Dur, Located};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProviderConfig {
    pub name: Located<String>,
    /// `iss` must equal this, when given.
    #[serde(default)]
    pub issuer: Option<String>,
    /// `aud` must hold one of these, when any are given.
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    /// Where the token is read: `bearer` (the `Authorization: Bearer` header, the default),
    /// `{header: name}` or `{cookie: name}`.
    #[serde(default)]
    pub from: TokenSource,
    /// Claims copied to request headers for the upstream (any incoming copy is removed).
    #[serde(default)]
    pub forward_claims: Vec<ClaimHeaderConfig>,
    /// Clock skew allowed on `exp`, `nbf`, `iat`.
    #[serde(default = "leeway")]
    pub leeway: Dur,
    /// Refuse tokens without `exp`.
    #[serde(default = "yes")]
    pub require_exp: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum JwksSource {
    /// A JWK set as JSON text.
    Inline(Located<String>),
    /// A file holding a JWK set (watched; reloaded when it changes).
    File(Located<PathBuf>),
    /// Fetched over HTTPS and refreshed in the background.
    Url(RemoteJwksConfig),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwksConfig {
    pub url: Located<String>,
    /// PEM CAs to verify the JWKS server with (else the system's CA store).
    #[serde(default)]
    pub trust_bundle: Option<Located<PathBuf>>,
    /// How often the key set is fetched again.
    #[serde(default = "refresh")]
    pub refresh: Dur,
    /// The least time between two fetches caused by tokens with an unknown `kid`.
    #[serde(default = "min_refetch")]
    pub min_refetch: Dur,
    #[serde(default = "fetch_timeout")]
    pub timeout: Dur,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenSource {
    #[default]
    Bearer,
    Header(String),
    Cookie(String),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimHeaderConfig {
    /// Dotted path for nested claims (`realm_access.roles`).
    pub claim: String,
    pub header: Located<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteJwtConfig {
    pub provider: Located<String>,
    /// `false`: a request without a token passes (a bad token is still refused).
    #[serde(default = "yes")]
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests: Located<u32>,
    pub per: Dur,
    /// Bucket size; defaults to `requests`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// `client_ip` (default), `peer` (the SPIFFE ID; the client IP without one) or
    /// `{claim: name}` (the client IP without a token).
    #[serde(default)]
    pub key: RateKeyConfig,
    /// The most keys tracked at once.
    #[serde(default = "max_keys")]
    pub max_keys: usize,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RateKeyConfig {
    #[default]
    ClientIp,
    Peer,
    Claim(String),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// What happens when no rule matches. Default: `deny` on listeners that require client
    /// certificates (inter-cell), `allow` elsewhere.
    #[serde(default)]
    pub default: Option<EffectConfig>,
    #[serde(default)]
    pub mode: ModeConfig,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EffectConfig {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ModeConfig {
    #[default]
    Enforce,
    DryRun,
}

/// Every list given must match (AND); within a list, one entry must (OR).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: Located<String>,
    pub action: EffectConfig,
    #[serde(default)]
    pub peers: Vec<PeerRuleConfig>,
    /// Each entry is its own condition (all must hold).
    #[serde(default)]
    pub claims: Vec<ClaimRuleConfig>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub methods: Vec<Located<String>>,
    #[serde(default)]
    pub paths: Vec<PathRuleConfig>,
    /// Each entry is its own condition (all must hold).
    #[serde(default)]
    pub headers: Vec<HeaderRuleConfig>,
    #[serde(default)]
    pub source_cidrs: Vec<Located<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PeerRuleConfig {
    SpiffeId(Located<String>),
    /// An ID prefix, e.g. `spiffe://acme.internal/org/acme/`.
    Prefix(Located<String>),
    TrustDomain(Located<String>),
    Cell(String),
    /// Any verified SPIFFE ID.
    Any(bool),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRuleConfig {
    pub claim: Located<String>,
    /// Exactly one of equals, contains, present.
    #[serde(default)]
    pub equals: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathRuleConfig {
    Exact(String),
    Prefix(String),
    /// `*` within a segment, `**` across segments.
    Glob(Located<String>),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRuleConfig {
    pub name: Located<String>,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    /// `true`: the header must be there; `false`: it must not.
    #[serde(default)]
    pub present: Option<bool>,
}

impl JwtProviderConfig {
    pub fn new(name: String, jwks: JwksSource) -> Self {
        Self {
            name: name.into(),
            issuer: None,
            audiences: Vec::new(),
            jwks,
            from: TokenSource::default(),
            forward_claims: Vec::new(),
            leeway: leeway(),
            require_exp: yes(),
        }
    }
}

impl RemoteJwksConfig {
    pub fn new(url: String) -> Self {
        Self {
            url: url.into(),
            trust_bundle: None,
            refresh: refresh(),
            min_refetch: min_refetch(),
            timeout: fetch_timeout(),
        }
    }
}

impl RateLimitConfig {
    pub fn new(requests: u32, per: Duration) -> Self {
        Self {
            requests: requests.into(),
            per: Dur(per),
            burst: None,
            key: RateKeyConfig::default(),
            max_keys: max_keys(),
        }
    }
}

impl RuleConfig {
    /// A rule that matches every request, until conditions are added.
    pub fn new(name: String, action: EffectConfig) -> Self {
        Self {
            name: name.into(),
            action,
            peers: Vec::new(),
            claims: Vec::new(),
            hosts: Vec::new(),
            methods: Vec::new(),
            paths: Vec::new(),
            headers: Vec::new(),
            source_cidrs: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}
fn leeway() -> Dur {
    Dur(Duration::from_secs(60))
}
fn refresh() -> Dur {
    Dur(Duration::from_secs(600))
}
fn min_refetch() -> Dur {
    Dur(Duration::from_secs(30))
}
fn fetch_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn max_keys() -> usize {
    100_000
}
