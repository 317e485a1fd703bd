//! The admission side of pipeline queues: how receivers hand batches to pipelines.
//!
//! Each pipeline has one bounded queue between the async receivers and its synchronous
//! workers: one lock-free channel per worker (`crossbeam_channel`), whose room in batches
//! and bytes is kept in one place ([`QueueRoom`]), so the bound is the pipeline's whatever
//! the number of workers. A batch goes to the least busy worker, except in a metrics
//! pipeline with several workers: there each resource's data always goes to the same
//! worker (a batch holding several resources is divided), so the points of a series leave
//! in the order they came and the backend does not reject them as out of order.
//! Receivers never block on it: they call
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
use crossbeam_channel::{Receiver, Sender};
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

/// A pipeline queue's room: batches (its `capacity`) and bytes (its `max_size_mib`), shared
/// by its worker queues.
#[derive(Debug)]
pub struct QueueRoom {
    bytes: AtomicUsize,
    batches: AtomicUsize,
    max_bytes: usize,
    capacity: usize,
}

impl QueueRoom {
    pub fn new(capacity: usize, max_bytes: usize) -> QueueRoom {
        QueueRoom {
            bytes: AtomicUsize::new(0),
            batches: AtomicUsize::new(0),
            max_bytes,
            capacity,
        }
    }

