//! `pod_association`: how a resource finds its pod, as the collector's processor does.
//! Rules are tried in order; a rule applies when all its sources have a value, and
//! finds the pod the first source names if every other source agrees with it. Without
//! rules, the collector's defaults: the `k8s.pod.ip` resource attribute, then the `ip`
//! resource attribute, then the client's address (`connection`), then `host.name`.

use super::cache::{Cache, PodInfo};
use super::config::{AssociationConfig, SourceConfig};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use std::net::IpAddr;
use std::sync::Arc;

/// Where one identifier comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `k8s.pod.ip` resource attribute.
    PodIp,
    /// The `k8s.pod.uid` resource attribute.
    PodUid,
    /// The `host.name` resource attribute, read as a pod IP.
    HostName,
    /// The `ip` resource attribute (the collector's default rules read it).
    Ip,
    /// The address of the client that sent the data.
    Connection,
}

impl Source {
    pub fn of(config: &SourceConfig) -> Result<Source, String> {
        match (config.from.as_str(), config.name.as_deref()) {
            ("connection", None) => Ok(Source::Connection),
            ("connection", Some(_)) => Err("`from: connection` takes no `name`".into()),
            ("resource_attribute", Some("k8s.pod.ip")) => Ok(Source::PodIp),
            ("resource_attribute", Some("k8s.pod.uid")) => Ok(Source::PodUid),
            ("resource_attribute", Some("host.name")) => Ok(Source::HostName),
            ("resource_attribute", Some(other)) => Err(format!(
                "`{other}`: sieve associates by `k8s.pod.ip`, `k8s.pod.uid` or `host.name`"
            )),
            ("resource_attribute", None) => Err("`from: resource_attribute` needs a `name`".into()),
            (other, _) => Err(format!(
                "`from: {other}` is not `resource_attribute` or `connection`"
            )),
        }
    }

    /// The label of association metrics.
    pub fn label(self) -> &'static str {
        match self {
            Source::PodIp => "k8s.pod.ip",
            Source::PodUid => "k8s.pod.uid",
            Source::HostName => "host.name",
            Source::Ip => "ip",
            Source::Connection => "connection",
        }
    }

    /// This source's identifier for a resource with `attributes` sent by `client`.
    fn identifier(self, attributes: &[KeyValue], client: Option<IpAddr>) -> Option<Identifier> {
        let ip = |key: &str| {
            string_attribute(attributes, key)?
                .parse()
                .ok()
                .map(Identifier::Ip)
        };
        match self {
            Source::PodIp => ip("k8s.pod.ip"),
            Source::HostName => ip("host.name"),
            Source::Ip => ip("ip"),
            Source::PodUid => string_attribute(attributes, "k8s.pod.uid")
                .filter(|uid| !uid.is_empty())
                .map(|uid| Identifier::Uid(uid.to_string())),
            Source::Connection => client.map(Identifier::Ip),
        }
    }
}

/// A pod identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Identifier {
    Ip(IpAddr),
    Uid(String),
}

impl Identifier {
    fn find(&self, cache: &Cache) -> Option<Arc<PodInfo>> {
        match self {
            Identifier::Ip(ip) => cache.by_ip(*ip),
            Identifier::Uid(uid) => cache.by_uid(uid),
        }
    }

    fn names(&self, pod: &PodInfo) -> bool {
        match self {
            Identifier::Ip(ip) => pod.ip == Some(*ip),
            Identifier::Uid(uid) => pod.uid == *uid,
        }
    }
}

/// The rules, compiled.
pub struct Association(Vec<Vec<Source>>);

/// The outcome for one resource: the pod found, and the source of the rule that
/// applied (`None`: no rule had its identifiers).
pub struct Found {
    pub pod: Option<Arc<PodInfo>>,
    pub source: Option<Source>,
}

impl Association {
    pub fn new(rules: &[AssociationConfig]) -> Association {
        if rules.is_empty() {
            return Association(
                [
                    Source::PodIp,
                    Source::Ip,
                    Source::Connection,
                    Source::HostName,
                ]
                .into_iter()
                .map(|s| vec![s])
                .collect(),
            );
        }
        Association(
            rules
                .iter()
                .map(|rule| {
                    rule.sources
                        .iter()
                        .map(|s| Source::of(s).expect("validated"))
                        .collect()
                })
                .collect(),
        )
    }

    /// The first rule all of whose sources have an identifier, and the pod it finds.
    pub fn find(
        &self,
        cache: Option<&Cache>,
        attributes: &[KeyValue],
        client: Option<IpAddr>,
    ) -> Found {
        for rule in &self.0 {
            let identifiers: Option<Vec<Identifier>> = rule
                .iter()
                .map(|source| source.identifier(attributes, client))
                .collect();
            let Some(identifiers) = identifiers else {
                continue;
            };
            let pod = cache
                .and_then(|cache| identifiers[0].find(cache))
                .filter(|pod| identifiers[1..].iter().all(|i| i.names(pod)));
            return Found {
                pod,
                source: Some(rule[0]),
            };
        }
        Found {
            pod: None,
            source: None,
        }
    }
}

pub fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        }
    })
}
