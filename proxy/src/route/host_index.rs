use rustc_hash::FxHashMap;

/// Why a virtual host's domain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("`{0}`: a wildcard domain is `*.` then a domain")]
    Wildcard(String),
    #[error("`{0}`: a domain is a host name, `*.` then a host name, or `*`")]
    Invalid(String),
}

/// A domain pattern of a virtual host, as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DomainPattern {
    /// `api.example.com`
    Exact(Box<str>),
    /// `*.example.com`, stored as `.example.com`: matches any host that ends with it and has
    /// at least one more label, never `example.com` itself.
    Suffix(Box<str>),
    /// `*`
    Any,
}

impl DomainPattern {
    /// Parses a domain as written in the config; case is folded and one trailing dot
    /// dropped, as requests' hosts are (`normalize::authority`).
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let text = text.to_ascii_lowercase();
        let text = match text.strip_suffix('.') {
            Some(t) if !t.is_empty() && !t.ends_with('*') && !t.ends_with('.') => t.to_owned(),
            _ => text,
        };
        if text == "*" {
            return Ok(DomainPattern::Any);
        }
        if let Some(suffix) = text.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(DomainError::Wildcard(text));
            }
            return Ok(DomainPattern::Suffix(format!(".{suffix}").into()));
        }
        if text.is_empty() || text.contains('*') {
            return Err(DomainError::Invalid(text));
        }
        Ok(DomainPattern::Exact(text.into()))
    }
}

/// Picks the virtual host for a request's host: an exact name first, then the longest
/// wildcard suffix, then `*`. This is Envoy's order.
#[derive(Debug, Clone, Default)]
pub struct HostIndex {
    exact: FxHashMap<Box<str>, u32>,
    suffix: FxHashMap<Box<str>, u32>,
    any: Option<u32>,
}

impl HostIndex {
    /// Registers a pattern for virtual host `vhost`; false when the pattern is taken already.
    pub fn insert(&mut self, pattern: DomainPattern, vhost: u32) -> bool {
        use std::collections::hash_map::Entry;
        let slot = match pattern {
            DomainPattern::Exact(d) => self.exact.entry(d),
            DomainPattern::Suffix(s) => self.suffix.entry(s),
            DomainPattern::Any => {
                return self.any.is_none() && self.any.replace(vhost).is_none();
            }
        };
        match slot {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(vhost);
                true
            }
        }
    }

    /// `host` must already be lower case and without a port.
    #[inline]
    pub fn find(&self, host: &str) -> Option<u32> {
        if !self.exact.is_empty()
            && let Some(&v) = self.exact.get(host)
        {
            return Some(v);
        }
        if !self.suffix.is_empty() {
            // Leftmost dot first gives the longest suffix first.
            for (i, b) in host.bytes().enumerate() {
                if b == b'.'
                    && i > 0
                    && let Some(&v) = self.suffix.get(&host[i..])
                {
                    return Some(v);
                }
            }
        }
        self.any
    }
}

/// The host a request names, without its port; `None` when it has none.
#[inline]
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    // Bytes, not a `char` search: this runs on every request.
    match authority.bytes().rposition(|b| b == b':') {
        Some(i) if authority.as_bytes()[i + 1..].iter().all(u8::is_ascii_digit) => &authority[..i],
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_then_longest_wildcard_then_any() {
        let mut idx = HostIndex::default();
        for (p, v) in [
            ("api.example.com", 0),
            ("*.example.com", 1),
            ("*.eu.example.com", 2),
            ("*", 3),
        ] {
            assert!(idx.insert(DomainPattern::parse(p).unwrap(), v));
        }
        assert!(!idx.insert(DomainPattern::parse("API.example.com").unwrap(), 9));
        assert_eq!(idx.find("api.example.com"), Some(0));
        assert_eq!(idx.find("www.example.com"), Some(1));
        assert_eq!(idx.find("a.eu.example.com"), Some(2));
        assert_eq!(idx.find("a.b.eu.example.com"), Some(2));
        assert_eq!(idx.find("example.com"), Some(3));
        assert_eq!(idx.find(".example.com"), Some(3));
        assert_eq!(idx.find("other.org"), Some(3));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(DomainPattern::parse("*.").is_err());
        assert!(DomainPattern::parse("a.*.com").is_err());
        assert!(DomainPattern::parse("").is_err());
        assert_eq!(
            DomainPattern::parse("Api.Test."),
            Ok(DomainPattern::Exact("api.test".into()))
        );
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.com:8080"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
