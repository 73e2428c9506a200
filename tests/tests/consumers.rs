//! Consumer loops (issue 17): the calls a consumer thread makes for a message it read are
//! children of that message's CONSUMER span, found from the thread that read it and went back
//! to its broker afterwards (docs/ARCHITECTURE.md, evidence 6). Every job n makes one call,
//! `GET /item/<n>`, so a call under another job's delivery is told apart and fails the test.
//! RabbitMQ with pika (prefetch 1, ack after the work) and Redis BRPOP loops, four consumer
//! threads each; a gevent loop whose greenlets interleave jobs on one thread gets no parent.
//! Each job is sent while serving a request `/enqueue/<n>`, so a placed call closes one trace:
//! SERVER → PRODUCER → CONSUMER → the worker's CLIENT call.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use zerotrace_integration_tests::procs::{Gated, JsonlAgent, TempDir, python_service};
use zerotrace_integration_tests::spans::{TestSpan, find};
use zerotrace_integration_tests::{db, free_port, python_app, require_root};

const JOBS: usize = 48;
const THREADS: usize = 4;

fn item_of(span: &TestSpan) -> Option<u64> {
    span.attr("url.full")?.split_once("/item/")?.1.parse().ok()
}

/// Which job a delivery carried: its message id (`job-<n>`), or its list (`jobs.<n>`).
fn job_of(span: &TestSpan) -> Option<u64> {
    if let Some(id) = span.attr("messaging.message.id") {
        return id.strip_prefix("job-")?.parse().ok();
    }
    span.attr("messaging.destination.name")?.strip_prefix("jobs.")?.parse().ok()
}

/// One call per job. A call with a parent is under the delivery of its own job, never
/// another's, and that delivery under the send of its job, under the request `/enqueue/<n>`
/// that sent it: one trace from the request to the worker's call. One without a parent is
/// linked to deliveries or to nothing. Returns how many calls are under their delivery.
fn assert_calls_under_their_delivery(spans: &[TestSpan], report: &str) -> usize {
    let calls = find(spans, "CLIENT", |s| item_of(s).is_some());
    assert_eq!(calls.len(), JOBS, "one call per job\n{report}");
    let deliveries = find(spans, "CONSUMER", |s| job_of(s).is_some());
    assert_eq!(deliveries.len(), JOBS, "one delivery per job\n{report}");
    let mut placed = 0;
    for call in &calls {
        let n = item_of(call);
        match spans.iter().find(|s| s.span_id == call.parent_id) {
            Some(parent) => {
                assert_eq!(parent.kind, "CONSUMER", "a job's call under something else than a delivery: {call:?} under {parent:?}");
                assert_eq!(job_of(parent), n, "a job's call under another job's delivery: {call:?} under {parent:?}");
                assert_eq!(parent.trace_id, call.trace_id);
                let send = spans.iter().find(|s| s.span_id == parent.parent_id).unwrap_or_else(|| panic!("a delivery without its send: {parent:?}\n{report}"));
                assert_eq!(send.kind, "PRODUCER", "{parent:?} under {send:?}");
                let request = spans.iter().find(|s| s.span_id == send.parent_id).unwrap_or_else(|| panic!("a send without its request: {send:?}\n{report}"));
                let enqueued = request.attr("url.path").and_then(|p| p.strip_prefix("/enqueue/")?.parse().ok());
                assert_eq!((request.kind.as_str(), enqueued), ("SERVER", n), "a send under another request: {send:?} under {request:?}");
                assert_eq!(request.trace_id, call.trace_id, "one trace from the request to the worker's call");
                placed += 1;
            }
            None => {
                assert!(call.parent_id.is_empty(), "a call under a span that is not there: {call:?}");
                for (_, linked) in &call.links {
                    let linked = spans.iter().find(|s| &s.span_id == linked).unwrap_or_else(|| panic!("linked to a span not there: {call:?}"));
                    assert_eq!(linked.kind, "CONSUMER", "{call:?} linked to {linked:?}");
                }
            }
        }
    }
    placed
}

