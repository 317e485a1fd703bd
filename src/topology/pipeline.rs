//! One running pipeline: its queue, its worker thread running the processors, and its
//! exporters.
//!
//! The worker is a plain OS thread: processors are synchronous and CPU-bound, and keeping
//! them off the tokio workers keeps the async edges responsive. It waits on the pipeline
//! queue until the next processor deadline, runs the processor chain, and hands each
//! resulting batch to every exporter queue (waiting for room is the backpressure
//! described in [`crate::exporters`]; a decoded batch is encoded first when no exporter
//! needs it decoded, since it waits in the smaller form). It counts what changes hands
//! in the pipeline's ledger, and what each processor removes (items a call takes in and
//! neither emits nor holds) as dropped under the processor's type. When every sender of the pipeline
//! queue is gone (the pipeline was replaced or sieve is stopping), the worker drains the
//! queue, flushes the processors and closes the exporter queues; exporter tasks then send
//! what is left and end.

use crate::build::{BuildContext, BuildError};
use crate::components::{Config, Exporter, ExporterConfig, ProcessorConfig};
use crate::config::{PipelineConfig, PipelineId, QueueConfig};
use crate::exporters::{self, ExporterInput, ExporterTask};
use crate::model::Batch;
use crate::processors::{Processor, Stage};
use crate::queue::{Gate, InputCounters, PipelineInput, QueueBytes, Queued};
use crate::telemetry::{
    Count, PipelineLabels, PipelineLedger, PipelineReasonLabels, QueueRegistration, QueueState,
    Telemetry,
};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::watch;

/// Everything that defines a pipeline's behaviour; a reload rebuilds a pipeline only
/// when this changes (a change of its receivers only re-routes).
#[derive(Clone, Debug, PartialEq)]
pub struct Signature {
    queue: QueueConfig,
    processors: Vec<(String, ProcessorConfig)>,
    exporters: Vec<(String, ExporterConfig)>,
}

impl Signature {
    pub fn of(config: &Config, pipeline: &PipelineConfig) -> Signature {
        Signature {
            queue: pipeline.queue.clone(),
            processors: pipeline
                .processors
                .iter()
                .map(|id| (id.to_string(), config.processors[id].clone()))
                .collect(),
            exporters: pipeline
                .exporters
                .iter()
                .map(|id| (id.to_string(), config.exporters[id].clone()))
                .collect(),
        }
    }
}

impl Signature {
    /// What differs from `other`: `queue`, `processors`, `exporters`.
    pub fn differences(&self, other: &Signature) -> Vec<&'static str> {
        [
            ("queue", self.queue != other.queue),
            ("processors", self.processors != other.processors),
            ("exporters", self.exporters != other.exporters),
        ]
        .into_iter()
        .filter_map(|(part, differs)| differs.then_some(part))
        .collect()
    }
}

/// A started pipeline.
pub struct RunningPipeline {
    pub input: Arc<PipelineInput>,
    worker: JoinHandle<()>,
    exporters: Vec<ExporterTask>,
    abort: watch::Sender<bool>,
    _queue: QueueRegistration,
}

/// A pipeline that no longer takes data and is draining.
pub struct Retiring {
    worker: JoinHandle<()>,
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
    chain: Vec<Stage>,
    gates: Vec<Arc<Gate>>,
    exporters: Vec<exporters::Built<Exporter>>,
}

impl BuiltPipeline {
    /// Builds every processor and exporter of `signature`; fails, having started
    /// nothing, when any of them cannot be built.
    pub fn build(
        id: &PipelineId,
        signature: Signature,
        telemetry: &Arc<Telemetry>,
    ) -> Result<BuiltPipeline, BuildError> {
        let pipeline = id.to_string();
        let ledger = telemetry.ledgers.pipeline(&PipelineLabels {
            pipeline: pipeline.clone(),
        });
        let context = |component| BuildContext {
            id: component,
            pipeline: &pipeline,
            signal: id.signal,
            telemetry,
        };
        let (mut gates, mut chain) = (Vec::new(), Vec::new());
        for (processor_id, config) in &signature.processors {
            let built = config.build(&context(processor_id))?;
            gates.extend(built.gate);
            chain.push(Stage {
                processor: built.processor,
                removed: ledger.dropped.reason(config.kind()),
            });
        }
        let exporters = signature
            .exporters
            .iter()
            .map(|(exporter_id, config)| config.build(&context(exporter_id)))
            .collect::<Result<_, _>>()?;
        Ok(BuiltPipeline {
            id: id.clone(),
            signature,
            ledger,
            chain,
            gates,
            exporters,
        })
    }

