//! The documents of the cell model, one to one with the YAML.

use membrane_api::resilience::{
    CircuitBreakerConfig, HealthCheckConfig, OutlierConfig, RetryConfig,
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

pub use crate::yaml::Located;

/// Every document, as read, with the file it came from and the number of lines before it
/// in that file (positions inside a document are relative to the document).
#[derive(Debug, Clone)]
pub struct Document {
    pub file: PathBuf,
    pub offset: u64,
    pub kind: Kind,
    /// A hash of the document's text: what the compiler's cache tells changes by.
    pub digest: u128,
}

/// Where a document came from.
#[derive(Debug, Clone, Copy)]
pub struct Src<'a> {
    pub file: &'a PathBuf,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Cell(Box<Cell>),
    Policy(Policy),
    JwtProvider(JwtProvider),
    RateLimit(RateLimit),
    Overlay(Box<Overlay>),
}

impl Kind {
    /// The `kind:` of the document.
    pub fn kind(&self) -> &'static str {
        match self {
            Kind::Cell(_) => "Cell",
            Kind::Policy(_) => "Policy",
            Kind::JwtProvider(_) => "JwtProvider",
            Kind::RateLimit(_) => "RateLimit",
            Kind::Overlay(_) => "Overlay",
        }
    }

    /// Its `name:`, which is unique among the documents of its kind.
    pub fn name(&self) -> &str {
        match self {
            Kind::Cell(c) => c.name.value(),
            Kind::Policy(p) => p.name.value(),
            Kind::JwtProvider(p) => p.name.value(),
            Kind::RateLimit(r) => r.name.value(),
            Kind::Overlay(o) => o.name.value(),
        }
    }
}

/// The set of documents of one directory.
#[derive(Debug, Clone, Default)]
pub struct Specs {
    /// Shared, so that the documents of a file that did not change are reused as parsed
    /// (`spec::ParseCache`).
    pub documents: Vec<std::sync::Arc<Document>>,
}

impl Specs {
    pub fn cells(&self) -> impl Iterator<Item = (Src<'_>, &Cell)> {
        self.documents.iter().filter_map(|d| match &d.kind {
            Kind::Cell(c) => Some((d.src(), &**c)),
            _ => None,
        })
    }
    pub fn policies(&self) -> impl Iterator<Item = (Src<'_>, &Policy)> {
        self.documents.iter().filter_map(|d| match &d.kind {
            Kind::Policy(p) => Some((d.src(), p)),
            _ => None,
        })
    }
    pub fn providers(&self) -> impl Iterator<Item = (Src<'_>, &JwtProvider)> {
        self.documents.iter().filter_map(|d| match &d.kind {
            Kind::JwtProvider(p) => Some((d.src(), p)),
            _ => None,
        })
    }
    pub fn overlays(&self) -> impl Iterator<Item = (Src<'_>, &Overlay)> {
        self.documents.iter().filter_map(|d| match &d.kind {
            Kind::Overlay(o) => Some((d.src(), &**o)),
            _ => None,
        })
    }
    pub fn rate_limits(&self) -> impl Iterator<Item = (Src<'_>, &RateLimit)> {
        self.documents.iter().filter_map(|d| match &d.kind {
            Kind::RateLimit(r) => Some((d.src(), r)),
            _ => None,
        })
    }
}

impl Document {
    pub fn src(&self) -> Src<'_> {
        Src {
            file: &self.file,
            offset: self.offset,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    pub kind: String,
    /// The cell's name, unique across the directory; names its gateway (`node id` on xDS).
    pub name: Located<String>,
    pub org: Located<String>,
    pub project: String,
    pub environment: String,
    /// The SPIFFE trust domain of the org's identities; default `<org>.internal`.
    #[serde(default)]
    pub trust_domain: Option<Located<String>>,
    pub gateway: Gateway,
    #[serde(default)]
    pub components: Vec<Component>,
    /// Third-party hosts the cell's components may call through south.
    #[serde(default)]
    pub external_hosts: Vec<ExternalHost>,
    /// The cells this cell calls through its east gateway, by name: its east listener
    /// routes to those only. Absent: every cell of its org and environment with a west
    /// listener (the listener then grows with the org).
    #[serde(default)]
    pub calls: Option<Vec<Located<String>>>,
}

impl Cell {
    /// Whether this cell's east gateway routes to `other` (by name).
    pub fn calls(&self, other: &str) -> bool {
        self.calls
            .as_ref()
            .is_none_or(|c| c.iter().any(|n| n.value() == other))
    }

    pub fn trust_domain(&self) -> String {
        match &self.trust_domain {
            Some(t) => t.value().clone(),
            None => format!("{}.internal", self.org.value()),
        }
    }

