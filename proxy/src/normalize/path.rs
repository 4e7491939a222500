//! The request path in its one canonical form (RFC 3986 §6.2.2, the choices Envoy makes with
//! `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action`).
//!
//! Routing, policy, rate limits, logs and the upstream all see the path this returns, so a
//! `deny /admin` rule cannot be walked around with `/x/../admin`, `//admin`, `/./admin` or
//! `/%61dmin`: every upstream that normalizes (nginx, most frameworks) would serve `/admin`
//! for those, and Membrane now forwards `/admin` itself.
//!
//! In order, on the path (the query is left as it came):
//! 1. Percent-encodings are checked (`%` and two hex digits, else 400). An encoded
//!    unreserved character (`ALPHA DIGIT - . _ ~`) is decoded (`%61` → `a`, `%2E` → `.`); any
//!    other encoding stays encoded, in upper case (`%3f` → `%3F`). An encoded control byte
//!    (`%00`-`%1F`, `%7F`) is refused: C upstreams end the path at `%00`, and nginx refuses
//!    it too. Bytes above 0x7F are percent-encoded.
//! 2. `%2F` and `%5C` (an encoded `/` and `\`), and a raw `\`, are what the listener's
//!    `escaped_slashes` says: `reject` (the default, 400), `keep` (forwarded encoded, `\` as
//!    `%5C`; one segment to Membrane, though an upstream that decodes them sees more), or
//!    `unescape` (each becomes `/` before the steps below). A `\` counts as a slash because
//!    Windows-hosted upstreams and several frameworks treat it as one.
//! 3. With `merge_slashes` (default on), runs of `/` become one.
//! 4. With `dot_segments` (default on), `.` and `..` segments are removed (RFC 3986
//!    §5.2.4); `..` never climbs above the root.
//! 5. A `;` (path parameters, RFC 3986 §3.3) is what the listener's `path_parameters` says:
//!    `reject` (the default, 400) or `keep`. Servlet containers (Tomcat, Jetty) and Spring
//!    cut `;...` from each segment before routing, so `/admin;x` is `/admin` to them while
//!    a rule about the exact path `/admin` does not see it (Spring Security's own firewall
//!    refuses `;` for this reason). With `keep`, a segment that is `.` or `..` followed by
//!    `;parameters` is still refused: those containers read `/..;/admin` as `/../admin`.
//!
//! A fragment (`#`) has no place in a request target (RFC 9112 §3.2) and is refused, as is a
//! path that does not start with `/`.

use std::borrow::Cow;

/// What to do with `%2F`, `%5C` and a raw `\` in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// 400: the request is refused (the default; Envoy's `REJECT_REQUEST`).
    #[default]
    Reject,
    /// Forwarded encoded, as part of their segment (Envoy's `KEEP_UNCHANGED`).
    Keep,
    /// Decoded to `/` before slashes are merged and dot segments removed (Envoy's
    /// `UNESCAPE_AND_FORWARD`).
    Unescape,
}

/// What to do with `;` (path parameters) in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathParameters {
    /// 400: the request is refused (the default).
    #[default]
    Reject,
    /// Forwarded as they are (a `.`/`..` segment with parameters is still refused).
    Keep,
}

/// A listener's path settings. The defaults are the safe ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    pub dot_segments: bool,
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
    pub parameters: PathParameters,
}

impl Default for PathRules {
    fn default() -> Self {
        Self {
            dot_segments: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
            parameters: PathParameters::Reject,
        }
    }
}

/// Why a path was refused; each becomes a 400 that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with `/`")]
    NotAbsolute,
    #[error("the request path has a `%` that is not followed by two hex digits")]
    BadEscape,
    #[error("the request path has an encoded control character")]
    EncodedControl,
    #[error("the request path has an encoded slash or a backslash (`%2F`, `%5C`, `\\`)")]
    EscapedSlash,
    #[error("the request target has a fragment (`#`)")]
    Fragment,
    #[error("the request path has a dot segment with parameters (`..;`)")]
    DotSegmentParameters,
    #[error("the request path has path parameters (`;`), which this listener refuses")]
    Parameters,
}

/// The canonical form of `path` (no query): borrowed when it is canonical already, which
/// the common request is, so that it costs one scan and no allocation.
pub fn normalize<'a>(path: &'a str, rules: &PathRules) -> Result<Cow<'a, str>, PathError> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(b, rules) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(b, rules.escaped_slashes)?;
    let out = segments(&decoded, rules)?;
    if out == path {
        return Ok(Cow::Borrowed(path));
    }
    Ok(Cow::Owned(out))
}