    /// Starts the worker thread and the exporter tasks.
    pub fn start(self, telemetry: &Arc<Telemetry>) -> RunningPipeline {
        let BuiltPipeline {
            id,
            signature,
            ledger,
            chain,
            gates,
            exporters,
        } = self;
        let name = id.to_string();
        let (sender, receiver) = crossbeam_channel::bounded(signature.queue.capacity);
        let bytes = Arc::new(QueueBytes::new(signature.queue.max_bytes()));
        let queue = register_queue(telemetry, &name, &receiver, &bytes);
        let hold_encoded = !exporters.iter().any(exporters::Built::decodes);
        let (abort, aborted) = watch::channel(false);
        let (inputs, exporters): (Vec<_>, Vec<_>) = exporters
            .into_iter()
            .map(|built| built.start(telemetry, aborted.clone()))
            .unzip();
        let worker = Worker {
            queue: receiver,
            bytes: Arc::clone(&bytes),
            chain,
            exporters: inputs,
            hold_encoded,
            ledger: Arc::clone(&ledger),
            undecodable: ledger.dropped.reason("undecodable"),
        };
        let worker = std::thread::Builder::new()
            .name(format!("pipeline {name}"))
            .spawn(move || worker.run())
            .expect("spawning a thread succeeds");
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
        };
        let input = Arc::new(PipelineInput::new(
            name,
            id.signal,
            (sender, bytes),
            signature.queue.when_full,
            gates,
            counters,
        ));
        RunningPipeline {
            input,
            worker,
            exporters,
            abort,
            _queue: queue,
        }
    }
}

impl RunningPipeline {
    /// Stops taking data: once in-flight requests release the input, the worker drains.
    pub fn retire(self) -> Retiring {
        let RunningPipeline {
            worker,
            exporters,
            abort,
            _queue,
            ..
        } = self;
        Retiring {
            worker,
            exporters,
            abort,
            _queue,
        }
    }
}

/// Shows the pipeline queue's batches and bytes on `/metrics`.
fn register_queue(
    telemetry: &Arc<Telemetry>,
    name: &str,
    receiver: &Receiver<Queued>,
    bytes: &Arc<QueueBytes>,
) -> QueueRegistration {
    let (probe, bytes) = (receiver.clone(), Arc::clone(bytes));
    telemetry.register_queue(
        format!("pipeline:{name}"),
        Box::new(move || QueueState {
            size: probe.len(),
            capacity: probe.capacity().unwrap_or(0),
            bytes: bytes.held(),
            max_bytes: bytes.max(),
        }),
    )
}

impl Retiring {
    /// Waits for the pipeline to deliver everything; at `deadline`, gives up on what is
    /// left (counted as dropped with `reason="shutdown"`) and waits for that to finish.
    pub async fn finish(self, deadline: tokio::time::Instant) {
        let Retiring {
            worker,
            exporters,
            abort,
            _queue,
        } = self;
        let drained = async {
            let worker = tokio::task::spawn_blocking(move || worker.join());
            for exporter in exporters {
                let _ = exporter.task.await;
            }
            let _ = worker.await;
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
    bytes: Arc<QueueBytes>,
    chain: Vec<Stage>,
    exporters: Vec<ExporterInput>,
    /// No exporter needs decoded messages: batches are encoded before they wait in an
    /// exporter queue (the encoding is several times smaller).
    hold_encoded: bool,
    ledger: Arc<PipelineLedger>,
    undecodable: Count,
}

impl Worker {
    /// Runs until every sender of the queue is gone, then drains the processors.
    fn run(mut self) {
        loop {
            let deadline = self
                .chain
                .iter()
                .filter_map(|s| s.processor.next_deadline())
                .min();
            // a due deadline comes first: under sustained load the queue is never empty,
            // and receiving would always win over ticking
            if deadline.is_some_and(|d| d <= std::time::Instant::now()) {
                let now = std::time::Instant::now();
                self.each_stage(|p, out| p.on_tick(now, out));
                continue;
            }
            let received = match deadline {
                Some(deadline) => self.queue.recv_deadline(deadline),
                None => self
                    .queue
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(Queued { batch, bytes }) => {
                    self.bytes.release(bytes);
                    self.ledger.dequeued.add(batch.items());
                    self.run_chain(0, batch);
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = std::time::Instant::now();
                    self.each_stage(|p, out| p.on_tick(now, out));
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.each_stage(|p, out| p.flush(out));
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
        self.worker.is_finished() && self.exporters.iter().all(|e| e.task.is_finished())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processors::batch::{BatchConfig, BatchProcessor};
    use std::time::{Duration, Instant};

    /// Found in review: with the queue never empty, a batch processor's timeout never
    /// fired, so a batch that never reached its size was held for as long as load lasted.
    #[test]
    fn deadlines_fire_while_the_queue_is_never_empty() {
        let ledger = Arc::new(PipelineLedger::default());
        let waiting = 200_000;
        let (sender, queue) = crossbeam_channel::bounded(waiting);
        let batch = crate::model::tests::traces_batch(1, 1);
        for _ in 0..waiting {
            let queued = Queued {
                bytes: batch.held_bytes(),
                batch: batch.clone(),
            };
            sender.send(queued).unwrap();
        }
        let worker = Worker {
            queue,
            bytes: Arc::new(QueueBytes::new(usize::MAX)),
            chain: vec![Stage {
                processor: Box::new(BatchProcessor::new(BatchConfig {
                    send_batch_size: usize::MAX,
                    timeout: Duration::from_millis(5),
                    ..Default::default()
                })),
                removed: Count::default(),
            }],
            exporters: Vec::new(),
            hold_encoded: true,
            ledger: Arc::clone(&ledger),
            undecodable: Count::default(),
        };
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
}
