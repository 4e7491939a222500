//! `membrane cert`: a development CA for demos and tests.

use clap::Subcommand;
use membrane_proxy::tls::devca::{DevCa, LeafSpec};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum CertCommand {
    /// Make a new root CA: writes ca.pem and ca-key.pem into --out.
    Ca {
        #[arg(long, default_value = ".")]
        out: PathBuf,
        #[arg(long, default_value = "Membrane dev root CA")]
        name: String,
        /// Lifetime in days.
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
    /// Issue a certificate from a CA made by `membrane cert ca`: writes NAME.pem (leaf then
    /// CA) and NAME-key.pem into --out. Usable for both server and client authentication.
    Issue {
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long, default_value = ".")]
        ca: PathBuf,
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Base name of the files written.
        #[arg(long)]
        name: String,
        /// SPIFFE ID for the URI SAN, e.g. spiffe://acme.internal/org/acme/env/dev/cell/orders.
        #[arg(long)]
        spiffe: Option<String>,
        /// DNS names (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// Lifetime in days.
        #[arg(long, default_value_t = 90)]
        days: u64,
    },
}

pub fn run(cmd: CertCommand) -> ExitCode {
    match do_run(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("membrane cert: {e}");
            ExitCode::from(1)
        }
    }
}

fn do_run(cmd: CertCommand) -> Result<(), String> {
    match cmd {
        CertCommand::Ca { out, name, days } => {
            let ca = DevCa::new(&name, Duration::from_secs(days * 86_400))
                .map_err(|e| format!("cannot make the CA: {e}"))?;
            write(&out, "ca.pem", ca.cert_pem())?;
            write_key(&out, "ca-key.pem", &ca.key_pem())?;
            println!("wrote {} and ca-key.pem", out.join("ca.pem").display());
            Ok(())
        }
        CertCommand::Issue {
            ca,
            out,
            name,
            spiffe,
            dns,
            days,
        } => {
            if let Some(id) = &spiffe {
                membrane_policy::identity::SpiffeId::parse(id)
                    .map_err(|e| format!("--spiffe {id}: {e}"))?;
            }
            if spiffe.is_none() && dns.is_empty() {
                return Err("give --spiffe or --dns (or both)".into());
            }
            let read = |f: &str| {
                std::fs::read_to_string(ca.join(f))
                    .map_err(|e| format!("{}: {e}", ca.join(f).display()))
            };
            let authority = DevCa::load(&read("ca.pem")?, &read("ca-key.pem")?)
                .map_err(|e| format!("{}: not a usable CA: {e}", ca.display()))?;
            let mut spec = LeafSpec::new(&name);
            spec.spiffe_id = spiffe;
            spec.dns_names = dns;
            spec.not_after_secs = (days * 86_400).try_into().unwrap_or(i64::MAX / 2);
            let issued = authority
                .issue(&spec)
                .map_err(|e| format!("cannot issue: {e}"))?;
            let chain = format!("{}{}", issued.cert_pem, authority.cert_pem());
            write(&out, &format!("{name}.pem"), &chain)?;
            write_key(&out, &format!("{name}-key.pem"), &issued.key_pem)?;
            println!(
                "wrote {} and {name}-key.pem",
                out.join(format!("{name}.pem")).display()
            );
            Ok(())
        }
    }
}

fn write(dir: &Path, file: &str, text: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    crate::files::write(&dir.join(file), text)
}

fn write_key(dir: &Path, file: &str, text: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    crate::files::write_private(&dir.join(file), text)
}
