//! Processors: synchronous stages that run on a pipeline's worker thread.
//!
//! A processor takes batches and emits zero or more batches ([`Processor::process`]), may
//! emit on a timer ([`Processor::on_tick`], driven by [`Processor::next_deadline`]) and
//! hands over everything it holds on [`Processor::flush`] (shutdown and reload), so data
//! inside a processor is never lost silently.

pub mod attributes;
pub mod batch;
pub mod cardinality;
pub mod filter;
pub mod k8s_attributes;
pub mod memory_limiter;
pub mod redaction;
pub mod resource;
pub mod resource_detection;
pub mod tail_sampling;

use crate::model::Batch;
use crate::queue::Gate;
use crate::telemetry::Count;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A pipeline stage.
pub trait Processor: Send {
    /// Handles one batch, pushing what goes on to `out`.
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>);

    /// When the processor next wants [`Processor::on_tick`], if ever.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// How late [`Processor::on_tick`] may come when nothing else wakes the worker: a
    /// worker about to sleep sleeps until a deadline plus its slack, so that deadlines
    /// close together are met by one wake (a busy worker ticks as soon as one is due).
    fn deadline_slack(&self) -> Duration {
        Duration::ZERO
    }

    /// Called at or after [`Processor::next_deadline`].
    fn on_tick(&mut self, _now: Instant, _out: &mut Vec<Batch>) {}

    /// Emits everything held.
    fn flush(&mut self, _out: &mut Vec<Batch>) {}

    /// Items held inside, waiting to be emitted. Items a call takes in and neither emits
    /// nor holds are counted as removed by this processor (sampled out, folded, dropped).
    /// An instance sharing its state with other workers' instances answers with the
    /// balance of what its own calls put in and took out, which may be negative; the
    /// instances' answers add up to what is held.
    fn held_items(&self) -> i64 {
        0
    }

    /// With a persistent queue: the oldest log record of what the processor holds (see
    /// [`Batch::record`]); the log keeps it until it has left. A processor that holds
    /// batches across calls must answer, and stamp what it emits with the oldest record
    /// of its contents.
    fn oldest_record(&self) -> Option<u64> {
        None
    }
}

/// A built processor and, for memory limiters, the admission gate it drives.
pub struct Built {
    pub processor: Box<dyn Processor>,
    pub gate: Option<Arc<Gate>>,
}

/// A processor, and the count of items it removes (sampled out, folded, dropped).
pub struct Stage {
    pub processor: Box<dyn Processor>,
    pub removed: Count,
}

impl Stage {
    /// Runs one call of the processor that took in `items_in` items; counts what it
    /// removed (items neither emitted nor held) and what it lost to data that did not
    /// decode.
    pub fn call(
        &mut self,
        items_in: usize,
        undecodable: &Count,
        call: impl FnOnce(&mut dyn Processor, &mut Vec<Batch>),
    ) -> Vec<Batch> {
        let held_before = self.processor.held_items();
        let mut out = Vec::new();
        call(&mut *self.processor, &mut out);
        let (mut emitted, mut lost) = (0, 0);
        for batch in &mut out {
            lost += batch.take_lost();
            emitted += batch.items();
        }
        undecodable.add(lost);
        let kept = (emitted + lost) as i64 + self.processor.held_items();
        let removed = items_in as i64 + held_before - kept;
        self.removed.add(usize::try_from(removed).unwrap_or(0));
        out
    }
}
