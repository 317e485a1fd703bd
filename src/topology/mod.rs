//! The running collector: receivers and pipelines built from a [`Config`], reloaded by
//! diff, drained on shutdown.
//!
//! A reload follows vector's `running.rs` shape in three steps:
//! 1. decide: [`diff::ConfigDiff`] says, as plain data, what happens to every receiver
//!    and pipeline (kept, updated, started, stopped; the rules are in [`diff`]);
//! 2. prepare everything that can fail, touching nothing that runs: bind the listeners
//!    of started and updated receivers (a renamed receiver takes over its predecessor's
//!    socket through a [`Handover`]) and build every processor and exporter of started
//!    and rebuilt pipelines;
//! 3. commit, which cannot fail: retire replaced pipelines (they drain in the
//!    background), start the built ones, then start, update, re-route and stop
//!    receivers.
//!
//! So a failed reload — a port taken, a certificate gone since validation — changes
//! nothing, and the running configuration keeps serving.

pub mod diff;
pub mod pipeline;

use crate::build::BuildError;
use crate::components::{Config, PreparedReceiver, RunningReceiver};
use crate::config::{ComponentId, PipelineId};
use crate::net::Handover;
use crate::queue::Routes;
use crate::storage::Logs;
use crate::telemetry::Telemetry;
use diff::{ConfigDiff, PipelineChange, ReceiverChange};
use pipeline::{BuiltPipeline, Retiring, RunningPipeline, Signature};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The receivers, pipelines and draining pipelines of a running sieve.
pub struct Topology {
    telemetry: Arc<Telemetry>,
    config: Option<Config>,
    receivers: BTreeMap<ComponentId, RunningReceiver>,
    pipelines: BTreeMap<PipelineId, RunningPipeline>,
    retiring: Vec<Retiring>,
    /// The persistent queues' logs, open while a pipeline uses them.
    logs: Logs,
}

impl Topology {
    pub fn new(telemetry: Arc<Telemetry>) -> Topology {
        Topology {
            telemetry,
            config: None,
            receivers: BTreeMap::new(),
            pipelines: BTreeMap::new(),
            retiring: Vec::new(),
            logs: Logs::default(),
        }
    }

    /// The addresses each receiver listens on (the real ports when configured with port 0).
    pub fn receiver_addresses(&self) -> BTreeMap<String, Vec<SocketAddr>> {
        self.receivers
            .iter()
            .map(|(id, r)| (id.to_string(), r.addresses()))
            .collect()
    }

    /// Makes the running topology match `config`. On error (a listener cannot be bound,
    /// a component cannot be built) nothing has changed: every new piece is prepared
    /// before the first running one is touched.
    pub async fn apply(&mut self, config: Config) -> Result<(), String> {
        let diff = ConfigDiff::between(self.config.as_ref(), &config);
        let prepared = self
            .prepare_receivers(&config, &diff)
            .map_err(|e| e.to_string())?;
        let built = self
            .build_pipelines(&config, &diff)
            .map_err(|e| e.to_string())?;
        self.replace_pipelines(&diff, built);
        self.point_connectors(&config);
        self.route_receivers(&config, &diff, prepared).await;
        self.config = Some(config);
        Ok(())
    }

    /// Binds the listeners of started and updated receivers.
    fn prepare_receivers(
        &self,
        config: &Config,
        diff: &ConfigDiff,
    ) -> Result<BTreeMap<ComponentId, PreparedReceiver>, BuildError> {
        let mut handover = Handover::default();
        for id in diff.handing_over() {
            if let Some(stopping) = self.receivers.get(id) {
                stopping.offer(&mut handover);
            }
        }
        let mut prepared = BTreeMap::new();
        for (id, change) in &diff.receivers {
            let wanted = config.receivers.get(id);
            let ready = match (change, self.receivers.get(id), wanted) {
                (ReceiverChange::Update { .. }, Some(running), Some(wanted)) => {
                    running.prepare_update(id, wanted, &config.extensions)?
                }
                (ReceiverChange::Update { .. } | ReceiverChange::Start { .. }, _, Some(wanted)) => {
                    wanted.prepare(id, &handover, &config.extensions)?
                }
                _ => continue,
            };
            prepared.insert(id.clone(), ready);
        }
        Ok(prepared)
    }

    /// Builds the pipelines that are new or changed, starting none of them.
    fn build_pipelines(
        &self,
        config: &Config,
        diff: &ConfigDiff,
    ) -> Result<BTreeMap<PipelineId, BuiltPipeline>, BuildError> {
        let mut built = BTreeMap::new();
        for (id, change) in &diff.pipelines {
            let (PipelineChange::Start | PipelineChange::Rebuild { .. }) = change else {
                continue;
            };
            let signature = Signature::of(config, &config.pipelines[id]);
            built.insert(
                id.clone(),
                BuiltPipeline::build(id, signature, &self.telemetry, &self.logs)?,
            );
        }
        Ok(built)
    }

