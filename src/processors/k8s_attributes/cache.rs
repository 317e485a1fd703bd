//! What the watches learn, kept small: per pod only the fields `extract` asks for
//! (never the API object), per ReplicaSet its Deployment's name, per namespace the
//! labels and annotations asked for. The cache is bounded in bytes (an estimate of each
//! entry's strings and its overhead): at the limit, pods in their delete grace period go
//! first, oldest first; then a new pod is not cached and is counted.
//!
//! Deleted pods stay for `pod_delete_grace_period`, so that data sent just before a pod
//! went away is still tagged. A new pod at a deleted pod's IP takes the IP at once; when
//! the old pod's grace period ends, only its own entries go.

use super::config::{FieldExtractConfig, From, K8sAttributesConfig};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use parking_lot::RwLock;
use regex::Regex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an entry costs beyond its strings (maps, vectors, the `Arc`), estimated.
const ENTRY_OVERHEAD: usize = 160;

/// One container of a pod, as far as `extract` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    /// An init container (a native sidecar runs as one).
    pub init: bool,
    pub image_name: Option<String>,
    pub image_tag: Option<String>,
    pub id: Option<String>,
}

/// A pod, as far as `extract` needs it: its own attributes, ready to add, and what is
/// resolved when tagging (the Deployment through the ReplicaSet, the namespace's
/// labels, the container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// The IP the pod is found by: none for a pod on the host's network (its IP is the
    /// node's, shared with every such pod) or a finished one (its IP goes to others).
    pub ip: Option<IpAddr>,
    /// When the pod was created (seconds), which decides between two pods claiming one IP.
    pub created: i64,
    /// Attributes from the pod alone, in the order `extract` lists them.
    pub attributes: Vec<(String, String)>,
    /// `namespace/name` of the owning ReplicaSet, when the Deployment's name is wanted
    /// (as `k8s.deployment.name` or `service.name`).
    pub replica_set: Option<String>,
    pub containers: Vec<Container>,
    /// What is added at tagging time besides `attributes`.
    pub wanted: Wanted,
    /// What the `service.*` attributes are made of, when one is asked for.
    pub service: Option<ServiceHints>,
}

/// The OpenTelemetry rules for `service.*` from Kubernetes metadata: `service.name` from
/// the `resource.opentelemetry.io/service.name` annotation, the `app.kubernetes.io/instance`
/// or `/name` label, else the owner's name (Deployment, ReplicaSet, StatefulSet,
/// DaemonSet, CronJob, Job), the pod's, the container's; `service.version` from the
/// annotation, the `app.kubernetes.io/version` label or the image tag;
/// `service.namespace` the namespace; `service.instance.id`
/// `<namespace>.<pod>.<container>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHints {
    /// `service.name` candidates before the Deployment's name, best first.
    pub names_first: Vec<String>,
    /// The candidates after it.
    pub names_then: Vec<String>,
    pub version: Option<String>,
    pub wanted: ServiceWanted,
}

/// The attributes added at tagging time that `extract.metadata` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wanted {
    pub deployment_name: bool,
    pub container_name: bool,
    pub image_tag: bool,
    pub cluster_uid: bool,
}

/// Which `service.*` attributes `extract.metadata` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceWanted {
    pub name: bool,
    pub version: bool,
    pub namespace: bool,
    pub instance_id: bool,
}

impl PodInfo {
    fn bytes(&self) -> usize {
        let strings: usize = self
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 48)
            .sum::<usize>()
            + self
                .containers
                .iter()
                .map(|c| {
                    c.name.len()
                        + c.image_name.as_ref().map_or(0, String::len)
                        + c.image_tag.as_ref().map_or(0, String::len)
                        + c.id.as_ref().map_or(0, String::len)
                        + 96
                })
                .sum::<usize>();
        let service = self.service.as_ref().map_or(0, |s| {
            s.names_first
                .iter()
                .chain(&s.names_then)
                .chain(&s.version)
                .map(|n| n.len() + 24)
                .sum::<usize>()
        });
        ENTRY_OVERHEAD
            + service
            + self.uid.len()
            + self.name.len()
            + self.namespace.len()
            + self.replica_set.as_ref().map_or(0, String::len)
            + strings
    }
}

