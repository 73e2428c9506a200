//! Sampling (issue 18) by the OpenTelemetry environment: a trace is kept or dropped whole,
//! across the services of the host, and RED metrics still count every request. Two traced
//! Python services, front calling back; requests come with a `traceparent` whose sampled flag
//! is set, unset, or with none.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use zerotrace_integration_tests::procs::{Agent, Proc, TempDir, python_service};
use zerotrace_integration_tests::spans::from_jsonl;
use zerotrace_integration_tests::{free_port, require_root};

fn get(port: u16, path: &str, traceparent: Option<&str>) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", &format!("http://127.0.0.1:{port}{path}")]);
    if let Some(tp) = traceparent {
        cmd.args(["-H", &format!("traceparent: {tp}")]);
    }
    assert!(cmd.status().unwrap().success());
}

/// Two traced Python services, front calling back, and the agent writing jsonl and serving
/// its metrics page, with the sampler set by `env`.
struct Chain {
    _front: Proc,
    _back: Proc,
    _dir: TempDir,
    front_port: u16,
    metrics: u16,
    out: std::path::PathBuf,
}

impl Chain {
    fn start(env: &[(&str, &str)]) -> (Chain, Agent) {
        let (front_port, back_port, metrics) = (free_port(), free_port(), free_port());
        let back = python_service(back_port, None, "back");
        let front = python_service(front_port, Some(back_port), "front");
        let dir = TempDir::new("sampling");
        let out = dir.path().join("spans.jsonl");
        let args: Vec<String> = [
            "--pid",
            &front.pid().to_string(),
            "--pid",
            &back.pid().to_string(),
            "--exporter",
            "jsonl",
            "--output",
            &out.display().to_string(),
            "--prometheus-port",
            &metrics.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let agent = Agent::start_env(&args, env);
        (Chain { _front: front, _back: back, _dir: dir, front_port, metrics, out }, agent)
    }
}

#[test]
fn parent_based_sampling_keeps_or_drops_whole_traces_and_metrics_count_all() {
    require_root();
    let (chain, agent) = Chain::start(&[("OTEL_TRACES_SAMPLER", "parentbased_always_off")]);
    let (front_port, metrics, out) = (chain.front_port, chain.metrics, chain.out.clone());
    let sampled = "00-11111111111111111111111111111111-2222222222222222-01";
    let unsampled = "00-33333333333333333333333333333333-4444444444444444-00";
    for i in 0..3 {
        get(front_port, &format!("/work/{i}"), Some(sampled));
        get(front_port, &format!("/work/{}", 10 + i), Some(unsampled));
        get(front_port, &format!("/work/{}", 20 + i), None);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let page = String::from_utf8(Command::new("curl").args(["-s", &format!("http://127.0.0.1:{metrics}/metrics")]).output().unwrap().stdout).unwrap();
    let exit = agent.stop();
    let report = exit.stderr.join("\n");
    let spans = from_jsonl(&out);
    let traces: std::collections::HashSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces.into_iter().collect::<Vec<_>>(), vec!["11111111111111111111111111111111"], "only the sampled trace, whole\n{report}");
    // Front SERVER, its CLIENT call and the back's SERVER, for each of the 3 requests.
    assert_eq!(spans.len(), 9, "{spans:?}");
    assert!(spans.iter().any(|s| s.service() == "back"), "the back service keeps the trace too");
    assert!(report.contains("sampling traces: parentbased (always_off)") && report.contains(", 18 not sampled;"), "{report}");
    let count = page
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count{") && l.contains("service_name=\"front\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert_eq!(count, 9.0, "RED metrics count every request, sampled or not\n{page}");
}

#[test]
fn a_sampler_the_specification_does_not_define_is_refused() {
    require_root();
    let (code, err) = zerotrace_integration_tests::procs::run_agent_to_exit(&["run", "--pid", "1"], &[("OTEL_TRACES_SAMPLER", "jaeger_remote")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("OTEL_TRACES_SAMPLER=jaeger_remote is not supported"), "{err}");
}

/// `traceidratio` 0.25 on 200 requests through front → back: about a quarter of the traces
/// are kept, each whole (the front's SERVER and CLIENT spans and the back's SERVER span), none
/// in part; RED metrics count all 200.
#[test]
fn a_ratio_sampler_keeps_about_a_quarter_of_the_traces_and_never_half_of_one() {
    require_root();
    const N: usize = 200;
    let (chain, agent) = Chain::start(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.25")]);
    let (front_port, metrics, out) = (chain.front_port, chain.metrics, chain.out.clone());
    let urls: Vec<String> = (0..N).map(|i| format!("http://127.0.0.1:{front_port}/work/{i}")).collect();
    // curl makes the requests one after the other on one connection.
    let status = Command::new("curl").args(["-s"]).args(urls.iter().flat_map(|u| ["-o", "/dev/null", u.as_str()])).status().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(1500));
    let page = String::from_utf8(Command::new("curl").args(["-s", &format!("http://127.0.0.1:{metrics}/metrics")]).output().unwrap().stdout).unwrap();
    let exit = agent.stop();
    let report = exit.stderr.join("\n");
    let spans = from_jsonl(&out);
    let mut by_trace: std::collections::HashMap<&str, Vec<String>> = std::collections::HashMap::new();
    for s in &spans {
        by_trace.entry(s.trace_id.as_str()).or_default().push(format!("{} {}", s.service(), s.kind));
    }
    for (trace, kinds) in &by_trace {
        let mut kinds = kinds.clone();
        kinds.sort();
        assert_eq!(kinds, ["back SERVER", "front CLIENT", "front SERVER"], "trace {trace} kept whole or not at all\n{report}");
    }
    let kept = by_trace.len();
    // Binomial(200, 0.25): mean 50, standard deviation 6.1; 25..=75 is four deviations.
    assert!((25..=75).contains(&kept), "{kept} of {N} traces kept at a ratio of 0.25\n{report}");
    let count = page
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count{") && l.contains("service_name=\"front\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert_eq!(count, N as f64, "RED metrics count every request\n{page}");
}
