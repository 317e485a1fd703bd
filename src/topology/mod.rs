//! The running collector: receivers and pipelines built from a [`Config`], reloaded by
//! diff, drained on shutdown.
//!
//! A reload follows vector's `running.rs` shape: compare the new config with the running
//! one by component id, keep what did not change, and prepare everything that can fail
//! (binding new listeners) before touching what runs, so a failed reload changes nothing.
//! Pipelines are compared by [`pipeline::Signature`] (queue, processors, exporters): an
//! unchanged pipeline keeps its queue and workers; a changed one is started anew, the
//! receivers are re-routed to it, and the old one drains its queue into its exporters in
//! the background. Receivers whose listen address did not change keep their sockets and
//! connections; only their settings and routes are swapped. A new receiver whose address
//! belongs to a receiver the reload removes (a rename) takes over that socket through a
//! [`Handover`] instead of failing to bind it. Receivers serving TLS are updated on every
//! reload, changed or not, so their certificate files are read again (rotation).

pub mod pipeline;

use crate::build::BuildError;
use crate::components::{Config, PreparedReceiver, RunningReceiver};
use crate::config::{ComponentId, PipelineId};
use crate::net::Handover;
use crate::queue::Routes;
use crate::telemetry::Telemetry;
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
}

impl Topology {
    pub fn new(telemetry: Arc<Telemetry>) -> Topology {
        Topology {
            telemetry,
            config: None,
            receivers: BTreeMap::new(),
            pipelines: BTreeMap::new(),
            retiring: Vec::new(),
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
        let prepared = self.prepare_receivers(&config).map_err(|e| e.to_string())?;
        let built = self.build_pipelines(&config).map_err(|e| e.to_string())?;
        self.replace_pipelines(&config, built);
        self.route_receivers(&config, prepared).await;
        self.config = Some(config);
        Ok(())
    }

    /// Binds the listeners of new and changed receivers.
    fn prepare_receivers(
        &self,
        config: &Config,
    ) -> Result<BTreeMap<ComponentId, PreparedReceiver>, BuildError> {
        let mut prepared = BTreeMap::new();
        let used = used_receivers(config);
        let mut handover = Handover::default();
        for (id, retiring) in &self.receivers {
            if !used.contains(id) {
                retiring.offer(&mut handover);
            }
        }
        for id in used {
            let wanted = &config.receivers[&id];
            let current = self.config.as_ref().and_then(|c| c.receivers.get(&id));
            match self.receivers.get(&id) {
                Some(_) if current == Some(wanted) && !wanted.serves_tls() => {}
                Some(running) => {
                    prepared.insert(id.clone(), running.prepare_update(&id, wanted)?);
                }
                None => {
                    prepared.insert(id.clone(), wanted.prepare(&id, &handover)?);
                }
            }
        }
        Ok(prepared)
    }

    /// Builds the pipelines that are new or changed, starting none of them.
    fn build_pipelines(
        &self,
        config: &Config,
    ) -> Result<BTreeMap<PipelineId, BuiltPipeline>, BuildError> {
        let mut built = BTreeMap::new();
        for (id, pipeline_config) in &config.pipelines {
            let signature = Signature::of(config, pipeline_config);
            if self
                .pipelines
                .get(id)
                .is_some_and(|running| running.signature == signature)
            {
                continue;
            }
            built.insert(
                id.clone(),
                BuiltPipeline::build(id, signature, &self.telemetry)?,
            );
        }
        Ok(built)
    }

    /// Starts the built pipelines, keeping unchanged ones; retires changed and removed
    /// ones.
    fn replace_pipelines(
        &mut self,
        config: &Config,
        mut built: BTreeMap<PipelineId, BuiltPipeline>,
    ) {
        let mut old = std::mem::take(&mut self.pipelines);
        for id in config.pipelines.keys() {
            let previous = old.remove(id);
            let pipeline = match built.remove(id) {
                Some(new) => {
                    if let Some(previous) = previous {
                        tracing::info!(pipeline = %id, "pipeline changed; draining the old one");
                        self.retiring.push(previous.retire());
                    }
                    new.start(&self.telemetry)
                }
                None => previous.expect("build_pipelines builds every pipeline not running"),
            };
            self.pipelines.insert(id.clone(), pipeline);
        }
        for (id, removed) in old {
            tracing::info!(pipeline = %id, "pipeline removed; draining it");
            self.retiring.push(removed.retire());
        }
    }

    /// Points every receiver at its pipelines, starting, updating and stopping receivers.
    async fn route_receivers(
        &mut self,
        config: &Config,
        mut prepared: BTreeMap<ComponentId, PreparedReceiver>,
    ) {
        let used = used_receivers(config);
        for id in &used {
            let mut routes = Routes::default();
            for (pipeline_id, pipeline) in &config.pipelines {
                if pipeline.receivers.contains(id) {
                    routes.add(Arc::clone(&self.pipelines[pipeline_id].input));
                }
            }
            let routes = Arc::new(routes);
            match (self.receivers.get_mut(id), prepared.remove(id)) {
                (Some(running), Some(update)) => {
                    running.update(update).await;
                    running.set_routes(routes);
                }
                (Some(running), None) => running.set_routes(routes),
                (None, Some(new)) => {
                    self.receivers.insert(
                        id.clone(),
                        RunningReceiver::start(id, new, routes, &self.telemetry),
                    );
                }
                (None, None) => unreachable!("prepare_receivers binds every new receiver"),
            }
        }
        let removed: Vec<ComponentId> = self
            .receivers
            .keys()
            .filter(|id| !used.contains(id))
            .cloned()
            .collect();
        for id in removed {
            if let Some(receiver) = self.receivers.remove(&id) {
                tracing::info!(receiver = %id, "receiver removed");
                receiver.stop().await;
            }
        }
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
        for pipeline in draining {
            pipeline.finish(deadline).await;
        }
    }

    /// Waits for pipelines retired by earlier reloads that have finished draining.
    pub fn reap_retired(&mut self) -> usize {
        let before = self.retiring.len();
        self.retiring.retain(|r| !r.is_finished());
        before - self.retiring.len()
    }
}

/// Receivers that some pipeline lists, in id order.
fn used_receivers(config: &Config) -> Vec<ComponentId> {
    let mut ids: Vec<ComponentId> = config
        .pipelines
        .values()
        .flat_map(|p| p.receivers.iter().cloned())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}
