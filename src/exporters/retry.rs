//! `retry_on_failure`: exponential backoff with jitter, as the collector's exporter helper
//! (same option names and defaults). A server-given delay (gRPC `RetryInfo`, HTTP
//! `Retry-After`) replaces the computed one for that attempt.

use crate::config::{duration, FieldError};
use serde::Deserialize;
use std::time::Duration;

/// `retry_on_failure:` of an exporter.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retry retryable failures at all.
    pub enabled: bool,
    /// Wait before the first retry.
    #[serde(with = "duration")]
    pub initial_interval: Duration,
    /// Jitter: each wait is drawn from `interval * (1 ± randomization_factor)`.
    pub randomization_factor: f64,
    /// Growth of the interval after each retry.
    pub multiplier: f64,
    /// Upper bound of the interval.
    #[serde(with = "duration")]
    pub max_interval: Duration,
    /// Give up (drop, counted) once this much time has passed since the first attempt;
    /// 0 retries until shutdown.
    #[serde(with = "duration")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            randomization_factor: 0.5,
            multiplier: 1.5,
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

impl RetryConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            return Err(FieldError::new(
                "retry_on_failure.randomization_factor",
                "must be between 0 and 1",
            ));
        }
        if self.multiplier < 1.0 {
            return Err(FieldError::new(
                "retry_on_failure.multiplier",
                "must be at least 1",
            ));
        }
        if self.initial_interval.is_zero() && self.enabled {
            return Err(FieldError::new(
                "retry_on_failure.initial_interval",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// The waits between attempts of one export.
pub struct Backoff<'a> {
    config: &'a RetryConfig,
    interval: Duration,
}

impl<'a> Backoff<'a> {
    pub fn new(config: &'a RetryConfig) -> Self {
        Backoff {
            config,
            interval: config.initial_interval,
        }
    }

    /// The next wait: the server's delay if given, else the jittered interval, which then grows.
    pub fn next_delay(&mut self, server_delay: Option<Duration>) -> Duration {
        let jittered = jitter(
            self.interval,
            self.config.randomization_factor,
            fastrand::f64(),
        );
        self.interval = self
            .interval
            .mul_f64(self.config.multiplier)
            .min(self.config.max_interval);
        server_delay.unwrap_or(jittered)
    }
}

/// `interval * (1 - factor + 2 * factor * unit)` for `unit` in [0, 1).
fn jitter(interval: Duration, factor: f64, unit: f64) -> Duration {
    interval.mul_f64(1.0 - factor + 2.0 * factor * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_factor() {
        let base = Duration::from_secs(10);
        assert_eq!(jitter(base, 0.5, 0.0), Duration::from_secs(5));
        assert_eq!(jitter(base, 0.5, 0.5), Duration::from_secs(10));
        assert!(jitter(base, 0.5, 0.999_999) < Duration::from_secs(15));
    }

    #[test]
    fn interval_grows_to_the_maximum() {
        let config = RetryConfig {
            randomization_factor: 0.0,
            initial_interval: Duration::from_secs(1),
            multiplier: 2.0,
            max_interval: Duration::from_secs(5),
            ..Default::default()
        };
        let mut backoff = Backoff::new(&config);
        let waits: Vec<u64> = (0..5).map(|_| backoff.next_delay(None).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 5, 5]);
    }

    #[test]
    fn server_delay_wins() {
        let config = RetryConfig::default();
        let mut backoff = Backoff::new(&config);
        assert_eq!(
            backoff.next_delay(Some(Duration::from_millis(1234))),
            Duration::from_millis(1234)
        );
    }
}
