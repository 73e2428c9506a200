//! Scenario (i): a threaded Python service calls a second local service with `requests`;
//! every request must give one trace SERVER(front) → CLIENT → SERVER(back).
//! Scenario (iv): a request carrying a traceparent joins that trace.
//! Plus keep-alive, split bodies, error status and adopting an instrumented app's context.

#![allow(clippy::unwrap_used)]

use zerotrace_integration_tests::procs::{JsonlAgent, curl, python_service, python_service_args};
use zerotrace_integration_tests::spans::{assert_child_of, find};
use zerotrace_integration_tests::{free_port, require_program, require_root};

const REQUESTS: usize = 30;

#[test]
fn python_front_back_forms_one_trace_per_request() {
    require_root();
    require_program("curl", "apt-get install curl");
    let (front_port, back_port) = (free_port(), free_port());
    let back = python_service(back_port, None, "back");
    let front = python_service(front_port, Some(back_port), "front");
    let agent = JsonlAgent::start(&[front.pid(), back.pid()]);
    for i in 0..REQUESTS {
        assert_eq!(curl(&format!("http://127.0.0.1:{front_port}/work/{i}"), &[]), 200);
    }
    assert_eq!(curl(&format!("http://127.0.0.1:{front_port}/fail"), &[]), 500);
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0), "agent exit: {:?}", exit.stderr);

    let front_servers = find(&spans, "SERVER", |s| s.service() == "front" && s.attr("url.path").is_some_and(|p| p.starts_with("/work/")));
    assert_eq!(front_servers.len(), REQUESTS, "one front SERVER span per request");
    for fs in front_servers {
        let path = fs.attr("url.path").unwrap();
        let id = path.rsplit('/').next().unwrap();
        // The path's template names the span (no framework route is known).
        assert_eq!((fs.name.as_str(), fs.attr("url.template")), ("GET /work/{id}", Some("/work/{id}")));
        assert_eq!(fs.attr("http.request.method"), Some("GET"));
        assert_eq!(fs.attr("http.response.status_code"), Some("200"));
        assert_eq!(fs.attr("url.scheme"), Some("http"));
        assert_eq!(fs.attr("server.port"), Some(front_port.to_string().as_str()));
        assert_eq!(fs.attr("network.protocol.version"), Some("1.1"));
        assert!(fs.attr("user_agent.original").is_some_and(|u| u.starts_with("curl/")));
        assert!(!fs.error);
        let clients = find(&spans, "CLIENT", |s| s.parent_id == fs.span_id);
        assert_eq!(clients.len(), 1, "front {path}: exactly one CLIENT child, got {clients:?}");
        let client = clients[0];
        assert_child_of(client, fs);
        assert_eq!(client.service(), "front");
        assert_eq!(client.attr("url.full").map(String::from), Some(format!("http://127.0.0.1:{back_port}/item/{id}")));
        assert_eq!(client.attr("server.port"), Some(back_port.to_string().as_str()));
        assert_eq!(client.name, "GET /item/{id}");
        let backs = find(&spans, "SERVER", |s| s.parent_id == client.span_id);
        assert_eq!(backs.len(), 1, "front {path}: the back SERVER span must be the CLIENT's child");
        assert_child_of(backs[0], client);
        assert_eq!(backs[0].service(), "back");
        assert_eq!(backs[0].attr("url.path").map(String::from), Some(format!("/item/{id}")));
    }
    let fail = find(&spans, "SERVER", |s| s.attr("url.path") == Some("/fail"));
    assert_eq!(fail.len(), 1);
    assert!(fail[0].error, "5xx SERVER spans are errors");
    assert_eq!(fail[0].name, "GET /fail");
    assert_eq!(fail[0].attr("error.type"), Some("500"));
}

#[test]
fn incoming_traceparent_is_honoured_and_propagated_by_stitching() {
    require_root();
    let (front_port, back_port) = (free_port(), free_port());
    let back = python_service(back_port, None, "back");
    let front = python_service(front_port, Some(back_port), "front");
    let agent = JsonlAgent::start(&[front.pid(), back.pid()]);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let tp = format!("traceparent: 00-{trace}-{parent}-01");
    assert_eq!(curl(&format!("http://127.0.0.1:{front_port}/work/tp"), &["-H", &tp, "-H", "tracestate: vendor=abc"]), 200);
    let (_, spans) = agent.finish();
    let front_server = find(&spans, "SERVER", |s| s.service() == "front");
    assert_eq!(front_server.len(), 1);
    assert_eq!(front_server[0].trace_id, trace);
    assert_eq!(front_server[0].parent_id, parent);
    assert_eq!(front_server[0].trace_state, "vendor=abc");
    assert!(spans.iter().all(|s| s.trace_id == trace), "every span joins the caller's trace: {spans:?}");
    assert_eq!(spans.len(), 3);
}

