//! Bad input gets one clear line and the right exit code; malformed traffic never crashes the
//! agent nor produces spans.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpStream;

use zerotrace_integration_tests::procs::{JsonlAgent, curl, python_service, run_agent_to_exit};
use zerotrace_integration_tests::spans::find;
use zerotrace_integration_tests::{agent_binary, free_port, require_root};

fn one_error_line(stderr: &str, needle: &str) {
    let errors: Vec<_> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line, got: {stderr}");
    assert!(errors[0].contains(needle), "error line should mention {needle:?}: {stderr}");
}

#[test]
fn nonexistent_pid_is_a_clear_error() {
    let (code, stderr) = run_agent_to_exit(&["run", "--pid", "999999999"], &[]);
    assert_ne!(code, Some(0));
    one_error_line(&stderr, "process 999999999 does not exist");
}

#[test]
fn no_target_is_a_clear_error() {
    // `run` without a target is fleet mode (tests/tests/fleet.rs); `compare` needs one.
    let (code, stderr) = run_agent_to_exit(&["compare"], &[]);
    assert_ne!(code, Some(0));
    one_error_line(&stderr, "--pid");
}

#[test]
fn not_a_cgroup_is_a_clear_error() {
    let (code, stderr) = run_agent_to_exit(&["run", "--cgroup", "/tmp"], &[]);
    assert_ne!(code, Some(0));
    one_error_line(&stderr, "not a cgroup v2 directory");
}

#[test]
fn malformed_endpoint_is_a_clear_error() {
    require_root();
    let me = std::process::id().to_string();
    let (code, stderr) = run_agent_to_exit(&["run", "--pid", &me, "--exporter", "otlp", "--otlp-endpoint", "localhost:4317"], &[]);
    assert_ne!(code, Some(0));
    one_error_line(&stderr, "not a valid http:// or https:// URL");
    let (code, stderr) = run_agent_to_exit(&["run", "--pid", &me], &[("OTEL_TRACES_EXPORTER", "otlp"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "smoke-signals")]);
    assert_ne!(code, Some(0));
    one_error_line(&stderr, "OTEL_EXPORTER_OTLP_PROTOCOL=smoke-signals");
    let (code, stderr) = run_agent_to_exit(&["run", "--pid", &me, "--exporter", "otlp", "--otlp-endpoint", "http://localhost:99999"], &[]);
    assert_ne!(code, Some(0));
    one_error_line(&stderr, "not a TCP port");
    let (code, stderr) = run_agent_to_exit(&["run", "--pid", &me], &[("OTEL_TRACES_EXPORTER", "otlp"), ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]);
    assert_ne!(code, Some(0));
    one_error_line(&stderr, "OTEL_EXPORTER_OTLP_TIMEOUT=soon is not a timeout");
}

#[test]
fn unwritable_output_is_a_clear_error() {
    require_root();
    let me = std::process::id().to_string();
    let (code, stderr) = run_agent_to_exit(&["run", "--pid", &me, "--exporter", "jsonl", "--output", "/nonexistent-dir/spans.jsonl"], &[]);
    assert_ne!(code, Some(0));
    one_error_line(&stderr, "cannot write the output file");
}

#[test]
fn wrong_flag_is_rejected_with_usage() {
    let (code, stderr) = run_agent_to_exit(&["run", "--pid", "1", "--capture-bytes", "999999"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("capture-bytes"));
}

#[test]
fn missing_capabilities_are_a_clear_error() {
    require_root();
    // Drop every capability, as an unprivileged user would have none.
    let out = std::process::Command::new("setpriv")
        .args(["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"])
        .arg(agent_binary())
        .args(["run", "--pid", &std::process::id().to_string()])
        .output()
        .expect("setpriv (util-linux) runs the agent without capabilities");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    one_error_line(&stderr, "CAP_BPF");
}

#[test]
fn garbage_traffic_never_produces_spans_or_crashes() {
    require_root();
    let port = free_port();
    let svc = python_service(port, None, "garbage");
    let agent = JsonlAgent::start(&[svc.pid()]);
    let payloads: [&[u8]; 5] = [
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"GET\r\n\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        &[0xffu8; 3000],
    ];
    for p in payloads {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(p);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = std::io::Read::read_to_end(&mut s, &mut Vec::new());
    }
    assert_eq!(curl(&format!("http://127.0.0.1:{port}/item/ok"), &[]), 200);
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0), "{:?}", exit.stderr);
    let servers = find(&spans, "SERVER", |_| true);
    // Python answers the malformed requests with 400s, but those requests never parsed as
    // HTTP on our side either, so the only span is the valid request.
    let paths: Vec<_> = servers.iter().map(|s| s.attr("url.path").unwrap_or("?")).collect();
    assert_eq!(paths, ["/item/ok"], "{spans:#?}");
}

#[test]
fn traced_process_exiting_mid_run_is_reported_and_others_keep_tracing() {
    require_root();
    let (p1, p2) = (free_port(), free_port());
    let first = python_service(p1, None, "first");
    let second = python_service(p2, None, "second");
    let agent = JsonlAgent::start(&[first.pid(), second.pid()]);
    assert_eq!(curl(&format!("http://127.0.0.1:{p1}/item/1"), &[]), 200);
    drop(first);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(curl(&format!("http://127.0.0.1:{p2}/item/2"), &[]), 200);
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0));
    assert!(exit.stderr.iter().any(|l| l.contains("exited") && l.contains("still traced")), "{:?}", exit.stderr);
    let services: Vec<_> = spans.iter().map(|s| s.service().to_string()).collect();
    assert!(services.contains(&"first".to_string()) && services.contains(&"second".to_string()), "{services:?}");
}
