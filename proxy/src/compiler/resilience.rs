//! Compiling a cluster's resilience settings: retries, outlier detection, circuit breakers
//! and health checks. Mistakes are reported at the cluster's name with the field's path.

use super::Compiler;
use crate::config::{ClusterConfig, ConfigError, RetryOn};
use crate::upstream::breaker::Breakers;
use crate::upstream::health::ConsecutiveLimits;
use crate::upstream::health_check::CheckSpec;
use crate::upstream::retry::RetryPolicy;
use crate::upstream::{Outlier, Resilience};

impl Compiler<'_> {
    /// `None` when the cluster configures none of retries, outlier detection and breakers.
    pub(super) fn resilience(
        &self,
        i: usize,
        cl: &ClusterConfig,
    ) -> Result<Option<Box<Resilience>>, ConfigError> {
        let bad = |field: String, why: &str| self.err(&cl.name, field, why.to_owned());
        let retry = match &cl.retries {
            Some(r) => {
                for (k, on) in r.retry_on.iter().enumerate() {
                    if let RetryOn::Status(s) = on
                        && !(500..=599).contains(s)
                    {
                        return Err(bad(
                            format!("clusters[{i}].retries.retry_on[{k}]"),
                            "a retried status must be a 5xx (a 4xx is the request's own fault and will not change)",
                        ));
                    }
                }
                if !r.budget.ratio.is_finite() || r.budget.ratio < 0.0 {
                    return Err(bad(
                        format!("clusters[{i}].retries.budget.ratio"),
                        "must be a number of at least 0 (0.2 is 20% of requests)",
                    ));
                }
                if r.backoff_base.0.is_zero() || r.backoff_max.0 < r.backoff_base.0 {
                    return Err(bad(
                        format!("clusters[{i}].retries.backoff_max"),
                        "backoff_base must be above zero and backoff_max at least backoff_base",
                    ));
                }
                if r.per_try_timeout.is_some_and(|t| t.0.is_zero()) {
                    return Err(bad(
                        format!("clusters[{i}].retries.per_try_timeout"),
                        "must be above zero",
                    ));
                }
                Some(RetryPolicy::new(r))
            }
            None => None,
        };
        let outlier = match &cl.outlier_detection {
            Some(o) => {
                if o.max_ejected_percent > 100 {
                    return Err(bad(
                        format!("clusters[{i}].outlier_detection.max_ejected_percent"),
                        "must be between 0 and 100",
                    ));
                }
                if o.base_ejection_time.0.is_zero() {
                    return Err(bad(
                        format!("clusters[{i}].outlier_detection.base_ejection_time"),
                        "must be above zero",
                    ));
                }
                Some(Outlier {
                    limits: ConsecutiveLimits {
                        consecutive_5xx: o.consecutive_5xx,
                        consecutive_gateway: o.consecutive_gateway_errors,
                        base_ejection: o.base_ejection_time.0,
                    },
                    max_ejection: o.max_ejection_time.0.max(o.base_ejection_time.0),
                    max_ejected_percent: o.max_ejected_percent,
                })
            }
            None => None,
        };
        if let Some(b) = &cl.circuit_breakers {
            for (name, v) in [
                ("max_requests", b.max_requests),
                ("max_pending", b.max_pending),
                ("max_retries", b.max_retries),
            ] {
                if v == Some(0) {
                    return Err(bad(
                        format!("clusters[{i}].circuit_breakers.{name}"),
                        "must be at least 1 (leave it out for no limit)",
                    ));
                }
            }
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
        let bad = |field: &str, why: &str| {
            self.err(
                &cl.name,
                format!("clusters[{i}].health_check.{field}"),
                why.to_owned(),
            )
        };
        if h.interval.0.is_zero() {
            return Err(bad("interval", "must be above zero"));
        }
        if h.timeout.0.is_zero() {
            return Err(bad("timeout", "must be above zero"));
        }
        if let Some(path) = &h.http_path {
            if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(bad(
                    "http_path",
                    "must be an origin-form path: starting with `/`, without spaces or control characters",
                ));
            }
            if cl.tls.is_some() {
                return Err(bad(
                    "http_path",
                    "HTTP checks over TLS are not built yet; leave http_path out for a TCP connect check",
                ));
            }
        }
        if let Some(s) = h
            .expected_statuses
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            return Err(bad(
                "expected_statuses",
                &format!("{s} is not an HTTP status"),
            ));
        }
        Ok(Some(CheckSpec::new(h, cl.name.value())))
    }
}
