//! The control server over mTLS, as the cells' CA: its own certificate (issued by its CA at
//! start, for `spiffe://<trust domain>/membrane/control`, renewed at half of its lifetime;
//! the key never leaves memory), the TLS listener, and ADS beside the certificate service.
//!
//! The trust domain is the cells': the first cell's when they share one (the usual case);
//! a control server whose cells span several trust domains is named in the first.

use super::state::ControlState;
use super::{CaOptions, ControlError, ControlOptions};
use crate::ca::{CertService, TokenStore};
use crate::server::Ads;
use membrane_identity::authority::Authority;
use membrane_identity::channel::{self, Rotating};
use membrane_policy::identity::SpiffeId;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The path of the control server's SPIFFE ID; gateways check it.
pub const CONTROL_PATH: &str = "/membrane/control";

fn own_id(state: &ControlState) -> Result<SpiffeId, ControlError> {
    let current = state.current.borrow().clone();
    let td = current
        .identities
        .values()
        .filter_map(|id| SpiffeId::parse(id).ok())
        .map(|id| id.trust_domain().to_owned())
        .next()
        .unwrap_or_else(|| "membrane.internal".to_owned());
    SpiffeId::parse(&format!("spiffe://{td}{CONTROL_PATH}"))
        .map_err(|e| ControlError::OwnCertificate(e.to_string()))
}

fn issue_own(
    authority: &Authority,
    id: &SpiffeId,
) -> Result<Arc<rustls::sign::CertifiedKey>, ControlError> {
    let err = |e: String| ControlError::OwnCertificate(e);
    let key = rcgen::KeyPair::generate().map_err(|e| err(e.to_string()))?;
    let signed = authority
        .sign_key(&key, id, &[])
        .map_err(|e| err(e.to_string()))?;
    channel::certified_key(&signed.chain.concat(), &key.serialize_pem())
        .map_err(|e| err(e.to_string()))
}

pub(super) async fn serve_tls(
    ca: &CaOptions,
    opts: &ControlOptions,
    ads: Ads,
    state: Arc<ControlState>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, ControlError> {
    let authority = Arc::new(Authority::load(&ca.dir, ca.lifetime)?);
    let id = own_id(&state)?;
    let own = Rotating::new(issue_own(&authority, &id)?);
    let roots = channel::roots(authority.bundle_pem())
        .map_err(|e| ControlError::OwnCertificate(e.to_string()))?;
    let config = channel::server_config(own.clone(), roots)
        .map_err(|e| ControlError::OwnCertificate(e.to_string()))?;

    let listen_err = |source| ControlError::Listen {
        what: "ADS",
        addr: opts.listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(listen_err)?;
    let addr = listener.local_addr().map_err(listen_err)?;
    let incoming = crate::channel::incoming(listener, Arc::new(config), ads.refused.clone());
    let certs = CertService::new(
        authority.clone(),
        TokenStore::new(&ca.dir),
        crate::revoked::DenyList::new(&ca.dir),
        state.current.clone(),
    );
    if let Ok(mut c) = state.ca.lock() {
        *c = Some(certs.counters.clone());
    }
    let svc = crate::server::service(ads);
    tokio::spawn(async move {
        if let Err(e) = crate::server::transport()
            .add_service(svc)
            .add_service(certs.server())
            .serve_with_incoming_shutdown(incoming, stopped)
            .await
        {
            tracing::error!(error = %e, "control channel stopped");
        }
    });
    // Renewed at half of its lifetime; a failure is retried a minute later while the
    // current one is still valid.
    let lifetime = ca.lifetime;
    tokio::spawn(async move {
        let mut wait = lifetime / 2;
        loop {
            tokio::time::sleep(wait).await;
            match issue_own(&authority, &id) {
                Ok(key) => {
                    own.set(key);
                    wait = lifetime / 2;
                    tracing::info!(%id, "control server certificate renewed");
                }
                Err(e) => {
                    tracing::error!(error = %e, "control server certificate renewal failed; retrying");
                    wait = Duration::from_secs(60).min(lifetime / 4);
                }
            }
        }
    });
    Ok(addr)
}
