//! The hand-over of an accepted protocol switch between the request path and the server
//! loop that owns the client connection.

use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Where the request path puts the upstream side of an accepted protocol switch, for the
/// connection loop to tunnel once the 101 has been written. (Request extensions must be
/// `Clone`, hence the shared slot.)
#[derive(Clone)]
pub struct UpgradeSlot(pub Arc<Mutex<Option<oneshot::Sender<hyper::upgrade::OnUpgrade>>>>);

impl UpgradeSlot {
    pub fn take(&self) -> Option<oneshot::Sender<hyper::upgrade::OnUpgrade>> {
        self.0.lock().ok()?.take()
    }
}
