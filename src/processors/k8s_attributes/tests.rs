//! The cache, the extraction from real pod JSON, association, and tagging.

use super::cache::{split_image, PodInfo, Stored};
use super::config::{AssociationConfig, SourceConfig};
use super::*;
use k8s_openapi::api::core::v1::Pod;
use std::net::IpAddr;
use std::time::Duration;

/// A pod as the API server sends it (trimmed): a Deployment's pod with two containers.
const POD: &str = r#"{
  "apiVersion": "v1", "kind": "Pod",
  "metadata": {
    "name": "checkout-7d9f8b6c5d-x2x4z", "namespace": "shop", "uid": "11111111-aaaa",
    "resourceVersion": "100", "creationTimestamp": "2026-12-01T09:59:58Z",
    "labels": {"app": "checkout", "team": "payments", "pod-template-hash": "7d9f8b6c5d"},
    "annotations": {"owner": "jane", "kubectl.kubernetes.io/restartedAt": "x"},
    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7d9f8b6c5d", "uid": "rs-uid", "controller": true}]
  },
  "spec": {
    "nodeName": "node-a",
    "containers": [
      {"name": "app", "image": "registry.example.com:5000/shop/checkout:1.4.2"},
      {"name": "proxy", "image": "envoyproxy/envoy@sha256:abcd"}
    ]
  },
  "status": {
    "podIP": "10.1.2.3", "startTime": "2026-12-01T10:00:00Z",
    "containerStatuses": [
      {"name": "app", "containerID": "containerd://c0ffee", "image": "", "imageID": "", "ready": true, "restartCount": 0},
      {"name": "proxy", "containerID": "containerd://beef", "image": "", "imageID": "", "ready": true, "restartCount": 0}
    ]
  }
}"#;

fn pod_json(name: &str, uid: &str, ip: &str) -> Pod {
    let text = POD
        .replace("checkout-7d9f8b6c5d-x2x4z", name)
        .replace("11111111-aaaa", uid)
        .replace("10.1.2.3", ip);
    serde_json::from_str(&text).unwrap()
}

fn config(yaml: &str) -> K8sAttributesConfig {
    let config: K8sAttributesConfig = serde_yaml::from_str(yaml).unwrap();
    config.validate().unwrap();
    config
}

