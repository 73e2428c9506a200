//! Kafka (issue 17) against a real Kafka-protocol broker and client, both ends traced, no
//! instrumentation: tansu (a Kafka-compatible broker from crates.io, in-memory storage) and
//! kafka-python. Every record sent is a PRODUCER span carrying the offset the broker gave it,
//! every record fetched a CONSUMER span with its offset, under the PRODUCER span of the same
//! record (found by its identity: partition, key and value, hashed). The same payload sent
//! twice names no parent; a `traceparent` in a record's headers wins. Then the producer under
//! the OpenTelemetry Python agent: every delivery by its headers.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use zerotrace_integration_tests::procs::{Gated, JsonlAgent, spawn, spawn_until, wait_port};
use zerotrace_integration_tests::spans::{TestSpan, find};
use zerotrace_integration_tests::{free_port, python_app, require_program, require_root};

/// Records sent to `orders`, from four threads.
const ORDERS: usize = 48;

/// (topic, partition, offset) of a span's record.
fn record_of(span: &TestSpan) -> Option<(&str, &str, &str)> {
    Some((span.attr("messaging.destination.name")?, span.attr("messaging.destination.partition.id")?, span.attr("messaging.kafka.offset")?))
}

/// A tansu broker, the consumer, and the producer (its command after `producer_prefix`),
/// all traced: (the producer's output, spans, the agent's report).
fn run_kafka(producer_prefix: &str) -> (String, Vec<TestSpan>, String) {
    let tansu = require_program("tansu", "tansu, the Kafka-compatible broker from crates.io (cargo xtask setup)");
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let mut broker = Command::new(tansu);
    broker.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "memory://tansu/"]);
    let _broker = spawn(broker, "tansu");
    wait_port(port, Duration::from_secs(30));
    let app = python_app("kafka_demo.py");
    let created = Command::new("python3").arg(&app).args(["create", &port.to_string()]).output().unwrap();
    assert!(String::from_utf8_lossy(&created.stdout).contains("created"), "topics: {created:?}");

    let mut consume = Command::new("python3");
    consume.arg(&app).args(["consume", &port.to_string(), &(ORDERS + 3).to_string()]).env("OTEL_SERVICE_NAME", "kafka-consumer");
    let consumer = spawn_until(consume, "kafka consumer", "ready", Duration::from_secs(60));
    let producer = Gated::new(&format!("export OTEL_SERVICE_NAME=kafka-producer; exec {producer_prefix}python3 {} produce {port} {ORDERS}", app.display()));
    let agent = JsonlAgent::start(&[producer.pid(), consumer.pid()]);
    // The consumer's fetch in flight at attach (a long poll of up to 500 ms) was sent before
    // the agent saw it: its answer cannot be decoded (which API, which version), so the
    // records must come in the answers to later fetches.
    std::thread::sleep(Duration::from_millis(1200));
    let out = producer.run(Duration::from_secs(90));
    assert!(out.contains("done"), "producer: {out}");
    std::thread::sleep(Duration::from_millis(2500));
    let (exit, spans) = agent.finish();
    (out, spans, exit.stderr.join("\n"))
}

