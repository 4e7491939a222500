//! The control server over mTLS, as the cells' CA: its own certificate (issued by its CA at
//! start, for `spiffe://<trust domain>/membrane/control`, renewed at half of its lifetime;
//! the key never leaves memory), the TLS listener, and ADS beside the certificate service.
//!
//! The trust domain is the cells': the first cell's when they share one (the usual case);
//! a control server whose cells span several trust domains is named in the first.

use super::state::ControlState;
use super::{CaOptions, ControlError, ControlOptions};
use crate::ca::shared_tokens::Tokens;
use crate::ca::{CertService, CurrentCa, TokenStore};
use crate::server::Ads;
use membrane_identity::authority::Authority;
use membrane_identity::channel::{self, Rotating};
use membrane_policy::identity::SpiffeId;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use membrane_identity::CONTROL_PATH;

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

/// The listener's TLS: the server's own certificate, client certificates from the CA's
/// roots as they are now.
fn server_config(
    own: &Arc<Rotating>,
    ca: &Authority,
) -> Result<Arc<rustls::ServerConfig>, ControlError> {
    let err = |e: channel::ChannelError| ControlError::OwnCertificate(e.to_string());
    let roots = channel::roots(ca.bundle_pem()).map_err(err)?;
    Ok(Arc::new(
        channel::server_config(own.clone(), roots).map_err(err)?,
    ))
}

pub(super) async fn serve_tls(
    ca: &CaOptions,
    now: Arc<CurrentCa>,
    opts: &ControlOptions,
    ads: Ads,
    state: Arc<ControlState>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, crate::manage::http::TlsNow), ControlError> {
    let id = own_id(&state)?;
    let own = Rotating::new(issue_own(&now.get(), &id)?);
    let config = Arc::new(RwLock::new(server_config(&own, &now.get())?));

    let listen_err = |source| ControlError::Listen {
        what: "ADS",
        addr: opts.listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(listen_err)?;
    let addr = listener.local_addr().map_err(listen_err)?;
    let current_config = {
        let config = config.clone();
        move || match config.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    };
    let incoming = crate::channel::incoming(listener, current_config, ads.refused.clone());
    // Join tokens live with the specs when those are in etcd (every replica redeems what
    // any minted), else in the CA directory.
    let tokens = match &opts.store {
        Some(store) => Tokens::Etcd(store.clone()),
        None => Tokens::Dir(TokenStore::new(&ca.dir)),
    };
    let certs = CertService::new(
        now.clone(),
        tokens,
        crate::revoked::DenyList::new(&ca.dir),
        state.current.clone(),
    );
    if let Ok(mut c) = state.ca.lock() {
        *c = Some(certs.counters.clone());
    }
    let svc = crate::server::service(ads);
    let shared = config.clone();
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
    // Renewed at half of its lifetime, and at once when the CA changes (with the roots
    // client certificates are checked against); a failure is retried a minute later while
    // the current one is still valid.
    let lifetime = ca.lifetime;
    tokio::spawn(async move {
        let mut wait = lifetime / 2;
        loop {
            let changed = now.changed.notified();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = changed => {}
            }
            let ca = now.get();
            match issue_own(&ca, &id).and_then(|key| {
                own.set(key);
                server_config(&own, &ca)
            }) {
                Ok(next) => {
                    if let Ok(mut c) = config.write() {
                        *c = next;
                    }
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
    Ok((addr, shared))
}
