//! `k8s_attributes` against a Kubernetes API double over HTTPS with a bearer token. The
//! double speaks the real list and watch JSON of pods and ReplicaSets (ADDED, MODIFIED,
//! DELETED, BOOKMARK, and a `410 Gone` ERROR event), applies the field selector, and
//! records every request; sieve reaches it through a kubeconfig. Data is sent from
//! bound source addresses on loopback (127.0.0.x), one per pod.

use crate::harness::{make_certificates, Sieve};
use crate::sink::{Received, Sink};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use parking_lot::Mutex;
use prost::Message;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const TOKEN: &str = "k8s-test-token";
const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Pods,
    ReplicaSets,
    Namespaces,
}

/// One request the double answered.
#[derive(Clone, Debug)]
struct Seen {
    kind: Kind,
    watch: bool,
    resource_version: Option<String>,
    field_selector: Option<String>,
    authorized: bool,
}

type Chunk = Result<Bytes, std::io::Error>;

#[derive(Default)]
struct ApiState {
    resource_version: u64,
    objects: BTreeMap<(Kind, String), Value>,
    /// Every change, for watches that start from an older version.
    events: Vec<(u64, Kind, &'static str, Value)>,
    requests: Vec<Seen>,
    watches: Vec<(Kind, Option<String>, mpsc::UnboundedSender<Chunk>)>,
    /// The next watch of pods is answered with `410 Gone`.
    gone_next_watch: bool,
}

/// The API double.
#[derive(Clone)]
struct ApiServer {
    state: Arc<Mutex<ApiState>>,
    port: u16,
}

fn node_of(object: &Value) -> Option<&str> {
    object["spec"]["nodeName"].as_str()
}

/// Whether `object` passes a field selector of the form `spec.nodeName=<node>`.
fn selected(object: &Value, selector: &Option<String>) -> bool {
    match selector
        .as_deref()
        .and_then(|s| s.strip_prefix("spec.nodeName="))
    {
        Some(node) => node_of(object) == Some(node),
        None => true,
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    Bytes::from(format!("{}\n", json!({"type": kind, "object": object})))
}

impl ApiServer {
    /// A double serving HTTPS with a certificate made in `dir` (where its kubeconfig
    /// finds the CA).
    async fn start_in(dir: &std::path::Path) -> ApiServer {
        make_certificates(dir);
        let file = |name: &str| dir.join(name).display().to_string();
        let acceptor = sieve::tls::http_acceptor(&sieve::tls::TlsServerConfig {
            cert_file: file("server.pem"),
            key_file: file("server.key"),
            client_ca_file: None,
        })
        .unwrap();
        ApiServer::start(acceptor).await
    }

    async fn start(acceptor: tokio_rustls::TlsAcceptor) -> ApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = ApiServer {
            state: Arc::default(),
            port,
        };
        let serving = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (server, acceptor) = (serving.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, std::convert::Infallible>(server.answer(req)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        server
    }

    fn answer(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<BoxBody<Bytes, std::io::Error>> {
        let authorized = req
            .headers()
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == format!("Bearer {TOKEN}").as_bytes());
        let kind = match req.uri().path() {
            "/api/v1/pods" => Kind::Pods,
            "/apis/apps/v1/replicasets" => Kind::ReplicaSets,
            "/api/v1/namespaces" => Kind::Namespaces,
            "/api/v1/nodes/node-a" if authorized => return respond(200, node("node-a")),
            _ => return respond(404, json!({"kind": "Status", "code": 404})),
        };
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .map(|q| {
                url_pairs(q)
                    .into_iter()
                    .collect::<HashMap<String, String>>()
            })
            .unwrap_or_default();
        let seen = Seen {
            kind,
            watch: query.get("watch").is_some_and(|w| w == "true" || w == "1"),
            resource_version: query.get("resourceVersion").cloned(),
            field_selector: query.get("fieldSelector").cloned(),
            authorized,
        };
        self.state.lock().requests.push(seen.clone());
        if !authorized {
            return respond(
                401,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Unauthorized", "code": 401}),
            );
        }
        if seen.watch {
            self.watch(kind, seen)
        } else {
            self.list(kind, &seen.field_selector)
        }
    }

    fn list(
        &self,
        kind: Kind,
        selector: &Option<String>,
    ) -> hyper::Response<BoxBody<Bytes, std::io::Error>> {
        let state = self.state.lock();
        let items: Vec<&Value> = state
            .objects
            .iter()
            .filter(|((k, _), o)| *k == kind && selected(o, selector))
            .map(|(_, o)| o)
            .collect();
        let (list_kind, api_version) = match kind {
            Kind::Pods => ("PodList", "v1"),
            Kind::ReplicaSets => ("ReplicaSetList", "apps/v1"),
            Kind::Namespaces => ("NamespaceList", "v1"),
        };
        respond(
            200,
            json!({"kind": list_kind, "apiVersion": api_version,
                   "metadata": {"resourceVersion": state.resource_version.to_string()},
                   "items": items}),
        )
    }

    fn watch(&self, kind: Kind, seen: Seen) -> hyper::Response<BoxBody<Bytes, std::io::Error>> {
        let (sender, receiver) = mpsc::unbounded_channel::<Chunk>();
        let mut state = self.state.lock();
        if kind == Kind::Pods && std::mem::take(&mut state.gone_next_watch) {
            let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "message": "too old resource version", "reason": "Expired", "code": 410});
            let _ = sender.send(Ok(line("ERROR", &gone)));
            drop(sender);
        } else {
            let from: u64 = seen
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            for (version, k, event, object) in &state.events {
                if *version > from && *k == kind && selected(object, &seen.field_selector) {
                    let _ = sender.send(Ok(line(event, object)));
                }
            }
            state.watches.push((kind, seen.field_selector, sender));
        }
        let body = StreamBody::new(
            tokio_stream::wrappers::UnboundedReceiverStream::new(receiver)
                .map(|chunk| chunk.map(Frame::data)),
        );
        hyper::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(BodyExt::boxed(body))
            .unwrap()
    }

    /// Adds or changes an object (ADDED or MODIFIED), telling the watches.
    fn apply(&self, kind: Kind, mut object: Value) {
        let mut state = self.state.lock();
        state.resource_version += 1;
        let version = state.resource_version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let event = match state.objects.insert((kind, name), object.clone()) {
            Some(_) => "MODIFIED",
            None => "ADDED",
        };
        state.notify(version, kind, event, object);
    }

    fn delete(&self, kind: Kind, name: &str) {
        let mut state = self.state.lock();
        state.resource_version += 1;
        let version = state.resource_version;
        let mut object = state.objects.remove(&(kind, name.to_string())).unwrap();
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        state.notify(version, kind, "DELETED", object);
    }

    /// A BOOKMARK at the current version on every pod watch.
    fn bookmark(&self) {
        let state = self.state.lock();
        let object = json!({"kind": "Pod", "apiVersion": "v1",
                            "metadata": {"resourceVersion": state.resource_version.to_string()}});
        for (kind, _, watch) in &state.watches {
            if *kind == Kind::Pods {
                let _ = watch.send(Ok(line("BOOKMARK", &object)));
            }
        }
    }

    /// Breaks every pod watch in the middle of a line (the connection fails).
    fn break_pod_watches(&self) {
        let mut state = self.state.lock();
        state.watches.retain(|(kind, _, watch)| {
            if *kind != Kind::Pods {
                return true;
            }
            let _ = watch.send(Ok(Bytes::from_static(b"{\"type\":\"MODIF")));
            let _ = watch.send(Err(std::io::Error::other("connection broken")));
            false
        });
    }

    fn requests(&self, kind: Kind) -> Vec<Seen> {
        let state = self.state.lock();
        state
            .requests
            .iter()
            .filter(|r| r.kind == kind)
            .cloned()
            .collect()
    }

    fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        std::fs::write(dir.join("token"), TOKEN).unwrap();
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca}
users:
- name: test
  user:
    tokenFile: {token}
contexts:
- name: test
  context: {{cluster: test, user: test}}
current-context: test
",
            port = self.port,
            ca = dir.join("ca.pem").display(),
            token = dir.join("token").display(),
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl ApiState {
    fn notify(&mut self, version: u64, kind: Kind, event: &'static str, object: Value) {
        self.watches.retain(|(k, selector, watch)| {
            *k != kind
                || !selected(&object, selector)
                || watch.send(Ok(line(event, &object))).is_ok()
        });
        self.events.push((version, kind, event, object));
    }
}

fn respond(status: u16, body: Value) -> hyper::Response<BoxBody<Bytes, std::io::Error>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

/// Decodes `a=b&c=d` (percent-encoded) into pairs.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |text: &str| {
        let bytes = text.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            if bytes[at] == b'%' && at + 2 < bytes.len() {
                if let Ok(byte) = u8::from_str_radix(
                    std::str::from_utf8(&bytes[at + 1..at + 3]).unwrap_or(""),
                    16,
                ) {
                    out.push(byte);
                    at += 3;
                    continue;
                }
            }
            out.push(bytes[at]);
            at += 1;
        }
        String::from_utf8(out).unwrap()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// A pod as the API server sends it.