/// Turns API objects into cache entries, keeping only what `extract` names.
pub struct Extractor {
    metadata: Vec<String>,
    pod_labels: Vec<Rule>,
    pod_annotations: Vec<Rule>,
    namespace_labels: Vec<Rule>,
    namespace_annotations: Vec<Rule>,
    excluded: Vec<Regex>,
    /// `resource.opentelemetry.io/<attribute>` annotations become attributes.
    otel_annotations: bool,
}

/// The annotation prefix of `extract.otel_annotations`.
const OTEL_ANNOTATION: &str = "resource.opentelemetry.io/";

/// One `labels` / `annotations` rule, compiled.
struct Rule {
    tag_name: Option<String>,
    key: Key,
    /// `k8s.pod.labels`, `k8s.namespace.annotations`, ...: the default tag's prefix.
    prefix: &'static str,
}

enum Key {
    Exact(String),
    Pattern(Regex),
}

impl Rule {
    fn new(config: &FieldExtractConfig, prefix: &'static str) -> Rule {
        let key = match (&config.key, &config.key_regex) {
            (_, Some(pattern)) => Key::Pattern(super::config::whole(pattern).expect("validated")),
            (Some(key), None) => Key::Exact(key.clone()),
            (None, None) => unreachable!("validated: one of key and key_regex"),
        };
        Rule {
            tag_name: config.tag_name.clone(),
            key,
            prefix,
        }
    }

    /// The attributes this rule makes from `map` (labels or annotations).
    fn apply(&self, map: Option<&BTreeMap<String, String>>, out: &mut Vec<(String, String)>) {
        let Some(map) = map else { return };
        match &self.key {
            Key::Exact(key) => {
                if let Some(value) = map.get(key) {
                    let tag = self
                        .tag_name
                        .clone()
                        .unwrap_or_else(|| format!("{}.{key}", self.prefix));
                    out.push((tag, value.clone()));
                }
            }
            Key::Pattern(pattern) => {
                for (key, value) in map {
                    let Some(captures) = pattern.captures(key) else {
                        continue;
                    };
                    let tag = match &self.tag_name {
                        Some(template) => {
                            let mut tag = String::new();
                            captures.expand(template, &mut tag);
                            tag
                        }
                        None => format!("{}.{key}", self.prefix),
                    };
                    out.push((tag, value.clone()));
                }
            }
        }
    }
}

