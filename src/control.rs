//! `membrane control`: the control server; `membrane control token`, which mints a join
//! token for a gateway's first certificate; `membrane control rollover`, which starts a CA
//! roll-over.

use clap::{Args, Subcommand};
use membrane_proxy::config::Dur;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ControlArgs {
    #[command(subcommand)]
    action: Option<ControlAction>,
    /// The cell specs to compile and serve (with --store: where the files specs name,
    /// JWKS files and trust bundles, are read from).
    #[arg(long, required_unless_present = "store")]
    config_dir: Option<PathBuf>,
    /// Take the specs from etcd instead: `etcd://host:port[,host:port...]/prefix`, each key
    /// under the prefix ending in `.yaml` one file's text. Control servers on one prefix
    /// serve the same resources, so gateways can fail over between them (`--xds a,b`).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    #[arg(long, default_value = "127.0.0.1:18000")]
    listen: std::net::SocketAddr,
    #[arg(long, default_value = "127.0.0.1:18001")]
    admin: std::net::SocketAddr,
    /// Be the cells' CA: serve ADS and the certificate service over mTLS, issuing each
    /// gateway its SVID. DIR holds `ca.pem` and `ca-key.pem` (`membrane cert ca`, or an
    /// intermediate from your PKI), optionally `bundle.pem` (every root to trust), and the
    /// join tokens.
    #[arg(long, value_name = "DIR", required_unless_present = "insecure")]
    ca: Option<PathBuf>,
    /// Lifetime of issued certificates (gateways renew at half of it).
    #[arg(long, default_value = "24h", value_parser = parse_dur)]
    cert_lifetime: Duration,
    /// Serve ADS in plaintext, without authentication: anyone who reaches the port can
    /// read every cell's configuration. For development only; not with --ca.
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// Where gateways find their north (public) certificates and, with --insecure, every
    /// certificate: `ca.pem`, `<cell>.pem` and `<cell>-key.pem` (as `membrane cert`
    /// writes them). Paths are sent to gateways as they are.
    #[arg(long)]
    pki: Option<PathBuf>,
    /// Trace each spec change (file event, compile, push to the last gateway's ACK) to
    /// this OpenTelemetry collector (OTLP/gRPC, `http://host:4317`).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Serve the control API here (`membrane apply|get|delete|diff|audit|promote`):
    /// HTTPS with the control server's certificate (plaintext with --insecure). Needs
    /// --store.
    #[arg(long, value_name = "ADDR", requires = "store")]
    api: Option<std::net::SocketAddr>,
    /// Also append the control API's audit records to FILE as JSON lines (they are kept in
    /// the store either way).
    #[arg(long, value_name = "FILE", requires = "api")]
    audit_log: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ControlAction {
    /// Mint a join token for one gateway of CELL: single use, expiring, kept hashed in the
    /// CA directory. Pass it to `membrane proxy --join-token`.
    ///
    /// With --store, the token is kept in etcd beside the specs, where every control
    /// server on that prefix redeems it (once between them).
    Token {
        #[arg(long, value_name = "DIR", required_unless_present = "store")]
        ca: Option<PathBuf>,
        /// The control servers' spec store: `etcd://host:port/prefix`.
        #[arg(long, value_name = "URL", conflicts_with = "ca")]
        store: Option<String>,
        #[arg(long)]
        cell: String,
        #[arg(long, default_value = "10m", value_parser = parse_dur)]
        ttl: Duration,
    },
    /// Mint an operator token for the control API, scoped to an org and optionally one
    /// project and one environment; kept hashed in the store, shown once.
    Operator {
        /// The control servers' spec store: `etcd://host:port/prefix`.
        #[arg(long, value_name = "URL")]
        store: String,
        /// Who the token is for; audit records name it.
        #[arg(long)]
        name: String,
        #[arg(long)]
        org: String,
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        environment: Option<String>,
        #[arg(long, default_value = "720h", value_parser = parse_dur)]
        ttl: Duration,
    },
    /// Roll the CA over to the one in NEXT (`ca.pem`, `ca-key.pem`): the control server
    /// serving DIR publishes its root, switches to it after three quarters of a certificate
    /// lifetime, and drops the old root once the last certificate it signed has expired.
    Rollover {
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        #[arg(long, value_name = "NEXT")]
        next: PathBuf,
    },
}

pub fn parse_dur(s: &str) -> Result<Duration, String> {
    Dur::parse(s).map(|d| d.0).map_err(|e| e.to_string())
}

/// A minted token on stdout (its only showing), or why it could not be minted.
fn shown(command: &str, minted: Result<String, String>) -> ExitCode {
    match minted {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("membrane control {command}: {e}");
            ExitCode::from(1)
        }
    }
}

