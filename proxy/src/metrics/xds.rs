//! The xDS client's state on a gateway configured by a control server: whether its stream is
//! up, when it last ACKed, how many updates it refused. The generation it applied is
//! `membrane_config_generation`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Default)]
pub struct XdsFamilies {
    connected: Gauge,
    last_ack: Gauge,
    nacks: Counter,
}

impl XdsFamilies {
    pub fn register(registry: &mut Registry) -> Self {
        let f = Self::default();
        registry.register(
            "xds_connected",
            "1 while the gateway's xDS stream to the control server is up (0 without one: a static config, or the server away)",
            f.connected.clone(),
        );
        registry.register(
            "xds_last_ack_timestamp_seconds",
            "When the gateway last ACKed an xDS update, seconds since the Unix epoch (0: never)",
            f.last_ack.clone(),
        );
        registry.register(
            "xds_nacks",
            "xDS updates the gateway refused (NACKed), keeping its last good configuration",
            f.nacks.clone(),
        );
        f
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    pub fn acked(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_ack.set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    pub fn nacked(&self) {
        self.nacks.inc();
    }
}
