//! `--overhead-budget` (issue 19): nginx under a steady load costs the agent far more than a
//! 0.5% budget of nginx's CPU, so its worker steps down to head-only capture; every
//! request still gets its span and its RED count, the spans say they were degraded, a header
//! past the head is not captured; ten quiet seconds later the worker captures whole again.
//! (Throughput under the budget is measured by `cargo xtask bench`, never by a timed test.)

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use zerotrace_integration_tests::procs::JsonlAgent;
use zerotrace_integration_tests::spans::find;
use zerotrace_integration_tests::{free_port, nginx, require_root};

fn scrape(port: u16) -> String {
    let out = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}/metrics")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls the metrics page until `done` says so, or panics with the page after `within`.
fn wait_for(metrics: u16, within: Duration, what: &str, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let page = scrape(metrics);
        if done(&page) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}, within {within:?}:\n{page}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `n` GETs on one connection (curl reuses it), each with a header that ends past the head
/// capture and a `traceparent` after it naming `trace`.
fn padded_gets(port: u16, prefix: &str, n: usize, trace: &str) {
    let pad = format!("X-Pad: {}", "p".repeat(400));
    let parent = format!("traceparent: 00-{trace}-00f067aa0ba902b7-01");
    let mut cmd = Command::new("curl");
    cmd.args(["-sf", "-o", "/dev/null", "-H", &pad, "-H", &parent]);
    for i in 0..n {
        cmd.arg(format!("http://127.0.0.1:{port}/{prefix}/{i}"));
    }
    assert!(cmd.status().unwrap().success());
}

#[test]
fn a_process_over_its_budget_captures_heads_only_keeps_every_request_and_steps_back_up() {
    require_root();
    let port = free_port();
    let server = nginx::static_ok(port);
    let metrics = free_port();
    let agent = JsonlAgent::start_with(&[server.proc.pid()], &["--overhead-budget", "0.5", "--prometheus-port", &metrics.to_string()]);

    // Load on one keep-alive connection, for 8 s: the worker's traffic costs the agent far
    // more than 0.5% of the worker's CPU (the tests run the agent's debug build, so the load
    // stays at what it keeps up with: a client in Python, not wrk).
    let client = format!(
        "import http.client, time\nc = http.client.HTTPConnection('127.0.0.1', {port})\nend = time.time() + 8\nwhile time.time() < end:\n    c.request('GET', '/load')\n    c.getresponse().read()\n"
    );
    let mut load = Command::new("python3").args(["-c", &client]).spawn().unwrap();
    wait_for(metrics, Duration::from_secs(30), "the worker never stepped down to head-only capture", |page| page.contains("zerotrace_processes_head_only 1\n"));
    load.wait().unwrap();

    // Head-only: every request is a span and a RED count; the header past the head is lost.
    let (degraded_trace, whole_trace) = ("4bf92f3577b34da6a3ce929d0e0e4736", "5bf92f3577b34da6a3ce929d0e0e4736");
    padded_gets(port, "after", 20, degraded_trace);
    wait_for(metrics, Duration::from_secs(10), "every request counted in head-only mode", |page| {
        page.lines().any(|l| l.starts_with("http_server_request_duration_seconds_count{") && l.contains("url_template=\"/after/{id}\"") && l.ends_with(" 20"))
    });

    // Idle for ten seconds: back to full capture.
    wait_for(metrics, Duration::from_secs(30), "the idle worker never stepped back up", |page| page.contains("zerotrace_processes_head_only 0\n"));
    padded_gets(port, "later", 5, whole_trace);
    std::thread::sleep(Duration::from_millis(1000));
    let page = scrape(metrics);
    let (exit, spans) = agent.finish();
    let report = exit.stderr.join("\n");

    assert!(report.contains("over the budget: capturing heads only (256 bytes a read or write)"), "{report}");
    assert!(report.contains("full capture again"), "{report}");
    assert!(page.contains("zerotrace_overhead_budget_steps_total{reason=\"head_only\"} 1") && page.contains("zerotrace_overhead_budget_steps_total{reason=\"full\"} 1"), "{page}");

    let after = find(&spans, "SERVER", |s| s.attr("url.path").is_some_and(|p| p.starts_with("/after/")));
    assert_eq!(after.len(), 20, "every request keeps its span\n{report}");
    for s in &after {
        assert_eq!(s.attr("zerotrace.capture.head_only"), Some("true"), "{s:?}");
        assert_eq!(s.attr("http.response.status_code"), Some("200"), "{s:?}");
    }
    // After the first request on the connection (captured before its cap changed), the
    // traceparent lies past the 256-byte head: those spans start their own traces.
    let cut = after.iter().filter(|s| s.attr("zerotrace.capture.truncated") == Some("true") && s.trace_id != degraded_trace).count();
    assert!(cut >= 19, "{cut} of 20 heads cut at 256 bytes\n{after:?}");

    let later = find(&spans, "SERVER", |s| s.attr("url.path").is_some_and(|p| p.starts_with("/later/")));
    assert_eq!(later.len(), 5, "{report}");
    for s in &later {
        assert_eq!(s.attr("zerotrace.capture.head_only"), None, "{s:?}");
        assert_eq!(s.trace_id, whole_trace, "whole heads again: the traceparent is read\n{s:?}");
    }
}
