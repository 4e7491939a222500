//! xDS resources (membrane.v1) to the typed bootstrap (`config::Bootstrap`), the same
//! structs a bootstrap file parses into: one set of checks (the compiler's) for both, and
//! the applied generation is written to the state directory as what these structs
//! serialize to, to boot from. A field renamed in `config` breaks this file's build, not
//! xDS at run time.
//!
//! Every resource converts on its own (`TryFrom`, or a function where a listener or
//! cluster needs the trust bundles); a resource that does not decode or convert is refused
//! with the field and the reason, and the others go on.

use crate::config::{
    AdminConfig, AuthorizationConfig, Bootstrap, CertKeyConfig, ClaimRuleConfig, ClientAuth,
    ClusterConfig, ClusterTlsConfig, DirectResponseConfig, EffectConfig, ForwardConfig, JwksSource,
    JwtProviderConfig, ListenerConfig, ListenerProtocol, ListenerTlsConfig, Located, ModeConfig,
    Owner, PathMatchConfig, PathRuleConfig, PeerRuleConfig, RateKeyConfig, RateLimitConfig,
    RemoteJwksConfig, RouteConfig, RouteJwtConfig, RuleConfig, UpstreamProtocol, UpstreamVerify,
    VirtualHostConfig,
};
use membrane_api::proto::membrane::v1 as pb;
use membrane_api::types::{TYPE_CLUSTER, TYPE_JWT_PROVIDER, TYPE_LISTENER, TYPE_TRUST_BUNDLE};
use prost::Message;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A resource's key: type URL and name.
pub type Key = (String, String);

/// Why one resource cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("not a {kind}: {message}")]
    Decode { kind: &'static str, message: String },
    #[error("field `{field}`: {message}")]
    Field { field: String, message: String },
}

