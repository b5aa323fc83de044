//! `deploy/` checked against the code it deploys: every setting the compose file and the
//! Kubernetes manifests pass is one the server reads, probes hit the server's health routes,
//! the objects reference each other consistently, images are pinned, files mounted exist, and
//! the Grafana dashboard queries only metric names the server exports (and all of them).
//! Nothing here can pull images or run a cluster; what can be checked without them is.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_yaml_ng::Value;
use taskflow_sync_server::{Config, telemetry};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    let mut value: Value = serde_yaml_ng::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    value.apply_merge().expect("merge keys resolve");
    value
}

/// Every environment variable the server reads, from its own flag definitions.
fn server_settings() -> BTreeSet<String> {
    Config::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// Whether the server (or the OpenTelemetry SDK in it) reads `name`.
fn is_read(name: &str, settings: &BTreeSet<String>) -> bool {
    settings.contains(name) || name.starts_with("OTEL_")
}

fn keys(map: &Value) -> Vec<String> {
    map.as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    let mut at = value;
    for key in path {
        at = &at[*key];
    }
    at.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string: {at:?}"))
}

#[test]
fn the_compose_stack_is_complete_and_configures_only_real_settings() {
    let compose = yaml(&deploy().join("docker-compose.yml"));
    let services = &compose["services"];
    let names: BTreeSet<String> = keys(services).into_iter().collect();
    for needed in [
        "postgres",
        "redis",
        "kafka",
        "temporal",
        "taskflow-1",
        "taskflow-2",
        "nginx",
        "prometheus",
        "grafana",
        "jaeger",
    ] {
        assert!(names.contains(needed), "no {needed} service");
    }
    let settings = server_settings();
    for name in &names {
        let service = &services[name.as_str()];
        let image = str_at(service, &["image"]);
        let (_, tag) = image
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{name}: image {image} has no tag"));
        if !name.starts_with("taskflow-") {
            assert_ne!(tag, "latest", "{name}: pin third-party images");
        }
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let source = volume.as_str().expect("short volume syntax");
            if let Some(path) = source.split(':').next().filter(|p| p.starts_with("./")) {
                assert!(deploy().join(path).exists(), "{name} mounts missing {path}");
            }
        }
    }
    for node in ["taskflow-1", "taskflow-2"] {
        let service = &services[node];
        assert_eq!(
            str_at(service, &["build", "dockerfile"]),
            "deploy/Dockerfile"
        );
        for variable in keys(&service["environment"]) {
            assert!(
                is_read(&variable, &settings),
                "{node} sets {variable}, which the server does not read"
            );
        }
        let probe: Vec<&str> = service["healthcheck"]["test"]
            .as_sequence()
            .expect("healthcheck")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(probe.iter().any(|a| a.ends_with("/readyz")), "{probe:?}");
    }
    // nginx balances over both nodes and passes WebSocket upgrades on.
    let nginx = read(&deploy().join("nginx/nginx.conf"));
    for needle in [
        "server taskflow-1:8080",
        "server taskflow-2:8080",
        "proxy_set_header Upgrade",
        "proxy_http_version 1.1",
    ] {
        assert!(nginx.contains(needle), "nginx.conf lacks `{needle}`");
    }
    // Prometheus scrapes both nodes' /metrics.
    let prometheus = yaml(&deploy().join("prometheus/prometheus.yml"));
    let job = &prometheus["scrape_configs"][0];
    assert_eq!(str_at(job, &["metrics_path"]), "/metrics");
    let targets: BTreeSet<&str> = job["static_configs"][0]["targets"]
        .as_sequence()
        .expect("targets")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        targets,
        BTreeSet::from(["taskflow-1:8080", "taskflow-2:8080"])
    );
}

#[test]
fn the_dockerfile_builds_binaries_and_features_that_exist() {
    let dockerfile = read(&deploy().join("Dockerfile"));
    let server = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    let workflows = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/Cargo.toml"));
    for (needle, manifest) in [
        ("name = \"taskflow-server\"", &server),
        ("kafka = [", &server),
        ("temporal = [", &server),
        ("name = \"taskflow-worker\"", &workflows),
    ] {
        assert!(manifest.contains(needle), "no `{needle}` in the manifests");
    }
    for needle in [
        "--bin taskflow-server",
        "--bin taskflow-worker",
        "taskflow-sync-server/kafka",
        "taskflow-sync-server/temporal",
        "TASKFLOW_LISTEN=0.0.0.0:8080",
        "EXPOSE 8080",
        "ENTRYPOINT [\"taskflow-server\"]",
    ] {
        assert!(
            dockerfile.contains(needle),
            "the Dockerfile lacks `{needle}`"
        );
    }
    let settings = server_settings();
    assert!(settings.contains("TASKFLOW_LISTEN") && settings.contains("TASKFLOW_LOG_FORMAT"));
}

