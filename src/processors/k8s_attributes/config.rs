//! `k8s_attributes:` (alias `k8sattributes`) as the collector's contrib processor writes
//! it, with its defaults; the options sieve adds are marked.

use crate::config::{duration, FieldError};
use regex::Regex;
use serde::Deserialize;
use std::time::Duration;

/// How sieve reaches the Kubernetes API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
pub enum AuthType {
    /// In-cluster: `KUBERNETES_SERVICE_HOST`/`PORT`, the service account's token (read
    /// again as it rotates) and CA.
    #[default]
    #[serde(rename = "serviceAccount")]
    ServiceAccount,
    /// A kubeconfig file (`KUBECONFIG`, else `~/.kube/config`), for running outside a
    /// cluster.
    #[serde(rename = "kubeConfig")]
    KubeConfig,
    /// In-cluster address, no credentials.
    #[serde(rename = "none")]
    None,
}

/// `filter:` — which pods to watch.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Only pods on this node.
    pub node: String,
    /// Only pods on the node named by this environment variable (a DaemonSet sets it
    /// from `spec.nodeName`, e.g. `KUBE_NODE_NAME`).
    pub node_from_env_var: String,
    /// Only pods of this namespace.
    pub namespace: String,
    /// Label selectors (`{key, value, op}`, op `equals`, `not-equals`, `exists`,
    /// `does-not-exist`).
    pub labels: Vec<SelectorConfig>,
    /// Field selectors (`{key, value, op}`, op `equals` or `not-equals`).
    pub fields: Vec<SelectorConfig>,
}

/// One label or field selector.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorConfig {
    /// The label or field.
    pub key: String,
    /// The value to compare with (not for `exists` / `does-not-exist`).
    #[serde(default)]
    pub value: String,
    /// `equals` (default), `not-equals`, `exists`, `does-not-exist`.
    #[serde(default = "equals")]
    pub op: String,
}

fn equals() -> String {
    "equals".into()
}

/// `extract:` — what to add.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractConfig {
    /// Resource attributes to set from the pod (see [`METADATA`]).
    pub metadata: Vec<String>,
    /// Pod or namespace labels to add.
    pub labels: Vec<FieldExtractConfig>,
    /// Pod or namespace annotations to add.
    pub annotations: Vec<FieldExtractConfig>,
    /// Pod annotations `resource.opentelemetry.io/<attribute>` become `<attribute>`
    /// (and the `service.*` rules read them first), as in the collector.
    pub otel_annotations: bool,
}

/// The attributes `extract.metadata` may name.
pub const METADATA: &[&str] = &[
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.pod.start_time",
    "k8s.pod.ip",
    "k8s.node.name",
    "k8s.deployment.name",
    "k8s.replicaset.name",
    "k8s.replicaset.uid",
    "k8s.statefulset.name",
    "k8s.statefulset.uid",
    "k8s.daemonset.name",
    "k8s.daemonset.uid",
    "k8s.job.name",
    "k8s.job.uid",
    "k8s.cronjob.name",
    "k8s.container.name",
    "k8s.cluster.uid",
    "container.image.name",
    "container.image.tag",
    "container.id",
    "service.name",
    "service.namespace",
    "service.version",
    "service.instance.id",
];

/// The collector's default `extract.metadata`.
const DEFAULT_METADATA: &[&str] = &[
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.pod.start_time",
    "k8s.deployment.name",
    "k8s.node.name",
];

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig {
            metadata: DEFAULT_METADATA.iter().map(|s| s.to_string()).collect(),
            labels: Vec::new(),
            annotations: Vec::new(),
            otel_annotations: false,
        }
    }
}

/// Where a label or annotation is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum From {
    #[default]
    Pod,
    Namespace,
}

/// One label or annotation rule.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldExtractConfig {
    /// The attribute to set; default `k8s.<pod|namespace>.<labels|annotations>.<key>`.
    /// With `key_regex`, `$1`, `${name}` refer to its groups.
    #[serde(default)]
    pub tag_name: Option<String>,
    /// The label or annotation.
    #[serde(default)]
    pub key: Option<String>,
    /// Every label or annotation whose key this regular expression matches (whole key).
    #[serde(default)]
    pub key_regex: Option<String>,
    /// `pod` (default) or `namespace`.
    #[serde(default)]
    pub from: From,
}

/// `pod_association:` — one rule; the first whose sources are all present identifies
/// the pod.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssociationConfig {
    /// The sources, all of which must be present.
    pub sources: Vec<SourceConfig>,
}

/// Where a pod identifier is read.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `resource_attribute` or `connection` (the client's address).
    pub from: String,
    /// For `resource_attribute`: `k8s.pod.ip`, `k8s.pod.uid` or `host.name` (an IP).
    #[serde(default)]
    pub name: Option<String>,
}

/// `exclude:` — pods never used for tagging.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcludeConfig {
    /// Pods by name (regular expressions, whole name).
    #[serde(default)]
    pub pods: Vec<ExcludedPod>,
}

/// A pod name to exclude.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcludedPod {
    /// A regular expression over pod names.
    pub name: String,
}

impl Default for ExcludeConfig {
    fn default() -> Self {
        ExcludeConfig {
            pods: ["jaeger-agent", "jaeger-collector"]
                .iter()
                .map(|name| ExcludedPod {
                    name: name.to_string(),
                })
                .collect(),
        }
    }
}

