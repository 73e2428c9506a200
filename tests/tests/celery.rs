//! Celery end to end (issue 17), no instrumentation in any process: a Flask request queues a
//! task (`work.delay(n)`), a worker with the prefork pool runs it in a child process, and the
//! task calls an HTTP service and PostgreSQL. Each request must be one trace:
//! SERVER `/enqueue/n` → PRODUCER (the push to the broker) → CONSUMER (the worker's parent
//! process taking it) → the child's CLIENT calls (`/work/n`, the query) → the HTTP service's
//! SERVER span. The CONSUMER finds its PRODUCER by message identity; the child's calls find
//! the CONSUMER by the task id the child read from its pipe. Every parent is checked against
//! the request number and the task id, so a call under another request's task fails.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use zerotrace_integration_tests::procs::{Gated, JsonlAgent, TempDir};
use zerotrace_integration_tests::spans::{TestSpan, find};
use zerotrace_integration_tests::{db, free_port, python_app, require_root};

/// Requests, eight at a time.
const TASKS: usize = 24;

fn path(span: &TestSpan) -> Option<&str> {
    let after_host = |url: &'_ str| url.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| rest.len() - i));
    span.attr("url.path").or_else(|| span.attr("url.full").and_then(|u| after_host(u).map(|n| &u[u.len() - n..])))
}

/// The number in `/<prefix>/<n>`.
fn number(span: &TestSpan, prefix: &str) -> Option<usize> {
    path(span)?.strip_prefix(prefix)?.parse().ok()
}

/// The Celery task id a messaging span carries: kombu's Redis envelope gives it as the
/// message id, AMQP as the correlation id (`messaging.message.conversation_id`).
fn task_id(span: &TestSpan) -> Option<&str> {
    span.attr("messaging.message.id").or_else(|| span.attr("messaging.message.conversation_id"))
}

fn parent<'a>(spans: &'a [TestSpan], span: &TestSpan) -> Option<&'a TestSpan> {
    spans.iter().find(|s| !span.parent_id.is_empty() && s.span_id == span.parent_id)
}

fn run_celery(broker: &str, pg_port: u16, web_prefix: &str) -> (String, Vec<TestSpan>, String) {
    let app = python_app("celery_demo.py");
    let dir = TempDir::new("celery");
    let ready = dir.path().join("worker-ready");
    let (web, backend) = (free_port(), free_port());
    let script = format!(
        // Only the driver writes to stdout: its lines are whole.
        "export CELERY_BROKER={broker} CELERY_PG_PORT={pg_port} OTEL_SERVICE_NAME=celery-demo; \
         python3 {app} backend {backend} >&2 & B=$!; {web_prefix}python3 {app} web {web} {backend} >&2 & W=$!; python3 {app} worker {ready} >&2 & C=$!; \
         python3 {app} drive {web} {backend} {TASKS} {ready}; status=$?; sleep 1; kill -TERM $B $W $C; wait $C; exit $status",
        app = app.display(),
        ready = ready.display()
    );
    let peers = Gated::new(&script);
    let agent = JsonlAgent::start(&[peers.pid()]);
    let out = peers.run(Duration::from_secs(180));
    assert!(out.contains("done"), "peers: {out}");
    std::thread::sleep(Duration::from_millis(1500));
    let (exit, spans) = agent.finish();
    (out, spans, exit.stderr.join("\n"))
}

/// Every request's task, and the calls the task made, in the request's trace, each under the
/// right parent.
/// What the send of a task is under.
#[derive(PartialEq)]
enum Send {
    /// Our SERVER span of the request that queued it.
    UnderRequest,
    /// The span id of the instrumented app's own send, which it put in the task's headers:
    /// the app's Flask span (not exported here) is its parent, so it has none in our spans.
    Adopted,
}

