//! The third step: what a compiled snapshot needs before it serves. Key sets kept from the
//! previous generation get their new static content (visible to requests of that
//! generation too, so only now), and new remote key sets get their fetcher threads.

use crate::config::ConfigError;
use crate::snapshot::Snapshot;
use std::path::Path;

/// Activates `snap` (its `pending` list is emptied). `file` names the configuration in the
/// error when a fetcher thread cannot start.
pub fn activate(snap: &mut Snapshot, file: &Path) -> Result<(), ConfigError> {
    let pending = std::mem::take(&mut snap.pending);
    for f in pending.fetchers {
        f.keys
            .spawn_fetcher(f.spec)
            .map_err(|e| ConfigError::Apply {
                file: file.to_owned(),
                message: format!("cannot start a JWKS fetcher: {e}"),
            })?;
    }
    for p in pending.probers {
        p.start().map_err(|e| ConfigError::Apply {
            file: file.to_owned(),
            message: format!("cannot start the health checks: {e}"),
        })?;
    }
    for k in pending.key_sets {
        k.keys.replace_if_changed(k.content, k.set);
    }
    Ok(())
}
