//! deploy/ (issue 18): the Helm chart, the plain DaemonSet and the collector's config.
//!
//! The chart is rendered by tests/apps/helm_render (Go's text/template and sprig, the engine
//! Helm is built on, from Debian: no reachable registry ships helm itself), then every manifest
//! is checked against the Kubernetes OpenAPI schemas by `kubernetes-validate --strict` (PyPI).
//! The agent's config the chart writes is parsed by the agent itself.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use serde_yaml_ng::Value;
use zerotrace_integration_tests::procs::TempDir;
use zerotrace_integration_tests::reference::go_app;
use zerotrace_integration_tests::{agent_binary, repo_root, require_program};

/// The chart rendered for release `zt` in namespace `observability`, with `overrides` (a
/// values file's text) on top: the rendered text.
fn render(dir: &Path, overrides: &str) -> String {
    let renderer = go_app("helm_render");
    let values = dir.join("overrides.yaml");
    std::fs::write(&values, overrides).unwrap();
    let out = Command::new(renderer).arg(repo_root().join("deploy/helm/zerotrace")).args(["zt", "observability"]).arg(&values).output().unwrap();
    assert!(out.status.success(), "render: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `kubernetes-validate --strict` on a file: unknown fields and wrong types fail.
fn validate(file: &Path) {
    let tool = require_program("kubernetes-validate", "cargo xtask setup installs it (PyPI kubernetes-validate)");
    let out = Command::new(tool).args(["--strict", "--quiet"]).arg(file).output().unwrap();
    assert!(out.status.success(), "{} does not validate: {}{}", file.display(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text).map(|d| serde::Deserialize::deserialize(d).unwrap()).filter(|v: &Value| !v.is_null()).collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"].as_str() == Some(kind)).unwrap_or_else(|| panic!("no {kind} rendered"))
}

/// The DaemonSet's container runs with the capabilities eBPF tracing needs and nothing more.
fn assert_least_privilege(daemonset: &Value) {
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false), "no API access is needed");
    let security = &pod["containers"][0]["securityContext"];
    assert_ne!(security["privileged"].as_bool(), Some(true));
    let added: Vec<&str> = security["capabilities"]["add"].as_sequence().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(!added.iter().any(|c| c.ends_with("SYS_ADMIN")), "no CAP_SYS_ADMIN: {added:?}");
    assert!(added.contains(&"BPF") && added.contains(&"PERFMON"), "{added:?}");
}

/// The agent parses the config the chart wrote, and surveys the host with it (`--list`).
fn agent_lists_with(dir: &Path, config: &str) -> String {
    let file = dir.join("zerotrace.yaml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(agent_binary()).args(["run", "--list", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "the agent refused the chart's config:\n{config}\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_chart_renders_valid_least_privilege_manifests_and_a_config_the_agent_takes() {
    let dir = TempDir::new("chart");
    let rendered = render(dir.path(), "{}\n");
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &rendered).unwrap();
    validate(&file);
    let docs = documents(&rendered);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "DaemonSet", "ServiceAccount"]);
    let daemonset = kind(&docs, "DaemonSet");
    assert_least_privilege(daemonset);
    let config = kind(&docs, "ConfigMap")["data"]["zerotrace.yaml"].as_str().unwrap().to_string();
    let parsed: Value = serde_yaml_ng::from_str(&config).unwrap();
    assert_eq!(parsed["exclude-k8s-namespace"], serde_yaml_ng::from_str::<Value>("[kube-system, observability]").unwrap(), "the release's namespace is excluded:\n{config}");
    assert_eq!(parsed["container"].as_bool(), Some(true));
    assert!(agent_lists_with(dir.path(), &config).contains("processes would be traced"));

    // Overrides: selectors, sampling, routes and any other flag; the agent applies them (the
    // test process itself is selected by its executable's name).
    let me = std::env::current_exe().unwrap().file_name().unwrap().to_str().unwrap().to_string();
    let overrides = format!(
        "selectors: {{container: false, exe: ['{me}'], excludeExe: ['no-such-program']}}\nsampling: {{sampler: parentbased_traceidratio, arg: '0.25'}}\nroutes: ['/merchant/{{id}}/status']\nconfig: {{capture-bytes: 512}}\ntolerations: [{{operator: Exists}}]\nnodeSelector: {{kubernetes.io/os: linux}}\n"
    );
    let rendered = render(dir.path(), &overrides);
    std::fs::write(&file, &rendered).unwrap();
    validate(&file);
    let docs = documents(&rendered);
    assert_least_privilege(kind(&docs, "DaemonSet"));
    let config = kind(&docs, "ConfigMap")["data"]["zerotrace.yaml"].as_str().unwrap().to_string();
    let parsed: Value = serde_yaml_ng::from_str(&config).unwrap();
    assert_eq!(parsed["env"]["OTEL_TRACES_SAMPLER_ARG"].as_str(), Some("0.25"), "{config}");
    assert_eq!(parsed["capture-bytes"].as_u64(), Some(512), "{config}");
    assert!(parsed.get("container").is_none(), "{config}");
    let listing = agent_lists_with(dir.path(), &config);
    let pid = format!("{:>8}  yes", std::process::id());
    assert!(listing.lines().any(|l| l.starts_with(&pid) && l.contains(&format!("--exe {me}"))), "the chart's --exe selects this test:\n{listing}");
    // A changed config changes the pod template: the agents roll.
    let checksum = |docs: &[Value]| kind(docs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]["checksum/config"].as_str().unwrap().to_string();
    assert_ne!(checksum(&docs), checksum(&documents(&render(dir.path(), "{}\n"))));
}

