//! One running pipeline: its queue, its worker threads running the processors, and its
//! exporters.
//!
//! A pipeline has `workers` of them (default: the cores available, see [`workers_of`]),
//! each with its own channel of the pipeline queue (see [`crate::queue`] for which
//! batch goes where) and its own instance of every processor, so stateless processors use
//! every core. A batch goes whole to one worker (a metrics batch holding several
//! resources is divided by resource first). Processors whose state spans batches share
//! it among the workers' instances so that it stays exact (`tail_sampling` in shards by
//! trace id, `cardinality_limit` behind a lock); a persistent queue's in-order reading
//! keeps its pipeline on one worker (validation).
//!
//! Each worker is a plain OS thread: processors are synchronous and CPU-bound, and keeping
//! them off the tokio workers keeps the async edges responsive. It waits on the pipeline
//! queue until the next processor deadline (at low rates taking what came in 10 ms at
//! once, see [`Linger`]), runs the processor chain, and hands each
//! resulting batch to every exporter queue (waiting for room is the backpressure
//! described in [`crate::exporters`]; a decoded batch is encoded first when no exporter
//! needs it decoded, since it waits in the smaller form). It counts what changes hands
//! in the pipeline's ledger, and what each processor removes (items a call takes in and
//! neither emits nor holds) as dropped under the processor's type. When every sender of the pipeline
//! queue is gone (the pipeline was replaced or sieve is stopping), the worker drains the
//! queue, flushes the processors and closes the exporter queues; exporter tasks then send
//! what is left and end.

use crate::build::{BuildContext, BuildError};
use crate::components::{Config, ConnectorConfig, Exporter, ExporterConfig, ProcessorConfig};
use crate::config::ComponentConfig;
use crate::config::{ComponentId, PipelineConfig, PipelineId, QueueConfig};
use crate::connectors::Downstream;
use crate::exporters::{self, ExporterInput, ExporterTask};
use crate::model::Batch;
use crate::processors::{Processor, Stage};
use crate::queue::{Gate, InputCounters, PipelineInput, QueueRoom, Queued, WorkerQueues};
use crate::storage::log::{Log, LogReader};
use crate::storage::{FileStorageConfig, Logs};
use crate::telemetry::{
    Count, PipelineLabels, PipelineLedger, PipelineReasonLabels, QueueRegistration, QueueState,
    Telemetry,
};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Everything that defines a pipeline's behaviour; a reload rebuilds a pipeline only
/// when this changes (a change of its receivers only re-routes).
#[derive(Clone, Debug, PartialEq)]
pub struct Signature {
    queue: QueueConfig,
    workers: usize,
    processors: Vec<(String, ProcessorConfig)>,
    exporters: Vec<(String, ExporterConfig)>,
    /// The connectors among its exporters.
    connectors: Vec<(String, ConnectorConfig)>,
    /// The `file_storage` extension its exporters name (validation allows one).
    storage: Vec<(String, FileStorageConfig)>,
}

impl Signature {
    pub fn of(config: &Config, pipeline: &PipelineConfig) -> Signature {
        Signature {
            queue: pipeline.queue.clone(),
            workers: workers_of(config, pipeline),
            processors: processors_of(config, pipeline),
            exporters: pipeline
                .exporters
                .iter()
                .map(|id| {
                    let mut exporter = config.exporters[id].clone();
                    exporter.resolve_auth(&config.extensions);
                    (id.to_string(), exporter)
                })
                .collect(),
            connectors: pipeline
                .connectors_out
                .iter()
                .map(|id| (id.to_string(), config.connectors[id].clone()))
                .collect(),
            storage: storage_of(config, pipeline),
        }
    }
}

/// The pipeline's processors, in order; a `batch` followed by a processor that tells
/// clients apart by address keeps their batches apart.
fn processors_of(config: &Config, pipeline: &PipelineConfig) -> Vec<(String, ProcessorConfig)> {
    let mut processors: Vec<(String, ProcessorConfig)> = pipeline
        .processors
        .iter()
        .map(|id| (id.to_string(), config.processors[id].clone()))
        .collect();
    let mut client_needed = false;
    for (_, processor) in processors.iter_mut().rev() {
        client_needed |= processor.tells_clients_apart();
        if let ProcessorConfig::Batch(batch) = processor {
            batch.keep_clients_apart = client_needed;
        }
    }
    processors
}

