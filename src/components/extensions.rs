//! The extensions sieve has: the `extensions:` section's config enum. An extension is
//! added here and nowhere else outside its own folder.

use crate::config::{or_default, ComponentConfig, FieldError};
use crate::model::Signal;
use crate::storage::FileStorageConfig;
use serde::Deserializer;

/// The `extensions:` section, tagged by component type.
#[derive(Clone, Debug, PartialEq)]
pub enum ExtensionConfig {
    /// A directory for persistent queues (`sending_queue.storage`).
    FileStorage(FileStorageConfig),
}

impl ComponentConfig for ExtensionConfig {
    const SECTION: &'static str = "extensions";
    const KINDS: &'static [&'static str] = &["file_storage"];

    fn deserialize_kind<'de, D: Deserializer<'de>>(kind: &str, d: D) -> Result<Self, D::Error> {
        match kind {
            "file_storage" => or_default(d).map(ExtensionConfig::FileStorage),
            other => unreachable!("section checks kinds before deserializing `{other}`"),
        }
    }

    fn signals(&self) -> &'static [Signal] {
        &[]
    }

    fn validate(&self) -> Result<(), FieldError> {
        match self {
            ExtensionConfig::FileStorage(c) => c.validate(),
        }
    }

    fn roles(&self) -> &'static [&'static str] {
        match self {
            ExtensionConfig::FileStorage(_) => &["storage"],
        }
    }
}

impl ExtensionConfig {
    /// The file storage this is, if it is one.
    pub fn file_storage(&self) -> Option<&FileStorageConfig> {
        match self {
            ExtensionConfig::FileStorage(c) => Some(c),
        }
    }
}
