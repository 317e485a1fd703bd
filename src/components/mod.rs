//! The one list of components: every receiver, processor and exporter sieve has, by the
//! type name a config uses, with the dispatch from each section's config enum to the
//! component's own code.
//!
//! `config/` is the generic machinery (sections, expansion, key-and-line errors,
//! secrets, durations) and names no component; [`Sieve`] tells it which components
//! exist, and [`Config`] is the configuration the topology runs. Dispatch is an
//! exhaustive `match` over each enum, so adding a variant makes the compiler point at
//! every place the new component must be handled — all of them in this module. Adding
//! a component means its own folder (config struct with `validate`, `build`), one
//! variant and its arms here, and its documentation in the README.

#[cfg(test)]
mod compliance;
#[cfg(test)]
mod connector_tests;
mod connectors;
mod exporters;
mod extensions;
mod processors;
mod receivers;
#[cfg(test)]
mod tests;

pub use connectors::ConnectorConfig;
pub use exporters::{Exporter, ExporterConfig};
pub use extensions::ExtensionConfig;
pub use processors::ProcessorConfig;
pub use receivers::{Extensions, PreparedReceiver, ReceiverConfig, RunningReceiver};

/// The components of this build of sieve.
#[derive(Clone, Debug, PartialEq)]
pub struct Sieve;

impl crate::config::Components for Sieve {
    type Extension = ExtensionConfig;
    type Receiver = ReceiverConfig;
    type Processor = ProcessorConfig;
    type Exporter = ExporterConfig;
    type Connector = ConnectorConfig;

    /// A pipeline keeps one persistent queue: its exporters name one storage at most, and
    /// such a pipeline runs on one worker (it reads its log in order).
    fn check_pipeline(
        config: &Config,
        pipeline: &crate::config::PipelineConfig,
    ) -> Result<(), (&'static str, String)> {
        use crate::config::ComponentConfig;
        if pipeline.workers.is_some_and(|w| w > 1) && has_storage(config, pipeline) {
            return Err((
                "workers",
                "a pipeline with a persistent queue runs on one worker (it reads its log in order)"
                    .into(),
            ));
        }
        let mut storages: Vec<String> = pipeline
            .exporters
            .iter()
            .flat_map(|id| config.exporters[id].extension_references())
            .filter(|r| r.role == "storage")
            .map(|r| r.id)
            .collect();
        storages.sort();
        storages.dedup();
        match storages.as_slice() {
            [first, second, ..] => Err((
                "exporters",
                format!(
                    "its exporters name two storages, `{first}` and `{second}`: a pipeline keeps one log"
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// A loaded, checked configuration of sieve's components.
pub type Config = crate::config::Config<Sieve>;

/// Whether an exporter of `pipeline` names a storage (a persistent queue).
pub fn has_storage(config: &Config, pipeline: &crate::config::PipelineConfig) -> bool {
    use crate::config::ComponentConfig;
    pipeline.exporters.iter().any(|id| {
        config.exporters[id]
            .extension_references()
            .iter()
            .any(|r| r.role == "storage")
    })
}