/// The workers a pipeline runs: as configured, else one for a pipeline with a persistent
/// queue (one reader of its log) and otherwise the cores available to the process
/// (`available_parallelism` follows the cgroup CPU quota and the affinity mask).
pub fn workers_of(config: &Config, pipeline: &PipelineConfig) -> usize {
    pipeline.workers.unwrap_or_else(|| {
        if crate::components::has_storage(config, pipeline) {
            1
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    })
}

/// The distinct storage extensions a pipeline's exporters name.
fn storage_of(config: &Config, pipeline: &PipelineConfig) -> Vec<(String, FileStorageConfig)> {
    let mut storage: Vec<(String, FileStorageConfig)> = Vec::new();
    for id in &pipeline.exporters {
        for reference in config.exporters[id].extension_references() {
            let extension = ComponentId::parse(&reference.id)
                .ok()
                .and_then(|id| config.extensions.get(&id))
                .and_then(|e| e.file_storage());
            if let Some(found) = extension {
                if !storage.iter().any(|(name, _)| *name == reference.id) {
                    storage.push((reference.id, found.clone()));
                }
            }
        }
    }
    storage
}

impl Signature {
    /// What differs from `other`: `queue`, `processors`, `exporters`.
    pub fn differences(&self, other: &Signature) -> Vec<&'static str> {
        [
            ("queue", self.queue != other.queue),
            ("workers", self.workers != other.workers),
            ("processors", self.processors != other.processors),
            ("exporters", self.exporters != other.exporters),
            ("connectors", self.connectors != other.connectors),
            ("storage", self.storage != other.storage),
        ]
        .into_iter()
        .filter_map(|(part, differs)| differs.then_some(part))
        .collect()
    }
}

/// A started pipeline.
pub struct RunningPipeline {
    /// Set when the pipeline is replaced or removed: with a persistent queue, its
    /// worker then leaves what is not yet read to the log.
    retired: Arc<AtomicBool>,
    /// Shows the persistent queue's items and bytes on disk on `/metrics`.
    _log_queue: Option<QueueRegistration>,
    log: Option<Arc<Log>>,
    pub input: Arc<PipelineInput>,
    workers: Vec<JoinHandle<()>>,
    exporters: Vec<ExporterTask>,
    abort: watch::Sender<bool>,
    _queue: QueueRegistration,
    /// Each connector among its exporters, with where it hands data on.
    pub connectors: Vec<(ComponentId, Arc<Downstream>)>,
}

/// A pipeline that no longer takes data and is draining.
pub struct Retiring {
    workers: Vec<JoinHandle<()>>,
    exporters: Vec<ExporterTask>,
    abort: watch::Sender<bool>,
    _queue: QueueRegistration,
}

/// A pipeline whose processors and exporters are built, not yet running: what a
/// reload prepares before it changes anything.
pub struct BuiltPipeline {
    id: PipelineId,
    signature: Signature,
    ledger: Arc<PipelineLedger>,
    /// One processor chain per worker.
    chains: Vec<Vec<Stage>>,
    gates: Vec<Arc<Gate>>,
    exporters: Vec<exporters::Built<Exporter>>,
    connectors: Vec<(ComponentId, Arc<Downstream>)>,
    log: Option<Arc<Log>>,
}

/// The processors in the order they run: as configured, except that a `redaction`
/// directly followed by a `tail_sampling` whose policies decide on what redaction never
/// changes ([`TailSamplingConfig::decides_on_what_redaction_keeps`]) runs after it.
/// The same traces are kept and every span that leaves is redacted the same way, but
/// redaction works only on the spans kept (a tenth of them with a 10 % sampler) and
/// counts only their redactions. Held spans wait unredacted in memory until decided;
/// none leaves the pipeline unredacted.
///
/// [`TailSamplingConfig::decides_on_what_redaction_keeps`]: crate::processors::tail_sampling::TailSamplingConfig::decides_on_what_redaction_keeps
fn execution_order(processors: &[(String, ProcessorConfig)]) -> Vec<&(String, ProcessorConfig)> {
    let mut order: Vec<_> = processors.iter().collect();
    for at in 1..order.len() {
        if let (ProcessorConfig::Redaction(_), ProcessorConfig::TailSampling(sampling)) =
            (&order[at - 1].1, &order[at].1)
        {
            if sampling.decides_on_what_redaction_keeps() {
                tracing::info!(
                    redaction = %order[at - 1].0,
                    tail_sampling = %order[at].0,
                    "redaction runs after tail_sampling, on the kept spans only: the \
                     sampling policies read nothing redaction changes"
                );
                order.swap(at - 1, at);
            }
        }
    }
    order
}