#[test]
fn keepalive_connection_gives_one_span_per_request() {
    require_root();
    let port = free_port();
    let svc = python_service(port, None, "single");
    let agent = JsonlAgent::start(&[svc.pid()]);
    // curl reuses one connection for several URLs; the POST has a body split from its head.
    let base = format!("http://127.0.0.1:{port}");
    let status = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null"])
        .args([format!("{base}/item/1"), format!("{base}/item/2"), format!("{base}/nope")])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(curl(&format!("{base}/echo"), &["-X", "POST", "--data-binary", &"x".repeat(20000)]), 200);
    let (_, spans) = agent.finish();
    let paths: Vec<_> =
        find(&spans, "SERVER", |_| true).iter().map(|s| (s.attr("url.path").unwrap_or("").to_string(), s.attr("http.response.status_code").unwrap_or("").to_string())).collect();
    for want in [("/item/1", "200"), ("/item/2", "200"), ("/nope", "404"), ("/echo", "200")] {
        assert!(paths.contains(&(want.0.to_string(), want.1.to_string())), "missing {want:?} in {paths:?}");
    }
    assert_eq!(paths.len(), 4, "{paths:?}");
    let nope = find(&spans, "SERVER", |s| s.attr("url.path") == Some("/nope"));
    assert!(!nope[0].error, "4xx is not an error on SERVER spans");
}

#[test]
fn instrumented_app_traceparent_is_adopted_without_duplicates() {
    require_root();
    let (front_port, back_port) = (free_port(), free_port());
    let back = python_service(back_port, None, "back");
    // The front sends its own traceparent downstream, as an app with a language agent would.
    let own_trace = "11112222333344445555666677778888";
    let own_span = "aaaabbbbccccdddd";
    let own = format!("00-{own_trace}-{own_span}-01");
    let front = python_service_args(front_port, Some(back_port), "front", &["--own-traceparent", &own]);
    let agent = JsonlAgent::start(&[front.pid(), back.pid()]);
    assert_eq!(curl(&format!("http://127.0.0.1:{front_port}/work/1"), &[]), 200);
    let (_, spans) = agent.finish();
    let clients = find(&spans, "CLIENT", |_| true);
    assert_eq!(clients.len(), 1, "one CLIENT span, no duplicate: {spans:#?}");
    assert_eq!(clients[0].trace_id, own_trace, "the CLIENT span adopts the app's trace");
    assert_eq!(clients[0].span_id, own_span, "and the app's span id");
    let back_server = find(&spans, "SERVER", |s| s.service() == "back");
    assert_eq!(back_server.len(), 1);
    assert_eq!(back_server[0].trace_id, own_trace);
    assert_eq!(back_server[0].parent_id, own_span);
    // The front SERVER span had no context from curl: it joins the app's trace, so the
    // request stays one tree.
    let front_server = find(&spans, "SERVER", |s| s.service() == "front");
    assert_eq!(front_server.len(), 1);
    assert_eq!(front_server[0].trace_id, own_trace);
    assert_eq!(clients[0].parent_id, front_server[0].span_id);
}

/// `--hooks-only` (the benchmark's floor) attaches everything but captures nothing; the same
/// service traced normally right after gives its spans, so the empty result is the flag's.
#[test]
fn hooks_only_attaches_but_captures_nothing() {
    require_root();
    require_program("curl", "apt-get install curl");
    let port = free_port();
    let svc = python_service(port, None, "hooks");
    let url = format!("http://127.0.0.1:{port}/item/1");

    let agent = JsonlAgent::start_with(&[svc.pid()], &["--hooks-only"]);
    for _ in 0..3 {
        assert_eq!(curl(&url, &[]), 200);
    }
    let (exit, spans) = agent.finish();
    assert!(spans.is_empty(), "--hooks-only makes no spans: {spans:#?}");
    let stderr = exit.stderr.join("\n");
    assert!(stderr.contains("--hooks-only: hooks attached, nothing captured"), "{stderr}");
    assert!(stderr.contains("zerotrace: 0 events, 0 bytes of records, 0 spans"), "{stderr}");

    let agent = JsonlAgent::start(&[svc.pid()]);
    for _ in 0..3 {
        assert_eq!(curl(&url, &[]), 200);
    }
    let (_, spans) = agent.finish();
    assert_eq!(find(&spans, "SERVER", |_| true).len(), 3, "{spans:#?}");
}

/// A thread-per-request server starts a thread per request; threads share their process's
/// fds and probes, so they must cost no records (before, each sent a process record and an
/// inherit record per socket, and the agent read /proc for each).
#[test]
fn new_threads_cost_no_records() {
    require_root();
    require_program("curl", "apt-get install curl");
    const N: usize = 20;
    let port = free_port();
    let svc = python_service(port, None, "threads");
    let agent = JsonlAgent::start(&[svc.pid()]);
    for i in 0..N {
        assert_eq!(curl(&format!("http://127.0.0.1:{port}/item/{i}"), &[]), 200);
    }
    let (exit, spans) = agent.finish();
    assert_eq!(find(&spans, "SERVER", |_| true).len(), N, "{spans:#?}");
    let stderr = exit.stderr.join("\n");
    let events: usize = stderr
        .split("zerotrace: ")
        .find_map(|s| s.split_once(" events,").and_then(|(n, _)| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no event count in the agent's report: {stderr}"));
    // Per request: the accepted connection, the request, the answer (head and body may be
    // two writes) and the close.
    assert!(events <= 5 * N, "{events} records for {N} requests: threads are being reported ({stderr})");
}
