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
use crate::spec::{
    Action, Cell, Direction, Jwks, Kind, Policy, PolicyMode, RateKey, RateLimit, Specs, Visibility,
};
use prost::Message;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

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
    pub gateways: BTreeMap<String, Arc<Resources>>,
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

/// The compiler's inputs, indexed once per compile (a scan of every document per endpoint
/// made the compile quadratic: 1.9 s at 10,000 cells).
struct Inputs<'a> {
    cells: BTreeMap<&'a str, &'a Cell>,
    digests: FxHashMap<&'a str, u128>,
    policies: FxHashMap<(&'a str, Direction), (&'a Policy, u128)>,
    rate_limits: FxHashMap<(&'a str, &'a str), &'a RateLimit>,
    rate_limit_digests: FxHashMap<&'a str, Vec<u128>>,
    providers: BTreeMap<String, pb::JwtProvider>,
    /// Each provider as a resource, encoded once per compile.
    provider_resources: FxHashMap<String, Versioned>,
    /// What every gateway's resources (but its providers) depend on: the options.
    shared: u128,
}

fn inputs<'a>(specs: &'a Specs, opts: &Options) -> Result<Inputs<'a>, CompileError> {
    let mut cells = BTreeMap::new();
    let mut digests = FxHashMap::default();
    let mut policies = FxHashMap::default();
    let mut rate_limits = FxHashMap::default();
    let mut rate_limit_digests: FxHashMap<&str, Vec<u128>> = FxHashMap::default();
    for d in &specs.documents {
        match &d.kind {
            Kind::Cell(c) => {
                cells.insert(c.name.value().as_str(), &**c);
                digests.insert(c.name.value().as_str(), d.digest);
            }
            // The first of each, as before (`check` allows one per listener).
            Kind::Policy(p) => {
                policies
                    .entry((p.cell.value().as_str(), p.listener))
                    .or_insert((p, d.digest));
            }
            Kind::RateLimit(r) => {
                rate_limits
                    .entry((r.cell.value().as_str(), r.endpoint.value().as_str()))
                    .or_insert(r);
                rate_limit_digests
                    .entry(r.cell.value().as_str())
                    .or_default()
                    .push(d.digest);
            }
            Kind::JwtProvider(_) | Kind::Overlay(_) => {}
        }
    }
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
    let mut h = Fingerprint::new();
    h.text(&opts.spec_dir.display().to_string());
    h.text(&opts.cert_dir.display().to_string());
    h.text(&opts.trust_bundle_pem);
    h.text(if opts.own_svid { "svid" } else { "files" });
    for r in &opts.revoked {
        h.text(r);
    }
    let mut provider_resources = FxHashMap::default();
    for p in providers.values() {
        let mut one = Resources::new();
        put(&mut one, TYPE_JWT_PROVIDER, &p.name, p);
        if let Some(v) = one.into_values().next() {
            provider_resources.insert(p.name.clone(), v);
        }
    }
    Ok(Inputs {
        cells,
        digests,
        policies,
        rate_limits,
        rate_limit_digests,
        providers,
        provider_resources,
        shared: h.finish(),
    })
}

/// A SHA-256 over what every gateway's resources are made from (once per compile).
struct Fingerprint(aws_lc_rs::digest::Context);

impl Fingerprint {
    fn new() -> Self {
        Self(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256))
    }
    fn bytes(&mut self, b: &[u8]) {
        // Length-prefixed, so that two sequences never read the same.
        self.0.update(&(b.len() as u64).to_be_bytes());
        self.0.update(b);
    }
    fn text(&mut self, t: &str) {
        self.bytes(t.as_bytes());
    }
    fn finish(self) -> u128 {
        let d = self.0.finish();
        let mut first = [0u8; 16];
        first.copy_from_slice(&d.as_ref()[..16]);
        u128::from_be_bytes(first)
    }
}

