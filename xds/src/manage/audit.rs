//! The audit trail: every change the API accepted or refused, who asked (the credential's
//! operator and scope), what (each document's diff), when, and the store revision it made.
//! Each record is a key in the store (`<prefix>#audit/<time>-<random>`, so every control
//! server's records are listed together, in time order) and a JSON line in the server's
//! `--audit-log` file when one is given.
//!
//! Requests with no valid credential are logged as warnings and counted, not recorded in
//! the store: a caller without a credential must not be able to fill it.

use super::plan::Change;
use super::scope::{Operator, Scope};
use crate::store::Etcd;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC.
    pub time: String,
    pub operator: String,
    pub scope: Scope,
    /// `apply`, `delete` or `promote`.
    pub action: String,
    /// What was asked: the file applied, the document deleted, the promotion.
    pub subject: String,
    pub accepted: bool,
    /// Why it was refused: validation errors with their positions, the scope, a conflict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    #[serde(default)]
    pub changes: Vec<RecordedChange>,
    /// The store revision the change made (accepted), or read (refused).
    pub revision: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedChange {
    pub kind: String,
    pub name: String,
    pub change: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub diff: String,
}

impl From<&Change> for RecordedChange {
    fn from(c: &Change) -> Self {
        Self {
            kind: c.kind.to_owned(),
            name: c.name.clone(),
            change: c.change.as_str().to_owned(),
            diff: c.diff.clone(),
        }
    }
}

impl Record {
    pub fn new(op: &Operator, action: &str, subject: String) -> Self {
        Self {
            time: rfc3339_now(),
            operator: op.name.clone(),
            scope: op.scope.clone(),
            action: action.to_owned(),
            subject,
            accepted: false,
            reasons: Vec::new(),
            changes: Vec::new(),
            revision: 0,
        }
    }
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Filters for `membrane audit`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    pub operator: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub action: Option<String>,
    /// `accepted` or `refused`.
    pub outcome: Option<String>,
    /// RFC 3339; records at or after it.
    pub since: Option<String>,
    pub limit: Option<usize>,
}

impl Filter {
    pub fn keeps(&self, r: &Record) -> bool {
        let touches = |f: &dyn Fn(&RecordedChange) -> bool| r.changes.iter().any(f);
        self.operator.as_ref().is_none_or(|o| *o == r.operator)
            && self
                .kind
                .as_ref()
                .is_none_or(|k| touches(&|c| c.kind.eq_ignore_ascii_case(k)))
            && self.name.as_ref().is_none_or(|n| touches(&|c| c.name == *n))
            && self.action.as_ref().is_none_or(|a| *a == r.action)
            && self.outcome.as_deref().is_none_or(|o| match o {
                "accepted" => r.accepted,
                "refused" => !r.accepted,
                _ => false,
            })
            // RFC 3339 in UTC with the same precision compares as text.
            && self.since.as_ref().is_none_or(|s| r.time.as_str() >= s.as_str())
    }
}

/// Where records go.
pub struct Audit {
    store: Etcd,
    file: Option<Mutex<(PathBuf, Option<std::fs::File>)>>,
}

impl Audit {
    pub fn new(store: Etcd, file: Option<PathBuf>) -> Self {
        Self {
            store,
            file: file.map(|p| Mutex::new((p, None))),
        }
    }

    /// Appends `r` to the store and the file. A record that cannot be kept is logged as an
    /// error with its content, so that it is not lost without a trace.
    pub async fn append(&self, r: &Record) {
        let Ok(line) = serde_json::to_string(r) else {
            return;
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut salt = [0u8; 4];
        let _ = aws_lc_rs::rand::fill(&mut salt);
        let name = format!("{nanos:020}-{:08x}", u32::from_be_bytes(salt));
        if let Err(e) = self.store.put_side("audit", &name, line.as_bytes()).await {
            tracing::error!(error = %e, record = %line, "the audit record could not be kept in the store");
        }
        if let Some(f) = &self.file {
            let Ok(mut guard) = f.lock() else { return };
            let (path, handle) = &mut *guard;
            if handle.is_none() {
                *handle = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&*path)
                    .map_err(|e| tracing::error!(error = %e, path = %path.display(), "cannot open the audit log"))
                    .ok();
            }
            if let Some(h) = handle
                && let Err(e) = writeln!(h, "{line}")
            {
                tracing::error!(error = %e, record = %line, "cannot write the audit log");
                *handle = None;
            }
        }
    }

    /// Records kept in the store that `filter` keeps, oldest first, the last `limit`.
    pub async fn list(&self, filter: &Filter) -> Result<Vec<Record>, crate::store::StoreError> {
        let mut out: Vec<Record> = self
            .store
            .side_records("audit")
            .await?
            .iter()
            .filter_map(|v| serde_json::from_slice::<Record>(v).ok())
            .filter(|r| filter.keeps(r))
            .collect();
        if let Some(n) = filter.limit
            && out.len() > n
        {
            out.drain(..out.len() - n);
        }
        Ok(out)
    }
}
