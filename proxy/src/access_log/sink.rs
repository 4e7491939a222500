//! The writer threads behind access logs: one for stdout, one for stderr, one per file
//! (appended to; a file named by several listeners or generations has one writer). Lines
//! wait in a bounded queue; a full one drops them (counted by the caller). Assumption: log
//! rotation renames or truncates files outside (logrotate's `copytruncate`); the file is
//! not reopened.

use super::AccessLogTarget;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, OnceLock};

/// Lines waiting for a writer; past this, new lines are dropped.
const QUEUE: usize = 64 * 1024;

enum Out {
    Stdout,
    Stderr,
    File(std::fs::File),
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
        AccessLogTarget::File(p) => Out::File(open(p)?),
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
    let mut out: Box<dyn Write> = match out {
        Out::Stderr => Box::new(std::io::BufWriter::new(std::io::stderr())),
        Out::Stdout => Box::new(std::io::BufWriter::new(std::io::stdout())),
        Out::File(f) => Box::new(std::io::BufWriter::new(f)),
    };
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
    }
}
