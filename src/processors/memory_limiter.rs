//! `memory_limiter`: refuses new data while the process uses too much memory, with the
//! collector's options (`check_interval`, `limit_mib`, `spike_limit_mib`,
//! `limit_percentage`, `spike_limit_percentage`).
//!
//! The collector's limiter measures the Go heap; sieve measures its own heap the same
//! way: the bytes allocated and not yet freed (jemalloc's `stats.allocated`, see
//! [`crate::memory::held_bytes`]). Not the resident set size: after a burst the allocator keeps freed
//! pages for a while, and a limiter reading RSS would keep refusing everyone long after
//! the data was gone. Above the soft limit (`limit - spike`) the limiter
//! closes its pipeline's admission [`Gate`]: receivers refuse new data with a retryable
//! error before accepting it, so nothing already accepted is dropped. It reopens when
//! usage falls below the soft limit. Because it acts at admission, its position in the
//! `processors` list does not matter; in the data path it passes batches through.
//!
//! A background thread samples memory every `check_interval` and stops when the
//! pipeline drops the limiter.

use super::Processor;
use crate::config::{duration, FieldError};
use crate::memory::{available_memory_bytes, held_bytes};
use crate::model::Batch;
use crate::queue::Gate;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// `processors: memory_limiter:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryLimiterConfig {
    /// How often memory is measured.
    #[serde(with = "duration")]
    pub check_interval: Duration,
    /// Hard limit in MiB of memory held (heap bytes allocated).
    pub limit_mib: u64,
    /// Headroom below the hard limit; data is refused above `limit_mib - spike_limit_mib`.
    /// Defaults to 20% of the limit.
    pub spike_limit_mib: u64,
    /// Hard limit as a percentage of the memory available (cgroup limit or total RAM);
    /// used when `limit_mib` is 0.
    pub limit_percentage: u64,
    /// Headroom as a percentage of available memory; used with `limit_percentage`.
    pub spike_limit_percentage: u64,
}

impl Default for MemoryLimiterConfig {
    fn default() -> Self {
        MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit_mib: 0,
            spike_limit_mib: 0,
            limit_percentage: 0,
            spike_limit_percentage: 0,
        }
    }
}

const MIB: u64 = 1024 * 1024;

impl MemoryLimiterConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.check_interval.is_zero() {
            return Err(FieldError::new(
                "check_interval",
                "must be greater than zero",
            ));
        }
        if self.limit_mib == 0 && self.limit_percentage == 0 {
            return Err(FieldError::new(
                "limit_mib",
                "set limit_mib or limit_percentage",
            ));
        }
        if self.limit_percentage > 100 || self.spike_limit_percentage > 100 {
            return Err(FieldError::new(
                "limit_percentage",
                "percentages are at most 100",
            ));
        }
        if self.limit_mib > 0 && self.spike_limit_mib >= self.limit_mib {
            return Err(FieldError::new(
                "spike_limit_mib",
                "must be less than limit_mib",
            ));
        }
        if self.limit_mib == 0 && self.spike_limit_percentage >= self.limit_percentage {
            return Err(FieldError::new(
                "spike_limit_percentage",
                "must be less than limit_percentage",
            ));
        }
        Ok(())
    }

    /// The soft limit in bytes: above it, data is refused.
    pub fn soft_limit_bytes(&self) -> u64 {
        let (limit, spike) = if self.limit_mib > 0 {
            let spike = if self.spike_limit_mib > 0 {
                self.spike_limit_mib
            } else {
                self.limit_mib / 5
            };
            (self.limit_mib * MIB, spike * MIB)
        } else {
            let total = available_memory_bytes();
            let spike_pct = if self.spike_limit_percentage > 0 {
                self.spike_limit_percentage
            } else {
                self.limit_percentage / 5
            };
            (total / 100 * self.limit_percentage, total / 100 * spike_pct)
        };
        limit.saturating_sub(spike)
    }
}

/// The pass-through stage; the work happens in the checker thread and the gate. A
/// pipeline's workers share one checker and gate (clones of one limiter).
#[derive(Clone)]
pub struct MemoryLimiter {
    _gate: Arc<Gate>,
}

impl MemoryLimiter {
    /// Starts the checker thread and returns the stage and its gate.
    pub fn start(config: MemoryLimiterConfig) -> (MemoryLimiter, Arc<Gate>) {
        let gate = Arc::new(Gate::default());
        let weak = Arc::downgrade(&gate);
        let soft_limit = config.soft_limit_bytes();
        std::thread::Builder::new()
            .name("memory-limiter".into())
            .spawn(move || {
                while let Some(gate) = weak.upgrade() {
                    let over = held_bytes().is_some_and(|held| held > soft_limit);
                    if over != gate.is_closed() {
                        tracing::warn!(
                            over,
                            soft_limit_mib = soft_limit / MIB,
                            "memory_limiter: admission {}",
                            if over { "closed" } else { "reopened" }
                        );
                    }
                    gate.set_closed(over);
                    drop(gate);
                    std::thread::sleep(config.check_interval);
                }
            })
            .expect("spawning a thread succeeds");
        (
            MemoryLimiter {
                _gate: Arc::clone(&gate),
            },
            gate,
        )
    }
}

impl Processor for MemoryLimiter {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        out.push(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_defaults_spike_to_a_fifth() {
        let c = MemoryLimiterConfig {
            limit_mib: 100,
            ..Default::default()
        };
        assert_eq!(c.soft_limit_bytes(), 80 * MIB);
        let c = MemoryLimiterConfig {
            limit_mib: 100,
            spike_limit_mib: 30,
            ..Default::default()
        };
        assert_eq!(c.soft_limit_bytes(), 70 * MIB);
    }

    #[test]
    fn spike_must_be_below_limit() {
        let c = MemoryLimiterConfig {
            limit_mib: 100,
            spike_limit_mib: 100,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "spike_limit_mib");
    }

    #[test]
    fn gate_closes_when_over_the_soft_limit() {
        // a 2 MiB limit is always exceeded by a test process
        let (_limiter, gate) = MemoryLimiter::start(MemoryLimiterConfig {
            limit_mib: 2,
            check_interval: Duration::from_millis(5),
            ..Default::default()
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !gate.is_closed() {
            assert!(std::time::Instant::now() < deadline, "gate never closed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
