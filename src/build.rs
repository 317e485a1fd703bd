//! Building a component: what every build gets ([`BuildContext`]) and may fail with
//! ([`BuildError`]).
//!
//! Every processor and exporter config has one build entry point of one shape,
//! `build(&self, cx: &BuildContext) -> Result<_, BuildError>`. Builds run in a reload's
//! prepare step, after validation and before anything running changes: a build that
//! fails (a certificate removed since validation read it, a Kafka client that cannot be
//! created) fails the reload and leaves the running configuration serving, as vector's
//! `topology::builder` does. A build registers the component's own metric families
//! through [`BuildContext::telemetry`] and starts no task: tasks and the pipeline's
//! worker start when the reload commits (a memory limiter's checker thread starts at
//! build and ends by itself when a discarded build drops its gate).
//!
//! The context carries no drop counters on purpose: a processor's removals are counted
//! by the pipeline worker (items a call takes in and neither emits nor holds, under the
//! processor's type) and an exporter's drops by its queue, so every item is counted in
//! one place and the ledgers add up; a component counts only its own details (which
//! policy sampled, which rule redacted) in families it registers.
//!
//! Receivers are built once for every pipeline they feed, so their build (`prepare`,
//! which binds their listeners) takes the receiver's id and the sockets a reload hands
//! over instead of a pipeline; it fails with the same [`BuildError`].

use crate::model::Signal;
use crate::telemetry::Telemetry;
use std::fmt;
use std::sync::Arc;

/// What a processor or exporter is built for.
pub struct BuildContext<'a> {
    /// The component's id, `type` or `type/name`.
    pub id: &'a str,
    /// The pipeline it runs in.
    pub pipeline: &'a str,
    /// The pipeline's signal.
    pub signal: Signal,
    /// Where the component registers its own metric families.
    pub telemetry: &'a Arc<Telemetry>,
}

impl BuildContext<'_> {
    /// A failure to build this component, at `key` of its config.
    pub fn error(&self, key: &str, message: impl fmt::Display) -> BuildError {
        BuildError::new(self.id, key, message)
    }
}

/// A component that could not be built from a valid config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    /// The component's id.
    pub component: String,
    /// The key of its config the failure comes from (empty for the whole component).
    pub key: String,
    /// What went wrong.
    pub message: String,
}

impl BuildError {
    pub fn new(component: &str, key: &str, message: impl fmt::Display) -> BuildError {
        BuildError {
            component: component.to_string(),
            key: key.to_string(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key.as_str() {
            "" => write!(f, "cannot build `{}`: {}", self.component, self.message),
            key => write!(
                f,
                "cannot build `{}`: {}: {}",
                self.component, key, self.message
            ),
        }
    }
}

impl std::error::Error for BuildError {}