/// What `cell`'s resources are made from, hashed: its document, the policies and rate
/// limits on it, the cells its policies name, the cells its east listener routes to, and
/// what every gateway shares. `None` for a cell whose resources read files besides (a
/// south host's trust bundle): it is compiled every time.
///
/// The inputs are SHA-256 digests of the documents; they are combined per cell with
/// SipHash under the compiler's random key (a keyed PRF, about 0.1 µs a cell, where a
/// SHA-256 per cell was 1 µs), so no document can be written to make another gateway's
/// fingerprint collide.
fn fingerprint(
    key: &std::hash::RandomState,
    inputs: &Inputs<'_>,
    name: &str,
    cell: &Cell,
) -> Option<u64> {
    use std::hash::{BuildHasher, Hasher};
    if cell.gateway.south.is_some() && cell.external_hosts.iter().any(|h| h.trust_bundle.is_some())
    {
        return None;
    }
    let digest_of = |n: &str| inputs.digests.get(n).copied().unwrap_or(0);
    let mut h = key.build_hasher();
    h.write_u128(inputs.shared);
    h.write(name.as_bytes());
    h.write_u8(0xff);
    h.write_u128(digest_of(name));
    for dir in [Direction::North, Direction::West] {
        if let Some((p, d)) = inputs.policies.get(&(name, dir)) {
            h.write_u128(*d);
            for r in &p.rules {
                for c in &r.from_cells {
                    h.write(c.value().as_bytes());
                    h.write_u8(0xff);
                    h.write_u128(digest_of(c.value()));
                }
            }
        }
    }
    for d in inputs.rate_limit_digests.get(name).into_iter().flatten() {
        h.write_u128(*d);
    }
    if cell.gateway.east.is_some() {
        for (other, _) in east_peers(inputs, name, cell) {
            h.write(other.as_bytes());
            h.write_u8(0xff);
            h.write_u128(digest_of(other));
        }
    }
    Some(h.finish())
}

/// The cells `cell`'s east listener routes to, in name order: other cells of its org and
/// environment with a west listener, that it calls (the cells its `calls:` names, else
/// every cell).
fn east_peers<'a>(
    inputs: &'a Inputs<'_>,
    name: &'a str,
    cell: &'a Cell,
) -> Vec<(&'a str, &'a Cell)> {
    // Environments are isolated: an east gateway reaches its own environment's cells only
    // (as their west listeners accept only its environment's peers).
    let admits = |other_name: &str, other: &Cell| {
        other.gateway.west.is_some()
            && other_name != name
            && other.org.value() == cell.org.value()
            && other.environment == cell.environment
    };
    match &cell.calls {
        // Looked up by name: scanning every cell for each east listener cost 2 ms per
        // east cell at 10,000 cells.
        Some(calls) => {
            let mut peers: Vec<(&str, &Cell)> = calls
                .iter()
                .filter_map(|n| inputs.cells.get_key_value(n.value().as_str()))
                .map(|(n, c)| (*n, *c))
                .filter(|(n, c)| admits(n, c))
                .collect();
            peers.sort_unstable_by_key(|(n, _)| *n);
            peers.dedup_by_key(|(n, _)| *n);
            peers
        }
        None => inputs
            .cells
            .iter()
            .map(|(n, c)| (*n, *c))
            .filter(|(n, c)| admits(n, c))
            .collect(),
    }
}

/// Compiles validated specs (run `spec::check` first; this assumes its guarantees).
pub fn compile(specs: &Specs, opts: &Options) -> Result<Compiled, CompileError> {
    Compiler::default().compile(specs, opts)
}

/// A compiler that remembers each gateway's resources with what they were made from, and
/// compiles again only the gateways whose inputs changed (their fingerprint). A change to
/// one cell recompiles it, the cells whose policies name it and the east listeners that
/// route to it; a change every gateway shares (the CA, the deny list) recompiles all. A JWT
/// provider is added to each gateway's other resources after they are compiled, so a new
/// key set only puts the new provider into the gateways that use it.
/// Unchanged gateways keep the very same resources (`Arc`), so comparing two generations
/// is cheap too.
#[derive(Default)]
pub struct Compiler {
    cache: FxHashMap<String, Entry>,
    key: std::hash::RandomState,
}

/// One gateway's last compile.
struct Entry {
    /// Of the inputs of `base`.
    fp: u64,
    base: Arc<Resources>,
    providers: Vec<String>,
    /// Of the versions of `providers` that `full` was made with.
    providers_fp: u64,
    full: Arc<Resources>,
    id: String,
}

