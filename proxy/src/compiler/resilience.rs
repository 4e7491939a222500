//! Compiling a cluster's resilience settings: retries, outlier detection, circuit breakers
//! and health checks. Mistakes are reported at the cluster's name with the field's path.

use super::Compiler;
use crate::config::{ClusterConfig, ConfigError};
use crate::upstream::breaker::Breakers;
use crate::upstream::health::ConsecutiveLimits;
use crate::upstream::health_check::CheckSpec;
use crate::upstream::retry::RetryPolicy;
use crate::upstream::{Outlier, Resilience, SuccessRate};
use membrane_api::resilience::FieldError;

impl Compiler<'_> {
    /// `None` when the cluster configures none of retries, outlier detection and breakers.
    pub(super) fn resilience(
        &self,
        i: usize,
        cl: &ClusterConfig,
    ) -> Result<Option<Box<Resilience>>, ConfigError> {
        let bad =
            |e: FieldError| self.err(&cl.name, format!("clusters[{i}].{}", e.field), e.reason);
        let retry = match &cl.retries {
            Some(r) => {
                r.check().map_err(bad)?;
                Some(RetryPolicy::new(r))
            }
            None => None,
        };
        let outlier = match &cl.outlier_detection {
            Some(o) => {
                o.check().map_err(bad)?;
                Some(Outlier {
                    limits: ConsecutiveLimits {
                        consecutive_5xx: o.consecutive_5xx,
                        consecutive_gateway: o.consecutive_gateway_errors,
                        base_ejection: o.base_ejection_time.0,
                    },
                    max_ejection: o.max_ejection_time.0.max(o.base_ejection_time.0),
                    max_ejected_percent: o.max_ejected_percent,
                    success_rate: o.success_rate.as_ref().map(|r| SuccessRate {
                        minimum_hosts: r.minimum_hosts as usize,
                        request_volume: r.request_volume,
                        stdev_factor: r.stdev_factor,
                        interval_ms: u64::try_from(r.interval.0.as_millis()).unwrap_or(u64::MAX),
                    }),
                })
            }
            None => None,
        };
        if let Some(b) = &cl.circuit_breakers {
            b.check().map_err(bad)?;
        }
        if retry.is_none() && outlier.is_none() && cl.circuit_breakers.is_none() {
            return Ok(None);
        }
        Ok(Some(Box::new(Resilience {
            retry,
            outlier,
            breakers: Breakers::new(cl.circuit_breakers.as_ref()),
        })))
    }

    pub(super) fn health_check(
        &self,
        i: usize,
        cl: &ClusterConfig,
    ) -> Result<Option<CheckSpec>, ConfigError> {
        let Some(h) = &cl.health_check else {
            return Ok(None);
        };
        h.check()
            .map_err(|e| self.err(&cl.name, format!("clusters[{i}].{}", e.field), e.reason))?;
        if h.http_path.is_some() && cl.tls.is_some() {
            return Err(self.err(
                &cl.name,
                format!("clusters[{i}].health_check.http_path"),
                "HTTP checks over TLS are not built yet; leave http_path out for a TCP connect check"
                    .to_owned(),
            ));
        }
        Ok(Some(CheckSpec::new(h, cl.name.value())))
    }
}
