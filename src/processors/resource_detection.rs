//! The `resource_detection` processor (alias `resourcedetection`), as the collector's
//! contrib processor for the detectors a Kubernetes agent uses:
//!
//! * `env`: `OTEL_RESOURCE_ATTRIBUTES` (`key=value,...`, values percent-decoded, as the
//!   OpenTelemetry SDK environment variable specification writes them);
//! * `system`: `host.name` (by `hostname_sources`: `dns`, the canonical name of the
//!   host in `/etc/hosts`; `os`, the kernel's host name), `host.id` (`/etc/machine-id`),
//!   `os.type`; each can be switched with `resource_attributes.<name>.enabled`;
//! * `k8snode` (also by the collector's newer name `k8s_api`): `k8s.node.name` from the variable `node_from_env_var` names, and the
//!   node's `k8s.node.uid` (and labels matching `labels`, as `k8s.node.label.<key>`)
//!   through the Kubernetes API, with `k8s_attributes`' client.
//!
//! Detection runs when the processor is built — at start and on every reload — never per
//! item, and within `timeout`. The first detector to set an attribute wins. A detector
//! that fails is logged and adds nothing; sieve starts all the same. With `override`
//! (default) the detected attributes replace a resource's own; without it they only
//! fill in what is missing. Resources are changed on the wire, as `resource` does.

use super::k8s_attributes::config::AuthType;
use super::resource::rewrite_resources;
use super::Processor;
use crate::config::{duration, FieldError};
use crate::model::Batch;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The detectors sieve has.
/// The detectors sieve has (`k8s_api`, the collector's newer name of `k8snode`, is the
/// same detector).
const DETECTORS: &[&str] = &["env", "system", "k8snode", "k8s_api"];

/// `resource_detection:` as the collector writes it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceDetectionConfig {
    /// Detectors, in order: `env`, `system`, `k8snode`.
    pub detectors: Vec<String>,
    /// How long detection may take (2s).
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Whether detected attributes replace those a resource has (default true).
    #[serde(rename = "override")]
    pub override_existing: bool,
    /// The `system` detector's options.
    pub system: SystemConfig,
    /// The `k8snode` (`k8s_api`) detector's options.
    #[serde(alias = "k8s_api")]
    pub k8snode: K8sNodeConfig,
}

impl Default for ResourceDetectionConfig {
    fn default() -> Self {
        ResourceDetectionConfig {
            detectors: vec!["env".into()],
            timeout: Duration::from_secs(2),
            override_existing: true,
            system: SystemConfig::default(),
            k8snode: K8sNodeConfig::default(),
        }
    }
}

/// An attribute switched on or off.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enabled {
    /// Whether the detector sets it.
    pub enabled: bool,
}

/// `system:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemConfig {
    /// Where `host.name` comes from, first found wins: `dns` (the canonical name in
    /// `/etc/hosts`), `os` (the kernel's host name). Default `[dns, os]`.
    pub hostname_sources: Vec<String>,
    /// `host.name`, `host.id`, `os.type`: `{enabled: bool}` (default: `host.id` off, the
    /// others on, as in the collector).
    pub resource_attributes: BTreeMap<String, Enabled>,
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            hostname_sources: vec!["dns".into(), "os".into()],
            resource_attributes: BTreeMap::new(),
        }
    }
}

impl SystemConfig {
    fn enabled(&self, name: &str) -> bool {
        self.resource_attributes
            .get(name)
            .map_or(name != "host.id", |e| e.enabled)
    }
}

/// `k8snode:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K8sNodeConfig {
    /// How to reach the API, as `k8s_attributes`' `auth_type`.
    pub auth_type: AuthType,
    /// With `kubeConfig`: the context.
    pub context: Option<String>,
    /// The variable holding the node's name (`K8S_NODE_NAME`).
    pub node_from_env_var: String,
    /// sieve: node labels to add, by regular expressions over their keys (whole key), as
    /// `k8s.node.label.<key>`.
    pub labels: Vec<String>,
}

impl Default for K8sNodeConfig {
    fn default() -> Self {
        K8sNodeConfig {
            auth_type: AuthType::default(),
            context: None,
            node_from_env_var: "K8S_NODE_NAME".into(),
            labels: Vec::new(),
        }
    }
}

