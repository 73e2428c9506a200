//! Issue 20, items 4 and 8: a client cannot hide a request the server answered behind bytes
//! the HTTP grammar refuses, and what such a request carries is sanitised before export.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use zerotrace_integration_tests::procs::{JsonlAgent, python_service};
use zerotrace_integration_tests::spans::find;
use zerotrace_integration_tests::{free_port, require_root};

/// Sends `raw` on a new connection and returns what the server answered until it closed (or
/// went quiet for a second).
fn send_raw_bytes(port: u16, raw: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    conn.write_all(raw).unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    answer
}

/// Sends `raw` on a new connection and returns the status the server answered.
fn send_raw(port: u16, raw: &[u8]) -> u16 {
    let answer = send_raw_bytes(port, raw);
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn requests_the_server_answered_have_spans_whatever_their_bytes() {
    require_root();
    let port = free_port();
    let svc = python_service(port, None, "tolerant");
    let agent = JsonlAgent::start(&[svc.pid()]);
    // (what is sent, the url.path expected on the span)
    let cases: &[(&[u8], &str)] = &[
        (b"GET /item/bytes-\xff\xfe HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "/item/bytes-%FF%FE"),
        (b"GET /item/latin-\xe9 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "/item/latin-%E9"),
        (b"GET /item/ctl-\x01\x7f HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "/item/ctl-%01%7F"),
        (b"GET /item/nul-\x00x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "/item/nul-%00x"),
        (b"GET /item/folded HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\nConnection: close\r\n\r\n", "/item/folded"),
        (b"GET /item/space-colon HTTP/1.1\r\nHost : a\r\nConnection: close\r\n\r\n", "/item/space-colon"),
        (b"GET\t/item/tab HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "/item/tab"),
        (b"GET  /item/double-space  HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "/item/double-space"),
        (b"GET /item/two-lengths HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 2\r\nConnection: close\r\n\r\n", "/item/two-lengths"),
        (b"GET /cart;jsessionid=S3CR3T/item HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "/cart;jsessionid=REDACTED/item"),
    ];
    for (raw, path) in cases {
        let status = send_raw(port, raw);
        assert_ne!(status, 0, "{path}: the server answered");
    }
    // A target longer than the capture (1 KiB by default).
    let long_path = format!("/item/{}", "x".repeat(2000));
    let long = format!("GET {long_path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(send_raw(port, long.as_bytes()), 200);
    // Two traceparents: invalid context (W3C), so a new trace.
    let twice = b"GET /item/two-parents HTTP/1.1\r\nHost: a\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\ntraceparent: 00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01\r\nConnection: close\r\n\r\n";
    assert_eq!(send_raw(port, twice), 200);
    // A head too large for the capture, answered 431 by the server (more than 100 headers).
    let mut big = b"GET /item/many-headers HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..120 {
        big.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    big.extend_from_slice(b"Connection: close\r\n\r\n");
    assert_eq!(send_raw(port, &big), 431);
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0), "{:?}", exit.stderr);
    for (_, path) in cases {
        let found = find(&spans, "SERVER", |s| s.attr("url.path") == Some(path));
        assert_eq!(found.len(), 1, "{path}: one SERVER span; got paths {:?}", spans.iter().filter_map(|s| s.attr("url.path")).collect::<Vec<_>>());
        assert!(found[0].attr("http.response.status_code").is_some(), "{path}: answered: {:?}", found[0]);
    }
    let big = find(&spans, "SERVER", |s| s.attr("url.path") == Some("/item/many-headers"));
    assert_eq!(big.len(), 1, "the 431 exchange has its span");
    assert_eq!(big[0].attr("http.response.status_code"), Some("431"));
    assert_eq!(big[0].attr("zerotrace.capture.truncated"), Some("true"));
    assert!(spans.iter().all(|s| !s.attrs.values().any(|v| v.contains("S3CR3T"))), "the session id is not exported");
    let long = find(&spans, "SERVER", |s| s.attr("url.path").is_some_and(|p| p.starts_with("/item/xxxx")));
    assert_eq!(long.len(), 1, "the long target has its span");
    assert!(long_path.starts_with(long[0].attr("url.path").unwrap()), "what was captured of it");
    assert_eq!(long[0].attr("zerotrace.capture.truncated"), Some("true"));
    assert_eq!(long[0].attr("http.response.status_code"), Some("200"));
    let twice = find(&spans, "SERVER", |s| s.attr("url.path") == Some("/item/two-parents"));
    assert_eq!(twice.len(), 1);
    assert_eq!(twice[0].parent_id, "", "two traceparents: no parent");
    assert!(!["0af7651916cd43dd8448eb211c80319c", "1af7651916cd43dd8448eb211c80319c"].contains(&twice[0].trace_id.as_str()), "a new trace");
}

/// A pipeline of requests in one write larger than the capture: the requests in the captured
/// bytes get spans, and the answers to the others are counted; none vanishes silently.
#[test]
fn a_pipeline_past_the_capture_is_counted() {
    require_root();
    const N: usize = 110;
    let port = free_port();
    let nginx = zerotrace_integration_tests::nginx::static_ok(port);
    let metrics = format!("127.0.0.1:{}", free_port());
    let agent = JsonlAgent::start_with(&[nginx.proc.pid()], &["--metrics-listen", &metrics]);
    let mut pipeline = Vec::new();
    for i in 0..N {
        let close = if i + 1 == N { "Connection: close\r\n" } else { "" };
        pipeline.extend_from_slice(format!("GET /piped/{i} HTTP/1.1\r\nHost: a\r\n{close}\r\n").as_bytes());
    }
    assert!(pipeline.len() > 3 * 1024, "well past the default capture (1 KiB)");
    assert_eq!(send_raw(port, &pipeline), 200);
    // The same count, live, in the agent's own metrics (refreshed every second).
    std::thread::sleep(Duration::from_millis(2500));
    let page = std::process::Command::new("curl").args(["-s", &format!("http://{metrics}/metrics")]).output().unwrap();
    let page = String::from_utf8_lossy(&page.stdout).into_owned();
    let live: usize = page
        .lines()
        .find_map(|l| l.strip_prefix("zerotrace_requests_without_span_total{reason=\"request_not_captured\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no such metric: {page}"));
    assert!(page.contains("zerotrace_spans_total "), "{page}");
    // The liveness probe a DaemonSet points at.
    let health = std::process::Command::new("curl").args(["-s", "-w", " %{http_code}", &format!("http://{metrics}/healthz")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&health.stdout), "ok\n 200");
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0), "{:?}", exit.stderr);
    let with_span = find(&spans, "SERVER", |s| s.attr("url.path").is_some_and(|p| p.starts_with("/piped/"))).len();
    let report = exit.stderr.iter().find(|l| l.contains("requests without a span")).expect("report");
    let counted: usize = report.split_once("requests without a span: ").and_then(|(_, r)| r.split(' ').next()?.parse().ok()).expect("the first count");
    assert!(with_span >= 20, "the captured requests have spans: {with_span}");
    assert_eq!(with_span + counted, N, "{with_span} spans + {counted} counted: {report}");
    assert_eq!(live, counted, "the self-metrics say what the report says");
}

/// What is not an exchange of the protocol it looks like makes no span: HTTP sent to
/// PostgreSQL and Redis, a lowercase `get` line (memcached-like) sent to nginx, and a request
/// smuggled behind one that nginx refused and closed on.
#[test]
fn no_false_spans() {
    require_root();
    let redis = zerotrace_integration_tests::db::redis();
    let pg = zerotrace_integration_tests::db::postgres();
    let nginx_port = free_port();
    let nginx = zerotrace_integration_tests::nginx::static_ok(nginx_port);
    let agent = JsonlAgent::start(&[redis.proc.pid(), pg.proc.pid(), nginx.proc.pid()]);
    // A real command, for the server's own span and name (redis-server, whose executable is
    // redis-check-rdb).
    assert!(send_raw_bytes(redis.port, b"*1\r\n$4\r\nPING\r\n").starts_with(b"+PONG"));
    let http = b"GET /not-a-database HTTP/1.1\r\nHost: a\r\n\r\n";
    send_raw(redis.port, http);
    send_raw(pg.port, http);
    assert_ne!(send_raw(nginx_port, b"get /lowercase HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
    let smuggling = b"POST /front HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(send_raw(nginx_port, smuggling), 400);
    assert_eq!(send_raw(nginx_port, b"GET /fine HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"), 200);
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0), "{:?}", exit.stderr);
    let paths: Vec<&str> = spans.iter().filter_map(|s| s.attr("url.path")).collect();
    assert!(!paths.contains(&"/not-a-database"), "HTTP sent to a database is no HTTP exchange: {spans:#?}");
    assert!(!paths.contains(&"/smuggled"), "nginx never read the smuggled request: {spans:#?}");
    assert!(spans.iter().all(|s| s.attr("db.system.name") != Some("memcached")), "nginx is no memcached: {spans:#?}");
    let front = find(&spans, "SERVER", |s| s.attr("url.path") == Some("/front"));
    assert_eq!(front.len(), 1, "the refused request itself was answered: {paths:?}");
    assert_eq!(front[0].attr("http.response.status_code"), Some("400"));
    assert_eq!(find(&spans, "SERVER", |s| s.attr("url.path") == Some("/fine")).len(), 1);
    let ping = find(&spans, "SERVER", |s| s.attr("db.operation.name") == Some("PING"));
    assert_eq!(ping.len(), 1, "{spans:#?}");
    assert_eq!(ping[0].service(), "redis-server", "named by what runs");
    let report = exit.stderr.iter().find(|l| l.contains("requests without a span")).expect("the report counts them");
    assert!(report.contains("1 (sent after the server's Connection: close)"), "{report}");
}
