//! The writer threads behind access logs: one for stdout, one for stderr, one per file
//! (appended to; a file named by several listeners or generations has one writer). Lines
//! wait in a bounded queue; a full one drops them (counted by the caller).
//!
//! Rotation: a file writer reopens its path when asked ([`reopen`]: `SIGUSR1`, as nginx,
//! or the admin listener's `POST /reopen_logs`, as Envoy), and by itself when, at most once
//! a second before it writes, it finds the path gone or another file there (logrotate's
//! default rename-and-create needs no signal). A truncated file (`copytruncate`) is written
//! on at its new end (appending). Until a line comes, the old file stays open.

use super::AccessLogTarget;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Asks for reopens: each writer compares it with the count it last acted on.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// How often a file writer looks whether its path still names its file.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Asks every file writer to reopen its file before it writes its next lines.
pub fn reopen() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

/// Lines waiting for a writer; past this, new lines are dropped.
const QUEUE: usize = 64 * 1024;

enum Out {
    Stdout,
    Stderr,
    File(PathBuf, std::fs::File),
}

/// The queue to `target`'s writer, started on first use; `None` for `off`.
pub(super) fn sender(target: &AccessLogTarget) -> Result<Option<SyncSender<String>>, String> {
    static WRITERS: OnceLock<Mutex<HashMap<AccessLogTarget, SyncSender<String>>>> = OnceLock::new();
    if *target == AccessLogTarget::Off {
        return Ok(None);
    }
    let mut writers = WRITERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = writers.get(target) {
        return Ok(Some(tx.clone()));
    }
    let out = match target {
        AccessLogTarget::Stdout => Out::Stdout,
        AccessLogTarget::Stderr => Out::Stderr,
        AccessLogTarget::File(p) => Out::File(p.clone(), open(p)?),
        AccessLogTarget::Off => return Ok(None),
    };
    let (tx, rx) = sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("membrane-access-log".into())
        .spawn(move || drain(rx, out))
        .map_err(|e| format!("cannot start the access log writer: {e}"))?;
    writers.insert(target.clone(), tx.clone());
    Ok(Some(tx))
}

fn open(p: &PathBuf) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| format!("{}: cannot open for appending: {e}", p.display()))
}

/// Writes lines as they come, in batches: flushed whenever the queue runs empty.
fn drain(rx: Receiver<String>, out: Out) {
    let (mut out, mut file): (Box<dyn Write>, Option<Rotated>) = match out {
        Out::Stderr => (Box::new(std::io::BufWriter::new(std::io::stderr())), None),
        Out::Stdout => (Box::new(std::io::BufWriter::new(std::io::stdout())), None),
        Out::File(path, f) => {
            let r = Rotated::new(path, &f);
            (Box::new(std::io::BufWriter::new(f)), Some(r))
        }
    };
    while let Ok(line) = rx.recv() {
        if let Some(r) = file.as_mut()
            && let Some(f) = r.reopened()
        {
            let _ = out.flush();
            out = Box::new(std::io::BufWriter::new(f));
        }
        let _ = out.write_all(line.as_bytes());
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
    }
}

/// A log file's path and the file open under it, for reopening after a rotation.
struct Rotated {
    path: PathBuf,
    /// The open file's device and inode.
    id: Option<(u64, u64)>,
    asked: u64,
    checked: Instant,
}

impl Rotated {
    fn new(path: PathBuf, f: &std::fs::File) -> Self {
        Self {
            path,
            id: file_id(f.metadata().ok()),
            asked: REOPEN.load(Ordering::Relaxed),
            checked: Instant::now(),
        }
    }

    /// The file to write to from now on, when it is not the open one: a reopen was asked,
    /// or the path is gone or names another file. A file that cannot be opened is
    /// reported and the old one kept (tried again a second later).
    fn reopened(&mut self) -> Option<std::fs::File> {
        let asked = REOPEN.load(Ordering::Relaxed);
        if asked == self.asked && self.checked.elapsed() < CHECK_EVERY {
            return None;
        }
        self.checked = Instant::now();
        let now = file_id(std::fs::metadata(&self.path).ok());
        if asked == self.asked && now.is_some() && now == self.id {
            return None;
        }
        self.asked = asked;
        match open(&self.path) {
            Ok(f) => {
                self.id = file_id(f.metadata().ok());
                tracing::info!(path = %self.path.display(), "access log reopened");
                Some(f)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reopen the access log; writing to the old file");
                None
            }
        }
    }
}

fn file_id(m: Option<std::fs::Metadata>) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    m.map(|m| (m.dev(), m.ino()))
}
