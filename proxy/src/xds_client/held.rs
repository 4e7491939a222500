//! The resources the client holds (the last version of each it was sent and did not
//! refuse), and putting them back when an update is refused.

use super::convert::Key;
use std::collections::BTreeMap;

/// A resource as held: its version and body.
#[derive(Clone)]
pub(super) struct HeldResource {
    pub version: String,
    pub any: prost_types::Any,
}

pub(super) type Held = BTreeMap<Key, HeldResource>;

/// Puts `k` back to its version in `before` (or removes it, when it is new).
pub(super) fn revert(held: &mut Held, before: &Held, k: &Key) {
    match before.get(k) {
        Some(old) => {
            held.insert(k.clone(), old.clone());
        }
        None => {
            held.remove(k);
        }
    }
}

/// Refuses every resource the update changed, with `message`: back to `before`.
pub(super) fn refuse_all(
    held: &mut Held,
    before: &Held,
    rejected: &mut BTreeMap<Key, String>,
    message: &str,
) {
    let changed: Vec<Key> = held
        .keys()
        .chain(before.keys())
        .filter(|k| held.get(*k).map(|h| &h.version) != before.get(*k).map(|b| &b.version))
        .cloned()
        .collect();
    *held = before.clone();
    for k in changed {
        rejected.insert(k, message.to_owned());
    }
}
