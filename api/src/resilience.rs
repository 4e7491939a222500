//! A cluster's resilience settings: retries with a budget, passive outlier detection,
//! circuit breakers and active health checks. Each is off until its block is written; the
//! defaults inside a block are the safe ones (Envoy's and linkerd's where they agree).

use crate::duration::Dur;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a failed attempt may be retried on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RetryOn {
    Kind(RetryKind),
    /// A response status (`502`, `503`, `504`...).
    Status(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryKind {
    /// No connection could be made (refused, timed out, TLS failed): nothing was sent, so
    /// every method may be retried.
    ConnectFailure,
    /// The connection was reset or closed before a response began.
    Reset,
    /// The attempt passed its `per_try_timeout`.
    PerTryTimeout,
}

/// Retries of failed attempts, each on another endpoint when the cluster has one.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts after the first.
    #[serde(default = "two")]
    pub max_retries: u32,
    #[serde(default = "retry_on")]
    pub retry_on: Vec<RetryOn>,
    /// Retry on statuses, resets and per-try timeouts for methods that are not idempotent
    /// (POST, PATCH) too. Off: the upstream may have acted on the request.
    #[serde(default)]
    pub non_idempotent: bool,
    /// Bounds each attempt; the route's timeout still bounds them all.
    #[serde(default)]
    pub per_try_timeout: Option<Dur>,
    /// Full-jitter exponential backoff: a random wait up to `base × 2^(retry-1)`, never over
    /// `max`.
    #[serde(default = "backoff_base")]
    pub backoff_base: Dur,
    #[serde(default = "backoff_max")]
    pub backoff_max: Dur,
    /// Request bodies up to this many bytes (with a `content-length`) are kept to be sent
    /// again; a larger body, or one of unknown length, is sent once and not retried.
    #[serde(default = "body_limit")]
    pub body_limit: usize,
    #[serde(default)]
    pub budget: RetryBudgetConfig,
}

/// How many retries a cluster may have: `ratio` of its requests over the last ten seconds,
/// plus `min_per_second` (linkerd's retry budget), so that a failing cluster never gets a
/// retry storm.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    #[serde(default = "ratio")]
    pub ratio: f64,
    #[serde(default = "min_per_second")]
    pub min_per_second: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: ratio(),
            min_per_second: min_per_second(),
        }
    }
}

/// Passive outlier detection: endpoints that keep failing are taken out of the rotation
/// for a while, longer each time, and come back by themselves.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Responses with a 5xx status in a row; 0 turns the rule off.
    #[serde(default = "five")]
    pub consecutive_5xx: u32,
    /// Gateway errors in a row: connection failures, resets, timeouts, 502, 503 and 504.
    #[serde(default = "five")]
    pub consecutive_gateway_errors: u32,
    /// The first ejection's length; the n-th lasts n times as long, up to
    /// `max_ejection_time`.
    #[serde(default = "base_ejection")]
    pub base_ejection_time: Dur,
    #[serde(default = "max_ejection")]
    pub max_ejection_time: Dur,
    /// The most of a cluster's endpoints that may be out at once, in percent (one may
    /// always be).
    #[serde(default = "fifty")]
    pub max_ejected_percent: u32,
    /// Envoy's success-rate rule (off unless written): every `interval`, endpoints with
    /// at least `request_volume` attempts in it are compared, and once `minimum_hosts`
    /// qualify, one whose success rate is below the mean by more than `stdev_factor`
    /// standard deviations is ejected.
    #[serde(default)]
    pub success_rate: Option<SuccessRateConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessRateConfig {
    #[serde(default = "five")]
    pub minimum_hosts: u32,
    #[serde(default = "hundred")]
    pub request_volume: u32,
    #[serde(default = "stdev_factor")]
    pub stdev_factor: f64,
    #[serde(default = "ten_seconds")]
    pub interval: Dur,
}

impl Default for SuccessRateConfig {
    fn default() -> Self {
        Self {
            minimum_hosts: five(),
            request_volume: hundred(),
            stdev_factor: stdev_factor(),
            interval: ten_seconds(),
        }
    }
}

