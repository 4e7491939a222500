//! The files specs name, checked as the control server will read them: a JwtProvider's
//! `jwks.file` must be a readable JSON key set, an external host's `trust_bundle` a
//! readable PEM file with a certificate. Paths are relative to the spec directory. Without
//! this, `membrane check` passed a spec that the control server then refused.

use super::errors::Errors;
use super::load::SpecError;
use super::types::{Jwks, Specs};
use std::path::Path;

pub fn check_files(specs: &Specs, dir: &Path) -> Vec<SpecError> {
    let mut e = Errors::default();
    for (src, p) in specs.providers() {
        let Jwks::File(f) = &p.jwks else { continue };
        let path = dir.join(f);
        let problem = match std::fs::read_to_string(&path) {
            Err(err) => Some(format!("cannot read {}: {err}", path.display())),
            Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                Err(err) => Some(format!("{} is not JSON: {err}", path.display())),
                Ok(v) if !v.get("keys").is_some_and(serde_json::Value::is_array) => Some(format!(
                    "{} is not a JWK set (no `keys` array)",
                    path.display()
                )),
                Ok(_) => None,
            },
        };
        if let Some(m) = problem {
            e.at(src, &p.name, "jwks.file".into(), m);
        }
    }
    for (src, cell) in specs.cells() {
        for (i, h) in cell.external_hosts.iter().enumerate() {
            let Some(f) = &h.trust_bundle else { continue };
            let path = dir.join(f);
            let problem = match std::fs::read_to_string(&path) {
                Err(err) => Some(format!("cannot read {}: {err}", path.display())),
                Ok(text) if !text.contains("-----BEGIN CERTIFICATE-----") => {
                    Some(format!("{} holds no PEM certificate", path.display()))
                }
                Ok(_) => None,
            };
            if let Some(m) = problem {
                e.at(src, &h.host, format!("external_hosts[{i}].trust_bundle"), m);
            }
        }
    }
    e.0
}