fn pod(name: &str, uid: &str, ip: &str, node: &str, owner: (&str, &str), app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "shop", "uid": uid,
            "creationTimestamp": "2026-12-01T09:59:00Z",
            "labels": {"app": app},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner.0, "name": owner.1, "uid": format!("{}-uid", owner.1), "controller": true}]
        },
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": format!("registry.example.com/shop/{app}:1.2")}]},
        "status": {"phase": "Running", "podIP": ip, "startTime": "2026-12-01T10:00:00Z"}
    })
}

fn namespace(name: &str, team: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "uid": format!("{name}-uid"), "labels": {"team": team}}})
}

fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": "node-uid-1", "resourceVersion": "1",
                     "labels": {"topology.kubernetes.io/zone": "zone-a", "kubernetes.io/os": "linux"}}
    })
}

fn replica_set(name: &str, deployment: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-uid"),
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment, "uid": "d-uid", "controller": true}]},
        "spec": {"selector": {}}
    })
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn resource(service: &str, extra: &[(&str, &str)]) -> Option<Resource> {
    let mut attributes = vec![attribute("service.name", service)];
    attributes.extend(extra.iter().map(|(k, v)| attribute(k, v)));
    Some(Resource {
        attributes,
        ..Default::default()
    })
}

/// One request of `signal` (`traces`, `logs`, `metrics`) for `service`.
fn request(signal: &str, service: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    match signal {
        "traces" => ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(service, extra),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "op".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec(),
        "logs" => ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource(service, extra),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        severity_text: "INFO".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec(),
        _ => ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(service, extra),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "up".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint::default()],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec(),
    }
}