fn text(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

#[test]
fn a_pod_keeps_only_what_extract_names() {
    let extractor = Extractor::new(&config(
        "extract:
  metadata: [k8s.namespace.name, k8s.pod.name, k8s.pod.uid, k8s.pod.start_time, k8s.node.name,
             k8s.deployment.name, k8s.replicaset.name, container.image.name, container.image.tag, container.id]
  labels: [{key: app}, {tag_name: team.$1, key_regex: 'te(a)m'}]
  annotations: [{tag_name: owner, key: owner}]",
    ));
    let info = extractor
        .pod(&pod_json("checkout-1", "u1", "10.1.2.3"))
        .unwrap();
    let a = &info.attributes;
    assert_eq!(text(a, "k8s.namespace.name").as_deref(), Some("shop"));
    assert_eq!(text(a, "k8s.pod.name").as_deref(), Some("checkout-1"));
    assert_eq!(
        text(a, "k8s.pod.start_time").as_deref(),
        Some("2026-12-01T09:59:58Z"),
        "the creation, as the collector"
    );
    assert_eq!(text(a, "k8s.node.name").as_deref(), Some("node-a"));
    assert_eq!(
        text(a, "k8s.replicaset.name").as_deref(),
        Some("checkout-7d9f8b6c5d")
    );
    assert_eq!(text(a, "k8s.pod.labels.app").as_deref(), Some("checkout"));
    assert_eq!(text(a, "team.a").as_deref(), Some("payments"));
    assert_eq!(text(a, "owner").as_deref(), Some("jane"));
    assert_eq!(
        text(a, "k8s.pod.labels.pod-template-hash"),
        None,
        "only what is named"
    );
    assert_eq!(
        info.replica_set.as_deref(),
        Some("shop/checkout-7d9f8b6c5d")
    );
    assert_eq!(info.ip, Some("10.1.2.3".parse().unwrap()));
    assert_eq!(
        info.containers[0].image_name.as_deref(),
        Some("registry.example.com:5000/shop/checkout")
    );
    assert_eq!(info.containers[0].image_tag.as_deref(), Some("1.4.2"));
    assert_eq!(info.containers[0].id.as_deref(), Some("c0ffee"));

    let defaults = Extractor::new(&config("{}"));
    let info = defaults.pod(&pod_json("p", "u", "10.1.2.3")).unwrap();
    assert!(
        info.containers.is_empty(),
        "no container attribute asked for"
    );
    assert_eq!(text(&info.attributes, "k8s.replicaset.name"), None);
    assert!(
        info.replica_set.is_some(),
        "the default names the Deployment"
    );
    assert!(
        defaults
            .pod(&pod_json("jaeger-agent", "j", "10.0.0.9"))
            .is_none(),
        "excluded by default"
    );
}

#[test]
fn image_references_split_as_the_collector_splits_them() {
    let cases = [
        ("nginx", ("nginx", Some("latest"))),
        ("nginx:1.27", ("nginx", Some("1.27"))),
        (
            "registry:5000/team/app:v2",
            ("registry:5000/team/app", Some("v2")),
        ),
        (
            "registry:5000/team/app",
            ("registry:5000/team/app", Some("latest")),
        ),
        ("app@sha256:abc", ("app", None)),
        ("app:1.0@sha256:abc", ("app", Some("1.0"))),
    ];
    for (image, (name, tag)) in cases {
        assert_eq!(
            split_image(image),
            (name.to_string(), tag.map(str::to_string)),
            "{image}"
        );
    }
}

fn info(uid: &str, ip: &str) -> PodInfo {
    PodInfo {
        uid: uid.into(),
        name: format!("pod-{uid}"),
        namespace: "ns".into(),
        ip: Some(ip.parse().unwrap()),
        created: 0,
        attributes: vec![("k8s.pod.name".into(), format!("pod-{uid}"))],
        replica_set: None,
        containers: Vec::new(),
        wanted: Default::default(),
        service: None,
    }
}

/// A deleted pod still tags for its grace period; a new pod at its IP takes the IP at
/// once, and the old pod's end does not take the IP from the new one.
#[test]
fn deleted_pods_stay_for_the_grace_period_and_never_take_an_ip_back() {
    let cache = Cache::new(1 << 20, Duration::from_secs(120));
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    let start = Instant::now();
    cache.upsert(info("old", "10.0.0.1"), start);
    cache.delete("old", start);
    assert_eq!(
        cache.by_ip(ip).unwrap().uid,
        "old",
        "late data is still tagged"
    );
    cache.expire(start + Duration::from_secs(119));
    assert_eq!(cache.by_ip(ip).unwrap().uid, "old");
    cache.upsert(info("new", "10.0.0.1"), start + Duration::from_secs(60));
    assert_eq!(cache.by_ip(ip).unwrap().uid, "new");
    cache.expire(start + Duration::from_secs(121));
    assert_eq!(cache.by_ip(ip).unwrap().uid, "new");
    assert!(cache.by_uid("old").is_none());
    assert_eq!(cache.size().0, 1);
}

/// At the byte limit, pods in their grace period go first (oldest first); then new
/// pods are refused, and the cache never passes its limit.
#[test]
fn the_cache_is_bounded_in_bytes() {
    let one = info("p0", "10.0.0.0");
    let room = 3 * (one.attributes[0].1.len() + 400);
    let cache = Cache::new(room, Duration::from_secs(120));
    let now = Instant::now();
    let mut stored = 0;
    for n in 0..10 {
        if cache.upsert(info(&format!("p{n}"), &format!("10.0.0.{n}")), now) == Stored::Cached {
            stored += 1;
        }
        assert!(cache.size().1 <= room);
    }
    assert!((2..10).contains(&stored), "{stored}");
    cache.delete("p0", now);
    assert_eq!(
        cache.upsert(info("q", "10.0.1.1"), now),
        Stored::Cached,
        "a deleted pod made room"
    );
    assert!(cache.by_uid("p0").is_none());
    assert!(cache.size().1 <= room);
}

/// The processor over a cache filled by hand (watches that watch nothing; call it
/// inside a runtime).
fn over(
    cache: Arc<Cache>,
    telemetry: &Telemetry,
    wait_until: Option<Instant>,
) -> K8sAttributesProcessor {
    K8sAttributesProcessor {
        shared: Arc::new(Shared {
            source: Some(Arc::new(Source {
                cache,
                watches: watch::Watches::idle(),
            })),
            association: Association::new(&[]),
            wait_until,
            associations: telemetry.family("k8s_attributes_associations", "test"),
            processor: "k8s_attributes".into(),
            passthrough: false,
        }),
        waited: false,
    }
}

fn resource_with(attributes: &[(&str, &str)]) -> Vec<KeyValue> {
    let mut list = Vec::new();
    for (k, v) in attributes {
        insert(&mut list, k, v.to_string());
    }
    list
}

#[test]
fn association_follows_the_rules_in_order() {
    let cache = Cache::new(1 << 20, Duration::from_secs(120));
    let now = Instant::now();
    cache.upsert(info("a", "10.0.0.1"), now);
    cache.upsert(info("b", "10.0.0.2"), now);
    let client: Option<IpAddr> = Some("10.0.0.2".parse().unwrap());
    let defaults = Association::new(&[]);
    let uid = |found: association::Found| found.pod.map(|p| p.uid.clone());
    // the default rules: k8s.pod.ip first, then the connection, then host.name
    assert_eq!(
        uid(defaults.find(
            Some(&cache),
            &resource_with(&[("k8s.pod.ip", "10.0.0.1")]),
            client
        ))
        .as_deref(),
        Some("a")
    );
    assert_eq!(
        uid(defaults.find(Some(&cache), &[], client)).as_deref(),
        Some("b")
    );
    assert_eq!(
        uid(defaults.find(
            Some(&cache),
            &resource_with(&[("host.name", "10.0.0.1")]),
            None
        ))
        .as_deref(),
        Some("a")
    );
    let none = defaults.find(Some(&cache), &[], None);
    assert!(none.pod.is_none() && none.source.is_none());
    // explicit rules: uid, or the connection and k8s.pod.ip agreeing
    let rule = |sources: &[(&str, Option<&str>)]| AssociationConfig {
        sources: sources
            .iter()
            .map(|(from, name)| SourceConfig {
                from: from.to_string(),
                name: name.map(str::to_string),
            })
            .collect(),
    };
    let explicit = Association::new(&[
        rule(&[("resource_attribute", Some("k8s.pod.uid"))]),
        rule(&[
            ("connection", None),
            ("resource_attribute", Some("k8s.pod.ip")),
        ]),
    ]);
    assert_eq!(
        uid(explicit.find(
            Some(&cache),
            &resource_with(&[("k8s.pod.uid", "a")]),
            client
        ))
        .as_deref(),
        Some("a")
    );
    assert_eq!(
        uid(explicit.find(
            Some(&cache),
            &resource_with(&[("k8s.pod.ip", "10.0.0.2")]),
            client
        ))
        .as_deref(),
        Some("b")
    );
    let disagree = explicit.find(
        Some(&cache),
        &resource_with(&[("k8s.pod.ip", "10.0.0.1")]),
        client,
    );
    assert!(disagree.pod.is_none(), "the sources must agree");
    assert_eq!(disagree.source.map(|s| s.label()), Some("connection"));
    assert!(
        explicit.find(Some(&cache), &[], client).source.is_none(),
        "the rule needs both"
    );
}

/// The processor over a cache filled by hand: it adds the pod's attributes, never
/// overwrites, resolves the Deployment, and counts hits and misses.
#[test]
fn tagging_adds_what_is_missing_and_counts() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _in_runtime = runtime.enter();
    let telemetry = Telemetry::new();
    let cache = Arc::new(Cache::new(1 << 20, Duration::from_secs(120)));
    let extractor = Extractor::new(&config("{}"));
    cache.upsert(
        extractor
            .pod(&pod_json("checkout-1", "u1", "10.1.2.3"))
            .unwrap(),
        Instant::now(),
    );
    cache.set_replica_set("shop/checkout-7d9f8b6c5d".into(), "checkout".into());
    let processor = over(cache, &telemetry, None);
    let mut resource = Resource {
        attributes: resource_with(&[("k8s.namespace.name", "kept")]),
        ..Default::default()
    };
    let mut budget = usize::MAX;
    let outcome = processor.tag(
        &mut resource,
        Some("10.1.2.3".parse().unwrap()),
        &mut budget,
    );
    assert_eq!(outcome, ("connection", "hit"));
    let text =
        |key: &str| association::string_attribute(&resource.attributes, key).map(str::to_string);
    assert_eq!(
        text("k8s.namespace.name").as_deref(),
        Some("kept"),
        "never overwritten"
    );
    assert_eq!(text("k8s.pod.name").as_deref(), Some("checkout-1"));
    assert_eq!(text("k8s.deployment.name").as_deref(), Some("checkout"));
    assert_eq!(text("k8s.node.name").as_deref(), Some("node-a"));
    let mut other = Resource::default();
    let outcome = processor.tag(&mut other, Some("10.9.9.9".parse().unwrap()), &mut budget);
    assert_eq!(outcome, ("connection", "miss"));
    assert!(other.attributes.is_empty());

    // a batch may grow only so much: past its budget, resources go on untagged, counted
    let mut small = 40;
    let mut third = Resource::default();
    let outcome = processor.tag(&mut third, Some("10.1.2.3".parse().unwrap()), &mut small);
    assert_eq!(outcome, ("connection", "over_budget"));
    assert!(third.attributes.is_empty());
    assert_eq!(small, 40);

    // through `process`, counted once per batch and outcome
    let mut processor = processor;
    let mut batch = crate::model::tests::traces_batch(3, 1);
    batch.set_client(Some("10.1.2.3".parse().unwrap()));
    let mut out = Vec::new();
    processor.process(batch, &mut out);
    let metrics = telemetry.encode();
    assert!(
        metrics.contains(r#"sieve_k8s_attributes_associations_total{processor="k8s_attributes",source="connection",result="hit"} 3"#),
        "{metrics}"
    );
}

/// A request of many tiny resources cannot make a batch grow a hundredfold.
#[test]
fn the_growth_of_a_batch_is_bounded() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _in_runtime = runtime.enter();
    let telemetry = Telemetry::new();
    let cache = Arc::new(Cache::new(1 << 20, Duration::from_secs(120)));
    let mut pod = info("p", "10.1.2.3");
    pod.attributes
        .push(("k8s.pod.labels.blob".into(), "x".repeat(40_000)));
    cache.upsert(pod, Instant::now());
    let mut processor = over(cache, &telemetry, None);
    // 200 resources of one span each, every one of which would get 40 KB
    let mut batch = crate::model::tests::traces_batch(200, 1);
    batch.set_client(Some("10.1.2.3".parse().unwrap()));
    let before = batch.encoded_len();
    let mut out = Vec::new();
    processor.process(batch, &mut out);
    let after = out[0].encoded_len();
    assert!(
        after <= before * 3 + (1 << 20) + 40_100,
        "{before} → {after}"
    );
    assert!(telemetry.encode().contains(r#"result="over_budget"}"#));
}

#[test]
fn mistakes_name_the_key() {
    let error = |yaml: &str| {
        let config: K8sAttributesConfig = serde_yaml::from_str(yaml).unwrap();
        config.validate().unwrap_err().key
    };
    assert_eq!(
        error("extract: {metadata: [k8s.pod.colour]}"),
        "extract.metadata[0]"
    );
    assert_eq!(
        error("extract: {labels: [{tag_name: x}]}"),
        "extract.labels[0]"
    );
    assert_eq!(
        error("pod_association: [{sources: [{from: resource_attribute, name: k8s.pod.name}]}]"),
        "pod_association[0].sources[0]"
    );
    assert_eq!(
        error("pod_association: [{sources: [{from: everywhere}]}]"),
        "pod_association[0].sources[0]"
    );
    assert_eq!(
        error("filter: {labels: [{key: a, op: like}]}"),
        "filter.labels[0].op"
    );
    assert_eq!(error("context: x"), "context");
    assert!(serde_yaml::from_str::<K8sAttributesConfig>("auth_type: kubeconfig").is_err());
}

/// The collector chart's preset asks for `k8s.container.name`, `k8s.cluster.uid` and
/// `service.*` with `otel_annotations`: the OpenTelemetry rules for each.
#[test]
fn service_attributes_follow_the_opentelemetry_rules() {
    let extractor = Extractor::new(&config(
        "extract:
  metadata: [k8s.pod.name, k8s.container.name, k8s.cluster.uid, service.name, service.namespace,
             service.version, service.instance.id, container.image.name]
  otel_annotations: true",
    ));
    let cache = Cache::new(1 << 20, Duration::from_secs(120));
    cache.set_cluster_uid("cluster-1".into());
    cache.set_replica_set("shop/checkout-7d9f8b6c5d".into(), "checkout".into());
    let mut pod = pod_json("checkout-1", "u1", "10.1.2.3");
    let info = extractor.pod(&pod).unwrap();
    let attributes = cache.attributes(&info, Some("app"));
    for (key, expected, why) in [
        ("k8s.container.name", "app", "the container named"),
        (
            "k8s.cluster.uid",
            "cluster-1",
            "the kube-system namespace's uid",
        ),
        ("service.name", "checkout", "the Deployment"),
        ("service.namespace", "shop", "the namespace"),
        ("service.version", "1.4.2", "the image tag"),
        (
            "service.instance.id",
            "shop.checkout-1.app",
            "namespace.pod.container",
        ),
    ] {
        assert_eq!(
            text(&attributes, key).as_deref(),
            Some(expected),
            "{key}: {why}"
        );
    }
    assert_eq!(
        text(&attributes, "container.image.tag"),
        None,
        "not asked for"
    );
    // two containers and none named: no container attributes
    let attributes = cache.attributes(&info, None);
    assert_eq!(text(&attributes, "k8s.container.name"), None);
    assert_eq!(text(&attributes, "service.instance.id"), None);

    let labels = pod.metadata.labels.as_mut().unwrap();
    labels.insert("app.kubernetes.io/name".into(), "checkout-svc".into());
    labels.insert("app.kubernetes.io/version".into(), "2.0".into());
    let annotations = pod.metadata.annotations.as_mut().unwrap();
    annotations.insert(
        "resource.opentelemetry.io/service.name".into(),
        "from-annotation".into(),
    );
    annotations.insert("resource.opentelemetry.io/team".into(), "payments".into());
    let info = extractor.pod(&pod).unwrap();
    let attributes = cache.attributes(&info, Some("app"));
    let first = |key: &str| {
        attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        first("service.name"),
        Some("from-annotation"),
        "the annotation first"
    );
    assert_eq!(first("team"), Some("payments"));
    assert_eq!(
        first("service.version"),
        Some("2.0"),
        "the label before the tag"
    );
}

/// `wait_for_metadata`: the first batch waits for the first list, at most until the
/// timeout; once the list is done nothing waits.
#[test]
fn wait_for_metadata_holds_the_first_batch_until_the_list_or_the_timeout() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _in_runtime = runtime.enter();
    let telemetry = Telemetry::new();
    let processor = |deadline: Instant| {
        over(
            Arc::new(Cache::new(1 << 20, Duration::from_secs(120))),
            &telemetry,
            Some(deadline),
        )
    };
    let batch = || crate::model::tests::traces_batch(1, 2);
    let start = Instant::now();
    let mut never_listed = processor(start + Duration::from_millis(200));
    let mut out = Vec::new();
    never_listed.process(batch(), &mut out);
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "waited for the timeout"
    );
    assert_eq!(out.len(), 1, "then went on untagged");

    let mut listed = processor(Instant::now() + Duration::from_secs(3600));
    let source = listed.shared.source.as_ref().unwrap();
    source.watches.synced.set();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        listed.process(batch(), &mut out);
        listed.process(batch(), &mut out);
        done.send(out.len()).unwrap();
    });
    assert_eq!(
        finished.recv_timeout(Duration::from_secs(30)),
        Ok(2),
        "a listed cache holds nothing back"
    );
}

