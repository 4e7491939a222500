//! The compiler: validated cell specs in, the resources of each gateway out.
//!
//! Per cell (one gateway):
//! - `north` (when the cell has one): TLS without client certificates; a route per `public`
//!   endpoint, each requiring a token from its JWT provider; the cell's north Policy if any.
//! - `west`: TLS requiring a client certificate from the org's CA and trust domain; a route
//!   per `organization` or `public` endpoint; authorization deny by default, with the cell's
//!   west Policy rules, or, without one, an allow rule for every cell of the org.
//! - `east` (in-cell, plain): a route `/<cell><base_path>` per endpoint another cell of the
//!   org exposes on its west, to a cluster that originates mTLS with this gateway's
//!   certificate and checks the other gateway's SPIFFE ID; every other path is answered 403
//!   by the default-deny policy (a catch-all route keeps it from being a 404).
//! - clusters for the local endpoints (`local:<endpoint>`) and the other cells
//!   (`cell:<name>`), the JWT providers the north routes use, and the org's trust bundle.
//!
//! Output is deterministic (ordered maps), and each resource's version is a hash of its
//! encoded bytes, so an unchanged resource keeps its version and is never sent again.
//! - `south` (in-cell, plain): a virtual host per allow-listed external host, to a cluster
//!   that resolves the name and originates TLS verifying it (system CAs, or the host's own
//!   bundle); any other host is answered 403.

use crate::proto::membrane::v1 as pb;
use crate::spec::{Action, Cell, Direction, Jwks, PolicyMode, RateKey, Specs, Visibility};
use prost::Message;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

pub use membrane_api::types::{TYPE_CLUSTER, TYPE_JWT_PROVIDER, TYPE_LISTENER, TYPE_TRUST_BUNDLE};

/// The org CA's bundle name in every gateway's resources.
pub const TRUST_BUNDLE: &str = "org-ca";

/// What the compiler needs besides the specs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The spec directory (JWKS files are read relative to it).
    pub spec_dir: PathBuf,
    /// Where each gateway finds its certificate and key: `<dir>/<cell>.pem`,
    /// `<dir>/<cell>-key.pem`.
    pub cert_dir: PathBuf,
    /// The org CA(s), PEM.
    pub trust_bundle_pem: String,
    /// Gateways have certificates issued by the control server (`--ca`): west listeners
    /// and east clusters use each gateway's own SVID. The north listener keeps its files
    /// (a public-facing certificate with DNS names, from whatever CA the public trusts).
    pub own_svid: bool,
    /// The deny list (`<ca dir>/revoked`), sent with the org's trust bundle so that
    /// listeners and clusters refuse those peers.
    pub revoked: Vec<String>,
}

/// One resource with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub version: String,
    pub resource: prost_types::Any,
}

/// A gateway's resources by (type URL, name).
pub type Resources = BTreeMap<(String, String), Versioned>;

/// Every gateway's resources, by cell name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compiled {
    pub gateways: BTreeMap<String, Resources>,
    /// Each cell's SPIFFE ID: what its gateway's certificate must say, and the only
    /// identity the certificate service issues to it.
    pub identities: BTreeMap<String, String>,
}

fn version_of(bytes: &[u8]) -> String {
    let mut h = rustc_hash::FxHasher::default();
    bytes.hash(&mut h);
    format!("{:016x}", h.finish())
}

fn put<M: Message>(out: &mut Resources, type_url: &str, name: &str, m: &M) {
    let value = m.encode_to_vec();
    out.insert(
        (type_url.to_owned(), name.to_owned()),
        Versioned {
            version: version_of(&value),
            resource: prost_types::Any {
                type_url: type_url.to_owned(),
                value,
            },
        },
    );
}

fn effect(a: Action) -> i32 {
    match a {
        Action::Allow => pb::Effect::Allow as i32,
        Action::Deny => pb::Effect::Deny as i32,
    }
}

