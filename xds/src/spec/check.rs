//! Validation across documents. Every error names the file, line, column and field and says
//! what would be valid. All errors are reported, in file and line order.

use super::errors::Errors;
use super::load::SpecError;
use super::types::{Cell, Jwks, Located, Specs, Src, Visibility};
use std::collections::BTreeMap;

/// A name usable in SPIFFE IDs, metric labels and xDS node ids.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

const NAME_RULE: &str =
    "use 1-63 lower-case letters, digits and `-`, not starting or ending with `-`";

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = names.collect();
    v.sort_unstable();
    v.dedup();
    format!("[{}]", v.join(", "))
}

pub fn check(specs: &Specs) -> Vec<SpecError> {
    let mut e = Errors(Vec::new());
    let providers: BTreeMap<&str, Src<'_>> = specs
        .providers()
        .map(|(src, p)| (p.name.value().as_str(), src))
        .collect();
    let mut cells: BTreeMap<&str, (Src<'_>, &Cell)> = BTreeMap::new();
    let mut addresses: BTreeMap<std::net::SocketAddr, String> = BTreeMap::new();

    for (src, p) in specs.providers() {
        if !valid_name(p.name.value()) {
            e.at(
                src,
                &p.name,
                "name".into(),
                format!("`{}` is not a valid name: {NAME_RULE}", p.name.value()),
            );
        }
        if let Jwks::Url(u) = &p.jwks
            && !u.starts_with("https://")
        {
            e.at(
                src,
                &p.name,
                "jwks.url".into(),
                format!("`{u}`: a JWKS URL must start with https://"),
            );
        }
    }
    let mut seen_providers = BTreeMap::new();
    for (src, p) in specs.providers() {
        if seen_providers.insert(p.name.value().as_str(), ()).is_some() {
            e.at(
                src,
                &p.name,
                "name".into(),
                format!(
                    "a JwtProvider named `{}` is defined already",
                    p.name.value()
                ),
            );
        }
    }

    for (src, c) in specs.cells() {
        let name = c.name.value();
        if !valid_name(name) {
            e.at(
                src,
                &c.name,
                "name".into(),
                format!("`{name}` is not a valid cell name: {NAME_RULE}"),
            );
        }
        if !valid_name(c.org.value()) {
            e.at(
                src,
                &c.org,
                "org".into(),
                format!("`{}` is not a valid org name: {NAME_RULE}", c.org.value()),
            );
        }
        if let Some(td) = &c.trust_domain
            && !td
                .value()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            e.at(
                src,
                td,
                "trust_domain".into(),
                "a trust domain holds only a-z, 0-9, `.`, `-` and `_`".into(),
            );
        }
        if let Some((other, _)) = cells.get(name.as_str()) {
            e.at(
                src,
                &c.name,
                "name".into(),
                format!(
                    "a cell named `{name}` is defined already in {}",
                    other.file.display()
                ),
            );
        } else {
            cells.insert(name, (src, c));
        }
        for (dir, l) in [
            ("north", &c.gateway.north),
            ("west", &c.gateway.west),
            ("east", &c.gateway.east),
            ("south", &c.gateway.south),
        ] {
            let Some(l) = l else { continue };
            if let Some(log) = &l.access_log {
                let to = log.to.value();
                if !(to == "stdout" || to == "stderr" || to.contains('/')) {
                    e.at(
                        src,
                        &log.to,
                        format!("gateway.{dir}.access_log.to"),
                        format!("`{to}`: give stdout, stderr or a file path (with a `/`)"),
                    );
                }
                for (i, f) in log.fields.iter().enumerate() {
                    if !membrane_api::access_log::FIELDS.contains(&f.value().as_str()) {
                        e.at(
                            src,
                            f,
                            format!("gateway.{dir}.access_log.fields[{i}]"),
                            format!(
                                "`{}` is not a field; pick from {}",
                                f.value(),
                                membrane_api::access_log::FIELDS.join(", ")
                            ),
                        );
                    }
                }
                if let Some(r) = &log.sample
                    && !(0.0..=1.0).contains(r.value())
                {
                    e.at(
                        src,
                        r,
                        format!("gateway.{dir}.access_log.sample"),
                        format!("{} is not between 0 and 1", r.value()),
                    );
                }
            }
            let a = *l.address.value();
            if a.port() == 0 {
                continue;
            }
            if let Some(owner) = addresses.insert(a, format!("{name}.{dir}")) {
                e.at(
                    src,
                    &l.address,
                    format!("gateway.{dir}.address"),
                    format!("{a} is the address of `{owner}` already"),
                );
            }
        }
        let mut paths: BTreeMap<&str, &Located<String>> = BTreeMap::new();
        let mut endpoint_names = BTreeMap::new();
        for (ci, comp) in c.components.iter().enumerate() {
            for (ei, ep) in comp.endpoints.iter().enumerate() {
                let f = format!("components[{ci}].endpoints[{ei}]");
                if !valid_name(ep.name.value()) {
                    e.at(
                        src,
                        &ep.name,
                        format!("{f}.name"),
                        format!(
                            "`{}` is not a valid endpoint name: {NAME_RULE}",
                            ep.name.value()
                        ),
                    );
                }
                if endpoint_names
                    .insert(ep.name.value().as_str(), ())
                    .is_some()
                {
                    e.at(
                        src,
                        &ep.name,
                        format!("{f}.name"),
                        format!(
                            "an endpoint named `{}` is defined already in this cell",
                            ep.name.value()
                        ),
                    );
                }
                let bp = ep.base_path.value();
                if !bp.starts_with('/') || (bp.len() > 1 && bp.ends_with('/')) {
                    e.at(src, &ep.base_path, format!("{f}.base_path"), format!("`{bp}`: a base path starts with `/` and does not end with one, e.g. /orders"));
                }
                // What a gateway's compiler would refuse in the resilience blocks,
                // refused here first (at the endpoint: the blocks carry no positions).
                let checks = [
                    ep.retries.as_ref().map(|r| r.check()),
                    ep.outlier_detection.as_ref().map(|o| o.check()),
                    ep.circuit_breakers.as_ref().map(|b| b.check()),
                    ep.health_check.as_ref().map(|h| h.check()),
                ];
                for m in checks.into_iter().flatten().filter_map(Result::err) {
                    e.at(src, &ep.name, format!("{f}.{}", m.field), m.reason);
                }
                if ep
                    .failover_healthy_percent
                    .is_some_and(|p| !(1..=100).contains(&p))
                {
                    e.at(
                        src,
                        &ep.name,
                        format!("{f}.failover_healthy_percent"),
                        "must be between 1 and 100".into(),
                    );
                }
                if ep.upstreams.is_empty() && ep.localities.iter().all(|l| l.upstreams.is_empty()) {
                    e.at(
                        src,
                        &ep.name,
                        format!("{f}.upstreams"),
                        "an endpoint needs at least one upstream address".into(),
                    );
                }
                let vis = *ep.visibility.value();
                if vis != Visibility::Project
                    && let Some(first) = paths.insert(bp.as_str(), &ep.base_path)
                {
                    e.at(src, &ep.base_path, format!("{f}.base_path"), format!(
                        "base path `{bp}` is used by another endpoint of this cell already (line {}); give each exposed endpoint its own",
                        first.line() + src.offset
                    ));
                }
                match (vis, &ep.jwt) {
                    (Visibility::Public, None) => e.at(src, &ep.visibility, format!("{f}.jwt"), format!(
                        "a public endpoint needs authentication: add `jwt: <provider>`; defined providers: {}",
                        list(providers.keys().copied())
                    )),
                    (_, Some(j)) if !providers.contains_key(j.value().as_str()) => e.at(src, j, format!("{f}.jwt"), format!(
                        "no JwtProvider is named `{}`; defined providers: {}",
                        j.value(),
                        list(providers.keys().copied())
                    )),
                    _ => {}
                }
                if vis == Visibility::Public && c.gateway.north.is_none() {
                    e.at(
                        src,
                        &ep.visibility,
                        format!("{f}.visibility"),
                        "a public endpoint is served on north: give the cell `gateway.north`"
                            .into(),
                    );
                }
                if vis == Visibility::Organization && c.gateway.west.is_none() {
                    e.at(
                        src,
                        &ep.visibility,
                        format!("{f}.visibility"),
                        "an organization endpoint is served on west: give the cell `gateway.west`"
                            .into(),
                    );
                }
            }
        }
    }

    for (src, c) in specs.cells() {
        for (i, callee) in c.calls.iter().flatten().enumerate() {
            let field = format!("calls[{i}]");
            let problem = match cells.get(callee.value().as_str()) {
                _ if c.gateway.east.is_none() => {
                    Some("a cell calls others through east: give the cell `gateway.east`".into())
                }
                None => Some(format!(
                    "unknown cell `{}`; defined cells: {}",
                    callee.value(),
                    list(cells.keys().copied())
                )),
                Some(_) if callee.value() == c.name.value() => {
                    Some("a cell does not call itself through east".into())
                }
                Some((_, o))
                    if o.org.value() != c.org.value() || o.environment != c.environment =>
                {
                    Some(format!(
                        "cell `{}` is in org `{}`, environment `{}`: a cell calls only cells of its own org and environment",
                        callee.value(),
                        o.org.value(),
                        o.environment
                    ))
                }
                Some((_, o)) if o.gateway.west.is_none() => Some(format!(
                    "cell `{}` has no west listener to be called on",
                    callee.value()
                )),
                Some(_) => None,
            };
            if let Some(m) = problem {
                e.at(src, callee, field, m);
            }
        }
        let mut hosts = BTreeMap::new();
        for (i, h) in c.external_hosts.iter().enumerate() {
            let name = h.host.value();
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                });
            if !valid {
                e.at(
                    src,
                    &h.host,
                    format!("external_hosts[{i}].host"),
                    format!("`{name}` is not a lower-case DNS name"),
                );
            }
            if hosts.insert(name.as_str(), ()).is_some() {
                e.at(
                    src,
                    &h.host,
                    format!("external_hosts[{i}].host"),
                    format!("`{name}` is listed already"),
                );
            }
        }
        if !c.external_hosts.is_empty() && c.gateway.south.is_none() {
            e.at(
                src,
                &c.external_hosts[0].host,
                "external_hosts".into(),
                "external hosts are reached through south: give the cell `gateway.south`".into(),
            );
        }
    }

    let cell_names = || list(cells.keys().copied());
    for (src, p) in specs.policies() {
        let Some((_, cell)) = cells.get(p.cell.value().as_str()) else {
            e.at(
                src,
                &p.cell,
                "cell".into(),
                format!(
                    "unknown cell `{}`; defined cells: {}",
                    p.cell.value(),
                    cell_names()
                ),
            );
            continue;
        };
        let has = match p.listener {
            super::types::Direction::North => cell.gateway.north.is_some(),
            super::types::Direction::West => cell.gateway.west.is_some(),
        };
        if !has {
            e.at(
                src,
                &p.cell,
                "listener".into(),
                format!("cell `{}` has no {:?} listener", p.cell.value(), p.listener)
                    .to_lowercase(),
            );
        }
        let mut rule_names = BTreeMap::new();
        for (ri, r) in p.rules.iter().enumerate() {
            if rule_names.insert(r.name.value().as_str(), ()).is_some() {
                e.at(
                    src,
                    &r.name,
                    format!("rules[{ri}].name"),
                    "rule names must be unique in a policy (they label metrics)".into(),
                );
            }
            for (ci, from) in r.from_cells.iter().enumerate() {
                match cells.get(from.value().as_str()) {
                    None => e.at(
                        src,
                        from,
                        format!("rules[{ri}].from_cells[{ci}]"),
                        format!(
                            "unknown cell `{}`; defined cells: {}",
                            from.value(),
                            cell_names()
                        ),
                    ),
                    // Environments are isolated: a cell is reached only by the cells of
                    // its own org and environment.
                    Some((_, other))
                        if other.environment != cell.environment
                            || other.org.value() != cell.org.value() =>
                    {
                        e.at(
                            src,
                            from,
                            format!("rules[{ri}].from_cells[{ci}]"),
                            format!(
                                "cell `{}` is in org `{}`, environment `{}`; a policy of cell `{}` (org `{}`, environment `{}`) can name only cells of its own org and environment",
                                from.value(),
                                other.org.value(),
                                other.environment,
                                cell.name.value(),
                                cell.org.value(),
                                cell.environment
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
            for (ci, c) in r.claims.iter().enumerate() {
                if c.equals.is_some() == c.contains.is_some() {
                    e.at(
                        src,
                        &r.name,
                        format!("rules[{ri}].claims[{ci}]"),
                        "give exactly one of `equals` or `contains`".into(),
                    );
                }
            }
        }
    }

    for (src, r) in specs.rate_limits() {
        let Some((_, cell)) = cells.get(r.cell.value().as_str()) else {
            e.at(
                src,
                &r.cell,
                "cell".into(),
                format!(
                    "unknown cell `{}`; defined cells: {}",
                    r.cell.value(),
                    cell_names()
                ),
            );
            continue;
        };
        let endpoints = || {
            cell.components
                .iter()
                .flat_map(|c| c.endpoints.iter().map(|e| e.name.value().as_str()))
        };
        if !endpoints().any(|n| n == r.endpoint.value()) {
            e.at(
                src,
                &r.endpoint,
                "endpoint".into(),
                format!(
                    "cell `{}` has no endpoint `{}`; its endpoints: {}",
                    r.cell.value(),
                    r.endpoint.value(),
                    list(endpoints())
                ),
            );
        }
        if *r.requests.value() == 0 || r.per_seconds == 0 {
            e.at(
                src,
                &r.requests,
                "requests".into(),
                "a rate limit needs at least 1 request per at least 1 second".into(),
            );
        }
    }

    super::names::check_names(specs, &mut e);
    let mut errors = e.0;
    errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    errors
}