/// Pods on the host's network share the node's IP and finished pods give theirs up:
/// neither is found by IP; of two live pods claiming one IP, the newer keeps it.
#[test]
fn only_live_pods_of_their_own_network_are_found_by_ip() {
    let extractor = Extractor::new(&config("{}"));
    let mut host = pod_json("node-exporter-1", "h", "10.0.0.5");
    host.spec.as_mut().unwrap().host_network = Some(true);
    assert_eq!(extractor.pod(&host).unwrap().ip, None);
    let mut done = pod_json("job-1", "j", "10.0.0.6");
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    assert_eq!(extractor.pod(&done).unwrap().ip, None);

    let cache = Cache::new(1 << 20, Duration::from_secs(120));
    let now = Instant::now();
    let ip: IpAddr = "10.0.0.7".parse().unwrap();
    let aged = |uid: &str, created: i64| PodInfo {
        created,
        ..info(uid, "10.0.0.7")
    };
    cache.upsert(aged("new", 200), now);
    cache.upsert(aged("stale", 100), now);
    assert_eq!(
        cache.by_ip(ip).unwrap().uid,
        "new",
        "an older pod's update does not take the IP"
    );
    cache.delete("new", now);
    cache.upsert(aged("stale", 100), now);
    assert_eq!(
        cache.by_ip(ip).unwrap().uid,
        "stale",
        "a deleted holder gives way"
    );
}

