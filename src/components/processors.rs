//! The processors sieve has: the `processors:` section's config enum and the build of
//! each processor from it. A processor is added here and nowhere else outside its own
//! folder.

use crate::build::{BuildContext, BuildError};
use crate::config::{or_default, ComponentConfig, FieldError};
use crate::model::Signal;
use crate::processors::{
    attributes, batch, cardinality, filter, k8s_attributes, memory_limiter, redaction, resource,
    resource_detection, tail_sampling, Built, Processor,
};
use serde::Deserializer;

/// The `processors:` section, tagged by component type.
#[derive(Clone, Debug, PartialEq)]
pub enum ProcessorConfig {
    Batch(batch::BatchConfig),
    MemoryLimiter(memory_limiter::MemoryLimiterConfig),
    CardinalityLimit(cardinality::CardinalityConfig),
    Redaction(redaction::RedactionConfig),
    TailSampling(tail_sampling::TailSamplingConfig),
    Attributes(attributes::AttributesConfig),
    Resource(resource::ResourceConfig),
    K8sAttributes(Box<k8s_attributes::K8sAttributesConfig>),
    ResourceDetection(Box<resource_detection::ResourceDetectionConfig>),
    Filter(filter::FilterConfig),
}

impl ProcessorConfig {
    /// The component type, the `reason` its removals are counted under.
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessorConfig::Batch(_) => "batch",
            ProcessorConfig::MemoryLimiter(_) => "memory_limiter",
            ProcessorConfig::CardinalityLimit(_) => "cardinality_limit",
            ProcessorConfig::Redaction(_) => "redaction",
            ProcessorConfig::TailSampling(_) => "tail_sampling",
            ProcessorConfig::Attributes(_) => "attributes",
            ProcessorConfig::Resource(_) => "resource",
            ProcessorConfig::K8sAttributes(_) => "k8s_attributes",
            ProcessorConfig::ResourceDetection(_) => "resource_detection",
            // the reason the collector's filter counts its drops under
            ProcessorConfig::Filter(_) => "filtered",
        }
    }
}

impl ProcessorConfig {
    /// Whether the processor reads the client's address (so batches of different
    /// clients must not be merged before it).
    pub fn tells_clients_apart(&self) -> bool {
        matches!(self, ProcessorConfig::K8sAttributes(c) if c.uses_connection())
    }
}

impl ComponentConfig for ProcessorConfig {
    const SECTION: &'static str = "processors";
    const KINDS: &'static [&'static str] = &[
        "batch",
        "memory_limiter",
        "redaction",
        "cardinality_limit",
        "tail_sampling",
        "attributes",
        "resource",
        "k8s_attributes",
        "resource_detection",
        "filter",
    ];
    const ALIASES: &'static [(&'static str, &'static str)] = &[
        ("k8sattributes", "k8s_attributes"),
        ("resourcedetection", "resource_detection"),
    ];

    fn deserialize_kind<'de, D: Deserializer<'de>>(kind: &str, d: D) -> Result<Self, D::Error> {
        match kind {
            "batch" => or_default(d).map(ProcessorConfig::Batch),
            "memory_limiter" => or_default(d).map(ProcessorConfig::MemoryLimiter),
            "redaction" => or_default(d).map(ProcessorConfig::Redaction),
            "cardinality_limit" => or_default(d).map(ProcessorConfig::CardinalityLimit),
            "tail_sampling" => or_default(d).map(ProcessorConfig::TailSampling),
            "attributes" => or_default(d).map(ProcessorConfig::Attributes),
            "resource" => or_default(d).map(ProcessorConfig::Resource),
            "k8s_attributes" => or_default(d).map(|c| ProcessorConfig::K8sAttributes(Box::new(c))),
            "filter" => or_default(d).map(ProcessorConfig::Filter),
            "resource_detection" => {
                or_default(d).map(|c| ProcessorConfig::ResourceDetection(Box::new(c)))
            }
            other => unreachable!("section checks kinds before deserializing `{other}`"),
        }
    }

    fn signals(&self) -> &'static [Signal] {
        match self {
            ProcessorConfig::CardinalityLimit(_) => &[Signal::Metrics],
            ProcessorConfig::TailSampling(_) => &[Signal::Traces],
            ProcessorConfig::Attributes(c) => c.signals(),
            _ => &Signal::ALL,
        }
    }

    fn validate(&self) -> Result<(), FieldError> {
        match self {
            ProcessorConfig::Batch(c) => c.validate(),
            ProcessorConfig::MemoryLimiter(c) => c.validate(),
            ProcessorConfig::Redaction(c) => c.validate(),
            ProcessorConfig::CardinalityLimit(c) => c.validate(),
            ProcessorConfig::TailSampling(c) => c.validate(),
            ProcessorConfig::Attributes(c) => c.validate(),
            ProcessorConfig::Resource(c) => c.validate(),
            ProcessorConfig::K8sAttributes(c) => c.validate(),
            ProcessorConfig::ResourceDetection(c) => c.validate(),
            ProcessorConfig::Filter(c) => c.validate(),
        }
    }
}

