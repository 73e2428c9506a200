//! Scenario (v): OTLP over gRPC and HTTP/protobuf to a receiver the test starts, configured by
//! flags and by the standard OTEL_* environment variables; resource attributes.

#![allow(clippy::unwrap_used)]

use zerotrace_integration_tests::procs::{Agent, curl, python_service};
use zerotrace_integration_tests::receiver::Receiver;
use zerotrace_integration_tests::spans::{TestSpan, assert_child_of, assert_well_formed, find};
use zerotrace_integration_tests::{free_port, require_root};

fn drive_front_back(run: impl FnOnce(u32, u32) -> Agent) -> Agent {
    let (front_port, back_port) = (free_port(), free_port());
    let back = python_service(back_port, None, "otlp-back");
    let front = python_service(front_port, Some(back_port), "otlp-front");
    let agent = run(front.pid(), back.pid());
    for i in 0..5 {
        assert_eq!(curl(&format!("http://127.0.0.1:{front_port}/work/{i}"), &[]), 200);
    }
    drop((front, back));
    agent
}

fn check(spans: &[TestSpan]) {
    assert_well_formed(spans);
    let servers = find(spans, "SERVER", |s| s.service() == "otlp-front");
    assert_eq!(servers.len(), 5, "{spans:#?}");
    for s in &servers {
        assert_eq!(s.resource.get("process.executable.name").map(|e| e.starts_with("python")), Some(true));
        assert!(s.resource.get("host.name").is_some_and(|h| !h.is_empty()));
        assert!(s.resource.contains_key("process.pid"));
        let client = find(spans, "CLIENT", |c| c.parent_id == s.span_id);
        assert_eq!(client.len(), 1);
        assert_child_of(client[0], s);
        let back = find(spans, "SERVER", |b| b.parent_id == client[0].span_id);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].service(), "otlp-back");
    }
}

#[test]
fn otlp_grpc_by_flags() {
    require_root();
    let receiver = Receiver::grpc();
    let endpoint = format!("http://{}", receiver.addr);
    let agent = drive_front_back(|f, b| {
        Agent::start_env(
            &[
                "--pid".into(),
                f.to_string(),
                "--pid".into(),
                b.to_string(),
                "--exporter".into(),
                "otlp".into(),
                "--otlp-protocol".into(),
                "grpc".into(),
                "--otlp-endpoint".into(),
                endpoint.clone(),
            ],
            &[("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")],
        )
    });
    let exit = agent.stop();
    assert_eq!(exit.code, Some(0));
    check(&receiver.received.spans());
    assert!(receiver.received.headers.lock().unwrap().iter().any(|(k, v)| k == "x-tenant" && v == "acme"), "OTEL_EXPORTER_OTLP_HEADERS are sent");
}

#[test]
fn otlp_http_protobuf_by_environment() {
    require_root();
    let receiver = Receiver::http();
    let endpoint = format!("http://{}", receiver.addr);
    let agent = drive_front_back(|f, b| {
        Agent::start_env(
            &["--pid".into(), f.to_string(), "--pid".into(), b.to_string()],
            &[
                ("OTEL_TRACES_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer t0k"),
            ],
        )
    });
    let exit = agent.stop();
    assert_eq!(exit.code, Some(0));
    check(&receiver.received.spans());
    let headers = receiver.received.headers.lock().unwrap();
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v == "application/x-protobuf"));
    assert!(headers.iter().any(|(k, v)| k == "authorization" && v == "Bearer t0k"));
}

#[test]
fn unreachable_collector_warns_and_keeps_running() {
    require_root();
    let closed = free_port();
    let port = free_port();
    let svc = python_service(port, None, "lonely");
    let agent = Agent::start(&[
        "--pid".into(),
        svc.pid().to_string(),
        "--exporter".into(),
        "otlp".into(),
        "--otlp-protocol".into(),
        "http/protobuf".into(),
        "--otlp-endpoint".into(),
        format!("http://127.0.0.1:{closed}"),
    ]);
    assert_eq!(curl(&format!("http://127.0.0.1:{port}/item/1"), &[]), 200);
    std::thread::sleep(std::time::Duration::from_secs(4));
    // Still serving and still tracing after the export failures.
    assert_eq!(curl(&format!("http://127.0.0.1:{port}/item/2"), &[]), 200);
    let exit = agent.stop();
    assert_eq!(exit.code, Some(0), "{:?}", exit.stderr);
    let warnings: Vec<_> = exit.stderr.iter().filter(|l| l.contains("OTLP export to")).collect();
    assert!(!warnings.is_empty(), "an unreachable collector is reported: {:?}", exit.stderr);
    assert!(warnings.len() <= 2, "one warning per outage, not one per batch: {warnings:?}");
}