fn field(field: impl Into<String>, message: impl Into<String>) -> ResourceError {
    ResourceError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// A resource refused before compiling.
pub struct Refused {
    pub key: Key,
    pub error: ResourceError,
}

/// The resource each `listeners[i]`, `clusters[i]` and `jwt_providers[i]` came from, so
/// that a compile error (which names its owner) refuses that resource.
#[derive(Default)]
pub struct Origins {
    listeners: Vec<Key>,
    clusters: Vec<Key>,
    jwt_providers: Vec<Key>,
}

impl Origins {
    pub fn of(&self, owner: Owner) -> Option<&Key> {
        match owner {
            Owner::Listener(i) => self.listeners.get(i),
            Owner::Cluster(i) => self.clusters.get(i),
            Owner::JwtProvider(i) => self.jwt_providers.get(i),
        }
    }
}

pub struct Converted {
    pub config: Bootstrap,
    pub origins: Origins,
    /// Trust bundles by the path the configuration names them with, written to the state
    /// directory once the generation is accepted.
    pub bundles: FxHashMap<PathBuf, Arc<[u8]>>,
}

/// Trust bundle names to their paths in the state directory.
/// The files on the gateway that resources name: trust bundles by name (written from
/// TrustBundle resources) and the gateway's own SVID (`own_svid`), when it has one.
struct Bundles(
    BTreeMap<String, (PathBuf, Vec<String>)>,
    Option<(PathBuf, PathBuf)>,
);

impl Bundles {
    /// The certificate and key a resource's TLS names: its files, or the gateway's own SVID.
    fn cert_key(
        &self,
        own_svid: bool,
        cert: &str,
        key: &str,
        at: &str,
    ) -> Result<CertKeyConfig, ResourceError> {
        if !own_svid {
            return Ok(CertKeyConfig::new(
                cert.to_owned().into(),
                key.to_owned().into(),
            ));
        }
        if !cert.is_empty() || !key.is_empty() {
            return Err(field(
                at,
                "own_svid and certificate files exclude each other",
            ));
        }
        let (cert, key) = self.1.clone().ok_or_else(|| {
            field(
                at,
                "asks for the gateway's own SVID, and this gateway has none: start it with https:// and a join token",
            )
        })?;
        Ok(CertKeyConfig::new(cert, key))
    }

    fn path(&self, name: &str, at: &str) -> Result<Located<PathBuf>, ResourceError> {
        self.0
            .get(name)
            .map(|(p, _)| p.clone().into())
            .ok_or_else(|| {
                field(
                    at,
                    format!("names trust bundle `{name}`, which the control server has not sent"),
                )
            })
    }

    /// The deny list sent with bundle `name` (empty for an unknown one, which `path`
    /// refuses).
    fn revoked(&self, name: &str) -> Vec<Located<String>> {
        self.0
            .get(name)
            .map(|(_, r)| r.iter().cloned().map(Located::from).collect())
            .unwrap_or_default()
    }
}

fn decode<M: Message + Default>(
    kind: &'static str,
    any: &prost_types::Any,
) -> Result<M, ResourceError> {
    M::decode(any.value.as_slice()).map_err(|e| ResourceError::Decode {
        kind,
        message: e.to_string(),
    })
}

/// The bootstrap for the admin address and state directory from `resources`, and the
/// resources refused on the way.
pub fn convert(
    resources: &BTreeMap<Key, prost_types::Any>,
    admin: SocketAddr,
    state_dir: &Path,
) -> (Converted, Vec<Refused>) {
    let mut refused = Vec::new();
    let mut config = Bootstrap {
        admin: AdminConfig { address: admin },
        ..Bootstrap::default()
    };
    let mut bundles = Bundles(BTreeMap::new(), super::identity::own_files(state_dir));
    let mut bundle_files = FxHashMap::default();
    let mut origins = Origins::default();
    for (key, any) in resources
        .iter()
        .filter(|((ty, _), _)| ty == TYPE_TRUST_BUNDLE)
    {
        match decode::<pb::TrustBundle>("TrustBundle", any) {
            Ok(b) => {
                let path = state_dir.join(format!("trust-{}.pem", file_name(&b.name)));
                bundles.0.insert(b.name, (path.clone(), b.revoked));
                bundle_files.insert(path, Arc::from(b.pem.into_bytes()));
            }
            Err(error) => refused.push(Refused {
                key: key.clone(),
                error,
            }),
        }
    }
    (config.clusters, origins.clusters) = each(resources, TYPE_CLUSTER, &mut refused, |any| {
        decode("Cluster", any).and_then(|c| cluster(&c, &bundles))
    });
    (config.jwt_providers, origins.jwt_providers) =
        each(resources, TYPE_JWT_PROVIDER, &mut refused, |any| {
            decode::<pb::JwtProvider>("JwtProvider", any)
                .and_then(|p| JwtProviderConfig::try_from(&p))
        });
    (config.listeners, origins.listeners) = each(resources, TYPE_LISTENER, &mut refused, |any| {
        decode("Listener", any).and_then(|l| listener(&l, &bundles))
    });
    (
        Converted {
            config,
            origins,
            bundles: bundle_files,
        },
        refused,
    )
}

/// Converts every resource of type `t` on its own: the ones that convert, each with the
/// resource it came from; the others are refused.
fn each<T>(
    resources: &BTreeMap<Key, prost_types::Any>,
    t: &str,
    refused: &mut Vec<Refused>,
    convert: impl Fn(&prost_types::Any) -> Result<T, ResourceError>,
) -> (Vec<T>, Vec<Key>) {
    let mut kept = (Vec::new(), Vec::new());
    for (key, any) in resources.iter().filter(|((ty, _), _)| ty == t) {
        match convert(any) {
            Ok(v) => {
                kept.0.push(v);
                kept.1.push(key.clone());
            }
            Err(error) => refused.push(Refused {
                key: key.clone(),
                error,
            }),
        }
    }
    kept
}

fn enum_value<E: TryFrom<i32>>(value: i32, at: &str) -> Result<E, ResourceError> {
    E::try_from(value).map_err(|_| field(at, format!("{value} is not a known value")))
}

fn listener(l: &pb::Listener, bundles: &Bundles) -> Result<ListenerConfig, ResourceError> {
    let address = l
        .address
        .parse()
        .map_err(|_| field("address", format!("`{}` is not ip:port", l.address)))?;
    let mut out = ListenerConfig::new(l.name.clone(), address);
    out.protocol = match enum_value(l.protocol, "protocol")? {
        pb::Protocol::Auto => ListenerProtocol::Auto,
        pb::Protocol::Http1 => ListenerProtocol::Http1,
        pb::Protocol::Http2 => ListenerProtocol::Http2,
    };
    if let Some(t) = &l.tls {
        let mut tls = ListenerTlsConfig::new(vec![bundles.cert_key(
            t.own_svid,
            &t.certificate_file,
            &t.key_file,
            "tls.own_svid",
        )?]);
        tls.client_auth = match enum_value(t.client_auth, "tls.client_auth")? {
            pb::ClientAuth::None => ClientAuth::None,
            pb::ClientAuth::Optional => ClientAuth::Optional,
            pb::ClientAuth::Require => ClientAuth::Require,
        };
        if !t.trust_bundle.is_empty() {
            tls.trust_bundle = Some(bundles.path(&t.trust_bundle, "tls.trust_bundle")?);
            tls.trust_domains = t.trust_domains.iter().cloned().map(Located::from).collect();
            tls.revoked = bundles.revoked(&t.trust_bundle);
        }
        out.tls = Some(tls);
    }
    if let Some(log) = &l.access_log {
        // The message is there to turn the log on: `off` is not a target here.
        out.access_log = match crate::access_log::AccessLogTarget::parse(&log.to) {
            Ok(crate::access_log::AccessLogTarget::Off) => {
                return Err(field("access_log.to", "give stdout, stderr or a file path"));
            }
            other => other.map_err(|e| field("access_log.to", e))?,
        };
        out.access_log_fields = log.fields.iter().cloned().map(Located::from).collect();
        out.access_log_sample = log.sample.unwrap_or(1.0);
    }
    if let Some(a) = &l.authorization {
        let mut rules = Vec::with_capacity(a.rules.len());
        for (i, r) in a.rules.iter().enumerate() {
            rules.push(
                RuleConfig::try_from(r)
                    .map_err(|e| nested(e, &format!("authorization.rules[{i}]")))?,
            );
        }
        out.authorization = Some(AuthorizationConfig {
            default: Some(effect(a.default_effect, "authorization.default_effect")?),
            mode: if a.dry_run {
                ModeConfig::DryRun
            } else {
                ModeConfig::Enforce
            },
            rules,
        });
    }
    // A virtual host per named host, in order of first mention, then `*` for the rest.
    let mut hosts: Vec<&str> = Vec::new();
    for r in &l.routes {
        if !r.host.is_empty() && !hosts.contains(&r.host.as_str()) {
            hosts.push(&r.host);
        }
    }
    let vhost = |name: &str,
                 domain: &str,
                 host: &str|
     -> Result<VirtualHostConfig, ResourceError> {
        let mut routes = Vec::new();
        for (i, r) in l.routes.iter().enumerate().filter(|(_, r)| r.host == host) {
            routes.push(RouteConfig::try_from(r).map_err(|e| nested(e, &format!("routes[{i}]")))?);
        }
        Ok(VirtualHostConfig {
            name: name.to_owned(),
            domains: vec![domain.to_owned().into()],
            routes,
        })
    };
    for h in &hosts {
        out.virtual_hosts.push(vhost(h, h, h)?);
    }
    if l.routes.iter().any(|r| r.host.is_empty()) {
        out.virtual_hosts.push(vhost("all", "*", "")?);
    }
    Ok(out)
}

/// An error of a part, named from the resource.
fn nested(e: ResourceError, at: &str) -> ResourceError {
    match e {
        ResourceError::Field { field: f, message } => field(format!("{at}.{f}"), message),
        other => other,
    }
}

fn effect(e: i32, at: &str) -> Result<EffectConfig, ResourceError> {
    Ok(match enum_value(e, at)? {
        pb::Effect::Allow => EffectConfig::Allow,
        pb::Effect::Deny => EffectConfig::Deny,
    })
}

impl TryFrom<&pb::Rule> for RuleConfig {
    type Error = ResourceError;

    fn try_from(r: &pb::Rule) -> Result<Self, ResourceError> {
        let mut out = RuleConfig::new(r.name.clone(), effect(r.effect, "effect")?);
        out.peers = r
            .peer_spiffe_ids
            .iter()
            .map(|id| PeerRuleConfig::SpiffeId(id.clone().into()))
            .chain(
                r.peer_prefixes
                    .iter()
                    .map(|p| PeerRuleConfig::Prefix(p.clone().into())),
            )
            .collect();
        out.methods = r.methods.iter().cloned().map(Located::from).collect();
        out.paths = r
            .path_prefixes
            .iter()
            .map(|p| PathRuleConfig::Prefix(p.clone()))
            .collect();
        for (i, c) in r.claims.iter().enumerate() {
            let (equals, contains) = match (c.equals.is_empty(), c.contains.is_empty()) {
                (false, true) => (Some(c.equals.clone()), None),
                (true, false) => (None, Some(c.contains.clone())),
                _ => {
                    return Err(field(
                        format!("claims[{i}]"),
                        "give exactly one of equals or contains",
                    ));
                }
            };
            out.claims.push(ClaimRuleConfig {
                claim: c.claim.clone().into(),
                equals,
                contains,
                present: None,
            });
        }
        Ok(out)
    }
}

/// The body of the answer to a route that is not exposed (a route without a cluster).
const NOT_EXPOSED: &str = "refused by the gateway: not exposed or not allowed\n";

impl TryFrom<&pb::Route> for RouteConfig {
    type Error = ResourceError;

    fn try_from(r: &pb::Route) -> Result<Self, ResourceError> {
        let mut out = RouteConfig::new(r.name.clone());
        out.matcher.path = Some(PathMatchConfig::Prefix(r.path_prefix.clone().into()));
        if r.cluster.is_empty() {
            let status = match r.direct_status {
                0 => 404,
                s => u16::try_from(s)
                    .map_err(|_| field("direct_status", format!("{s} is not a status")))?,
            };
            out.direct_response = Some(DirectResponseConfig::new(status, NOT_EXPOSED.into()));
        } else {
            let mut fw = ForwardConfig::new(r.cluster.clone());
            if !r.prefix_rewrite.is_empty() {
                fw.prefix_rewrite = Some(r.prefix_rewrite.clone().into());
            }
            out.forward = Some(fw);
        }
        if !r.jwt_provider.is_empty() {
            out.jwt = Some(RouteJwtConfig {
                provider: r.jwt_provider.clone().into(),
                required: r.jwt_required,
            });
        }
        if let Some(rl) = &r.rate_limit {
            out.rate_limit =
                Some(RateLimitConfig::try_from(rl).map_err(|e| nested(e, "rate_limit"))?);
        }
        Ok(out)
    }
}

impl TryFrom<&pb::RateLimit> for RateLimitConfig {
    type Error = ResourceError;

    fn try_from(rl: &pb::RateLimit) -> Result<Self, ResourceError> {
        if rl.per_seconds == 0 {
            return Err(field("per_seconds", "must be at least 1"));
        }
        let mut out = RateLimitConfig::new(rl.requests, Duration::from_secs(rl.per_seconds.into()));
        // proto3: 0 is "not given", the default (as many as `requests`).
        out.burst = (rl.burst != 0).then_some(rl.burst);
        out.key = match rl.key.as_str() {
            "" | "client_ip" => RateKeyConfig::ClientIp,
            "peer" => RateKeyConfig::Peer,
            other => {
                return Err(field(
                    "key",
                    format!("`{other}` is not a key; use client_ip or peer"),
                ));
            }
        };
        Ok(out)
    }
}

fn cluster(c: &pb::Cluster, bundles: &Bundles) -> Result<ClusterConfig, ResourceError> {
    let mut out = ClusterConfig::new(c.name.clone(), c.endpoints.clone());
    out.protocol = match enum_value(c.protocol, "protocol")? {
        pb::Protocol::Http1 | pb::Protocol::Auto => UpstreamProtocol::Http1,
        pb::Protocol::Http2 => UpstreamProtocol::Http2,
    };
    if let Some(t) = &c.tls {
        let mut tls = ClusterTlsConfig::new(t.sni.clone());
        if !t.trust_bundle.is_empty() {
            tls.trust_bundle = Some(bundles.path(&t.trust_bundle, "tls.trust_bundle")?);
            tls.revoked = bundles.revoked(&t.trust_bundle);
        }
        if !t.spiffe_id.is_empty() {
            tls.verify = Some(UpstreamVerify::SpiffeId(t.spiffe_id.clone().into()));
        }
        if !t.certificate_file.is_empty() || t.own_svid {
            tls.client_certificate = Some(bundles.cert_key(
                t.own_svid,
                &t.certificate_file,
                &t.key_file,
                "tls.own_svid",
            )?);
        }
        out.tls = Some(tls);
    }
    resilience::apply(c, &mut out)?;
    Ok(out)
}

impl TryFrom<&pb::JwtProvider> for JwtProviderConfig {
    type Error = ResourceError;

    fn try_from(p: &pb::JwtProvider) -> Result<Self, ResourceError> {
        let jwks = match (p.jwks_inline.is_empty(), p.jwks_url.is_empty()) {
            (false, true) => JwksSource::Inline(p.jwks_inline.clone().into()),
            (true, false) => JwksSource::Url(RemoteJwksConfig::new(p.jwks_url.clone())),
            _ => {
                return Err(field(
                    "jwks_inline",
                    "give exactly one of jwks_inline or jwks_url",
                ));
            }
        };
        let mut out = JwtProviderConfig::new(p.name.clone(), jwks);
        out.issuer = (!p.issuer.is_empty()).then(|| p.issuer.clone());
        out.audiences = p.audiences.clone();
        Ok(out)
    }
}

/// A bundle's name as a file name.
fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

mod resilience;
#[cfg(test)]
mod tests;