/// One pass: nothing to decode, encode or refuse, no slash run, no dot segment.
fn is_canonical(b: &[u8], rules: &PathRules) -> bool {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' | b'\\' | b'#' | 0x80..=0xff => return false,
            b';' if rules.parameters == PathParameters::Reject => return false,
            b'/' => match b.get(i + 1) {
                Some(b'/') if rules.merge_slashes => return false,
                // `/.`, `/..`, `/.;`, `/..;` each start a segment to look at.
                Some(b'.') => {
                    let seg = &b[i + 1..];
                    let end = seg
                        .iter()
                        .position(|&c| c == b'/' || c == b';')
                        .unwrap_or(seg.len());
                    if matches!(&seg[..end], b"." | b"..") {
                        return false;
                    }
                }
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    true
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn push_encoded(out: &mut Vec<u8>, c: u8) {
    out.extend_from_slice(&[
        b'%',
        HEX_UPPER[(c >> 4) as usize],
        HEX_UPPER[(c & 15) as usize],
    ]);
}

/// Steps 1 and 2: escapes checked, unreserved ones decoded, the rest in upper case, slashes
/// by the listener's rule, high bytes encoded.
fn decode(b: &[u8], slashes: EscapedSlashes) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(b.len() + 8);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'%' => {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = (h << 4) | l;
                i += 3;
                if v < 0x20 || v == 0x7f {
                    return Err(PathError::EncodedControl);
                }
                if v == b'/' || v == b'\\' {
                    match slashes {
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Keep => push_encoded(&mut out, v),
                        EscapedSlashes::Unescape => out.push(b'/'),
                    }
                } else if is_unreserved(v) {
                    out.push(v);
                } else {
                    push_encoded(&mut out, v);
                }
                continue;
            }
            b'\\' => match slashes {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Keep => push_encoded(&mut out, c),
                EscapedSlashes::Unescape => out.push(b'/'),
            },
            b'#' => return Err(PathError::Fragment),
            0x80..=0xff => push_encoded(&mut out, c),
            _ => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

/// Steps 3 to 5 on a decoded path (ASCII only, starts with `/`).
fn segments(b: &[u8], rules: &PathRules) -> Result<String, PathError> {
    // Segments after the leading `/`; an empty one is what `//` leaves.
    let mut kept: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = b[1..].split(|&c| c == b'/').collect();
    let last = parts.len() - 1;
    // A path that ends in a dot segment ends with `/` (RFC 3986 §5.2.4: `/a/b/..` → `/a/`).
    let mut trailing_slash = false;
    for (i, seg) in parts.iter().enumerate() {
        let bare = match seg.iter().position(|&c| c == b';') {
            Some(p) => {
                if matches!(&seg[..p], b"." | b"..") {
                    return Err(PathError::DotSegmentParameters);
                }
                if rules.parameters == PathParameters::Reject {
                    return Err(PathError::Parameters);
                }
                &seg[..]
            }
            None => &seg[..],
        };
        match bare {
            b"." if rules.dot_segments => trailing_slash = i == last,
            b".." if rules.dot_segments => {
                kept.pop();
                trailing_slash = i == last;
            }
            b"" if rules.merge_slashes && i != last => {}
            _ => {
                kept.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(b.len());
    for seg in &kept {
        out.push('/');
        // Decoding produced ASCII only (high bytes were encoded).
        out.extend(seg.iter().map(|&c| c as char));
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize(p, &PathRules::default()).map(Cow::into_owned)
    }

    #[test]
    fn the_audit_cases_become_the_path_the_upstream_would_serve() {
        for p in [
            "/x/../admin",
            "//admin",
            "/./admin",
            "/%61dmin",
            "/%61%64%6D%69%6E",
            "/public/%2e%2e/admin",
            "/public/%2E%2E/admin",
            "/public/.%2e/admin",
            "///admin",
            "/a/b/../../admin",
            "/../admin",
            "/../../admin",
            "/.//admin",
            "/admin/.",
        ] {
            let n = norm(p).unwrap();
            assert!(n == "/admin" || n == "/admin/", "{p} -> {n}");
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in ["/", "/api/v1/users", "/a.b/c..d/.e/..f", "/~u/a-b_c"] {
            assert!(
                matches!(normalize(p, &PathRules::default()), Ok(Cow::Borrowed(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_follow_rfc3986() {
        // RFC 3986 §5.2.4's own examples, on absolute paths.
        assert_eq!(norm("/a/b/c/./../../g").unwrap(), "/a/g");
        assert_eq!(norm("/mid/content=5/../6").unwrap(), "/mid/6");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(norm("/..").unwrap(), "/");
        assert_eq!(norm("/a/").unwrap(), "/a/");
        assert_eq!(norm("/a//b//").unwrap(), "/a/b/");
    }

    #[test]
    fn escapes_are_decoded_or_kept_in_upper_case() {
        assert_eq!(norm("/a%7eb%2Dc%5F").unwrap(), "/a~b-c_");
        assert_eq!(norm("/a%3fb%23c%25").unwrap(), "/a%3Fb%23c%25");
        assert_eq!(norm("/caf\u{e9}").unwrap(), "/caf%C3%A9");
        // Double encoding is decoded once, as the upstream will decode it once.
        assert_eq!(norm("/%252e%252e/admin").unwrap(), "/%252e%252e/admin");
    }

    #[test]
    fn refusals() {
        use PathError::*;
        for (p, e) in [
            ("admin", NotAbsolute),
            ("", NotAbsolute),
            ("*", NotAbsolute),
            ("/a%2", BadEscape),
            ("/a%zz", BadEscape),
            ("/a%", BadEscape),
            ("/a%00b", EncodedControl),
            ("/a%0d%0ab", EncodedControl),
            ("/a%7F", EncodedControl),
            ("/a%2Fb", EscapedSlash),
            ("/a%2fb", EscapedSlash),
            ("/a%5Cb", EscapedSlash),
            ("/a\\b", EscapedSlash),
            ("/a#b", Fragment),
            ("/..;/admin", DotSegmentParameters),
            ("/x/.;a/admin", DotSegmentParameters),
            ("/x/%2e%2e;/admin", DotSegmentParameters),
            ("/admin;x=1", Parameters),
            ("/a/b;/c", Parameters),
        ] {
            assert_eq!(norm(p), Err(e), "{p}");
        }
        // Kept when the listener says so, but a dot segment with parameters never is.
        let keep = PathRules {
            parameters: PathParameters::Keep,
            ..PathRules::default()
        };
        assert!(matches!(normalize("/x;y=1", &keep), Ok(Cow::Borrowed(_))));
        assert_eq!(normalize("/..;/admin", &keep), Err(DotSegmentParameters));
    }

    #[test]
    fn escaped_slash_actions() {
        let keep = PathRules {
            escaped_slashes: EscapedSlashes::Keep,
            ..PathRules::default()
        };
        let unescape = PathRules {
            escaped_slashes: EscapedSlashes::Unescape,
            ..PathRules::default()
        };
        assert_eq!(normalize("/a%2fb", &keep).unwrap(), "/a%2Fb");
        assert_eq!(normalize("/a\\b", &keep).unwrap(), "/a%5Cb");
        // Kept encoded, `..%2F` is one segment, not a dot segment.
        assert_eq!(normalize("/x/..%2Fadmin", &keep).unwrap(), "/x/..%2Fadmin");
        assert_eq!(normalize("/a%2fb", &unescape).unwrap(), "/a/b");
        assert_eq!(normalize("/x/..%2Fadmin", &unescape).unwrap(), "/admin");
        assert_eq!(normalize("/x\\..\\admin", &unescape).unwrap(), "/admin");
    }

    #[test]
    fn switches_off_leave_what_they_govern() {
        let raw = PathRules {
            dot_segments: false,
            merge_slashes: false,
            ..PathRules::default()
        };
        assert_eq!(normalize("//a/./b/../c", &raw).unwrap(), "//a/./b/../c");
        // Unreserved escapes are still decoded.
        assert_eq!(normalize("/%61", &raw).unwrap(), "/a");
        let no_merge = PathRules {
            merge_slashes: false,
            ..PathRules::default()
        };
        assert_eq!(normalize("/a//../b", &no_merge).unwrap(), "/a/b");
    }

    /// The result is a fixed point (normalizing it again changes nothing), and is never a path
    /// with a dot segment or a slash run: checked over random paths built from the pieces
    /// that matter.
    #[test]
    fn normal_form_is_stable_over_random_paths() {
        let mut rng = fastrand::Rng::with_seed(7);
        let pieces = [
            "/", "//", ".", "..", "%2e", "%2E", "a", "%61", "%2f", "\\", ";", "%41", "~", "%7e",
            "%00", "%", "b/", "%c3%a9", "é",
        ];
        let all = [
            PathRules::default(),
            PathRules {
                parameters: PathParameters::Keep,
                ..PathRules::default()
            },
            PathRules {
                escaped_slashes: EscapedSlashes::Keep,
                ..PathRules::default()
            },
            PathRules {
                escaped_slashes: EscapedSlashes::Unescape,
                ..PathRules::default()
            },
        ];
        for _ in 0..20_000 {
            let mut p = String::from("/");
            for _ in 0..rng.usize(0..10) {
                p.push_str(pieces[rng.usize(0..pieces.len())]);
            }
            for rules in &all {
                let Ok(n) = normalize(&p, rules) else {
                    continue;
                };
                let again = normalize(&n, rules).unwrap_or_else(|e| panic!("{p} -> {n}: {e}"));
                assert_eq!(again, n, "{p}");
                assert!(!n.contains("//"), "{p} -> {n}");
                for seg in n.split('/') {
                    assert!(seg != "." && seg != "..", "{p} -> {n}");
                }
            }
        }
    }
}
