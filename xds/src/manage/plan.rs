//! What a change does to the store: which keys it rewrites or removes, the diff of each
//! document it touches, and the whole set of documents after it, to validate as `membrane
//! check` would.
//!
//! Documents are addressed by kind and name wherever they are kept. A document that exists
//! is rewritten in its key (which may hold other documents: they are kept, re-joined with
//! `---` lines); a new one gets a key of its own, `<kind>/<name>.yaml` (`policy/orders-west.yaml`).

use crate::spec::{Document, Kind, SpecError, Specs, load};
use crate::store::{Snapshot, Write};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One key of the store and its documents.
struct Key {
    name: String,
    /// `None` when the key does not parse: it is kept as it is, and validation reports it.
    docs: Option<Vec<(Kind, String)>>,
    text: String,
    dirty: bool,
}

/// The store's documents as read at one revision.
pub struct Index {
    prefix: String,
    keys: Vec<Key>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    Created,
    Updated,
    Deleted,
    Unchanged,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Created => "created",
            Verb::Updated => "updated",
            Verb::Deleted => "deleted",
            Verb::Unchanged => "unchanged",
        }
    }
}

/// One document a change touches.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub kind: &'static str,
    pub name: String,
    pub change: Verb,
    /// The key it is kept in.
    pub key: String,
    /// A unified diff of its text, empty when unchanged.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub diff: String,
    #[serde(skip)]
    pub before: Option<Kind>,
    #[serde(skip)]
    pub after: Option<Kind>,
}

/// What to write, and what to validate.
pub struct Plan {
    pub changes: Vec<Change>,
    pub writes: Vec<Write>,
    /// Every document after the change, `(name for errors, text)`, to validate.
    pub documents: Vec<(String, String)>,
    /// The same as parsed (keys that do not parse left out), to look scopes up in.
    pub after: Specs,
}

/// A document the change asks for: its new text, or its removal.
pub struct Wanted {
    pub kind: Kind,
    pub text: Option<String>,
}

fn same(a: &str, b: &str) -> bool {
    a.trim_end() == b.trim_end()
}

fn diff(label: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{label}"), &format!("b/{label}"))
        .to_string()
}

/// Names become keys: kept to characters that read the same in a key, a URL and a shell.
fn keyable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with('.')
}

impl Index {
    pub fn read(snapshot: &Snapshot, prefix: &str) -> Self {
        let keys = snapshot
            .documents
            .iter()
            .map(|(name, text)| Key {
                docs: load::documents_of(Path::new(&format!("etcd:{prefix}{name}")), text).ok(),
                name: name.clone(),
                text: text.clone(),
                dirty: false,
            })
            .collect();
        Self {
            prefix: prefix.to_owned(),
            keys,
        }
    }

    /// The documents as specs (keys that do not parse left out): what scopes and
    /// promotion read. Taken from this index, so the store is parsed once per change.
    pub fn specs(&self) -> Specs {
        let mut specs = Specs::default();
        for k in &self.keys {
            let file = PathBuf::from(format!("etcd:{}{}", self.prefix, k.name));
            for (kind, text) in k.docs.iter().flatten() {
                specs.documents.push(Arc::new(Document {
                    file: file.clone(),
                    offset: 0,
                    kind: kind.clone(),
                    digest: load::digest(text),
                }));
            }
        }
        specs
    }

    /// Every document, with the key it is in.
    pub fn documents(&self) -> impl Iterator<Item = (&str, &Kind, &str)> {
        self.keys.iter().flat_map(|k| {
            k.docs
                .iter()
                .flatten()
                .map(move |(kind, text)| (k.name.as_str(), kind, text.as_str()))
        })
    }

    fn find(&self, kind: &str, name: &str) -> Option<(usize, usize)> {
        self.keys.iter().enumerate().find_map(|(ki, k)| {
            k.docs.as_ref().and_then(|d| {
                d.iter()
                    .position(|(doc, _)| doc.kind() == kind && doc.name() == name)
                    .map(|di| (ki, di))
            })
        })
    }

