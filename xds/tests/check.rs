//! `spec::load_dir` and `spec::check`: the examples are valid; each kind of mistake is
//! reported with file, line, column, field and what would be valid.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use membrane_xds::spec::{SpecError, check, load_dir};
use std::path::{Path, PathBuf};

fn dir_with(files: &[(&str, &str)]) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "membrane-check-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    for (name, text) in files {
        std::fs::write(d.join(name), text).unwrap();
    }
    d
}

fn errors(files: &[(&str, &str)]) -> Vec<SpecError> {
    let d = dir_with(files);
    match load_dir(&d) {
        Err(e) => e,
        Ok(specs) => check(&specs),
    }
}

const CELL: &str = "kind: Cell
name: orders
org: acme
project: orders
environment: dev
gateway:
  north: {address: '127.0.0.1:8443'}
  west: {address: '127.0.0.1:9443'}
components:
  - name: api
    endpoints:
      - name: catalog
        base_path: /catalog
        upstreams: ['127.0.0.1:1']
        visibility: public
        jwt: idp
";

const IDP: &str = "kind: JwtProvider\nname: idp\njwks: {inline: '{\"keys\": []}'}\n";

#[test]
fn the_examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cells");
    let specs = load_dir(&dir).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(specs.cells().count(), 3);
    assert_eq!(check(&specs), vec![]);
}

#[test]
fn a_valid_pair_of_documents_passes_and_ids_are_derived() {
    let d = dir_with(&[("a.yaml", &format!("{CELL}---\n{IDP}"))]);
    let specs = load_dir(&d).unwrap();
    assert!(check(&specs).is_empty());
    let (_, cell) = specs.cells().next().unwrap();
    assert_eq!(
        cell.spiffe_id(),
        "spiffe://acme.internal/org/acme/env/dev/cell/orders"
    );
}

#[test]
fn parse_errors_name_file_line_column_and_field_across_documents() {
    // The second document of the file has a bad visibility on its line 15: file line 19
    // (three lines of the first document and the `---` before it).
    let bad = CELL.replace("visibility: public", "visibility: everyone");
    let e = errors(&[("a.yaml", &format!("{IDP}---\n{bad}"))]);
    assert_eq!(e.len(), 1, "{e:?}");
    let s = e[0].to_string();
    assert!(s.contains("a.yaml:19:21:"), "{s}");
    assert!(!s.contains("at line"), "one position only: {s}");
    assert!(
        s.contains("field `components[0].endpoints[0].visibility`:"),
        "{s}"
    );
    assert!(
        s.contains("project") && s.contains("organization") && s.contains("public"),
        "what is valid: {s}"
    );

    let e = errors(&[("b.yaml", "kind: Cel\nname: x\n")]);
    assert!(
        e[0].to_string()
            .contains("unknown kind `Cel`; valid kinds: Cell, Policy"),
        "{}",
        e[0]
    );
    let e = errors(&[("c.yaml", "name: x\n")]);
    assert!(e[0].to_string().contains("needs a `kind`"), "{}", e[0]);
    let e = errors(&[(
        "d.yaml",
        &CELL.replace("environment: dev", "environment: dev\nregion: eu"),
    )]);
    assert!(e[0].to_string().contains("region"), "{}", e[0]);
}

