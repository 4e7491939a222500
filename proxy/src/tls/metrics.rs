//! TLS metrics, registered by this subsystem: handshakes on listeners by outcome, failures by
//! reason, connections by verified peer cell, certificate expiry, renewals of the gateway's
//! issued certificate.

use super::failure::Reason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// A handshake's outcome.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Handshake {
    Full,
    Resumed,
    Failed,
}

impl Handshake {
    pub fn as_str(self) -> &'static str {
        match self {
            Handshake::Full => "full",
            Handshake::Resumed => "resumed",
            Handshake::Failed => "failed",
        }
    }
}
crate::label_value!(Handshake);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    listener: String,
    outcome: Handshake,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    listener: String,
    reason: Reason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerCellLabels {
    listener: String,
    peer_cell: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    /// `listener/<name>`, `listener/<name>/trust_bundle`, `cluster/<name>/client` or
    /// `cluster/<name>/trust_bundle`.
    owner: String,
    /// The certificate's SPIFFE ID, first DNS name or subject.
    certificate: String,
}

/// One loaded certificate, for the expiry gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExpiry {
    pub owner: String,
    pub certificate: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

/// The families; cheap to clone.
#[derive(Debug, Clone)]
pub struct TlsFamilies {
    handshakes: Family<HandshakeLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    peer_cells: Family<PeerCellLabels, Counter>,
    cert_expiry: Family<CertLabels, Gauge>,
    svid_renewals: Family<RenewalLabels, Counter>,
    svid_not_after: Gauge,
}

/// A renewal's outcome.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Renewal {
    Ok,
    Failed,
}

impl Renewal {
    pub fn as_str(self) -> &'static str {
        match self {
            Renewal::Ok => "ok",
            Renewal::Failed => "failed",
        }
    }
}
crate::label_value!(Renewal);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenewalLabels {
    outcome: Renewal,
}

impl TlsFamilies {
    pub fn register(registry: &mut Registry) -> Self {
        let f = Self {
            handshakes: Family::default(),
            failures: Family::default(),
            peer_cells: Family::default(),
            cert_expiry: Family::default(),
            svid_renewals: Family::default(),
            svid_not_after: Gauge::default(),
        };
        for outcome in [Renewal::Ok, Renewal::Failed] {
            let _ = f.svid_renewals.get_or_create(&RenewalLabels { outcome });
        }
        registry.register(
            "svid_renewals",
            "Renewals of the gateway's issued certificate, by outcome",
            f.svid_renewals.clone(),
        );
        registry.register(
            "svid_expiry_timestamp_seconds",
            "When the gateway's issued certificate expires, seconds since the Unix epoch (0: none issued)",
            f.svid_not_after.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes on listeners, by listener and outcome (full, resumed, failed)",
            f.handshakes.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Failed TLS handshakes on listeners, by listener and reason",
            f.failures.clone(),
        );
        registry.register(
            "tls_peer_connections",
            "Connections with a verified client certificate, by listener and the peer's cell \
             (from its SPIFFE ID; `none` without a cell; `other` past 64 cells per listener)",
            f.peer_cells.clone(),
        );
        registry.register(
            "tls_certificate_expiry_seconds",
            "Seconds until each loaded certificate expires (negative: expired)",
            f.cert_expiry.clone(),
        );
        f
    }

    /// Handshake counters for a TLS listener, every reason made up front so that each
    /// series exists from the start (a rate over a series that appears late misses its
    /// first increment).
    pub fn listener(&self, listener: &str) -> TlsListenerMetrics {
        let outcome = |outcome| {
            self.handshakes
                .get_or_create(&HandshakeLabels {
                    listener: listener.to_owned(),
                    outcome,
                })
                .clone()
        };
        TlsListenerMetrics {
            full: outcome(Handshake::Full),
            resumed: outcome(Handshake::Resumed),
            failed: outcome(Handshake::Failed),
            reasons: Reason::ALL.map(|reason| {
                self.failures
                    .get_or_create(&FailureLabels {
                        listener: listener.to_owned(),
                        reason,
                    })
                    .clone()
            }),
            peers: Arc::new(PeerCells {
                listener: listener.to_owned(),
                family: self.peer_cells.clone(),
                seen: std::sync::Mutex::new(rustc_hash::FxHashSet::default()),
            }),
        }
    }

    /// Counts a renewal of the gateway's own certificate.
    pub fn svid_renewed(&self, outcome: Renewal) {
        self.svid_renewals
            .get_or_create(&RenewalLabels { outcome })
            .inc();
    }

    /// The expiry of the gateway's own certificate now in use.
    pub fn set_svid_not_after(&self, unix: i64) {
        self.svid_not_after.set(unix);
    }

    /// Sets the expiry gauges to the certificates of the generation now serving, forgetting
    /// those of earlier ones. Called before each scrape.
    pub fn set_cert_expiry(&self, certs: &[CertExpiry], now: i64) {
        self.cert_expiry.clear();
        for c in certs {
            self.cert_expiry
                .get_or_create(&CertLabels {
                    owner: c.owner.clone(),
                    certificate: c.certificate.clone(),
                })
                .set(c.not_after - now);
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsListenerMetrics {
    pub full: Counter,
    pub resumed: Counter,
    pub failed: Counter,
    /// By `Reason as usize`.
    reasons: [Counter; Reason::ALL.len()],
    pub peers: Arc<PeerCells>,
}

impl TlsListenerMetrics {
    pub fn handshake_failed(&self, reason: Reason) {
        self.failed.inc();
        self.reasons[reason as usize].inc();
    }
}

/// Most distinct peer cells labelled per listener; later ones count as `other`. Cells come
/// from certificates a trusted CA signed, so the set is an organisation's cells, but a
/// bound keeps a misissuing CA from growing the label set without end.
const MAX_PEER_CELLS: usize = 64;

#[derive(Debug)]
pub struct PeerCells {
    listener: String,
    family: Family<PeerCellLabels, Counter>,
    seen: std::sync::Mutex<rustc_hash::FxHashSet<String>>,
}

impl PeerCells {
    /// Counts a connection from a verified peer of `cell` (`None`: no cell in its ID).
    pub fn count(&self, cell: Option<&str>) {
        let cell = cell.unwrap_or("none");
        let label = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.contains(cell) {
                cell
            } else if seen.len() < MAX_PEER_CELLS {
                seen.insert(cell.to_owned());
                cell
            } else {
                "other"
            }
        };
        self.family
            .get_or_create(&PeerCellLabels {
                listener: self.listener.clone(),
                peer_cell: label.to_owned(),
            })
            .inc();
    }
}