#[test]
fn the_values_schema_takes_the_defaults_and_refuses_a_wrong_value() {
    let check = |overrides: &str| {
        let script = "import json, sys, yaml, jsonschema\n\
chart = sys.argv[1]\n\
values = yaml.safe_load(open(chart + '/values.yaml'))\n\
values.update(yaml.safe_load(sys.argv[2]) or {})\n\
jsonschema.validate(values, json.load(open(chart + '/values.schema.json')))\n";
        Command::new("python3").args(["-c", script]).arg(repo_root().join("deploy/helm/zerotrace")).arg(overrides).output().unwrap()
    };
    let ok = check("{}");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let wrong = check("sampling: {sampler: sometimes}");
    assert!(!wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("sometimes"), "{}", String::from_utf8_lossy(&wrong.stderr));
    let typo = check("selector: {exe: [nginx]}");
    assert!(!typo.status.success(), "an unknown key is refused");
}

#[test]
fn the_plain_manifests_validate_and_the_collector_adds_kubernetes_metadata_by_pod_uid() {
    let deploy = repo_root().join("deploy");
    validate(&deploy.join("kubernetes/daemonset.yaml"));
    validate(&deploy.join("kubernetes/otel-collector-rbac.yaml"));
    assert_least_privilege(&documents(&std::fs::read_to_string(deploy.join("kubernetes/daemonset.yaml")).unwrap())[0]);

    let collector: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(deploy.join("otel-collector.yaml")).unwrap()).unwrap();
    let k8s = &collector["processors"]["k8sattributes"];
    assert_eq!(k8s["pod_association"][0]["sources"][0]["from"].as_str(), Some("resource_attribute"));
    assert_eq!(k8s["pod_association"][0]["sources"][0]["name"].as_str(), Some("k8s.pod.uid"), "zerotrace's resources carry the pod uid");
    let metadata: Vec<&str> = k8s["extract"]["metadata"].as_sequence().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert!(metadata.contains(&"k8s.deployment.name"), "{metadata:?}");
    // Every pipeline uses only components the file defines, and both signals get the metadata.
    for (signal, pipeline) in collector["service"]["pipelines"].as_mapping().unwrap() {
        for (part, section) in [("receivers", "receivers"), ("processors", "processors"), ("exporters", "exporters")] {
            for component in pipeline[part].as_sequence().into_iter().flatten() {
                assert!(collector[section].get(component.as_str().unwrap()).is_some(), "{signal:?} uses {component:?}, not defined under {section}");
            }
        }
    }
    for signal in ["traces", "metrics"] {
        let processors: Vec<&str> = collector["service"]["pipelines"][signal]["processors"].as_sequence().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        // The label exists only after k8sattributes added it.
        let (k8s, name) = (processors.iter().position(|p| *p == "k8sattributes"), processors.iter().position(|p| *p == "transform/service_name"));
        assert!(matches!((k8s, name), (Some(a), Some(b)) if a < b), "{signal}: {processors:?}");
    }
    let labels = k8s["extract"]["labels"].as_sequence().unwrap();
    assert!(labels.iter().all(|l| l["tag_name"].as_str().unwrap().starts_with("k8s.pod.label.")), "the conventions' k8s.pod.label.<key>: {labels:?}");
}
