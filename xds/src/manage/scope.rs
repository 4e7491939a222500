//! Who may change what: an operator credential is scoped to an org and, optionally, one
//! project and one environment. It may change documents inside its scope only, and read
//! those of its org (and project, when it has one) in every environment, since promoting
//! reads the environment before.
//!
//! Operator tokens are kept hashed in the store (`<prefix>#operators/<sha256>`), minted
//! by `membrane control operator --store URL`; the token itself is shown once. The rules
//! for what a document belongs to are in [`Scope::of`].

use crate::spec::{Kind, Specs};
use crate::store::Etcd;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Operator tokens start with this, so that a leaked one is easy to find and tell from a
/// join token (`mbt_`).
const PREFIX: &str = "mop_";

/// What a credential may change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub org: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "org {}", self.org)?;
        if let Some(p) = &self.project {
            write!(f, ", project {p}")?;
        }
        if let Some(e) = &self.environment {
            write!(f, ", environment {e}")?;
        }
        Ok(())
    }
}

/// An authenticated operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    pub name: String,
    pub scope: Scope,
    /// Unix seconds after which the credential is refused.
    pub expires: u64,
}

/// Where a document belongs: the org, project and environment of the cell it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Cell {
        org: String,
        project: String,
        environment: String,
    },
    /// JWT providers are shared by every cell of the store: only a credential scoped to a
    /// whole org may change them.
    Org,
    /// A document about a cell that does not exist: only a whole-org credential may write
    /// it (validation will say what is wrong with it).
    Unknown(String),
}

impl Scope {
    /// What `doc` belongs to, with the cells of `specs` (before and after a change) to
    /// look its cell up in.
    pub fn of(doc: &Kind, specs: &[&Specs]) -> Owner {
        let cell = |name: &str| {
            specs
                .iter()
                .flat_map(|s| s.cells())
                .find(|(_, c)| c.name.value() == name)
                .map(|(_, c)| Owner::Cell {
                    org: c.org.value().clone(),
                    project: c.project.clone(),
                    environment: c.environment.clone(),
                })
                .unwrap_or_else(|| Owner::Unknown(format!("cell `{name}` does not exist")))
        };
        match doc {
            Kind::Cell(c) => Owner::Cell {
                org: c.org.value().clone(),
                project: c.project.clone(),
                environment: c.environment.clone(),
            },
            Kind::Policy(p) => cell(p.cell.value()),
            Kind::RateLimit(r) => cell(r.cell.value()),
            Kind::JwtProvider(_) => Owner::Org,
            Kind::Overlay(o) => {
                let base = o.cell.value();
                specs
                    .iter()
                    .flat_map(|s| s.cells())
                    .find(|(_, c)| crate::manage::promote::base_name(c) == base)
                    .map(|(_, c)| Owner::Cell {
                        org: c.org.value().clone(),
                        project: c.project.clone(),
                        environment: o.environment.value().clone(),
                    })
                    .unwrap_or_else(|| Owner::Unknown(format!("no cell is named `{base}`")))
            }
        }
    }

    fn whole_org(&self) -> bool {
        self.project.is_none() && self.environment.is_none()
    }

    /// Why this scope may not change a document of `owner`, if it may not.
    pub fn refuses_write(&self, owner: &Owner) -> Option<String> {
        match owner {
            Owner::Cell {
                org,
                project,
                environment,
            } => {
                if *org != self.org {
                    return Some(format!("it belongs to org {org}"));
                }
                if self.project.as_ref().is_some_and(|p| p != project) {
                    return Some(format!("it belongs to project {project}"));
                }
                if self.environment.as_ref().is_some_and(|e| e != environment) {
                    return Some(format!("it belongs to environment {environment}"));
                }
                None
            }
            Owner::Org if self.whole_org() => None,
            Owner::Org => Some("it is shared by the whole org".into()),
            Owner::Unknown(_) if self.whole_org() => None,
            Owner::Unknown(why) => Some(format!("{why}, so its scope cannot be known")),
        }
    }

    /// Whether this scope may read a document of `owner` (any environment).
    pub fn reads(&self, owner: &Owner) -> bool {
        match owner {
            Owner::Cell { org, project, .. } => {
                *org == self.org && self.project.as_ref().is_none_or(|p| p == project)
            }
            Owner::Org | Owner::Unknown(_) => true,
        }
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("no credential: send `Authorization: Bearer <operator token>`")]
    Missing,
    #[error("the operator token is not known (or was revoked)")]
    Unknown,
    #[error("the operator token of {0} has expired")]
    Expired(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the system's random number generator failed")]
    Random,
    #[error("operator record {0} is not valid JSON")]
    Record(String),
}

/// Mints an operator token for `name` with `scope`, valid for `ttl`; the token is shown
/// once, its hash kept.
pub async fn mint(
    store: &Etcd,
    name: &str,
    scope: Scope,
    ttl: Duration,
) -> Result<String, CredentialError> {
    let (token, sha256) = crate::ca::tokens::random_token(PREFIX).ok_or(CredentialError::Random)?;
    let record = Operator {
        name: name.to_owned(),
        scope,
        expires: now_unix().saturating_add(ttl.as_secs()),
    };
    let value = serde_json::to_vec(&record).map_err(|e| CredentialError::Record(e.to_string()))?;
    store.put_side("operators", &sha256, &value).await?;
    Ok(token)
}

/// The operator a bearer token belongs to.
pub async fn authenticate(store: &Etcd, token: &str) -> Result<Operator, CredentialError> {
    if !token.starts_with(PREFIX) || token.len() > 128 {
        return Err(CredentialError::Unknown);
    }
    let key = store.side_key("operators", &crate::ca::tokens::hash(token));
    let Some((value, _)) = store.get_key(&key).await? else {
        return Err(CredentialError::Unknown);
    };
    let op: Operator =
        serde_json::from_slice(&value).map_err(|_| CredentialError::Record(key.clone()))?;
    if op.expires <= now_unix() {
        return Err(CredentialError::Expired(op.name));
    }
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(org: &str, project: &str, env: &str) -> Owner {
        Owner::Cell {
            org: org.into(),
            project: project.into(),
            environment: env.into(),
        }
    }

    #[test]
    fn scopes() {
        let dev = Scope {
            org: "acme".into(),
            project: Some("orders".into()),
            environment: Some("dev".into()),
        };
        assert_eq!(dev.refuses_write(&cell("acme", "orders", "dev")), None);
        assert!(dev.refuses_write(&cell("acme", "orders", "prod")).is_some());
        assert!(dev.refuses_write(&cell("acme", "billing", "dev")).is_some());
        assert!(dev.refuses_write(&cell("other", "orders", "dev")).is_some());
        assert!(dev.refuses_write(&Owner::Org).is_some());
        assert!(dev.refuses_write(&Owner::Unknown("x".into())).is_some());
        assert!(dev.reads(&cell("acme", "orders", "prod")));
        assert!(!dev.reads(&cell("acme", "billing", "dev")));
        let admin = Scope {
            org: "acme".into(),
            project: None,
            environment: None,
        };
        assert_eq!(admin.refuses_write(&Owner::Org), None);
        assert_eq!(admin.refuses_write(&cell("acme", "x", "prod")), None);
        assert!(admin.refuses_write(&cell("other", "x", "prod")).is_some());
    }
}
