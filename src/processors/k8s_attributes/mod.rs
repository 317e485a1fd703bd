//! The `k8s_attributes` processor (alias `k8sattributes`), as the collector's contrib
//! processor: finds the pod each resource came from ([`association`]) and adds the pod's
//! metadata to the resource — namespace, pod name and uid, start time, node, the
//! Deployment / ReplicaSet / StatefulSet / DaemonSet / Job / CronJob that owns it,
//! container image and id, and chosen labels and annotations of the pod or its
//! namespace. Attributes the resource already has are not overwritten.
//!
//! Pod metadata comes from watches of the Kubernetes API ([`watch`]) into a bounded
//! cache of only the extracted fields ([`cache`]) — never whole API objects, which is
//! how the collector's processor grows its heap. Before the first list completes, data
//! goes on untagged (counted as misses) unless `wait_for_metadata` holds the first
//! batch until it does, or until `wait_for_metadata_timeout`. Items are never held
//! back otherwise.
//!
//! Like `resource`, it works on the encoded form: only each `Resource` is decoded and
//! written again. The `connection` source reads the address of the client that sent
//! the data; a `batch` processor placed before this one keeps the batches of different
//! clients apart for it (see [`crate::processors::batch::BatchConfig`]).

pub mod association;
pub mod cache;
pub mod config;
pub mod watch;

use super::resource::rewrite_resources;
use super::Processor;
use crate::config::FieldError;
use crate::model::Batch;
use crate::telemetry::{ProcessorLabels, Telemetry};
use association::Association;
use cache::{Cache, Extractor};
pub use config::K8sAttributesConfig;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct AssociationLabels {
    processor: String,
    source: String,
    result: String,
}

/// A cache and the watches filling it, shared by every pipeline whose processor of
/// the same id has the same configuration (the collector runs one set of watches per
/// pipeline; one is enough).
struct Source {
    cache: Arc<Cache>,
    watches: watch::Watches,
}

/// The sources running, by processor id and configuration; an entry goes when its last
/// user does.
static SOURCES: parking_lot::Mutex<Vec<(String, K8sAttributesConfig, std::sync::Weak<Source>)>> =
    parking_lot::Mutex::new(Vec::new());

/// The source for `config`, started unless one is running.
fn source_for(
    processor: &str,
    config: &K8sAttributesConfig,
    metrics: watch::WatchMetrics,
) -> Result<Arc<Source>, FieldError> {
    let mut sources = SOURCES.lock();
    sources.retain(|(_, _, source)| source.strong_count() > 0);
    if let Some(source) = sources
        .iter()
        .find(|(id, c, _)| id == processor && c == config)
        .and_then(|(_, _, source)| source.upgrade())
    {
        return Ok(source);
    }
    let cache = Arc::new(Cache::new(
        config.max_cache_mib.saturating_mul(1 << 20),
        config.pod_delete_grace_period,
    ));
    let extractor = Arc::new(Extractor::new(config));
    let watches = watch::start(config, Arc::clone(&cache), extractor, metrics)
        .map_err(|e| FieldError::new("auth_type", e))?;
    let source = Arc::new(Source { cache, watches });
    sources.push((
        processor.to_string(),
        config.clone(),
        Arc::downgrade(&source),
    ));
    Ok(source)
}

/// What every worker's instance shares: the pod source, the counters.
struct Shared {
    /// `None` with `passthrough`.
    source: Option<Arc<Source>>,
    association: Association,
    wait_until: Option<Instant>,
    associations: Family<AssociationLabels, Counter>,
    processor: String,
    passthrough: bool,
}

/// One worker's instance.
pub struct K8sAttributesProcessor {
    shared: Arc<Shared>,
    waited: bool,
}