/// POSTs OTLP/HTTP protobuf from the address `source` (the connection's client address).
async fn post_from(source: &str, port: u16, signal: &str, body: Vec<u8>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::post(format!("/v1/{signal}"))
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200, "{signal} from {source}");
}

/// The resource attributes of everything of `signal` the sink has for `service`.
fn resources_of(received: &Received, signal: &str, service: &str) -> Vec<BTreeMap<String, String>> {
    let resources: Vec<&Resource> = match signal {
        "traces" => received
            .traces
            .iter()
            .filter_map(|r| r.resource.as_ref())
            .collect(),
        "logs" => received
            .logs
            .iter()
            .filter_map(|r| r.resource.as_ref())
            .collect(),
        _ => received
            .metrics
            .iter()
            .filter_map(|r| r.resource.as_ref())
            .collect(),
    };
    resources
        .into_iter()
        .map(|r| {
            r.attributes
                .iter()
                .map(|kv| {
                    let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    (kv.key.clone(), value)
                })
                .collect::<BTreeMap<String, String>>()
        })
        .filter(|attributes| attributes.get("service.name").map(String::as_str) == Some(service))
        .collect()
}

/// Sends one `signal` request for `service` from `source` and returns the resource
/// attributes it arrived with.
async fn tagged(
    sieve: &Sieve,
    sink: &Sink,
    source: &str,
    signal: &str,
    service: &str,
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    post_from(source, sieve.http, signal, request(signal, service, extra)).await;
    sink.wait_for(WAIT, &format!("{signal} of {service}"), |r| {
        !resources_of(r, signal, service).is_empty()
    })
    .await;
    sink.with(|r| resources_of(r, signal, service).remove(0))
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

const CONFIG: &str = "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http}
processors:
  batch:
    timeout: 20ms
  k8sattributes:
    auth_type: kubeConfig
    filter:
      node_from_env_var: KUBE_NODE_NAME
    extract:
      metadata: [k8s.namespace.name, k8s.pod.name, k8s.pod.uid, k8s.pod.start_time, k8s.node.name,
                 k8s.deployment.name, k8s.statefulset.name, container.image.name, container.image.tag]
      labels: [{key: app}, {key: team, from: namespace}]
    pod_delete_grace_period: 2s
exporters:
  otlp:
    endpoint: SINK
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics}
  pipelines:
    traces: {receivers: [otlp], processors: [batch, k8sattributes], exporters: [otlp]}
    logs: {receivers: [otlp], processors: [batch, k8sattributes], exporters: [otlp]}
    metrics: {receivers: [otlp], processors: [batch, k8sattributes], exporters: [otlp]}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_found_by_connection_through_list_watch_bookmark_break_and_gone() {
    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start_in(dir.path()).await;
    api.apply(Kind::ReplicaSets, replica_set("checkout-7d9", "checkout"));
    api.apply(Kind::Namespaces, namespace("shop", "payments"));
    api.apply(
        Kind::Pods,
        pod(
            "checkout-7d9-a",
            "uid-a",
            "127.0.0.11",
            "node-a",
            ("ReplicaSet", "checkout-7d9"),
            "checkout",
        ),
    );
    api.apply(
        Kind::Pods,
        pod(
            "cart-0",
            "uid-b",
            "127.0.0.12",
            "node-a",
            ("StatefulSet", "cart"),
            "cart",
        ),
    );
    api.apply(
        Kind::Pods,
        pod(
            "elsewhere-0",
            "uid-c",
            "127.0.0.13",
            "node-b",
            ("StatefulSet", "elsewhere"),
            "elsewhere",
        ),
    );
    let kubeconfig = api.kubeconfig(dir.path());

    let sink = Sink::start().await;
    let config = CONFIG.replace("SINK", &sink.grpc_endpoint());
    let sieve = Sieve::start_with_env(
        &config,
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("KUBE_NODE_NAME", "node-a"),
        ],
    );
    let pods_cached = || sieve.metric("sieve_k8s_attributes_pods_cached", &[]);
    wait_until("the first list", || pods_cached() == 2.0).await;
    let lists = api.requests(Kind::Pods);
    assert_eq!(
        lists.iter().filter(|r| !r.watch).count(),
        1,
        "three pipelines share one set of watches: {lists:?}"
    );
    assert!(
        lists.iter().all(|r| r.authorized),
        "the bearer token from the kubeconfig"
    );
    assert!(
        lists
            .iter()
            .all(|r| r.field_selector.as_deref() == Some("spec.nodeName=node-a")),
        "a DaemonSet watches its node's pods: {lists:?}"
    );

    // every signal, from each pod's address, through the batch processor
    // the ReplicaSets' and namespaces' watches run beside the pods': poll until they too
    // have listed
    let mut a = BTreeMap::new();
    for attempt in 0..100 {
        a = tagged(
            &sieve,
            &sink,
            "127.0.0.11",
            "traces",
            &format!("checkout-{attempt}"),
            &[],
        )
        .await;
        if a.contains_key("k8s.deployment.name") && a.contains_key("k8s.namespace.labels.team") {
            break;
        }
    }
    assert_eq!(a["k8s.pod.name"], "checkout-7d9-a");
    assert_eq!(a["k8s.pod.uid"], "uid-a");
    assert_eq!(a["k8s.namespace.name"], "shop");
    assert_eq!(a["k8s.node.name"], "node-a");
    assert_eq!(
        a["k8s.deployment.name"], "checkout",
        "named through the ReplicaSet"
    );
    assert_eq!(a["k8s.pod.start_time"], "2026-12-01T09:59:00Z");
    assert_eq!(a["k8s.pod.labels.app"], "checkout");
    assert_eq!(
        a["k8s.namespace.labels.team"], "payments",
        "from the namespaces' watch"
    );
    assert_eq!(
        a["container.image.name"],
        "registry.example.com/shop/checkout"
    );
    assert_eq!(a["container.image.tag"], "1.2");
    let b = tagged(&sieve, &sink, "127.0.0.12", "logs", "cart", &[]).await;
    assert_eq!(
        (
            b["k8s.pod.name"].as_str(),
            b["k8s.statefulset.name"].as_str()
        ),
        ("cart-0", "cart")
    );
    let m = tagged(
        &sieve,
        &sink,
        "127.0.0.11",
        "metrics",
        "checkout-metrics",
        &[],
    )
    .await;
    assert_eq!(m["k8s.pod.name"], "checkout-7d9-a");
    let kept = tagged(
        &sieve,
        &sink,
        "127.0.0.11",
        "traces",
        "preset",
        &[("k8s.namespace.name", "mine")],
    )
    .await;
    assert_eq!(
        kept["k8s.namespace.name"], "mine",
        "existing attributes are not overwritten"
    );
    let other_node = tagged(&sieve, &sink, "127.0.0.13", "traces", "elsewhere", &[]).await;
    assert!(
        !other_node.contains_key("k8s.pod.name"),
        "pods of other nodes are not watched"
    );
    assert!(
        sieve.metric(
            "sieve_k8s_attributes_associations_total",
            &[("source", "connection"), ("result", "miss")]
        ) >= 1.0
    );

    // MODIFIED and a BOOKMARK
    api.bookmark();
    api.apply(
        Kind::Pods,
        pod(
            "cart-0",
            "uid-b",
            "127.0.0.12",
            "node-a",
            ("StatefulSet", "cart"),
            "cart-v2",
        ),
    );
    let mut cart = BTreeMap::new();
    for attempt in 0..100 {
        cart = tagged(
            &sieve,
            &sink,
            "127.0.0.12",
            "logs",
            &format!("cart-{attempt}"),
            &[],
        )
        .await;
        if cart["k8s.pod.labels.app"] == "cart-v2" {
            break;
        }
    }
    assert_eq!(
        cart["k8s.pod.labels.app"], "cart-v2",
        "the watch delivered the change"
    );

    // deleted: late data is still tagged (the events after the delete show it was
    // seen); replaced at the same IP: the new pod at once, and after the old one's grace
    api.delete(Kind::Pods, "checkout-7d9-a");
    api.apply(
        Kind::Pods,
        pod(
            "zeta-0",
            "uid-z",
            "127.0.0.15",
            "node-a",
            ("StatefulSet", "zeta"),
            "zeta",
        ),
    );
    wait_until("the delete and the next pod", || pods_cached() == 3.0).await;
    let late = tagged(&sieve, &sink, "127.0.0.11", "traces", "late", &[]).await;
    assert_eq!(
        late["k8s.pod.name"], "checkout-7d9-a",
        "within the grace period"
    );
    api.apply(
        Kind::Pods,
        pod(
            "checkout-7d9-n",
            "uid-n",
            "127.0.0.11",
            "node-a",
            ("ReplicaSet", "checkout-7d9"),
            "checkout",
        ),
    );
    wait_until("the new pod", || pods_cached() == 4.0).await;
    let replaced = tagged(&sieve, &sink, "127.0.0.11", "traces", "replaced", &[]).await;
    assert_eq!(
        replaced["k8s.pod.name"], "checkout-7d9-n",
        "the new pod takes the IP"
    );
    wait_until("the grace period to end", || pods_cached() == 3.0).await;
    let after_grace = tagged(&sieve, &sink, "127.0.0.11", "traces", "after-grace", &[]).await;
    assert_eq!(after_grace["k8s.pod.name"], "checkout-7d9-n");

    // a watch broken mid-line resumes from the last version, without a list
    let lists_before = api.requests(Kind::Pods).iter().filter(|r| !r.watch).count();
    let version_before = api.state.lock().resource_version;
    api.break_pod_watches();
    api.apply(
        Kind::Pods,
        pod(
            "queue-0",
            "uid-q",
            "127.0.0.14",
            "node-a",
            ("StatefulSet", "queue"),
            "queue",
        ),
    );
    wait_until("pods after the break", || pods_cached() == 4.0).await;
    let requests = api.requests(Kind::Pods);
    assert_eq!(
        requests.iter().filter(|r| !r.watch).count(),
        lists_before,
        "no list: {requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.watch
            && r.resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                == Some(version_before)),
        "resumed from version {version_before}: {requests:?}"
    );
    let queue = tagged(&sieve, &sink, "127.0.0.14", "traces", "queue", &[]).await;
    assert_eq!(queue["k8s.pod.name"], "queue-0");

    // 410 Gone: the watch lists again; a pod deleted meanwhile without an event goes
    let restarts = sieve.metric("sieve_k8s_attributes_watch_restarts_total", &[]);
    {
        let mut state = api.state.lock();
        state.gone_next_watch = true;
        state.objects.remove(&(Kind::Pods, "queue-0".to_string()));
    }
    api.break_pod_watches();
    wait_until("a list after 410 Gone", || {
        api.requests(Kind::Pods).iter().filter(|r| !r.watch).count() > lists_before
    })
    .await;
    assert!(sieve.metric("sieve_k8s_attributes_watch_restarts_total", &[]) > restarts);
    wait_until("the vanished pod's grace period", || pods_cached() == 3.0).await;
    let gone = tagged(&sieve, &sink, "127.0.0.14", "traces", "gone", &[]).await;
    assert!(
        !gone.contains_key("k8s.pod.name"),
        "the relist forgot the pod: {gone:?} {:?}",
        api.requests(Kind::Pods)
    );
    let again = tagged(&sieve, &sink, "127.0.0.12", "traces", "after-relist", &[]).await;
    assert_eq!(again["k8s.pod.name"], "cart-0");
}

