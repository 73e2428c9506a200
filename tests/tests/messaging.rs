//! Messaging (issue 17) against real brokers and clients, both ends traced, no
//! instrumentation: every delivery is a CONSUMER span under the PRODUCER span of the publish
//! that sent it, found by the message's identity (channel or subject, and payload); a
//! traceparent in the message's headers wins; two sends of the same message name no parent.
//! NATS: nats-server (Debian) and nats-py. Redis pub/sub: redis-server and redis-py.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use zerotrace_integration_tests::procs::{Gated, JsonlAgent, TempDir, spawn, spawn_until, wait_port};
use zerotrace_integration_tests::spans::{TestSpan, find};
use zerotrace_integration_tests::{db, free_port, python_app, require_program, require_root};

/// Messages to `orders.<n>`, eight publishers at a time.
const ORDERS: usize = 64;

fn order_of(span: &TestSpan) -> Option<u64> {
    span.attr("messaging.destination.name")?.strip_prefix("orders.")?.parse().ok()
}

/// One PRODUCER and one CONSUMER span of `system` per message to `orders.<n>`, and every
/// delivery under the send of its own message (never another's).
fn assert_deliveries_under_their_sends(spans: &[TestSpan], system: &str, report: &str) {
    let sends = find(spans, "PRODUCER", |s| order_of(s).is_some());
    let deliveries = find(spans, "CONSUMER", |s| order_of(s).is_some());
    assert_eq!((sends.len(), deliveries.len()), (ORDERS, ORDERS), "{system}: one span per publish and per delivery\n{report}");
    for s in sends.iter().chain(&deliveries) {
        assert_eq!(s.attr("messaging.system"), Some(system), "{s:?}");
        assert!(s.attr("messaging.message.body.size").is_some(), "{s:?}");
    }
    let send = sends[0];
    assert_eq!((send.name.clone(), send.attr("messaging.operation.type")), (format!("send orders.{}", order_of(send).unwrap()), Some("send")));
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
    eprintln!("{system}: {placed} of {ORDERS} deliveries under their publish\n{report}");
    assert_eq!(placed, ORDERS, "{system}: every delivery under its own publish (message identity)\n{report}");
}

/// The same payload sent twice to `dup`: two candidates, so no parent, a link to each.
fn assert_duplicates_linked_not_parented(spans: &[TestSpan], report: &str) {
    let mut sends: Vec<&str> = find(spans, "PRODUCER", |s| s.attr("messaging.destination.name") == Some("dup")).iter().map(|s| s.span_id.as_str()).collect();
    sends.sort_unstable();
    let deliveries = find(spans, "CONSUMER", |s| s.attr("messaging.destination.name") == Some("dup"));
    assert_eq!((sends.len(), deliveries.len()), (2, 2), "{report}");
    for d in &deliveries {
        assert!(d.parent_id.is_empty(), "the same message sent twice names no parent: {d:?}");
        let mut linked: Vec<&str> = d.links.iter().map(|(_, s)| s.as_str()).collect();
        linked.sort_unstable();
        assert_eq!(linked, sends, "linked to both sends: {d:?}");
    }
}

#[test]
fn nats_deliveries_are_children_of_the_publishes_that_sent_them() {
    require_root();
    let nats_server = require_program("nats-server", "Debian's nats-server (cargo xtask setup)");
    let port = free_port();
    let mut broker = Command::new(nats_server);
    broker.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
    let _broker = spawn(broker, "nats-server");
    wait_port(port, Duration::from_secs(20));
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
    assert_deliveries_under_their_sends(&spans, "nats", &report);
    assert_duplicates_linked_not_parented(&spans, &report);
    // A publisher that put its own context in the headers: the delivery joins it.
    let traced = find(&spans, "CONSUMER", |s| s.attr("messaging.destination.name") == Some("traced.0"));
    assert_eq!(traced.len(), 1, "{report}");
    assert_eq!((traced[0].trace_id.as_str(), traced[0].parent_id.as_str()), ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"), "{:?}", traced[0]);
    assert!(report.contains("consumer spans — under their producer by message headers: 1, by message identity: 64"), "{report}");
}

/// Redis pub/sub: PUBLISH from a thread pool, a pattern subscriber in another process.
#[test]
fn redis_pubsub_deliveries_are_children_of_the_publishes_that_sent_them() {
    require_root();
    let server = db::redis();
    let app = python_app("redis_pubsub.py");
    let dir = TempDir::new("pubsub");
    let ready = dir.path().join("subscribed");
    let script = format!(
        "python3 {app} subscribe {port} {count} {ready} & python3 {app} publish {port} {ORDERS} {ready}; wait",
        app = app.display(),
        port = server.port,
        count = ORDERS + 2,
        ready = ready.display()
    );
    let both = Gated::new(&format!("export OTEL_SERVICE_NAME=redis-pubsub; {script}"));
    let agent = JsonlAgent::start(&[both.pid()]);
    let out = both.run(Duration::from_secs(90));
    assert!(out.contains(&format!("received {}", ORDERS + 2)) && out.contains("published"), "peers: {out}");
    std::thread::sleep(Duration::from_millis(1500));
    let (exit, spans) = agent.finish();
    let report = exit.stderr.join("\n");
    assert_deliveries_under_their_sends(&spans, "redis", &report);
    assert_duplicates_linked_not_parented(&spans, &report);
}