impl ProcessorConfig {
    /// Builds the processor for each of a pipeline's `workers`. Processors whose state
    /// spans batches share it among the workers' instances, so that it stays exact:
    /// `tail_sampling` divided into shards by trace id, `cardinality_limit` behind one
    /// lock, `memory_limiter` one checker and gate. The others get an instance per worker.
    pub fn build_for_workers(
        &self,
        cx: &BuildContext,
        workers: usize,
    ) -> Result<Vec<Built>, BuildError> {
        let field = |e: FieldError| cx.error(&e.key, e.message);
        let built = |processor: Box<dyn Processor>| Built {
            processor,
            gate: None,
        };
        match self {
            ProcessorConfig::TailSampling(c) => {
                Ok(
                    tail_sampling::Shared::for_workers(c, workers, cx.id, cx.telemetry)
                        .map_err(field)?
                        .into_iter()
                        .map(|shared| built(Box::new(shared)))
                        .collect(),
                )
            }
            ProcessorConfig::CardinalityLimit(c) => {
                let limiter =
                    cardinality::CardinalityLimiter::new(c.clone(), cx.id, Some(cx.telemetry))
                        .map_err(field)?;
                Ok(cardinality::Shared::for_workers(limiter, workers)
                    .into_iter()
                    .map(|shared| built(Box::new(shared)))
                    .collect())
            }
            ProcessorConfig::K8sAttributes(c) => {
                Ok(k8s_attributes::K8sAttributesProcessor::for_workers(
                    c,
                    workers,
                    cx.id,
                    cx.telemetry,
                )
                .map_err(field)?
                .into_iter()
                .map(|p| built(Box::new(p)))
                .collect())
            }
            ProcessorConfig::ResourceDetection(c) => {
                // detect once for all workers
                let detected = resource_detection::ResourceDetectionProcessor::new(c);
                Ok((0..workers)
                    .map(|_| built(Box::new(detected.clone())))
                    .collect())
            }
            ProcessorConfig::MemoryLimiter(c) => {
                let (processor, gate) = memory_limiter::MemoryLimiter::start(c.clone());
                let mut gate = Some(gate);
                Ok((0..workers)
                    .map(|_| Built {
                        processor: Box::new(processor.clone()),
                        gate: gate.take(),
                    })
                    .collect())
            }
            _ => (0..workers).map(|_| self.build(cx)).collect(),
        }
    }

    /// Builds the processor for the pipeline in `cx`; fails when a pattern its
    /// validation accepted does not compile.
    pub fn build(&self, cx: &BuildContext) -> Result<Built, BuildError> {
        let field = |e: FieldError| cx.error(&e.key, e.message);
        let built = |processor: Box<dyn Processor>| Built {
            processor,
            gate: None,
        };
        Ok(match self {
            ProcessorConfig::Batch(c) => {
                let overflow: prometheus_client::metrics::family::Family<
                    crate::telemetry::ProcessorLabels,
                    prometheus_client::metrics::counter::Counter,
                > = cx.telemetry.family(
                    "batch_metadata_overflow_batches",
                    "Batches passed on unbatched: their metadata_keys values were one combination past metadata_cardinality_limit",
                );
                let counter = overflow.get_or_create_owned(&crate::telemetry::ProcessorLabels {
                    processor: cx.id.to_string(),
                });
                built(Box::new(
                    batch::BatchProcessor::new(c.clone()).with_overflow_counter(counter),
                ))
            }
            ProcessorConfig::CardinalityLimit(c) => built(Box::new(
                cardinality::CardinalityLimiter::new(c.clone(), cx.id, Some(cx.telemetry))
                    .map_err(field)?,
            )),
            ProcessorConfig::Redaction(c) => built(Box::new(
                redaction::RedactionProcessor::new(c.clone(), cx.id, cx.pipeline, cx.telemetry)
                    .map_err(field)?,
            )),
            ProcessorConfig::TailSampling(c) => built(Box::new(
                tail_sampling::TailSampler::new(c.clone(), cx.id, cx.telemetry).map_err(field)?,
            )),
            ProcessorConfig::Attributes(c) => built(Box::new(
                attributes::AttributesProcessor::new(c).map_err(field)?,
            )),
            ProcessorConfig::Resource(c) => built(Box::new(
                resource::ResourceProcessor::new(c).map_err(field)?,
            )),
            ProcessorConfig::Filter(c) => {
                built(Box::new(filter::FilterProcessor::new(c).map_err(field)?))
            }
            ProcessorConfig::K8sAttributes(_) | ProcessorConfig::ResourceDetection(_) => {
                return self.build_for_workers(cx, 1).map(|mut one| one.remove(0))
            }
            ProcessorConfig::MemoryLimiter(c) => {
                let (processor, gate) = memory_limiter::MemoryLimiter::start(c.clone());
                Built {
                    processor: Box::new(processor),
                    gate: Some(gate),
                }
            }
        })
    }
}
