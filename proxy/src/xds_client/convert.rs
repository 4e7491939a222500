//! xDS resources (membrane.v1) to a bootstrap document the proxy compiles like a file.
//! Going through the same parser and compiler as a config file means one set of checks for
//! both, and the applied generation can be written to the state directory and booted from.

use membrane_api::proto::membrane::v1 as pb;
use membrane_api::types::{TYPE_CLUSTER, TYPE_JWT_PROVIDER, TYPE_LISTENER, TYPE_TRUST_BUNDLE};
use prost::Message;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A resource's key: type URL and name.
pub type Key = (String, String);

/// The document, and which resource each `listeners[i]`, `clusters[i]` and
/// `jwt_providers[i]` came from (to pin a compile error on its resource).
pub struct Converted {
    pub document: Value,
    pub origin: BTreeMap<String, Key>,
    /// Trust bundles to write before compiling: path → PEM.
    pub files: Vec<(PathBuf, String)>,
}

/// Resources that did not even decode, with the reason.
pub type Undecodable = Vec<(Key, String)>;

fn protocol(p: i32) -> &'static str {
    match pb::Protocol::try_from(p) {
        Ok(pb::Protocol::Http1) => "http1",
        Ok(pb::Protocol::Http2) => "http2",
        _ => "auto",
    }
}

fn effect(e: i32) -> &'static str {
    match pb::Effect::try_from(e) {
        Ok(pb::Effect::Deny) => "deny",
        _ => "allow",
    }
}

/// Builds the bootstrap for the admin address and state directory from `resources`.
pub fn convert(
    resources: &BTreeMap<Key, prost_types::Any>,
    admin: SocketAddr,
    state_dir: &Path,
) -> (Converted, Undecodable) {
    let mut bad = Vec::new();
    let mut files = Vec::new();
    let mut bundles = BTreeMap::new();
    for (key, any) in resources
        .iter()
        .filter(|((t, _), _)| t == TYPE_TRUST_BUNDLE)
    {
        match pb::TrustBundle::decode(any.value.as_slice()) {
            Ok(b) => {
                let path = state_dir.join(format!("trust-{}.pem", sanitize(&b.name)));
                bundles.insert(b.name.clone(), path.clone());
                files.push((path, b.pem));
            }
            Err(e) => bad.push((key.clone(), format!("not a TrustBundle: {e}"))),
        }
    }
    let bundle_path = |name: &str| {
        bundles
            .get(name)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("missing-trust-bundle-{name}"))
    };
    let mut origin = BTreeMap::new();
    let mut listeners = Vec::new();
    for (key, any) in resources.iter().filter(|((t, _), _)| t == TYPE_LISTENER) {
        let l = match pb::Listener::decode(any.value.as_slice()) {
            Ok(l) => l,
            Err(e) => {
                bad.push((key.clone(), format!("not a Listener: {e}")));
                continue;
            }
        };
        let mut doc =
            json!({"name": l.name, "address": l.address, "protocol": protocol(l.protocol)});
        if let Some(t) = &l.tls {
            let client_auth = match pb::ClientAuth::try_from(t.client_auth) {
                Ok(pb::ClientAuth::Require) => "require",
                Ok(pb::ClientAuth::Optional) => "optional",
                _ => "none",
            };
            let mut tls = json!({
                "certificates": [{"cert": t.certificate_file, "key": t.key_file}],
                "client_auth": client_auth,
            });
            if !t.trust_bundle.is_empty() {
                tls["trust_bundle"] = json!(bundle_path(&t.trust_bundle));
                tls["trust_domains"] = json!(t.trust_domains);
            }
            doc["tls"] = tls;
        }
        if let Some(a) = &l.authorization {
            doc["authorization"] = json!({
                "default": effect(a.default_effect),
                "mode": if a.dry_run { "dry_run" } else { "enforce" },
                "rules": a.rules.iter().map(rule).collect::<Vec<_>>(),
            });
        }
        // A virtual host per named host, in order of first mention, then `*` for the rest.
        let mut hosts: Vec<&str> = Vec::new();
        for r in &l.routes {
            if !r.host.is_empty() && !hosts.contains(&r.host.as_str()) {
                hosts.push(&r.host);
            }
        }
        let mut vhosts: Vec<Value> = hosts
            .iter()
            .map(|h| {
                let routes: Vec<Value> = l
                    .routes
                    .iter()
                    .filter(|r| r.host == *h)
                    .map(route)
                    .collect();
                json!({"name": h, "domains": [h], "routes": routes})
            })
            .collect();
        let rest: Vec<Value> = l
            .routes
            .iter()
            .filter(|r| r.host.is_empty())
            .map(route)
            .collect();
        if !rest.is_empty() {
            vhosts.push(json!({"name": "all", "domains": ["*"], "routes": rest}));
        }
        doc["virtual_hosts"] = json!(vhosts);
        origin.insert(format!("listeners[{}]", listeners.len()), key.clone());
        listeners.push(doc);
    }
    let mut clusters = Vec::new();
    for (key, any) in resources.iter().filter(|((t, _), _)| t == TYPE_CLUSTER) {
        let c = match pb::Cluster::decode(any.value.as_slice()) {
            Ok(c) => c,
            Err(e) => {
                bad.push((key.clone(), format!("not a Cluster: {e}")));
                continue;
            }
        };
        let mut doc = json!({"name": c.name, "endpoints": c.endpoints, "protocol": if protocol(c.protocol) == "http2" { "http2" } else { "http1" }});
        if let Some(t) = &c.tls {
            let mut tls = json!({"sni": t.sni});
            if !t.trust_bundle.is_empty() {
                tls["trust_bundle"] = json!(bundle_path(&t.trust_bundle));
            }
            if !t.spiffe_id.is_empty() {
                tls["verify"] = json!({"spiffe_id": t.spiffe_id});
            }
            if !t.certificate_file.is_empty() {
                tls["client_certificate"] = json!({"cert": t.certificate_file, "key": t.key_file});
            }
            doc["tls"] = tls;
        }
        origin.insert(format!("clusters[{}]", clusters.len()), key.clone());
        clusters.push(doc);
    }
    let mut providers = Vec::new();
    for (key, any) in resources
        .iter()
        .filter(|((t, _), _)| t == TYPE_JWT_PROVIDER)
    {
        let p = match pb::JwtProvider::decode(any.value.as_slice()) {
            Ok(p) => p,
            Err(e) => {
                bad.push((key.clone(), format!("not a JwtProvider: {e}")));
                continue;
            }
        };
        let jwks = if p.jwks_url.is_empty() {
            json!({"inline": p.jwks_inline})
        } else {
            json!({"url": {"url": p.jwks_url}})
        };
        let mut doc = json!({"name": p.name, "audiences": p.audiences, "jwks": jwks});
        if !p.issuer.is_empty() {
            doc["issuer"] = json!(p.issuer);
        }
        origin.insert(format!("jwt_providers[{}]", providers.len()), key.clone());
        providers.push(doc);
    }
    let document = json!({
        "admin": {"address": admin.to_string()},
        "listeners": listeners,
        "clusters": clusters,
        "jwt_providers": providers,
    });
    (
        Converted {
            document,
            origin,
            files,
        },
        bad,
    )
}