impl Extractor {
    pub fn new(config: &K8sAttributesConfig) -> Extractor {
        let rules = |list: &[FieldExtractConfig], from: From, prefix: &'static str| {
            list.iter()
                .filter(|r| r.from == from)
                .map(|r| Rule::new(r, prefix))
                .collect()
        };
        let extract = &config.extract;
        Extractor {
            metadata: extract.metadata.clone(),
            pod_labels: rules(&extract.labels, From::Pod, "k8s.pod.labels"),
            pod_annotations: rules(&extract.annotations, From::Pod, "k8s.pod.annotations"),
            namespace_labels: rules(&extract.labels, From::Namespace, "k8s.namespace.labels"),
            namespace_annotations: rules(
                &extract.annotations,
                From::Namespace,
                "k8s.namespace.annotations",
            ),
            excluded: config
                .exclude
                .pods
                .iter()
                .map(|p| super::config::whole(&p.name).expect("validated"))
                .collect(),
            otel_annotations: extract.otel_annotations,
        }
    }

    /// Which `service.*` attributes are wanted.
    fn service_wanted(&self) -> ServiceWanted {
        ServiceWanted {
            name: self.wants("service.name"),
            version: self.wants("service.version"),
            namespace: self.wants("service.namespace"),
            instance_id: self.wants("service.instance.id"),
        }
    }

    /// Whether the cluster's uid (the `kube-system` namespace's) is wanted.
    pub fn wants_cluster_uid(&self) -> bool {
        self.wants("k8s.cluster.uid")
    }

    fn wants(&self, name: &str) -> bool {
        self.metadata.iter().any(|m| m == name)
    }

    /// Whether ReplicaSets must be watched (to name Deployments).
    pub fn wants_replica_sets(&self) -> bool {
        self.wants("k8s.deployment.name") || self.wants("service.name")
    }

    /// Whether namespaces must be watched (their labels or annotations).
    pub fn wants_namespaces(&self) -> bool {
        !self.namespace_labels.is_empty() || !self.namespace_annotations.is_empty()
    }

    /// The entry for `pod`, or `None` for a pod without a uid or excluded by name.
    pub fn pod(&self, pod: &Pod) -> Option<PodInfo> {
        let meta = &pod.metadata;
        let uid = meta.uid.clone()?;
        let name = meta.name.clone().unwrap_or_default();
        if self.excluded.iter().any(|r| r.is_match(&name)) {
            return None;
        }
        let namespace = meta.namespace.clone().unwrap_or_default();
        let status = pod.status.as_ref();
        let pod_ip: Option<IpAddr> = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let finished = status
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
        let ip = pod_ip.filter(|_| !host_network && !finished);
        let created = meta.creation_timestamp.as_ref();
        let mut attributes = Vec::new();
        // the pod's own word comes first: attributes are added where absent, in order
        if self.otel_annotations {
            for (key, value) in meta.annotations.iter().flatten() {
                if let Some(attribute) = key.strip_prefix(OTEL_ANNOTATION) {
                    attributes.push((attribute.to_string(), value.clone()));
                }
            }
        }
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                if self.wants(key) {
                    attributes.push((key.to_string(), value));
                }
            }
        };
        put("k8s.namespace.name", Some(namespace.clone()));
        put("k8s.pod.name", Some(name.clone()));
        put("k8s.pod.uid", Some(uid.clone()));
        // the collector's start time is the pod's creation
        put("k8s.pod.start_time", created.map(|t| t.0.to_string()));
        put("k8s.pod.ip", pod_ip.map(|ip| ip.to_string()));
        put(
            "k8s.node.name",
            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        );
        let mut replica_set = None;
        let service = self.service_hints(pod);
        for owner in meta.owner_references.iter().flatten() {
            let (name, uid) = (Some(owner.name.clone()), Some(owner.uid.clone()));
            match owner.kind.as_str() {
                "ReplicaSet" => {
                    if self.wants_replica_sets() {
                        replica_set = Some(format!("{namespace}/{}", owner.name));
                    }
                    put("k8s.replicaset.name", name);
                    put("k8s.replicaset.uid", uid);
                }
                "StatefulSet" => {
                    put("k8s.statefulset.name", name);
                    put("k8s.statefulset.uid", uid);
                }
                "DaemonSet" => {
                    put("k8s.daemonset.name", name);
                    put("k8s.daemonset.uid", uid);
                }
                "Job" => {
                    put("k8s.cronjob.name", cron_job_of(&owner.name));
                    put("k8s.job.name", name);
                    put("k8s.job.uid", uid);
                }
                _ => {}
            }
        }
        for rule in &self.pod_labels {
            rule.apply(meta.labels.as_ref(), &mut attributes);
        }
        for rule in &self.pod_annotations {
            rule.apply(meta.annotations.as_ref(), &mut attributes);
        }
        Some(PodInfo {
            uid,
            name,
            namespace,
            ip,
            created: created.map_or(0, |t| t.0.as_second()),
            attributes,
            replica_set,
            containers: self.containers(pod),
            wanted: Wanted {
                deployment_name: self.wants("k8s.deployment.name"),
                container_name: self.wants("k8s.container.name"),
                image_tag: self.wants("container.image.tag"),
                cluster_uid: self.wants_cluster_uid(),
            },
            service,
        })
    }

    /// The makings of `service.*` (see [`ServiceHints`]), when one is wanted.
    fn service_hints(&self, pod: &Pod) -> Option<ServiceHints> {
        let wanted = self.service_wanted();
        if wanted == ServiceWanted::default() {
            return None;
        }
        let meta = &pod.metadata;
        let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key)).cloned();
        let annotation = |key: &str| {
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(&format!("{OTEL_ANNOTATION}{key}")))
                .cloned()
        };
        let names_first = [
            annotation("service.name"),
            label("app.kubernetes.io/instance"),
            label("app.kubernetes.io/name"),
        ];
        let owner = |kind: &str| {
            meta.owner_references
                .iter()
                .flatten()
                .find(|o| o.kind == kind)
                .map(|o| o.name.clone())
        };
        let job = owner("Job");
        let names_then = [
            owner("ReplicaSet"),
            owner("StatefulSet"),
            owner("DaemonSet"),
            job.as_deref().and_then(cron_job_of),
            job,
            meta.name.clone(),
        ];
        Some(ServiceHints {
            names_first: names_first.into_iter().flatten().collect(),
            names_then: names_then.into_iter().flatten().collect(),
            version: annotation("service.version").or_else(|| label("app.kubernetes.io/version")),
            wanted,
        })
    }

    /// The containers, when a container attribute is wanted.
    fn containers(&self, pod: &Pod) -> Vec<Container> {
        let (image, id) = (
            self.wants("container.image.name")
                || self.wants("container.image.tag")
                || self.wants("service.version"),
            self.wants("container.id"),
        );
        let named = self.wants("k8s.container.name") || self.wants("service.instance.id");
        if !image && !id && !named {
            return Vec::new();
        }
        let status = pod.status.as_ref();
        let Some(spec) = pod.spec.as_ref() else {
            return Vec::new();
        };
        let regular = spec
            .containers
            .iter()
            .map(|c| (c, false, status.and_then(|s| s.container_statuses.as_ref())));
        let init = spec.init_containers.iter().flatten().map(|c| {
            (
                c,
                true,
                status.and_then(|s| s.init_container_statuses.as_ref()),
            )
        });
        regular
            .chain(init)
            .map(|(container, init, statuses)| {
                let (image_name, image_tag) = container
                    .image
                    .as_deref()
                    .filter(|_| image)
                    .map(split_image)
                    .map_or((None, None), |(name, tag)| {
                        (
                            Some(name).filter(|_| self.wants("container.image.name")),
                            tag,
                        )
                    });
                let id = statuses
                    .and_then(|list| list.iter().find(|s| s.name == container.name))
                    .and_then(|s| s.container_id.as_deref())
                    .filter(|_| id)
                    .map(|id| id.split_once("://").map_or(id, |(_, id)| id).to_string());
                Container {
                    name: container.name.clone(),
                    init,
                    image_name,
                    image_tag,
                    id,
                }
            })
            .collect()
    }

    /// The Deployment a ReplicaSet belongs to: (`namespace/name`, Deployment name).
    pub fn replica_set(&self, replica_set: &ReplicaSet) -> Option<(String, String)> {
        let meta = &replica_set.metadata;
        let deployment = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Deployment")?;
        Some((
            format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            ),
            deployment.name.clone(),
        ))
    }

    /// A namespace's name and the attributes its rules make.
    pub fn namespace(&self, namespace: &Namespace) -> Option<(String, Vec<(String, String)>)> {
        let name = namespace.metadata.name.clone()?;
        let mut attributes = Vec::new();
        for rule in &self.namespace_labels {
            rule.apply(namespace.metadata.labels.as_ref(), &mut attributes);
        }
        for rule in &self.namespace_annotations {
            rule.apply(namespace.metadata.annotations.as_ref(), &mut attributes);
        }
        Some((name, attributes))
    }
}

