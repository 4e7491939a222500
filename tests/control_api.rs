//! The control API against a real etcd (Debian's `etcd-server`) and a control server that
//! is the cells' CA, so the API is HTTPS with the server's SPIFFE certificate: scoped
//! operator tokens, validation with the file's positions, the audit trail in the store and
//! in a JSON-lines file, compare-and-swap on the store revision under concurrent
//! operators, and promotion with overlays. One test drives the `membrane` binary's
//! commands.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use membrane_proxy::tls::devca::DevCa;
use membrane_xds::control::{self, CaOptions, ControlHandle, ControlOptions};
use membrane_xds::manage::client::Client;
use membrane_xds::manage::scope::{self, Scope};
use membrane_xds::store::Etcd as Store;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

struct World {
    dir: PathBuf,
    ca: DevCa,
    store: Store,
    ctl: ControlHandle,
    _etcd: common::etcd::Etcd,
}

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", closed_port()).parse().unwrap()
}

/// Two dev cells, orders' policy (which admits billing) and rate limit, and the stage
/// overlays of both.
fn specs() -> String {
    format!(
        "kind: Cell\nname: orders-dev\norg: acme\nproject: orders\nenvironment: dev\n\
         gateway:\n  west: {{address: '{}'}}\n\
         components:\n  - name: api\n    endpoints:\n      - {{name: orders, base_path: /orders, upstreams: ['127.0.0.1:9'], visibility: organization}}\n\
         ---\n\
         kind: Cell\nname: billing-dev\norg: acme\nproject: billing\nenvironment: dev\n\
         gateway:\n  east: {{address: '{}'}}\n\
         ---\n\
         kind: Policy\nname: orders-west-dev\ncell: orders-dev\nlistener: west\n\
         rules:\n  - {{name: billing, action: allow, from_cells: [billing-dev]}}\n\
         ---\n\
         kind: RateLimit\nname: orders-rl-dev\ncell: orders-dev\nendpoint: orders\nrequests: 10\nper_seconds: 1\n\
         ---\n\
         kind: Overlay\nname: orders-stage\ncell: orders\nenvironment: stage\n\
         listeners: {{west: '{}'}}\n\
         upstreams: [{{endpoint: orders, upstreams: ['127.0.0.2:9', '127.0.0.3:9']}}]\n\
         rate_limits: [{{name: orders-rl, requests: 500}}]\n\
         ---\n\
         kind: Overlay\nname: billing-stage\ncell: billing\nenvironment: stage\n\
         listeners: {{east: '{}'}}\n",
        addr(),
        addr(),
        addr(),
        addr()
    )
}