#[test]
fn cross_document_mistakes_are_caught() {
    // A public endpoint without authentication.
    let e = errors(&[
        ("a.yaml", &CELL.replace("        jwt: idp\n", "")),
        ("i.yaml", IDP),
    ]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].to_string().contains("a public endpoint needs authentication: add `jwt: <provider>`; defined providers: [idp]"), "{}", e[0]);
    assert!(e[0].to_string().contains("a.yaml:15:"), "{}", e[0]);

    // An unknown provider.
    let e = errors(&[
        ("a.yaml", &CELL.replace("jwt: idp", "jwt: other")),
        ("i.yaml", IDP),
    ]);
    assert!(
        e[0].to_string().contains("no JwtProvider is named `other`"),
        "{}",
        e[0]
    );

    // Two endpoints on one base path.
    let two = format!(
        "{CELL}      - name: catalog-v2\n        base_path: /catalog\n        upstreams: ['127.0.0.1:2']\n        visibility: organization\n"
    );
    let e = errors(&[("a.yaml", &two), ("i.yaml", IDP)]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].to_string()
            .contains("base path `/catalog` is used by another endpoint"),
        "{}",
        e[0]
    );
    assert!(e[0].field.ends_with("endpoints[1].base_path"), "{}", e[0]);

    // A policy for an unknown cell, and a rule naming an unknown caller.
    let policy = "kind: Policy\nname: p\ncell: order\nlistener: west\nrules: []\n";
    let e = errors(&[("a.yaml", CELL), ("i.yaml", IDP), ("p.yaml", policy)]);
    assert!(
        e[0].to_string()
            .contains("unknown cell `order`; defined cells: [orders]"),
        "{}",
        e[0]
    );
    let policy = "kind: Policy\nname: p\ncell: orders\nlistener: west\nrules:\n  - {name: r, action: allow, from_cells: [billing]}\n";
    let e = errors(&[("a.yaml", CELL), ("i.yaml", IDP), ("p.yaml", policy)]);
    assert!(
        e[0].to_string().contains("rules[0].from_cells[0]"),
        "{}",
        e[0]
    );

    // A duplicate cell and a shared listener address.
    let e = errors(&[("a.yaml", CELL), ("b.yaml", CELL), ("i.yaml", IDP)]);
    assert!(
        e.iter().any(|e| e
            .to_string()
            .contains("a cell named `orders` is defined already")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|e| e
            .to_string()
            .contains("is the address of `orders.north` already")),
        "{e:?}"
    );

    // A rate limit on an endpoint the cell does not have.
    let rl =
        "kind: RateLimit\nname: r\ncell: orders\nendpoint: nope\nrequests: 5\nper_seconds: 1\n";
    let e = errors(&[("a.yaml", CELL), ("i.yaml", IDP), ("r.yaml", rl)]);
    assert!(
        e[0].to_string()
            .contains("cell `orders` has no endpoint `nope`; its endpoints: [catalog]"),
        "{}",
        e[0]
    );
}

/// What `membrane check` and the control server both run.
fn validated(files: &[(&str, &str)]) -> Vec<SpecError> {
    match membrane_xds::spec::validate(&dir_with(files)) {
        Err(e) => e,
        Ok(_) => Vec::new(),
    }
}

#[test]
fn every_mistake_of_one_document_is_reported() {
    let bad = CELL
        .replace("environment: dev", "environment: dev\nregion: eu")
        .replace("visibility: public", "visibility: everyone")
        .replace(
            "upstreams: ['127.0.0.1:1']",
            "upstreams: ['not an address']",
        );
    let e = errors(&[("a.yaml", &bad), ("i.yaml", IDP)]);
    let text: Vec<String> = e.iter().map(ToString::to_string).collect();
    assert_eq!(e.len(), 3, "{text:#?}");
    assert!(
        text[0].contains("a.yaml:6:1:") && text[0].contains("region"),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("endpoints[0].upstreams") && t.contains("a.yaml:15:")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("endpoints[0].visibility") && t.contains("a.yaml:16:")),
        "{text:#?}"
    );
}

#[test]
fn an_empty_file_and_a_directory_without_cells_are_mistakes() {
    let e = validated(&[
        ("a.yaml", CELL),
        ("i.yaml", IDP),
        ("empty.yaml", "# nothing yet\n"),
    ]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].to_string()
            .contains("empty.yaml: the file holds no document"),
        "{}",
        e[0]
    );
    let e = validated(&[("i.yaml", IDP)]);
    assert!(
        e[0].to_string().contains("holds no Cell document"),
        "{}",
        e[0]
    );
}

