//! `--overhead-budget` (issue 19): nginx under a steady load costs the agent far more than a
//! 0.5% budget of nginx's CPU, so its worker steps down to head-only capture, and, still over,
//! to capturing one connection in N. Sampled, a span stands for N requests in the RED
//! metrics and says so, and the other connections make no span, and no wrong one. Quiet, the
//! worker steps up: heads on every connection (the skipped ones too, each request under its
//! own trace), where every request gets its span and its RED count, the spans say they were
//! degraded and a header past the head is not captured; ten quiet seconds later it captures
//! whole again. (Throughput under the budget is measured by `cargo xtask bench`, never by a
//! timed test.)

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
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

/// `n` GETs on one connection, paced, each with a header that ends past the head capture and
/// a `traceparent` after it naming `trace`.
fn padded_gets(port: u16, prefix: &str, n: usize, trace: &str) {
    let pad = format!("X-Pad: {}\r\n", "p".repeat(400));
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for i in 0..n {
        get(&mut c, &format!("/{prefix}/{i}"), &pad, trace);
        std::thread::sleep(PACE);
    }
}

/// A GET on a kept-open connection, with `headers` (whole lines) and then a `traceparent`
/// naming `trace`; waits for nginx's whole answer.
fn get(stream: &mut TcpStream, path: &str, headers: &str, trace: &str) {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\n{headers}traceparent: 00-{trace}-00f067aa0ba902b7-01\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "nginx closed the connection: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).and_then(|v| v.trim().parse().ok()).expect("a length");
            if body.len() >= length {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                return;
            }
        }
    }
}

/// Between the test's own requests: few enough a second for the worker to count as idle.
const PACE: Duration = Duration::from_millis(10);

/// The trace of connection `i`'s requests.
fn trace_of(i: usize) -> String {
    format!("7{i:031x}")
}

/// The RED count of a url template on the metrics page, if it has one.
fn red_count(page: &str, template: &str) -> Option<u64> {
    let series = format!("url_template=\"{template}\"");
    page.lines().find(|l| l.starts_with("http_server_request_duration_seconds_count{") && l.contains(&series)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
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
    wait_for(metrics, Duration::from_secs(30), "the worker, still over the budget, never stepped down to sampling", |page| page.contains("zerotrace_processes_sampled 1\n"));
    // Quiet from now on, so that the share stays as it is until the worker steps up, ten
    // seconds later at the earliest.
    let _ = load.kill();
    load.wait().unwrap();

    // Sampled: 128 new connections (at least two shares of the fewest, one in 64), one
    // request each, each under its own trace; they stay open. Paced, the worker stays under
    // the CPU time that counts as busy (its cost to the debug agent would be over any
    // budget), so the share stays as it is.
    let mut conns = Vec::new();
    for i in 0..128 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        get(&mut c, &format!("/sampled/{i}"), "", &trace_of(i));
        conns.push(c);
        std::thread::sleep(PACE);
    }

    // Quiet: heads on every connection again, the skipped ones included. Ten quiet seconds
    // later it will capture whole: what follows must take less.
    wait_for(metrics, Duration::from_secs(30), "the idle worker never stepped up from sampling", |page| page.contains("zerotrace_processes_sampled 0\n"));
    assert!(scrape(metrics).contains("zerotrace_processes_head_only 1\n"), "from sampling to heads only on every connection, not further");

    // Head-only: every request is a span and a RED count; the header past the head is lost.
    let (degraded_trace, whole_trace) = ("4bf92f3577b34da6a3ce929d0e0e4736", "5bf92f3577b34da6a3ce929d0e0e4736");
    padded_gets(port, "after", 20, degraded_trace);
    for (i, c) in conns.iter_mut().enumerate() {
        get(c, &format!("/again/{i}"), "", &trace_of(i));
        std::thread::sleep(PACE);
    }
    drop(conns);
    wait_for(metrics, Duration::from_secs(10), "every request counted in head-only mode", |page| {
        red_count(page, "/after/{id}") == Some(20) && red_count(page, "/again/{id}") == Some(128)
    });

    // Idle for ten seconds: back to full capture.
    wait_for(metrics, Duration::from_secs(30), "the idle worker never stepped back up", |page| page.contains("zerotrace_processes_head_only 0\n"));
    padded_gets(port, "later", 5, whole_trace);
    std::thread::sleep(Duration::from_millis(1000));
    let page = scrape(metrics);
    let (exit, spans) = agent.finish();
    let report = exit.stderr.join("\n");

    assert!(report.contains("over the budget: capturing heads only (256 bytes a read or write)"), "{report}");
    assert!(report.contains("over the budget with heads only: capturing 1 connection in "), "{report}");
    assert!(report.contains("heads on every connection would cost under half the budget: capturing them all again"), "{report}");
    assert!(report.contains("full capture again"), "{report}");
    for (reason, steps) in [("head_only", 2), ("sampled", 1), ("full", 1)] {
        assert!(page.contains(&format!("zerotrace_overhead_budget_steps_total{{reason=\"{reason}\"}} {steps}\n")), "{steps} step(s) to {reason}\n{page}");
    }

    // Sampled: some connections kept, each span under its own request's trace and counting
    // for its share in the RED metrics; no span from the others.
    let sampled = find(&spans, "SERVER", |s| s.attr("url.path").is_some_and(|p| p.starts_with("/sampled/")));
    let one_in: Vec<u64> = sampled.iter().map(|s| s.attr("zerotrace.capture.one_in").and_then(|n| n.parse().ok()).unwrap_or(1)).collect();
    assert!(!sampled.is_empty() && sampled.len() <= 128 / 2, "{} of 128 connections kept\n{report}", sampled.len());
    assert!(one_in.iter().all(|&n| (2..=64).contains(&n) && n.is_power_of_two()), "{one_in:?}");
    for s in &sampled {
        let i: usize = s.attr("url.path").and_then(|p| p.rsplit('/').next()?.parse().ok()).unwrap();
        assert_eq!(s.trace_id, trace_of(i), "the request's own trace\n{s:?}");
        assert_eq!(s.attr("zerotrace.capture.head_only"), Some("true"), "{s:?}");
    }
    // Connection ids count up, one kept in every N in a row: 128 connections keep 128 / N.
    let (fewest, most) = (one_in.iter().max().unwrap(), one_in.iter().min().unwrap());
    assert!((128 / fewest..=128 / most).contains(&(sampled.len() as u64)), "one in {most} to {fewest} of 128 connections: {}\n{report}", sampled.len());
    assert_eq!(red_count(&page, "/sampled/{id}"), Some(one_in.iter().sum()), "each span counts for its share\n{page}");

    // Stepped up: every connection's next request, skipped or not, is a span in its own trace.
    let again = find(&spans, "SERVER", |s| s.attr("url.path").is_some_and(|p| p.starts_with("/again/")));
    assert_eq!(again.len(), 128, "every connection captured again\n{report}");
    for s in &again {
        let i: usize = s.attr("url.path").and_then(|p| p.rsplit('/').next()?.parse().ok()).unwrap();
        assert_eq!(s.trace_id, trace_of(i), "the request's own trace\n{s:?}");
        assert_eq!((s.attr("zerotrace.capture.head_only"), s.attr("zerotrace.capture.one_in")), (Some("true"), None), "{s:?}");
    }

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
