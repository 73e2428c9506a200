//! HTTP/2: Debian's nginx over h2c (prior knowledge) and h2 (TLS), curl as the traced client,
//! over TLS multiplexing many streams on one connection. Every stream is one span on each side, and
//! each nginx SERVER span is the child of the curl CLIENT span of the same stream.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use zerotrace_integration_tests::procs::{Gated, JsonlAgent, TempDir};
use zerotrace_integration_tests::spans::{TestSpan, assert_child_of, find};
use zerotrace_integration_tests::{free_port, nginx, require_program, require_root, self_signed_cert};

const STREAMS: usize = 16;

fn curl_many(base: &str, flags: &str) -> String {
    let urls: Vec<String> = (0..STREAMS).map(|i| format!("{base}/item/{i}?token=secret")).collect();
    // -Z: in parallel, which over HTTP/2 means streams multiplexed on one connection.
    format!("curl -s -k -Z --parallel-max {STREAMS} {flags} -o /dev/null {}", urls.iter().map(|u| format!("'{u}'")).collect::<Vec<_>>().join(" -o /dev/null "))
}

fn path_of(s: &TestSpan) -> String {
    let url = s.attr("url.full").or(s.attr("url.path")).unwrap_or("");
    let path = url.split("://").nth(1).map_or(url, |rest| rest.find('/').map_or("", |i| &rest[i..]));
    path.to_string()
}

fn check(spans: &[TestSpan], port: u16, scheme: &str) {
    let on_port = |s: &&TestSpan| s.attr("server.port") == Some(port.to_string().as_str());
    let servers: Vec<&TestSpan> = find(spans, "SERVER", |s| s.resource.get("process.executable.name").is_some_and(|e| e == "nginx")).into_iter().filter(on_port).collect();
    let clients: Vec<&TestSpan> = find(spans, "CLIENT", |s| s.resource.get("process.executable.name").is_some_and(|e| e == "curl")).into_iter().filter(on_port).collect();
    assert_eq!(servers.len(), STREAMS, "one nginx SERVER span per stream on {scheme}: {spans:#?}");
    assert_eq!(clients.len(), STREAMS, "one curl CLIENT span per stream on {scheme}: {spans:#?}");
    for s in &servers {
        assert_eq!(s.attr("network.protocol.version"), Some("2"));
        assert_eq!(s.attr("http.request.method"), Some("GET"));
        assert_eq!(s.attr("http.response.status_code"), Some("200"));
        assert_eq!(s.attr("url.scheme"), Some(scheme));
        assert!(s.attr("url.path").is_some_and(|p| p.starts_with("/item/") && !p.contains("secret")), "{s:?}");
        // Stitched by stream: the parent is the CLIENT span of the same path, never another.
        let parent = clients.iter().find(|c| c.span_id == s.parent_id).unwrap_or_else(|| panic!("nginx span without its curl parent: {s:?}"));
        assert_eq!(path_of(parent), path_of(s), "wrong parent: a span of another stream");
        assert_child_of(s, parent);
    }
    for c in &clients {
        assert!(c.attr("url.full").is_some_and(|u| u.starts_with(&format!("{scheme}://127.0.0.1:{port}/item/"))), "{c:?}");
        assert_eq!(c.attr("http.response.status_code"), Some("200"));
    }
}

#[test]
fn nginx_and_curl_over_h2c_and_h2_one_span_per_stream_with_the_right_parent() {
    require_root();
    require_program("curl", "apt-get install curl");
    let dir = TempDir::new("h2");
    let cert = self_signed_cert(dir.path());
    let (port, tls_port) = (free_port(), free_port());
    let server = nginx::http2_static(port, tls_port, &cert);
    // h2c: one connection per request (curl 7.88 fails reusing a prior-knowledge connection);
    // h2 over TLS: all streams multiplexed on one connection.
    let h2c = format!("for i in $(seq 0 {}); do curl -s --http2-prior-knowledge -o /dev/null \"http://127.0.0.1:{port}/item/$i?token=secret\" || exit 1; done", STREAMS - 1);
    let script = format!("{h2c} && {}", curl_many(&format!("https://127.0.0.1:{tls_port}"), "--http2"));
    let clients = Gated::new(&script);
    let agent = JsonlAgent::start(&[server.proc.pid(), clients.pid()]);
    clients.run(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let (exit, spans) = agent.finish();
    assert!(exit.stderr.iter().any(|l| l.contains("http2:")), "the exit report names the protocol: {:?}", exit.stderr);
    check(&spans, port, "http");
    check(&spans, tls_port, "https");
}