fn rule(r: &pb::Rule) -> Value {
    let mut peers: Vec<Value> = r
        .peer_spiffe_ids
        .iter()
        .map(|id| json!({"spiffe_id": id}))
        .collect();
    peers.extend(r.peer_prefixes.iter().map(|p| json!({"prefix": p})));
    let mut doc = json!({"name": r.name, "action": effect(r.effect)});
    if !peers.is_empty() {
        doc["peers"] = json!(peers);
    }
    if !r.methods.is_empty() {
        doc["methods"] = json!(r.methods);
    }
    if !r.path_prefixes.is_empty() {
        doc["paths"] = json!(
            r.path_prefixes
                .iter()
                .map(|p| json!({"prefix": p}))
                .collect::<Vec<_>>()
        );
    }
    if !r.claims.is_empty() {
        doc["claims"] = json!(
            r.claims
                .iter()
                .map(|c| if c.equals.is_empty() {
                    json!({"claim": c.claim, "contains": c.contains})
                } else {
                    json!({"claim": c.claim, "equals": c.equals})
                })
                .collect::<Vec<_>>()
        );
    }
    doc
}

fn route(r: &pb::Route) -> Value {
    let mut doc = json!({"name": r.name, "match": {"path": {"prefix": r.path_prefix}}});
    if r.cluster.is_empty() {
        let status = if r.direct_status == 0 {
            404
        } else {
            r.direct_status
        };
        doc["direct_response"] = json!({"status": status, "body": "refused by the gateway: not exposed or not allowed\n"});
    } else {
        let mut fw = json!({"cluster": r.cluster});
        if !r.prefix_rewrite.is_empty() {
            fw["prefix_rewrite"] = json!(r.prefix_rewrite);
        }
        doc["forward"] = fw;
    }
    if !r.jwt_provider.is_empty() {
        doc["jwt"] = json!({"provider": r.jwt_provider, "required": r.jwt_required});
    }
    if let Some(rl) = &r.rate_limit {
        let key = if rl.key == "peer" {
            "peer"
        } else {
            "client_ip"
        };
        doc["rate_limit"] = json!({
            "requests": rl.requests,
            "per": format!("{}s", rl.per_seconds.max(1)),
            "burst": rl.burst.max(1),
            "key": key,
        });
    }
    doc
}

fn sanitize(name: &str) -> String {
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
