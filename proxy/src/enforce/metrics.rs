//! Policy metrics, registered by this subsystem: JWT checks by result, remote key set
//! fetches, key counts and ages, authorization decisions by rule, rate limit checks.

use membrane_policy::authz::{Decision, Effect, Mode, Policy};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A JWT check's result: verified, taken from the cache, or why it failed.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum JwtResult {
    Verified,
    Cached,
    Missing,
    Malformed,
    Algorithm,
    Crit,
    UnknownKey,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    Claims,
}

impl JwtResult {
    /// Every value, in the order of the variants (`JwtResult as usize` indexes it).
    pub const ALL: [JwtResult; 13] = [
        JwtResult::Verified,
        JwtResult::Cached,
        JwtResult::Missing,
        JwtResult::Malformed,
        JwtResult::Algorithm,
        JwtResult::Crit,
        JwtResult::UnknownKey,
        JwtResult::Signature,
        JwtResult::Expired,
        JwtResult::NotYetValid,
        JwtResult::Issuer,
        JwtResult::Audience,
        JwtResult::Claims,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JwtResult::Verified => "verified",
            JwtResult::Cached => "cached",
            JwtResult::Missing => "missing",
            JwtResult::Malformed => "malformed",
            JwtResult::Algorithm => "algorithm",
            JwtResult::Crit => "crit",
            JwtResult::UnknownKey => "unknown_key",
            JwtResult::Signature => "signature",
            JwtResult::Expired => "expired",
            JwtResult::NotYetValid => "not_yet_valid",
            JwtResult::Issuer => "issuer",
            JwtResult::Audience => "audience",
            JwtResult::Claims => "claims",
        }
    }
}
crate::label_value!(JwtResult);

/// Fixed label values of the other policy metrics.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Value {
    Ok,
    Failed,
    Allow,
    Deny,
    Enforce,
    DryRun,
    Allowed,
    Limited,
}

impl Value {
    pub fn as_str(self) -> &'static str {
        match self {
            Value::Ok => "ok",
            Value::Failed => "failed",
            Value::Allow => "allow",
            Value::Deny => "deny",
            Value::Enforce => "enforce",
            Value::DryRun => "dry_run",
            Value::Allowed => "allowed",
            Value::Limited => "limited",
        }
    }
}
crate::label_value!(Value);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JwtLabels {
    provider: String,
    result: JwtResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    provider: String,
    result: Value,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    policy: String,
    rule: String,
    decision: Value,
    mode: Value,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitLabels {
    listener: String,
    route: String,
    result: Value,
}

#[derive(Debug, Clone)]
pub struct PolicyFamilies {
    jwt: Family<JwtLabels, Counter>,
    jwks_fetches: Family<FetchLabels, Counter>,
    jwks_keys: Family<ProviderLabels, Gauge>,
    jwks_age: Family<ProviderLabels, Gauge>,
    decisions: Family<DecisionLabels, Counter>,
    rate_limits: Family<RateLimitLabels, Counter>,
}

impl PolicyFamilies {
    pub fn register(registry: &mut Registry) -> Self {
        let f = Self {
            jwt: Family::default(),
            jwks_fetches: Family::default(),
            jwks_keys: Family::default(),
            jwks_age: Family::default(),
            decisions: Family::default(),
            rate_limits: Family::default(),
        };
        registry.register(
            "jwt_validations",
            "JWT checks by provider and result (verified, cached, or why not)",
            f.jwt.clone(),
        );
        registry.register(
            "jwks_fetches",
            "Remote JWK set fetches by provider and result",
            f.jwks_fetches.clone(),
        );
        registry.register(
            "jwks_keys",
            "Signing keys loaded, by provider",
            f.jwks_keys.clone(),
        );
        registry.register(
            "jwks_age_seconds",
            "Seconds since each provider's key set was loaded",
            f.jwks_age.clone(),
        );
        registry.register(
            "authz_decisions",
            "Authorization decisions by policy, deciding rule, decision and mode",
            f.decisions.clone(),
        );
        registry.register(
            "rate_limit_checks",
            "Rate limit checks by listener, route and result (allowed, limited)",
            f.rate_limits.clone(),
        );
        f
    }

    pub fn provider(&self, provider: &str) -> ProviderMetrics {
        let fetch = |result| {
            self.jwks_fetches
                .get_or_create(&FetchLabels {
                    provider: provider.to_owned(),
                    result,
                })
                .clone()
        };
        let l = ProviderLabels {
            provider: provider.to_owned(),
        };
        ProviderMetrics {
            results: JwtResult::ALL.map(|result| {
                self.jwt
                    .get_or_create(&JwtLabels {
                        provider: provider.to_owned(),
                        result,
                    })
                    .clone()
            }),
            fetch_ok: fetch(Value::Ok),
            fetch_failed: fetch(Value::Failed),
            keys: self.jwks_keys.get_or_create(&l).clone(),
            age: self.jwks_age.get_or_create(&l).clone(),
        }
    }

    /// One counter per rule of a policy (by its effect) and one per default outcome.
    pub fn authz(&self, policy: &Policy) -> AuthzCounters {
        let mode = match policy.mode {
            Mode::Enforce => Value::Enforce,
            Mode::DryRun => Value::DryRun,
        };
        let effect = |e: Effect| match e {
            Effect::Allow => Value::Allow,
            Effect::Deny => Value::Deny,
        };
        let counter = |rule: &str, decision| {
            self.decisions
                .get_or_create(&DecisionLabels {
                    policy: policy.name.clone(),
                    rule: rule.to_owned(),
                    decision,
                    mode,
                })
                .clone()
        };
        AuthzCounters {
            rules: policy
                .rules()
                .iter()
                .map(|r| counter(&r.name, effect(r.effect)))
                .collect(),
            default: counter("default", effect(policy.default)),
        }
    }

    /// The allowed and limited counters of a route's rate limit.
    pub fn rate_limit(&self, listener: &str, route: &str) -> (Counter, Counter) {
        let c = |result| {
            self.rate_limits
                .get_or_create(&RateLimitLabels {
                    listener: listener.to_owned(),
                    route: route.to_owned(),
                    result,
                })
                .clone()
        };
        (c(Value::Allowed), c(Value::Limited))
    }
}

#[derive(Debug, Clone)]
pub struct ProviderMetrics {
    /// By `JwtResult as usize`.
    results: [Counter; JwtResult::ALL.len()],
    pub fetch_ok: Counter,
    pub fetch_failed: Counter,
    pub keys: Gauge,
    pub age: Gauge,
}

impl ProviderMetrics {
    pub fn count(&self, result: JwtResult) {
        self.results[result as usize].inc();
    }
}

#[derive(Debug, Clone)]
pub struct AuthzCounters {
    rules: Box<[Counter]>,
    default: Counter,
}

impl AuthzCounters {
    pub fn count(&self, d: &Decision) {
        match d.rule.and_then(|i| self.rules.get(i)) {
            Some(c) => c.inc(),
            None => self.default.inc(),
        };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_lists_every_result_at_its_index() {
        for (i, r) in super::JwtResult::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.as_str());
        }
    }
}
