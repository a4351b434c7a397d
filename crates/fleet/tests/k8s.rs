//! The Kubernetes base (`deploy/k8s`) rendered with `kubectl kustomize` (Debian `kubernetes-client`) and every
//! object deserialized with `k8s-openapi`, asserting what the fleet relies on: probes on `/health/live` and
//! `/health/ready`, a `preStop` drain with `--wait`, a grace period as long as the longest call, per-pod media
//! ports (host networking, one pod per node), a PodDisruptionBudget selecting the pods, Services that select them.
//! Skips when `kubectl` is missing — and fails when `CI=true`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

/// The longest call: `recording_max_seconds` (4 h) is the daemon's longest bounded session.
const LONGEST_CALL_SECONDS: i64 = 4 * 3600;

fn render() -> Option<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/k8s");
    match std::process::Command::new("kubectl")
        .args(["kustomize", dir])
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "kubectl kustomize failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(String::from_utf8(out.stdout).unwrap())
        }
        Err(err) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "kubectl is missing (Debian package `kubernetes-client`) and CI=true: {err}"
            );
            eprintln!(
                "skipping: kubectl is not installed (Debian package `kubernetes-client`): {err}"
            );
            None
        }
    }
}

#[derive(Default)]
struct Rendered {
    statefulsets: Vec<StatefulSet>,
    services: Vec<Service>,
    pdbs: Vec<PodDisruptionBudget>,
    configmaps: Vec<ConfigMap>,
}

fn parse(yaml: &str) -> Rendered {
    let mut rendered = Rendered::default();
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = serde_json::Value::deserialize(document).unwrap();
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap().to_owned();
        match (value["apiVersion"].as_str().unwrap(), kind.as_str()) {
            ("apps/v1", "StatefulSet") => rendered
                .statefulsets
                .push(serde_json::from_value(value).unwrap()),
            ("v1", "Service") => rendered
                .services
                .push(serde_json::from_value(value).unwrap()),
            ("policy/v1", "PodDisruptionBudget") => {
                rendered.pdbs.push(serde_json::from_value(value).unwrap())
            }
            ("v1", "ConfigMap") => rendered
                .configmaps
                .push(serde_json::from_value(value).unwrap()),
            (api, other) => panic!("an object this test does not check: {api} {other}"),
        }
    }
    rendered
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn probe_path(container: &Container, probe: &str) -> String {
    let probe = match probe {
        "liveness" => container.liveness_probe.as_ref(),
        _ => container.readiness_probe.as_ref(),
    }
    .unwrap_or_else(|| panic!("no {probe} probe"));
    probe.http_get.as_ref().unwrap().path.clone().unwrap()
}

#[test]
fn the_kustomize_base_renders_and_has_what_the_fleet_needs() {
    let Some(yaml) = render() else { return };
    let rendered = parse(&yaml);
    assert_eq!(rendered.statefulsets.len(), 1, "one StatefulSet");
    let set = &rendered.statefulsets[0];
    let spec = set.spec.as_ref().unwrap();
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert!(selects(
        spec.selector.match_labels.as_ref().unwrap(),
        &pod_labels
    ));
    let pod = spec.template.spec.as_ref().unwrap();

    // Per-pod media ports: host networking, and never two pods on one Kubernetes node.
    assert_eq!(pod.host_network, Some(true));
    let anti = pod
        .affinity
        .as_ref()
        .unwrap()
        .pod_anti_affinity
        .as_ref()
        .unwrap();
    let required = anti
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap();
    assert!(
        required
            .iter()
            .any(|term| term.topology_key == "kubernetes.io/hostname")
    );
    // The grace period covers the longest call.
    assert!(pod.termination_grace_period_seconds.unwrap() >= LONGEST_CALL_SECONDS);

    let container = &pod.containers[0];
    let args = container.args.clone().unwrap();
    assert_eq!(args[0], "serve");
    for flag in ["--fleet=", "--node-id=$(POD_NAME)", "--advertise-api="] {
        assert!(
            args.iter().any(|a| a.starts_with(flag)),
            "{flag} in {args:?}"
        );
    }
    assert_eq!(probe_path(container, "liveness"), "/health/live");
    assert_eq!(probe_path(container, "readiness"), "/health/ready");
    let pre_stop = container
        .lifecycle
        .as_ref()
        .unwrap()
        .pre_stop
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap()
        .command
        .clone()
        .unwrap();
    assert_eq!(&pre_stop[..2], ["mediaproc", "drain"], "{pre_stop:?}");
    assert!(pre_stop.iter().any(|a| a == "--wait"), "{pre_stop:?}");
    let udp = container
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .any(|p| p.protocol.as_deref() == Some("UDP") && p.container_port == 4433);
    assert!(udp, "the QUIC media port");
    // The secrets come from a Secret, never from the manifest.
    let env = container.env.clone().unwrap();
    for name in ["MEDIAPROC_API_TOKEN", "MEDIAPROC_FLEET_SECRET"] {
        let var = env.iter().find(|e| e.name == name).unwrap();
        assert!(
            var.value.is_none(),
            "{name} must not be written into the manifest"
        );
        assert!(var.value_from.as_ref().unwrap().secret_key_ref.is_some());
    }

    // The PodDisruptionBudget: one pod at a time, and it selects the pods.
    assert_eq!(rendered.pdbs.len(), 1);
    let pdb = rendered.pdbs[0].spec.as_ref().unwrap();
    assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    assert!(selects(
        pdb.selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap(),
        &pod_labels
    ));

    // Services select the pods; the StatefulSet's governing one exists and is headless.
    for service in &rendered.services {
        let spec = service.spec.as_ref().unwrap();
        assert!(selects(spec.selector.as_ref().unwrap(), &pod_labels));
    }
    let governing = rendered
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == spec.service_name.as_deref())
        .expect("the StatefulSet's serviceName exists");
    assert_eq!(
        governing.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );
    // The Redis dependency is configured, not deployed here.
    let config = &rendered.configmaps[0];
    assert!(
        config.data.as_ref().unwrap()["MEDIAPROC_REDIS_URL"].starts_with("redis://"),
        "the registry URL"
    );
}
