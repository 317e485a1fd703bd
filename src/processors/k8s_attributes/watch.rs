//! The watches that keep the [`Cache`] current, through the maintained Kubernetes client
//! (`kube` with `k8s-openapi`): pods (limited by `filter`), and — only when `extract`
//! needs them — ReplicaSets (to name Deployments) and namespaces (their labels and
//! annotations). Each watch lists, then watches from the list's resourceVersion,
//! resumes from the last version it saw when a watch ends or breaks, and lists again
//! on `410 Gone`, with the client's backoff on errors (`kube::runtime::watcher`). After
//! every list, pods the list no longer has are treated as deleted.
//!
//! Credentials: in-cluster (`serviceAccount`: the service account token file, which the
//! client reads again as it rotates, and its CA), a kubeconfig (`kubeConfig`, for
//! tests and running outside a cluster; a `tokenFile` there is read again too), or
//! none. An API server that cannot be reached never stops sieve: the watches retry in
//! the background and data goes on untagged, counted as misses.

use super::cache::{Cache, Extractor, Stored};
use super::config::{AuthType, K8sAttributesConfig};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use parking_lot::{Condvar, Mutex};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters the watches keep.
#[derive(Clone, Default)]
pub struct WatchMetrics {
    /// Watches that failed and were started again (`410 Gone` included).
    pub restarts: Counter,
    /// Pods not cached for want of room.
    pub not_cached: Counter,
    /// Pods cached (those in their grace period included).
    pub pods_cached: Gauge,
    /// The cache's estimated size.
    pub cache_bytes: Gauge,
}

impl WatchMetrics {
    fn observe(&self, cache: &Cache) {
        let (pods, bytes) = cache.size();
        self.pods_cached.set(pods as i64);
        self.cache_bytes.set(bytes as i64);
    }
}

/// Whether the first list of pods has completed, for `wait_for_metadata`.
#[derive(Default)]
pub struct Synced {
    done: Mutex<bool>,
    changed: Condvar,
}

impl Synced {
    pub(super) fn set(&self) {
        *self.done.lock() = true;
        self.changed.notify_all();
    }

    /// Waits until the first list completed or `deadline` passed; says which.
    pub fn wait_until(&self, deadline: Instant) -> bool {
        let mut done = self.done.lock();
        while !*done {
            if self.changed.wait_until(&mut done, deadline).timed_out() {
                break;
            }
        }
        *done
    }
}

/// The running watches; dropping this stops them.
pub struct Watches {
    task: tokio::task::JoinHandle<()>,
    pub synced: Arc<Synced>,
}

