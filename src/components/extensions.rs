//! The extensions sieve has: the `extensions:` section's config enum. An extension is
//! added here and nowhere else outside its own folder.

use crate::auth::{
    Authenticator, Basic, BasicAuthConfig, Bearer, BearerTokenConfig, ClientCredentials,
    HeadersSetterConfig, Oidc, OidcConfig,
};
use crate::config::{or_default, ComponentConfig, FieldError};
use crate::model::Signal;
use crate::storage::FileStorageConfig;
use serde::{Deserialize, Deserializer};

/// The `extensions:` section, tagged by component type.
#[derive(Clone, Debug, PartialEq)]
pub enum ExtensionConfig {
    /// A directory for persistent queues (`sending_queue.storage`).
    FileStorage(FileStorageConfig),
    /// Bearer tokens (see [`crate::auth`]).
    BearerTokenAuth(BearerTokenConfig),
    /// HTTP basic authentication (see [`crate::auth`]).
    BasicAuth(BasicAuthConfig),
    /// JWTs from an OpenID Connect issuer (see [`crate::auth::Oidc`]).
    Oidc(OidcConfig),
    /// Exporter request headers from the data's request metadata (a tenant header).
    HeadersSetter(HeadersSetterConfig),
}

impl ComponentConfig for ExtensionConfig {
    const SECTION: &'static str = "extensions";
    const KINDS: &'static [&'static str] = &[
        "file_storage",
        "bearer_token_auth",
        "basic_auth",
        "oidc",
        "headers_setter",
    ];
    const ALIASES: &'static [(&'static str, &'static str)] = &[
        ("bearertokenauth", "bearer_token_auth"),
        ("basicauth", "basic_auth"),
    ];

    fn deserialize_kind<'de, D: Deserializer<'de>>(kind: &str, d: D) -> Result<Self, D::Error> {
        match kind {
            "file_storage" => or_default(d).map(ExtensionConfig::FileStorage),
            "bearer_token_auth" => or_default(d).map(ExtensionConfig::BearerTokenAuth),
            "basic_auth" => or_default(d).map(ExtensionConfig::BasicAuth),
            "oidc" => OidcConfig::deserialize(d).map(ExtensionConfig::Oidc),
            "headers_setter" => {
                HeadersSetterConfig::deserialize(d).map(ExtensionConfig::HeadersSetter)
            }
            other => unreachable!("section checks kinds before deserializing `{other}`"),
        }
    }

    fn signals(&self) -> &'static [Signal] {
        &[]
    }

    fn validate(&self) -> Result<(), FieldError> {
        match self {
            ExtensionConfig::FileStorage(c) => c.validate(),
            ExtensionConfig::BearerTokenAuth(c) => c.validate(),
            ExtensionConfig::BasicAuth(c) => c.validate(),
            ExtensionConfig::Oidc(c) => c.validate(),
            ExtensionConfig::HeadersSetter(c) => c.validate(),
        }
    }

    fn roles(&self) -> &'static [&'static str] {
        match self {
            ExtensionConfig::FileStorage(_) => &["storage"],
            ExtensionConfig::Oidc(_) => &["server_auth"],
            ExtensionConfig::HeadersSetter(_) => &["client_auth"],
            ExtensionConfig::BearerTokenAuth(_) => &["server_auth", "client_auth"],
            ExtensionConfig::BasicAuth(c) => match (&c.htpasswd, &c.client_auth) {
                (Some(_), Some(_)) => &["server_auth", "client_auth"],
                (Some(_), None) => &["server_auth"],
                (None, _) => &["client_auth"],
            },
        }
    }
}

impl ExtensionConfig {
    /// The file storage this is, if it is one.
    pub fn file_storage(&self) -> Option<&FileStorageConfig> {
        match self {
            ExtensionConfig::FileStorage(c) => Some(c),
            _ => None,
        }
    }

    /// The credentials an exporter naming this sends, if it is a client authenticator.
    pub fn client_credentials(&self) -> Option<ClientCredentials> {
        match self {
            ExtensionConfig::BearerTokenAuth(c) => Some(ClientCredentials::Bearer(c.clone())),
            ExtensionConfig::BasicAuth(c) => c.client_auth.clone().map(ClientCredentials::Basic),
            ExtensionConfig::HeadersSetter(c) => Some(ClientCredentials::Headers(c.clone())),
            ExtensionConfig::FileStorage(_) | ExtensionConfig::Oidc(_) => None,
        }
    }

    /// Builds the server authenticator this is, if it is one.
    pub fn server_authenticator(&self) -> Option<Result<Authenticator, String>> {
        match self {
            ExtensionConfig::BearerTokenAuth(c) => Some(Bearer::new(c).map(Authenticator::Bearer)),
            ExtensionConfig::BasicAuth(c) => c
                .htpasswd
                .as_ref()
                .map(|h| Basic::new(h).map(Authenticator::Basic)),
            ExtensionConfig::Oidc(c) => Some(Oidc::start(c).map(Authenticator::Oidc)),
            ExtensionConfig::FileStorage(_) | ExtensionConfig::HeadersSetter(_) => None,
        }
    }
}
