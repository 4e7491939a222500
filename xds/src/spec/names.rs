//! Names that identify documents: each kind's names are unique, since the control API
//! addresses a document by kind and name (`membrane get Policy orders-west`). Cells and
//! JWT providers are checked with the rest of their rules (`check`); this holds the
//! other kinds, and what an overlay must say.

use super::errors::Errors;
use super::types::{Located, Specs, Src};
use std::collections::BTreeMap;

fn unique<'a>(
    e: &mut Errors,
    kind: &str,
    docs: impl Iterator<Item = (Src<'a>, &'a Located<String>)>,
) {
    let mut seen: BTreeMap<&str, Src<'a>> = BTreeMap::new();
    for (src, name) in docs {
        if let Some(first) = seen.get(name.value().as_str()) {
            e.at(
                src,
                name,
                "name".into(),
                format!(
                    "a {kind} named `{}` is defined already in {}",
                    name.value(),
                    first.file.display()
                ),
            );
        } else {
            seen.insert(name.value(), src);
        }
    }
}

pub(super) fn check_names(specs: &Specs, e: &mut Errors) {
    unique(e, "Policy", specs.policies().map(|(s, p)| (s, &p.name)));
    unique(
        e,
        "RateLimit",
        specs.rate_limits().map(|(s, r)| (s, &r.name)),
    );
    unique(e, "Overlay", specs.overlays().map(|(s, o)| (s, &o.name)));
    let mut targets: BTreeMap<(&str, &str), ()> = BTreeMap::new();
    for (src, o) in specs.overlays() {
        if o.environment.value().is_empty() {
            e.at(
                src,
                &o.environment,
                "environment".into(),
                "name the environment the overlay is for".into(),
            );
        }
        if targets
            .insert((o.cell.value(), o.environment.value()), ())
            .is_some()
        {
            e.at(
                src,
                &o.cell,
                "cell".into(),
                format!(
                    "another overlay is for `{}` in `{}` already: give one per cell and environment",
                    o.cell.value(),
                    o.environment.value()
                ),
            );
        }
    }
}
