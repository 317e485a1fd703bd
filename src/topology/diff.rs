//! What a reload does to each receiver and pipeline, decided as a pure function of the
//! running configuration and the new one (vector's `ConfigDiff` is the model). The
//! topology then only carries the decision out, so every rule below is table-tested
//! here without starting anything.
//!
//! Receivers (only those some pipeline lists run):
//! - unchanged and not serving TLS: kept as they are (sockets, connections, settings);
//! - changed (or an extension it names changed), or serving TLS or authenticating from
//!   files: updated in place — listeners whose address did not change are kept, and
//!   certificate and htpasswd files are read again (rotation);
//! - new: started; a new receiver listening where a stopped one listened (a rename)
//!   takes over that socket instead of failing to bind it;
//! - no longer listed: stopped.
//!
//! Pipelines are compared by [`Signature`] (queue, processors and exporters with their
//! configs): unchanged ones keep their queue, worker and exporters; a changed one is
//! rebuilt — the new one takes the data from then on, while the old one drains what it
//! holds (its queue, processors and exporter queues) into its old exporters, so nothing
//! queued is lost; removed ones are retired the same way.

use super::pipeline::Signature;
use crate::components::Config;
use crate::config::{ComponentConfig, ComponentId, PipelineId};
use std::collections::BTreeMap;

/// What a reload does to one receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiverChange {
    /// Left as it runs.
    Keep,
    /// Updated in place; `tls_only` when its config is unchanged and only its
    /// certificate files are read again.
    Update { tls_only: bool },
    /// Started; takes over the sockets of these stopped receivers where it listens on
    /// their addresses.
    Start { takes_over: Vec<ComponentId> },
    /// Stopped.
    Stop,
}

/// What a reload does to one pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PipelineChange {
    /// Keeps running, its queue and components untouched.
    Keep,
    /// Started anew while the old one drains; `changed` names what differs
    /// (`queue`, `processors`, `exporters`).
    Rebuild { changed: Vec<&'static str> },
    /// Started.
    Start,
    /// Drained and stopped.
    Retire,
}

/// Every receiver and pipeline of the running and the new configuration, with what the
/// reload does to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    pub receivers: BTreeMap<ComponentId, ReceiverChange>,
    pub pipelines: BTreeMap<PipelineId, PipelineChange>,
}

impl ConfigDiff {
    /// The diff from `running` (none at start) to `new`.
    pub fn between(running: Option<&Config>, new: &Config) -> ConfigDiff {
        ConfigDiff {
            receivers: receiver_changes(running, new),
            pipelines: pipeline_changes(running, new),
        }
    }

    /// Receivers whose sockets a started receiver takes over.
    pub fn handing_over(&self) -> impl Iterator<Item = &ComponentId> {
        self.receivers.values().flat_map(|change| match change {
            ReceiverChange::Start { takes_over } => takes_over.as_slice(),
            _ => &[],
        })
    }
}

fn receiver_changes(
    running: Option<&Config>,
    new: &Config,
) -> BTreeMap<ComponentId, ReceiverChange> {
    let before = running.map(used_receivers).unwrap_or_default();
    let after = used_receivers(new);
    let stopped: Vec<&ComponentId> = before.iter().filter(|id| !after.contains(id)).collect();
    let mut changes = BTreeMap::new();
    for id in &after {
        let wanted = &new.receivers[id];
        let reads_files = wanted.serves_tls() || !wanted.extension_references().is_empty();
        let change = match running.filter(|_| before.contains(id)) {
            Some(old) if same_receiver(old, new, id) && !reads_files => ReceiverChange::Keep,
            Some(old) => ReceiverChange::Update {
                tls_only: same_receiver(old, new, id),
            },
            None => ReceiverChange::Start {
                takes_over: stopped
                    .iter()
                    .filter(|old_id| shares_an_address(running, old_id, new, id))
                    .map(|old_id| (*old_id).clone())
                    .collect(),
            },
        };
        changes.insert(id.clone(), change);
    }
    for id in stopped {
        changes.insert(id.clone(), ReceiverChange::Stop);
    }
    changes
}

/// Whether receiver `id` and the extensions it names are configured alike in both.
fn same_receiver(old: &Config, new: &Config, id: &ComponentId) -> bool {
    let named = |config: &Config| {
        config.receivers[id]
            .extension_references()
            .into_iter()
            .map(|r| {
                ComponentId::parse(&r.id)
                    .ok()
                    .and_then(|e| config.extensions.get(&e).cloned())
            })
            .collect::<Vec<_>>()
    };
    old.receivers[id] == new.receivers[id] && named(old) == named(new)
}

/// Whether receiver `old_id` of `running` and `new_id` of `new` are configured on a
/// common address (an ephemeral port 0 matches nothing).
fn shares_an_address(
    running: Option<&Config>,
    old_id: &ComponentId,
    new: &Config,
    new_id: &ComponentId,
) -> bool {
    let Some(old) = running.and_then(|c| c.receivers.get(old_id)) else {
        return false;
    };
    let wanted = new.receivers[new_id].listen_addresses();
    old.listen_addresses()
        .iter()
        .any(|addr| addr.port() != 0 && wanted.contains(addr))
}

fn pipeline_changes(
    running: Option<&Config>,
    new: &Config,
) -> BTreeMap<PipelineId, PipelineChange> {
    let mut changes = BTreeMap::new();
    for (id, pipeline) in &new.pipelines {
        let signature = Signature::of(new, pipeline);
        let old = running.and_then(|c| Some(Signature::of(c, c.pipelines.get(id)?)));
        let change = match old {
            None => PipelineChange::Start,
            Some(old) if old == signature => PipelineChange::Keep,
            Some(old) => PipelineChange::Rebuild {
                changed: old.differences(&signature),
            },
        };
        changes.insert(id.clone(), change);
    }
    for id in running.iter().flat_map(|c| c.pipelines.keys()) {
        if !new.pipelines.contains_key(id) {
            changes.insert(id.clone(), PipelineChange::Retire);
        }
    }
    changes
}

/// Receivers that some pipeline lists, in id order.
pub fn used_receivers(config: &Config) -> Vec<ComponentId> {
    let mut ids: Vec<ComponentId> = config
        .pipelines
        .values()
        .flat_map(|p| p.receivers.iter().cloned())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests;
