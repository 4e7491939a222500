//! `membrane token`: a development token issuer for demos, benchmarks and trying policies.
//! Each run makes a fresh signing key, writes its public JWK set where asked, and prints
//! one signed JWT.

use clap::Args;
use membrane_policy::jwt::{Alg, Signer};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct TokenArgs {
    /// Where to write the public JWK set (give it to a provider as `jwks: {file: ...}`).
    #[arg(long)]
    jwks_out: PathBuf,
    #[arg(long, default_value = "https://membrane.dev")]
    issuer: String,
    #[arg(long)]
    audience: Option<String>,
    #[arg(long, default_value = "dev-user")]
    sub: String,
    /// Space-separated scopes.
    #[arg(long)]
    scope: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// Extra claims as a JSON object.
    #[arg(long)]
    claims: Option<String>,
}

pub fn run(a: TokenArgs) -> ExitCode {
    match issue(a) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("membrane token: {e}");
            ExitCode::from(2)
        }
    }
}

fn issue(a: TokenArgs) -> Result<String, String> {
    let signer = Signer::generate(Alg::ES256, "dev-1").map_err(|_| "cannot make a key")?;
    std::fs::write(&a.jwks_out, signer.jwks())
        .map_err(|e| format!("{}: {e}", a.jwks_out.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut claims: Map<String, Value> = match &a.claims {
        Some(text) => serde_json::from_str(text).map_err(|e| format!("--claims: {e}"))?,
        None => Map::new(),
    };
    claims.insert("iss".into(), json!(a.issuer));
    claims.insert("sub".into(), json!(a.sub));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + a.ttl));
    if let Some(aud) = a.audience {
        claims.insert("aud".into(), json!(aud));
    }
    if let Some(s) = a.scope {
        claims.insert("scope".into(), json!(s));
    }
    Ok(signer.sign(&Value::Object(claims)))
}