impl ResourceDetectionConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        for (at, detector) in self.detectors.iter().enumerate() {
            if !DETECTORS.contains(&detector.as_str()) {
                return Err(FieldError::new(
                    format!("detectors[{at}]"),
                    format!(
                        "sieve has no `{detector}` detector; it has {}",
                        DETECTORS.join(", ")
                    ),
                ));
            }
        }
        for (at, source) in self.system.hostname_sources.iter().enumerate() {
            if !["dns", "os"].contains(&source.as_str()) {
                return Err(FieldError::new(
                    format!("system.hostname_sources[{at}]"),
                    format!("`{source}` is not `dns` or `os` (the sources sieve reads)"),
                ));
            }
        }
        for name in self.system.resource_attributes.keys() {
            if !["host.name", "host.id", "os.type"].contains(&name.as_str()) {
                return Err(FieldError::new(
                    format!("system.resource_attributes.{name}"),
                    "the system detector sets host.name, host.id and os.type",
                ));
            }
        }
        for (at, pattern) in self.k8snode.labels.iter().enumerate() {
            super::k8s_attributes::config::whole(pattern)
                .map_err(|e| FieldError::new(format!("k8snode.labels[{at}]"), e))?;
        }
        Ok(())
    }

    /// Runs the detectors: the attributes found, first detector first.
    pub fn detect(&self) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = Vec::new();
        for detector in &self.detectors {
            let detected = match detector.as_str() {
                "env" => Ok(from_env(
                    &std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default(),
                )),
                "system" => Ok(self.system.detect()),
                _ => self.k8snode.detect(self.timeout),
            };
            match detected {
                Ok(attributes) => {
                    for (key, value) in attributes {
                        if !found.iter().any(|(k, _)| *k == key) {
                            found.push((key, value));
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(detector = %detector, %error, "resource detection failed; the detector adds nothing")
                }
            }
        }
        found
    }
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs separated by commas, values
/// percent-decoded; malformed pairs are skipped (as the SDKs do).
pub fn from_env(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = key.trim();
            (!key.is_empty()).then(|| (key.to_string(), percent_decode(value.trim())))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[at], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SystemConfig {
    fn detect(&self) -> Vec<(String, String)> {
        let mut found = Vec::new();
        if self.enabled("host.name") {
            let os_name = || read_trimmed("/proc/sys/kernel/hostname");
            let name = self
                .hostname_sources
                .iter()
                .find_map(|source| match source.as_str() {
                    "dns" => os_name().and_then(|short| canonical_name(&short)),
                    _ => os_name(),
                });
            if let Some(name) = name {
                found.push(("host.name".to_string(), name));
            }
        }
        if self.enabled("host.id") {
            if let Some(id) =
                read_trimmed("/etc/machine-id").or_else(|| read_trimmed("/var/lib/dbus/machine-id"))
            {
                found.push(("host.id".to_string(), id));
            }
        }
        if self.enabled("os.type") {
            let os = match std::env::consts::OS {
                "macos" => "darwin",
                other => other,
            };
            found.push(("os.type".to_string(), os.to_string()));
        }
        found
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
}

/// The canonical (first) name of the `/etc/hosts` line that names `host`, when it is a
/// fully qualified name.
fn canonical_name(host: &str) -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|line| {
        let names: Vec<&str> = line.split('#').next()?.split_whitespace().skip(1).collect();
        let first = *names.first()?;
        (names.contains(&host) && first.contains('.')).then(|| first.to_string())
    })
}

impl K8sNodeConfig {
    /// The node's name from the environment, its uid and labels from the API.
    fn detect(&self, timeout: Duration) -> Result<Vec<(String, String)>, String> {
        let name = std::env::var(&self.node_from_env_var)
            .ok()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{} is not set", self.node_from_env_var))?;
        let credentials =
            super::k8s_attributes::watch::Credentials::of(self.auth_type, self.context.clone())?;
        let labels: Vec<regex::Regex> = self
            .labels
            .iter()
            .map(|p| super::k8s_attributes::config::whole(p).expect("validated"))
            .collect();
        let node_name = name.clone();
        // a runtime of its own: building a processor is not async
        let node = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    runtime.block_on(async {
                        tokio::time::timeout(timeout, async {
                            let client = credentials.client().await?;
                            let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
                                kube::Api::all(client);
                            nodes.get(&node_name).await.map_err(|e| e.to_string())
                        })
                        .await
                        .map_err(|_| format!("the API did not answer within {timeout:?}"))?
                    })
                })
                .join()
                .map_err(|_| "the detection thread panicked".to_string())?
        })?;
        let mut found = vec![("k8s.node.name".to_string(), name)];
        if let Some(uid) = node.metadata.uid {
            found.push(("k8s.node.uid".to_string(), uid));
        }
        for (key, value) in node.metadata.labels.into_iter().flatten() {
            if labels.iter().any(|l| l.is_match(&key)) {
                found.push((format!("k8s.node.label.{key}"), value));
            }
        }
        Ok(found)
    }
}

/// Adds the detected attributes to every resource.
#[derive(Clone)]
pub struct ResourceDetectionProcessor {
    attributes: Vec<KeyValue>,
    override_existing: bool,
}

