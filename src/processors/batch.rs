//! `batch`: groups data into larger batches by item count or time, as the collector's
//! batch processor does (`send_batch_size`, `send_batch_max_size`, `timeout`).
//!
//! Encoded batches are merged by appending their chunks and split at resource record
//! boundaries, so a pass-through pipeline batches without decoding (see [`crate::model`]).
//! What the processor holds is bounded by `send_batch_size` plus one incoming batch: it
//! emits as soon as the threshold is reached.

use super::Processor;
use crate::config::{duration, FieldError};
use crate::model::Batch;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// `processors: batch:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Items (spans, data points, log records) that trigger sending a batch; 0 sends only
    /// on `timeout`.
    pub send_batch_size: usize,
    /// Upper bound on a batch's items; larger batches are split. 0 means no bound.
    pub send_batch_max_size: usize,
    /// How long the first item of a batch may wait before the batch is sent anyway.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            send_batch_max_size: 0,
            timeout: Duration::from_millis(200),
        }
    }
}

impl BatchConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.send_batch_max_size != 0 && self.send_batch_max_size < self.send_batch_size {
            return Err(FieldError::new(
                "send_batch_max_size",
                "must be 0 or at least send_batch_size",
            ));
        }
        if self.timeout.is_zero() {
            return Err(FieldError::new("timeout", "must be greater than zero"));
        }
        Ok(())
    }
}

pub struct BatchProcessor {
    config: BatchConfig,
    pending: Option<Batch>,
    deadline: Option<Instant>,
}

impl BatchProcessor {
    pub fn new(config: BatchConfig) -> Self {
        BatchProcessor {
            config,
            pending: None,
            deadline: None,
        }
    }

    /// Emits `batch`, cut into parts of at most `send_batch_max_size` items.
    fn emit(&self, mut batch: Batch, out: &mut Vec<Batch>) {
        let max = self.config.send_batch_max_size;
        while max > 0 && batch.items() > max {
            out.push(batch.split_off_front(max));
        }
        out.push(batch);
    }

    fn take_pending(&mut self, out: &mut Vec<Batch>) {
        self.deadline = None;
        if let Some(batch) = self.pending.take() {
            self.emit(batch, out);
        }
    }
}

impl Processor for BatchProcessor {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        let pending = match self.pending.take() {
            None => {
                self.deadline = Some(Instant::now() + self.config.timeout);
                batch
            }
            Some(mut pending) => {
                pending.merge(batch);
                pending
            }
        };
        if self.config.send_batch_size > 0 && pending.items() >= self.config.send_batch_size {
            self.deadline = None;
            self.emit(pending, out);
        } else {
            self.pending = Some(pending);
        }
    }

    /// Items pending, and items lost from them to data that did not decode (those are
    /// counted as undecodable when the batch is emitted, not as removed here).
    fn oldest_record(&self) -> Option<u64> {
        self.pending.as_ref().and_then(Batch::record)
    }

    fn held_items(&self) -> i64 {
        self.pending
            .as_ref()
            .map_or(0, |b| (b.items() + b.lost()) as i64)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.take_pending(out);
        }
    }

    fn flush(&mut self, out: &mut Vec<Batch>) {
        self.take_pending(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::traces_batch;

    fn processor(size: usize, max: usize) -> BatchProcessor {
        BatchProcessor::new(BatchConfig {
            send_batch_size: size,
            send_batch_max_size: max,
            timeout: Duration::from_secs(1),
        })
    }

    #[test]
    fn holds_until_the_size_threshold() {
        let mut p = processor(10, 0);
        let mut out = Vec::new();
        p.process(traces_batch(1, 4), &mut out);
        p.process(traces_batch(1, 4), &mut out);
        assert!(out.is_empty());
        p.process(traces_batch(1, 4), &mut out);
        assert_eq!(out.iter().map(Batch::items).collect::<Vec<_>>(), vec![12]);
        assert!(
            out[0].is_encoded(),
            "merging encoded batches must not decode them"
        );
    }

    #[test]
    fn splits_above_the_max_size_without_losing_items() {
        let mut p = processor(10, 10);
        let mut out = Vec::new();
        p.process(traces_batch(5, 5), &mut out);
        assert_eq!(
            out.iter().map(Batch::items).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
    }

    #[test]
    fn a_resource_larger_than_the_max_is_split_inside() {
        let mut p = processor(3, 3);
        let mut out = Vec::new();
        p.process(traces_batch(1, 7), &mut out);
        assert_eq!(
            out.iter().map(Batch::items).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
    }

    #[test]
    fn timeout_emits_what_is_pending() {
        let mut p = processor(100, 0);
        let mut out = Vec::new();
        p.process(traces_batch(1, 2), &mut out);
        let deadline = p.next_deadline().expect("a pending batch has a deadline");
        p.on_tick(deadline - Duration::from_millis(1), &mut out);
        assert!(out.is_empty());
        p.on_tick(deadline, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(p.next_deadline(), None);
    }

    /// With a persistent queue, what the processor holds keeps the oldest log record
    /// among the batches merged into it.
    #[test]
    fn a_pending_batch_keeps_the_oldest_log_record() {
        let mut p = processor(100, 0);
        let mut out = Vec::new();
        for record in [4, 3, 8] {
            let mut batch = traces_batch(1, 2);
            batch.set_record(Some(record));
            p.process(batch, &mut out);
        }
        assert_eq!(p.oldest_record(), Some(3));
        p.flush(&mut out);
        assert_eq!(p.oldest_record(), None);
        assert_eq!(out[0].record(), Some(3));
    }

    #[test]
    fn flush_hands_over_everything() {
        let mut p = processor(100, 0);
        let mut out = Vec::new();
        p.process(traces_batch(2, 2), &mut out);
        p.flush(&mut out);
        assert_eq!(out.iter().map(Batch::items).sum::<usize>(), 4);
    }
}
