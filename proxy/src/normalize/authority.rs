//! The request's authority in its one canonical form: what routing, policy, logs and the
//! upstream's `Host` all use.
//!
//! Lower case; one trailing dot dropped (`admin.test.` names the same host as `admin.test`);
//! the port dropped when it is the scheme's default (`:80` for http, `:443` for https) or
//! empty; leading zeros of a port dropped. Refused (400): user information (`a@b`, which
//! some parsers read as host `b`), percent-encodings and other characters a host name cannot
//! have, empty labels (`a..b`, `a.test..`), an IPv6 literal that does not parse, a port that
//! is not a number up to 65535.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("the request's host is empty")]
    Empty,
    #[error("the request's host has user information (`@`)")]
    UserInfo,
    #[error("the request's host has a character a host name cannot have")]
    BadChar,
    #[error("the request's host has an empty label")]
    EmptyLabel,
    #[error("the request's host is not a valid IPv6 literal")]
    BadIpv6,
    #[error("the request's port is not a number up to 65535")]
    BadPort,
}

/// A canonical authority: `host` or `host:port`, and where the host ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority<'a> {
    pub text: Cow<'a, str>,
    pub host_len: usize,
}

impl Authority<'_> {
    /// The host without the port (an IPv6 literal keeps its brackets).
    pub fn host(&self) -> &str {
        &self.text[..self.host_len]
    }
}

/// The canonical form of `raw` for a request whose scheme's default port is `default_port`.
/// Borrowed when `raw` is canonical already.
pub fn canonical(raw: &str, default_port: u16) -> Result<Authority<'_>, AuthorityError> {
    // Nearly every request's authority is canonical already: one pass over its bytes says
    // so (measured: the general path below cost ~1,000 instructions per request, this
    // ~60). Anything unusual goes the general way.
    if let Some(host_len) = already_canonical(raw.as_bytes(), default_port) {
        return Ok(Authority {
            text: Cow::Borrowed(raw),
            host_len,
        });
    }
    general(raw, default_port)
}

/// Where the host ends, when `b` is a canonical `host[:port]`: lower-case labels of
/// letters, digits, `-` and `_`, none empty, no trailing dot, and a port (if any) with no
/// leading zero, up to 65535, not the default.
pub fn already_canonical(b: &[u8], default_port: u16) -> Option<usize> {
    // One table lookup and one compare per byte of the host.
    let mut after_dot = true;
    let mut i = 0;
    while i < b.len() {
        match HOST_BYTE[b[i] as usize] {
            LABEL => after_dot = false,
            DOT if !after_dot => after_dot = true,
            COLON => break,
            _ => return None,
        }
        i += 1;
    }
    if after_dot {
        return None;
    }
    let host_len = i;
    let Some(port) = b.get(i + 1..) else {
        return Some(host_len);
    };
    if port.is_empty() || port.len() > 5 || port[0] == b'0' {
        return None;
    }
    let mut n: u32 = 0;
    for &d in port {
        let v = d.wrapping_sub(b'0');
        if v > 9 {
            return None;
        }
        n = n * 10 + u32::from(v);
    }
    (n <= u32::from(u16::MAX) && n != u32::from(default_port)).then_some(host_len)
}

const OTHER: u8 = 0;
const LABEL: u8 = 1;
const DOT: u8 = 2;
const COLON: u8 = 3;

/// What each byte is in a canonical host: a label's letter (lower case), digit, `-` or `_`;
/// a dot; the colon before a port; anything else.
static HOST_BYTE: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => LABEL,
            b'.' => DOT,
            b':' => COLON,
            _ => OTHER,
        };
        c += 1;
    }
    t
};

fn general(raw: &str, default_port: u16) -> Result<Authority<'_>, AuthorityError> {
    if raw.is_empty() {
        return Err(AuthorityError::Empty);
    }
    let (host, port) = split(raw)?;
    let port_num = match port {
        None | Some("") => None,
        Some(p) => {
            if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AuthorityError::BadPort);
            }
            let n: u32 = p.parse().map_err(|_| AuthorityError::BadPort)?;
            if n > u16::MAX as u32 {
                return Err(AuthorityError::BadPort);
            }
            Some(n as u16)
        }
    };
    let keep_port = port_num.filter(|&n| n != default_port);
    let host_canon = host_form(host)?;
    let host_len = host_canon.len();
    // Canonical as it came: same host text, and the port (if any) kept exactly as written.
    let unchanged = matches!(host_canon, Cow::Borrowed(h) if h.len() == host.len())
        && match (port, keep_port) {
            (None, None) => true,
            (Some(p), Some(n)) => !p.starts_with('0') && p.parse::<u16>() == Ok(n),
            _ => false,
        };
    if unchanged {
        return Ok(Authority {
            text: Cow::Borrowed(raw),
            host_len,
        });
    }
    let mut text = host_canon.into_owned();
    if let Some(n) = keep_port {
        text.push(':');
        text.push_str(&n.to_string());
    }
    Ok(Authority {
        text: Cow::Owned(text),
        host_len,
    })
}

/// Host and optional port text.
fn split(raw: &str) -> Result<(&str, Option<&str>), AuthorityError> {
    if raw.contains('@') {
        return Err(AuthorityError::UserInfo);
    }
    if raw.starts_with('[') {
        let end = raw.find(']').ok_or(AuthorityError::BadIpv6)?;
        let rest = &raw[end + 1..];
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(p),
            None if rest.is_empty() => None,
            None => return Err(AuthorityError::BadChar),
        };
        return Ok((&raw[..=end], port));
    }
    Ok(match raw.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (raw, None),
    })
}