/// `resource_detection` with `env` and `k8snode` (through the same client and
/// kubeconfig), before `k8s_attributes`, on every resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_detection_reads_the_environment_and_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start_in(dir.path()).await;
    let kubeconfig = api.kubeconfig(dir.path());
    let sink = Sink::start().await;
    let config = CONFIG
        .replace("SINK", &sink.grpc_endpoint())
        .replace(
            "  k8sattributes:",
            "  resourcedetection:
    detectors: [env, k8snode]
    override: false
    k8snode:
      auth_type: kubeConfig
      labels: ['topology\\.kubernetes\\.io/.*']
  k8sattributes:",
        )
        .replace(
            "[batch, k8sattributes]",
            "[resourcedetection, batch, k8sattributes]",
        );
    let sieve = Sieve::start_with_env(
        &config,
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("KUBE_NODE_NAME", "node-a"),
            ("K8S_NODE_NAME", "node-a"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=pay%20ments",
            ),
        ],
    );
    let found = tagged(
        &sieve,
        &sink,
        "127.0.0.21",
        "traces",
        "svc",
        &[("team", "own")],
    )
    .await;
    assert_eq!(found["deployment.environment"], "prod");
    assert_eq!(
        found["team"], "own",
        "override: false keeps the resource's own"
    );
    assert_eq!(found["k8s.node.name"], "node-a");
    assert_eq!(found["k8s.node.uid"], "node-uid-1");
    assert_eq!(
        found["k8s.node.label.topology.kubernetes.io/zone"],
        "zone-a"
    );
    assert!(!found.contains_key("k8s.node.label.kubernetes.io/os"));
    let logs = tagged(&sieve, &sink, "127.0.0.21", "logs", "svc", &[]).await;
    assert_eq!(logs["team"], "pay ments");
    assert!(api.requests(Kind::Pods).iter().all(|r| r.authorized));
}