    /// Applies `wanted`; `request` is the request's own text, presented to validation in
    /// its place so that errors point into the file the operator sent.
    pub fn plan(
        mut self,
        wanted: Vec<Wanted>,
        request: Option<(&str, &str)>,
    ) -> Result<Plan, String> {
        let mut changes = Vec::new();
        // (key, doc) positions that came from the request, left out of validation when
        // the request's text stands in for them.
        let mut from_request: Vec<(String, String)> = Vec::new();
        for w in wanted {
            let (kind_name, name) = (w.kind.kind(), w.kind.name().to_owned());
            if !keyable(&name) {
                return Err(format!(
                    "{kind_name} `{name}`: names of documents kept through the API hold only letters, digits, `-`, `_` and `.`"
                ));
            }
            if changes
                .iter()
                .any(|c: &Change| c.kind == kind_name && c.name == name)
            {
                return Err(format!("{kind_name} `{name}` is given twice"));
            }
            let found = self.find(kind_name, &name);
            let (verb, key, old, new) = match (found, w.text) {
                (Some((ki, di)), Some(text)) => {
                    let k = &mut self.keys[ki];
                    let docs = k.docs.get_or_insert_with(Vec::new);
                    let (old_kind, old_text) = docs[di].clone();
                    let verb = if same(&old_text, &text) {
                        Verb::Unchanged
                    } else {
                        k.dirty = true;
                        Verb::Updated
                    };
                    docs[di] = (w.kind.clone(), text.clone());
                    from_request.push((k.name.clone(), text.clone()));
                    (verb, k.name.clone(), Some((old_kind, old_text)), Some(text))
                }
                (Some((ki, di)), None) => {
                    let k = &mut self.keys[ki];
                    let docs = k.docs.get_or_insert_with(Vec::new);
                    let (old_kind, old_text) = docs.remove(di);
                    k.dirty = true;
                    (
                        Verb::Deleted,
                        k.name.clone(),
                        Some((old_kind, old_text)),
                        None,
                    )
                }
                (None, Some(text)) => {
                    let key = format!("{}/{name}.yaml", kind_name.to_ascii_lowercase());
                    match self.keys.iter_mut().find(|k| k.name == key) {
                        Some(k) => {
                            k.docs
                                .get_or_insert_with(Vec::new)
                                .push((w.kind.clone(), text.clone()));
                            k.dirty = true;
                        }
                        None => self.keys.push(Key {
                            name: key.clone(),
                            docs: Some(vec![(w.kind.clone(), text.clone())]),
                            text: String::new(),
                            dirty: true,
                        }),
                    }
                    from_request.push((key.clone(), text.clone()));
                    (Verb::Created, key, None, Some(text))
                }
                (None, None) => return Err(format!("there is no {kind_name} named `{name}`")),
            };
            let label = format!("{}{key}", self.prefix);
            let diff = match verb {
                Verb::Unchanged => String::new(),
                _ => diff(
                    &label,
                    old.as_ref().map_or("", |(_, t)| t.as_str()),
                    new.as_deref().unwrap_or(""),
                ),
            };
            changes.push(Change {
                kind: kind_name,
                name,
                change: verb,
                key,
                diff,
                before: old.map(|(k, _)| k),
                after: new.is_some().then_some(w.kind),
            });
        }

        let mut writes = Vec::new();
        let mut documents = Vec::new();
        for k in &self.keys {
            let joined = k
                .docs
                .as_ref()
                .map(|d| join(d.iter().map(|(_, t)| t.as_str())));
            if k.dirty {
                match &joined {
                    Some(t) if !t.is_empty() => writes.push(Write::Put {
                        name: k.name.clone(),
                        text: t.clone(),
                    }),
                    _ => writes.push(Write::Delete {
                        name: k.name.clone(),
                    }),
                }
            }
            // For validation: the key without the documents the request's text stands for.
            let shown = match (&k.docs, request) {
                (Some(d), Some(_)) => join(
                    d.iter()
                        .map(|(_, t)| t.as_str())
                        .filter(|t| !from_request.iter().any(|(kn, rt)| *kn == k.name && rt == t)),
                ),
                (Some(_), None) => joined.clone().unwrap_or_default(),
                (None, _) => k.text.clone(),
            };
            if !shown.is_empty() {
                documents.push((format!("etcd:{}{}", self.prefix, k.name), shown));
            }
        }
        if let Some((file, text)) = request {
            documents.push((file.to_owned(), text.to_owned()));
        }
        Ok(Plan {
            changes,
            writes,
            documents,
            after: self.specs(),
        })
    }
}

/// Documents joined into one key's text.
fn join<'a>(docs: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for d in docs {
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(d);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// The request's documents, parsed: errors name `file` with line and column.
pub fn wanted_from(file: &str, text: &str) -> Result<Vec<Wanted>, Vec<SpecError>> {
    Ok(load::documents_of(Path::new(file), text)?
        .into_iter()
        .map(|(kind, text)| Wanted {
            kind,
            text: Some(text),
        })
        .collect())
}