impl BuiltPipeline {
    /// Builds every processor and exporter of `signature`; fails, having started
    /// nothing, when any of them cannot be built.
    pub fn build(
        id: &PipelineId,
        signature: Signature,
        telemetry: &Arc<Telemetry>,
        logs: &Logs,
    ) -> Result<BuiltPipeline, BuildError> {
        let pipeline = id.to_string();
        let log = open_log(&signature, &pipeline, telemetry, logs)?;
        let ledger = telemetry.ledgers.pipeline(&PipelineLabels {
            pipeline: pipeline.clone(),
        });
        let context = |component| BuildContext {
            id: component,
            pipeline: &pipeline,
            signal: id.signal,
            telemetry,
        };
        let mut gates = Vec::new();
        let mut chains: Vec<Vec<Stage>> = (0..signature.workers).map(|_| Vec::new()).collect();
        for (processor_id, config) in execution_order(&signature.processors) {
            let instances = config.build_for_workers(&context(processor_id), signature.workers)?;
            for (chain, built) in chains.iter_mut().zip(instances) {
                gates.extend(built.gate);
                chain.push(Stage {
                    processor: built.processor,
                    removed: ledger.dropped.reason(config.kind()),
                });
            }
        }
        let mut exporters: Vec<exporters::Built<Exporter>> = signature
            .exporters
            .iter()
            .map(|(exporter_id, config)| config.build(&context(exporter_id)))
            .collect::<Result<_, _>>()?;
        let mut connectors = Vec::new();
        for (connector_id, config) in &signature.connectors {
            let (built, downstream) = config.build(&context(connector_id))?;
            exporters.push(built);
            let id = ComponentId::parse(connector_id).expect("a signature holds valid ids");
            connectors.push((id, downstream));
        }
        Ok(BuiltPipeline {
            id: id.clone(),
            signature,
            ledger,
            chains,
            gates,
            exporters,
            connectors,
            log,
        })
    }

    /// Starts the worker threads and the exporter tasks.
    pub fn start(self, telemetry: &Arc<Telemetry>) -> RunningPipeline {
        let BuiltPipeline {
            id,
            signature,
            ledger,
            chains,
            gates,
            exporters,
            connectors,
            log,
        } = self;
        let name = id.to_string();
        let (queues, receivers) = WorkerQueues::new(id.signal, chains.len());
        let room = Arc::new(QueueRoom::new(
            signature.queue.capacity,
            signature.queue.max_bytes(),
        ));
        let queue = register_queue(telemetry, &name, &room);
        let hold_encoded = !exporters.iter().any(exporters::Built::decodes);
        let (abort, aborted) = watch::channel(false);
        let (inputs, exporters): (Vec<_>, Vec<_>) = exporters
            .into_iter()
            .map(|built| built.start(telemetry, aborted.clone()))
            .unzip();
        let retired = Arc::new(AtomicBool::new(false));
        // validation keeps a pipeline with a persistent queue on one worker
        let mut durable = log
            .as_ref()
            .map(|log| Durable::new(log, &name, telemetry, &retired));
        let log_queue = log.as_ref().map(|log| register_log(telemetry, &name, log));
        let log_handle = log.clone();
        let workers = chains
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(index, (chain, queue))| {
                let worker = Worker {
                    queue,
                    linger: Linger::new(&room, signature.workers),
                    room: Arc::clone(&room),
                    chain,
                    exporters: inputs.clone(),
                    hold_encoded,
                    ledger: Arc::clone(&ledger),
                    undecodable: ledger.dropped.reason("undecodable"),
                    durable: durable.take(),
                };
                std::thread::Builder::new()
                    .name(format!("w{index} {name}"))
                    .spawn(move || worker.run())
                    .expect("spawning a thread succeeds")
            })
            .collect();
        drop(inputs);
        let reason = |reason: &str| PipelineReasonLabels {
            pipeline: name.clone(),
            reason: reason.into(),
        };
        let counters = InputCounters {
            ledger,
            refused_queue_full: telemetry
                .pipeline_refused
                .get_or_create_owned(&reason("queue_full")),
            refused_memory: telemetry
                .pipeline_refused
                .get_or_create_owned(&reason("memory_limit")),
            refused_storage: telemetry
                .pipeline_refused
                .get_or_create_owned(&reason("storage_full")),
        };
        let mut input = PipelineInput::new(
            name,
            id.signal,
            (queues, room),
            signature.queue.when_full,
            gates,
            counters,
        );
        if let Some(log) = log {
            input = input.with_log(log);
        }
        RunningPipeline {
            retired,
            _log_queue: log_queue,
            log: log_handle,
            input: Arc::new(input),
            workers,
            exporters,
            abort,
            _queue: queue,
            connectors,
        }
    }
}

impl RunningPipeline {
    /// The directory of its persistent queue and the items it holds there, if it has one.
    pub fn backlog(&self) -> Option<(std::path::PathBuf, u64)> {
        let log = self.log.as_ref()?;
        Some((log.dir().to_path_buf(), log.size().1))
    }