impl ServiceHints {
    /// Adds the wanted `service.*` attributes through `put`.
    fn add(
        &self,
        pod: &PodInfo,
        container: Option<&Container>,
        deployment: Option<&String>,
        put: &mut impl FnMut(&str, Option<&String>),
    ) {
        let wanted = self.wanted;
        if wanted.namespace {
            put("service.namespace", Some(&pod.namespace));
        }
        if wanted.name {
            let name = self
                .names_first
                .first()
                .or(deployment)
                .or(self.names_then.first())
                .or(container.map(|c| &c.name));
            put("service.name", name);
        }
        if wanted.version {
            put(
                "service.version",
                self.version
                    .as_ref()
                    .or(container.and_then(|c| c.image_tag.as_ref())),
            );
        }
        if wanted.instance_id {
            let id = container.map(|c| format!("{}.{}.{}", pod.namespace, pod.name, c.name));
            put("service.instance.id", id.as_ref());
        }
    }
}

/// What a namespace's entry costs.
fn namespace_bytes(name: &str, attributes: &[(String, String)]) -> usize {
    name.len()
        + 64
        + attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 48)
            .sum::<usize>()
}

/// A Job's CronJob, as the collector reads it from the Job's name (`<cronjob>-<digits>`).
fn cron_job_of(job: &str) -> Option<String> {
    let (cron_job, suffix) = job.rsplit_once('-')?;
    (!suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())).then(|| cron_job.to_string())
}

