//! A cluster's resilience settings on the wire: from the blocks a cell spec writes (the
//! control server) to the xDS messages, and back to the same blocks (the gateway), so that
//! an xDS gateway compiles exactly what a static bootstrap with those blocks would. A field
//! left unset on the wire takes the default a bootstrap would give it.

use crate::duration::Dur;
use crate::proto::membrane::v1 as pb;
use crate::resilience::{
    CircuitBreakerConfig, FieldError, HealthCheckConfig, OutlierConfig, RetryConfig, RetryOn,
    SuccessRateConfig,
};
use std::time::Duration;

fn ms(d: Dur) -> u64 {
    u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX)
}

fn dur(ms: u64) -> Dur {
    Dur(Duration::from_millis(ms))
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn size(field: &str, n: u64) -> Result<usize, FieldError> {
    usize::try_from(n).map_err(|_| FieldError {
        field: field.into(),
        reason: format!("{n} is too large"),
    })
}

impl From<&RetryConfig> for pb::RetryPolicy {
    fn from(c: &RetryConfig) -> Self {
        pb::RetryPolicy {
            max_retries: Some(c.max_retries),
            retry_on: c.retry_on.iter().map(ToString::to_string).collect(),
            non_idempotent: c.non_idempotent,
            per_try_timeout_ms: c.per_try_timeout.map(ms),
            backoff_base_ms: Some(ms(c.backoff_base)),
            backoff_max_ms: Some(ms(c.backoff_max)),
            body_limit: Some(count(c.body_limit)),
            budget_ratio: Some(c.budget.ratio),
            budget_min_per_second: Some(c.budget.min_per_second),
        }
    }
}

impl TryFrom<&pb::RetryPolicy> for RetryConfig {
    type Error = FieldError;

    fn try_from(p: &pb::RetryPolicy) -> Result<Self, FieldError> {
        let mut c = RetryConfig::default();
        if let Some(n) = p.max_retries {
            c.max_retries = n;
        }
        if !p.retry_on.is_empty() {
            c.retry_on = p
                .retry_on
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    RetryOn::parse(t).ok_or_else(|| FieldError {
                        field: format!("retries.retry_on[{i}]"),
                        reason: format!(
                            "`{t}` is not connect_failure, reset, per_try_timeout or a status"
                        ),
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        c.non_idempotent = p.non_idempotent;
        c.per_try_timeout = p.per_try_timeout_ms.map(dur);
        if let Some(v) = p.backoff_base_ms {
            c.backoff_base = dur(v);
        }
        if let Some(v) = p.backoff_max_ms {
            c.backoff_max = dur(v);
        }
        if let Some(v) = p.body_limit {
            c.body_limit = size("retries.body_limit", v)?;
        }
        if let Some(v) = p.budget_ratio {
            c.budget.ratio = v;
        }
        if let Some(v) = p.budget_min_per_second {
            c.budget.min_per_second = v;
        }
        Ok(c)
    }
}

impl From<&OutlierConfig> for pb::OutlierDetection {
    fn from(c: &OutlierConfig) -> Self {
        pb::OutlierDetection {
            consecutive_5xx: Some(c.consecutive_5xx),
            consecutive_gateway_errors: Some(c.consecutive_gateway_errors),
            base_ejection_time_ms: Some(ms(c.base_ejection_time)),
            max_ejection_time_ms: Some(ms(c.max_ejection_time)),
            max_ejected_percent: Some(c.max_ejected_percent),
            success_rate: c.success_rate.as_ref().map(|r| pb::SuccessRate {
                minimum_hosts: Some(r.minimum_hosts),
                request_volume: Some(r.request_volume),
                stdev_factor: Some(r.stdev_factor),
                interval_ms: Some(ms(r.interval)),
            }),
        }
    }
}

impl From<&pb::OutlierDetection> for OutlierConfig {
    fn from(p: &pb::OutlierDetection) -> Self {
        let d = OutlierConfig::default();
        OutlierConfig {
            consecutive_5xx: p.consecutive_5xx.unwrap_or(d.consecutive_5xx),
            consecutive_gateway_errors: p
                .consecutive_gateway_errors
                .unwrap_or(d.consecutive_gateway_errors),
            base_ejection_time: p.base_ejection_time_ms.map_or(d.base_ejection_time, dur),
            max_ejection_time: p.max_ejection_time_ms.map_or(d.max_ejection_time, dur),
            max_ejected_percent: p.max_ejected_percent.unwrap_or(d.max_ejected_percent),
            success_rate: p.success_rate.as_ref().map(|r| {
                let d = SuccessRateConfig::default();
                SuccessRateConfig {
                    minimum_hosts: r.minimum_hosts.unwrap_or(d.minimum_hosts),
                    request_volume: r.request_volume.unwrap_or(d.request_volume),
                    stdev_factor: r.stdev_factor.unwrap_or(d.stdev_factor),
                    interval: r.interval_ms.map_or(d.interval, dur),
                }
            }),
        }
    }
}

impl From<&CircuitBreakerConfig> for pb::CircuitBreakers {
    fn from(c: &CircuitBreakerConfig) -> Self {
        pb::CircuitBreakers {
            max_requests: c.max_requests.map(count),
            max_pending: c.max_pending.map(count),
            max_retries: c.max_retries.map(count),
        }
    }
}

impl TryFrom<&pb::CircuitBreakers> for CircuitBreakerConfig {
    type Error = FieldError;

    fn try_from(p: &pb::CircuitBreakers) -> Result<Self, FieldError> {
        let opt = |field: &str, v: Option<u64>| v.map(|n| size(field, n)).transpose();
        Ok(CircuitBreakerConfig {
            max_requests: opt("circuit_breakers.max_requests", p.max_requests)?,
            max_pending: opt("circuit_breakers.max_pending", p.max_pending)?,
            max_retries: opt("circuit_breakers.max_retries", p.max_retries)?,
        })
    }
}

impl From<&HealthCheckConfig> for pb::HealthCheck {
    fn from(c: &HealthCheckConfig) -> Self {
        pb::HealthCheck {
            http_path: c.http_path.clone().unwrap_or_default(),
            expected_statuses: c.expected_statuses.iter().map(|&s| u32::from(s)).collect(),
            interval_ms: Some(ms(c.interval)),
            jitter_percent: Some(c.jitter_percent),
            timeout_ms: Some(ms(c.timeout)),
            healthy_threshold: Some(c.healthy_threshold),
            unhealthy_threshold: Some(c.unhealthy_threshold),
        }
    }
}

impl TryFrom<&pb::HealthCheck> for HealthCheckConfig {
    type Error = FieldError;

    fn try_from(p: &pb::HealthCheck) -> Result<Self, FieldError> {
        let d = HealthCheckConfig::default();
        let expected_statuses = p
            .expected_statuses
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                u16::try_from(s).map_err(|_| FieldError {
                    field: format!("health_check.expected_statuses[{i}]"),
                    reason: format!("{s} is not an HTTP status"),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(HealthCheckConfig {
            http_path: (!p.http_path.is_empty()).then(|| p.http_path.clone()),
            expected_statuses,
            interval: p.interval_ms.map_or(d.interval, dur),
            jitter_percent: p.jitter_percent.unwrap_or(d.jitter_percent),
            timeout: p.timeout_ms.map_or(d.timeout, dur),
            healthy_threshold: p.healthy_threshold.unwrap_or(d.healthy_threshold),
            unhealthy_threshold: p.unhealthy_threshold.unwrap_or(d.unhealthy_threshold),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::RetryKind;

    #[test]
    fn blocks_survive_the_wire() {
        let mut r = RetryConfig {
            max_retries: 4,
            retry_on: vec![
                RetryOn::Kind(RetryKind::PerTryTimeout),
                RetryOn::Status(500),
            ],
            non_idempotent: true,
            per_try_timeout: Some(Dur(Duration::from_millis(150))),
            ..RetryConfig::default()
        };
        r.budget.ratio = 0.5;
        let back = RetryConfig::try_from(&pb::RetryPolicy::from(&r)).unwrap();
        assert_eq!(back.max_retries, 4);
        assert_eq!(back.retry_on, r.retry_on);
        assert!(back.non_idempotent);
        assert_eq!(back.per_try_timeout, r.per_try_timeout);
        assert_eq!(back.budget.ratio, 0.5);

        let h = HealthCheckConfig {
            http_path: Some("/healthz".into()),
            expected_statuses: vec![204],
            ..HealthCheckConfig::default()
        };
        let back = HealthCheckConfig::try_from(&pb::HealthCheck::from(&h)).unwrap();
        assert_eq!(back.http_path.as_deref(), Some("/healthz"));
        assert_eq!(back.expected_statuses, vec![204]);
        assert_eq!(back.interval, h.interval);

        let o = OutlierConfig {
            success_rate: Some(SuccessRateConfig {
                minimum_hosts: 3,
                ..SuccessRateConfig::default()
            }),
            ..OutlierConfig::default()
        };
        let back = OutlierConfig::from(&pb::OutlierDetection::from(&o));
        let sr = back.success_rate.unwrap();
        assert_eq!((sr.minimum_hosts, sr.request_volume), (3, 100));
        assert_eq!(sr.interval, Dur(Duration::from_secs(10)));
        assert!(
            OutlierConfig::from(&pb::OutlierDetection::default())
                .success_rate
                .is_none()
        );

        let b = CircuitBreakerConfig {
            max_requests: Some(7),
            max_pending: None,
            max_retries: Some(2),
        };
        let back = CircuitBreakerConfig::try_from(&pb::CircuitBreakers::from(&b)).unwrap();
        assert_eq!(
            (back.max_requests, back.max_pending, back.max_retries),
            (Some(7), None, Some(2))
        );
    }

    #[test]
    fn unset_fields_take_the_bootstrap_defaults_and_bad_ones_name_their_field() {
        let r = RetryConfig::try_from(&pb::RetryPolicy::default()).unwrap();
        assert_eq!(r.max_retries, RetryConfig::default().max_retries);
        assert_eq!(r.retry_on, RetryConfig::default().retry_on);
        let o = OutlierConfig::from(&pb::OutlierDetection::default());
        assert_eq!(o.consecutive_5xx, 5);
        assert_eq!(o.max_ejected_percent, 50);

        let bad = pb::RetryPolicy {
            retry_on: vec!["reset".into(), "sometimes".into()],
            ..Default::default()
        };
        let e = RetryConfig::try_from(&bad).unwrap_err();
        assert_eq!(e.field, "retries.retry_on[1]");
        let bad = pb::HealthCheck {
            expected_statuses: vec![70000],
            ..Default::default()
        };
        let e = HealthCheckConfig::try_from(&bad).unwrap_err();
        assert_eq!(e.field, "health_check.expected_statuses[0]");
    }
}