impl World {
    async fn new(name: &str) -> Option<World> {
        let etcd = common::etcd::Etcd::start(name)?;
        let dir = std::env::temp_dir().join(format!("membrane-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca_dir = dir.join("ca");
        std::fs::create_dir_all(&ca_dir).unwrap();
        let ca = DevCa::new("test org CA", Duration::from_secs(86_400)).unwrap();
        std::fs::write(ca_dir.join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(ca_dir.join("ca-key.pem"), ca.key_pem()).unwrap();
        let store = Store::parse(&etcd.url("membrane/acme")).unwrap();
        store.put("acme.yaml", &specs()).await.unwrap();
        let ctl = control::start(ControlOptions {
            spec_dir: dir.clone(),
            store: Some(store.clone()),
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: None,
            cert_dir: dir.join("pki"),
            trust_bundle_pem: ca.cert_pem().to_owned(),
            debounce: Duration::from_millis(50),
            ca: Some(CaOptions {
                dir: ca_dir,
                lifetime: Duration::from_secs(3600),
            }),
            otlp_endpoint: None,
            api: Some("127.0.0.1:0".parse().unwrap()),
            audit_log: Some(dir.join("audit.jsonl")),
        })
        .await
        .unwrap();
        Some(World {
            dir,
            ca,
            store,
            ctl,
            _etcd: etcd,
        })
    }

    fn server(&self) -> String {
        format!("https://{}", self.ctl.api_addr.unwrap())
    }

    async fn operator(&self, name: &str, project: Option<&str>, env: Option<&str>) -> Client {
        let token = self.token(name, project, env).await;
        Client::new(&self.server(), Some(self.ca.cert_pem()), &token).unwrap()
    }

    async fn token(&self, name: &str, project: Option<&str>, env: Option<&str>) -> String {
        let scope = Scope {
            org: "acme".into(),
            project: project.map(Into::into),
            environment: env.map(Into::into),
        };
        scope::mint(&self.store, name, scope, Duration::from_secs(600))
            .await
            .unwrap()
    }

    /// The cells the control server compiles now.
    fn served(&self) -> Vec<String> {
        self.ctl
            .state
            .current
            .borrow()
            .identities
            .keys()
            .cloned()
            .collect()
    }
}

async fn apply(c: &Client, file: &str, text: &str, revision: Option<i64>) -> (u16, Value) {
    let body =
        json!({"request": {"action": "apply", "file": file, "text": text}, "revision": revision});
    c.call("/v1/change", &body).await.unwrap()
}

fn errors(v: &Value) -> String {
    v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e.as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn policy(name: &str, cell: &str, rule: &str) -> String {
    format!(
        "kind: Policy\nname: {name}\ncell: {cell}\nlistener: west\nrules:\n  - {{name: {rule}, action: allow, from_cells: [billing-dev]}}\n"
    )
}

/// Scoped tokens, validation with positions, the audit trail (store and file), and the
/// change reaching what the control server serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_scoped_validated_and_audited() {
    let Some(w) = World::new("scoped").await else {
        return;
    };
    let dev = w.operator("dana", Some("orders"), Some("dev")).await;

    // No or a wrong credential: 401, and nothing is recorded.
    let stranger = Client::new(&w.server(), Some(w.ca.cert_pem()), "mop_not-a-token").unwrap();
    let (status, body) = apply(&stranger, "p.yaml", &policy("x", "orders-dev", "r"), None).await;
    assert_eq!(status, 401, "{body}");

    // In scope: accepted, with a diff, and served.
    let text =
        "# orders' second policy\n".to_owned() + &policy("orders-extra", "orders-dev", "first");
    let (status, body) = apply(&dev, "extra.yaml", &text, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes"][0]["change"], "created");
    assert!(
        body["changes"][0]["diff"]
            .as_str()
            .unwrap()
            .contains("+name: orders-extra"),
        "{body}"
    );
    let rev = body["revision"].as_i64().unwrap();
    let (_, got) = dev
        .call(
            "/v1/get",
            &json!({"kind": "policy", "name": "orders-extra"}),
        )
        .await
        .unwrap();
    assert_eq!(
        got["documents"][0]["text"], text,
        "kept as sent, comment included"
    );
    assert_eq!(
        got["documents"][0]["key"],
        "/membrane/acme/policy/orders-extra.yaml"
    );
    assert!(got["revision"].as_i64().unwrap() >= rev);

    // Updating a document kept among others rewrites it in its own key and keeps the rest.
    let (status, body) = apply(
        &dev,
        "rl.yaml",
        "kind: RateLimit\nname: orders-rl-dev\ncell: orders-dev\nendpoint: orders\nrequests: 20\nper_seconds: 1\n",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes"][0]["change"], "updated");
    let diff = body["changes"][0]["diff"].as_str().unwrap();
    assert!(
        diff.contains("-requests: 10") && diff.contains("+requests: 20"),
        "{diff}"
    );
    let kept = w.store.documents().await.unwrap();
    let acme = &kept
        .iter()
        .find(|(k, _)| k.ends_with("acme.yaml"))
        .unwrap()
        .1;
    assert!(acme.contains("requests: 20") && acme.contains("name: billing-dev"));

    // Invalid: refused with the file's own line and column.
    let bad = "kind: Policy\nname: orders-bad\ncell: orders-dev\nlistener: west\nrules:\n  - {name: r, action: allow, from_cels: [billing-dev]}\n";
    let (status, body) = apply(&dev, "bad.yaml", bad, None).await;
    assert_eq!(status, 422, "{body}");
    let e = errors(&body);
    assert!(e.starts_with("bad.yaml:6:"), "{e}");
    assert!(e.contains("from_cels"), "{e}");
    // A change that breaks another document: the error names where that one is kept.
    let (status, body) = dev
        .call(
            "/v1/change",
            &json!({"request": {"action": "delete", "kind": "Cell", "name": "orders-dev"}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(errors(&body).contains("etcd:/membrane/acme/"), "{body}");

    // Outside the scope: another project, another environment, the org's providers.
    let billing = policy("billing-x", "billing-dev", "r");
    let (status, body) = apply(&dev, "b.yaml", &billing, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        errors(&body).contains("belongs to project billing"),
        "{body}"
    );
    let prod_cell = format!(
        "kind: Cell\nname: orders-prod\norg: acme\nproject: orders\nenvironment: prod\ngateway:\n  west: {{address: '{}'}}\n",
        addr()
    );
    let (status, body) = apply(&dev, "prod.yaml", &prod_cell, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        errors(&body).contains("belongs to environment prod"),
        "{body}"
    );
    // Moving a document out of the scope is refused on its old owner as well as its new.
    let moved = policy("orders-extra", "billing-dev", "first");
    let (status, _) = apply(&dev, "m.yaml", &moved, None).await;
    assert_eq!(status, 403);
    let provider = "kind: JwtProvider\nname: idp\njwks:\n  inline: '{\"keys\": []}'\n";
    let (status, body) = apply(&dev, "idp.yaml", provider, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(errors(&body).contains("shared by the whole org"), "{body}");

    // A dry run changes nothing and is not audited.
    let before = w.store.snapshot().await.unwrap().revision;
    let body = json!({"request": {"action": "apply", "file": "d.yaml", "text": policy("orders-dry", "orders-dev", "r")}, "dry_run": true});
    let (status, answer) = dev.call("/v1/change", &body).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["dry_run"], true);
    assert_eq!(w.store.snapshot().await.unwrap().revision, before);

    // The audit trail: 2 accepted, 6 refused (2 invalid, 4 outside the scope); the 401
    // and the dry run are not in it.
    let (_, all) = dev.call("/v1/audit", &json!({})).await.unwrap();
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 8, "{all:#?}");
    assert!(all.iter().all(|r| r["operator"] == "dana"));
    let accepted: Vec<&Value> = all.iter().filter(|r| r["accepted"] == true).collect();
    assert_eq!(accepted.len(), 2);
    assert!(
        accepted[0]["changes"][0]["diff"]
            .as_str()
            .unwrap()
            .contains("+name: orders-extra")
    );
    assert!(accepted[1]["revision"].as_i64().unwrap() > accepted[0]["revision"].as_i64().unwrap());
    let (_, refused) = dev
        .call("/v1/audit", &json!({"outcome": "refused", "kind": "Cell"}))
        .await
        .unwrap();
    let refused = refused.as_array().unwrap();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(refused.iter().any(|r| {
        r["reasons"][0]
            .as_str()
            .unwrap()
            .contains("environment prod")
    }));
    let file = std::fs::read_to_string(w.dir.join("audit.jsonl")).unwrap();
    assert_eq!(file.lines().count(), 8);
    for l in file.lines() {
        serde_json::from_str::<Value>(l).unwrap();
    }

    // What the control server serves follows the store: a cell applied through the API
    // by a whole-org operator is compiled.
    let admin = w.operator("ari", None, None).await;
    let (status, body) = apply(&admin, "prod.yaml", &prod_cell, None).await;
    assert_eq!(status, 200, "{body}");
    eventually(
        "the control server serves orders-prod",
        Duration::from_secs(10),
        || async { w.served().contains(&"orders-prod".to_owned()) },
    )
    .await;
    w.ctl.shutdown();
}

/// Two operators changing the store at once lose nothing: without a revision each change is
/// re-read, re-validated and retried until it lands on the latest state; with the revision
/// both read, exactly one of two writes of the same document wins and the other is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_operators_lose_no_update() {
    let Some(w) = World::new("cas").await else {
        return;
    };
    let one = w.operator("one", Some("orders"), None).await;
    let two = w.operator("two", Some("orders"), None).await;
    const EACH: usize = 6;
    let run = |c: Client, who: &'static str| async move {
        let mut statuses = Vec::new();
        for i in 0..EACH {
            let name = format!("{who}-{i}");
            let (s, body) = apply(&c, "p.yaml", &policy(&name, "orders-dev", "r"), None).await;
            assert_eq!(s, 200, "{body}");
            statuses.push(s);
        }
        (c, statuses)
    };
    let (a, b) = tokio::join!(tokio::spawn(run(one, "one")), tokio::spawn(run(two, "two")));
    let (one, _) = a.unwrap();
    let (two, _) = b.unwrap();
    let (_, listed) = one
        .call("/v1/get", &json!({"kind": "Policy"}))
        .await
        .unwrap();
    let names: Vec<&str> = listed["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    for who in ["one", "two"] {
        for i in 0..EACH {
            assert!(names.contains(&format!("{who}-{i}").as_str()), "{names:?}");
        }
    }

    // Both read the same revision, both change the same document with it.
    let (_, read) = one
        .call("/v1/get", &json!({"kind": "Policy", "name": "one-0"}))
        .await
        .unwrap();
    let rev = read["revision"].as_i64().unwrap();
    let mine = policy("one-0", "orders-dev", "from-one");
    let theirs = policy("one-0", "orders-dev", "from-two");
    let (x, y) = tokio::join!(
        apply(&one, "p.yaml", &mine, Some(rev)),
        apply(&two, "p.yaml", &theirs, Some(rev))
    );
    let mut statuses = [x.0, y.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{x:?} {y:?}");
    let loser = if x.0 == 409 { &x.1 } else { &y.1 };
    assert!(
        errors(loser).contains(&format!("after revision {rev}")),
        "{loser}"
    );
    let winner = if x.0 == 200 { &mine } else { &theirs };
    let (_, now) = one
        .call("/v1/get", &json!({"kind": "Policy", "name": "one-0"}))
        .await
        .unwrap();
    assert_eq!(now["documents"][0]["text"], winner.as_str());
    // The conflict is in the audit trail as refused.
    let (_, refused) = one
        .call("/v1/audit", &json!({"outcome": "refused"}))
        .await
        .unwrap();
    assert_eq!(refused.as_array().unwrap().len(), 1, "{refused}");
    w.ctl.shutdown();
}

/// Promotion dev → stage: overlays applied, names and the cells named renamed, the cells
/// it calls promoted first, scoped to the target environment, audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_applies_the_overlay_through_the_api() {
    let Some(w) = World::new("promote").await else {
        return;
    };
    let promote = |cell: &str| json!({"request": {"action": "promote", "cell": cell, "from": "dev", "to": "stage"}});
    // A dev-scoped operator may not write stage.
    let dev = w.operator("dana", None, Some("dev")).await;
    let (status, body) = dev.call("/v1/change", &promote("orders")).await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(errors(&body).contains("environment stage"), "{body}");

    let stage = w.operator("sam", None, Some("stage")).await;
    // orders' policy admits billing, which has no stage counterpart yet: promote the
    // cells a cell names first; the refusal says which.
    let (status, body) = stage.call("/v1/change", &promote("orders")).await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(errors(&body).contains("billing-stage"), "{body}");
    let (status, body) = stage.call("/v1/change", &promote("billing")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = stage.call("/v1/change", &promote("orders")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let changed: Vec<(String, String)> = body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().into(),
                c["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        changed,
        [
            ("Cell".into(), "orders-stage".into()),
            ("Policy".into(), "orders-west-stage".into()),
            ("RateLimit".into(), "orders-rl-stage".into())
        ]
    );

    // What was written: the overlay's addresses and budget, the target's names.
    let (_, got) = stage
        .call("/v1/get", &json!({"kind": "Cell", "name": "orders-stage"}))
        .await
        .unwrap();
    let cell = got["documents"][0]["text"].as_str().unwrap();
    assert!(cell.contains("environment: stage"), "{cell}");
    assert!(
        cell.contains("127.0.0.2:9") && cell.contains("127.0.0.3:9"),
        "{cell}"
    );
    assert!(!cell.contains("127.0.0.1:9"), "{cell}");
    let (_, got) = stage
        .call(
            "/v1/get",
            &json!({"kind": "RateLimit", "name": "orders-rl-stage"}),
        )
        .await
        .unwrap();
    let rl = got["documents"][0]["text"].as_str().unwrap();
    assert!(
        rl.contains("requests: 500") && rl.contains("cell: orders-stage"),
        "{rl}"
    );
    let (_, got) = stage
        .call(
            "/v1/get",
            &json!({"kind": "Policy", "name": "orders-west-stage"}),
        )
        .await
        .unwrap();
    let p = got["documents"][0]["text"].as_str().unwrap();
    assert!(
        p.contains("billing-stage") && !p.contains("billing-dev"),
        "{p}"
    );
    eventually(
        "the control server serves the stage cells",
        Duration::from_secs(10),
        || async {
            let s = w.served();
            s.contains(&"orders-stage".to_owned()) && s.contains(&"billing-stage".to_owned())
        },
    )
    .await;
    // Promoting again with nothing changed in dev changes nothing.
    let (status, body) = stage.call("/v1/change", &promote("orders")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["change"] == "unchanged"),
        "{body}"
    );
    let admin = w.operator("ari", None, None).await;
    let (_, promotions) = admin
        .call(
            "/v1/audit",
            &json!({"action": "promote", "outcome": "accepted"}),
        )
        .await
        .unwrap();
    assert_eq!(promotions.as_array().unwrap().len(), 2, "{promotions}");
    w.ctl.shutdown();
}

/// The commands an operator types: `apply`, `diff`, `get`, `audit`, through the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_applies_and_reports_positions() {
    let Some(w) = World::new("cli").await else {
        return;
    };
    let token = w.token("cli", Some("orders"), Some("dev")).await;
    let ca = w.dir.join("org-ca.pem");
    std::fs::write(&ca, w.ca.cert_pem()).unwrap();
    let good = w.dir.join("extra.yaml");
    std::fs::write(&good, policy("orders-cli", "orders-dev", "r")).unwrap();
    let bad = w.dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "kind: Policy\nname: x\ncell: orders-dev\nlistener: weest\nrules: []\n",
    )
    .unwrap();
    let server = w.server();
    let run = move |args: Vec<String>| {
        let (server, token, ca) = (server.clone(), token.clone(), ca.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
                    .args(&args)
                    .env("MEMBRANE_SERVER", &server)
                    .env("MEMBRANE_TOKEN", &token)
                    .env("MEMBRANE_CA_FILE", &ca)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let s = |p: &PathBuf| p.display().to_string();
    let out = run(vec!["diff".into(), "-f".into(), s(&good)]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("Policy orders-cli: created") && stdout.contains("valid: would apply"),
        "{stdout}"
    );
    let out = run(vec!["apply".into(), "-f".into(), s(&good)]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("applied: store revision"), "{stdout}");
    let out = run(vec!["apply".into(), "-f".into(), s(&bad)]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}:4:", s(&bad))), "{stderr}");
    let out = run(vec!["get".into(), "policy".into(), "orders-cli".into()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("name: orders-cli"),
        "{stdout}"
    );
    let out = run(vec!["audit".into(), "--outcome".into(), "refused".into()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" cli apply ")).count(),
        1,
        "{stdout}"
    );
    // A wrong token: the command could not run (2), and says why.
    let out = tokio::task::spawn_blocking({
        let server = w.server();
        let ca = w.dir.join("org-ca.pem");
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
                .args(["get", "--server", &server, "--token", "mop_x", "--ca-file"])
                .arg(&ca)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    w.ctl.shutdown();
}
