//! The `membrane` command line. Thin on purpose: each subcommand parses its flags and hands
//! over to a library crate.

mod cert;
mod control;
mod demo;
mod files;
mod logging;
mod manage;
mod token;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

// mimalloc: fewer instructions per request than glibc's malloc (ARCHITECTURE.md). The
// `system-alloc` feature leaves it out, so heap profilers that hook malloc (valgrind's
// massif and dhat) see every allocation: `benches/README.md`, memory per idle connection.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "membrane",
    version,
    about = "Membrane: a zero-trust cell gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Process log format: `auto` (text on a terminal, JSON lines otherwise), `text` or
    /// `json`.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    log_format: logging::LogFormat,
    /// Log level or filter (`debug`, `membrane_proxy=debug,info`); default `RUST_LOG`,
    /// else `info`.
    #[arg(long, global = true)]
    log_level: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Everything on one machine: a dev CA, the control server on examples/cells, a gateway
    /// per cell, upstream services and a demo token; prints what runs where and curl
    /// commands. Ctrl-C stops it.
    Demo {
        /// The cell specs to run.
        #[arg(long, default_value = "examples/cells")]
        spec_dir: PathBuf,
        /// Where the demo keeps its copy of the specs, certificates and gateway state.
        #[arg(long, default_value = "target/membrane-demo")]
        work_dir: PathBuf,
        /// Make the suggested calls, print the results and exit (0 when all are as expected).
        #[arg(long)]
        check: bool,
        /// Send every trace of the demo's gateways to this OpenTelemetry collector
        /// (OTLP/gRPC, `http://127.0.0.1:4317`): a billing → orders call shows as one trace.
        #[arg(long, value_name = "URL")]
        otlp_endpoint: Option<String>,
    },
    /// Run the gateway's data plane from a static YAML config file.
    ///
    /// Reloads the file on SIGHUP and when it changes; a bad file is refused with its
    /// position and the running config keeps serving. SIGTERM or Ctrl-C drains in-flight
    /// requests, then exits 0.
    Proxy {
        /// The bootstrap file (listeners, routes, clusters, admin). Not with --xds.
        #[arg(long, short, required_unless_present = "xds", conflicts_with = "xds")]
        config: Option<PathBuf>,
        /// Take the configuration from this control server instead: `https://host:port`
        /// (with --xds-ca), or `http://host:port` with --insecure-xds. Several replicas,
        /// separated by commas, are tried in turn when one cannot be reached or its stream
        /// ends.
        #[arg(long, requires = "node")]
        xds: Option<String>,
        /// The CA bundle (PEM) the control server's certificate must chain to.
        #[arg(long, value_name = "FILE")]
        xds_ca: Option<PathBuf>,
        /// The control server's SPIFFE ID (default: any with path /membrane/control that
        /// the --xds-ca bundle vouches for).
        #[arg(long, value_name = "SPIFFE_ID")]
        xds_id: Option<String>,
        /// Allow a plaintext http:// control server (no authentication either way).
        #[arg(long)]
        insecure_xds: bool,
        /// A join token from `membrane control token`, for the first certificate (not
        /// needed while the state directory holds a valid one).
        #[arg(long, conflicts_with = "join_token_file")]
        join_token: Option<String>,
        /// Read the join token from this file (keeps it out of the process list).
        #[arg(long, value_name = "FILE")]
        join_token_file: Option<PathBuf>,
        /// This gateway's node id for xDS: `<cell>/<instance>`.
        #[arg(long)]
        node: Option<String>,
        /// Where the last applied xDS generation is kept (and booted from when the control
        /// server is unreachable); one directory per node. Default: `$STATE_DIRECTORY`
        /// (systemd's StateDirectory=), else `$XDG_STATE_HOME/membrane/<cell>/<instance>`,
        /// else `~/.local/state/membrane/<cell>/<instance>`.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The admin address in xDS mode.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: std::net::SocketAddr,
        /// In xDS mode, export traces to this OpenTelemetry collector (OTLP/gRPC,
        /// `http://host:4317`); a file's `tracing:` section does the same for --config.
        #[arg(long, value_name = "URL", requires = "xds")]
        otlp_endpoint: Option<String>,
        /// Share of new traces recorded (0 to 1); continued traces keep their caller's
        /// decision, and failed or refused requests are always recorded.
        #[arg(long, default_value_t = 0.01, requires = "otlp_endpoint")]
        trace_sample_ratio: f64,
        /// In xDS mode, the region this gateway runs in: clusters with localities prefer
        /// endpoints of its zone, then of its region (a file's `locality:` does the same).
        #[arg(long, requires = "xds")]
        region: Option<String>,
        /// In xDS mode, the zone this gateway runs in.
        #[arg(long, requires = "xds")]
        zone: Option<String>,
        /// Do not reload when the file changes (SIGHUP still reloads).
        #[arg(long)]
        no_watch: bool,
        /// Apply a reloaded file that is empty or has no listeners (refused by default: a
        /// file caught half-written would remove every listener).
        #[arg(long)]
        allow_empty_config: bool,
    },
    /// Show what the gateway would do with one request (route, authentication,
    /// authorization and the rule that decided, rate limit, action) without sending it.
    /// Exits 0 when the request would reach its action, 1 when refused, 2 on bad input.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// `METHOD URL`, e.g. 'GET https://api.example.com/orders/7'.
        #[arg(long)]
        request: String,
        /// The caller's SPIFFE ID, as its client certificate would prove it.
        #[arg(long)]
        peer: Option<String>,
        /// A JWT, sent as `Authorization: Bearer`.
        #[arg(long)]
        jwt: Option<String>,
        /// Extra request headers, `name: value` (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// The listener to ask (default: the one on the URL's port, else the first whose
        /// TLS matches the scheme).
        #[arg(long)]
        listener: Option<String>,
        /// The client's address.
        #[arg(long, default_value = "127.0.0.1")]
        source: std::net::IpAddr,
    },
    /// Validate a directory of cell specs (Cell, Policy, JwtProvider, RateLimit documents)
    /// without starting anything. Prints every error with file, line, column and field;
    /// exits 0 when the specs are valid, 1 otherwise.
    Check {
        /// The spec directory, or an etcd store (`etcd://host:port/prefix`, as `membrane
        /// control --store` reads it; files the specs name are then read from the current
        /// directory).
        dir: PathBuf,
    },
    /// Run the control server: compile the cell specs in a directory and serve each
    /// gateway its resources over xDS (ADS, delta and state of the world), recompiling
    /// when the directory changes. With --ca it is also the cells' certificate authority
    /// and serves over mTLS; `membrane control token` mints join tokens.
    Control(control::ControlArgs),
    /// A development token issuer: writes a fresh key's JWK set and prints a signed JWT.
    Token(token::TokenArgs),
    /// A development certificate authority: `cert ca`, then `cert issue`.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Create or replace the documents of FILE through the control API: validated as
    /// `membrane check` validates, held to your token's scope, audited.
    Apply {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        guard: manage::Guard,
        #[command(flatten)]
        api: manage::Api,
    },
    /// What `apply -f FILE` would change (a diff per document), and whether it is valid;
    /// changes nothing.
    Diff {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        api: manage::Api,
    },
    /// Show documents from the store (YAML; `--json` for the API's answer): all, of KIND,
    /// or one.
    Get {
        /// Cell, Policy, JwtProvider, RateLimit or Overlay.
        kind: Option<String>,
        name: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: manage::Api,
    },
    /// Remove one document through the control API (validated: nothing may still need it).
    Delete {
        kind: String,
        name: String,
        #[command(flatten)]
        guard: manage::Guard,
        #[command(flatten)]
        api: manage::Api,
    },
    /// The control API's audit trail: who changed what, when, accepted or refused.
    Audit {
        #[arg(long)]
        operator: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// apply, delete or promote.
        #[arg(long)]
        action: Option<String>,
        /// accepted or refused.
        #[arg(long)]
        outcome: Option<String>,
        /// RFC 3339 (`2026-12-04T00:00:00Z`): records at or after it.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: manage::Api,
    },
    /// Promote CELL from one environment to the next: its documents, with the target
    /// environment's Overlay applied, written through the control API.
    Promote {
        cell: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// Show what would be written; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        guard: manage::Guard,
        #[command(flatten)]
        api: manage::Api,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, cli.log_level.as_deref());
    // One crypto provider for the process, installed before anything asks for the default.
    let _ = membrane_proxy::tls::provider();
    match cli.command {
        Command::Proxy {
            config,
            no_watch,
            xds,
            xds_ca,
            xds_id,
            insecure_xds,
            join_token,
            join_token_file,
            node,
            state_dir,
            admin,
            allow_empty_config,
            otlp_endpoint,
            trace_sample_ratio,
            region,
            zone,
        } => match (config, xds, node) {
            (Some(config), None, _) => {
                run_proxy(Source::File(config, !no_watch, allow_empty_config))
            }
            (None, Some(url), Some(node)) => {
                let state_dir = state_dir.unwrap_or_else(|| default_state_dir(&node));
                let xds = XdsFlags {
                    url,
                    ca: xds_ca,
                    id: xds_id,
                    insecure: insecure_xds,
                    token: join_token,
                    token_file: join_token_file,
                    otlp_endpoint,
                    trace_sample_ratio,
                    region,
                    zone,
                };
                match xds.options(node, state_dir, admin) {
                    Ok(opts) => run_proxy(Source::Xds(Box::new(opts))),
                    Err(e) => {
                        eprintln!("membrane proxy: {e}");
                        ExitCode::from(2)
                    }
                }
            }
            _ => {
                eprintln!("membrane proxy: give --config FILE, or --xds URL with --node ID");
                ExitCode::from(2)
            }
        },
        Command::Control(args) => control::run(args),
        Command::Cert(cmd) => cert::run(cmd),
        Command::Demo {
            spec_dir,
            work_dir,
            check,
            otlp_endpoint,
        } => demo::run(demo::DemoArgs {
            spec_dir,
            work_dir,
            check,
            otlp_endpoint,
        }),
        Command::Token(args) => token::run(args),
        Command::Apply { file, guard, api } => manage::run(
            "apply",
            &api,
            manage::Call::Apply {
                file,
                dry_run: false,
                guard,
            },
        ),
        Command::Diff { file, api } => manage::run(
            "diff",
            &api,
            manage::Call::Apply {
                file,
                dry_run: true,
                guard: manage::Guard::default(),
            },
        ),
        Command::Get {
            kind,
            name,
            json,
            api,
        } => manage::run("get", &api, manage::Call::Get { kind, name, json }),
        Command::Delete {
            kind,
            name,
            guard,
            api,
        } => manage::run("delete", &api, manage::Call::Delete { kind, name, guard }),
        Command::Audit {
            operator,
            kind,
            name,
            action,
            outcome,
            since,
            limit,
            json,
            api,
        } => {
            let filter = serde_json::json!({
                "operator": operator, "kind": kind, "name": name, "action": action,
                "outcome": outcome, "since": since, "limit": limit,
            });
            manage::run("audit", &api, manage::Call::Audit { filter, json })
        }
        Command::Promote {
            cell,
            from,
            to,
            dry_run,
            guard,
            api,
        } => manage::run(
            "promote",
            &api,
            manage::Call::Promote {
                cell,
                from,
                to,
                dry_run,
                guard,
            },
        ),
        Command::Check { dir } => check(&dir),
        Command::Explain {
            config,
            request,
            peer,
            jwt,
            headers,
            listener,
            source,
        } => {
            let q = membrane_proxy::explain::Question {
                request,
                peer,
                jwt,
                headers,
                listener,
                source,
            };
            match membrane_proxy::explain::explain(&config, &q) {
                Ok(a) => {
                    print!("{}", a.text);
                    if a.allowed {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("membrane explain: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn check(dir: &std::path::Path) -> ExitCode {
    // The same validation the control server runs on every change.
    let validated = match dir.to_str().filter(|d| d.starts_with("etcd://")) {
        Some(url) => {
            let store = match membrane_xds::store::Etcd::parse(url) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("membrane check: {e}");
                    return ExitCode::from(2);
                }
            };
            let docs = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(store.documents()).map_err(|e| e.to_string()));
            match docs {
                Ok(docs) => {
                    membrane_xds::spec::validate_documents(&docs, std::path::Path::new("."), dir)
                }
                Err(e) => {
                    eprintln!("membrane check: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        None => membrane_xds::spec::validate(dir),
    };
    match validated {
        Ok(specs) => {
            println!(
                "{}: {} documents, {} cells: valid",
                dir.display(),
                specs.documents.len(),
                specs.cells().count()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errors.len());
            ExitCode::from(1)
        }
    }
}

/// The state directory of `node` when none is given: systemd's, else the user's XDG state
/// directory, one per node (a directory shared by two nodes is refused at start).
fn default_state_dir(node: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    let mut dir = base.join("membrane");
    for part in node.split('/') {
        let safe: String = part
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if !safe.is_empty() && safe != "." && safe != ".." {
            dir.push(safe);
        }
    }
    dir
}

/// The control channel as the flags give it.
struct XdsFlags {
    url: String,
    ca: Option<PathBuf>,
    id: Option<String>,
    insecure: bool,
    token: Option<String>,
    token_file: Option<PathBuf>,
    otlp_endpoint: Option<String>,
    trace_sample_ratio: f64,
    region: Option<String>,
    zone: Option<String>,
}

impl XdsFlags {
    fn options(
        self,
        node: String,
        state_dir: PathBuf,
        admin: std::net::SocketAddr,
    ) -> Result<membrane_proxy::xds_client::XdsOptions, String> {
        use membrane_proxy::xds_client::channel;
        let bundle = match &self.ca {
            Some(f) => {
                Some(std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?)
            }
            None => None,
        };
        let expect = match &self.id {
            Some(id) => Some(membrane_identity::verify::Expect::SpiffeId(
                membrane_policy::identity::SpiffeId::parse(id)
                    .map_err(|e| format!("--xds-id {id}: {e}"))?,
            )),
            None => None,
        };
        let mut urls = self.url.split(',').map(str::trim).filter(|u| !u.is_empty());
        let url = urls
            .next()
            .ok_or("--xds: give a control server URL")?
            .to_owned();
        let also: Vec<String> = urls.map(str::to_owned).collect();
        // Every replica is held to the same security as the first.
        for other in &also {
            channel::security(other, bundle.clone(), expect.clone(), self.insecure)
                .map_err(|e| e.to_string())?;
        }
        let security =
            channel::security(&url, bundle, expect, self.insecure).map_err(|e| e.to_string())?;
        let join_token = match (self.token, &self.token_file) {
            (Some(t), _) => Some(t),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| format!("{}: {e}", f.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let tracing = self.otlp_endpoint.map(|endpoint| {
            let cell = node.split('/').next().map(str::to_owned);
            membrane_proxy::config::TracingConfig::new(endpoint, self.trace_sample_ratio, cell)
        });
        Ok(membrane_proxy::xds_client::XdsOptions {
            url,
            also,
            node,
            state_dir,
            admin,
            security,
            join_token,
            tracing,
            locality: (self.region.is_some() || self.zone.is_some()).then_some(
                membrane_proxy::config::LocalityConfig {
                    region: self.region,
                    zone: self.zone,
                },
            ),
        })
    }
}

enum Source {
    /// The file, whether to watch it, whether an empty reload is allowed.
    File(PathBuf, bool, bool),
    Xds(Box<membrane_proxy::xds_client::XdsOptions>),
}

fn run_proxy(source: Source) -> ExitCode {
    let started = match source {
        Source::File(path, watch, allow_empty) => {
            let mut opts = membrane_proxy::StartOptions::file(path, watch);
            opts.allow_empty_reload = allow_empty;
            membrane_proxy::start(opts)
        }
        Source::Xds(opts) => membrane_proxy::xds_client::start(*opts),
    };
    let handle = match started {
        Ok(h) => h,
        Err(e) => {
            eprintln!("membrane: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("membrane: cannot start the signal runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut hup), Ok(mut term), Ok(mut int), Ok(mut usr1)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::user_defined1()),
        ) else {
            eprintln!("membrane: cannot install signal handlers");
            return ExitCode::from(1);
        };
        loop {
            tokio::select! {
                _ = hup.recv() => handle.request_reload(),
                // Log rotation: access log files are reopened (nginx's signal for it).
                _ = usr1.recv() => membrane_proxy::access_log::reopen(),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}
