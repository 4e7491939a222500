//! Path globs: `*` matches any run of characters within one segment (no `/`), `**` any run
//! across segments, every other character itself.

/// Why a path glob was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("path glob `{0}` must start with `/`")]
    NotAbsolute(String),
    #[error("path glob `{0}` has `***`; use `*` or `**`")]
    TripleStar(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        if !pattern.starts_with('/') {
            return Err(GlobError::NotAbsolute(pattern.to_owned()));
        }
        if pattern.contains("***") {
            return Err(GlobError::TripleStar(pattern.to_owned()));
        }
        Ok(Glob {
            pattern: pattern.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The literal part before the first `*`: every match starts with it.
    pub fn literal_prefix(&self) -> &str {
        self.pattern.split('*').next().unwrap_or("")
    }

    pub fn matches(&self, path: &str) -> bool {
        matches(self.pattern.as_bytes(), path.as_bytes())
    }
}

/// Iterative matching with one backtrack point per kind of star (the classic wildcard
/// algorithm, extended with segment-bounded `*`): linear in practice, no recursion.
fn matches(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    // Where to resume after a `**` (pattern index after it, string index it covers up to)
    let mut deep: Option<(usize, usize)> = None;
    // Same for a single `*`, which may not cross `/`.
    let mut shallow: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi + 1 < p.len() && p[pi] == b'*' && p[pi + 1] == b'*' {
            pi += 2;
            deep = Some((pi, si));
            shallow = None;
            continue;
        }
        if pi < p.len() && p[pi] == b'*' {
            pi += 1;
            shallow = Some((pi, si));
            continue;
        }
        if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
            continue;
        }
        if let Some((sp, ss)) = shallow
            && s[ss] != b'/'
        {
            shallow = Some((sp, ss + 1));
            pi = sp;
            si = ss + 1;
            continue;
        }
        if let Some((dp, ds)) = deep {
            deep = Some((dp, ds + 1));
            shallow = None;
            pi = dp;
            si = ds + 1;
            continue;
        }
        return false;
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_star_stays_in_its_segment_double_star_crosses() {
        let g = |p| Glob::new(p).unwrap();
        assert!(g("/orders/*/items").matches("/orders/42/items"));
        assert!(!g("/orders/*/items").matches("/orders/4/2/items"));
        assert!(g("/orders/**/items").matches("/orders/4/2/items"));
        assert!(g("/orders/**").matches("/orders/a/b/c"));
        assert!(g("/orders/*").matches("/orders/"));
        assert!(!g("/orders/*").matches("/orders/a/b"));
        assert!(g("/*.json").matches("/a.json"));
        assert!(!g("/*.json").matches("/a/b.json"));
        assert!(g("/**.json").matches("/a/b.json"));
        assert!(!g("/exact").matches("/exactly"));
        assert!(g("/a*b*c").matches("/aXbYc"));
        assert!(!g("/a*b*c").matches("/aXbY/c"));
        assert_eq!(g("/orders/*/items").literal_prefix(), "/orders/");
        assert!(Glob::new("orders").is_err());
    }
}