    /// The cell's SPIFFE ID: `spiffe://<trust domain>/org/<org>/env/<env>/cell/<name>`.
    pub fn spiffe_id(&self) -> String {
        format!(
            "spiffe://{}/org/{}/env/{}/cell/{}",
            self.trust_domain(),
            self.org.value(),
            self.environment,
            self.name.value()
        )
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    #[serde(default)]
    pub north: Option<GatewayListener>,
    #[serde(default)]
    pub west: Option<GatewayListener>,
    #[serde(default)]
    pub east: Option<GatewayListener>,
    #[serde(default)]
    pub south: Option<GatewayListener>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayListener {
    pub address: Located<SocketAddr>,
    /// One JSON line per request on this listener.
    #[serde(default)]
    pub access_log: Option<AccessLogSpec>,
}

/// A listener's access log in a cell spec.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSpec {
    /// `stdout`, `stderr` or a file path on the gateway's host.
    pub to: Located<String>,
    /// From the documented set (`membrane_api::access_log::FIELDS`); all when empty.
    #[serde(default)]
    pub fields: Vec<Located<String>>,
    /// Share of allowed requests written, 0 to 1; refused and failed ones always are.
    #[serde(default)]
    pub sample: Option<Located<f64>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: Located<String>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Inside the cell only: not on the gateway.
    Project,
    /// Other cells of the same organization, through west.
    Organization,
    /// Anyone, through north (and other cells through west).
    Public,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub name: Located<String>,
    /// The path prefix the endpoint is served under on the gateway, e.g. `/orders`.
    pub base_path: Located<String>,
    /// Upstream addresses without a locality; `localities` lists the rest.
    #[serde(default)]
    pub upstreams: Vec<Located<SocketAddr>>,
    /// Upstream addresses by region and zone: gateways prefer their own zone, then their
    /// region, and fail over when too few there are healthy.
    #[serde(default)]
    pub localities: Vec<UpstreamLocality>,
    /// The share of a locality's upstreams (percent) that must be healthy for it to take
    /// all the traffic; the gateway's default (70) when absent.
    #[serde(default)]
    pub failover_healthy_percent: Option<u32>,
    /// Resilience for the endpoint's upstreams, written as in a gateway's bootstrap
    /// cluster; each is off when absent.
    #[serde(default)]
    pub retries: Option<RetryConfig>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierConfig>,
    #[serde(default)]
    pub circuit_breakers: Option<CircuitBreakerConfig>,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    pub visibility: Located<Visibility>,
    /// The JWT provider whose tokens this endpoint requires (public endpoints must name one).
    #[serde(default)]
    pub jwt: Option<Located<String>>,
}

/// Upstreams of one region and zone.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamLocality {
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    pub upstreams: Vec<Located<SocketAddr>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalHost {
    /// A DNS name; requests through south with this Host go to it over TLS.
    pub host: Located<String>,
    #[serde(default = "https_port")]
    pub port: u16,
    /// PEM file (relative to the spec directory) of the CAs the host's certificate chains
    /// to, for private hosts; the system's CA store otherwise.
    #[serde(default)]
    pub trust_bundle: Option<PathBuf>,
}

fn https_port() -> u16 {
    443
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    North,
    West,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub kind: String,
    pub name: Located<String>,
    pub cell: Located<String>,
    /// The listener the rules apply to.
    pub listener: Direction,
    #[serde(default)]
    pub mode: PolicyMode,
    pub rules: Vec<PolicyRule>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    #[default]
    Enforce,
    DryRun,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Deny,
}

/// Every list given must match; within a list, one entry must.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    pub name: Located<String>,
    pub action: Action,
    /// Calling cells, by name (their SPIFFE IDs are derived from the cell documents).
    #[serde(default)]
    pub from_cells: Vec<Located<String>>,
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path prefixes.
    #[serde(default)]
    pub paths: Vec<String>,
    /// JWT claims that must hold: `{claim: scope, contains: orders.read}`.
    #[serde(default)]
    pub claims: Vec<ClaimRule>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRule {
    pub claim: String,
    #[serde(default)]
    pub equals: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProvider {
    pub kind: String,
    pub name: Located<String>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks: Jwks,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Jwks {
    Inline(String),
    /// Relative to the spec directory.
    File(PathBuf),
    Url(String),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub kind: String,
    pub name: Located<String>,
    pub cell: Located<String>,
    pub endpoint: Located<String>,
    pub requests: Located<u32>,
    /// Seconds per period.
    pub per_seconds: u32,
    #[serde(default)]
    pub key: RateKey,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RateKey {
    #[default]
    ClientIp,
    Peer,
}

/// What changes when a cell is promoted into an environment (`membrane promote`): the
/// compiler ignores overlays; promotion reads them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    pub kind: String,
    pub name: Located<String>,
    /// The cell's name without its environment suffix (`orders` for `orders-dev`).
    pub cell: Located<String>,
    /// The environment the overlay is for.
    pub environment: Located<String>,
    /// The promoted cell's name; `<cell>-<environment>` when absent.
    #[serde(default)]
    pub cell_name: Option<Located<String>>,
    /// The gateway's listener addresses in this environment (each listener the cell has).
    #[serde(default)]
    pub listeners: OverlayListeners,
    /// An endpoint's upstream addresses (its replicas) in this environment.
    #[serde(default)]
    pub upstreams: Vec<OverlayUpstreams>,
    /// A rate limit's budget in this environment (by its name in the source environment,
    /// without the suffix).
    #[serde(default)]
    pub rate_limits: Vec<OverlayRateLimit>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayListeners {
    #[serde(default)]
    pub north: Option<Located<SocketAddr>>,
    #[serde(default)]
    pub west: Option<Located<SocketAddr>>,
    #[serde(default)]
    pub east: Option<Located<SocketAddr>>,
    #[serde(default)]
    pub south: Option<Located<SocketAddr>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayUpstreams {
    pub endpoint: Located<String>,
    pub upstreams: Vec<Located<SocketAddr>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayRateLimit {
    pub name: Located<String>,
    pub requests: Located<u32>,
    #[serde(default)]
    pub per_seconds: Option<u32>,
}
