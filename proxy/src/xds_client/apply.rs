//! Applying the held resources as one generation.

use super::XdsOptions;
use super::convert::{self, Key};
use super::held::{Held, refuse_all, revert};
use super::state_dir::{self, generation_file};
use crate::compiler::{self, Loaded};
use crate::server::{ApplyError, ProxyHandle};
use std::collections::BTreeMap;

/// Applies `held` as one generation: converted, loaded and compiled once, and that
/// snapshot applied. Resources that fail are put back to their previous version (or left
/// out when new) and returned with the reason; with the generation now serving when one
/// was applied. A failure that no resource owns refuses the whole update.
pub(super) async fn apply(
    opts: &XdsOptions,
    handle: &ProxyHandle,
    held: &mut Held,
    before: &Held,
) -> (BTreeMap<Key, String>, Option<u64>) {
    let mut rejected = BTreeMap::new();
    let path = generation_file(&opts.state_dir);
    for _ in 0..=held.len() + 2 {
        let candidate: BTreeMap<Key, prost_types::Any> = held
            .iter()
            .map(|(k, h)| (k.clone(), h.any.clone()))
            .collect();
        let (mut conv, refused) = convert::convert(&candidate, opts.admin, &opts.state_dir);
        conv.config.tracing = opts.tracing.clone();
        conv.config.locality = opts.locality.clone();
        if !refused.is_empty() {
            for r in refused {
                revert(held, before, &r.key);
                rejected.insert(r.key, r.error.to_string());
            }
            continue;
        }
        let text = match serde_json::to_string_pretty(&conv.config) {
            Ok(t) => t,
            Err(e) => {
                refuse_all(
                    held,
                    before,
                    &mut rejected,
                    &format!("cannot serialize: {e}"),
                );
                return (rejected, None);
            }
        };
        // Certificates named by path and endpoint names are read and resolved here, off
        // this stream's runtime.
        let (file, bundles, config, text_for_load) = (
            path.clone(),
            conv.bundles.clone(),
            conv.config,
            text.clone(),
        );
        let loaded = match tokio::task::spawn_blocking(move || {
            Loaded::gather_with(&file, text_for_load, config, bundles)
        })
        .await
        {
            Ok(l) => l,
            Err(e) => {
                refuse_all(
                    held,
                    before,
                    &mut rejected,
                    &format!("the loader did not finish: {e}"),
                );
                return (rejected, None);
            }
        };
        let prev = handle.current();
        let snap = match compiler::compile(&loaded, Some(&prev), handle.metrics()) {
            Ok(snap) => snap,
            Err(errors) => {
                let owned: Option<Vec<Key>> = errors
                    .iter()
                    .map(|e| e.owner().and_then(|o| conv.origins.of(o)).cloned())
                    .collect();
                match owned {
                    Some(keys) => {
                        for (k, e) in keys.into_iter().zip(&errors) {
                            revert(held, before, &k);
                            rejected.insert(k, e.to_string());
                        }
                        continue;
                    }
                    None => {
                        let message = crate::config::ConfigErrors(errors).to_string();
                        refuse_all(held, before, &mut rejected, &message);
                        return (rejected, None);
                    }
                }
            }
        };
        match handle.apply(snap).await {
            Ok(generation) => {
                // What serves now is what a restart boots from.
                if let Err(e) =
                    state_dir::save_generation(&opts.state_dir, &conv.bundles, &text, held)
                {
                    tracing::warn!(error = %e, "cannot save the generation for the next start");
                }
                return (rejected, Some(generation));
            }
            // A reload came between: compile against the generation serving now.
            Err(ApplyError::Stale { .. }) => continue,
            Err(e) => {
                refuse_all(held, before, &mut rejected, &e.to_string());
                return (rejected, None);
            }
        }
    }
    (rejected, None)
}
