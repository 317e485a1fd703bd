//! `batch`: groups data into larger batches by item count or time, as the collector's
//! batch processor does (`send_batch_size`, `send_batch_max_size`, `timeout`,
//! `metadata_keys`, `metadata_cardinality_limit`).
//!
//! Encoded batches are merged by appending their chunks and split at resource record
//! boundaries, so a pass-through pipeline batches without decoding (see [`crate::model`]).
//! What the processor holds is bounded by `send_batch_size` plus one incoming batch per
//! combination of metadata values: it emits as soon as the threshold is reached.
//!
//! With `metadata_keys`, batches of different values of those request metadata names (a
//! tenant header a receiver kept with `include_metadata`) are never merged: each
//! combination has its own pending batch and timeout, and what leaves carries those
//! names and values, so an exporter's `headers_setter` can send them on. Without it,
//! batches mix and carry no metadata, as in the collector. Past
//! `metadata_cardinality_limit` combinations pending at once, a batch of a new one is
//! passed on at once, unbatched but with its metadata, and counted in
//! `sieve_batch_metadata_overflow_batches_total` — never merged under another's.

use super::Processor;
use crate::config::{duration, FieldError};
use crate::model::{Batch, Metadata};
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use std::collections::HashMap;
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
    /// Request metadata names (any case) whose values keep batches apart and go on with
    /// them, e.g. `[x-scope-orgid]` for a tenant header kept by a receiver's
    /// `include_metadata`. Empty: batches mix and carry no metadata.
    pub metadata_keys: Vec<String>,
    /// The most combinations of `metadata_keys` values pending at once; a batch of one
    /// more is passed on unbatched (with its metadata) and counted.
    pub metadata_cardinality_limit: usize,
    /// Not read from YAML: set by sieve when a later processor of the pipeline tells
    /// clients apart by their address (`k8s_attributes` with a `connection` source), so
    /// that batches of different clients are kept apart like `metadata_keys` values
    /// (and count against `metadata_cardinality_limit`).
    #[serde(skip)]
    pub keep_clients_apart: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            send_batch_max_size: 0,
            timeout: Duration::from_millis(200),
            metadata_keys: Vec::new(),
            metadata_cardinality_limit: 1000,
            keep_clients_apart: false,
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
        if !self.metadata_keys.is_empty() && self.metadata_cardinality_limit == 0 {
            return Err(FieldError::new(
                "metadata_cardinality_limit",
                "must be at least 1 with metadata_keys",
            ));
        }
        Ok(())
    }
}

/// What keeps batches apart: their metadata, and their client when kept apart.
type Key = (Option<Metadata>, Option<std::net::IpAddr>);

/// A batch being filled, and when it goes out anyway.
struct Pending {
    batch: Batch,
    deadline: Instant,
}

pub struct BatchProcessor {
    config: BatchConfig,
    /// Per combination of `metadata_keys` values (`None` without metadata keys) and,
    /// with `keep_clients_apart`, client address.
    pending: HashMap<Key, Pending>,
    overflow: Counter,
}

impl BatchProcessor {
    pub fn new(config: BatchConfig) -> Self {
        BatchProcessor {
            config,
            pending: HashMap::new(),
            overflow: Counter::default(),
        }
    }

    /// Counts batches passed on unbatched past `metadata_cardinality_limit` in `counter`.
    pub fn with_overflow_counter(mut self, counter: Counter) -> Self {
        self.overflow = counter;
        self
    }

    /// The metadata a batch goes on with, and with its client, its batching key.
    fn key_of(&self, batch: &Batch) -> Key {
        let client = batch.client().filter(|_| self.config.keep_clients_apart);
        if self.config.metadata_keys.is_empty() {
            return (None, client);
        }
        let kept = batch.metadata().map(|m| m.only(&self.config.metadata_keys));
        (
            Some(kept.unwrap_or_else(|| Metadata::from_pairs([]))),
            client,
        )
    }

    /// Emits `batch`, cut into parts of at most `send_batch_max_size` items.
    fn emit(&self, mut batch: Batch, out: &mut Vec<Batch>) {
        let max = self.config.send_batch_max_size;
        while max > 0 && batch.items() > max {
            out.push(batch.split_off_front(max));
        }
        out.push(batch);
    }

    /// Emits the pending batches that are `due`.
    fn take_pending(&mut self, out: &mut Vec<Batch>, due: impl Fn(&Pending) -> bool) {
        let keys: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| due(p))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(pending) = self.pending.remove(&key) {
                self.emit(pending.batch, out);
            }
        }
    }
}

