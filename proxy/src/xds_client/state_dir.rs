//! The state directory: the generation last applied (`generation.json`, what the typed
//! bootstrap serializes to; the proxy boots from it when the control server is out of
//! reach), its trust bundles, the resources it was made from (`resources.json`, sent as
//! known versions on reconnecting) and the node it belongs to (`node`).

use super::held::{Held, HeldResource};
use crate::server::StartError;
use base64::Engine;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(super) fn generation_file(dir: &Path) -> PathBuf {
    dir.join("generation.json")
}

fn resources_file(dir: &Path) -> PathBuf {
    dir.join("resources.json")
}

/// Which node the directory's generation belongs to.
fn node_file(dir: &Path) -> PathBuf {
    dir.join("node")
}

/// The state directory for `node`: made if missing, refused if it holds another node's
/// generation (booting from it would serve that node's listeners under this node's name).
pub(super) fn claim_state_dir(dir: &Path, node: &str) -> Result<PathBuf, StartError> {
    let err = |what: &str, source: std::io::Error| StartError::StateDir {
        dir: dir.to_owned(),
        what: what.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| err("cannot create it", e))?;
    let dir = std::path::absolute(dir).map_err(|e| err("cannot resolve it", e))?;
    match std::fs::read_to_string(node_file(&dir)) {
        Ok(owner) if owner.trim() == node => {}
        Ok(owner) => {
            return Err(err(
                &format!(
                    "it holds the state of node `{}`, not `{node}`: give each gateway a --state-dir of its own (or empty this one)",
                    owner.trim()
                ),
                std::io::Error::other("state directory of another node"),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if generation_file(&dir).exists() {
                return Err(err(
                    "it holds a generation of an unknown node: empty it, or point --state-dir elsewhere",
                    std::io::Error::other("state directory without an owner"),
                ));
            }
            write_atomically(&node_file(&dir), format!("{node}\n"))
                .map_err(|e| err("cannot write to it", e))?;
        }
        Err(e) => return Err(err("cannot read it", e)),
    }
    Ok(dir)
}

pub(super) fn write_atomically(path: &Path, text: impl AsRef<[u8]>) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// One held resource as the resources file stores it.
#[derive(Serialize, Deserialize)]
struct Saved {
    type_url: String,
    name: String,
    version: String,
    /// The resource's protobuf bytes, base64.
    value: String,
}

/// The resources kept beside the generation (none when the file is missing or unreadable:
/// the control server then sends everything again).
pub(super) fn load_held(dir: &Path) -> Held {
    let Ok(text) = std::fs::read_to_string(resources_file(dir)) else {
        return Held::new();
    };
    let Ok(list) = serde_json::from_str::<Vec<Saved>>(&text) else {
        return Held::new();
    };
    list.into_iter()
        .filter_map(|s| {
            let value = base64::engine::general_purpose::STANDARD
                .decode(s.value)
                .ok()?;
            Some((
                (s.type_url.clone(), s.name),
                HeldResource {
                    version: s.version,
                    any: prost_types::Any {
                        type_url: s.type_url,
                        value,
                    },
                },
            ))
        })
        .collect()
}

fn save_held(dir: &Path, held: &Held) -> std::io::Result<()> {
    let list: Vec<Saved> = held
        .iter()
        .map(|((t, n), h)| Saved {
            type_url: t.clone(),
            name: n.clone(),
            version: h.version.clone(),
            value: base64::engine::general_purpose::STANDARD.encode(&h.any.value),
        })
        .collect();
    write_atomically(
        &resources_file(dir),
        serde_json::to_string(&list).unwrap_or_default(),
    )
}

/// Writes the trust bundles, the generation file (the typed bootstrap, serialized) and the
/// resources beside it.
pub(super) fn save_generation(
    dir: &Path,
    bundles: &FxHashMap<PathBuf, Arc<[u8]>>,
    text: &str,
    held: &Held,
) -> std::io::Result<()> {
    for (file, pem) in bundles {
        write_atomically(file, pem)?;
    }
    write_atomically(&generation_file(dir), text.as_bytes())?;
    save_held(dir, held)
}