/// One PRODUCER span per record the broker acknowledged (with its partition and offset), and
/// every `orders` record fetched under its own send, never another's.
fn assert_records_under_their_sends(out: &str, spans: &[TestSpan], report: &str) {
    // The broker's own answers, as the producer printed them: every send span has one.
    let acknowledged: Vec<(String, String, String)> = out
        .lines()
        .filter_map(|l| l.strip_prefix("sent "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect();
    let sends = find(spans, "PRODUCER", |s| s.attr("messaging.system") == Some("kafka"));
    let deliveries = find(spans, "CONSUMER", |s| s.attr("messaging.system") == Some("kafka"));
    let mut sent: Vec<(String, String, String)> = sends.iter().filter_map(|s| record_of(s)).map(|(t, p, o)| (t.into(), p.into(), o.into())).collect();
    let mut expected = acknowledged.clone();
    sent.sort();
    expected.sort();
    assert_eq!(sent, expected, "one PRODUCER span per record, with the partition and offset the broker gave it\n{report}");
    for s in sends.iter().chain(&deliveries) {
        assert_eq!(s.name, format!("{} {}", s.attr("messaging.operation.name").unwrap(), s.attr("messaging.destination.name").unwrap()), "{s:?}");
        assert!(s.attr("messaging.message.body.size").is_some(), "{s:?}");
    }

    // Every delivery of an order under the send of that very record, never another's.
    let by_record: HashMap<(&str, &str, &str), &TestSpan> = sends.iter().filter_map(|s| Some((record_of(s)?, *s))).collect();
    let orders: Vec<&&TestSpan> = deliveries.iter().filter(|d| d.attr("messaging.destination.name") == Some("orders")).collect();
    let mut placed = std::collections::HashSet::new();
    for d in &orders {
        let record = record_of(d).unwrap_or_else(|| panic!("a delivery without its record: {d:?}"));
        let Some(parent) = spans.iter().find(|s| s.span_id == d.parent_id) else {
            assert!(d.parent_id.is_empty(), "a delivery under a span that is not there: {d:?}");
            continue;
        };
        assert_eq!(Some(parent.span_id.as_str()), by_record.get(&record).map(|s| s.span_id.as_str()), "a delivery under another record's send: {d:?} under {parent:?}");
        assert_eq!(parent.trace_id, d.trace_id);
        placed.insert(record);
    }
    eprintln!("kafka: {} of {ORDERS} records delivered under their send\n{report}", placed.len());
    assert_eq!(placed.len(), ORDERS, "every record fetched under its own send\n{report}");
}

#[test]
fn kafka_fetched_records_are_children_of_the_sends_that_produced_them() {
    require_root();
    let (out, spans, report) = run_kafka("");
    assert_records_under_their_sends(&out, &spans, &report);

    // The same payload twice: both deliveries were fetched after both sends, so neither has a
    // parent, and each links both sends.
    let dup_sends: Vec<&str> = find(&spans, "PRODUCER", |s| s.attr("messaging.destination.name") == Some("dup")).iter().map(|s| s.span_id.as_str()).collect();
    let dups = find(&spans, "CONSUMER", |s| s.attr("messaging.destination.name") == Some("dup"));
    assert_eq!((dup_sends.len(), dups.len()), (2, 2), "{report}");
    for d in &dups {
        let mut linked: Vec<&str> = d.links.iter().map(|(_, s)| s.as_str()).collect();
        linked.sort_unstable();
        let mut both = dup_sends.clone();
        both.sort_unstable();
        assert!(d.parent_id.is_empty() && linked == both, "a duplicate is linked to both sends, under neither: {d:?}");
    }

    // An instrumented producer's context in the record's headers: the delivery joins it.
    let traced = find(&spans, "CONSUMER", |s| s.attr("messaging.destination.name") == Some("traced"));
    assert_eq!(traced.len(), 1, "{report}");
    assert_eq!((traced[0].trace_id.as_str(), traced[0].parent_id.as_str()), ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"), "{:?}", traced[0]);
    assert!(report.contains(&format!("consumer spans — under their producer by message headers: 1, by message identity: {ORDERS}")), "{report}");
}

/// The producer under the OpenTelemetry Python agent (kafka-python instrumentation, spans not
/// exported): its context rides in each record's headers, our PRODUCER span adopts the span id
/// it saw leave, and each delivery is under it by headers, the duplicates too (each send has
/// its own context).
#[test]
fn kafka_with_the_otel_agent_on_the_producer_links_by_headers() {
    require_root();
    let instrument = require_program("opentelemetry-instrument", "the OpenTelemetry Python agent (cargo xtask setup)");
    let prefix = format!("env OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none {} ", instrument.display());
    let (out, spans, report) = run_kafka(&prefix);
    assert_records_under_their_sends(&out, &spans, &report);
    let dups = find(&spans, "CONSUMER", |s| s.attr("messaging.destination.name") == Some("dup"));
    let mut parents: Vec<&str> = dups.iter().map(|d| d.parent_id.as_str()).collect();
    parents.sort_unstable();
    parents.dedup();
    assert_eq!(parents.len(), 2, "each duplicate under its own send, told apart by its headers: {dups:?}");
    assert!(report.contains("by message identity: 0"), "every delivery by its headers\n{report}");
}
