//! Messaging (issue 17) against real brokers and clients, both ends traced. NATS: nats-server
//! (Debian) and nats-py, no instrumentation: every delivery is a CONSUMER span under the
//! PRODUCER span of the publish that sent it, found by the message's identity (subject and
//! payload); a traceparent in the message's headers wins; two sends of the same message name
//! no parent.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use zerotrace_integration_tests::procs::{Gated, JsonlAgent, spawn, spawn_until};
use zerotrace_integration_tests::spans::{TestSpan, find};
use zerotrace_integration_tests::{free_port, python_app, require_program, require_root};

/// Messages to `orders.<n>`, eight publishing tasks at a time.
const ORDERS: usize = 64;

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn order_of(span: &TestSpan) -> Option<u64> {
    span.attr("messaging.destination.name")?.strip_prefix("orders.")?.parse().ok()
}

#[test]
fn nats_deliveries_are_children_of_the_publishes_that_sent_them() {
    require_root();
    let nats_server = require_program("nats-server", "Debian's nats-server (cargo xtask setup)");
    let port = free_port();
    let mut broker = Command::new(nats_server);
    broker.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
    let _broker = spawn(broker, "nats-server");
    wait_for_port(port, "nats-server");
    let app = python_app("nats_demo.py");
    let mut consume = Command::new("python3");
    consume.arg(&app).args(["consume", &port.to_string(), ">", &(ORDERS + 3).to_string()]).env("OTEL_SERVICE_NAME", "nats-consumer");
    let consumer = spawn_until(consume, "nats consumer", "ready", Duration::from_secs(20));
    let publisher = Gated::new(&format!("OTEL_SERVICE_NAME=nats-publisher exec python3 {} publish {port} {ORDERS}", app.display()));
    let agent = JsonlAgent::start(&[publisher.pid(), consumer.pid()]);
    let out = publisher.run(Duration::from_secs(60));
    assert!(out.contains("done"), "publisher: {out}");
    std::thread::sleep(Duration::from_millis(1500));
    let (exit, spans) = agent.finish();
    let report = exit.stderr.join("\n");

    let sends = find(&spans, "PRODUCER", |s| order_of(s).is_some());
    let deliveries = find(&spans, "CONSUMER", |s| order_of(s).is_some());
    assert_eq!((sends.len(), deliveries.len()), (ORDERS, ORDERS), "one span per publish and per delivery\n{report}");
    for s in sends.iter().chain(&deliveries) {
        assert_eq!(s.attr("messaging.system"), Some("nats"), "{s:?}");
        assert!(s.attr("messaging.message.body.size").is_some(), "{s:?}");
    }
    let send = sends[0];
    assert_eq!((send.name.as_str(), send.attr("messaging.operation.type")), (format!("send orders.{}", order_of(send).unwrap()).as_str(), Some("send")));
    let mut placed = 0;
    for d in &deliveries {
        assert_eq!(d.attr("messaging.operation.type"), Some("process"), "{d:?}");
        let Some(parent) = spans.iter().find(|s| s.span_id == d.parent_id) else {
            assert!(d.parent_id.is_empty(), "a delivery under a span that is not there: {d:?}");
            continue;
        };
        assert_eq!(parent.kind, "PRODUCER", "a delivery under something else than a send: {d:?} under {parent:?}");
        assert_eq!(order_of(parent), order_of(d), "a delivery under another message's send: {d:?} under {parent:?}");
        assert_eq!(parent.trace_id, d.trace_id);
        placed += 1;
    }
    eprintln!("NATS: {placed} of {ORDERS} deliveries under their publish\n{report}");
    assert_eq!(placed, ORDERS, "every delivery under its own publish (message identity)\n{report}");

    // The same payload sent twice: two candidates, so no parent, a link to each.
    let dup_sends: Vec<&str> = find(&spans, "PRODUCER", |s| s.attr("messaging.destination.name") == Some("dup")).iter().map(|s| s.span_id.as_str()).collect();
    let dup_deliveries = find(&spans, "CONSUMER", |s| s.attr("messaging.destination.name") == Some("dup"));
    assert_eq!((dup_sends.len(), dup_deliveries.len()), (2, 2), "{report}");
    for d in &dup_deliveries {
        assert!(d.parent_id.is_empty(), "the same message sent twice names no parent: {d:?}");
        let mut linked: Vec<&str> = d.links.iter().map(|(_, s)| s.as_str()).collect();
        linked.sort_unstable();
        let mut expected = dup_sends.clone();
        expected.sort_unstable();
        assert_eq!(linked, expected, "linked to both sends: {d:?}");
    }

    // A publisher that put its own context in the headers: the delivery joins it.
    let traced = find(&spans, "CONSUMER", |s| s.attr("messaging.destination.name") == Some("traced.0"));
    assert_eq!(traced.len(), 1, "{report}");
    assert_eq!((traced[0].trace_id.as_str(), traced[0].parent_id.as_str()), ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"), "{:?}", traced[0]);
    assert!(report.contains("consumer spans — under their producer by message headers: 1, by message identity: 64"), "{report}");
}