    /// Stops taking data: once in-flight requests release the input, the worker drains.
    pub fn retire(self) -> Retiring {
        self.retired.store(true, Ordering::Release);
        let RunningPipeline {
            workers,
            exporters,
            abort,
            _queue,
            ..
        } = self;
        Retiring {
            workers,
            exporters,
            abort,
            _queue,
        }
    }
}

/// The pipeline's persistent queue, if its exporters name a storage (validation allows
/// one per pipeline).
fn open_log(
    signature: &Signature,
    pipeline: &str,
    telemetry: &Telemetry,
    logs: &Logs,
) -> Result<Option<Arc<Log>>, BuildError> {
    let Some((name, storage)) = signature.storage.first() else {
        return Ok(None);
    };
    logs.open(storage, pipeline, fsync_histogram(telemetry, pipeline))
        .map(Some)
        .map_err(|e| {
            BuildError::new(
                name,
                "directory",
                format!("cannot open the queue of pipeline `{pipeline}`: {e}"),
            )
        })
}

/// Where a persistent queue's fsync durations are observed.
fn fsync_histogram(telemetry: &Telemetry, pipeline: &str) -> Histogram {
    let family: Family<PipelineLabels, Histogram> = telemetry.family_with(
        "storage_fsync_duration_seconds",
        "Duration of a persistent queue's fsyncs",
        || Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
    );
    family.get_or_create_owned(&PipelineLabels {
        pipeline: pipeline.to_string(),
    })
}

/// Shows a persistent queue's items and bytes on disk as queue `storage:<pipeline>`.
fn register_log(telemetry: &Arc<Telemetry>, name: &str, log: &Arc<Log>) -> QueueRegistration {
    let log = Arc::downgrade(log);
    telemetry.register_queue(
        format!("storage:{name}"),
        Box::new(move || {
            log.upgrade().map_or(QueueState::default(), |log| {
                let (bytes, items) = log.size();
                QueueState {
                    size: items as usize,
                    capacity: 0,
                    bytes: bytes as usize,
                    max_bytes: log.max_bytes() as usize,
                }
            })
        }),
    )
}

/// Shows the pipeline queue's batches and bytes on `/metrics`.
fn register_queue(
    telemetry: &Arc<Telemetry>,
    name: &str,
    room: &Arc<QueueRoom>,
) -> QueueRegistration {
    let room = Arc::clone(room);
    telemetry.register_queue(
        format!("pipeline:{name}"),
        Box::new(move || QueueState {
            size: room.batches(),
            capacity: room.capacity(),
            bytes: room.held(),
            max_bytes: room.max(),
        }),
    )
}

impl Retiring {
    /// Waits for the pipeline to deliver everything; at `deadline`, gives up on what is
    /// left (counted as dropped with `reason="shutdown"`) and waits for that to finish.
    pub async fn finish(self, deadline: tokio::time::Instant) {
        let Retiring {
            workers,
            exporters,
            abort,
            _queue,
        } = self;
        let drained = async {
            let workers = tokio::task::spawn_blocking(move || {
                for worker in workers {
                    let _ = worker.join();
                }
            });
            for exporter in exporters {
                let _ = exporter.task.await;
            }
            let _ = workers.await;
        };
        tokio::pin!(drained);
        if tokio::time::timeout_at(deadline, &mut drained)
            .await
            .is_err()
        {
            tracing::warn!("shutdown timeout reached; dropping undelivered data (counted)");
            let _ = abort.send(true);
            drained.await;
        }
    }
}

/// The pipeline's worker thread: queue → processors → exporter queues.
struct Worker {
    queue: Receiver<Queued>,
    room: Arc<QueueRoom>,
    linger: Linger,
    chain: Vec<Stage>,
    exporters: Vec<ExporterInput>,
    /// No exporter needs decoded messages: batches are encoded before they wait in an
    /// exporter queue (the encoding is several times smaller).
    hold_encoded: bool,
    ledger: Arc<PipelineLedger>,
    undecodable: Count,
    /// With a persistent queue: the log this worker reads and acknowledges.
    durable: Option<Durable>,
}

/// How long a worker that emptied its queue waits before looking again, when little came
/// meanwhile (see [`Linger`]).
const LINGER: Duration = Duration::from_millis(10);

