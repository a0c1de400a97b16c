//! What can be checked of deploy/ without Docker or Kubernetes: every file parses, every
//! metric the dashboard and the alerts query is one the daemon exports, and the compose file,
//! the Kubernetes manifests and the Dockerfile name the daemon's ports and real configuration
//! variables.

use std::collections::BTreeSet;
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path} does not parse: {e}"))
}

/// Every `herald_*` metric a PromQL text names, without the histogram suffixes.
fn metrics_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("herald_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_' || bytes[end].is_ascii_digit()) {
            end += 1;
        }
        let name = &text[start..end];
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        out.insert(base.to_string());
        i = end;
    }
    out
}

/// The `HERALD_*` variables the configuration reads (from the README's reference table, which
/// tests/cli.rs checks against `herald config`).
fn config_variables() -> BTreeSet<String> {
    let readme = read("README.md");
    readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('|').nth(3).and_then(|c| c.split_whitespace().next()).map(|v| v.trim_matches('`').to_string()))
        .filter(|v| v.starts_with("HERALD_"))
        .collect()
}

fn variables_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))
        .filter(|w| w.starts_with("HERALD_") && w.len() > 7)
        .map(str::to_string)
        .collect()
}

#[test]
fn every_file_parses() {
    for f in [
        "deploy/docker-compose.yml",
        "deploy/prometheus/prometheus.yml",
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "deploy/grafana/provisioning/dashboards/herald.yml",
        "deploy/k8s/herald.yaml",
    ] {
        assert!(!yaml(f).is_empty(), "{f} is empty");
    }
    let dashboard: serde_json::Value = serde_json::from_str(&read("deploy/grafana/dashboards/herald.json")).unwrap();
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 8));
    let k8s: Vec<String> = yaml("deploy/k8s/herald.yaml").iter().map(|d| d["kind"].as_str().unwrap_or("").to_string()).collect();
    for kind in ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"] {
        assert!(k8s.iter().any(|k| k == kind), "{kind} missing from {k8s:?}");
    }
    toml::from_str::<toml::Table>(&read("deploy/herald.toml")).expect("deploy/herald.toml parses");
}

#[test]
fn dashboards_and_alerts_query_only_exported_metrics() {
    let exported: BTreeSet<String> = herald::telemetry::ALL.iter().map(|s| s.to_string()).collect();
    let dashboard: serde_json::Value = serde_json::from_str(&read("deploy/grafana/dashboards/herald.json")).unwrap();
    let mut queried = BTreeSet::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            queried.extend(metrics_in(t["expr"].as_str().unwrap()));
        }
    }
    let alerts = &yaml("deploy/prometheus/alerts.yml")[0];
    let mut alerted = 0;
    for g in alerts["groups"].as_vec().unwrap() {
        for r in g["rules"].as_vec().unwrap() {
            queried.extend(metrics_in(r["expr"].as_str().unwrap()));
            alerted += 1;
        }
    }
    assert!(alerted >= 4, "send failures, queue saturation, store errors and throttling are alerted");
    assert!(queried.len() >= 8, "{queried:?}");
    let unknown: Vec<&String> = queried.difference(&exported).collect();
    assert!(unknown.is_empty(), "queried but not exported: {unknown:?}");
    // And the daemon's registry really is what it exports (checked against /metrics elsewhere).
    assert!(exported.contains("herald_messages_total") && exported.contains("herald_queue_saturation"));
}

#[test]
fn deployments_name_the_daemons_ports_and_variables() {
    let known = config_variables();
    assert!(known.contains("HERALD_GRPC_ADDR") && known.contains("HERALD_REDIS_URL"), "{known:?}");
    for f in ["deploy/docker-compose.yml", "deploy/k8s/herald.yaml", "deploy/Dockerfile", "deploy/herald.service"] {
        let text = read(f);
        let used = variables_in(&text);
        let unknown: Vec<&String> = used.difference(&known).collect();
        assert!(unknown.is_empty(), "{f} sets variables the daemon does not read: {unknown:?}");
        if f != "deploy/herald.service" {
            assert!(text.contains("50051") && text.contains("9464"), "{f} names the gRPC and metrics ports");
        }
    }
    let compose = &yaml("deploy/docker-compose.yml")[0];
    let env = &compose["services"]["herald"]["environment"];
    assert_eq!(env["HERALD_GRPC_ADDR"].as_str(), Some("0.0.0.0:50051"));
    assert_eq!(env["HERALD_METRICS_ADDR"].as_str(), Some("0.0.0.0:9464"));
    assert_eq!(env["HERALD_FEEDBACK_ADDR"].as_str(), Some("0.0.0.0:9465"));
    assert!(env["HERALD_SECRET_KEY"].as_str().is_some(), "compose passes the secret key");
    let docs = yaml("deploy/k8s/herald.yaml");
    let deployment = docs.iter().find(|d| d["kind"].as_str() == Some("Deployment")).unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["grpc"]["port"].as_i64(), Some(50051));
    assert_eq!(container["livenessProbe"]["grpc"]["port"].as_i64(), Some(50051));
    let config_map = docs.iter().find(|d| d["kind"].as_str() == Some("ConfigMap")).unwrap();
    assert_eq!(config_map["data"]["HERALD_GRPC_ADDR"].as_str(), Some("0.0.0.0:50051"));
    assert_eq!(config_map["data"]["HERALD_FEEDBACK_ADDR"].as_str(), Some("0.0.0.0:9465"));
    let secret_env = container["env"].as_vec().unwrap().iter().any(|e| e["name"].as_str() == Some("HERALD_SECRET_KEY"));
    assert!(secret_env, "every replica gets the same secret key from the Secret");
    let scrape = &yaml("deploy/prometheus/prometheus.yml")[0];
    assert_eq!(scrape["scrape_configs"][0]["static_configs"][0]["targets"][0].as_str(), Some("herald:9464"));
    // Three daemons on one Redis in compose; on Kubernetes, a drain that fits the grace
    // period: preStop's sleep, then shutdown_grace_secs.
    for name in ["herald-b", "herald-c"] {
        assert!(!compose["services"][name].is_badvalue(), "compose runs {name}");
    }
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(3));
    let sleep: i64 = container["lifecycle"]["preStop"]["exec"]["command"][1].as_str().unwrap().parse().unwrap();
    let grace: i64 = config_map["data"]["HERALD_SHUTDOWN_GRACE_SECS"].as_str().unwrap().parse().unwrap();
    let period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(sleep + grace < period, "preStop {sleep} s + grace {grace} s within {period} s");
    let pdb = docs.iter().find(|d| d["kind"].as_str() == Some("PodDisruptionBudget")).unwrap();
    assert_eq!(pdb["spec"]["maxUnavailable"].as_i64(), Some(1));
    // The image's health check is the daemon's own `herald health`.
    assert!(read("deploy/Dockerfile").contains(r#"CMD ["herald", "health""#));
}