fn hundred() -> u32 {
    100
}
fn stdev_factor() -> f64 {
    1.9
}

/// Limits on what a cluster holds at once; past one, a request is answered 503
/// `upstream_overflow` at once. Unset limits do not apply.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Requests in flight to the cluster (from choosing an endpoint to the response head).
    #[serde(default)]
    pub max_requests: Option<usize>,
    /// Requests waiting for a new connection to open.
    #[serde(default)]
    pub max_pending: Option<usize>,
    /// Retries in flight.
    #[serde(default)]
    pub max_retries: Option<usize>,
}

/// Active health checks: one prober per endpoint for the whole gateway.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// An HTTP/1.1 `GET` of this path; without it, a TCP connect is the check.
    #[serde(default)]
    pub http_path: Option<String>,
    /// Statuses that pass an HTTP check; default any 2xx.
    #[serde(default)]
    pub expected_statuses: Vec<u16>,
    #[serde(default = "ten_seconds")]
    pub interval: Dur,
    /// Each wait is `interval` plus up to this share of it at random, so that the probes
    /// of many gateways do not arrive together.
    #[serde(default = "jitter")]
    pub jitter_percent: u32,
    #[serde(default = "one_second")]
    pub timeout: Dur,
    /// Passed checks in a row that bring a down endpoint back.
    #[serde(default = "two")]
    pub healthy_threshold: u32,
    /// Failed checks in a row that take an endpoint out.
    #[serde(default = "three")]
    pub unhealthy_threshold: u32,
}

fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}
fn five() -> u32 {
    5
}
fn fifty() -> u32 {
    50
}
fn jitter() -> u32 {
    10
}
fn ratio() -> f64 {
    0.2
}
fn min_per_second() -> u32 {
    10
}
fn body_limit() -> usize {
    64 * 1024
}
fn retry_on() -> Vec<RetryOn> {
    vec![
        RetryOn::Kind(RetryKind::ConnectFailure),
        RetryOn::Kind(RetryKind::Reset),
        RetryOn::Status(502),
        RetryOn::Status(503),
        RetryOn::Status(504),
    ]
}
fn backoff_base() -> Dur {
    Dur(Duration::from_millis(25))
}
fn backoff_max() -> Dur {
    Dur(Duration::from_millis(250))
}
fn base_ejection() -> Dur {
    Dur(Duration::from_secs(30))
}
fn max_ejection() -> Dur {
    Dur(Duration::from_secs(300))
}
fn ten_seconds() -> Dur {
    Dur(Duration::from_secs(10))
}
fn one_second() -> Dur {
    Dur(Duration::from_secs(1))
}

// Defaults as serde fills them in, for a block built field by field (from xDS).
impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: two(),
            retry_on: retry_on(),
            non_idempotent: false,
            per_try_timeout: None,
            backoff_base: backoff_base(),
            backoff_max: backoff_max(),
            body_limit: body_limit(),
            budget: RetryBudgetConfig::default(),
        }
    }
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_5xx: five(),
            consecutive_gateway_errors: five(),
            base_ejection_time: base_ejection(),
            max_ejection_time: max_ejection(),
            max_ejected_percent: fifty(),
            success_rate: None,
        }
    }
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            http_path: None,
            expected_statuses: Vec::new(),
            interval: ten_seconds(),
            jitter_percent: jitter(),
            timeout: one_second(),
            healthy_threshold: two(),
            unhealthy_threshold: three(),
        }
    }
}

impl RetryOn {
    /// As written in config and on the wire: `connect_failure`, `reset`, `per_try_timeout`,
    /// or a status.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "connect_failure" => RetryOn::Kind(RetryKind::ConnectFailure),
            "reset" => RetryOn::Kind(RetryKind::Reset),
            "per_try_timeout" => RetryOn::Kind(RetryKind::PerTryTimeout),
            n => RetryOn::Status(n.parse().ok()?),
        })
    }
}