/// A worker's pacing at low rates. Every wake costs more than the work it does: a worker
/// blocked on an empty channel spins and yields before it parks, the sender pays a
/// futex wake, and the work after an idle gap runs from cold caches (on the load
/// script's 50 k spans/s, over twice the CPU per span of a saturated worker). So a
/// worker that has emptied its queue, when what it took since it last looked was light,
/// sleeps [`LINGER`] and then takes whatever came meanwhile in one go: at 500 requests/s
/// a wake per five requests instead of one per request, at most 10 ms later.
///
/// Light means at most an eighth of the queue's room (its batches and its bytes, shared
/// among the workers): a queue that fills faster is served at once, and a queue sized
/// for one batch never lingers. A saturated worker never finds its queue empty, so it
/// never lingers either.
struct Linger {
    /// Batches and bytes taken since the worker last looked at an empty queue.
    batches: usize,
    bytes: usize,
    light_batches: usize,
    light_bytes: usize,
}

impl Linger {
    fn new(room: &QueueRoom, workers: usize) -> Linger {
        let share = 8 * workers.max(1);
        Linger {
            batches: 0,
            bytes: 0,
            light_batches: room.capacity() / share,
            light_bytes: room.max() / share,
        }
    }

    fn took(&mut self, bytes: usize) {
        self.batches += 1;
        self.bytes += bytes;
    }

    /// Whether what was taken since the last call was light; starts a new count (the
    /// worker calls it each time it finds its queue empty).
    fn was_light(&mut self) -> bool {
        let light = self.batches <= self.light_batches && self.bytes <= self.light_bytes;
        (self.batches, self.bytes) = (0, 0);
        light
    }
}

/// How often a worker with a persistent queue acknowledges what has left, and the
/// longest it waits on the memory queue before looking at the log again.
const ACKNOWLEDGE_EVERY: Duration = Duration::from_millis(200);

/// A worker's side of its pipeline's log. Every record is processed in sequence order:
/// from the memory queue when it is there (the fast path), from the log when it waited
/// there (the memory queue was full) or was written before a restart. Everything below
/// the oldest record still inside — not yet read, held by a processor, or held by an
/// exporter until sent or dropped for good — stays in the log.
struct Durable {
    log: Arc<Log>,
    reader: LogReader,
    /// Records below this were written before the log was opened: replayed.
    opened_at: u64,
    retired: Arc<AtomicBool>,
    next_acknowledge: Instant,
    replayed: Counter,
    corrupt: Counter,
    oldest_age: Gauge,
}

impl Durable {
    fn new(
        log: &Arc<Log>,
        pipeline: &str,
        telemetry: &Telemetry,
        retired: &Arc<AtomicBool>,
    ) -> Durable {
        let labels = PipelineLabels {
            pipeline: pipeline.to_string(),
        };
        let replayed: Family<PipelineLabels, Counter> = telemetry.family(
            "storage_replayed_items",
            "Items read back from a persistent queue written before this start",
        );
        let corrupt: Family<PipelineLabels, Counter> = telemetry.family(
            "storage_corrupt_records",
            "Damaged persistent-queue records skipped",
        );
        let oldest_age: Family<PipelineLabels, Gauge> = telemetry.family(
            "storage_oldest_age_seconds",
            "Age of the oldest persistent-queue segment still waiting (an upper bound of the oldest item's)",
        );
        Durable {
            reader: log.reader(log.acked()),
            opened_at: log.end(),
            log: Arc::clone(log),
            retired: Arc::clone(retired),
            next_acknowledge: Instant::now(),
            replayed: replayed.get_or_create_owned(&labels),
            corrupt: corrupt.get_or_create_owned(&labels),
            oldest_age: oldest_age.get_or_create_owned(&labels),
        }
    }

    /// The next record from the log, as a batch, if one waits there.
    fn read(&mut self, ledger: &PipelineLedger) -> Option<Batch> {
        let (record, damaged) = match self.reader.read_next() {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "persistent queue: cannot read; retrying");
                return None;
            }
        };
        self.corrupt.inc_by(damaged);
        let record = record?;
        if record.seq < self.opened_at {
            // written before this start: never offered in this process
            ledger.offered.add(record.items);
            self.replayed.inc_by(record.items as u64);
        }
        let mut batch =
            Batch::from_encoded_parts(record.signal, vec![record.payload], record.items);
        batch.set_record(Some(record.seq));
        batch.set_metadata(record.metadata);
        batch.set_client(record.client);
        Some(batch)
    }

    /// Whether records wait in the log that this worker should read.
    fn behind(&self) -> bool {
        !self.retired.load(Ordering::Acquire) && self.reader.position() < self.log.end()
    }
}