fn assert_one_trace_per_request(out: &str, spans: &[TestSpan], system: &str, send: Send, report: &str) {
    let task_ids: HashMap<String, usize> = out
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("task ")?.split(' ');
            let n = w.next()?.parse().ok()?;
            Some((w.next()?.to_string(), n))
        })
        .collect();
    assert_eq!(task_ids.len(), TASKS, "{out}");
    let consumers = find(spans, "CONSUMER", |s| task_id(s).is_some_and(|id| task_ids.contains_key(id)));
    assert_eq!(consumers.len(), TASKS, "one CONSUMER span per task\n{report}");
    let mut placed = (0, 0, 0);
    for c in &consumers {
        assert_eq!(c.attr("messaging.system"), Some(system), "{c:?}");
        let n = task_ids[task_id(c).unwrap()];
        // CONSUMER → PRODUCER → SERVER /enqueue/n.
        if let Some(producer) = parent(spans, c) {
            assert_eq!(producer.kind, "PRODUCER", "a task under something else than its send: {c:?} under {producer:?}");
            assert_eq!(task_id(producer), task_id(c), "a task under another task's send: {c:?} under {producer:?}");
            assert_eq!(producer.trace_id, c.trace_id);
            if send == Send::UnderRequest {
                let server = parent(spans, producer).unwrap_or_else(|| panic!("a send without its request: {producer:?}\n{report}"));
                assert_eq!((server.kind.as_str(), number(server, "/enqueue/")), ("SERVER", Some(n)), "a send under another request: {producer:?} under {server:?}");
                assert_eq!(producer.trace_id, server.trace_id);
            }
            placed.0 += 1;
        } else {
            assert!(c.parent_id.is_empty(), "a task under a span that is not there: {c:?}");
        }
        // The child's calls under the CONSUMER: `/work/n` and the query.
        let calls: Vec<&TestSpan> = spans.iter().filter(|s| s.parent_id == c.span_id).collect();
        for call in &calls {
            assert_eq!(call.kind, "CLIENT", "{call:?}");
            assert_eq!(call.trace_id, c.trace_id);
            if let Some(m) = number(call, "/work/") {
                assert_eq!(m, n, "another task's call under this task: {call:?} under {c:?}");
                placed.1 += 1;
            } else if call.attr("db.system.name") == Some("redis") {
                // The worker's parent process keeping the message it took as unacked (kombu's
                // MULTI/EXEC), on its thread that read it: work for that message.
                assert_eq!(call.resource.get("process.pid"), c.resource.get("process.pid"), "a Redis call under a task, from another process: {call:?} under {c:?}");
            } else {
                assert_eq!(call.attr("db.system.name").or(call.attr("db.system")), Some("postgresql"), "{call:?}");
                placed.2 += 1;
            }
        }
    }
    // No `/work/m` call under anything but task m's CONSUMER.
    for call in find(spans, "CLIENT", |s| number(s, "/work/").is_some()) {
        if let Some(p) = parent(spans, call) {
            assert_eq!(p.kind, "CONSUMER", "a task's call under something else than its task: {call:?} under {p:?}");
            let task = task_ids.get(task_id(p).unwrap_or_default());
            assert_eq!(task, number(call, "/work/").as_ref(), "a call under another task: {call:?} under {p:?}");
        }
    }
    eprintln!("{system}: of {TASKS} tasks, {} under their request's send, {} HTTP calls and {} queries under their task\n{report}", placed.0, placed.1, placed.2);
    // psycopg2 opens a transaction first: BEGIN, then the SELECT.
    assert_eq!(placed, (TASKS, TASKS, 2 * TASKS), "{system}: every task under its send, every call under its task\n{report}");
    // The HTTP service's SERVER spans are stitched under the task's calls.
    let stitched = find(spans, "SERVER", |s| number(s, "/work/").is_some() && parent(spans, s).is_some_and(|p| number(p, "/work/") == number(s, "/work/")));
    assert_eq!(stitched.len(), TASKS, "{report}");
    assert!(report.contains(&format!("messages handed to worker processes — {TASKS} named one delivered message, 0 several")), "{report}");
}

#[test]
fn celery_with_redis_is_one_trace_from_the_request_to_the_workers_calls() {
    require_root();
    let (redis, pg) = (db::redis(), db::postgres());
    let (out, spans, report) = run_celery(&format!("redis://127.0.0.1:{}/0", redis.port), pg.port, "");
    assert_one_trace_per_request(&out, &spans, "redis", Send::UnderRequest, &report);
    let send = find(&spans, "PRODUCER", |s| s.attr("messaging.destination.name") == Some("celery"));
    assert_eq!(send.len(), TASKS, "{report}");
    assert_eq!(send[0].name, "lpush celery", "the conventions' `{{messaging.operation.name}} {{destination}}`");
}

#[test]
fn celery_with_rabbitmq_is_one_trace_from_the_request_to_the_workers_calls() {
    require_root();
    let dir = TempDir::new("celery-rabbitmq");
    let (_broker, port) = db::rabbitmq(&dir);
    let pg = db::postgres();
    let (out, spans, report) = run_celery(&format!("amqp://guest:guest@127.0.0.1:{port}//"), pg.port, "");
    assert_one_trace_per_request(&out, &spans, "rabbitmq", Send::UnderRequest, &report);
}

/// The web service instrumented by the OpenTelemetry Python agent (Flask and Celery, spans
/// not exported): its traceparent travels in the task's headers and the CONSUMER span takes
/// it; our PRODUCER span, which saw the same headers leave, adopts the agent's span id, so the
/// task is under it, and the worker's calls under the task.
#[test]
fn celery_with_a_traceparent_in_the_task_headers_takes_it() {
    require_root();
    let (redis, pg) = (db::redis(), db::postgres());
    let instrument = zerotrace_integration_tests::require_program("opentelemetry-instrument", "the OpenTelemetry Python agent (cargo xtask setup)");
    let prefix = format!("OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none {} ", instrument.display());
    let (out, spans, report) = run_celery(&format!("redis://127.0.0.1:{}/0", redis.port), pg.port, &prefix);
    assert_one_trace_per_request(&out, &spans, "redis", Send::Adopted, &report);
    assert!(report.contains(&format!("under their producer by message headers: {TASKS}, by message identity: 0")), "{report}");
}