/// An image reference's name and tag (`latest` when it has neither tag nor digest).
pub fn split_image(image: &str) -> (String, Option<String>) {
    let (reference, digest) = match image.split_once('@') {
        Some((reference, _)) => (reference, true),
        None => (image, false),
    };
    let last_part = reference.rfind('/').map_or(0, |at| at + 1);
    match reference[last_part..].rfind(':') {
        Some(colon) => {
            let at = last_part + colon;
            (
                reference[..at].to_string(),
                Some(reference[at + 1..].to_string()),
            )
        }
        None => (
            reference.to_string(),
            (!digest).then(|| "latest".to_string()),
        ),
    }
}

/// A cached pod and, once deleted, when it was.
struct Entry {
    pod: Arc<PodInfo>,
    bytes: usize,
    deleted: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    pods: HashMap<String, Entry>,
    by_ip: HashMap<IpAddr, String>,
    /// Deleted pods by uid, in the order their grace periods end.
    /// Deleted pods (when their grace ends, when they were deleted, uid), in the order
    /// their grace periods end; an entry is stale when the pod came back since.
    deleted: VecDeque<(Instant, Instant, String)>,
    /// ReplicaSet `namespace/name` → Deployment name.
    replica_sets: HashMap<String, String>,
    /// Namespace → the attributes its rules make.
    namespaces: HashMap<String, Vec<(String, String)>>,
    /// The `kube-system` namespace's uid, the cluster's.
    cluster_uid: Option<String>,
    bytes: usize,
}

/// The pods, ReplicaSets and namespaces the watches keep up to date.
pub struct Cache {
    inner: RwLock<Inner>,
    max_bytes: usize,
    grace: Duration,
}

/// What became of a pod the watch reported.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    Cached,
    /// The cache is full of live pods.
    NoRoom,
}

impl Cache {
    pub fn new(max_bytes: usize, grace: Duration) -> Cache {
        Cache {
            inner: RwLock::new(Inner::default()),
            max_bytes,
            grace,
        }
    }

    /// Adds or replaces a pod.
    pub fn upsert(&self, pod: PodInfo, now: Instant) -> Stored {
        let mut inner = self.inner.write();
        inner.expire(now);
        let bytes = pod.bytes();
        let replaced = inner.pods.get(&pod.uid).map_or(0, |e| e.bytes);
        if inner.bytes - replaced + bytes > self.max_bytes
            && inner.bytes - replaced - inner.deleted_bytes(&pod.uid) + bytes > self.max_bytes
        {
            // evicting every deleted pod would not make room: evict none
            return Stored::NoRoom;
        }
        let replaced = loop {
            let replaced = inner.pods.get(&pod.uid).map_or(0, |e| e.bytes);
            if inner.bytes - replaced + bytes <= self.max_bytes {
                break replaced;
            }
            if !inner.evict_oldest_deleted() {
                return Stored::NoRoom;
            }
        };
        if let Some(old) = inner.pods.get(&pod.uid) {
            if let Some(ip) = old.pod.ip.filter(|ip| Some(*ip) != pod.ip) {
                inner.forget_ip(ip, &pod.uid);
            }
        }
        if let Some(ip) = pod.ip {
            // of two live pods claiming an IP, the newer keeps it
            let holder = inner.by_ip.get(&ip).and_then(|uid| inner.pods.get(uid));
            let older_or_gone = holder.is_none_or(|held| {
                held.pod.uid == pod.uid || held.deleted.is_some() || held.pod.created <= pod.created
            });
            if older_or_gone {
                inner.by_ip.insert(ip, pod.uid.clone());
            }
        }
        inner.bytes = inner.bytes - replaced + bytes;
        let uid = pod.uid.clone();
        inner.pods.insert(
            uid,
            Entry {
                pod: Arc::new(pod),
                bytes,
                deleted: None,
            },
        );
        Stored::Cached
    }