impl Watches {
    /// Watches that watch nothing, for tests that fill a cache by hand (on the current
    /// runtime).
    #[cfg(test)]
    pub fn idle() -> Watches {
        Watches {
            task: tokio::spawn(std::future::pending()),
            synced: Arc::new(Synced::default()),
        }
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How the client is made: checked at build (so that a missing in-cluster environment
/// or kubeconfig is a clear error), made inside the watch task.
pub enum Credentials {
    InCluster,
    KubeConfig(Box<(kube::config::Kubeconfig, kube::config::KubeConfigOptions)>),
    None(http::Uri),
}

impl Credentials {
    /// The credentials `auth_type` (and a kubeconfig `context`) name.
    pub fn of(auth_type: AuthType, context: Option<String>) -> Result<Credentials, String> {
        let in_cluster = || {
            let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                "KUBERNETES_SERVICE_HOST is not set: not in a cluster (use `auth_type: kubeConfig` outside one)".to_string()
            })?;
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
            let host = match host.parse::<std::net::Ipv6Addr>() {
                Ok(_) => format!("[{host}]"),
                Err(_) => host,
            };
            format!("https://{host}:{port}")
                .parse::<http::Uri>()
                .map_err(|e| format!("the in-cluster API address is not a URL: {e}"))
        };
        match auth_type {
            AuthType::ServiceAccount => in_cluster().map(|_| Credentials::InCluster),
            AuthType::None => in_cluster().map(Credentials::None),
            AuthType::KubeConfig => {
                let file = kube::config::Kubeconfig::read().map_err(|e| {
                    format!("no kubeconfig to read (KUBECONFIG or ~/.kube/config): {e}")
                })?;
                let options = kube::config::KubeConfigOptions {
                    context,
                    ..Default::default()
                };
                Ok(Credentials::KubeConfig(Box::new((file, options))))
            }
        }
    }

    /// A client with these credentials.
    pub async fn client(&self) -> Result<Client, String> {
        let config = match self {
            Credentials::InCluster => kube::Config::incluster().map_err(|e| e.to_string())?,
            Credentials::KubeConfig(kubeconfig) => {
                let (file, options) = &**kubeconfig;
                kube::Config::from_custom_kubeconfig(file.clone(), options)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Credentials::None(uri) => kube::Config::new(uri.clone()),
        };
        Client::try_from(config).map_err(|e| e.to_string())
    }
}

/// Starts the watches on the current tokio runtime.
pub fn start(
    config: &K8sAttributesConfig,
    cache: Arc<Cache>,
    extractor: Arc<Extractor>,
    metrics: WatchMetrics,
) -> Result<Watches, String> {
    let credentials = Credentials::of(config.auth_type, config.context.clone())?;
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| "k8s_attributes needs sieve's runtime to watch the API".to_string())?;
    let synced = Arc::new(Synced::default());
    let pods = pod_watch_config(config);
    let namespace = Some(config.filter.namespace.clone()).filter(|n| !n.is_empty());
    let task = runtime.spawn(run(
        credentials,
        pods,
        namespace,
        Arc::clone(&synced),
        Watched {
            cache,
            extractor,
            metrics,
        },
    ));
    Ok(Watches { task, synced })
}

/// The pod watch's selectors from `filter`.
fn pod_watch_config(config: &K8sAttributesConfig) -> watcher::Config {
    let mut fields: Vec<String> = config
        .filter
        .fields
        .iter()
        .map(|s| match s.op.as_str() {
            "not-equals" => format!("{}!={}", s.key, s.value),
            _ => format!("{}={}", s.key, s.value),
        })
        .collect();
    if let Some(node) = config.node() {
        fields.push(format!("spec.nodeName={node}"));
    }
    let labels: Vec<String> = config
        .filter
        .labels
        .iter()
        .map(|s| match s.op.as_str() {
            "not-equals" => format!("{}!={}", s.key, s.value),
            "exists" => s.key.clone(),
            "does-not-exist" => format!("!{}", s.key),
            _ => format!("{}={}", s.key, s.value),
        })
        .collect();
    let mut watch = watcher::Config::default();
    if !fields.is_empty() {
        watch = watch.fields(&fields.join(","));
    }
    if !labels.is_empty() {
        watch = watch.labels(&labels.join(","));
    }
    watch
}

/// What the watches write to.
struct Watched {
    cache: Arc<Cache>,
    extractor: Arc<Extractor>,
    metrics: WatchMetrics,
}

async fn run(
    credentials: Credentials,
    pods: watcher::Config,
    namespace: Option<String>,
    synced: Arc<Synced>,
    watched: Watched,
) {
    let client = connect(&credentials, &watched.metrics).await;
    let api = |client: Client| -> Api<Pod> {
        match &namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    };
    let watched = Arc::new(watched);
    let pod_watch = watch_pods(api(client.clone()), pods, &watched, &synced);
    let replica_sets = async {
        if watched.extractor.wants_replica_sets() {
            let api: Api<ReplicaSet> = match &namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            watch_replica_sets(api, &watched).await
        }
    };
    let namespaces = async {
        if watched.extractor.wants_namespaces() {
            watch_namespaces(Api::all(client.clone()), &watched).await
        }
    };
    let cluster = async {
        if watched.extractor.wants_cluster_uid() {
            cluster_uid(Api::all(client.clone()), &watched).await
        }
    };
    let expiry = async {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            watched.cache.expire(Instant::now());
            watched.metrics.observe(&watched.cache);
        }
    };
    tokio::join!(pod_watch, replica_sets, namespaces, cluster, expiry);
}

