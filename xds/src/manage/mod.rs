//! The control API: operators change the specs in the store through the control servers,
//! never around them. Every change is authenticated (an operator token), held to the
//! credential's scope, validated exactly as `membrane check` validates a directory (errors
//! with file, line and column), written with a compare-and-swap on the store revision, and
//! audited, accepted or refused.
//!
//! The API is HTTPS+JSON (`http.rs`); the CLI is `membrane apply|get|delete|diff|audit|
//! promote`. It needs a store (`--store etcd://`): a directory of specs is changed with
//! the tools that manage the directory (GitOps), not through a control server.

pub mod audit;
pub mod client;
pub mod http;
mod plan;
pub mod promote;
pub mod scope;

use crate::spec::{self, Specs};
use crate::store::Etcd;
use audit::{Audit, Filter, Record, RecordedChange};
use plan::{Index, Wanted};
use scope::{Operator, Scope};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use plan::{Change, Verb};

/// What an operator asks.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Request {
    /// The documents of one file, created or replaced.
    Apply {
        file: String,
        text: String,
    },
    Delete {
        kind: String,
        name: String,
    },
    /// `cell` from environment `from` into `to`, with `to`'s overlay.
    Promote {
        cell: String,
        from: String,
        to: String,
    },
}

/// How a change ended; also what `diff` (a dry run) answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// An HTTP status: 200 accepted (or would be), 403 outside the scope, 404 no such
    /// document, 409 a concurrent change, 422 invalid, 503 the store.
    pub status: u16,
    pub accepted: bool,
    pub dry_run: bool,
    /// The revision the change made, or the one it was checked against.
    pub revision: i64,
    pub changes: Vec<RecordedChange>,
    #[serde(default)]
    pub errors: Vec<String>,
}

/// One document as `get` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shown {
    pub kind: String,
    pub name: String,
    pub key: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listing {
    pub revision: i64,
    pub documents: Vec<Shown>,
}

/// A change against the store, as one control server makes it.
pub struct Manager {
    pub store: Etcd,
    /// Where files specs name (JWKS, trust bundles) are read, as for the control server.
    files: PathBuf,
    pub audit: Audit,
}

/// How often a change is re-read and re-validated when another one landed in between.
const ATTEMPTS: usize = 8;

fn outcome(status: u16, revision: i64, errors: Vec<String>) -> Outcome {
    Outcome {
        status,
        accepted: false,
        dry_run: false,
        revision,
        changes: Vec::new(),
        errors,
    }
}

impl Manager {
    pub fn new(store: Etcd, files: PathBuf, audit: Audit) -> Self {
        Self {
            store,
            files,
            audit,
        }
    }

    fn subject(req: &Request) -> (&'static str, String) {
        match req {
            Request::Apply { file, .. } => ("apply", file.clone()),
            Request::Delete { kind, name } => ("delete", format!("{kind} {name}")),
            Request::Promote { cell, from, to } => {
                ("promote", format!("{cell} from {from} to {to}"))
            }
        }
    }

    /// Makes `req` for `op` (or checks it only, `dry_run`). `revision`: refuse if the store
    /// changed after it (what the operator last read); without it, a change that lands
    /// between this one's read and write makes this one be read, validated and tried again.
    pub async fn change(
        &self,
        op: &Operator,
        req: &Request,
        revision: Option<i64>,
        dry_run: bool,
    ) -> Outcome {
        let (action, subject) = Self::subject(req);
        let mut record = Record::new(op, action, subject);
        let mut out = outcome(409, 0, vec!["the store kept changing; try again".into()]);
        for _ in 0..ATTEMPTS {
            match self.attempt(op, req, revision, dry_run).await {
                Attempt::Done(o) => {
                    out = o;
                    break;
                }
                Attempt::Raced(o) if revision.is_none() => out = o,
                Attempt::Raced(mut o) => {
                    o.status = 409;
                    o.errors = vec![format!(
                        "the store changed after revision {}: read it again (membrane get / diff) and re-apply",
                        revision.unwrap_or_default()
                    )];
                    out = o;
                    break;
                }
            }
        }
        // Dry runs change nothing and are not audited; nor are no-ops, nor a store that
        // could not be reached (nothing was decided).
        let noop = out.accepted
            && out
                .changes
                .iter()
                .all(|c| c.change == Verb::Unchanged.as_str());
        if !dry_run && !noop && out.status != 503 && out.status != 404 {
            record.accepted = out.accepted;
            record.reasons = out.errors.clone();
            record.changes = out.changes.clone();
            record.revision = out.revision;
            self.audit.append(&record).await;
        }
        out
    }

