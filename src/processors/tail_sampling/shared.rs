//! One tail sampler for all of a pipeline's workers: its traces are divided among shards
//! by trace id, each shard a [`TailSampler`] behind its own lock, so each shard owns whole
//! traces and a trace is judged whole whichever worker its spans came through.
//!
//! A worker reads a batch off the wire without a lock, then locks only the shards its
//! traces fall in, once each. The policies (and so a rate limit's budget) are shared by
//! the shards; the budgets (`max_memory_mib`, `num_traces`, the decision caches) are
//! divided among them, which trace ids (random by the W3C spec) fill evenly. Each shard
//! publishes its next deadline in an atomic, so that asking for it takes no lock.
//!
//! Ordering: the spans of one trace that one request carried stay in order; spans of
//! a trace from different requests are held in the order the workers admitted them,
//! which for requests processed at the same time is either (they were never ordered).

use super::{chunks_of, compile, id_hash, read_chunks, TailSampler, TailSamplingConfig};
use crate::config::FieldError;
use crate::model::{Batch, Signal};
use crate::processors::Processor;
use crate::telemetry::Telemetry;
use parking_lot::Mutex;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// No deadline, in [`Shard::deadline`].
const NONE: u64 = u64::MAX;

struct Shard {
    sampler: Mutex<TailSampler>,
    /// The sampler's next deadline, in nanoseconds after [`Shards::base`].
    deadline: AtomicU64,
}

struct Shards {
    shards: Vec<Shard>,
    base: Instant,
    /// The samplers' [`Processor::deadline_slack`].
    slack: Duration,
    predicates: Arc<super::SpanPredicates>,
}

/// One worker's handle on the shared sampler.
pub struct Shared {
    shards: Arc<Shards>,
    /// Spans this handle's calls put into the shards minus those they took out (see
    /// [`Processor::held_items`]).
    balance: i64,
}

impl Shared {
    /// The handles of `workers` workers on one sampler of `workers` shards; fails on a
    /// policy regex that does not compile.
    pub fn for_workers(
        config: &TailSamplingConfig,
        workers: usize,
        id: &str,
        telemetry: &Telemetry,
    ) -> Result<Vec<Shared>, FieldError> {
        let (policies, predicates) = compile(config)?;
        let shards = (0..workers.max(1))
            .map(|_| Shard {
                sampler: Mutex::new(TailSampler::shard(
                    config,
                    workers.max(1),
                    id,
                    telemetry,
                    Arc::clone(&policies),
                    Arc::clone(&predicates),
                )),
                deadline: AtomicU64::new(NONE),
            })
            .collect();
        let shards = Arc::new(Shards {
            shards,
            base: Instant::now(),
            slack: super::slack_of(config),
            predicates,
        });
        Ok((0..workers.max(1))
            .map(|_| Shared {
                shards: Arc::clone(&shards),
                balance: 0,
            })
            .collect())
    }

    /// Runs `work` on shard `at` under its lock, then keeps the balance and the
    /// published deadline.
    fn with_shard(&mut self, at: usize, work: impl FnOnce(&mut TailSampler)) {
        let shard = &self.shards.shards[at];
        let mut sampler = shard.sampler.lock();
        let before = sampler.spans_held as i64;
        work(&mut sampler);
        self.balance += sampler.spans_held as i64 - before;
        let deadline = sampler.next_deadline().map_or(NONE, |d| {
            d.saturating_duration_since(self.shards.base).as_nanos() as u64
        });
        shard.deadline.store(deadline, Ordering::Release);
    }

    fn shard_of(&self, id: Option<&super::TraceId>) -> usize {
        id.map_or(0, |id| {
            (id_hash(id) % self.shards.shards.len() as u64) as usize
        })
    }
}

impl Processor for Shared {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        if batch.signal() != Signal::Traces {
            out.push(batch);
            return;
        }
        let chunks = chunks_of(&batch);
        let groups = read_chunks(&chunks, &self.shards.predicates);
        // per shard: (scope group, its spans of one trace)
        let mut work: Vec<Vec<(usize, Range<usize>)>> = vec![Vec::new(); self.shards.shards.len()];
        for (index, (_, group)) in groups.iter().enumerate() {
            let mut start = 0;
            for same_trace in group.spans.chunk_by(|a, b| a.trace_id == b.trace_id) {
                let shard = self.shard_of(same_trace[0].trace_id.as_ref());
                work[shard].push((index, start..start + same_trace.len()));
                start += same_trace.len();
            }
        }
        let now = Instant::now();
        for (at, traces) in work.iter().enumerate().filter(|(_, w)| !w.is_empty()) {
            self.with_shard(at, |sampler| {
                sampler.current_record = batch.record();
                sampler.current_metadata = batch.metadata().cloned();
                for (index, spans) in traces {
                    let (chunk, group) = &groups[*index];
                    sampler.admit(&chunks[*chunk], group, &group.spans[spans.clone()], now);
                }
                sampler.enforce_budget(now);
                sampler.emit(out);
            });
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let earliest = self
            .shards
            .shards
            .iter()
            .map(|s| s.deadline.load(Ordering::Acquire))
            .min()
            .filter(|&d| d != NONE)?;
        Some(self.shards.base + Duration::from_nanos(earliest))
    }

    fn deadline_slack(&self) -> Duration {
        self.shards.slack
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        for at in 0..self.shards.shards.len() {
            let due = self.shards.shards[at].deadline.load(Ordering::Acquire);
            if due != NONE && self.shards.base + Duration::from_nanos(due) <= now {
                self.with_shard(at, |sampler| sampler.on_tick(now, out));
            }
        }
    }

    fn flush(&mut self, out: &mut Vec<Batch>) {
        for at in 0..self.shards.shards.len() {
            self.with_shard(at, |sampler| sampler.flush(out));
        }
    }

    /// Can be negative: a worker deciding traces another worker's calls admitted.
    fn held_items(&self) -> i64 {
        self.balance
    }

    fn oldest_record(&self) -> Option<u64> {
        self.shards
            .shards
            .iter()
            .filter_map(|s| s.sampler.lock().oldest_record())
            .min()
    }
}
