//! Compiling JWT providers, listener authorization and route rate limits. Key sets, token
//! caches and rate-limit buckets are carried over from the previous generation while their
//! source (or limit) is unchanged, so a reload neither forgets verified tokens nor resets
//! every client's budget.

use super::Compiler;
use crate::config::{
    AuthorizationConfig, ClaimRuleConfig, ConfigError, EffectConfig, HeaderRuleConfig, JwksSource,
    JwtProviderConfig, Located, ModeConfig, PathRuleConfig, PeerRuleConfig, RateLimitConfig,
    RuleConfig,
};
use crate::enforce::authn::JwtProvider;
use crate::enforce::authz::ListenerAuthz;
use crate::enforce::jwks::{ProviderKeys, RemoteSpec};
use crate::enforce::ratelimit::RouteRateLimit;
use http::HeaderName;
use membrane_policy::authz::{
    Cidr, ClaimTest, Condition, Effect, Glob, HeaderTest, Mode, PathMatch, PeerMatch, Policy, Rule,
};
use membrane_policy::identity::{SpiffeId, check_trust_domain};
use membrane_policy::jwt::{KeySet, Validation};
use membrane_policy::ratelimit::{Buckets, Limit};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// Rate-limit state that outlives a generation, by (listener, route).
pub type RateLimitState = FxHashMap<(Arc<str>, Arc<str>), (Limit, Arc<Buckets>)>;