impl Compiler {
    pub fn compile(&mut self, specs: &Specs, opts: &Options) -> Result<Compiled, CompileError> {
        use std::hash::{BuildHasher, Hasher};
        let inputs = inputs(specs, opts)?;
        let providers_fp = |used: &[String]| {
            let mut h = self.key.build_hasher();
            for n in used {
                h.write(n.as_bytes());
                h.write_u8(0xff);
                if let Some(v) = inputs.provider_resources.get(n.as_str()) {
                    h.write(v.version.as_bytes());
                }
            }
            h.finish()
        };
        let mut gateways = Vec::with_capacity(inputs.cells.len());
        let mut identities = Vec::with_capacity(inputs.cells.len());
        for (name, cell) in &inputs.cells {
            let fp = fingerprint(&self.key, &inputs, name, cell);
            let (full, id) = match (fp, self.cache.get_mut(*name)) {
                (Some(fp), Some(e)) if e.fp == fp => {
                    let pfp = providers_fp(&e.providers);
                    if pfp != e.providers_fp {
                        e.full = with_providers(&e.base, &e.providers, &inputs);
                        e.providers_fp = pfp;
                    }
                    (e.full.clone(), e.id.clone())
                }
                (fp, _) => {
                    let (base, used) = gateway(cell, &inputs, opts);
                    let base = Arc::new(base);
                    let full = with_providers(&base, &used, &inputs);
                    let id = cell.spiffe_id();
                    match fp {
                        Some(fp) => {
                            let e = Entry {
                                fp,
                                providers_fp: providers_fp(&used),
                                base,
                                providers: used,
                                full: full.clone(),
                                id: id.clone(),
                            };
                            self.cache.insert((*name).to_owned(), e);
                        }
                        None => {
                            self.cache.remove(*name);
                        }
                    }
                    (full, id)
                }
            };
            gateways.push(((*name).to_owned(), full));
            identities.push(((*name).to_owned(), id));
        }
        if self.cache.len() > inputs.cells.len() {
            self.cache
                .retain(|name, _| inputs.cells.contains_key(name.as_str()));
        }
        // In name order already: the maps are built from sorted entries in one pass, with
        // no search per insert.
        Ok(Compiled {
            gateways: gateways.into_iter().collect(),
            identities: identities.into_iter().collect(),
        })
    }
}

fn rate_limit_for(inputs: &Inputs<'_>, cell: &str, endpoint: &str) -> Option<pb::RateLimit> {
    inputs
        .rate_limits
        .get(&(cell, endpoint))
        .map(|r| pb::RateLimit {
            requests: *r.requests.value(),
            per_seconds: r.per_seconds,
            burst: *r.requests.value(),
            key: match r.key {
                RateKey::ClientIp => "client_ip".into(),
                RateKey::Peer => "peer".into(),
            },
        })
}

fn policy_for(inputs: &Inputs<'_>, cell: &str, dir: Direction) -> Option<pb::Authorization> {
    let (p, _) = inputs.policies.get(&(cell, dir))?;
    let cells = &inputs.cells;
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

/// A gateway's resources but its JWT providers, and the names of the providers it uses
/// (added by [`with_providers`], so that a provider's change does not compile every
/// gateway again).
fn gateway(cell: &Cell, inputs: &Inputs<'_>, opts: &Options) -> (Resources, Vec<String>) {
    let mut out = Resources::new();
    let mut used = Vec::new();
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
            if inputs.providers.contains_key(&provider) && !used.contains(&provider) {
                used.push(provider.clone());
            }
            routes.push(pb::Route {
                name: ep.name.value().clone(),
                path_prefix: ep.base_path.value().clone(),
                cluster: format!("local:{}", ep.name.value()),
                jwt_required: !provider.is_empty(),
                jwt_provider: provider,
                rate_limit: rate_limit_for(inputs, name, ep.name.value()),
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
            authorization: policy_for(inputs, name, Direction::North),
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
                rate_limit: rate_limit_for(inputs, name, ep.name.value()),
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
            policy_for(inputs, name, Direction::West).unwrap_or_else(|| pb::Authorization {
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
        for (other_name, other) in east_peers(inputs, name, cell) {
            let Some(other_west) = &other.gateway.west else {
                continue;
            };
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
    (out, used)
}

/// `base` with the JWT providers named in `used`.
fn with_providers(base: &Arc<Resources>, used: &[String], inputs: &Inputs<'_>) -> Arc<Resources> {
    if used.is_empty() {
        return base.clone();
    }
    let mut full = (**base).clone();
    for name in used {
        if let Some(v) = inputs.provider_resources.get(name.as_str()) {
            full.insert((TYPE_JWT_PROVIDER.to_owned(), name.clone()), v.clone());
        }
    }
    Arc::new(full)
}

/// A listener's access log, as the gateway is told it.
fn access_log(l: &crate::spec::GatewayListener) -> Option<pb::AccessLog> {
    l.access_log.as_ref().map(|a| pb::AccessLog {
        to: a.to.value().clone(),
        fields: a.fields.iter().map(|f| f.value().clone()).collect(),
        sample: a.sample.as_ref().map(|s| *s.value()),
    })
}