impl K8sAttributesProcessor {
    /// Builds the processor for `workers` workers, which share one cache and one set of
    /// watches; starts the watches (unless `passthrough`).
    pub fn for_workers(
        config: &K8sAttributesConfig,
        workers: usize,
        processor: &str,
        telemetry: &Telemetry,
    ) -> Result<Vec<K8sAttributesProcessor>, FieldError> {
        let labels = ProcessorLabels {
            processor: processor.to_string(),
        };
        let counter = |name: &'static str, help: &str| {
            let family: Family<ProcessorLabels, Counter> = telemetry.family(name, help);
            family.get_or_create_owned(&labels)
        };
        let gauge = |name: &'static str, help: &str| {
            let family: Family<ProcessorLabels, Gauge> = telemetry.family(name, help);
            family.get_or_create_owned(&labels)
        };
        let metrics = watch::WatchMetrics {
            restarts: counter(
                "k8s_attributes_watch_restarts",
                "Kubernetes API watches that failed and started again (410 Gone included)",
            ),
            not_cached: counter(
                "k8s_attributes_pods_not_cached",
                "Pods not cached: the cache was at max_cache_mib with live pods",
            ),
            pods_cached: gauge(
                "k8s_attributes_pods_cached",
                "Pods in the cache, those in their delete grace period included",
            ),
            cache_bytes: gauge(
                "k8s_attributes_cache_bytes",
                "Estimated bytes the pod, ReplicaSet and namespace cache takes",
            ),
        };
        let source = match config.passthrough {
            true => None,
            false => Some(source_for(processor, config, metrics)?),
        };
        let shared = Arc::new(Shared {
            source,
            association: Association::new(&config.pod_association),
            wait_until: config
                .wait_for_metadata
                .then(|| Instant::now().checked_add(config.wait_for_metadata_timeout))
                .flatten(),
            associations: telemetry.family(
                "k8s_attributes_associations",
                "Resources looked up, by the source that identified the pod and result (hit, miss, no_identifier)",
            ),
            processor: processor.to_string(),
            passthrough: config.passthrough,
        });
        Ok((0..workers.max(1))
            .map(|_| K8sAttributesProcessor {
                shared: Arc::clone(&shared),
                waited: false,
            })
            .collect())
    }

    /// With `wait_for_metadata`, the first call waits for the first list (or the
    /// timeout); no call after it waits.
    fn wait_for_metadata(&mut self) {
        if std::mem::replace(&mut self.waited, true) {
            return;
        }
        if let (Some(deadline), Some(source)) = (self.shared.wait_until, &self.shared.source) {
            if !source.watches.synced.wait_until(deadline) {
                tracing::warn!(
                    processor = %self.shared.processor,
                    "k8s_attributes: the first list of pods did not complete within wait_for_metadata_timeout; data goes on untagged until it does"
                );
            }
        }
    }

    /// Adds what is known of the resource's pod, if `budget` (bytes the batch may still
    /// grow by) allows; says which source identified it and how the lookup went.
    fn tag(
        &self,
        resource: &mut Resource,
        client: Option<std::net::IpAddr>,
        budget: &mut usize,
    ) -> (&'static str, &'static str) {
        let shared = &self.shared;
        let cache = shared.source.as_ref().map(|s| &*s.cache);
        let found = shared.association.find(cache, &resource.attributes, client);
        let source = found.source.map_or("none", |s| s.label());
        let additions: Vec<(String, String)> = match (shared.passthrough, found.pod, cache) {
            // as the collector: the connection's address only
            (true, ..) => client
                .map(|ip| vec![("k8s.pod.ip".to_string(), ip.to_string())])
                .unwrap_or_default(),
            (false, Some(pod), Some(cache)) => {
                let container =
                    association::string_attribute(&resource.attributes, "k8s.container.name");
                cache.attributes(&pod, container)
            }
            _ => Vec::new(),
        };
        let result = match (&found.source, additions.is_empty()) {
            (None, _) => "no_identifier",
            (Some(_), true) => "miss",
            (Some(_), false) => "hit",
        };
        let growth: usize = additions.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
        if growth > *budget {
            return (source, "over_budget");
        }
        *budget -= growth;
        for (key, value) in additions {
            insert(&mut resource.attributes, &key, value);
        }
        (source, result)
    }
}

/// Adds `key` unless the resource has it.
fn insert(attributes: &mut Vec<KeyValue>, key: &str, value: String) {
    if attributes.iter().any(|kv| kv.key == key) {
        return;
    }
    attributes.push(KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    });
}

/// How much a batch may grow by the attributes added: twice its encoded size, and 1 MiB.
/// A real batch has a resource per pod and grows far less; a request of many tiny
/// resources (each an item of a few bytes) would otherwise grow a hundredfold.
fn growth_budget(batch: &Batch) -> usize {
    batch
        .encoded_len()
        .saturating_mul(2)
        .saturating_add(1 << 20)
}

impl Processor for K8sAttributesProcessor {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        self.wait_for_metadata();
        let client = batch.client();
        let mut budget = growth_budget(&batch);
        // lookups are counted once per batch and outcome, not per resource
        let mut lookups: Vec<((&str, &str), u64)> = Vec::new();
        rewrite_resources(&mut batch, |resource| {
            let outcome = self.tag(resource, client, &mut budget);
            match lookups.iter_mut().find(|(o, _)| *o == outcome) {
                Some((_, n)) => *n += 1,
                None => lookups.push((outcome, 1)),
            }
        });
        for ((source, result), n) in lookups {
            self.shared
                .associations
                .get_or_create(&AssociationLabels {
                    processor: self.shared.processor.clone(),
                    source: source.to_string(),
                    result: result.to_string(),
                })
                .inc_by(n);
        }
        out.push(batch);
    }
}

#[cfg(test)]
mod tests;
