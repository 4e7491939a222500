//! The CA the control server signs with now. The CA directory is watched: when `ca.pem`,
//! `ca-key.pem` or `bundle.pem` change, the directory is loaded again and, if it loads and
//! differs, replaces the current one for the next certificate, the control server's own
//! certificate (issued again at once) and the trust bundle pushed to gateways. A directory
//! that does not load (a key that is not the certificate's, as between the two writes of a
//! roll-over) is logged and the current CA kept.
//!
//! A roll-over is the control server's own once the next CA is in the directory
//! ([`super::rollover`]): the roots it publishes are the current CA's plus the roll-over's,
//! and the steps are taken when they are due (`next_step`, which the control loop sleeps
//! until).

use super::rollover::{self, Timeline};
use membrane_identity::authority::{Authority, LoadError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

#[derive(Debug)]
pub struct CurrentCa {
    dir: PathBuf,
    lifetime: Duration,
    now: RwLock<Arc<Authority>>,
    /// When the roll-over under way has its next step, and which step it is in.
    rollover: Mutex<(Option<SystemTime>, &'static str)>,
    /// Woken when the CA changes.
    pub changed: Notify,
}

/// Loads `dir` and takes the roll-over steps due now: the authority that signs, trusting
/// the roll-over's roots, and the roll-over's state. A next CA that does not load is
/// logged, and the current one kept, without its root.
fn load_now(dir: &Path, lifetime: Duration) -> Result<(Authority, rollover::Plan), LoadError> {
    let timeline = Timeline::for_lifetime(lifetime);
    let mut base = Authority::load(dir, lifetime)?;
    let mut plan = rollover::Plan::default();
    // Twice at most: a switch changes `ca.pem`, which is then loaded again.
    for _ in 0..2 {
        match rollover::advance(dir, &base, timeline, SystemTime::now()) {
            Ok((p, false)) => {
                plan = p;
                break;
            }
            Ok((_, true)) => base = Authority::load(dir, lifetime)?,
            Err(e) => {
                tracing::error!(error = %e, "CA roll-over: step not taken; the current CA keeps signing");
                break;
            }
        }
    }
    Ok((base.trusting(&plan.extra_roots), plan))
}

impl CurrentCa {
    pub fn load(dir: &Path, lifetime: Duration) -> Result<Arc<Self>, LoadError> {
        let (now, plan) = load_now(dir, lifetime)?;
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            lifetime,
            now: RwLock::new(Arc::new(now)),
            rollover: Mutex::new((plan.next_step, plan.phase)),
            changed: Notify::new(),
        }))
    }

    /// When the roll-over under way takes its next step; `None` when none is.
    pub fn next_step(&self) -> Option<SystemTime> {
        self.rollover.lock().map_or(None, |r| r.0)
    }

    /// The roll-over's step: "idle", "published" or "retiring".
    pub fn phase(&self) -> &'static str {
        self.rollover.lock().map_or("idle", |r| r.1)
    }

    pub fn get(&self) -> Arc<Authority> {
        match self.now.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Loads the directory again; true when the CA changed.
    pub fn reload(&self) -> bool {
        let next = match load_now(&self.dir, self.lifetime) {
            Ok((a, plan)) => {
                if let Ok(mut r) = self.rollover.lock() {
                    *r = (plan.next_step, plan.phase);
                }
                a
            }
            Err(e) => {
                tracing::error!(error = %e, "the CA directory does not load; the current CA is kept");
                // A roll-over step that was due is tried again in a while, not at once.
                if let Ok(mut r) = self.rollover.lock()
                    && r.0.is_some()
                {
                    r.0 = Some(SystemTime::now() + Duration::from_secs(30));
                }
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