/// A client, trying again (1 s doubling to a minute) until one can be made.
async fn connect(credentials: &Credentials, metrics: &WatchMetrics) -> Client {
    let mut wait = Duration::from_secs(1);
    loop {
        match credentials.client().await {
            Ok(client) => return client,
            Err(error) => {
                metrics.restarts.inc();
                tracing::warn!(%error, retry_in = ?wait, "k8s_attributes cannot make a Kubernetes client");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// Reads the cluster's uid (the `kube-system` namespace's), trying again (1 s doubling
/// to a minute) until it can.
async fn cluster_uid(api: Api<Namespace>, watched: &Watched) {
    let mut wait = Duration::from_secs(1);
    loop {
        match api.get("kube-system").await {
            Ok(namespace) => {
                if let Some(uid) = namespace.metadata.uid {
                    watched.cache.set_cluster_uid(uid);
                }
                return;
            }
            Err(error) => {
                watched.metrics.restarts.inc();
                tracing::warn!(%error, retry_in = ?wait, "k8s_attributes cannot read the kube-system namespace (k8s.cluster.uid)");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// Logs a watch error at most every 10 s per watch.
struct ErrorLog {
    last: Option<Instant>,
    what: &'static str,
}

impl ErrorLog {
    fn new(what: &'static str) -> ErrorLog {
        ErrorLog { last: None, what }
    }

    fn report(&mut self, error: &watcher::Error, metrics: &WatchMetrics) {
        metrics.restarts.inc();
        if self
            .last
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
        {
            self.last = Some(Instant::now());
            tracing::warn!(%error, watch = self.what, "k8s_attributes watch failed; it starts again");
        }
    }
}

async fn watch_pods(api: Api<Pod>, config: watcher::Config, watched: &Watched, synced: &Synced) {
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut listed: Option<HashSet<String>> = None;
    let mut errors = ErrorLog::new("pods");
    let store = |pod: &Pod| {
        if let Some(info) = watched.extractor.pod(pod) {
            if watched.cache.upsert(info, Instant::now()) == Stored::NoRoom {
                watched.metrics.not_cached.inc();
            }
        }
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed = Some(HashSet::new()),
            Ok(Event::InitApply(pod)) => {
                if let (Some(seen), Some(uid)) = (listed.as_mut(), pod.metadata.uid.as_ref()) {
                    seen.insert(uid.clone());
                }
                store(&pod);
            }
            Ok(Event::InitDone) => {
                if let Some(seen) = listed.take() {
                    watched.cache.delete_all_but(&seen, Instant::now());
                }
                synced.set();
            }
            Ok(Event::Apply(pod)) => store(&pod),
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = &pod.metadata.uid {
                    watched.cache.delete(uid, Instant::now());
                }
            }
            Err(error) => errors.report(&error, &watched.metrics),
        }
        watched.metrics.observe(&watched.cache);
    }
}

async fn watch_replica_sets(api: Api<ReplicaSet>, watched: &Watched) {
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut errors = ErrorLog::new("replicasets");
    let mut listed: Option<HashSet<String>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(rs) | Event::InitApply(rs)) => {
                if let Some((key, deployment)) = watched.extractor.replica_set(&rs) {
                    if let Some(seen) = listed.as_mut() {
                        seen.insert(key.clone());
                    }
                    watched.cache.set_replica_set(key, deployment);
                }
            }
            Ok(Event::Delete(rs)) => {
                if let Some((key, _)) = watched.extractor.replica_set(&rs) {
                    watched.cache.remove_replica_set(&key);
                }
            }
            Ok(Event::Init) => listed = Some(HashSet::new()),
            // ReplicaSets deleted while the watch was down are not in the new list
            Ok(Event::InitDone) => {
                if let Some(seen) = listed.take() {
                    watched.cache.retain_replica_sets(&seen);
                }
            }
            Err(error) => errors.report(&error, &watched.metrics),
        }
    }
}

async fn watch_namespaces(api: Api<Namespace>, watched: &Watched) {
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut errors = ErrorLog::new("namespaces");
    let mut listed: Option<HashSet<String>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(ns) | Event::InitApply(ns)) => {
                if let Some((name, attributes)) = watched.extractor.namespace(&ns) {
                    if let Some(seen) = listed.as_mut() {
                        seen.insert(name.clone());
                    }
                    watched.cache.set_namespace(name, attributes);
                }
            }
            Ok(Event::Delete(ns)) => {
                if let Some(name) = &ns.metadata.name {
                    watched.cache.remove_namespace(name);
                }
            }
            Ok(Event::Init) => listed = Some(HashSet::new()),
            Ok(Event::InitDone) => {
                if let Some(seen) = listed.take() {
                    watched.cache.retain_namespaces(&seen);
                }
            }
            Err(error) => errors.report(&error, &watched.metrics),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `filter` becomes the pod watch's selectors, in the API's syntax.
    #[test]
    fn the_filter_becomes_label_and_field_selectors() {
        let config: K8sAttributesConfig = serde_yaml::from_str(
            "filter:
  node: node-a
  labels:
    - {key: app, value: checkout}
    - {key: tier, value: debug, op: not-equals}
    - {key: team, op: exists}
    - {key: canary, op: does-not-exist}
  fields:
    - {key: status.phase, value: Running}
    - {key: metadata.namespace, value: kube-system, op: not-equals}",
        )
        .unwrap();
        config.validate().unwrap();
        let watch = pod_watch_config(&config);
        assert_eq!(
            watch.label_selector.as_deref(),
            Some("app=checkout,tier!=debug,team,!canary")
        );
        assert_eq!(
            watch.field_selector.as_deref(),
            Some("status.phase=Running,metadata.namespace!=kube-system,spec.nodeName=node-a")
        );
        let unfiltered = pod_watch_config(&K8sAttributesConfig::default());
        assert_eq!(unfiltered.label_selector, None);
        assert_eq!(unfiltered.field_selector, None);
    }
}