impl Processor for BatchProcessor {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        let key = self.key_of(&batch);
        batch.set_metadata(key.0.clone());
        if !self.pending.contains_key(&key)
            && self.pending.len() >= self.config.metadata_cardinality_limit.max(1)
        {
            self.overflow.inc();
            self.emit(batch, out);
            return;
        }
        let pending = match self.pending.remove(&key) {
            None => Pending {
                batch,
                deadline: Instant::now() + self.config.timeout,
            },
            Some(mut pending) => {
                pending.batch.merge(batch);
                pending
            }
        };
        if self.config.send_batch_size > 0 && pending.batch.items() >= self.config.send_batch_size {
            self.emit(pending.batch, out);
        } else {
            self.pending.insert(key, pending);
        }
    }

    fn oldest_record(&self) -> Option<u64> {
        self.pending.values().filter_map(|p| p.batch.record()).min()
    }

    /// Items pending, and items lost from them to data that did not decode (those are
    /// counted as undecodable when the batch is emitted, not as removed here).
    fn held_items(&self) -> i64 {
        self.pending
            .values()
            .map(|p| (p.batch.items() + p.batch.lost()) as i64)
            .sum()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        self.take_pending(out, |p| p.deadline <= now);
    }

    fn flush(&mut self, out: &mut Vec<Batch>) {
        self.take_pending(out, |_| true);
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
            ..Default::default()
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

    fn tenant_batch(tenant: Option<&str>, spans: usize) -> Batch {
        let mut batch = traces_batch(1, spans);
        batch.set_metadata(tenant.map(|t| {
            Metadata::from_pairs([
                ("X-Scope-OrgID".to_string(), t.to_string()),
                ("user-agent".to_string(), "sdk".to_string()),
            ])
        }));
        batch
    }

    fn tenant_of(batch: &Batch) -> Option<&str> {
        batch.metadata().and_then(|m| m.get("x-scope-orgid"))
    }

    #[test]
    fn metadata_keys_keep_tenants_apart_and_go_on_with_them() {
        let mut p = BatchProcessor::new(BatchConfig {
            send_batch_size: 4,
            metadata_keys: vec!["x-scope-orgid".into()],
            ..Default::default()
        });
        let mut out = Vec::new();
        for tenant in ["a", "b", "c", "a", "b", "c"] {
            p.process(tenant_batch(Some(tenant), 2), &mut out);
        }
        p.process(tenant_batch(None, 1), &mut out);
        assert_eq!(out.len(), 3, "one full batch per tenant");
        for batch in &out {
            assert_eq!(batch.items(), 4);
            let metadata = batch.metadata().unwrap();
            assert_eq!(metadata.pairs().len(), 1, "only the metadata keys go on");
        }
        let mut tenants: Vec<&str> = out.iter().filter_map(tenant_of).collect();
        tenants.sort();
        assert_eq!(tenants, ["a", "b", "c"]);
        p.flush(&mut out);
        let last = out.last().unwrap();
        assert_eq!(
            (last.items(), tenant_of(last)),
            (1, None),
            "no tenant is a value too"
        );
    }

    /// With `keep_clients_apart` (a later `k8s_attributes` reads the connection),
    /// batches of different clients never merge and keep their client; without it
    /// they merge and the result has none.
    #[test]
    fn clients_are_kept_apart_when_a_later_processor_needs_them() {
        let from = |client: &str| {
            let mut batch = traces_batch(1, 2);
            batch.set_client(Some(client.parse().unwrap()));
            batch
        };
        for keep in [true, false] {
            let mut p = BatchProcessor::new(BatchConfig {
                keep_clients_apart: keep,
                ..Default::default()
            });
            let mut out = Vec::new();
            for client in ["10.0.0.1", "10.0.0.2", "10.0.0.1"] {
                p.process(from(client), &mut out);
            }
            p.flush(&mut out);
            let mut clients: Vec<(Option<String>, usize)> = out
                .iter()
                .map(|b| (b.client().map(|c| c.to_string()), b.items()))
                .collect();
            clients.sort();
            if keep {
                assert_eq!(
                    clients,
                    [(Some("10.0.0.1".into()), 4), (Some("10.0.0.2".into()), 2)]
                );
            } else {
                assert_eq!(clients, [(None, 6)]);
            }
        }
    }

    #[test]
    fn without_metadata_keys_batches_mix_and_carry_none() {
        let mut p = processor(4, 0);
        let mut out = Vec::new();
        p.process(tenant_batch(Some("a"), 2), &mut out);
        p.process(tenant_batch(Some("b"), 2), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].metadata(), None);
    }

    #[test]
    fn past_the_cardinality_limit_batches_go_on_unbatched_with_their_tenant() {
        let overflow = Counter::default();
        let mut p = BatchProcessor::new(BatchConfig {
            send_batch_size: 100,
            metadata_keys: vec!["x-scope-orgid".into()],
            metadata_cardinality_limit: 2,
            ..Default::default()
        })
        .with_overflow_counter(overflow.clone());
        let mut out = Vec::new();
        for tenant in ["a", "b", "c", "a", "c"] {
            p.process(tenant_batch(Some(tenant), 1), &mut out);
        }
        assert_eq!(overflow.get(), 2, "c twice, unbatched");
        assert_eq!(
            out.iter().map(tenant_of).collect::<Vec<_>>(),
            [Some("c"), Some("c")]
        );
        assert_eq!(p.held_items(), 3);
        p.flush(&mut out);
        assert_eq!(out.iter().map(Batch::items).sum::<usize>(), 5);
    }
}