    /// Marks a pod deleted: it still tags data for the grace period.
    pub fn delete(&self, uid: &str, now: Instant) {
        let mut inner = self.inner.write();
        inner.expire(now);
        if let Some(entry) = inner.pods.get_mut(uid) {
            if entry.deleted.is_none() {
                entry.deleted = Some(now);
                let end = now.checked_add(self.grace).unwrap_or(now);
                inner.deleted.push_back((end, now, uid.to_string()));
            }
        }
    }

    /// Marks deleted every live pod not in `present` (after a relist).
    pub fn delete_all_but(&self, present: &std::collections::HashSet<String>, now: Instant) {
        let gone: Vec<String> = self
            .inner
            .read()
            .pods
            .iter()
            .filter(|(uid, e)| e.deleted.is_none() && !present.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            self.delete(&uid, now);
        }
    }

    /// Ends the grace periods that are over.
    pub fn expire(&self, now: Instant) {
        self.inner.write().expire(now);
    }

    pub fn set_replica_set(&self, key: String, deployment: String) {
        let mut inner = self.inner.write();
        let bytes = key.len() + deployment.len() + 64;
        if inner.bytes + bytes > self.max_bytes && !inner.replica_sets.contains_key(&key) {
            return;
        }
        if let Some(old) = inner.replica_sets.insert(key.clone(), deployment) {
            inner.bytes -= key.len() + old.len() + 64;
        }
        inner.bytes += bytes;
    }

    pub fn remove_replica_set(&self, key: &str) {
        let mut inner = self.inner.write();
        if let Some(old) = inner.replica_sets.remove(key) {
            inner.bytes -= key.len() + old.len() + 64;
        }
    }

    /// Forgets the ReplicaSets not in `present` (after a relist).
    pub fn retain_replica_sets(&self, present: &std::collections::HashSet<String>) {
        let gone: Vec<String> = (self.inner.read().replica_sets.keys())
            .filter(|key| !present.contains(*key))
            .cloned()
            .collect();
        gone.iter().for_each(|key| self.remove_replica_set(key));
    }

    pub fn remove_namespace(&self, name: &str) {
        let mut inner = self.inner.write();
        if let Some(old) = inner.namespaces.remove(name) {
            inner.bytes -= namespace_bytes(name, &old);
        }
    }

    /// Forgets the namespaces not in `present` (after a relist).
    pub fn retain_namespaces(&self, present: &std::collections::HashSet<String>) {
        let gone: Vec<String> = (self.inner.read().namespaces.keys())
            .filter(|name| !present.contains(*name))
            .cloned()
            .collect();
        gone.iter().for_each(|name| self.remove_namespace(name));
    }

    pub fn set_namespace(&self, name: String, attributes: Vec<(String, String)>) {
        let mut inner = self.inner.write();
        let size = namespace_bytes;
        let bytes = size(&name, &attributes);
        if inner.bytes + bytes > self.max_bytes && !inner.namespaces.contains_key(&name) {
            return;
        }
        if let Some(old) = inner.namespaces.insert(name.clone(), attributes) {
            inner.bytes -= size(&name, &old);
        }
        inner.bytes += bytes;
    }

    pub fn set_cluster_uid(&self, uid: String) {
        self.inner.write().cluster_uid = Some(uid);
    }

    /// The pod at `ip`.
    pub fn by_ip(&self, ip: IpAddr) -> Option<Arc<PodInfo>> {
        let inner = self.inner.read();
        let uid = inner.by_ip.get(&ip)?;
        inner.pods.get(uid).map(|e| Arc::clone(&e.pod))
    }