impl std::fmt::Display for RetryOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryOn::Kind(RetryKind::ConnectFailure) => f.write_str("connect_failure"),
            RetryOn::Kind(RetryKind::Reset) => f.write_str("reset"),
            RetryOn::Kind(RetryKind::PerTryTimeout) => f.write_str("per_try_timeout"),
            RetryOn::Status(s) => write!(f, "{s}"),
        }
    }
}

/// A mistake in a resilience block: the field, from the block's name on
/// (`retries.retry_on[1]`), and why. The gateway's compiler and the control server's spec
/// check both report these, so a spec is refused for what a gateway would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

fn mistake(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

impl RetryConfig {
    pub fn check(&self) -> Result<(), FieldError> {
        for (k, on) in self.retry_on.iter().enumerate() {
            if let RetryOn::Status(s) = on
                && !(500..=599).contains(s)
            {
                return Err(mistake(
                    format!("retries.retry_on[{k}]"),
                    "a retried status must be a 5xx (a 4xx is the request's own fault and will not change)",
                ));
            }
        }
        if !self.budget.ratio.is_finite() || self.budget.ratio < 0.0 {
            return Err(mistake(
                "retries.budget.ratio",
                "must be a number of at least 0 (0.2 is 20% of requests)",
            ));
        }
        if self.backoff_base.0.is_zero() || self.backoff_max.0 < self.backoff_base.0 {
            return Err(mistake(
                "retries.backoff_max",
                "backoff_base must be above zero and backoff_max at least backoff_base",
            ));
        }
        if self.per_try_timeout.is_some_and(|t| t.0.is_zero()) {
            return Err(mistake("retries.per_try_timeout", "must be above zero"));
        }
        Ok(())
    }
}

impl OutlierConfig {
    pub fn check(&self) -> Result<(), FieldError> {
        if self.max_ejected_percent > 100 {
            return Err(mistake(
                "outlier_detection.max_ejected_percent",
                "must be between 0 and 100",
            ));
        }
        if self.base_ejection_time.0.is_zero() {
            return Err(mistake(
                "outlier_detection.base_ejection_time",
                "must be above zero",
            ));
        }
        if let Some(sr) = &self.success_rate {
            if sr.interval.0.is_zero() {
                return Err(mistake(
                    "outlier_detection.success_rate.interval",
                    "must be above zero",
                ));
            }
            if !sr.stdev_factor.is_finite() || sr.stdev_factor < 0.0 {
                return Err(mistake(
                    "outlier_detection.success_rate.stdev_factor",
                    "must be a number of at least 0 (1.9 is Envoy's)",
                ));
            }
            if sr.minimum_hosts < 2 || sr.request_volume == 0 {
                return Err(mistake(
                    "outlier_detection.success_rate.minimum_hosts",
                    "a rate is compared with others: minimum_hosts at least 2, request_volume at least 1",
                ));
            }
        }
        Ok(())
    }
}

impl CircuitBreakerConfig {
    pub fn check(&self) -> Result<(), FieldError> {
        for (name, v) in [
            ("max_requests", self.max_requests),
            ("max_pending", self.max_pending),
            ("max_retries", self.max_retries),
        ] {
            if v == Some(0) {
                return Err(mistake(
                    format!("circuit_breakers.{name}"),
                    "must be at least 1 (leave it out for no limit)",
                ));
            }
        }
        Ok(())
    }
}

impl HealthCheckConfig {
    /// What holds whatever the upstream speaks (the gateway adds what TLS allows).
    pub fn check(&self) -> Result<(), FieldError> {
        if self.interval.0.is_zero() {
            return Err(mistake("health_check.interval", "must be above zero"));
        }
        if self.timeout.0.is_zero() {
            return Err(mistake("health_check.timeout", "must be above zero"));
        }
        if let Some(path) = &self.http_path
            && (!path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f))
        {
            return Err(mistake(
                "health_check.http_path",
                "must be an origin-form path: starting with `/`, without spaces or control characters",
            ));
        }
        if let Some(s) = self
            .expected_statuses
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            return Err(mistake(
                "health_check.expected_statuses",
                format!("{s} is not an HTTP status"),
            ));
        }
        Ok(())
    }
}
