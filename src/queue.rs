//! The admission side of pipeline queues: how receivers hand batches to pipelines.
//!
//! Each pipeline has one bounded, lock-free queue (`crossbeam_channel::bounded`) between
//! the async receivers and its synchronous worker. Receivers never block on it: they call
//! [`Routes::deliver`], which either puts the batch on every target pipeline's queue or
//! says why not, so the receiver can answer the client with a retryable refusal
//! (`UNAVAILABLE` / 503). A pipeline configured with `when_full: drop_newest` accepts and
//! drops instead, counted.
//!
//! Memory limiters act here too ([`Gate`]): a pipeline whose memory limiter is over its
//! soft limit refuses new data before it is accepted, so nothing is dropped after the
//! client was told it was accepted.

use crate::config::WhenFull;
use crate::model::{Batch, Signal};
use crate::telemetry::PipelineLedger;
use crossbeam_channel::{Sender, TrySendError};
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Why data was not accepted; all of these are retryable for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A pipeline queue is full.
    QueueFull,
    /// A memory limiter is above its soft limit.
    MemoryLimit,
    /// The persistent queue is full or cannot be written.
    StorageFull,
    /// The pipeline is shutting down or being replaced.
    Closed,
}

impl Refusal {
    /// The `reason` label and the short message sent to clients.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::QueueFull => "queue_full",
            Refusal::MemoryLimit => "memory_limit",
            Refusal::StorageFull => "storage_full",
            Refusal::Closed => "shutting_down",
        }
    }
}

/// An admission gate a memory limiter closes while memory is above its soft limit.
#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
}