/// Every document of every manifest kustomization.yaml lists, by kind.
fn manifests() -> Vec<Value> {
    let dir = deploy().join("k8s");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let listed: Vec<String> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("file").to_owned())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("k8s dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed.iter().cloned().collect::<BTreeSet<_>>(),
        on_disk,
        "kustomization.yaml lists every manifest"
    );
    listed
        .iter()
        .flat_map(|file| {
            let text = read(&dir.join(file));
            serde_yaml_ng::Deserializer::from_str(&text)
                .map(|doc| Value::deserialize(doc).expect("YAML"))
                .filter(|doc| !doc.is_null())
                .collect::<Vec<_>>()
        })
        .collect()
}

use serde::Deserialize;

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_kubernetes_manifests_reference_each_other_and_the_server() {
    let docs = manifests();
    for doc in &docs {
        assert!(doc["apiVersion"].is_string() && doc["metadata"]["name"].is_string());
    }
    let deployment = of_kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let ports: BTreeSet<&str> = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| str_at(p, &["name"]))
        .collect();
    assert_eq!(
        str_at(container, &["livenessProbe", "httpGet", "path"]),
        "/healthz"
    );
    assert_eq!(
        str_at(container, &["readinessProbe", "httpGet", "path"]),
        "/readyz"
    );
    assert!(ports.contains(str_at(container, &["readinessProbe", "httpGet", "port"])));
    let labels = &pod["metadata"]["labels"];
    let selects = |selector: &Value| {
        for (key, value) in selector.as_mapping().expect("selector") {
            assert_eq!(&labels[key.as_str().expect("label")], value, "{key:?}");
        }
    };
    selects(&deployment["spec"]["selector"]["matchLabels"]);

    let service = of_kind(&docs, "Service");
    selects(&service["spec"]["selector"]);
    let service_ports: Vec<&Value> = service["spec"]["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .collect();
    for port in &service_ports {
        assert!(ports.contains(str_at(port, &["targetPort"])));
    }
    let ingress = of_kind(&docs, "Ingress");
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend["name"], service["metadata"]["name"]);
    let backend_port = str_at(backend, &["port", "name"]);
    assert!(
        service_ports
            .iter()
            .any(|p| p["name"].as_str() == Some(backend_port))
    );
    let annotations = keys(&ingress["metadata"]["annotations"]);
    assert!(
        annotations
            .iter()
            .any(|a| a.ends_with("proxy-read-timeout")),
        "sync sockets outlive the default 60 s proxy timeout"
    );
    let hpa = of_kind(&docs, "HorizontalPodAutoscaler");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );

    // What the pods get through envFrom is what the server reads.
    let settings = server_settings();
    let config_map = of_kind(&docs, "ConfigMap");
    let secret = of_kind(&docs, "Secret");
    for variable in keys(&config_map["data"])
        .into_iter()
        .chain(keys(&secret["stringData"]))
    {
        assert!(
            is_read(&variable, &settings),
            "{variable} is not a server setting"
        );
    }
    let sources: BTreeSet<&str> = container["envFrom"]
        .as_sequence()
        .expect("envFrom")
        .iter()
        .filter_map(|s| {
            s["configMapRef"]["name"]
                .as_str()
                .or(s["secretRef"]["name"].as_str())
        })
        .collect();
    assert!(sources.contains(str_at(config_map, &["metadata", "name"])));
    assert!(sources.contains(str_at(secret, &["metadata", "name"])));
}

/// The metric names an expression mentions, histogram suffixes taken off.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("taskflow_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| b.ends_with("_seconds"))
            .unwrap_or(name);
        names.push(base.to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_queries_exactly_the_metrics_the_server_exports() {
    let path = deploy().join("grafana/dashboards/taskflow.json");
    let dashboard: serde_json::Value = serde_json::from_str(&read(&path)).expect("JSON");
    let mut queried = BTreeSet::new();
    // A collapsed row keeps its panels inside it.
    let panels = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| std::iter::once(p).chain(p["panels"].as_array().into_iter().flatten()));
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            queried.extend(metric_names(expr));
            assert_eq!(target["datasource"]["uid"], "prometheus", "{expr}");
        }
    }
    let exported: BTreeSet<String> = telemetry::EXPORTED.iter().map(|s| s.to_string()).collect();
    let unknown: Vec<_> = queried.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries unexported {unknown:?}"
    );
    let unshown: Vec<_> = exported.difference(&queried).collect();
    assert!(
        unshown.is_empty(),
        "the dashboard shows nothing of {unshown:?}"
    );
    let datasource = yaml(&deploy().join("grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(
        str_at(&datasource["datasources"][0], &["uid"]),
        "prometheus"
    );
}