    /// The pod with `uid`.
    pub fn by_uid(&self, uid: &str) -> Option<Arc<PodInfo>> {
        self.inner.read().pods.get(uid).map(|e| Arc::clone(&e.pod))
    }

    /// The attributes to add for `pod` (and its container `container`, if named):
    /// its own, the Deployment's name, the namespace's.
    pub fn attributes(&self, pod: &PodInfo, container: Option<&str>) -> Vec<(String, String)> {
        let mut out = pod.attributes.clone();
        let inner = self.inner.read();
        if let Some(deployment) = pod
            .replica_set
            .as_ref()
            .filter(|_| pod.wanted.deployment_name)
            .and_then(|rs| inner.replica_sets.get(rs))
        {
            out.push(("k8s.deployment.name".into(), deployment.clone()));
        }
        if let Some(attributes) = inner.namespaces.get(&pod.namespace) {
            out.extend(attributes.iter().cloned());
        }
        // a container named but not found gets nothing; without a name, a pod's only
        // (regular) container is the one
        let container = match container {
            Some(name) => pod.containers.iter().find(|c| c.name == name),
            None => {
                let mut regular = pod.containers.iter().filter(|c| !c.init);
                regular.next().filter(|_| regular.next().is_none())
            }
        };
        let mut put = |key: &str, value: Option<&String>| {
            if let Some(value) = value {
                out.push((key.to_string(), value.clone()));
            }
        };
        if let Some(c) = container {
            put(
                "k8s.container.name",
                Some(&c.name).filter(|_| pod.wanted.container_name),
            );
            put("container.image.name", c.image_name.as_ref());
            put(
                "container.image.tag",
                c.image_tag.as_ref().filter(|_| pod.wanted.image_tag),
            );
            put("container.id", c.id.as_ref());
        }
        put(
            "k8s.cluster.uid",
            inner
                .cluster_uid
                .as_ref()
                .filter(|_| pod.wanted.cluster_uid),
        );
        if let Some(service) = &pod.service {
            let deployment = pod
                .replica_set
                .as_ref()
                .and_then(|rs| inner.replica_sets.get(rs));
            service.add(pod, container, deployment, &mut put);
        }
        out
    }

    /// Pods cached (live and in their grace period) and the bytes the cache takes.
    pub fn size(&self) -> (usize, usize) {
        let inner = self.inner.read();
        (inner.pods.len(), inner.bytes)
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while self.deleted.front().is_some_and(|(end, ..)| *end <= now) {
            let (_, deleted, uid) = self.deleted.pop_front().expect("checked");
            self.remove_deleted(&uid, deleted);
        }
    }

    /// Removes the pod whose grace period ends first; false when none is left.
    fn evict_oldest_deleted(&mut self) -> bool {
        while let Some((_, deleted, uid)) = self.deleted.pop_front() {
            if self.remove_deleted(&uid, deleted) {
                return true;
            }
        }
        false
    }

    /// The bytes of the deleted pods other than `except`.
    fn deleted_bytes(&self, except: &str) -> usize {
        self.pods
            .iter()
            .filter(|(uid, e)| e.deleted.is_some() && uid.as_str() != except)
            .map(|(_, e)| e.bytes)
            .sum()
    }

    /// Removes a pod if it is still the deletion `deleted` (it may have come back under
    /// its uid, and gone again); says whether it did.
    fn remove_deleted(&mut self, uid: &str, deleted: Instant) -> bool {
        if self
            .pods
            .get(uid)
            .is_none_or(|e| e.deleted != Some(deleted))
        {
            return false;
        }
        let entry = self.pods.remove(uid).expect("checked");
        self.bytes -= entry.bytes;
        if let Some(ip) = entry.pod.ip {
            self.forget_ip(ip, uid);
        }
        true
    }

    /// Drops `ip` from the index if it still leads to `uid`.
    fn forget_ip(&mut self, ip: IpAddr, uid: &str) {
        if self.by_ip.get(&ip).is_some_and(|u| u == uid) {
            self.by_ip.remove(&ip);
        }
    }
}