    /// Takes room for `batches` batches of `bytes` in all; false when the queue would go
    /// over its capacity or its byte limit. An empty queue always takes what is offered,
    /// however large, so no batch is refused forever.
    pub(crate) fn reserve(&self, bytes: usize, batches: usize) -> bool {
        let counted = self
            .batches
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held == 0 || held + batches <= self.capacity).then_some(held + batches)
            })
            .is_ok();
        if !counted {
            return false;
        }
        let fits = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held == 0 || held + bytes <= self.max_bytes).then_some(held + bytes)
            })
            .is_ok();
        if !fits {
            self.batches.fetch_sub(batches, Ordering::AcqRel);
        }
        fits
    }

    /// Gives back the room of one batch of `bytes` that left the queue.
    pub fn release(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.batches.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether the queue holds its capacity of batches or its bytes.
    fn is_full(&self) -> bool {
        self.batches() >= self.capacity || self.held() >= self.max_bytes
    }

    pub fn held(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max_bytes
    }

    pub fn batches(&self) -> usize {
        self.batches.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The channels to a pipeline's workers, and which worker a batch goes to.
pub struct WorkerQueues {
    senders: Vec<Sender<Queued>>,
    /// Metrics with several workers: each resource to its own worker.
    by_resource: bool,
    /// Where the search for the least busy worker starts, turning.
    next: AtomicUsize,
}

impl WorkerQueues {
    /// One channel per worker, and the workers' ends. The channels have no bound of
    /// their own: [`QueueRoom`] is checked before anything is sent.
    pub fn new(signal: Signal, workers: usize) -> (WorkerQueues, Vec<Receiver<Queued>>) {
        let (senders, receivers) = (0..workers.max(1))
            .map(|_| crossbeam_channel::unbounded())
            .unzip();
        let queues = WorkerQueues {
            senders,
            by_resource: signal == Signal::Metrics && workers > 1,
            next: AtomicUsize::new(0),
        };
        (queues, receivers)
    }

    /// The workers `batch` goes to, with the part each gets.
    fn assign(&self, batch: Batch) -> Vec<(usize, Batch)> {
        match self.senders.len() {
            1 => vec![(0, batch)],
            workers if self.by_resource => batch.shard_by_resource(workers),
            _ => vec![(self.least_busy(), batch)],
        }
    }

    /// The worker with the fewest batches waiting, looking from a turning start so that
    /// idle workers share the load.
    fn least_busy(&self) -> usize {
        let workers = self.senders.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..workers)
            .map(|k| (start + k) % workers)
            .min_by_key(|&worker| self.senders[worker].len())
            .unwrap_or(0)
    }

    fn send(&self, worker: usize, queued: Queued) -> Result<(), Queued> {
        self.senders[worker]
            .send(queued)
            .map_err(|e| e.into_inner())
    }
}

/// Joins the parts of a batch divided for several workers again.
fn rejoin(parts: Vec<(usize, Batch)>) -> Batch {
    let mut parts = parts.into_iter().map(|(_, part)| part);
    let mut batch = parts
        .next()
        .expect("a batch divides into at least one part");
    parts.for_each(|part| batch.merge(part));
    batch
}

/// The sending end of a pipeline queue, shared by the receivers that feed it.
pub struct PipelineInput {
    pub name: String,
    pub signal: Signal,
    queues: WorkerQueues,
    room: Arc<QueueRoom>,
    when_full: WhenFull,
    gates: Vec<Arc<Gate>>,
    counters: InputCounters,
    durable: Option<Durable>,
}

impl PipelineInput {
    pub fn new(
        name: String,
        signal: Signal,
        (queues, room): (WorkerQueues, Arc<QueueRoom>),
        when_full: WhenFull,
        gates: Vec<Arc<Gate>>,
        counters: InputCounters,
    ) -> Self {
        PipelineInput {
            name,
            signal,
            queues,
            room,
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
        let full =
            self.durable.is_none() && self.when_full == WhenFull::Refuse && self.room.is_full();
        full.then_some(Refusal::QueueFull)
    }

    /// Puts `batch` on the queue without blocking; a refused batch is handed back. The
    /// queue is full at its batch capacity or its byte limit, whichever comes first.
    pub fn offer(&self, batch: Batch) -> Result<(), (Refusal, Batch)> {
        if let Some(durable) = &self.durable {
            return self.offer_durable(durable, batch);
        }
        let items = batch.items();
        let ledger = &self.counters.ledger;
        ledger.offered.add(items);
        let parts = self.queues.assign(batch);
        let sizes: Vec<usize> = parts.iter().map(|(_, part)| part.held_bytes()).collect();
        if self.room.reserve(sizes.iter().sum(), parts.len()) {
            return self.send_parts(parts, sizes);
        }
        if self.when_full == WhenFull::DropNewest {
            ledger.dequeued.add(items);
            ledger.dropped.reason("queue_full").add(items);
            return Ok(());
        }
        ledger.bounced.add(items);
        self.counters.refused_queue_full.inc_by(items as u64);
        Err((Refusal::QueueFull, rejoin(parts)))
    }

    /// Sends the parts of an accepted batch to their workers. Workers end only when the
    /// pipeline stops: if none takes its part, the batch comes back refused; parts that
    /// miss their worker after another took its own are dropped and counted.
    fn send_parts(
        &self,
        parts: Vec<(usize, Batch)>,
        sizes: Vec<usize>,
    ) -> Result<(), (Refusal, Batch)> {
        let total = parts.len();
        let mut missed = Vec::new();
        for ((worker, batch), bytes) in parts.into_iter().zip(sizes) {
            if let Err(back) = self.queues.send(worker, Queued { batch, bytes }) {
                self.room.release(back.bytes);
                missed.push((worker, back.batch));
            }
        }
        let ledger = &self.counters.ledger;
        let missed_items: usize = missed.iter().map(|(_, part)| part.items()).sum();
        if missed.is_empty() {
            Ok(())
        } else if missed.len() == total {
            ledger.bounced.add(missed_items);
            Err((Refusal::Closed, rejoin(missed)))
        } else {
            ledger.dequeued.add(missed_items);
            ledger.dropped.reason("shutdown").add(missed_items);
            Ok(())
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
        let appended =
            durable
                .log
                .append(self.signal, items, batch.metadata(), batch.client(), &parts);
        self.count_dropped_to_make_room(durable.log.take_dropped());
        match appended {
            Ok(seq) => {
                batch.set_record(Some(seq));
                // with no room it waits in the log, and the worker reads it from there
                let bytes = batch.held_bytes();
                if self.room.reserve(bytes, 1) {
                    if let Err(back) = self.queues.send(0, Queued { batch, bytes }) {
                        self.room.release(back.bytes);
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
        let (queues, mut receivers) = WorkerQueues::new(Signal::Traces, 1);
        let rx = receivers.pop().unwrap();
        let counters = InputCounters::default();
        let input = PipelineInput::new(
            "traces".into(),
            Signal::Traces,
            (queues, Arc::new(QueueRoom::new(capacity, max_bytes))),
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
        assert_eq!(input.room.held(), size * 2);
        let Queued { bytes, .. } = rx.recv().unwrap();
        input.room.release(bytes);
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
        let (queues, _rx) = WorkerQueues::new(Signal::Traces, 1);
        let gate = Arc::new(Gate::default());
        gate.set_closed(true);
        let gated = Arc::new(PipelineInput::new(
            "g".into(),
            Signal::Traces,
            (queues, Arc::new(QueueRoom::new(4, 1 << 20))),
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

    fn two_workers(signal: Signal) -> (PipelineInput, Vec<crossbeam_channel::Receiver<Queued>>) {
        let (queues, receivers) = WorkerQueues::new(signal, 2);
        let input = PipelineInput::new(
            "p".into(),
            signal,
            (queues, Arc::new(QueueRoom::new(100, usize::MAX))),
            WhenFull::Refuse,
            vec![],
            InputCounters::default(),
        );
        (input, receivers)
    }

    /// An encoded metrics request with one gauge point per service.
    fn metrics_of(services: &[&str]) -> Batch {
        use opentelemetry_proto::tonic::metrics::v1::{
            metric::Data, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
        };
        use opentelemetry_proto::tonic::resource::v1::Resource;
        let resources = services
            .iter()
            .map(|service| ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![crate::model::tests::text_attribute("service.name", service)],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "up".into(),
                        data: Some(Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint::default()],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        Batch::from_request(Signal::Metrics, Batch::from_metrics(resources).to_bytes())
            .unwrap()
            .batch
    }

    /// The worker every batch of one service goes to.
    fn worker_of(receivers: &[crossbeam_channel::Receiver<Queued>]) -> usize {
        let holding: Vec<usize> = (0..2).filter(|&w| !receivers[w].is_empty()).collect();
        assert_eq!(holding.len(), 1, "one worker got the batch");
        receivers[holding[0]].recv().unwrap();
        holding[0]
    }

    #[test]
    fn metrics_of_one_resource_always_reach_the_same_worker() {
        let (input, receivers) = two_workers(Signal::Metrics);
        let services: Vec<String> = (0..8).map(|i| format!("service-{i}")).collect();
        let mut workers = Vec::new();
        for service in &services {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..10 {
                input.offer(metrics_of(&[service])).unwrap();
                seen.insert(worker_of(&receivers));
            }
            assert_eq!(seen.len(), 1, "{service} went to {seen:?}");
            workers.push(seen.into_iter().next().unwrap());
        }
        assert!(
            workers.contains(&0) && workers.contains(&1),
            "both workers get resources"
        );
        // a request holding resources of both workers is divided by resource
        let a = &services[workers.iter().position(|&w| w == 0).unwrap()];
        let b = &services[workers.iter().position(|&w| w == 1).unwrap()];
        let before = input.room.batches();
        input.offer(metrics_of(&[a, b, a])).unwrap();
        assert_eq!(
            input.room.batches(),
            before + 2,
            "each part counts as a batch"
        );
        let zero = receivers[0].recv().unwrap().batch;
        let one = receivers[1].recv().unwrap().batch;
        assert_eq!((zero.items(), one.items()), (2, 1));
        let mut zero = zero;
        let services_in = |batch: &mut Batch| -> Vec<String> {
            batch
                .metrics_mut()
                .iter()
                .map(|r| {
                    crate::model::any_value_text(
                        r.resource.as_ref().unwrap().attributes[0].value.as_ref(),
                    )
                })
                .collect()
        };
        assert_eq!(services_in(&mut zero), vec![a.clone(), a.clone()]);
    }

    #[test]
    fn traces_go_to_the_least_busy_worker() {
        let (input, receivers) = two_workers(Signal::Traces);
        input.offer(batch()).unwrap();
        input.offer(batch()).unwrap();
        assert_eq!((receivers[0].len(), receivers[1].len()), (1, 1));
        receivers[0].recv().unwrap();
        input.offer(batch()).unwrap();
        assert_eq!(
            (receivers[0].len(), receivers[1].len()),
            (1, 1),
            "to the idle one"
        );
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