pub fn run(args: ControlArgs) -> ExitCode {
    if let Some(ControlAction::Rollover { ca, next }) = &args.action {
        return match membrane_xds::ca::rollover::stage(ca, next, args.cert_lifetime) {
            Ok(()) => {
                println!(
                    "roll-over started: the control server serving {} takes it from here",
                    ca.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("membrane control rollover: {e}");
                ExitCode::from(1)
            }
        };
    }
    if let Some(ControlAction::Operator {
        store,
        name,
        org,
        project,
        environment,
        ttl,
    }) = &args.action
    {
        let scope = membrane_xds::manage::scope::Scope {
            org: org.clone(),
            project: project.clone(),
            environment: environment.clone(),
        };
        let minted = membrane_xds::store::Etcd::parse(store)
            .map_err(|e| e.to_string())
            .and_then(|store| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(membrane_xds::manage::scope::mint(&store, name, scope, *ttl))
                    .map_err(|e| e.to_string())
            });
        return shown("operator", minted);
    }
    if let Some(ControlAction::Token {
        ca,
        store,
        cell,
        ttl,
    }) = args.action
    {
        use membrane_xds::ca::shared_tokens::Tokens;
        let tokens = match (ca, store) {
            (_, Some(url)) => match membrane_xds::store::Etcd::parse(&url) {
                Ok(e) => Tokens::Etcd(e),
                Err(e) => {
                    eprintln!("membrane control token: {e}");
                    return ExitCode::from(2);
                }
            },
            (Some(dir), None) => Tokens::Dir(membrane_xds::ca::TokenStore::new(&dir)),
            (None, None) => {
                eprintln!("membrane control token: give --ca DIR or --store URL");
                return ExitCode::from(2);
            }
        };
        let minted = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(tokens.mint(&cell, ttl))
                    .map_err(|e| e.to_string())
            });
        return shown("token", minted);
    }
    let spec_dir = match (&args.config_dir, &args.store) {
        (Some(d), _) => d.clone(),
        (None, Some(_)) => PathBuf::from("."),
        (None, None) => {
            eprintln!("membrane control: give --config-dir or --store");
            return ExitCode::from(2);
        }
    };
    match serve(spec_dir, &args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("membrane control: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(spec_dir: PathBuf, args: &ControlArgs) -> Result<ExitCode, String> {
    // The roots gateways trust: the CA's bundle, or the files' ca.pem without a CA.
    let (bundle, ca) = match &args.ca {
        Some(dir) => {
            let authority = membrane_identity::authority::Authority::load(dir, args.cert_lifetime)
                .map_err(|e| e.to_string())?;
            let dir = std::path::absolute(dir).map_err(|e| e.to_string())?;
            (
                authority.bundle_pem().to_owned(),
                Some(membrane_xds::control::CaOptions {
                    dir,
                    lifetime: args.cert_lifetime,
                }),
            )
        }
        None => {
            let pki = args
                .pki
                .as_ref()
                .ok_or("--insecure needs --pki (the certificate files gateways use)")?;
            let f = pki.join("ca.pem");
            let b = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            (b, None)
        }
    };
    // Certificate paths go to the gateways as they are: make them absolute.
    let pki = args.pki.clone().unwrap_or_default();
    let pki = std::path::absolute(&pki).unwrap_or(pki);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let store = match &args.store {
        Some(url) => Some(membrane_xds::store::Etcd::parse(url).map_err(|e| e.to_string())?),
        None => None,
    };
    rt.block_on(async move {
        let opts = membrane_xds::control::ControlOptions {
            spec_dir,
            store,
            listen: args.listen,
            admin: Some(args.admin),
            cert_dir: pki,
            trust_bundle_pem: bundle,
            debounce: Duration::from_millis(200),
            ca,
            otlp_endpoint: args.otlp_endpoint.clone(),
            api: args.api,
            audit_log: args.audit_log.clone(),
        };
        let handle = membrane_xds::control::start(opts)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(ads = %handle.addr, admin = ?handle.admin_addr, "control server running");
        let _ = tokio::signal::ctrl_c().await;
        handle.shutdown();
        Ok(ExitCode::SUCCESS)
    })
}