/// A host name, IPv4 address or IPv6 literal, in canonical form.
fn host_form(host: &str) -> Result<Cow<'_, str>, AuthorityError> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(AuthorityError::BadIpv6)?;
        let addr: std::net::Ipv6Addr = inner.parse().map_err(|_| AuthorityError::BadIpv6)?;
        let canon = format!("[{addr}]");
        return Ok(if canon == host {
            Cow::Borrowed(host)
        } else {
            Cow::Owned(canon)
        });
    }
    // One trailing dot is the root label: the same host.
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    if trimmed.is_empty() {
        return Err(AuthorityError::Empty);
    }
    let mut upper = false;
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(AuthorityError::EmptyLabel);
        }
        for b in label.bytes() {
            // Letters, digits, `-` and `_` (which some internal names carry); nothing else a
            // DNS name or an IPv4 address has.
            match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
                b'A'..=b'Z' => upper = true,
                _ => return Err(AuthorityError::BadChar),
            }
        }
    }
    Ok(match (upper, trimmed.len() == host.len()) {
        (false, true) => Cow::Borrowed(host),
        (false, false) => Cow::Borrowed(trimmed),
        (true, _) => Cow::Owned(trimmed.to_ascii_lowercase()),
    })
}

/// The length of the host part of a canonical authority (tests check `request`'s answer).
#[cfg(test)]
pub(crate) fn strip_port_len(b: &[u8]) -> usize {
    if b.first() == Some(&b'[') {
        return b.iter().position(|&c| c == b']').map_or(b.len(), |i| i + 1);
    }
    b.iter().rposition(|&c| c == b':').unwrap_or(b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(raw: &str, default_port: u16) -> Result<(String, String), AuthorityError> {
        canonical(raw, default_port).map(|a| (a.text.to_string(), a.host().to_owned()))
    }

    #[test]
    fn spellings_of_one_host_become_one() {
        for raw in [
            "admin.test",
            "ADMIN.test",
            "admin.test.",
            "admin.test.:80",
            "admin.test:80",
            "Admin.Test.:080",
            "admin.test:",
        ] {
            assert_eq!(
                canon(raw, 80),
                Ok(("admin.test".into(), "admin.test".into())),
                "{raw}"
            );
        }
        assert_eq!(
            canon("admin.test:443", 80),
            Ok(("admin.test:443".into(), "admin.test".into()))
        );
        assert_eq!(
            canon("admin.test:443", 443),
            Ok(("admin.test".into(), "admin.test".into()))
        );
        assert_eq!(
            canon("admin.test:08080", 80),
            Ok(("admin.test:8080".into(), "admin.test".into()))
        );
        assert_eq!(
            canon("[::0001]:80", 80),
            Ok(("[::1]".into(), "[::1]".into()))
        );
        assert_eq!(
            canon("[::1]:8080", 80),
            Ok(("[::1]:8080".into(), "[::1]".into()))
        );
        assert_eq!(
            canon("127.0.0.1:8080", 80),
            Ok(("127.0.0.1:8080".into(), "127.0.0.1".into()))
        );
    }

    /// The fast path and the general one agree on every input: random authorities built
    /// from the pieces that matter.
    #[test]
    fn the_fast_path_agrees_with_the_general_one() {
        let pieces = [
            "a", "B", "0", "9", "-", "_", ".", "..", ":", "80", "443", "8080", "0", "65535",
            "65536", "@", "[", "]", "::1", "%", " ", "x",
        ];
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..50_000 {
            let mut s = String::new();
            for _ in 0..rng.usize(1..7) {
                s.push_str(pieces[rng.usize(0..pieces.len())]);
            }
            for port in [80, 443] {
                if let Some(host_len) = already_canonical(s.as_bytes(), port) {
                    let g = general(&s, port).unwrap_or_else(|e| panic!("{s}: {e}"));
                    assert_eq!(g.text, s, "{s}");
                    assert_eq!(g.host_len, host_len, "{s}");
                }
            }
        }
    }

    #[test]
    fn canonical_authorities_are_borrowed() {
        for raw in ["a.test", "a.test:8080", "127.0.0.1:1", "[::1]", "[::1]:81"] {
            assert!(
                matches!(canonical(raw, 80).map(|a| a.text), Ok(Cow::Borrowed(_))),
                "{raw}"
            );
        }
    }

    #[test]
    fn refusals() {
        use AuthorityError::*;
        for (raw, e) in [
            ("", Empty),
            (".", Empty),
            (":80", Empty),
            ("user@admin.test", UserInfo),
            ("a@b:80", UserInfo),
            ("admin.test..", EmptyLabel),
            ("a..b", EmptyLabel),
            (".a", EmptyLabel),
            ("adm%69n.test", BadChar),
            ("a b", BadChar),
            ("a,b", BadChar),
            ("a/b", BadChar),
            ("a.test:x", BadPort),
            ("a.test:65536", BadPort),
            ("a.test:123456", BadPort),
            ("a.test:-1", BadPort),
            ("[::1", BadIpv6),
            ("[zz]", BadIpv6),
            ("[::1]x", BadChar),
        ] {
            assert_eq!(canon(raw, 80), Err(e), "{raw}");
        }
    }
}