/// A container named by `k8s.container.name` that the pod lacks gets nothing (never the
/// only container's image); a native sidecar (an init container) is found by name.
#[test]
fn a_named_container_is_found_or_nothing_is_added() {
    let extractor = Extractor::new(&config(
        "extract: {metadata: [k8s.pod.name, k8s.container.name, container.image.name]}",
    ));
    let mut pod = pod_json("p", "u", "10.0.0.8");
    let spec = pod.spec.as_mut().unwrap();
    spec.containers.truncate(1);
    spec.init_containers = Some(vec![k8s_openapi::api::core::v1::Container {
        name: "istio-proxy".into(),
        image: Some("istio/proxyv2:1.22".into()),
        ..Default::default()
    }]);
    let info = extractor.pod(&pod).unwrap();
    let cache = Cache::new(1 << 20, Duration::from_secs(120));
    let named = |name: Option<&str>, key: &str| text(&cache.attributes(&info, name), key);
    assert_eq!(
        named(Some("istio-proxy"), "container.image.name").as_deref(),
        Some("istio/proxyv2")
    );
    assert_eq!(named(Some("missing"), "container.image.name"), None);
    assert_eq!(named(Some("missing"), "k8s.container.name"), None);
    assert_eq!(
        named(None, "k8s.container.name").as_deref(),
        Some("app"),
        "the only regular container"
    );
}

