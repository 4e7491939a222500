//! The CA the control server signs with now. The CA directory is watched: when `ca.pem`,
//! `ca-key.pem` or `bundle.pem` change, the directory is loaded again and, if it loads and
//! differs, replaces the current one for the next certificate, the control server's own
//! certificate (issued again at once) and the trust bundle pushed to gateways. A directory
//! that does not load (a key that is not the certificate's, as between the two writes of a
//! roll-over) is logged and the current CA kept.
//!
//! A roll-over, with no request failing: (1) `bundle.pem` = old and new roots, and wait for
//! every gateway to renew once (half a lifetime), so each trusts both; (2) `ca.pem` and
//! `ca-key.pem` = the new CA, and wait one more lifetime, so every certificate is the new
//! CA's; (3) `bundle.pem` = the new root alone.

use membrane_identity::authority::{Authority, LoadError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug)]
pub struct CurrentCa {
    dir: PathBuf,
    lifetime: Duration,
    now: RwLock<Arc<Authority>>,
    /// Woken when the CA changes.
    pub changed: Notify,
}

impl CurrentCa {
    pub fn load(dir: &Path, lifetime: Duration) -> Result<Arc<Self>, LoadError> {
        let now = Authority::load(dir, lifetime)?;
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            lifetime,
            now: RwLock::new(Arc::new(now)),
            changed: Notify::new(),
        }))
    }

    pub fn get(&self) -> Arc<Authority> {
        match self.now.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Loads the directory again; true when the CA changed.
    pub fn reload(&self) -> bool {
        let next = match Authority::load(&self.dir, self.lifetime) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "the CA directory does not load; the current CA is kept");
                return false;
            }
        };
        if self.get().same_as(&next) {
            return false;
        }
        if let Ok(mut now) = self.now.write() {
            *now = Arc::new(next);
        }
        tracing::info!(dir = %self.dir.display(), "CA changed: new certificates and the trust bundle follow");
        self.changed.notify_waiters();
        true
    }
}
