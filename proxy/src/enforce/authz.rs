//! A listener's authorization policy with a counter for each way it can decide.

use super::metrics::AuthzCounters;
use http::HeaderMap;
use membrane_policy::authz::{Decision, Effect, Headers, Mode, Policy};

pub struct ListenerAuthz {
    pub policy: Policy,
    pub counters: AuthzCounters,
}

impl ListenerAuthz {
    /// Counts a decision; true when the request may go on (allowed, or dry-run).
    pub fn apply(&self, d: &Decision) -> bool {
        self.counters.count(d);
        let enforce = self.policy.mode == Mode::Enforce;
        if d.effect == Effect::Deny && !enforce {
            tracing::info!(
                policy = %self.policy.name,
                rule = %self.policy.rule_name(d),
                "dry-run policy would deny this request"
            );
        }
        d.effect == Effect::Allow || !enforce
    }
}

/// Request headers as the policy crate reads them.
pub struct HeaderView<'a>(pub &'a HeaderMap);

impl Headers for HeaderView<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}
