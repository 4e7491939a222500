//! Parsing only what changed: the control server reads every spec file (or store key) on
//! each change, and parses again only the texts that differ from the last read; the other
//! files' documents are reused as they were parsed. Validation across documents runs on
//! the whole set every time, exactly as `membrane check` runs it.

use super::load::{self, SpecError, digest};
use super::types::{Document, Specs};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Default)]
pub struct ParseCache {
    /// By file (or key) name: its text's digest and its documents.
    files: HashMap<PathBuf, (u128, Vec<Arc<Document>>)>,
}

impl ParseCache {
    /// `spec::validate` through the cache.
    pub fn validate_dir(&mut self, dir: &Path) -> Result<Specs, Vec<SpecError>> {
        let texts = load::read_dir(dir)?;
        let specs = self.parse(texts.iter().map(|(p, t)| (p.as_path(), t.as_str())))?;
        super::finish(specs, dir, dir)
    }

    /// `spec::validate_documents` through the cache.
    pub fn validate_documents(
        &mut self,
        docs: &[(String, String)],
        files: &Path,
        origin: &Path,
    ) -> Result<Specs, Vec<SpecError>> {
        let specs = self.parse(
            docs.iter()
                .map(|(n, t)| (Path::new(n.as_str()), t.as_str())),
        )?;
        super::finish(specs, files, origin)
    }

    fn parse<'a>(
        &mut self,
        texts: impl Iterator<Item = (&'a Path, &'a str)>,
    ) -> Result<Specs, Vec<SpecError>> {
        let mut specs = Specs::default();
        let mut errors = Vec::new();
        let mut next = HashMap::with_capacity(self.files.len());
        for (file, text) in texts {
            let d = digest(text);
            let docs = match self.files.remove(file) {
                Some((old, docs)) if old == d => docs,
                _ => {
                    let mut one = Specs::default();
                    let before = errors.len();
                    load::parse_file(file, text, &mut one, &mut errors);
                    if errors.len() > before {
                        continue;
                    }
                    one.documents
                }
            };
            specs.documents.extend(docs.iter().cloned());
            next.insert(file.to_owned(), (d, docs));
        }
        // Files that are gone are forgotten; a failed parse leaves its file out, so the
        // next read parses it again.
        self.files = next;
        if errors.is_empty() {
            Ok(specs)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_what_did_not_change() {
        let dir = std::env::temp_dir().join(format!("membrane-parse-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cell = |name: &str, port: u16| {
            format!(
                "kind: Cell\nname: {name}\norg: acme\nproject: p\nenvironment: dev\ngateway:\n  west: {{address: '127.0.0.1:{port}'}}\n"
            )
        };
        std::fs::write(dir.join("a.yaml"), cell("a", 1)).unwrap();
        std::fs::write(dir.join("b.yaml"), cell("b", 2)).unwrap();
        let mut cache = ParseCache::default();
        let first = cache.validate_dir(&dir).unwrap();
        std::fs::write(dir.join("b.yaml"), cell("b", 3)).unwrap();
        let second = cache.validate_dir(&dir).unwrap();
        // a's document is the same allocation; b's was parsed again.
        assert!(Arc::ptr_eq(&first.documents[0], &second.documents[0]));
        assert!(!Arc::ptr_eq(&first.documents[1], &second.documents[1]));
        assert_ne!(first.documents[1].digest, second.documents[1].digest);
        // What the cache gives is what a fresh read gives.
        let fresh = crate::spec::validate(&dir).unwrap();
        let names = |s: &Specs| {
            s.cells()
                .map(|(_, c)| {
                    (
                        c.name.value().clone(),
                        c.gateway.west.as_ref().map(|w| *w.address.value()),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&second), names(&fresh));
        // A mistake is reported, and the file is parsed again once mended.
        std::fs::write(dir.join("b.yaml"), "kind: Cell\nname: b\n").unwrap();
        assert!(cache.validate_dir(&dir).is_err());
        std::fs::write(dir.join("b.yaml"), cell("b", 4)).unwrap();
        let mended = cache.validate_dir(&dir).unwrap();
        assert_eq!(names(&mended)[1].1, Some("127.0.0.1:4".parse().unwrap()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