/// Why validated specs could not be compiled: a key set file named by a provider could
/// not be read (it was there when checked).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("JwtProvider `{provider}`: {}: {source}", path.display())]
    JwksFile {
        provider: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Compiles validated specs (run `spec::check` first; this assumes its guarantees).
pub fn compile(specs: &Specs, opts: &Options) -> Result<Compiled, CompileError> {
    let cells: BTreeMap<&str, &Cell> = specs
        .cells()
        .map(|(_, c)| (c.name.value().as_str(), c))
        .collect();
    let mut providers = BTreeMap::new();
    for (_, p) in specs.providers() {
        let (inline, url) = match &p.jwks {
            Jwks::Inline(t) => (t.clone(), String::new()),
            Jwks::File(f) => {
                let path = opts.spec_dir.join(f);
                let text =
                    std::fs::read_to_string(&path).map_err(|source| CompileError::JwksFile {
                        provider: p.name.value().clone(),
                        path: path.clone(),
                        source,
                    })?;
                (text, String::new())
            }
            Jwks::Url(u) => (String::new(), u.clone()),
        };
        providers.insert(
            p.name.value().clone(),
            pb::JwtProvider {
                name: p.name.value().clone(),
                issuer: p.issuer.clone().unwrap_or_default(),
                audiences: p.audiences.clone(),
                jwks_inline: inline,
                jwks_url: url,
            },
        );
    }
    let mut out = Compiled::default();
    for (name, cell) in &cells {
        out.gateways.insert(
            (*name).to_owned(),
            gateway(cell, &cells, specs, &providers, opts),
        );
        out.identities.insert((*name).to_owned(), cell.spiffe_id());
    }
    Ok(out)
}

fn rate_limit_for(specs: &Specs, cell: &str, endpoint: &str) -> Option<pb::RateLimit> {
    specs
        .rate_limits()
        .find(|(_, r)| r.cell.value() == cell && r.endpoint.value() == endpoint)
        .map(|(_, r)| pb::RateLimit {
            requests: *r.requests.value(),
            per_seconds: r.per_seconds,
            burst: *r.requests.value(),
            key: match r.key {
                RateKey::ClientIp => "client_ip".into(),
                RateKey::Peer => "peer".into(),
            },
        })
}

fn policy_for(
    specs: &Specs,
    cells: &BTreeMap<&str, &Cell>,
    cell: &str,
    dir: Direction,
) -> Option<pb::Authorization> {
    let (_, p) = specs
        .policies()
        .find(|(_, p)| p.cell.value() == cell && p.listener == dir)?;
    Some(pb::Authorization {
        default_effect: pb::Effect::Deny as i32,
        dry_run: p.mode == PolicyMode::DryRun,
        rules: p
            .rules
            .iter()
            .map(|r| pb::Rule {
                name: r.name.value().clone(),
                effect: effect(r.action),
                peer_spiffe_ids: r
                    .from_cells
                    .iter()
                    .filter_map(|c| cells.get(c.value().as_str()).map(|c| c.spiffe_id()))
                    .collect(),
                methods: r.methods.clone(),
                path_prefixes: r.paths.clone(),
                claims: r
                    .claims
                    .iter()
                    .map(|c| pb::ClaimMatch {
                        claim: c.claim.clone(),
                        equals: c.equals.clone().unwrap_or_default(),
                        contains: c.contains.clone().unwrap_or_default(),
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    })
}

fn gateway(
    cell: &Cell,
    cells: &BTreeMap<&str, &Cell>,
    specs: &Specs,
    providers: &BTreeMap<String, pb::JwtProvider>,
    opts: &Options,
) -> Resources {
    let mut out = Resources::new();
    let name = cell.name.value().as_str();
    let cert = opts
        .cert_dir
        .join(format!("{name}.pem"))
        .display()
        .to_string();
    let key = opts
        .cert_dir
        .join(format!("{name}-key.pem"))
        .display()
        .to_string();
    // Inter-cell mTLS (listeners with client certificates, east clusters) uses the issued
    // SVID when there is one; files otherwise (and always for north).
    let files = |svid: bool| {
        if svid {
            (String::new(), String::new())
        } else {
            (cert.clone(), key.clone())
        }
    };
    let (svid_cert, svid_key) = files(opts.own_svid);
    let tls = |client_auth: pb::ClientAuth| {
        let own_svid = opts.own_svid && client_auth != pb::ClientAuth::None;
        let (certificate_file, key_file) = files(own_svid);
        pb::ListenerTls {
            own_svid,
            certificate_file,
            key_file,
            client_auth: client_auth as i32,
            trust_bundle: if client_auth == pb::ClientAuth::None {
                String::new()
            } else {
                TRUST_BUNDLE.into()
            },
            trust_domains: if client_auth == pb::ClientAuth::None {
                Vec::new()
            } else {
                vec![cell.trust_domain()]
            },
        }
    };
    let endpoints: Vec<_> = cell
        .components
        .iter()
        .flat_map(|c| c.endpoints.iter())
        .collect();
    let mut uses_tls = false;

    for ep in &endpoints {
        if *ep.visibility.value() == Visibility::Project {
            continue;
        }
        let cl = pb::Cluster {
            name: format!("local:{}", ep.name.value()),
            endpoints: ep.upstreams.iter().map(|u| u.value().to_string()).collect(),
            protocol: pb::Protocol::Http1 as i32,
            tls: None,
            retries: ep.retries.as_ref().map(Into::into),
            outlier_detection: ep.outlier_detection.as_ref().map(Into::into),
            circuit_breakers: ep.circuit_breakers.as_ref().map(Into::into),
            health_check: ep.health_check.as_ref().map(Into::into),
            localities: ep
                .localities
                .iter()
                .map(|l| pb::LocalityEndpoints {
                    region: l.region.clone().unwrap_or_default(),
                    zone: l.zone.clone().unwrap_or_default(),
                    endpoints: l.upstreams.iter().map(|u| u.value().to_string()).collect(),
                })
                .collect(),
            failover_healthy_percent: ep.failover_healthy_percent,
        };
        put(&mut out, TYPE_CLUSTER, &cl.name, &cl);
    }

    if let Some(north) = &cell.gateway.north {
        uses_tls = true;
        let mut routes = Vec::new();
        for ep in endpoints
            .iter()
            .filter(|e| *e.visibility.value() == Visibility::Public)
        {
            let provider = ep
                .jwt
                .as_ref()
                .map(|j| j.value().clone())
                .unwrap_or_default();
            if let Some(p) = providers.get(&provider) {
                put(&mut out, TYPE_JWT_PROVIDER, &p.name, p);
            }
            routes.push(pb::Route {
                name: ep.name.value().clone(),
                path_prefix: ep.base_path.value().clone(),
                cluster: format!("local:{}", ep.name.value()),
                jwt_required: !provider.is_empty(),
                jwt_provider: provider,
                rate_limit: rate_limit_for(specs, name, ep.name.value()),
                ..Default::default()
            });
        }
        let l = pb::Listener {
            name: "north".into(),
            address: north.address.value().to_string(),
            access_log: access_log(north),
            protocol: pb::Protocol::Auto as i32,
            tls: Some(tls(pb::ClientAuth::None)),
            routes,
            authorization: policy_for(specs, cells, name, Direction::North),
        };
        put(&mut out, TYPE_LISTENER, "north", &l);
    }

    if let Some(west) = &cell.gateway.west {
        uses_tls = true;
        let routes = endpoints
            .iter()
            .filter(|e| *e.visibility.value() >= Visibility::Organization)
            .map(|ep| pb::Route {
                name: ep.name.value().clone(),
                path_prefix: ep.base_path.value().clone(),
                cluster: format!("local:{}", ep.name.value()),
                rate_limit: rate_limit_for(specs, name, ep.name.value()),
                ..Default::default()
            })
            .collect();
        // Only this environment's cells get in: the default rule allows the org's cells of
        // this environment, and every allowing rule of a policy is held to them too (its
        // `from_cells` are checked to be of this environment; a rule without any gets the
        // environment's prefix). A dev gateway's certificate is of the same CA and trust
        // domain as prod's, so this is what keeps it out of prod.
        let env_prefix = format!(
            "spiffe://{}/org/{}/env/{}/",
            cell.trust_domain(),
            cell.org.value(),
            cell.environment
        );
        let mut authorization =
            policy_for(specs, cells, name, Direction::West).unwrap_or_else(|| pb::Authorization {
                default_effect: pb::Effect::Deny as i32,
                dry_run: false,
                rules: vec![pb::Rule {
                    name: "org-cells".into(),
                    effect: pb::Effect::Allow as i32,
                    peer_prefixes: vec![env_prefix.clone()],
                    ..Default::default()
                }],
            });
        for r in &mut authorization.rules {
            if r.effect == pb::Effect::Allow as i32 && r.peer_spiffe_ids.is_empty() {
                r.peer_prefixes = vec![env_prefix.clone()];
            }
        }
        let l = pb::Listener {
            name: "west".into(),
            address: west.address.value().to_string(),
            access_log: access_log(west),
            protocol: pb::Protocol::Auto as i32,
            tls: Some(tls(pb::ClientAuth::Require)),
            routes,
            authorization: Some(authorization),
        };
        put(&mut out, TYPE_LISTENER, "west", &l);
    }

    if let Some(east) = &cell.gateway.east {
        let mut routes = Vec::new();
        let mut prefixes = Vec::new();
        for (other_name, other) in cells {
            let Some(other_west) = &other.gateway.west else {
                continue;
            };
            // Environments are isolated: an east gateway reaches its own environment's
            // cells only (as their west listeners accept only its environment's peers).
            if *other_name == name
                || other.org.value() != cell.org.value()
                || other.environment != cell.environment
                || !cell.calls(other_name)
            {
                continue;
            }
            let exposed: Vec<_> = other
                .components
                .iter()
                .flat_map(|c| c.endpoints.iter())
                .filter(|e| *e.visibility.value() >= Visibility::Organization)
                .collect();
            if exposed.is_empty() {
                continue;
            }
            uses_tls = true;
            let cluster = format!("cell:{other_name}");
            let cl = pb::Cluster {
                name: cluster.clone(),
                endpoints: vec![other_west.address.value().to_string()],
                protocol: pb::Protocol::Http1 as i32,
                tls: Some(pb::UpstreamTls {
                    sni: format!("{other_name}.{}", other.trust_domain()),
                    trust_bundle: TRUST_BUNDLE.into(),
                    spiffe_id: other.spiffe_id(),
                    certificate_file: svid_cert.clone(),
                    key_file: svid_key.clone(),
                    own_svid: opts.own_svid,
                }),
                ..Default::default()
            };
            put(&mut out, TYPE_CLUSTER, &cluster, &cl);
            for ep in exposed {
                let prefix = format!("/{other_name}{}", ep.base_path.value());
                prefixes.push(prefix.clone());
                routes.push(pb::Route {
                    name: format!("{other_name}.{}", ep.name.value()),
                    path_prefix: prefix,
                    cluster: cluster.clone(),
                    prefix_rewrite: ep.base_path.value().clone(),
                    ..Default::default()
                });
            }
        }
        routes.push(pb::Route {
            name: "not-exposed".into(),
            path_prefix: "/".into(),
            direct_status: 403,
            ..Default::default()
        });
        let l = pb::Listener {
            name: "east".into(),
            address: east.address.value().to_string(),
            access_log: access_log(east),
            protocol: pb::Protocol::Auto as i32,
            tls: None,
            routes,
            authorization: Some(pb::Authorization {
                default_effect: pb::Effect::Deny as i32,
                dry_run: false,
                rules: vec![pb::Rule {
                    name: "exposed-endpoints".into(),
                    effect: pb::Effect::Allow as i32,
                    path_prefixes: prefixes,
                    ..Default::default()
                }],
            }),
        };
        put(&mut out, TYPE_LISTENER, "east", &l);
    }

    if let Some(south) = &cell.gateway.south {
        let mut routes = Vec::new();
        for h in &cell.external_hosts {
            let host = h.host.value().clone();
            let cluster = format!("ext:{host}");
            let trust_bundle = match &h.trust_bundle {
                Some(file) => {
                    // `spec::check_files` made sure it reads; should it have gone since, the
                    // host gets an empty bundle and its TLS fails closed.
                    let pem = std::fs::read_to_string(opts.spec_dir.join(file)).unwrap_or_default();
                    let b = pb::TrustBundle {
                        name: cluster.clone(),
                        pem,
                        revoked: Vec::new(),
                    };
                    put(&mut out, TYPE_TRUST_BUNDLE, &cluster, &b);
                    cluster.clone()
                }
                None => String::new(),
            };
            let cl = pb::Cluster {
                name: cluster.clone(),
                endpoints: vec![format!("{host}:{}", h.port)],
                protocol: pb::Protocol::Http1 as i32,
                tls: Some(pb::UpstreamTls {
                    sni: host.clone(),
                    trust_bundle,
                    ..Default::default()
                }),
                ..Default::default()
            };
            put(&mut out, TYPE_CLUSTER, &cluster, &cl);
            routes.push(pb::Route {
                name: format!("to-{host}"),
                path_prefix: "/".into(),
                cluster,
                host,
                ..Default::default()
            });
        }
        routes.push(pb::Route {
            name: "not-allowed".into(),
            path_prefix: "/".into(),
            direct_status: 403,
            ..Default::default()
        });
        let l = pb::Listener {
            name: "south".into(),
            address: south.address.value().to_string(),
            access_log: access_log(south),
            protocol: pb::Protocol::Auto as i32,
            tls: None,
            routes,
            authorization: None,
        };
        put(&mut out, TYPE_LISTENER, "south", &l);
    }

    if uses_tls {
        let b = pb::TrustBundle {
            name: TRUST_BUNDLE.into(),
            pem: opts.trust_bundle_pem.clone(),
            revoked: opts.revoked.clone(),
        };
        put(&mut out, TYPE_TRUST_BUNDLE, TRUST_BUNDLE, &b);
    }
    out
}

/// A listener's access log, as the gateway is told it.
fn access_log(l: &crate::spec::GatewayListener) -> Option<pb::AccessLog> {
    l.access_log.as_ref().map(|a| pb::AccessLog {
        to: a.to.value().clone(),
        fields: a.fields.iter().map(|f| f.value().clone()).collect(),
        sample: a.sample.as_ref().map(|s| *s.value()),
    })
}