impl Compiler<'_> {
    pub(super) fn providers(
        &self,
        list: &[JwtProviderConfig],
        prev: Option<&FxHashMap<Arc<str>, Arc<JwtProvider>>>,
    ) -> Result<FxHashMap<Arc<str>, Arc<JwtProvider>>, ConfigError> {
        let mut out = FxHashMap::default();
        for (i, p) in list.iter().enumerate() {
            let at = format!("jwt_providers[{i}]");
            let name: Arc<str> = p.name.value().as_str().into();
            let (source, keys, remote) = match &p.jwks {
                JwksSource::Inline(text) => {
                    let set = self.key_set(text.value(), text, &format!("{at}.jwks.inline"))?;
                    (
                        "inline".to_owned(),
                        Some((text_hash(text.value()), set)),
                        None,
                    )
                }
                JwksSource::File(f) => {
                    let path = self.path(f);
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        self.err(
                            f,
                            format!("{at}.jwks.file"),
                            format!("{}: {e}", path.display()),
                        )
                    })?;
                    let set = self.key_set(&text, f, &format!("{at}.jwks.file"))?;
                    (
                        format!("file:{}", path.display()),
                        Some((text_hash(&text), set)),
                        None,
                    )
                }
                JwksSource::Url(r) => {
                    let f = format!("{at}.jwks.url.url");
                    let url: http::Uri = r
                        .url
                        .value()
                        .parse()
                        .map_err(|e| self.err(&r.url, f.clone(), format!("not a URL: {e}")))?;
                    if url.scheme_str() != Some("https") || url.host().is_none() {
                        return Err(self.err(
                            &r.url,
                            f,
                            "a JWKS URL must be https://host/...".into(),
                        ));
                    }
                    let roots = match &r.trust_bundle {
                        Some(b) => {
                            crate::tls::material::load_bundle(&self.path(b))
                                .map_err(|e| {
                                    self.err(
                                        b,
                                        format!("{at}.jwks.url.trust_bundle"),
                                        e.to_string(),
                                    )
                                })?
                                .0
                        }
                        None => crate::tls::material::system_roots(),
                    };
                    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                        .with_safe_default_protocol_versions()
                        .map_err(|e| self.err(&r.url, at.clone(), e.to_string()))?
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                    let spec = RemoteSpec {
                        url,
                        tls: Arc::new(tls),
                        refresh: r.refresh.0,
                        min_refetch: r.min_refetch.0,
                        timeout: r.timeout.0,
                    };
                    let source = format!(
                        "url:{}|{:?}|{:?}|{:?}",
                        r.url.value(),
                        r.trust_bundle.as_ref().map(|b| b.value()),
                        r.refresh.0,
                        r.min_refetch.0
                    );
                    (source, None, Some(spec))
                }
            };
            let kept = prev
                .and_then(|m| m.get(&name))
                .map(|old| old.keys.clone())
                .filter(|k| k.source == source);
            let keys = match kept {
                Some(k) => {
                    if let Some((hash, set)) = keys {
                        k.replace_if_changed(hash, set);
                    }
                    k
                }
                None => {
                    let is_remote = remote.is_some();
                    let k = ProviderKeys::new(
                        source,
                        KeySet::default(),
                        self.metrics.provider(&name),
                        is_remote,
                    );
                    if let Some((hash, set)) = keys {
                        k.replace_if_changed(hash, set);
                    }
                    if let Some(spec) = remote {
                        k.spawn_fetcher(spec).map_err(|e| {
                            self.err(
                                &p.name,
                                at.clone(),
                                format!("cannot start the JWKS fetcher: {e}"),
                            )
                        })?;
                    }
                    k
                }
            };
            let mut forward = Vec::new();
            for (j, c) in p.forward_claims.iter().enumerate() {
                let h = HeaderName::from_bytes(c.header.value().as_bytes()).map_err(|_| {
                    self.err(
                        &c.header,
                        format!("{at}.forward_claims[{j}].header"),
                        "not a valid header name".into(),
                    )
                })?;
                forward.push((c.claim.clone(), h));
            }
            let provider = JwtProvider {
                name: name.clone(),
                validation: Validation {
                    issuer: p.issuer.clone(),
                    audiences: p.audiences.clone(),
                    leeway: p.leeway.0.as_secs(),
                    require_exp: p.require_exp,
                },
                from: p.from.clone(),
                forward,
                keys,
            };
            if out.insert(name, Arc::new(provider)).is_some() {
                return Err(self.err(
                    &p.name,
                    format!("{at}.name"),
                    "a provider of this name is defined already".into(),
                ));
            }
        }
        Ok(out)
    }

    fn key_set<T>(&self, text: &str, at: &Located<T>, field: &str) -> Result<KeySet, ConfigError> {
        let (set, skipped) = KeySet::from_json(text)
            .map_err(|e| self.err(at, field.to_owned(), format!("not a JWK set: {e}")))?;
        if set.keys.is_empty() {
            let why: Vec<String> = skipped
                .iter()
                .map(|(i, e)| format!("keys[{i}]: {e}"))
                .collect();
            return Err(self.err(
                at,
                field.to_owned(),
                format!("no usable signing key ({})", why.join("; ")),
            ));
        }
        Ok(set)
    }

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
                    PathRuleConfig::Glob(g) => PathMatch::Glob(
                        Glob::new(g.value())
                            .map_err(|e| self.err(g, format!("{f}.paths[{i}].glob"), e))?,
                    ),
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
                    Cidr::parse(c.value())
                        .map_err(|e| self.err(c, format!("{f}.source_cidrs[{i}]"), e))?,
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

    pub(super) fn route_rate_limit(
        &self,
        at: &str,
        listener: &Arc<str>,
        route: &Arc<str>,
        r: &RateLimitConfig,
        prev: Option<&RateLimitState>,
        state: &mut RateLimitState,
    ) -> Result<Arc<RouteRateLimit>, ConfigError> {
        let requests = *r.requests.value();
        let period = r.per.0.as_secs();
        if requests == 0 || period == 0 || period > u64::from(u32::MAX) {
            return Err(self.err(
                &r.requests,
                at.to_owned(),
                "needs at least 1 request per at least 1s".into(),
            ));
        }
        let limit = Limit {
            requests,
            period_secs: period as u32,
            burst: r.burst.unwrap_or(requests).max(1),
        };
        let key = (listener.clone(), route.clone());
        let buckets = prev
            .and_then(|p| p.get(&key))
            .filter(|(l, _)| *l == limit)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| Arc::new(Buckets::new(limit, r.max_keys.max(1))));
        state.insert(key, (limit, buckets.clone()));
        let (allowed, limited) = self.metrics.rate_limit(listener, route);
        Ok(Arc::new(RouteRateLimit {
            buckets,
            key: r.key.clone(),
            epoch: *EPOCH,
            allowed,
            limited,
        }))
    }
}

/// One clock origin for every bucket of the process, so carried-over buckets stay valid.
static EPOCH: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    text.hash(&mut h);
    // 0 means "nothing loaded yet".
    h.finish().max(1)
}
