//! Parsing only what changed: the control server reads the specs again on each change,
//! and parses again only the texts that differ from the last read; the other files'
//! documents are reused as they were parsed. Validation across documents runs on the whole
//! set every time, exactly as `membrane check` runs it.
//!
//! In a directory, a file is not even read again when its size, modification time, inode
//! and device are those it had when it was last read, and that modification time was
//! already 2 seconds old then (a later write sets a later time, even where file systems
//! keep times coarsely). Assumption: nothing rewrites a spec file in place with the same
//! size and then sets its old modification time back; a file replaced by rename (editors,
//! Git, Kubernetes' ConfigMap volumes, rsync) has a new inode.

use super::load::{self, SpecError, digest};
use super::types::{Document, Specs};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How old a modification time must be for a file's stamp to be trusted.
const SETTLED: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ino: u64,
    dev: u64,
}

fn stamp(path: &Path) -> Option<(Stamp, SystemTime)> {
    // Follows symbolic links: a ConfigMap volume swaps the link's target.
    let m = std::fs::metadata(path).ok()?;
    let s = Stamp {
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ino: m.ino(),
        dev: m.dev(),
    };
    Some((s, m.modified().ok()?))
}

struct Entry {
    digest: u128,
    docs: Vec<Arc<Document>>,
    /// Set when the file's time was settled when it was read.
    stamp: Option<Stamp>,
}

/// One read of every file through the cache.
#[derive(Default)]
struct Read {
    specs: Specs,
    errors: Vec<SpecError>,
    files: HashMap<PathBuf, Entry>,
}

impl Read {
    fn keep(&mut self, file: PathBuf, e: Entry) {
        self.specs.documents.extend(e.docs.iter().cloned());
        self.files.insert(file, e);
    }

    /// The files read become the cache (files gone are forgotten; one that did not parse
    /// is left out, so it is parsed again next time), and the specs are validated whole.
    fn finish(
        self,
        cache: &mut ParseCache,
        files: &Path,
        origin: &Path,
    ) -> Result<Specs, Vec<SpecError>> {
        cache.files = self.files;
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        super::finish(self.specs, files, origin)
    }
}

#[derive(Default)]
pub struct ParseCache {
    /// By file (or key) name.
    files: HashMap<PathBuf, Entry>,
}

impl ParseCache {
    /// `spec::validate` through the cache.
    pub fn validate_dir(&mut self, dir: &Path) -> Result<Specs, Vec<SpecError>> {
        let mut read = Read::default();
        for file in load::list_dir(dir)? {
            let now = SystemTime::now();
            let seen = stamp(&file);
            if let (Some((s, _)), Some(e)) = (seen, self.files.get(&file))
                && e.stamp == Some(s)
                && let Some(e) = self.files.remove(&file)
            {
                read.keep(file, e);
                continue;
            }
            let text = match load::read_file(&file) {
                Ok(t) => t,
                Err(e) => {
                    read.errors.push(e);
                    continue;
                }
            };
            let settled = seen
                .filter(|(_, modified)| {
                    now.duration_since(*modified).is_ok_and(|age| age > SETTLED)
                })
                .map(|(s, _)| s);
            if let Some(mut e) = self.entry(&file, &text, &mut read.errors) {
                e.stamp = settled;
                read.keep(file, e);
            }
        }
        read.finish(self, dir, dir)
    }

    /// `spec::validate_documents` through the cache.
    pub fn validate_documents(
        &mut self,
        docs: &[(String, String)],
        files: &Path,
        origin: &Path,
    ) -> Result<Specs, Vec<SpecError>> {
        let mut read = Read::default();
        for (name, text) in docs {
            let file = PathBuf::from(name);
            if let Some(e) = self.entry(&file, text, &mut read.errors) {
                read.keep(file, e);
            }
        }
        read.finish(self, files, origin)
    }

