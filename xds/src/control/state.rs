//! What the control server's admin endpoint and tests read: the node table, the resources
//! now published, the last refused change, and when the resources last changed.

use crate::compile::Compiled;
use crate::server::status::NodeTable;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// What the admin endpoint and tests read.
pub struct ControlState {
    pub nodes: Arc<NodeTable>,
    pub current: watch::Receiver<Arc<Compiled>>,
    /// The last refused change, with its errors (cleared by a good one).
    pub last_error: Mutex<Option<String>>,
    /// When the resources last changed, for the time to the last ACK.
    pub changed_at: Mutex<Instant>,
    pub generation: Mutex<u64>,
    /// ADS streams and control-channel handshakes refused, by reason.
    pub refused_streams: Arc<crate::reasons::ByReason>,
    /// The certificate service's counters, when the control server is a CA.
    pub ca: Mutex<Option<Arc<crate::ca::CaCounters>>>,
    /// The CA signing now, for its roll-over's step.
    pub ca_now: Option<Arc<crate::ca::CurrentCa>>,
}