impl Worker {
    /// Runs until every sender of the queue is gone, then drains the processors.
    fn run(mut self) {
        loop {
            let (due, wake) = self.deadlines();
            // a due deadline comes first: under sustained load the queue is never empty,
            // and receiving would always win over ticking
            if due.is_some_and(|d| d <= std::time::Instant::now()) {
                let now = std::time::Instant::now();
                self.each_stage(|p, out| p.on_tick(now, out));
                continue;
            }
            if self.durable.is_some() {
                self.acknowledge();
                if self.queue.is_empty() {
                    if let Some(batch) = self.read_log() {
                        self.take(batch);
                        continue;
                    }
                }
            }
            let deadline = match (wake, &self.durable) {
                (deadline, None) => deadline,
                (Some(d), Some(_)) => Some(d.min(std::time::Instant::now() + ACKNOWLEDGE_EVERY)),
                (None, Some(_)) => Some(std::time::Instant::now() + ACKNOWLEDGE_EVERY),
            };
            let received = match deadline {
                Some(deadline) => self.queue.recv_deadline(deadline),
                None => self
                    .queue
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(Queued { batch, bytes }) => {
                    self.room.release(bytes);
                    self.linger.took(bytes);
                    self.receive(batch);
                    if self.queue.is_empty() {
                        self.linger_if_light();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = std::time::Instant::now();
                    self.each_stage(|p, out| p.on_tick(now, out));
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.each_stage(|p, out| p.flush(out));
        if self.durable.is_some() {
            self.acknowledge_now();
        }
    }

    /// Having emptied its queue, waits a little before looking again if little came
    /// since it last looked (see [`Linger`]); never past a processor's deadline, nor
    /// while a persistent queue's log has records to read.
    fn linger_if_light(&mut self) {
        if !self.linger.was_light() || self.durable.as_ref().is_some_and(Durable::behind) {
            return;
        }
        let now = std::time::Instant::now();
        let until = match self.deadlines() {
            (_, Some(wake)) => wake.min(now + LINGER),
            (_, None) => now + LINGER,
        };
        std::thread::sleep(until.saturating_duration_since(now));
    }

    /// The earliest deadline of the processors, and when an idle worker must wake at the
    /// latest (a deadline plus its processor's slack).
    fn deadlines(&self) -> (Option<Instant>, Option<Instant>) {
        let (mut due, mut wake): (Option<Instant>, Option<Instant>) = (None, None);
        for stage in &self.chain {
            if let Some(deadline) = stage.processor.next_deadline() {
                let slack = stage.processor.deadline_slack();
                let latest = deadline.checked_add(slack).unwrap_or(deadline);
                due = Some(due.map_or(deadline, |d| d.min(deadline)));
                wake = Some(wake.map_or(latest, |w| w.min(latest)));
            }
        }
        (due, wake)
    }

    /// Processes a batch from the memory queue. With a persistent queue, records are
    /// processed in sequence order: one the log already gave is skipped, and records
    /// that waited in the log before this one are read first (unless the pipeline is
    /// retired: those stay in the log for its successor or the next start).
    fn receive(&mut self, batch: Batch) {
        let (Some(durable), Some(seq)) = (&mut self.durable, batch.record()) else {
            return self.take(batch);
        };
        if seq < durable.reader.position() {
            return;
        }
        if !durable.retired.load(Ordering::Acquire) {
            while self
                .durable
                .as_ref()
                .is_some_and(|d| d.reader.position() < seq)
            {
                match self.read_log() {
                    Some(earlier) => self.take(earlier),
                    None => break,
                }
            }
            // the position moves past it only once every earlier record was read (one
            // the log could not give yet keeps the position, and the log, where it is);
            // one dropped to make room meanwhile was counted and is not processed
            if self
                .durable
                .as_mut()
                .is_some_and(|d| !d.reader.arrived(seq))
            {
                return;
            }
        }
        self.take(batch);
    }

    /// The next record waiting in the log, if this worker should read one.
    fn read_log(&mut self) -> Option<Batch> {
        let durable = self.durable.as_mut().filter(|d| d.behind())?;
        durable.read(&self.ledger)
    }

    /// Runs one batch through the processors.
    fn take(&mut self, batch: Batch) {
        self.ledger.dequeued.add(batch.items());
        self.run_chain(0, batch);
    }

    /// Every so often, tells the log what has left: everything below the oldest record
    /// not yet read, held by a processor, or held by an exporter.
    fn acknowledge(&mut self) {
        if self
            .durable
            .as_ref()
            .is_some_and(|d| std::time::Instant::now() >= d.next_acknowledge)
        {
            self.acknowledge_now();
        }
    }

    fn acknowledge_now(&mut self) {
        let Some(durable) = &mut self.durable else {
            return;
        };
        durable.next_acknowledge = std::time::Instant::now() + ACKNOWLEDGE_EVERY;
        let held = self
            .chain
            .iter()
            .filter_map(|s| s.processor.oldest_record())
            .chain(self.exporters.iter().filter_map(|e| e.outstanding.oldest()))
            .min();
        let below = held.map_or(durable.reader.position(), |h| {
            h.min(durable.reader.position())
        });
        if let Err(e) = durable.log.acknowledge(below) {
            tracing::warn!(error = %e, "persistent queue: cannot record what was delivered");
        }
        durable.reader.let_go_of_deleted();
        durable
            .oldest_age
            .set(durable.log.oldest_age().as_secs() as i64);
    }

    /// Calls every stage in order (a tick, a flush), running what each emits through
    /// the rest of the chain.
    fn each_stage(&mut self, call: impl Fn(&mut dyn Processor, &mut Vec<Batch>)) {
        for index in 0..self.chain.len() {
            let out = self.chain[index].call(0, &self.undecodable, &call);
            for batch in out {
                self.run_chain(index + 1, batch);
            }
        }
    }

    /// Runs a batch through the stages from `index` on, then emits it.
    fn run_chain(&mut self, index: usize, batch: Batch) {
        let Some(stage) = self.chain.get_mut(index) else {
            return self.emit(batch);
        };
        let out = stage.call(batch.items(), &self.undecodable, |p, out| {
            p.process(batch, out)
        });
        for batch in out {
            self.run_chain(index + 1, batch);
        }
    }

    /// Gives a batch to every exporter, waiting for room in each queue.
    fn emit(&self, mut batch: Batch) {
        self.ledger.emitted.add(batch.items());
        if self.hold_encoded {
            batch.encode_in_place();
        }
        let Some((last, others)) = self.exporters.split_last() else {
            return;
        };
        for exporter in others {
            exporter.put(batch.clone());
        }
        last.put(batch);
    }
}

impl Retiring {
    /// Whether the worker and every exporter have ended.
    pub fn is_finished(&self) -> bool {
        self.workers.iter().all(JoinHandle::is_finished)
            && self.exporters.iter().all(|e| e.task.is_finished())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processors::batch::{BatchConfig, BatchProcessor};
    use std::time::{Duration, Instant};

    fn processors(yaml: &str) -> Vec<(String, ProcessorConfig)> {
        let sampling = |policies: &str| {
            ProcessorConfig::TailSampling(
                serde_yaml::from_str(&format!("policies: {policies}")).unwrap(),
            )
        };
        let redaction = || ProcessorConfig::Redaction(serde_yaml::from_str("{}").unwrap());
        let batch = || ProcessorConfig::Batch(serde_yaml::from_str("{}").unwrap());
        yaml.split_whitespace()
            .map(|name| {
                let config = match name {
                    "redaction" => redaction(),
                    "batch" => batch(),
                    "by_status" => sampling("[{name: e, type: status_code, status_code: {status_codes: [ERROR]}}, {name: p, type: probabilistic, probabilistic: {sampling_percentage: 10}}]"),
                    "by_attribute" => sampling("[{name: e, type: status_code, status_code: {status_codes: [ERROR]}}, {name: a, type: string_attribute, string_attribute: {key: user, values: [x]}}]"),
                    "by_composite_attribute" => sampling("[{name: c, type: composite, composite: {max_total_spans_per_second: 10, composite_sub_policy: [{name: a, type: string_attribute, string_attribute: {key: user, values: [x]}}]}}]"),
                    "by_and_latency" => sampling("[{name: c, type: and, and: {and_sub_policy: [{name: l, type: latency, latency: {threshold_ms: 5}}, {name: n, type: span_count, span_count: {min_spans: 2}}]}}]"),
                    other => panic!("no processor {other}"),
                };
                (name.to_string(), config)
            })
            .collect()
    }

    fn order_of(yaml: &str) -> String {
        let processors = processors(yaml);
        let order: Vec<&str> = execution_order(&processors)
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        order.join(" ")
    }

    #[test]
    fn redaction_runs_after_a_tail_sampler_that_reads_nothing_it_changes() {
        assert_eq!(
            order_of("redaction by_status batch"),
            "by_status redaction batch"
        );
        assert_eq!(
            order_of("redaction by_and_latency"),
            "by_and_latency redaction"
        );
    }

    #[test]
    fn redaction_keeps_its_place_before_a_tail_sampler_that_reads_attributes() {
        assert_eq!(
            order_of("redaction by_attribute batch"),
            "redaction by_attribute batch"
        );
        assert_eq!(
            order_of("redaction by_composite_attribute"),
            "redaction by_composite_attribute"
        );
    }

    #[test]
    fn redaction_keeps_its_place_when_the_tail_sampler_does_not_follow_it_directly() {
        assert_eq!(
            order_of("redaction batch by_status"),
            "redaction batch by_status"
        );
        assert_eq!(order_of("by_status redaction"), "by_status redaction");
    }

    /// The pipeline's only worker, running `chain` with no exporters or persistent queue.
    fn lone_worker(
        queue: Receiver<Queued>,
        room: &Arc<QueueRoom>,
        chain: Vec<Stage>,
        ledger: &Arc<PipelineLedger>,
    ) -> Worker {
        Worker {
            queue,
            linger: Linger::new(room, 1),
            room: Arc::clone(room),
            chain,
            exporters: Vec::new(),
            hold_encoded: true,
            ledger: Arc::clone(ledger),
            undecodable: Count::default(),
            durable: None,
        }
    }

    /// Found in review: with the queue never empty, a batch processor's timeout never
    /// fired, so a batch that never reached its size was held for as long as load lasted.
    #[test]
    fn deadlines_fire_while_the_queue_is_never_empty() {
        let ledger = Arc::new(PipelineLedger::default());
        let waiting = 200_000;
        let (sender, queue) = crossbeam_channel::bounded(waiting);
        let room = Arc::new(QueueRoom::new(usize::MAX, usize::MAX));
        let batch = crate::model::tests::traces_batch(1, 1);
        for _ in 0..waiting {
            let queued = Queued {
                bytes: batch.held_bytes(),
                batch: batch.clone(),
            };
            assert!(room.reserve(queued.bytes, 1));
            sender.send(queued).unwrap();
        }
        let batching = Stage {
            processor: Box::new(BatchProcessor::new(BatchConfig {
                send_batch_size: usize::MAX,
                timeout: Duration::from_millis(5),
                ..Default::default()
            })),
            removed: Count::default(),
        };
        let worker = lone_worker(queue, &room, vec![batching], &ledger);
        let running = std::thread::spawn(move || worker.run());
        let deadline = Instant::now() + Duration::from_secs(30);
        while ledger.emitted.get() == 0 {
            assert!(Instant::now() < deadline, "nothing emitted");
            std::thread::yield_now();
        }
        assert!(!sender.is_empty(), "emitted only once the queue ran dry");
        drop(sender);
        running.join().unwrap();
    }

    #[test]
    fn a_worker_lingers_only_after_taking_little() {
        const MIB: usize = 1 << 20;
        let mut linger = Linger::new(&QueueRoom::new(256, 16 * MIB), 1);
        for _ in 0..32 {
            linger.took(1000);
        }
        assert!(linger.was_light(), "an eighth of the batches is light");
        for _ in 0..33 {
            linger.took(1000);
        }
        assert!(!linger.was_light(), "more than an eighth of the batches");
        assert!(linger.was_light(), "each look starts a new count");
        linger.took(2 * MIB + 1);
        assert!(!linger.was_light(), "more than an eighth of the bytes");

        let mut shared = Linger::new(&QueueRoom::new(256, 16 * MIB), 2);
        for _ in 0..17 {
            shared.took(1000);
        }
        assert!(!shared.was_light(), "two workers share the queue's room");
    }

    /// The worker takes a batch that came while it lingered no sooner than [`LINGER`]
    /// after the batch before it was sent (without the linger, at once). The second
    /// batch can reach the queue before the worker found it empty, in which case it is
    /// taken at once; so the pair is tried up to five times.
    #[test]
    fn a_worker_that_took_little_lingers_before_it_looks_again() {
        let ledger = Arc::new(PipelineLedger::default());
        let (sender, queue) = crossbeam_channel::unbounded();
        let room = Arc::new(QueueRoom::new(256, usize::MAX));
        let worker = lone_worker(queue, &room, Vec::new(), &ledger);
        let running = std::thread::spawn(move || worker.run());
        let send = || {
            let batch = crate::model::tests::traces_batch(1, 1);
            let bytes = batch.held_bytes();
            assert!(room.reserve(bytes, 1));
            sender.send(Queued { batch, bytes }).unwrap();
        };
        let emitted = |items: u64| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while ledger.emitted.get() < items {
                assert!(Instant::now() < deadline, "never emitted");
                std::thread::yield_now();
            }
        };
        let lingered = (0..5).any(|pair| {
            let first_sent = Instant::now();
            send();
            emitted(2 * pair + 1);
            send();
            emitted(2 * pair + 2);
            first_sent.elapsed() >= LINGER
        });
        assert!(lingered, "a batch waited for the linger");
        drop(sender);
        running.join().unwrap();
    }

    #[test]
    fn a_queue_for_one_batch_never_lingers() {
        let mut linger = Linger::new(&QueueRoom::new(1, usize::MAX), 1);
        linger.took(1);
        assert!(!linger.was_light());
    }
}
