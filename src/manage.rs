//! `membrane apply|diff|get|delete|audit|promote`: the control API's commands (see
//! `membrane_xds::manage`). Each takes the server, the operator token and the org CA from
//! flags or the environment (`MEMBRANE_SERVER`, `MEMBRANE_TOKEN`, `MEMBRANE_CA_FILE`).
//! Exit status: 0 done (or, for `diff`, valid), 1 refused, 2 the command could not run.

use clap::Args;
use membrane_xds::manage::client::Client;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Clone)]
pub struct Api {
    /// The control API: `https://host:port` (`http://` for a server run with --insecure).
    #[arg(
        long,
        env = "MEMBRANE_SERVER",
        default_value = "https://127.0.0.1:18002"
    )]
    server: String,
    /// An operator token (`membrane control operator`).
    #[arg(long, env = "MEMBRANE_TOKEN", hide_env_values = true)]
    token: String,
    /// The org CA (PEM) the control server's certificate chains to.
    #[arg(long, env = "MEMBRANE_CA_FILE")]
    ca_file: Option<PathBuf>,
}

/// Only what a change call needs besides the request.
#[derive(Args, Clone, Default)]
pub struct Guard {
    /// Refuse if the store changed after this revision (the one `get` or `diff` showed).
    #[arg(long)]
    revision: Option<i64>,
}

pub enum Call {
    Apply {
        file: PathBuf,
        dry_run: bool,
        guard: Guard,
    },
    Delete {
        kind: String,
        name: String,
        guard: Guard,
    },
    Promote {
        cell: String,
        from: String,
        to: String,
        dry_run: bool,
        guard: Guard,
    },
    Get {
        kind: Option<String>,
        name: Option<String>,
        json: bool,
    },
    Audit {
        filter: Value,
        json: bool,
    },
}

fn client(api: &Api) -> Result<Client, String> {
    let ca = match &api.ca_file {
        Some(f) => Some(std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?),
        None => None,
    };
    Client::new(&api.server, ca.as_deref(), &api.token).map_err(|e| e.to_string())
}

pub fn run(name: &str, api: &Api, call: Call) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(call_api(api, call)));
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("membrane {name}: {e}");
            ExitCode::from(2)
        }
    }
}

async fn call_api(api: &Api, call: Call) -> Result<ExitCode, String> {
    let c = client(api)?;
    let change = |request: Value, guard: &Guard, dry_run: bool| json!({"request": request, "revision": guard.revision, "dry_run": dry_run});
    let (path, body) = match &call {
        Call::Apply {
            file,
            dry_run,
            guard,
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
            } else {
                std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?
            };
            let request =
                json!({"action": "apply", "file": file.display().to_string(), "text": text});
            ("/v1/change", change(request, guard, *dry_run))
        }
        Call::Delete { kind, name, guard } => (
            "/v1/change",
            change(
                json!({"action": "delete", "kind": kind, "name": name}),
                guard,
                false,
            ),
        ),
        Call::Promote {
            cell,
            from,
            to,
            dry_run,
            guard,
        } => (
            "/v1/change",
            change(
                json!({"action": "promote", "cell": cell, "from": from, "to": to}),
                guard,
                *dry_run,
            ),
        ),
        Call::Get { kind, name, .. } => ("/v1/get", json!({"kind": kind, "name": name})),
        Call::Audit { filter, .. } => ("/v1/audit", filter.clone()),
    };
    let (status, answer) = c.call(path, &body).await.map_err(|e| e.to_string())?;
    if status == 401 || status == 400 || status == 413 || status == 503 {
        return Err(format!("{status}: {}", errors(&answer).join("; ")));
    }
    match call {
        Call::Get { json: true, .. } | Call::Audit { json: true, .. } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&answer).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Call::Get { .. } => {
            let docs = answer["documents"].as_array().cloned().unwrap_or_default();
            for (i, d) in docs.iter().enumerate() {
                if i > 0 {
                    println!("---");
                }
                println!(
                    "# {} (store revision {})",
                    d["key"].as_str().unwrap_or(""),
                    answer["revision"]
                );
                print!("{}", d["text"].as_str().unwrap_or(""));
            }
            if docs.is_empty() {
                eprintln!("no document matches (or none you may read)");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Call::Audit { .. } => {
            for r in answer.as_array().cloned().unwrap_or_default() {
                let outcome = if r["accepted"] == json!(true) {
                    "accepted"
                } else {
                    "refused"
                };
                println!(
                    "{} {} {} {} {} revision {}",
                    r["time"].as_str().unwrap_or(""),
                    r["operator"].as_str().unwrap_or(""),
                    r["action"].as_str().unwrap_or(""),
                    r["subject"].as_str().unwrap_or(""),
                    outcome,
                    r["revision"]
                );
                for ch in r["changes"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "  {} {}: {}",
                        ch["kind"].as_str().unwrap_or(""),
                        ch["name"].as_str().unwrap_or(""),
                        ch["change"].as_str().unwrap_or("")
                    );
                }
                for reason in r["reasons"].as_array().cloned().unwrap_or_default() {
                    println!("  refused: {}", reason.as_str().unwrap_or(""));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Call::Apply { .. } | Call::Delete { .. } | Call::Promote { .. } => Ok(report(&answer)),
    }
}

fn errors(answer: &Value) -> Vec<String> {
    answer["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A change's outcome, as an operator reads it: each document's change and diff, then
/// what happened.
fn report(answer: &Value) -> ExitCode {
    for ch in answer["changes"].as_array().cloned().unwrap_or_default() {
        println!(
            "{} {}: {}",
            ch["kind"].as_str().unwrap_or(""),
            ch["name"].as_str().unwrap_or(""),
            ch["change"].as_str().unwrap_or("")
        );
        if let Some(d) = ch["diff"].as_str() {
            print!("{d}");
        }
    }
    let dry = answer["dry_run"] == json!(true);
    if answer["accepted"] == json!(true) {
        if dry {
            println!(
                "valid: would apply at store revision {}",
                answer["revision"]
            );
        } else {
            println!("applied: store revision {}", answer["revision"]);
        }
        return ExitCode::SUCCESS;
    }
    eprintln!("refused ({}):", answer["status"]);
    for e in errors(answer) {
        eprintln!("{e}");
    }
    ExitCode::from(1)
}