/// The processor's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K8sAttributesConfig {
    /// `serviceAccount` (default), `kubeConfig` or `none`.
    pub auth_type: AuthType,
    /// With `kubeConfig`: the context to use (default: the file's current context).
    pub context: Option<String>,
    /// Only set `k8s.pod.ip` from the connection, without watching the API (an agent
    /// in front of a gateway that does the rest).
    pub passthrough: bool,
    /// Which pods to watch.
    pub filter: FilterConfig,
    /// What to add.
    pub extract: ExtractConfig,
    /// How to find an item's pod; empty: the collector's default (`k8s.pod.ip`, then the
    /// `ip` resource attribute, then the connection, then `host.name`).
    pub pod_association: Vec<AssociationConfig>,
    /// Pods never used.
    pub exclude: ExcludeConfig,
    /// Hold the first data until the first list of pods completes (up to
    /// `wait_for_metadata_timeout`); off: data is tagged with what is known.
    pub wait_for_metadata: bool,
    /// See `wait_for_metadata` (10s).
    #[serde(with = "duration")]
    pub wait_for_metadata_timeout: Duration,
    /// How long a deleted pod still tags data (late data from it), 2 min as in the
    /// collector.
    #[serde(with = "duration")]
    pub pod_delete_grace_period: Duration,
    /// sieve: the most memory, in MiB, the cache of pods, ReplicaSets and namespaces
    /// may take (only the extracted fields are kept). At the limit, pods in their
    /// delete grace period go first; then new pods are not cached (counted).
    pub max_cache_mib: usize,
}

impl Default for K8sAttributesConfig {
    fn default() -> Self {
        K8sAttributesConfig {
            auth_type: AuthType::default(),
            context: None,
            passthrough: false,
            filter: FilterConfig::default(),
            extract: ExtractConfig::default(),
            pod_association: Vec::new(),
            exclude: ExcludeConfig::default(),
            wait_for_metadata: false,
            wait_for_metadata_timeout: Duration::from_secs(10),
            pod_delete_grace_period: Duration::from_secs(120),
            max_cache_mib: 32,
        }
    }
}

impl K8sAttributesConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        for (at, name) in self.extract.metadata.iter().enumerate() {
            if !METADATA.contains(&name.as_str()) {
                return Err(FieldError::new(
                    format!("extract.metadata[{at}]"),
                    format!("`{name}` is not one of {}", METADATA.join(", ")),
                ));
            }
        }
        for (list, rules) in [
            ("labels", &self.extract.labels),
            ("annotations", &self.extract.annotations),
        ] {
            for (at, rule) in rules.iter().enumerate() {
                let key = format!("extract.{list}[{at}]");
                match (&rule.key, &rule.key_regex) {
                    (Some(_), None) => {}
                    (None, Some(pattern)) => {
                        whole(pattern)
                            .map_err(|e| FieldError::new(format!("{key}.key_regex"), e))?;
                    }
                    _ => return Err(FieldError::new(key, "give one of `key` and `key_regex`")),
                }
            }
        }
        for (at, rule) in self.pod_association.iter().enumerate() {
            if rule.sources.is_empty() {
                return Err(FieldError::new(
                    format!("pod_association[{at}].sources"),
                    "a rule needs at least one source",
                ));
            }
            for (n, source) in rule.sources.iter().enumerate() {
                super::association::Source::of(source).map_err(|e| {
                    FieldError::new(format!("pod_association[{at}].sources[{n}]"), e)
                })?;
            }
        }
        for (at, pod) in self.exclude.pods.iter().enumerate() {
            whole(&pod.name).map_err(|e| FieldError::new(format!("exclude.pods[{at}].name"), e))?;
        }
        for (list, selectors, ops) in [
            (
                "labels",
                &self.filter.labels,
                &["equals", "not-equals", "exists", "does-not-exist"][..],
            ),
            ("fields", &self.filter.fields, &["equals", "not-equals"][..]),
        ] {
            for (at, selector) in selectors.iter().enumerate() {
                if !ops.contains(&selector.op.as_str()) {
                    return Err(FieldError::new(
                        format!("filter.{list}[{at}].op"),
                        format!("`{}` is not one of {}", selector.op, ops.join(", ")),
                    ));
                }
            }
        }
        if self.max_cache_mib == 0 {
            return Err(FieldError::new("max_cache_mib", "must be at least 1"));
        }
        if self.context.is_some() && self.auth_type != AuthType::KubeConfig {
            return Err(FieldError::new(
                "context",
                "only with `auth_type: kubeConfig`",
            ));
        }
        Ok(())
    }

    /// Whether a `connection` source can identify pods, so that the client's address
    /// must survive batching.
    pub fn uses_connection(&self) -> bool {
        self.passthrough
            || self.pod_association.is_empty()
            || self
                .pod_association
                .iter()
                .any(|r| r.sources.iter().any(|s| s.from == "connection"))
    }

    /// The node the watch is limited to, if any: `node`, else the variable's value.
    pub fn node(&self) -> Option<String> {
        if !self.filter.node.is_empty() {
            return Some(self.filter.node.clone());
        }
        if self.filter.node_from_env_var.is_empty() {
            return None;
        }
        std::env::var(&self.filter.node_from_env_var)
            .ok()
            .filter(|v| !v.is_empty())
    }
}

/// A regular expression that must match a whole string.
pub fn whole(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| format!("`{pattern}` is not a regular expression: {e}"))
}
