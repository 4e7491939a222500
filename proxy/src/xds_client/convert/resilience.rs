//! A cluster resource's resilience settings and localities, into the blocks a static
//! bootstrap would write (`membrane_api::resilience_wire` does the fields).

use super::{ResourceError, field};
use crate::config::{
    CircuitBreakerConfig, ClusterConfig, HealthCheckConfig, LocalityEndpoints, Located,
    OutlierConfig, RetryConfig,
};
use membrane_api::proto::membrane::v1 as pb;
use membrane_api::resilience::FieldError;

fn wire(e: FieldError) -> ResourceError {
    field(e.field, e.reason)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Fills `out` from `c`: what is absent stays off, as in a bootstrap that does not write it.
pub(super) fn apply(c: &pb::Cluster, out: &mut ClusterConfig) -> Result<(), ResourceError> {
    if let Some(r) = &c.retries {
        out.retries = Some(RetryConfig::try_from(r).map_err(wire)?);
    }
    if let Some(o) = &c.outlier_detection {
        out.outlier_detection = Some(OutlierConfig::from(o));
    }
    if let Some(b) = &c.circuit_breakers {
        out.circuit_breakers = Some(CircuitBreakerConfig::try_from(b).map_err(wire)?);
    }
    if let Some(h) = &c.health_check {
        out.health_check = Some(HealthCheckConfig::try_from(h).map_err(wire)?);
    }
    out.localities = c
        .localities
        .iter()
        .map(|l| LocalityEndpoints {
            region: non_empty(&l.region),
            zone: non_empty(&l.zone),
            endpoints: l.endpoints.iter().cloned().map(Located::from).collect(),
        })
        .collect();
    if let Some(p) = c.failover_healthy_percent {
        out.failover_healthy_percent = p;
    }
    Ok(())
}