#[test]
fn files_the_specs_name_are_checked_as_the_control_server_reads_them() {
    let idp = "kind: JwtProvider\nname: idp\njwks: {file: keys.json}\n";
    let e = validated(&[("a.yaml", CELL), ("i.yaml", idp)]);
    assert_eq!(e.len(), 1, "{e:?}");
    let s = e[0].to_string();
    assert!(
        s.contains("i.yaml:2:7: field `jwks.file`: cannot read") && s.contains("keys.json"),
        "{s}"
    );
    let e = validated(&[
        ("a.yaml", CELL),
        ("i.yaml", idp),
        ("keys.json", "{\"k\": 1}"),
    ]);
    assert!(e[0].to_string().contains("not a JWK set"), "{}", e[0]);
    assert!(
        validated(&[
            ("a.yaml", CELL),
            ("i.yaml", idp),
            ("keys.json", "{\"keys\": []}")
        ])
        .is_empty()
    );

    let south = CELL.replace(
        "  west: {address: '127.0.0.1:9443'}\n",
        "  west: {address: '127.0.0.1:9443'}\n  south: {address: '127.0.0.1:9444'}\nexternal_hosts:\n  - {host: api.example.com, trust_bundle: ca.pem}\n",
    );
    let e = validated(&[("a.yaml", &south), ("i.yaml", IDP), ("ca.pem", "not a pem")]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].to_string().contains("external_hosts[0].trust_bundle")
            && e[0].to_string().contains("holds no PEM certificate"),
        "{}",
        e[0]
    );
}

/// A policy may name only cells of its own org and environment: a prod cell named by a dev
/// cell's policy is refused at its position, saying both environments.
#[test]
fn a_policy_naming_a_cell_of_another_environment_is_refused() {
    let prod = "kind: Cell\nname: billing-prod\norg: acme\nproject: billing\nenvironment: prod\ngateway:\n  east: {address: '127.0.0.1:9444'}\n";
    let dev = "kind: Cell\nname: billing-dev\norg: acme\nproject: billing\nenvironment: dev\ngateway:\n  east: {address: '127.0.0.1:9445'}\n";
    let policy = "kind: Policy\nname: p\ncell: orders\nlistener: west\nrules:\n  - name: ok\n    action: allow\n    from_cells: [billing-dev]\n  - name: cross\n    action: allow\n    from_cells: [billing-prod]\n";
    let e = errors(&[
        ("orders.yaml", CELL),
        ("idp.yaml", IDP),
        ("prod.yaml", prod),
        ("dev.yaml", dev),
        ("policy.yaml", policy),
    ]);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].field, "rules[1].from_cells[0]");
    assert_eq!((e[0].line, e[0].file.ends_with("policy.yaml")), (11, true));
    assert!(
        e[0].message.contains("environment `prod`") && e[0].message.contains("environment `dev`"),
        "{}",
        e[0].message
    );
}

/// `calls` names cells of the same org and environment that have a west listener, from a
/// cell with an east gateway; each mistake is reported at its position.
#[test]
fn calls_name_callable_cells() {
    let caller = |calls: &str| {
        format!(
            "kind: Cell\nname: billing\norg: acme\nproject: billing\nenvironment: dev\ngateway:\n  east: {{address: '127.0.0.1:9081'}}\ncalls: [{calls}]\n"
        )
    };
    let prod = "kind: Cell\nname: orders-prod\norg: acme\nproject: orders\nenvironment: prod\ngateway:\n  west: {address: '127.0.0.1:9446'}\n";
    let no_west = "kind: Cell\nname: quiet\norg: acme\nproject: quiet\nenvironment: dev\ngateway:\n  east: {address: '127.0.0.1:9085'}\n";
    assert_eq!(
        errors(&[
            ("orders.yaml", CELL),
            ("idp.yaml", IDP),
            ("b.yaml", &caller("orders"))
        ]),
        vec![]
    );
    let e = errors(&[
        ("orders.yaml", CELL),
        ("idp.yaml", IDP),
        ("prod.yaml", prod),
        ("quiet.yaml", no_west),
        (
            "b.yaml",
            &caller("orders, ghost, orders-prod, quiet, billing"),
        ),
    ]);
    let fields: Vec<(&str, &str)> = e
        .iter()
        .map(|e| (e.field.as_str(), e.message.split(';').next().unwrap_or("")))
        .collect();
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(fields[0].0 == "calls[1]" && fields[0].1.contains("unknown cell `ghost`"));
    assert!(fields[1].0 == "calls[2]" && fields[1].1.contains("environment `prod`"));
    assert!(fields[2].0 == "calls[3]" && fields[2].1.contains("no west listener"));
    assert!(fields[3].0 == "calls[4]" && fields[3].1.contains("itself"));
    assert!(e.iter().all(|e| e.line == 8 && e.file.ends_with("b.yaml")));
}
