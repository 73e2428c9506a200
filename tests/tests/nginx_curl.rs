//! Scenario (ii): Debian's nginx proxying to a traced backend; scenario (iii): curl as a
//! traced client (forked by a traced shell after the agent attached).

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use zerotrace_integration_tests::procs::{JsonlAgent, curl, python_service};
use zerotrace_integration_tests::spans::{assert_child_of, find};
use zerotrace_integration_tests::{free_port, nginx, require_program, require_root};

#[test]
fn nginx_proxy_links_to_backend() {
    require_root();
    let back_port = free_port();
    let back = python_service(back_port, None, "backend");
    let proxy = nginx::proxy(free_port(), back_port);
    // --pid of the nginx master: its existing worker is traced too.
    let agent = JsonlAgent::start(&[proxy.proc.pid(), back.pid()]);
    for i in 0..10 {
        assert_eq!(curl(&format!("http://127.0.0.1:{}/item/{i}", proxy.port), &[]), 200);
    }
    let (_, spans) = agent.finish();
    let fronts = find(&spans, "SERVER", |s| s.resource.get("process.executable.name").is_some_and(|e| e == "nginx"));
    assert_eq!(fronts.len(), 10, "one nginx SERVER span per request: {spans:#?}");
    for f in fronts {
        assert_eq!(f.attr("server.port"), Some(proxy.port.to_string().as_str()));
        let clients = find(&spans, "CLIENT", |s| s.parent_id == f.span_id);
        assert_eq!(clients.len(), 1, "nginx's upstream call is a child of its SERVER span");
        assert_child_of(clients[0], f);
        assert_eq!(clients[0].attr("url.full").map(|u| u.contains(&format!(":{back_port}/item/"))), Some(true));
        let backs = find(&spans, "SERVER", |s| s.parent_id == clients[0].span_id);
        assert_eq!(backs.len(), 1, "the backend SERVER span is stitched under nginx's CLIENT span");
        assert_eq!(backs[0].service(), "backend");
        assert_eq!(backs[0].attr("url.path"), f.attr("url.path"));
    }
}

#[test]
fn curl_client_forked_after_attach_is_traced() {
    require_root();
    require_program("curl", "apt-get install curl");
    let port = free_port();
    let svc = python_service(port, None, "target");
    // A shell that runs curl for every URL it reads; curl is forked after the agent attached.
    let mut shell = Command::new("sh")
        .args(["-c", "while read url; do curl -s -o /dev/null -A zerotrace-test/1 \"$url\"; echo done; done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let agent = JsonlAgent::start(&[shell.id(), svc.pid()]);
    let mut stdin = shell.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(shell.stdout.take().unwrap());
    for i in 0..3 {
        writeln!(stdin, "http://127.0.0.1:{port}/item/{i}?token=secret").unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    }
    drop(stdin);
    let _ = shell.wait();
    std::thread::sleep(Duration::from_millis(200));
    let (_, spans) = agent.finish();
    let clients = find(&spans, "CLIENT", |s| s.resource.get("process.executable.name").is_some_and(|e| e == "curl"));
    assert_eq!(clients.len(), 3, "{spans:#?}");
    for c in clients {
        let url = c.attr("url.full").unwrap();
        assert!(url.starts_with(&format!("http://127.0.0.1:{port}/item/")), "{url}");
        assert!(!url.contains("secret"), "query-string values never leave by default: {url}");
        assert_eq!(c.attr("user_agent.original"), Some("zerotrace-test/1"));
        assert_eq!(c.attr("http.response.status_code"), Some("200"));
        let servers = find(&spans, "SERVER", |s| s.parent_id == c.span_id);
        assert_eq!(servers.len(), 1, "the traced server's span is the curl CLIENT span's child");
        assert_child_of(servers[0], c);
    }
}
