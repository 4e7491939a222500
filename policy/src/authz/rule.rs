//! Authorization rules as the compiler takes them: every condition of a rule must match
//! (AND); each condition lists values of which one must match (OR). A rule without
//! conditions matches every request.

use super::glob::Glob;
use crate::identity::SpiffeId;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone)]
pub enum Condition {
    /// The peer's SPIFFE ID matches one of these.
    Peer(Vec<PeerMatch>),
    /// The JWT claim at `path` (dotted, for nested objects) passes.
    Claim {
        path: String,
        test: ClaimTest,
    },
    /// The host (lower case, without port) is one of these.
    Host(Vec<String>),
    /// The method is one of these (upper case).
    Method(Vec<String>),
    Path(Vec<PathMatch>),
    Header {
        name: String,
        test: HeaderTest,
    },
    /// The client's address is in one of these networks.
    Source(Vec<Cidr>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMatch {
    Exact(SpiffeId),
    /// A path prefix within a trust domain: `spiffe://acme.internal/org/acme/` matches every
    /// ID that starts with it.
    Prefix(String),
    TrustDomain(String),
    /// The cell named in the peer's ID (`.../cell/<cell>`).
    Cell(String),
    /// Any verified SPIFFE ID at all.
    Any,
}

#[derive(Debug, Clone)]
pub enum ClaimTest {
    /// A string claim equal to this, or an array claim holding it.
    Equals(String),
    /// An array claim holding this, or a space-separated string claim (OAuth `scope`)
    /// with it as one word.
    Contains(String),
    Present,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Glob(Glob),
}

#[derive(Debug, Clone)]
pub enum HeaderTest {
    Exact(String),
    Prefix(String),
    Present,
    Absent,
}

/// Why a network was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an IP address")]
    Address(String),
    #[error("`/{bits}` is not a prefix length from 0 to {max}")]
    PrefixLength { bits: String, max: u8 },
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or /128).
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| CidrError::Address(a.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| {
                CidrError::PrefixLength {
                    bits: b.to_owned(),
                    max,
                }
            })?,
        };
        Ok(Cidr { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}