/// A pod deleted, back under its uid, and deleted again keeps its second grace period
/// whole; a pod that would not fit even with every deleted pod gone evicts none.
#[test]
fn grace_periods_belong_to_each_deletion_and_eviction_is_not_wasted() {
    let cache = Cache::new(1 << 20, Duration::from_secs(10));
    let start = Instant::now();
    cache.upsert(info("p", "10.0.0.1"), start);
    cache.delete("p", start);
    cache.upsert(info("p", "10.0.0.1"), start + Duration::from_secs(5));
    cache.delete("p", start + Duration::from_secs(8));
    cache.expire(start + Duration::from_secs(11));
    assert!(
        cache.by_uid("p").is_some(),
        "the first deletion's end does not end the second"
    );
    cache.expire(start + Duration::from_secs(19));
    assert!(cache.by_uid("p").is_none());

    let small = info("s", "10.0.1.1");
    let room = 2 * (small.attributes[0].1.len() + 400);
    let cache = Cache::new(room, Duration::from_secs(120));
    cache.upsert(small, start);
    cache.delete("s", start);
    let mut huge = info("h", "10.0.1.2");
    huge.attributes.push(("big".into(), "x".repeat(room * 2)));
    assert_eq!(cache.upsert(huge, start), Stored::NoRoom);
    assert!(
        cache.by_uid("s").is_some(),
        "the deleted pod was not evicted for nothing"
    );
}
