//! Compiling a listener's authorization: its rules (peers, claims, hosts, methods, paths,
//! headers, source addresses), default and mode. A rule that no normalized request could
//! match is refused: a deny rule written so would be a hole that looks closed.

use super::Compiler;
use crate::config::{
    AuthorizationConfig, ClaimRuleConfig, ConfigError, EffectConfig, HeaderRuleConfig, ModeConfig,
    PathRuleConfig, PeerRuleConfig, RuleConfig,
};
use crate::enforce::authz::ListenerAuthz;
use http::HeaderName;
use membrane_policy::authz::{
    Cidr, ClaimTest, Condition, Effect, Glob, HeaderTest, Mode, PathMatch, PeerMatch, Policy, Rule,
};
use membrane_policy::identity::{SpiffeId, check_trust_domain};
use rustc_hash::FxHashMap;

impl Compiler<'_> {
    pub(super) fn listener_authz(
        &self,
        at: &str,
        listener: &str,
        a: &AuthorizationConfig,
        inter_cell: bool,
        norm: &crate::normalize::Rules,
    ) -> Result<ListenerAuthz, ConfigError> {
        let mut rules = Vec::with_capacity(a.rules.len());
        let mut names = FxHashMap::default();
        for (i, r) in a.rules.iter().enumerate() {
            let f = format!("{at}.rules[{i}]");
            if names.insert(r.name.value().clone(), ()).is_some() {
                return Err(self.err(
                    &r.name,
                    format!("{f}.name"),
                    "rule names must be unique in a policy (they label metrics)".into(),
                ));
            }
            rules.push(self.rule(&f, r, norm)?);
        }
        let default = match a.default {
            Some(EffectConfig::Allow) => Effect::Allow,
            Some(EffectConfig::Deny) => Effect::Deny,
            None if inter_cell => Effect::Deny,
            None => Effect::Allow,
        };
        let mode = match a.mode {
            ModeConfig::Enforce => Mode::Enforce,
            ModeConfig::DryRun => Mode::DryRun,
        };
        let policy = Policy::compile(listener, rules, default, mode);
        let counters = self.metrics.authz(&policy);
        Ok(ListenerAuthz { policy, counters })
    }

    fn rule(
        &self,
        f: &str,
        r: &RuleConfig,
        norm: &crate::normalize::Rules,
    ) -> Result<Rule, ConfigError> {
        let mut when = Vec::new();
        if !r.peers.is_empty() {
            let mut list = Vec::new();
            for (i, p) in r.peers.iter().enumerate() {
                let pf = format!("{f}.peers[{i}]");
                list.push(match p {
                    PeerRuleConfig::SpiffeId(id) => PeerMatch::Exact(
                        SpiffeId::parse(id.value())
                            .map_err(|e| self.err(id, format!("{pf}.spiffe_id"), e.to_string()))?,
                    ),
                    PeerRuleConfig::Prefix(pre) => {
                        if !pre.value().starts_with("spiffe://") {
                            return Err(self.err(
                                pre,
                                format!("{pf}.prefix"),
                                "a SPIFFE ID prefix starts with `spiffe://`".into(),
                            ));
                        }
                        PeerMatch::Prefix(pre.value().clone())
                    }
                    PeerRuleConfig::TrustDomain(d) => {
                        check_trust_domain(d.value()).map_err(|e| {
                            self.err(d, format!("{pf}.trust_domain"), e.to_string())
                        })?;
                        PeerMatch::TrustDomain(d.value().clone())
                    }
                    PeerRuleConfig::Cell(c) => PeerMatch::Cell(c.clone()),
                    PeerRuleConfig::Any(_) => PeerMatch::Any,
                });
            }
            when.push(Condition::Peer(list));
        }
        for (i, c) in r.claims.iter().enumerate() {
            when.push(self.claim_rule(&format!("{f}.claims[{i}]"), c)?);
        }
        if !r.hosts.is_empty() {
            // Requests are matched by their canonical host (`normalize::authority`): the
            // rule's hosts are made canonical the same way, or `Admin.test.` would never
            // match anything.
            let mut list = Vec::new();
            for (i, h) in r.hosts.iter().enumerate() {
                let canon = crate::normalize::authority::canonical(h, 0)
                    .ok()
                    .filter(|a| a.host().len() == a.text.len())
                    .ok_or_else(|| {
                        self.err(
                            &r.name,
                            format!("{f}.hosts[{i}]"),
                            format!("`{h}` is not a host name (no port, no scheme)"),
                        )
                    })?;
                list.push(canon.text.into_owned());
            }
            when.push(Condition::Host(list));
        }
        if !r.methods.is_empty() {
            let mut list = Vec::new();
            for (i, m) in r.methods.iter().enumerate() {
                if m.value().is_empty() || !m.value().bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(self.err(
                        m,
                        format!("{f}.methods[{i}]"),
                        "methods are upper case, e.g. GET".into(),
                    ));
                }
                list.push(m.value().clone());
            }
            when.push(Condition::Method(list));
        }
        if !r.paths.is_empty() {
            let mut list = Vec::new();
            for (i, p) in r.paths.iter().enumerate() {
                // A rule path that no normalized request can have would never match: a
                // deny rule written so would be a hole that looks closed.
                let (text, kind) = match p {
                    PathRuleConfig::Exact(e) => (e.as_str(), "exact"),
                    PathRuleConfig::Prefix(pre) => (pre.as_str(), "prefix"),
                    PathRuleConfig::Glob(g) => (g.value().as_str(), "glob"),
                };
                let literal = text.replace('*', "x");
                match crate::normalize::path::normalize(&literal, &norm.path) {
                    Ok(n) if n == literal.as_str() => {}
                    Ok(n) => {
                        let hint = if kind == "glob" {
                            "no `.` or `..` segments, no `//`, no needless %-encoding".to_owned()
                        } else {
                            format!("write `{n}`")
                        };
                        return Err(self.err(
                            &r.name,
                            format!("{f}.paths[{i}].{kind}"),
                            format!(
                                "`{text}` would never match: requests are matched after normalization ({hint})"
                            ),
                        ));
                    }
                    Err(e) => {
                        return Err(self.err(
                            &r.name,
                            format!("{f}.paths[{i}].{kind}"),
                            format!("`{text}` would never match: {e}"),
                        ));
                    }
                }
                list.push(match p {
                    PathRuleConfig::Exact(e) => PathMatch::Exact(e.clone()),
                    PathRuleConfig::Prefix(pre) => PathMatch::Prefix(pre.clone()),
                    PathRuleConfig::Glob(g) => {
                        PathMatch::Glob(Glob::new(g.value()).map_err(|e| {
                            self.err(g, format!("{f}.paths[{i}].glob"), e.to_string())
                        })?)
                    }
                });
            }
            when.push(Condition::Path(list));
        }
        for (i, h) in r.headers.iter().enumerate() {
            if h.name.value().contains('_')
                && norm.underscores != crate::normalize::Underscores::Allow
            {
                return Err(self.err(
                    &h.name,
                    format!("{f}.headers[{i}].name"),
                    format!(
                        "`{}` has `_`, and this listener never lets such a header through (normalization.headers_with_underscores)",
                        h.name.value()
                    ),
                ));
            }
            when.push(self.header_rule(&format!("{f}.headers[{i}]"), h)?);
        }
        if !r.source_cidrs.is_empty() {
            let mut list = Vec::new();
            for (i, c) in r.source_cidrs.iter().enumerate() {
                list.push(
                    Cidr::parse(c.value()).map_err(|e| {
                        self.err(c, format!("{f}.source_cidrs[{i}]"), e.to_string())
                    })?,
                );
            }
            when.push(Condition::Source(list));
        }
        Ok(Rule {
            name: r.name.value().clone(),
            effect: match r.action {
                EffectConfig::Allow => Effect::Allow,
                EffectConfig::Deny => Effect::Deny,
            },
            when,
        })
    }

    fn claim_rule(&self, f: &str, c: &ClaimRuleConfig) -> Result<Condition, ConfigError> {
        let test = match (&c.equals, &c.contains, c.present) {
            (Some(v), None, None) => ClaimTest::Equals(v.clone()),
            (None, Some(v), None) => ClaimTest::Contains(v.clone()),
            (None, None, Some(true)) => ClaimTest::Present,
            _ => {
                return Err(self.err(
                    &c.claim,
                    f.to_owned(),
                    "give exactly one of equals, contains or present: true".into(),
                ));
            }
        };
        Ok(Condition::Claim {
            path: c.claim.value().clone(),
            test,
        })
    }

    fn header_rule(&self, f: &str, h: &HeaderRuleConfig) -> Result<Condition, ConfigError> {
        let name = h.name.value().to_ascii_lowercase();
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(self.err(
                &h.name,
                format!("{f}.name"),
                "not a valid header name".into(),
            ));
        }
        let test = match (&h.exact, &h.prefix, h.present) {
            (Some(v), None, None) => HeaderTest::Exact(v.clone()),
            (None, Some(v), None) => HeaderTest::Prefix(v.clone()),
            (None, None, Some(true)) => HeaderTest::Present,
            (None, None, Some(false)) => HeaderTest::Absent,
            _ => {
                return Err(self.err(
                    &h.name,
                    f.to_owned(),
                    "give exactly one of exact, prefix or present".into(),
                ));
            }
        };
        Ok(Condition::Header { name, test })
    }
}
