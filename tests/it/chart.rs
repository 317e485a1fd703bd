//! The Helm chart, rendered by the real `helm` in every mode, and the Dockerfile, linted
//! by the real `hadolint` (both installed by scripts/test into target/tools). Each
//! rendering's manifests are checked for the structure the chart promises, and the
//! configuration it embeds is validated by sieve itself.

use crate::harness::sieve_bin;
use serde::Deserialize;
use serde_yaml::Value;
use std::path::PathBuf;
use std::process::Command;

/// `$SIEVE_<NAME>`, else `target/tools/<name>` (where scripts/test puts it), else `name`.
fn tool(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(format!("SIEVE_{}", name.to_uppercase())) {
        return path.into();
    }
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools")
        .join(name);
    if tools.exists() {
        tools
    } else {
        name.into()
    }
}

fn chart() -> String {
    format!("{}/helm/sieve", env!("CARGO_MANIFEST_DIR"))
}

/// `helm template` with `--set` values: the manifests, or helm's error.
fn render(sets: &[&str]) -> Result<Vec<Value>, String> {
    render_with(None, sets)
}

/// `helm template` with a values file and `--set` values.
fn render_with(values: Option<&std::path::Path>, sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut command = Command::new(tool("helm"));
    command.args(["template", "t", &chart(), "--namespace", "observability"]);
    if let Some(values) = values {
        command.arg("--values").arg(values);
    }
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "helm ({:?}) must be installed (scripts/test does): {e}",
            tool("helm")
        )
    });
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let text = String::from_utf8(output.stdout).unwrap();
    Ok(serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect())
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The config the ConfigMap holds validates with `sieve validate`; returns it.
fn embedded_config(docs: &[Value]) -> Value {
    let maps = kind(docs, "ConfigMap");
    assert_eq!(maps.len(), 1);
    let text = maps[0]["data"]["config.yaml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(sieve_bin())
        .args(["validate", "--config"])
        .arg(&path)
        .env("POD_IP", "10.0.0.7")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_yaml::from_str(text).unwrap()
}

/// What every mode's pod must have: non-root, read-only root, probes, the node's name,
/// the config's checksum.
fn check_pod(workload: &Value, service_account: &str) {
    let template = &workload["spec"]["template"];
    let selector = &workload["spec"]["selector"]["matchLabels"];
    for (key, value) in selector.as_mapping().unwrap() {
        assert_eq!(
            &template["metadata"]["labels"][key], value,
            "selector matches the pods"
        );
    }
    assert!(template["metadata"]["annotations"]["checksum/config"].is_string());
    let pod = &template["spec"];
    assert_eq!(pod["serviceAccountName"], service_account);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["limits"]["memory"].is_string());
    let env = container["env"].as_sequence().unwrap();
    let node = env
        .iter()
        .find(|e| e["name"] == "K8S_NODE_NAME")
        .expect("K8S_NODE_NAME");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
}