/// The collector Helm chart agent's processors (its presets, rendered, unchanged) load
/// and run. Outside a cluster the in-cluster client cannot be made: sieve starts
/// anyway, counts the retries, and data goes on with what the other processors add.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_charts_agent_processors_load_unchanged_and_run() {
    let sink = Sink::start().await;
    let config = std::fs::read_to_string(format!(
        "{}/tests/data/collector-chart-agent.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replace("SINK", &sink.grpc_endpoint());
    let sieve = Sieve::start_with_env(
        &config,
        &[
            ("MY_POD_IP", "127.0.0.1"),
            ("K8S_NODE_NAME", "node-a"),
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", "1"),
        ],
    );
    let span_attributes = [
        ("db.table", "users"),
        ("account_email", "jane@example.com"),
        ("http.status_code", "200"),
        ("key_original", "v"),
        ("copy_key", "old"),
    ];
    let body = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(
                "chart",
                &[("k8s-cluster", "c1"), ("redundant-attribute", "x")],
            ),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "op".into(),
                    attributes: span_attributes
                        .iter()
                        .map(|(k, v)| attribute(k, v))
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    post_from("127.0.0.1", sieve.http, "traces", body).await;
    sink.wait_for(WAIT, "the span", |r| r.span_count() == 1)
        .await;
    let (resource, span) = sink.with(|r| {
        let rs = &r.traces[0];
        (
            rs.resource.clone().unwrap(),
            rs.scope_spans[0].spans[0].clone(),
        )
    });
    let value = |attributes: &[KeyValue], key: &str| {
        attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    };
    let text = |s: &str| Some(any_value::Value::StringValue(s.into()));
    assert_eq!(
        value(&resource.attributes, "cloud.availability_zone"),
        text("zone-1")
    );
    assert_eq!(value(&resource.attributes, "k8s.cluster.name"), text("c1"));
    assert_eq!(value(&resource.attributes, "redundant-attribute"), None);
    let attributes = &span.attributes;
    assert_eq!(value(attributes, "db.table"), None);
    assert_eq!(
        value(attributes, "redacted_span"),
        Some(any_value::Value::BoolValue(true))
    );
    assert_eq!(value(attributes, "copy_key"), text("v"));
    assert_eq!(
        value(attributes, "account_id"),
        Some(any_value::Value::IntValue(2245))
    );
    assert_eq!(
        value(attributes, "account_email"),
        text("8c87b489ce35cf2e2f39f80e282cb2e804932a56a213983eeeb428407d43b52d")
    );
    assert_eq!(
        value(attributes, "http.status_code"),
        Some(any_value::Value::IntValue(200))
    );
    let restarts = || sieve.metric("sieve_k8s_attributes_watch_restarts_total", &[]);
    wait_until("the client to be retried", || restarts() >= 1.0).await;
    assert!(
        sieve.metric(
            "sieve_k8s_attributes_associations_total",
            &[("result", "miss")]
        ) >= 1.0,
        "untagged data is counted"
    );
}

/// The client's address survives the persistent queue: data that waited on disk through
/// a restart is still associated by its connection (`passthrough` sets `k8s.pod.ip`
/// from it, with no API to reach).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_survives_the_persistent_queue_across_a_restart() {
    let sink = Sink::start().await;
    let storage = tempfile::tempdir().unwrap();
    let config = |backend: &str| {
        format!(
            "extensions:
  file_storage:
    directory: {dir}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{{http}}
processors:
  k8s_attributes:
    passthrough: true
exporters:
  otlp:
    endpoint: {backend}
    sending_queue:
      storage: file_storage
    retry_on_failure:
      max_elapsed_time: 0s
service:
  extensions: [file_storage]
  shutdown_timeout: 1s
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces: {{receivers: [otlp], processors: [k8s_attributes], exporters: [otlp]}}
",
            dir = storage.path().display()
        )
    };
    // nothing listens on port 1: the backend is down
    let mut sieve = Sieve::start(&config("http://127.0.0.1:1"));
    post_from(
        "127.0.0.31",
        sieve.http,
        "traces",
        request("traces", "queued", &[]),
    )
    .await;
    sieve.signal("TERM");
    assert!(sieve.wait_exit(WAIT).is_some_and(|s| s.success()));
    let _next = Sieve::start(&config(&sink.grpc_endpoint()));
    sink.wait_for(WAIT, "the queued span", |r| {
        !resources_of(r, "traces", "queued").is_empty()
    })
    .await;
    let attributes = sink.with(|r| resources_of(r, "traces", "queued").remove(0));
    assert_eq!(attributes["k8s.pod.ip"], "127.0.0.31");
}