    /// Retires rebuilt and removed pipelines (they drain in the background) and starts
    /// the built ones; unchanged ones keep running.
    fn replace_pipelines(&mut self, diff: &ConfigDiff, built: BTreeMap<PipelineId, BuiltPipeline>) {
        for (id, change) in &diff.pipelines {
            let (PipelineChange::Rebuild { .. } | PipelineChange::Retire) = change else {
                continue;
            };
            if let Some(old) = self.pipelines.remove(id) {
                tracing::info!(pipeline = %id, ?change, "draining the old pipeline");
                if let (PipelineChange::Retire, Some((dir, items))) = (change, old.backlog()) {
                    tracing::warn!(pipeline = %id, dir = %dir.display(), items, "pipeline removed: its persistent queue stays on disk (see `sieve queue inspect`)");
                }
                self.retiring.push(old.retire());
            }
        }
        for (id, new) in built {
            self.pipelines.insert(id, new.start(&self.telemetry));
        }
    }

    /// Points every connector at the pipelines downstream of it: those listing it under
    /// `receivers` whose signal it connects to. Done on every apply, so a rebuilt
    /// pipeline replaces its predecessor downstream of connectors that kept running.
    fn point_connectors(&self, config: &Config) {
        use crate::config::Connects;
        for (upstream, running) in &self.pipelines {
            for (connector, downstream) in &running.connectors {
                let targets = config
                    .pipelines
                    .iter()
                    .filter(|(id, pipeline)| {
                        pipeline.connectors_in.contains(connector)
                            && config.connectors[connector]
                                .connects(upstream.signal, id.signal)
                                .is_ok()
                    })
                    .map(|(id, _)| (id.to_string(), Arc::clone(&self.pipelines[id].input)))
                    .collect();
                downstream.set(targets);
            }
        }
    }

    /// Points every receiver at its pipelines, starting, updating and stopping receivers.
    async fn route_receivers(
        &mut self,
        config: &Config,
        diff: &ConfigDiff,
        mut prepared: BTreeMap<ComponentId, PreparedReceiver>,
    ) {
        for (id, change) in &diff.receivers {
            if *change == ReceiverChange::Stop {
                continue;
            }
            let routes = Arc::new(self.routes_of(config, id));
            match (self.receivers.get_mut(id), prepared.remove(id)) {
                (Some(running), Some(update)) => {
                    running.update(update).await;
                    running.set_routes(routes);
                }
                (Some(running), None) => running.set_routes(routes),
                (None, Some(new)) => {
                    warn_if_unprotected(id, &config.receivers[id]);
                    self.receivers.insert(
                        id.clone(),
                        RunningReceiver::start(id, new, routes, &self.telemetry),
                    );
                }
                (None, None) => unreachable!("prepare_receivers binds every new receiver"),
            }
        }
        // stopped last, so a receiver taking over a socket is serving before its
        // predecessor lets go
        for (id, change) in &diff.receivers {
            if *change == ReceiverChange::Stop {
                if let Some(receiver) = self.receivers.remove(id) {
                    tracing::info!(receiver = %id, "receiver removed");
                    receiver.stop().await;
                }
            }
        }
    }

    /// The inputs of the pipelines that list receiver `id`.
    fn routes_of(&self, config: &Config, id: &ComponentId) -> Routes {
        let mut routes = Routes::default();
        for (pipeline_id, pipeline) in &config.pipelines {
            if pipeline.receivers.contains(id) {
                routes.add(Arc::clone(&self.pipelines[pipeline_id].input));
            }
        }
        routes
    }

    /// Stops accepting, then drains every pipeline for up to `timeout`. Whatever is not
    /// delivered by then is dropped and counted.
    pub async fn shutdown(mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        self.telemetry.set_ready(false);
        for (_, receiver) in std::mem::take(&mut self.receivers) {
            receiver.stop().await;
        }
        let mut draining = std::mem::take(&mut self.retiring);
        draining.extend(
            std::mem::take(&mut self.pipelines)
                .into_values()
                .map(RunningPipeline::retire),
        );
        // all at once: a pipeline fed by a connector ends only after the pipeline
        // upstream of it has, so each must reach its deadline (and abort) on its own
        futures::future::join_all(draining.into_iter().map(|p| p.finish(deadline))).await;
    }

    /// Waits for pipelines retired by earlier reloads that have finished draining.
    pub fn reap_retired(&mut self) -> usize {
        let before = self.retiring.len();
        self.retiring.retain(|r| !r.is_finished());
        before - self.retiring.len()
    }
}

/// Warns, when a receiver starts, about each of its listeners open beyond this machine
/// with neither TLS nor an authenticator: anyone who can reach it can send data.
fn warn_if_unprotected(id: &ComponentId, config: &crate::components::ReceiverConfig) {
    for (protocol, address) in config.unprotected_listeners() {
        tracing::warn!(receiver = %id, protocol, %address, "listening beyond loopback with neither TLS nor an authenticator: anyone who reaches this address can send data");
    }
}