    async fn attempt(
        &self,
        op: &Operator,
        req: &Request,
        revision: Option<i64>,
        dry_run: bool,
    ) -> Attempt {
        let snap = match self.store.snapshot().await {
            Ok(s) => s,
            Err(e) => return Attempt::Done(outcome(503, 0, vec![e.to_string()])),
        };
        let prefix = self.store.prefix.clone();
        let index = Index::read(&snap, &prefix);
        let before = index.specs();
        let fail = |status, errors| Attempt::Done(outcome(status, snap.revision, errors));
        let promoted;
        let (wanted, request): (Vec<Wanted>, Option<(&str, &str)>) = match req {
            Request::Apply { file, text } => match plan::wanted_from(file, text) {
                Ok(w) => (w, Some((file.as_str(), text.as_str()))),
                Err(e) => return fail(422, e.iter().map(ToString::to_string).collect()),
            },
            Request::Delete { kind, name } => {
                let Some((_, k, _)) = index
                    .documents()
                    .find(|(_, k, _)| k.kind().eq_ignore_ascii_case(kind) && k.name() == name)
                else {
                    return fail(404, vec![format!("there is no {kind} named `{name}`")]);
                };
                (
                    vec![Wanted {
                        kind: k.clone(),
                        text: None,
                    }],
                    None,
                )
            }
            Request::Promote { cell, from, to } => {
                promoted = match promote::promote(&before, cell, from, to) {
                    Ok(t) => (format!("promote:{cell}:{from}->{to}"), t),
                    Err(e) => return fail(422, vec![e]),
                };
                match plan::wanted_from(&promoted.0, &promoted.1) {
                    Ok(w) => (w, Some((promoted.0.as_str(), promoted.1.as_str()))),
                    Err(e) => return fail(422, e.iter().map(ToString::to_string).collect()),
                }
            }
        };
        let plan = match index.plan(wanted, request) {
            Ok(p) => p,
            Err(e) => return fail(422, vec![e]),
        };
        let mut o = outcome(200, snap.revision, Vec::new());
        o.dry_run = dry_run;
        o.changes = plan.changes.iter().map(RecordedChange::from).collect();

        // Scope before validity: a caller outside the scope learns nothing more.
        let refused = scope_refusals(&op.scope, &plan.changes, &[&before, &plan.after]);
        if !refused.is_empty() {
            o.status = 403;
            o.errors = refused;
            return Attempt::Done(o);
        }
        let origin = PathBuf::from(format!("etcd:{prefix}"));
        if let Err(errors) = spec::validate_documents(&plan.documents, &self.files, &origin) {
            o.status = 422;
            o.errors = errors.iter().map(ToString::to_string).collect();
            return Attempt::Done(o);
        }
        o.accepted = true;
        if dry_run || plan.writes.is_empty() {
            return Attempt::Done(o);
        }
        match self.store.commit(&snap, revision, &plan.writes).await {
            Ok(Some(rev)) => {
                o.revision = rev;
                Attempt::Done(o)
            }
            Ok(None) => {
                o.accepted = false;
                Attempt::Raced(o)
            }
            Err(e) => Attempt::Done(outcome(503, snap.revision, vec![e.to_string()])),
        }
    }

    /// The documents `scope` may read, of `kind` (any when `None`) and `name`.
    pub async fn get(
        &self,
        scope: &Scope,
        kind: Option<&str>,
        name: Option<&str>,
    ) -> Result<Listing, crate::store::StoreError> {
        let snap = self.store.snapshot().await?;
        let index = Index::read(&snap, &self.store.prefix);
        let specs = index.specs();
        let documents = index
            .documents()
            .filter(|(_, k, _)| kind.is_none_or(|want| k.kind().eq_ignore_ascii_case(want)))
            .filter(|(_, k, _)| name.is_none_or(|want| k.name() == want))
            .filter(|(_, k, _)| scope.reads(&Scope::of(k, &[&specs])))
            .map(|(key, k, text)| Shown {
                kind: k.kind().to_owned(),
                name: k.name().to_owned(),
                key: format!("{}{key}", self.store.prefix),
                text: text.to_owned(),
            })
            .collect();
        Ok(Listing {
            revision: snap.revision,
            documents,
        })
    }

    /// Audit records `scope` may read (those about its documents, and its own requests).
    pub async fn audit_records(
        &self,
        op: &Operator,
        filter: &Filter,
    ) -> Result<Vec<Record>, crate::store::StoreError> {
        let all = self.audit.list(filter).await?;
        if op.scope.project.is_none() && op.scope.environment.is_none() {
            return Ok(all
                .into_iter()
                .filter(|r| r.scope.org == op.scope.org)
                .collect());
        }
        Ok(all
            .into_iter()
            .filter(|r| r.operator == op.name || r.scope == op.scope)
            .collect())
    }
}

enum Attempt {
    Done(Outcome),
    /// Another change landed between the read and the write.
    Raced(Outcome),
}

/// Every document the change touches, before and after, must be inside the scope.
fn scope_refusals(scope: &Scope, changes: &[Change], specs: &[&Specs]) -> Vec<String> {
    let mut out = Vec::new();
    for c in changes {
        for doc in [&c.before, &c.after].into_iter().flatten() {
            if let Some(why) = scope.refuses_write(&Scope::of(doc, specs)) {
                let line = format!(
                    "{} `{}` is outside your scope ({scope}): {why}",
                    c.kind, c.name
                );
                if !out.contains(&line) {
                    out.push(line);
                }
            }
        }
    }
    out
}

/// Kinds, as the CLI and API accept them (any case).
pub fn is_kind(kind: &str) -> bool {
    ["Cell", "Policy", "JwtProvider", "RateLimit", "Overlay"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(kind))
}