    /// The file's documents: the cached ones when its text is the same, else parsed (and
    /// `None`, with the mistakes in `errors`, when it does not parse; it is parsed again
    /// on the next read).
    fn entry(&mut self, file: &Path, text: &str, errors: &mut Vec<SpecError>) -> Option<Entry> {
        let d = digest(text);
        if let Some(e) = self.files.remove(file)
            && e.digest == d
        {
            return Some(e);
        }
        let mut one = Specs::default();
        let before = errors.len();
        load::parse_file(file, text, &mut one, errors);
        (errors.len() == before).then_some(Entry {
            digest: d,
            docs: one.documents,
            stamp: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(name: &str, port: u16) -> String {
        format!(
            "kind: Cell\nname: {name}\norg: acme\nproject: p\nenvironment: dev\ngateway:\n  west: {{address: '127.0.0.1:{port}'}}\n"
        )
    }

    fn wests(s: &Specs) -> Vec<(String, Option<std::net::SocketAddr>)> {
        s.cells()
            .map(|(_, c)| {
                (
                    c.name.value().clone(),
                    c.gateway.west.as_ref().map(|w| *w.address.value()),
                )
            })
            .collect()
    }

    #[test]
    fn reuses_what_did_not_change() {
        let dir = std::env::temp_dir().join(format!("membrane-parse-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), cell("a", 1)).unwrap();
        std::fs::write(dir.join("b.yaml"), cell("b", 2)).unwrap();
        let mut cache = ParseCache::default();
        let first = cache.validate_dir(&dir).unwrap();
        // Same length, same second: read again all the same (the times are not settled).
        std::fs::write(dir.join("b.yaml"), cell("b", 3)).unwrap();
        let second = cache.validate_dir(&dir).unwrap();
        // a's document is the same allocation; b's was parsed again.
        assert!(Arc::ptr_eq(&first.documents[0], &second.documents[0]));
        assert!(!Arc::ptr_eq(&first.documents[1], &second.documents[1]));
        assert_ne!(first.documents[1].digest, second.documents[1].digest);
        // What the cache gives is what a fresh read gives.
        assert_eq!(wests(&second), wests(&crate::spec::validate(&dir).unwrap()));
        // A mistake is reported, and the file is parsed again once mended.
        std::fs::write(dir.join("b.yaml"), "kind: Cell\nname: b\n").unwrap();
        assert!(cache.validate_dir(&dir).is_err());
        std::fs::write(dir.join("b.yaml"), cell("b", 4)).unwrap();
        let mended = cache.validate_dir(&dir).unwrap();
        assert_eq!(
            mended
                .cells()
                .nth(1)
                .map(|(_, c)| c.gateway.west.as_ref().map(|w| *w.address.value())),
            Some(Some("127.0.0.1:4".parse().unwrap()))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn set_time(path: &Path, t: SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn a_settled_file_is_not_read_again_until_its_stamp_changes() {
        let dir = std::env::temp_dir().join(format!("membrane-parse-stamp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.yaml");
        std::fs::write(&a, cell("a", 1)).unwrap();
        // Make it old: its time three seconds back.
        let old = SystemTime::now() - Duration::from_secs(3);
        set_time(&a, old);
        let mut cache = ParseCache::default();
        let first = cache.validate_dir(&dir).unwrap();
        // Unchanged and settled: reused without reading (its text replaced behind the
        // stamp's back, same length and time, shows that it was not read).
        std::fs::write(&a, cell("a", 2)).unwrap();
        set_time(&a, old);
        let second = cache.validate_dir(&dir).unwrap();
        assert!(Arc::ptr_eq(&first.documents[0], &second.documents[0]));
        // Any write that moves the time (every write does) is read.
        std::fs::write(&a, cell("a", 3)).unwrap();
        let third = cache.validate_dir(&dir).unwrap();
        assert_eq!(wests(&third)[0].1, Some("127.0.0.1:3".parse().unwrap()));
        // Replaced by rename (a new inode), even with the old time: read.
        let tmp = dir.join("a.tmp");
        std::fs::write(&tmp, cell("a", 4)).unwrap();
        set_time(&tmp, old);
        std::fs::rename(&tmp, &a).unwrap();
        let fourth = cache.validate_dir(&dir).unwrap();
        assert_eq!(wests(&fourth)[0].1, Some("127.0.0.1:4".parse().unwrap()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