impl ResourceDetectionProcessor {
    /// Runs detection (see [`ResourceDetectionConfig::detect`]).
    pub fn new(config: &ResourceDetectionConfig) -> Self {
        ResourceDetectionProcessor::with(config.detect(), config.override_existing)
    }

    fn with(detected: Vec<(String, String)>, override_existing: bool) -> Self {
        let attributes = detected
            .into_iter()
            .map(|(key, value)| KeyValue {
                key,
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(value)),
                }),
                ..Default::default()
            })
            .collect();
        ResourceDetectionProcessor {
            attributes,
            override_existing,
        }
    }

    fn apply(&self, attributes: &mut Vec<KeyValue>) {
        for detected in &self.attributes {
            match attributes.iter_mut().find(|kv| kv.key == detected.key) {
                Some(existing) if self.override_existing => existing.value = detected.value.clone(),
                Some(_) => {}
                None => attributes.push(detected.clone()),
            }
        }
    }
}

impl Processor for ResourceDetectionProcessor {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        if !self.attributes.is_empty() {
            rewrite_resources(&mut batch, |resource| self.apply(&mut resource.attributes));
        }
        out.push(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_variable_is_read_as_the_sdks_read_it() {
        assert_eq!(
            from_env("service.name=checkout, deployment.environment=prod,team=pay%2Cments,bad,=x,k8s.pod.name=a=b"),
            [
                ("service.name".to_string(), "checkout".to_string()),
                ("deployment.environment".into(), "prod".into()),
                ("team".into(), "pay,ments".into()),
                ("k8s.pod.name".into(), "a=b".into()),
            ]
        );
        assert!(from_env("").is_empty());
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%E2%9C%93"), "✓");
    }

    #[test]
    fn the_system_detector_sets_what_is_enabled() {
        let config: ResourceDetectionConfig = serde_yaml::from_str(
            "detectors: [system]\nsystem: {hostname_sources: [os], resource_attributes: {os.type: {enabled: false}}}",
        )
        .unwrap();
        config.validate().unwrap();
        let found = config.detect();
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["host.name"]);
        assert_eq!(
            found[0].1,
            read_trimmed("/proc/sys/kernel/hostname").unwrap()
        );
    }

    #[test]
    fn override_decides_who_wins_and_the_first_detector_wins_among_them() {
        let detected = vec![
            ("host.name".to_string(), "node-1".to_string()),
            ("os.type".to_string(), "linux".to_string()),
        ];
        let own = || {
            vec![KeyValue {
                key: "host.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("mine".into())),
                }),
                ..Default::default()
            }]
        };
        let text = |attributes: &[KeyValue], key: &str| {
            attributes
                .iter()
                .find(|kv| kv.key == key)
                .map(|kv| crate::model::any_value_text(kv.value.as_ref()))
        };
        let mut overridden = own();
        ResourceDetectionProcessor::with(detected.clone(), true).apply(&mut overridden);
        assert_eq!(text(&overridden, "host.name").as_deref(), Some("node-1"));
        assert_eq!(text(&overridden, "os.type").as_deref(), Some("linux"));
        let mut kept = own();
        ResourceDetectionProcessor::with(detected, false).apply(&mut kept);
        assert_eq!(text(&kept, "host.name").as_deref(), Some("mine"));
        assert_eq!(kept.len(), 2);

        let config: ResourceDetectionConfig =
            serde_yaml::from_str("detectors: [system, env]\nsystem: {hostname_sources: [os]}")
                .unwrap();
        let found = config.detect();
        assert_eq!(
            found.iter().filter(|(k, _)| k == "host.name").count(),
            1,
            "one value per attribute"
        );
    }

    #[test]
    fn unknown_detectors_and_sources_are_refused_by_key() {
        let key = |yaml: &str| {
            serde_yaml::from_str::<ResourceDetectionConfig>(yaml)
                .unwrap()
                .validate()
                .unwrap_err()
                .key
        };
        assert_eq!(key("detectors: [env, ec2]"), "detectors[1]");
        assert_eq!(
            key("system: {hostname_sources: [lookup]}"),
            "system.hostname_sources[0]"
        );
        assert_eq!(
            key("system: {resource_attributes: {host.arch: {enabled: true}}}"),
            "system.resource_attributes.host.arch"
        );
        assert_eq!(key("k8snode: {labels: ['(']}"), "k8snode.labels[0]");
    }

    /// Without the node's variable the detector adds nothing, and the processor is
    /// built all the same.
    #[test]
    fn a_failing_detector_adds_nothing() {
        let config: ResourceDetectionConfig = serde_yaml::from_str(
            "detectors: [k8snode]\nk8snode: {node_from_env_var: SIEVE_TEST_NO_SUCH_VARIABLE}",
        )
        .unwrap();
        assert!(ResourceDetectionProcessor::new(&config)
            .attributes
            .is_empty());
    }
}