impl Gate {
    pub fn set_closed(&self, closed: bool) {
        self.closed.store(closed, Ordering::Relaxed);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// Counters of one pipeline's admission.
#[derive(Clone, Default)]
pub struct InputCounters {
    /// Accepted, dequeued and dropped items (see [`crate::telemetry::PipelineLedger`]).
    pub ledger: Arc<PipelineLedger>,
    pub refused_queue_full: Counter,
    pub refused_memory: Counter,
    pub refused_storage: Counter,
}

/// A batch on a queue, with the bytes it counts for.
pub struct Queued {
    pub batch: Batch,
    pub bytes: usize,
}

/// A pipeline input with a persistent queue: batches are appended to the log first.
struct Durable {
    log: Arc<crate::storage::log::Log>,
    /// When a write error was last logged (seconds since this input started): at most
    /// one line every ten seconds while the disk stays full.
    warned_at: AtomicU64,
    started: std::time::Instant,
}

impl Durable {
    /// Whether a write error should be logged now.
    fn should_warn(&self) -> bool {
        let now = self.started.elapsed().as_secs() + 10;
        let last = self.warned_at.load(Ordering::Relaxed);
        now >= last + 10
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Bytes held by a queue, bounded by its `max_size_mib`.
#[derive(Debug)]
pub struct QueueBytes {
    held: AtomicUsize,
    max: usize,
}

impl QueueBytes {
    pub fn new(max: usize) -> QueueBytes {
        QueueBytes {
            held: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes room for `bytes`; false when the queue would go over its limit. An empty
    /// queue always takes one batch, however large, so no batch is refused forever.
    fn reserve(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held == 0 || held + bytes <= self.max).then_some(held + bytes)
            })
            .is_ok()
    }

    /// Gives back the room of a batch that left the queue.
    pub fn release(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// The sending end of a pipeline queue, shared by the receivers that feed it.
pub struct PipelineInput {
    pub name: String,
    pub signal: Signal,
    sender: Sender<Queued>,
    bytes: Arc<QueueBytes>,
    when_full: WhenFull,
    gates: Vec<Arc<Gate>>,
    counters: InputCounters,
    durable: Option<Durable>,
}

impl PipelineInput {
    pub fn new(
        name: String,
        signal: Signal,
        (sender, bytes): (Sender<Queued>, Arc<QueueBytes>),
        when_full: WhenFull,
        gates: Vec<Arc<Gate>>,
        counters: InputCounters,
    ) -> Self {
        PipelineInput {
            name,
            signal,
            sender,
            bytes,
            when_full,
            gates,
            counters,
            durable: None,
        }
    }

    /// Makes this a persistent-queue input: every batch is appended to `log` before it
    /// is accepted, and waits there when the memory queue is full.
    pub fn with_log(mut self, log: Arc<crate::storage::log::Log>) -> Self {
        self.durable = Some(Durable {
            log,
            warned_at: AtomicU64::new(0),
            started: std::time::Instant::now(),
        });
        self
    }

    /// Whether a memory limiter of this pipeline refuses new data now.
    pub fn is_gated(&self) -> bool {
        self.gates.iter().any(|g| g.is_closed())
    }

    /// Whether this pipeline would refuse any request now, whatever its size: a memory
    /// limiter is closed, or its queue (`when_full: refuse`, no persistent queue) holds
    /// its capacity of batches or its bytes. Receivers ask before reading a body, so
    /// that refusing costs no reading, inflating or walking.
    pub fn refuses_now(&self) -> Option<Refusal> {
        if self.is_gated() {
            return Some(Refusal::MemoryLimit);
        }
        let full = self.durable.is_none()
            && self.when_full == WhenFull::Refuse
            && (self.sender.is_full() || self.bytes.held() >= self.bytes.max);
        full.then_some(Refusal::QueueFull)
    }

    /// Puts `batch` on the queue without blocking; a refused batch is handed back. The
    /// queue is full at its batch capacity or its byte limit, whichever comes first.
    pub fn offer(&self, batch: Batch) -> Result<(), (Refusal, Batch)> {
        if let Some(durable) = &self.durable {
            return self.offer_durable(durable, batch);
        }
        let (items, bytes) = (batch.items(), batch.held_bytes());
        let ledger = &self.counters.ledger;
        ledger.offered.add(items);
        let queued = Queued { batch, bytes };
        let sent = if self.bytes.reserve(bytes) {
            self.sender
                .try_send(queued)
                .inspect_err(|_| self.bytes.release(bytes))
        } else {
            Err(TrySendError::Full(queued))
        };
        match sent {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) if self.when_full == WhenFull::DropNewest => {
                ledger.dequeued.add(items);
                ledger.dropped.reason("queue_full").add(items);
                Ok(())
            }
            Err(TrySendError::Full(queued)) => {
                ledger.bounced.add(items);
                self.counters.refused_queue_full.inc_by(items as u64);
                Err((Refusal::QueueFull, queued.batch))
            }
            Err(TrySendError::Disconnected(queued)) => {
                ledger.bounced.add(items);
                Err((Refusal::Closed, queued.batch))
            }
        }
    }

    /// Appends `batch` to the log (accepted once written), then hands it to the worker
    /// through the memory queue; when that is full the batch waits in the log, and the
    /// worker reads it from there.
    fn offer_durable(&self, durable: &Durable, mut batch: Batch) -> Result<(), (Refusal, Batch)> {
        let items = batch.items();
        let ledger = &self.counters.ledger;
        ledger.offered.add(items);
        let parts = match batch.payload() {
            crate::model::Payload::Encoded(parts) => parts.clone(),
            _ => vec![batch.to_bytes()],
        };
        let appended = durable.log.append(self.signal, items, &parts);
        self.count_dropped_to_make_room(durable.log.take_dropped());
        match appended {
            Ok(seq) => {
                batch.set_record(Some(seq));
                let bytes = batch.held_bytes();
                if self.bytes.reserve(bytes) {
                    if let Err(e) = self.sender.try_send(Queued { batch, bytes }) {
                        // waits in the log; the worker reads it from there
                        drop(e);
                        self.bytes.release(bytes);
                    }
                }
                Ok(())
            }
            Err(e) => {
                if let crate::storage::log::AppendError::Io(e) = &e {
                    if durable.should_warn() {
                        tracing::warn!(pipeline = %self.name, error = %e, "persistent queue: cannot write; refusing (logged at most every 10 s)");
                    }
                }
                ledger.bounced.add(items);
                self.counters.refused_storage.inc_by(items as u64);
                Err((Refusal::StorageFull, batch))
            }
        }
    }

    /// Items `drop_oldest` deleted from the log: they leave the queue as dropped (those
    /// from before this start enter it first, as a replay would have).
    fn count_dropped_to_make_room(&self, dropped: crate::storage::log::Dropped) {
        if dropped.items == 0 {
            return;
        }
        let ledger = &self.counters.ledger;
        ledger.offered.add(dropped.recovered as usize);
        ledger.dequeued.add(dropped.items as usize);
        ledger
            .dropped
            .reason("storage_full")
            .add(dropped.items as usize);
    }

    fn count_memory_refusal(&self, items: usize) {
        self.counters.refused_memory.inc_by(items as u64);
    }
}

/// The pipelines a receiver feeds, per signal. Swapped whole on reload.
#[derive(Default)]
pub struct Routes {
    traces: Vec<Arc<PipelineInput>>,
    metrics: Vec<Arc<PipelineInput>>,
    logs: Vec<Arc<PipelineInput>>,
}

impl Routes {
    pub fn add(&mut self, input: Arc<PipelineInput>) {
        match input.signal {
            Signal::Traces => self.traces.push(input),
            Signal::Metrics => self.metrics.push(input),
            Signal::Logs => self.logs.push(input),
        }
    }

    pub fn targets(&self, signal: Signal) -> &[Arc<PipelineInput>] {
        match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        }
    }

    /// Whether some pipeline takes this signal from the receiver.
    pub fn accepts(&self, signal: Signal) -> bool {
        !self.targets(signal).is_empty()
    }

    /// Why a request of `signal` would be refused now, whatever it holds, if it would:
    /// see [`PipelineInput::refuses_now`].
    pub fn refuses_now(&self, signal: Signal) -> Option<Refusal> {
        self.targets(signal).iter().find_map(|t| t.refuses_now())
    }

    /// Hands `batch` to every pipeline of its signal (fan-out). Memory gates are checked
    /// first so that a limiter refuses before any pipeline accepts. If one pipeline's
    /// queue refuses after others accepted, the refusal is returned all the same: the
    /// client retries and the pipelines that accepted see the data twice, as with the
    /// collector's fan-out. One pipeline per receiver and signal avoids this. The batch
    /// comes back with the refusal when no pipeline took it, so the caller may retry.
    pub fn deliver(&self, batch: Batch) -> Result<(), Refused> {
        let targets = self.targets(batch.signal());
        if let Some(gated) = targets.iter().find(|t| t.is_gated()) {
            gated.count_memory_refusal(batch.items());
            return Err(Refused {
                refusal: Refusal::MemoryLimit,
                batch: Some(batch),
            });
        }
        let mut refusal = None;
        let mut accepted_any = false;
        let mut returned = None;
        let mut batch = Some(batch);
        for (index, target) in targets.iter().enumerate() {
            let last = index + 1 == targets.len();
            let this = if last {
                batch
                    .take()
                    .expect("the batch is moved only into the last target")
            } else {
                batch
                    .clone()
                    .expect("the batch is kept until the last target")
            };
            match target.offer(this) {
                Ok(()) => accepted_any = true,
                Err((why, back)) => {
                    refusal = Some(why);
                    if last {
                        returned = Some(back);
                    }
                }
            }
        }
        match refusal {
            None => Ok(()),
            Some(refusal) => Err(Refused {
                refusal,
                batch: if accepted_any { None } else { returned },
            }),
        }
    }
}

/// A refused delivery, with the batch when no pipeline took any of it.
#[derive(Debug)]
pub struct Refused {
    pub refusal: Refusal,
    pub batch: Option<Batch>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn input(
        capacity: usize,
        when_full: WhenFull,
    ) -> (
        Arc<PipelineInput>,
        crossbeam_channel::Receiver<Queued>,
        InputCounters,
    ) {
        sized_input(capacity, usize::MAX, when_full)
    }

    fn sized_input(
        capacity: usize,
        max_bytes: usize,
        when_full: WhenFull,
    ) -> (
        Arc<PipelineInput>,
        crossbeam_channel::Receiver<Queued>,
        InputCounters,
    ) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let counters = InputCounters::default();
        let input = PipelineInput::new(
            "traces".into(),
            Signal::Traces,
            (tx, Arc::new(QueueBytes::new(max_bytes))),
            when_full,
            vec![],
            counters.clone(),
        );
        (Arc::new(input), rx, counters)
    }

    fn batch() -> Batch {
        Batch::from_request(Signal::Traces, Bytes::new())
            .unwrap()
            .batch
    }

    #[test]
    fn full_queue_refuses_and_hands_nothing_over() {
        let (input, rx, counters) = input(1, WhenFull::Refuse);
        assert!(input.offer(batch()).is_ok());
        assert!(
            matches!(input.offer(batch()), Err((Refusal::QueueFull, _))),
            "the refused batch comes back"
        );
        assert_eq!(rx.len(), 1);
        assert_eq!(
            counters.refused_queue_full.get(),
            0,
            "empty batches count zero items"
        );
    }

    #[test]
    fn drop_newest_accepts_and_counts() {
        let (input, _rx, counters) = input(1, WhenFull::DropNewest);
        let spans = crate::model::tests::traces_batch(3, 2);
        assert!(input.offer(spans.clone()).is_ok());
        assert!(input.offer(spans).is_ok());
        let ledger = &counters.ledger;
        assert_eq!((ledger.offered.get(), ledger.bounced.get()), (12, 0));
        assert_eq!(ledger.dequeued.get(), 6, "dropped items never wait");
        assert_eq!(ledger.dropped.reason("queue_full").get(), 6);
    }

    #[test]
    fn the_byte_limit_refuses_before_the_batch_capacity() {
        let spans = crate::model::tests::traces_batch(3, 2);
        let size = spans.held_bytes();
        let (input, rx, _) = sized_input(100, size * 2, WhenFull::Refuse);
        assert!(input.offer(spans.clone()).is_ok());
        assert!(input.offer(spans.clone()).is_ok());
        assert!(matches!(
            input.offer(spans.clone()),
            Err((Refusal::QueueFull, _))
        ));
        assert_eq!(input.bytes.held(), size * 2);
        let Queued { bytes, .. } = rx.recv().unwrap();
        input.bytes.release(bytes);
        assert!(input.offer(spans).is_ok(), "room again once one left");
    }

    #[test]
    fn an_empty_queue_takes_one_batch_over_its_byte_limit() {
        let spans = crate::model::tests::traces_batch(3, 2);
        let (input, _rx, _) = sized_input(100, 1, WhenFull::Refuse);
        assert!(input.offer(spans.clone()).is_ok());
        assert!(input.offer(spans).is_err());
    }

    #[test]
    fn closed_gate_refuses_before_any_pipeline_accepts() {
        let (open, open_rx, _) = input(4, WhenFull::Refuse);
        let (tx, _rx) = crossbeam_channel::bounded(4);
        let gate = Arc::new(Gate::default());
        gate.set_closed(true);
        let gated = Arc::new(PipelineInput::new(
            "g".into(),
            Signal::Traces,
            (tx, Arc::new(QueueBytes::new(1 << 20))),
            WhenFull::Refuse,
            vec![gate],
            InputCounters::default(),
        ));
        let mut routes = Routes::default();
        routes.add(open);
        routes.add(gated);
        let refused = routes.deliver(batch()).unwrap_err();
        assert_eq!(refused.refusal, Refusal::MemoryLimit);
        assert!(
            refused.batch.is_some(),
            "nothing was accepted, so the batch comes back"
        );
        assert!(open_rx.is_empty());
    }

    #[test]
    fn fan_out_reaches_every_pipeline_of_the_signal() {
        let (a, a_rx, _) = input(4, WhenFull::Refuse);
        let (b, b_rx, _) = input(4, WhenFull::Refuse);
        let mut routes = Routes::default();
        routes.add(a);
        routes.add(b);
        assert!(!routes.accepts(Signal::Logs));
        assert!(routes.deliver(batch()).is_ok());
        assert_eq!((a_rx.len(), b_rx.len()), (1, 1));
    }
}
