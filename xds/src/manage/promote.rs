//! Promotion: the same cell in the next environment (`membrane promote orders --from dev
//! --to stage`). The promoted documents are the source cell's, with the target
//! environment's overlay applied, written through the API as one change (validated,
//! scoped and audited as `apply` is).
//!
//! Naming (assumption, stated here and in the README): cells are unique by name across a
//! store, so a cell's name in an environment is `<cell>-<environment>` (`orders-stage`),
//! or the overlay's `cell_name`; a source cell may also be named plainly `<cell>`. The
//! source cell's policies and rate limits follow it, renamed the same way (`-dev` becomes
//! `-stage`, else `-stage` is added), and every cell they or `calls:` name in the source
//! environment is renamed to its counterpart in the target one, which must exist (promote
//! the cells it calls first; `check` says which is missing).

use crate::spec::{Cell, Kind, Located, Overlay, Specs};
use std::net::SocketAddr;

/// A cell's name without its environment's suffix.
pub fn base_name(c: &Cell) -> &str {
    let name = c.name.value();
    name.strip_suffix(c.environment.as_str())
        .and_then(|n| n.strip_suffix('-'))
        .unwrap_or(name)
}

fn overlay<'a>(specs: &'a Specs, cell: &str, env: &str) -> Option<&'a Overlay> {
    specs
        .overlays()
        .map(|(_, o)| o)
        .find(|o| o.cell.value() == cell && o.environment.value() == env)
}

/// The name of base cell `cell` in `env`.
fn name_in(specs: &Specs, cell: &str, env: &str) -> String {
    overlay(specs, cell, env)
        .and_then(|o| o.cell_name.as_ref())
        .map_or_else(|| format!("{cell}-{env}"), |n| n.value().clone())
}

/// A policy's or rate limit's name in the target environment.
fn renamed(name: &str, from: &str, to: &str) -> String {
    let base = name
        .strip_suffix(from)
        .and_then(|n| n.strip_suffix('-'))
        .unwrap_or(name);
    format!("{base}-{to}")
}

fn set_addr(slot: &mut Located<SocketAddr>, to: Option<&Located<SocketAddr>>) {
    if let Some(a) = to {
        *slot = Located::unplaced(*a.value());
    }
}

/// The YAML of the documents promotion writes, or why it cannot.
pub fn promote(specs: &Specs, cell: &str, from: &str, to: &str) -> Result<String, String> {
    if from == to {
        return Err("--from and --to name the same environment".into());
    }
    let source = specs
        .cells()
        .map(|(_, c)| c)
        .find(|c| c.environment == from && base_name(c) == cell)
        .ok_or_else(|| {
            format!("no cell `{cell}` in environment `{from}` (named `{cell}` or `{cell}-{from}`)")
        })?;
    let source_name = source.name.value().clone();
    let target_name = name_in(specs, cell, to);
    // Other cells of the source environment, by the name they have in the target one.
    let counterpart = |name: &Located<String>| -> Located<String> {
        match specs
            .cells()
            .map(|(_, c)| c)
            .find(|c| c.name.value() == name.value() && c.environment == from)
        {
            Some(c) => Located::unplaced(name_in(specs, base_name(c), to)),
            None => name.clone(),
        }
    };
    let ov = overlay(specs, cell, to);

    let mut c = source.clone();
    c.name = Located::unplaced(target_name.clone());
    c.environment = to.to_owned();
    if let Some(calls) = &mut c.calls {
        for n in calls.iter_mut() {
            *n = counterpart(n);
        }
    }
    if let Some(o) = ov {
        let l = &o.listeners;
        for (slot, addr) in [
            (&mut c.gateway.north, &l.north),
            (&mut c.gateway.west, &l.west),
            (&mut c.gateway.east, &l.east),
            (&mut c.gateway.south, &l.south),
        ] {
            match (slot, addr) {
                (Some(g), a) => set_addr(&mut g.address, a.as_ref()),
                (None, Some(_)) => {
                    return Err(format!(
                        "overlay `{}` sets a listener that cell `{source_name}` does not have",
                        o.name.value()
                    ));
                }
                (None, None) => {}
            }
        }
        for u in &o.upstreams {
            let ep = c
                .components
                .iter_mut()
                .flat_map(|comp| comp.endpoints.iter_mut())
                .find(|e| e.name.value() == u.endpoint.value())
                .ok_or_else(|| {
                    format!(
                        "overlay `{}` sets the upstreams of endpoint `{}`, which cell `{source_name}` does not have",
                        o.name.value(),
                        u.endpoint.value()
                    )
                })?;
            ep.upstreams = u
                .upstreams
                .iter()
                .map(|a| Located::unplaced(*a.value()))
                .collect();
        }
    }
    let mut docs = vec![Kind::Cell(Box::new(c))];
    for (_, p) in specs.policies() {
        if p.cell.value() != &source_name {
            continue;
        }
        let mut p = p.clone();
        p.name = Located::unplaced(renamed(p.name.value(), from, to));
        p.cell = Located::unplaced(target_name.clone());
        for r in &mut p.rules {
            for n in &mut r.from_cells {
                *n = counterpart(n);
            }
        }
        docs.push(Kind::Policy(p));
    }
    let mut budgets_used = 0;
    for (_, r) in specs.rate_limits() {
        if r.cell.value() != &source_name {
            continue;
        }
        let mut r = r.clone();
        let base = renamed(r.name.value(), from, to);
        let base = base
            .strip_suffix(&format!("-{to}"))
            .unwrap_or(&base)
            .to_owned();
        if let Some(b) = ov.and_then(|o| o.rate_limits.iter().find(|b| *b.name.value() == base)) {
            r.requests = Located::unplaced(*b.requests.value());
            if let Some(per) = b.per_seconds {
                r.per_seconds = per;
            }
            budgets_used += 1;
        }
        r.name = Located::unplaced(renamed(r.name.value(), from, to));
        r.cell = Located::unplaced(target_name.clone());
        docs.push(Kind::RateLimit(r));
    }
    if let Some(o) = ov
        && budgets_used < o.rate_limits.len()
    {
        return Err(format!(
            "overlay `{}` sets a rate limit that cell `{source_name}` does not have (by its name without `-{from}`)",
            o.name.value()
        ));
    }
    let mut text = String::new();
    for d in &docs {
        let yaml = match d {
            Kind::Cell(c) => serde_saphyr::to_string(c),
            Kind::Policy(p) => serde_saphyr::to_string(p),
            Kind::RateLimit(r) => serde_saphyr::to_string(r),
            Kind::JwtProvider(_) | Kind::Overlay(_) => continue,
        }
        .map_err(|e| format!("writing the promoted {} as YAML: {e}", d.kind()))?;
        if !text.is_empty() {
            text.push_str("---\n");
        }
        text.push_str(&yaml);
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    Ok(text)
}
