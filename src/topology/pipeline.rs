//! One running pipeline: its queue, its worker thread running the processors, and its
//! exporters.
//!
//! The worker is a plain OS thread: processors are synchronous and CPU-bound, and keeping
//! them off the tokio workers keeps the async edges responsive. It waits on the pipeline
//! queue until the next processor deadline, runs the processor chain, and hands each
//! resulting batch to every exporter queue with `blocking_send` (waiting for room is the
//! backpressure described in [`crate::exporters`]). When every sender of the pipeline
//! queue is gone (the pipeline was replaced or sieve is stopping), the worker drains the
//! queue, flushes the processors and closes the exporter queues; exporter tasks then send
//! what is left and end.

use crate::config::{Config, PipelineConfig, PipelineId, QueueConfig};
use crate::exporters::{self, ExporterConfig, ExporterTask};
use crate::model::Batch;
use crate::processors::{self, DropCounter, Processor, ProcessorConfig};
use crate::queue::{InputCounters, PipelineInput};
use crate::telemetry::{PipelineLabels, PipelineReasonLabels, QueueRegistration, Telemetry};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, watch};

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

/// A started pipeline.
pub struct RunningPipeline {
    pub signature: Signature,
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

fn counter(telemetry: &Telemetry, pipeline: &str, reason: &str) -> Counter {
    telemetry
        .pipeline_dropped
        .get_or_create_owned(&PipelineReasonLabels {
            pipeline: pipeline.into(),
            reason: reason.into(),
        })
}

impl RunningPipeline {
    pub fn start(
        id: &PipelineId,
        signature: Signature,
        telemetry: &Arc<Telemetry>,
    ) -> RunningPipeline {
        let name = id.to_string();
        let (sender, receiver) = crossbeam_channel::bounded(signature.queue.capacity);
        let probe = receiver.clone();
        let queue = telemetry.register_queue(
            format!("pipeline:{name}"),
            Box::new(move || (probe.len(), probe.capacity().unwrap_or(0))),
        );
        let drops = DropCounter {
            undecodable: counter(telemetry, &name, "undecodable"),
        };
        let mut gates = Vec::new();
        let mut chain: Vec<Box<dyn Processor>> = Vec::new();
        for (processor_id, config) in &signature.processors {
            let built = processors::build(processor_id, &name, config, drops.clone(), telemetry);
            gates.extend(built.gate);
            chain.push(built.processor);
        }
        let (abort, aborted) = watch::channel(false);
        let (senders, exporters): (Vec<_>, Vec<_>) = signature
            .exporters
            .iter()
            .map(|(exporter_id, config)| {
                exporters::spawn(
                    exporter_id,
                    &name,
                    id.signal,
                    config,
                    telemetry,
                    aborted.clone(),
                )
            })
            .unzip();
        let closed = counter(telemetry, &name, "shutdown");
        let undecodable = drops.undecodable;
        let worker = std::thread::Builder::new()
            .name(format!("pipeline {name}"))
            .spawn(move || run_worker(receiver, chain, senders, closed, undecodable))
            .expect("spawning a thread succeeds");
        let counters = InputCounters {
            accepted: telemetry
                .pipeline_accepted
                .get_or_create_owned(&PipelineLabels {
                    pipeline: name.clone(),
                }),
            refused_queue_full: telemetry.pipeline_refused.get_or_create_owned(
                &PipelineReasonLabels {
                    pipeline: name.clone(),
                    reason: "queue_full".into(),
                },
            ),
            refused_memory: telemetry
                .pipeline_refused
                .get_or_create_owned(&PipelineReasonLabels {
                    pipeline: name.clone(),
                    reason: "memory_limit".into(),
                }),
            dropped_queue_full: counter(telemetry, &name, "queue_full"),
        };
        let input = Arc::new(PipelineInput::new(
            name,
            id.signal,
            sender,
            signature.queue.when_full,
            gates,
            counters,
        ));
        RunningPipeline {
            signature,
            input,
            worker,
            exporters,
            abort,
            _queue: queue,
        }
    }

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

/// The worker loop: queue → processors → exporter queues, until the queue closes.
fn run_worker(
    queue: Receiver<Batch>,
    mut chain: Vec<Box<dyn Processor>>,
    exporters: Vec<mpsc::Sender<Batch>>,
    closed: Counter,
    undecodable: Counter,
) {
    let mut emit = |mut batch: Batch| {
        undecodable.inc_by(batch.take_lost() as u64);
        deliver(&exporters, batch, &closed)
    };
    loop {
        let deadline = chain.iter().filter_map(|p| p.next_deadline()).min();
        let received = match deadline {
            Some(deadline) => queue.recv_deadline(deadline),
            None => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(batch) => run_chain(&mut chain, batch, &mut emit),
            Err(RecvTimeoutError::Timeout) => {
                let now = std::time::Instant::now();
                for index in 0..chain.len() {
                    let mut out = Vec::new();
                    chain[index].on_tick(now, &mut out);
                    out.into_iter()
                        .for_each(|b| run_chain(&mut chain[index + 1..], b, &mut emit));
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    for index in 0..chain.len() {
        let mut out = Vec::new();
        chain[index].flush(&mut out);
        out.into_iter()
            .for_each(|b| run_chain(&mut chain[index + 1..], b, &mut emit));
    }
}

/// Runs a batch through the chain. Items a processor lost to a chunk that did not decode
/// travel with the batch and are counted where it leaves the chain (`emit`); a processor
/// that consumes batches without passing them on counts its own.
fn run_chain(chain: &mut [Box<dyn Processor>], batch: Batch, emit: &mut dyn FnMut(Batch)) {
    match chain.split_first_mut() {
        None => emit(batch),
        Some((first, rest)) => {
            let mut out = Vec::new();
            first.process(batch, &mut out);
            out.into_iter().for_each(|b| run_chain(rest, b, emit));
        }
    }
}

/// Gives a batch to every exporter, waiting for room in each queue.
fn deliver(exporters: &[mpsc::Sender<Batch>], batch: Batch, closed: &Counter) {
    let Some((last, others)) = exporters.split_last() else {
        return;
    };
    for exporter in others {
        if let Err(rejected) = exporter.blocking_send(batch.clone()) {
            closed.inc_by(rejected.0.items() as u64);
        }
    }
    if let Err(rejected) = last.blocking_send(batch) {
        closed.inc_by(rejected.0.items() as u64);
    }
}

impl Retiring {
    /// Whether the worker and every exporter have ended.
    pub fn is_finished(&self) -> bool {
        self.worker.is_finished() && self.exporters.iter().all(|e| e.task.is_finished())
    }
}
