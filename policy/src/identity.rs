//! SPIFFE IDs (<https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md>) and the
//! identity a peer proved with its certificate.
//!
//! Membrane names cells with IDs of the form
//! `spiffe://<trust-domain>/org/<org>/env/<env>/cell/<cell>`; [`SpiffeId::cell`] reads the
//! segment after `cell`, and any other path is still a valid ID without a cell.

use std::fmt;

/// Longest ID accepted, as the SPIFFE standard recommends for URIs in certificates.
const MAX_LEN: usize = 2048;

/// A parsed, valid SPIFFE ID. Compared and hashed as its text, which is canonical: the
/// parser refuses anything that could be written two ways (upper case trust domains, `.`
/// and `..` segments, empty segments, a trailing slash, percent-encoding).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    text: String,
    /// Byte offset where the path starts (== `text.len()` when there is none).
    path_at: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("a SPIFFE ID starts with `spiffe://`")]
    Scheme,
    #[error("a SPIFFE ID is at most {MAX_LEN} bytes")]
    TooLong,
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    #[error("the trust domain may hold only a-z, 0-9, `.`, `-` and `_` (found {0:?})")]
    TrustDomainChar(char),
    #[error("path segments may hold only a-z, A-Z, 0-9, `.`, `-` and `_` (found {0:?})")]
    PathChar(char),
    #[error("the path has an empty segment, or ends with `/`")]
    EmptySegment,
    #[error("the path has a `.` or `..` segment")]
    DotSegment,
}

impl SpiffeId {
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Scheme)?;
        if s.len() > MAX_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let (domain, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        check_trust_domain(domain)?;
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                if seg.is_empty() {
                    return Err(SpiffeIdError::EmptySegment);
                }
                if seg == "." || seg == ".." {
                    return Err(SpiffeIdError::DotSegment);
                }
                if let Some(c) = seg
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
                {
                    return Err(SpiffeIdError::PathChar(c));
                }
            }
        }
        Ok(Self {
            text: s.to_owned(),
            path_at: "spiffe://".len() + domain.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn trust_domain(&self) -> &str {
        &self.text["spiffe://".len()..self.path_at]
    }

    /// The path, `""` or starting with `/`.
    pub fn path(&self) -> &str {
        &self.text[self.path_at..]
    }

    /// The segment that follows a `cell` segment in the path, if any.
    pub fn cell(&self) -> Option<&str> {
        let mut segs = self.path().split('/').skip(1);
        while let Some(seg) = segs.next() {
            if seg == "cell" {
                return segs.next();
            }
        }
        None
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Checks a bare trust domain name (as written in config lists of allowed domains).
pub fn check_trust_domain(domain: &str) -> Result<(), SpiffeIdError> {
    if domain.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    match domain
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        Some(c) => Err(SpiffeIdError::TrustDomainChar(c)),
        None => Ok(()),
    }
}

/// What a peer proved about itself in the TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerIdentity {
    /// The SPIFFE ID of the verified client certificate's URI SAN; `None` when the client
    /// sent no certificate or one without a SPIFFE ID.
    pub spiffe: Option<SpiffeId>,
    /// Hex SHA-256 of the client's leaf certificate (DER), as forwarded in XFCC `Hash=`.
    pub cert_sha256: Option<String>,
}

impl PeerIdentity {
    pub fn cell(&self) -> Option<&str> {
        self.spiffe.as_ref().and_then(SpiffeId::cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_id_parses_into_its_parts() {
        let id = SpiffeId::parse("spiffe://acme.internal/org/acme/env/prod/cell/orders").unwrap();
        assert_eq!(id.trust_domain(), "acme.internal");
        assert_eq!(id.path(), "/org/acme/env/prod/cell/orders");
        assert_eq!(id.cell(), Some("orders"));
        assert_eq!(
            id.to_string(),
            "spiffe://acme.internal/org/acme/env/prod/cell/orders"
        );
    }

    #[test]
    fn an_id_without_path_or_cell_is_valid() {
        let id = SpiffeId::parse("spiffe://example.org").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.path(), "");
        assert_eq!(id.cell(), None);
        assert_eq!(
            SpiffeId::parse("spiffe://example.org/cell").unwrap().cell(),
            None
        );
    }

    #[test]
    fn ambiguous_or_malformed_ids_are_refused() {
        let cases = [
            ("http://example.org/a", SpiffeIdError::Scheme),
            ("spiffe:///a", SpiffeIdError::EmptyTrustDomain),
            (
                "spiffe://Example.org/a",
                SpiffeIdError::TrustDomainChar('E'),
            ),
            (
                "spiffe://example.org:443/a",
                SpiffeIdError::TrustDomainChar(':'),
            ),
            (
                "spiffe://user@example.org/a",
                SpiffeIdError::TrustDomainChar('@'),
            ),
            ("spiffe://example.org/a//b", SpiffeIdError::EmptySegment),
            ("spiffe://example.org/a/", SpiffeIdError::EmptySegment),
            ("spiffe://example.org/a/../b", SpiffeIdError::DotSegment),
            ("spiffe://example.org/a%20b", SpiffeIdError::PathChar('%')),
            ("spiffe://example.org/a?x=1", SpiffeIdError::PathChar('?')),
            ("spiffe://example.org/a#f", SpiffeIdError::PathChar('#')),
        ];
        for (text, want) in cases {
            assert_eq!(SpiffeId::parse(text), Err(want), "{text}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(MAX_LEN));
        assert_eq!(SpiffeId::parse(&long), Err(SpiffeIdError::TooLong));
    }
}
