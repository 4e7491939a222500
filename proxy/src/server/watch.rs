//! Reloading on file changes: the config file and every certificate, key and trust bundle
//! it names. Directories are watched, not files: editors, cert-manager and Kubernetes
//! replace files by rename (or swap a `..data` symlink), which a watch on the file itself
//! would miss.

use super::Control;
use notify::{RecursiveMode, Watcher};
use rustc_hash::FxHashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

pub struct FileWatch {
    watcher: notify::RecommendedWatcher,
    /// File names that trigger a reload (a same-named file elsewhere in a watched directory
    /// costs one reload that finds nothing new).
    names: Arc<Mutex<FxHashSet<OsString>>>,
    dirs: FxHashSet<PathBuf>,
}

impl FileWatch {
    pub fn new(tx: mpsc::UnboundedSender<Control>) -> Option<Self> {
        let names: Arc<Mutex<FxHashSet<OsString>>> = Arc::default();
        let seen = names.clone();
        let watcher =
            notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
                let Ok(ev) = ev else { return };
                if ev.kind.is_access() {
                    return;
                }
                let Ok(names) = seen.lock() else { return };
                if ev.paths.iter().any(|p| {
                    p.ends_with("..data") || p.file_name().is_some_and(|n| names.contains(n))
                }) {
                    let _ = tx.send(Control::FileChanged);
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "cannot watch files; reload with SIGHUP"))
            .ok()?;
        Some(Self {
            watcher,
            names,
            dirs: FxHashSet::default(),
        })
    }

    /// Adds files to watch (files watched already are kept).
    pub fn track<'a>(&mut self, files: impl IntoIterator<Item = &'a Path>) {
        for path in files {
            let Some(name) = path.file_name() else {
                continue;
            };
            if let Ok(mut names) = self.names.lock() {
                names.insert(name.to_owned());
            }
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_owned();
            if self.dirs.contains(&dir) {
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.dirs.insert(dir);
                }
                Err(e) => tracing::warn!(
                    dir = %dir.display(),
                    error = %e,
                    "cannot watch this directory; reload with SIGHUP"
                ),
            }
        }
    }
}