#[test]
fn the_daemonset_agent_renders_with_host_ports_or_host_network() {
    let docs = render(&[]).unwrap();
    let agents = kind(&docs, "DaemonSet");
    assert_eq!(agents.len(), 1);
    check_pod(agents[0], "default");
    let ports = agents[0]["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_sequence()
        .unwrap();
    assert_eq!(ports[0]["hostPort"], 4317);
    assert!(kind(&docs, "Deployment").is_empty() && kind(&docs, "PodDisruptionBudget").is_empty());
    assert!(
        kind(&docs, "ClusterRole").is_empty(),
        "no RBAC without the preset"
    );
    assert_eq!(
        kind(&docs, "Service")[0]["spec"]["internalTrafficPolicy"],
        "Local"
    );
    embedded_config(&docs);

    let docs = render(&["hostNetwork=true", "persistence.enabled=true"]).unwrap();
    let pod = &kind(&docs, "DaemonSet")[0]["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert!(pod["containers"][0]["ports"][0]["hostPort"].is_null());
    assert_eq!(pod["volumes"][1]["hostPath"]["path"], "/var/lib/sieve/t");
    let owner = &pod["initContainers"][0];
    assert_eq!(
        strings(&owner["command"]),
        ["chown", "10001:10001", "/data"]
    );
    assert_eq!(
        strings(&owner["securityContext"]["capabilities"]["add"]),
        ["CHOWN"]
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][1]["mountPath"],
        "/var/lib/sieve"
    );
}

#[test]
fn the_kubernetes_attributes_preset_adds_the_processor_and_its_rbac() {
    for mode in ["daemonset", "deployment", "statefulset"] {
        let docs = render(&[
            &format!("mode={mode}"),
            "presets.kubernetesAttributes.enabled=true",
        ])
        .unwrap();
        let config = embedded_config(&docs);
        for (name, pipeline) in config["service"]["pipelines"].as_mapping().unwrap() {
            assert_eq!(
                strings(&pipeline["processors"])[0],
                "k8s_attributes",
                "{name:?} in {mode}"
            );
        }
        let processor = &config["processors"]["k8s_attributes"];
        assert_eq!(
            processor["filter"]["node_from_env_var"].as_str(),
            (mode == "daemonset").then_some("K8S_NODE_NAME"),
            "only an agent watches its node alone"
        );
        let account = kind(&docs, "ServiceAccount");
        assert_eq!(account.len(), 1);
        let rules = kind(&docs, "ClusterRole")[0]["rules"]
            .as_sequence()
            .unwrap();
        let granted: Vec<String> = rules
            .iter()
            .flat_map(|r| strings(&r["resources"]))
            .collect();
        for resource in ["pods", "namespaces", "replicasets", "nodes"] {
            assert!(
                granted.contains(&resource.to_string()),
                "{resource} in {rules:?}"
            );
        }
        assert!(rules
            .iter()
            .all(|r| strings(&r["verbs"]) == ["get", "list", "watch"]));
        let binding = kind(&docs, "ClusterRoleBinding")[0];
        assert_eq!(
            binding["subjects"][0]["name"],
            account[0]["metadata"]["name"]
        );
        assert_eq!(binding["subjects"][0]["namespace"], "observability");
        let workload = docs
            .iter()
            .find(|d| d["spec"]["template"].is_mapping())
            .unwrap();
        check_pod(workload, account[0]["metadata"]["name"].as_str().unwrap());
    }
}

#[test]
fn the_gateway_modes_render_a_service_an_hpa_and_a_pdb() {
    let docs = render(&["mode=deployment", "autoscaling.enabled=true"]).unwrap();
    let gateway = kind(&docs, "Deployment");
    assert_eq!(gateway.len(), 1);
    check_pod(gateway[0], "default");
    assert!(
        gateway[0]["spec"]["replicas"].is_null(),
        "the HPA owns the replica count"
    );
    assert!(
        gateway[0]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["hostPort"].is_null()
    );
    let hpa = kind(&docs, "HorizontalPodAutoscaler")[0];
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        gateway[0]["metadata"]["name"]
    );
    assert_eq!(
        kind(&docs, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"],
        1
    );
    let service = kind(&docs, "Service")[0];
    assert!(service["spec"]["internalTrafficPolicy"].is_null());
    let ports: Vec<i64> = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [4317, 4318, 8888]);
    embedded_config(&docs);

    let docs = render(&[
        "mode=statefulset",
        "persistence.enabled=true",
        "persistence.size=20Gi",
    ])
    .unwrap();
    let tier = kind(&docs, "StatefulSet")[0];
    check_pod(tier, "default");
    assert_eq!(tier["spec"]["replicas"], 2);
    let governing = kind(&docs, "Service")
        .into_iter()
        .find(|s| s["spec"]["clusterIP"] == "None")
        .expect("a headless Service");
    assert_eq!(tier["spec"]["serviceName"], governing["metadata"]["name"]);
    let claim = &tier["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "20Gi");
    assert!(kind(&docs, "HorizontalPodAutoscaler").is_empty());
    assert_eq!(kind(&docs, "PodDisruptionBudget").len(), 1);
}

#[test]
fn without_rolling_the_config_change_is_left_to_sighup_and_a_bad_mode_is_refused() {
    let docs = render(&["rollOnConfigChange=false"]).unwrap();
    let annotations = &kind(&docs, "DaemonSet")[0]["spec"]["template"]["metadata"]["annotations"];
    assert!(annotations["checksum/config"].is_null());
    let rolled = |config: &str| {
        let docs = render(&[config]).unwrap();
        kind(&docs, "DaemonSet")[0]["spec"]["template"]["metadata"]["annotations"]
            ["checksum/config"]
            .clone()
    };
    assert_ne!(
        rolled("config.processors.batch.timeout=1s"),
        rolled("config.processors.batch.timeout=2s"),
        "a changed config changes the checksum"
    );
    // the probes follow the self-metrics address; a named k8s_attributes is not doubled
    let docs = render(&[
        "config.service.telemetry.metrics.address=${env:POD_IP}:9464",
        "presets.kubernetesAttributes.enabled=true",
        "config.processors.k8s_attributes/mine.passthrough=true",
        "config.service.pipelines.logs.processors={k8s_attributes/mine,batch}",
    ])
    .unwrap();
    let container = &kind(&docs, "DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0];
    let metrics = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .unwrap();
    assert_eq!(metrics["containerPort"], 9464);
    let config = embedded_config(&docs);
    assert_eq!(
        strings(&config["service"]["pipelines"]["logs"]["processors"]),
        ["k8s_attributes/mine", "batch"]
    );
    let error = render(&["mode=sidecar"]).unwrap_err();
    assert!(
        error.contains("mode must be daemonset, deployment or statefulset"),
        "{error}"
    );
}

#[test]
fn helm_lint_passes_in_every_mode() {
    for mode in ["daemonset", "deployment", "statefulset"] {
        let output = Command::new(tool("helm"))
            .args([
                "lint",
                "--strict",
                &chart(),
                "--set",
                &format!("mode={mode}"),
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let output = Command::new(tool("hadolint"))
        .arg(format!("{}/Dockerfile", env!("CARGO_MANIFEST_DIR")))
        .output()
        .unwrap_or_else(|e| panic!("hadolint must be installed (scripts/test does): {e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The sidecar example is valid YAML whose config sieve accepts, listening on the pod's
/// loopback only.
#[test]
fn the_sidecar_example_validates() {
    let text = std::fs::read_to_string(format!(
        "{}/examples/kubernetes/sidecar.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .collect();
    let config = embedded_config(&docs);
    for protocol in ["grpc", "http"] {
        let endpoint = config["receivers"]["otlp"]["protocols"][protocol]["endpoint"]
            .as_str()
            .unwrap();
        assert!(endpoint.starts_with("127.0.0.1:"), "{endpoint}");
    }
    let pod = &kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(
        pod["initContainers"][0]["restartPolicy"], "Always",
        "a native sidecar"
    );
}

/// A config with a persistent queue gets storage at its `file_storage` directory without
/// further settings: a claim per pod for a statefulset, a host directory for an agent.
#[test]
fn a_file_storage_extension_gets_its_volume() {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    // a directory that exists here, so that `sieve validate` accepts it
    let queue = dir.path().join("queue");
    std::fs::create_dir(&queue).unwrap();
    std::fs::write(
        &values,
        format!(
            "config:
  extensions:
    file_storage/queue:
      directory: {}
  receivers:
    otlp:
      protocols:
        grpc:
          endpoint: ${{env:POD_IP}}:4317
  exporters:
    otlp:
      endpoint: http://backend:4317
      sending_queue:
        storage: file_storage/queue
  service:
    extensions: [file_storage/queue]
    pipelines:
      traces:
        receivers: [otlp]
        exporters: [otlp]
",
            queue.display()
        ),
    )
    .unwrap();
    for mode in ["statefulset", "daemonset"] {
        let docs = render_with(Some(&values), &[&format!("mode={mode}")]).unwrap();
        embedded_config(&docs);
        let workload = docs
            .iter()
            .find(|d| d["spec"]["template"].is_mapping())
            .unwrap();
        let container = &workload["spec"]["template"]["spec"]["containers"][0];
        let mount = container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "data")
            .unwrap_or_else(|| panic!("{mode}: no data volume"));
        assert_eq!(mount["mountPath"].as_str(), queue.to_str());
        match mode {
            "statefulset" => assert_eq!(
                workload["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
                "data"
            ),
            _ => assert_eq!(
                workload["spec"]["template"]["spec"]["volumes"][1]["hostPath"]["path"],
                "/var/lib/sieve/t"
            ),
        }
    }
    let without = render(&["mode=statefulset"]).unwrap();
    assert!(kind(&without, "StatefulSet")[0]["spec"]["volumeClaimTemplates"].is_null());
}