/// The last job waits 4 s before its call, longer than a finished span is remembered: the
/// delivery is held while open, so the call is still under it (its thread's first job aside).
fn assert_slow_job_placed(spans: &[TestSpan], report: &str) {
    let slow = find(spans, "CLIENT", |s| item_of(s) == Some(JOBS as u64 - 1));
    assert_eq!(slow.len(), 1, "{report}");
    let delivery = spans.iter().find(|s| s.span_id == slow[0].parent_id);
    assert!(delivery.is_some_and(|d| job_of(d) == Some(JOBS as u64 - 1)), "the slow job's call under its delivery: {:?}\n{report}", slow[0]);
    let waited = slow[0].start.saturating_sub(delivery.map_or(0, |d| d.end));
    eprintln!("the slow job called {} ms after its delivery was read", waited / 1_000_000);
}

/// The workers (`worker` mode, then `worker_args` after the common ones) and the senders in
/// one gated shell, with an HTTP service (untraced) to call.
fn run(worker: &str, worker_args: &str, sender: &str, broker_port: u16) -> (Vec<TestSpan>, String) {
    let http_port = free_port();
    let _http = python_service(http_port, None, "items");
    let app = python_app("queue_workers.py");
    let dir = TempDir::new("consumers");
    let ready = dir.path().join("working");
    let script = format!(
        "python3 {app} {worker} {broker_port} {http_port} {JOBS} {ready} {worker_args} & python3 {app} {sender} {broker_port} {JOBS} {ready}; wait",
        app = app.display(),
        ready = ready.display()
    );
    let both = Gated::new(&format!("export OTEL_SERVICE_NAME=queue-workers; {script}"));
    let agent = JsonlAgent::start(&[both.pid()]);
    let out = both.run(Duration::from_secs(120));
    assert!(out.contains(&format!("worked {JOBS}")) && out.contains("sent"), "{worker}: {out}");
    std::thread::sleep(Duration::from_millis(1500));
    let (exit, spans) = agent.finish();
    (spans, exit.stderr.join("\n"))
}

/// Each pika consumer thread's first job is a candidate only (its consumer was not seen
/// settling yet); after its first ack, each job's call is under its delivery.
#[test]
fn rabbitmq_consumer_threads_calls_are_children_of_their_delivery() {
    require_root();
    let dir = TempDir::new("rabbitmq-workers");
    let (_broker, port) = db::rabbitmq(&dir);
    let (spans, report) = run("amqp-work", &THREADS.to_string(), "amqp-send", port);
    let placed = assert_calls_under_their_delivery(&spans, &report);
    eprintln!("rabbitmq: {placed} of {JOBS} calls under their delivery\n{report}");
    assert!(placed >= JOBS - THREADS, "every call after its thread's first ack is under its delivery: {placed}\n{report}");
    assert!(report.contains("the delivery its consumer thread read"), "{report}");
    assert_slow_job_placed(&spans, &report);
}

#[test]
fn redis_brpop_threads_calls_are_children_of_their_delivery() {
    require_root();
    let server = db::redis();
    let (spans, report) = run("redis-work", &THREADS.to_string(), "redis-send", server.port);
    let placed = assert_calls_under_their_delivery(&spans, &report);
    eprintln!("redis: {placed} of {JOBS} calls under their delivery\n{report}");
    assert!(placed >= JOBS - THREADS, "every call after its thread's first BRPOP is under its delivery: {placed}\n{report}");
    assert_slow_job_placed(&spans, &report);
}

/// gevent: the loop reads job after job while earlier jobs' greenlets still wait to call, on
/// the same thread. The thread is no unit of work: no call gets a parent by it.
#[test]
fn gevent_consumer_calls_get_no_parent_from_the_thread() {
    require_root();
    let server = db::redis();
    let (spans, report) = run("redis-gevent-work", "", "redis-send", server.port);
    let placed = assert_calls_under_their_delivery(&spans, &report);
    assert!(report.contains("gevent"), "the agent saw gevent: {report}");
    assert_eq!(placed, 0, "{report}");
}
