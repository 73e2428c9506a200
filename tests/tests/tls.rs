//! HTTPS without keys: plaintext read at the OpenSSL boundary (libssl.so.3) gives the same
//! spans as plain HTTP, with url.scheme=https, and the same linking. libssl used for
//! something else than HTTP gives no spans.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use zerotrace_integration_tests::procs::{JsonlAgent, TempDir, python_service_args, spawn_until};
use zerotrace_integration_tests::spans::{assert_child_of, assert_https_call_per_request, find};
use zerotrace_integration_tests::{free_port, nginx, python_app, require_program, require_root, self_signed_cert};

#[test]
fn python_requests_over_https_forms_one_trace() {
    python_requests_over_https(&[]);
}

/// Probes scoped to the traced processes give the same trace.
#[test]
fn python_requests_over_https_with_process_scoped_probes() {
    python_requests_over_https(&["--tls-scope", "process"]);
}

fn python_requests_over_https(agent_flags: &[&str]) {
    require_root();
    let dir = TempDir::new("tls-py");
    let cert = self_signed_cert(dir.path());
    let (front_port, back_port) = (free_port(), free_port());
    let cert_arg = cert.display().to_string();
    let back = python_service_args(back_port, None, "secure-back", &["--tls-cert", &cert_arg]);
    let downstream = format!("https://127.0.0.1:{back_port}");
    let front = python_service_args(front_port, None, "front", &["--downstream", &downstream]);
    let agent = JsonlAgent::start_with(&[front.pid(), back.pid()], agent_flags);
    for i in 0..5 {
        assert_eq!(zerotrace_integration_tests::procs::curl(&format!("http://127.0.0.1:{front_port}/work/{i}"), &[]), 200);
    }
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0));
    assert!(exit.stderr.iter().any(|l| l.contains("TLS probes on")), "{:?}", exit.stderr);
    let fronts = find(&spans, "SERVER", |s| s.service() == "front");
    assert!(fronts.iter().all(|f| f.attr("url.scheme") == Some("http")), "{fronts:#?}");
    assert_https_call_per_request(&spans, &fronts, back_port);
    let backs = find(&spans, "SERVER", |s| s.attr("url.scheme") == Some("https"));
    assert!(backs.len() == 5 && backs.iter().all(|b| b.service() == "secure-back"), "{spans:#?}");
    assert_eq!(spans.len(), 15, "no span from ciphertext: {spans:#?}");
}

#[test]
fn nginx_https_with_curl_client() {
    require_root();
    require_program("curl", "apt-get install curl");
    let dir = TempDir::new("tls-nginx");
    let cert = self_signed_cert(dir.path());
    let server = nginx::https_static(free_port(), &cert);
    let mut shell =
        Command::new("sh").args(["-c", "while read url; do curl -sk -o /dev/null \"$url\"; echo done; done"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let agent = JsonlAgent::start(&[shell.id(), server.proc.pid()]);
    let mut stdin = shell.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(shell.stdout.take().unwrap());
    for i in 0..3 {
        writeln!(stdin, "https://127.0.0.1:{}/secret/{i}", server.port).unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
    }
    drop(stdin);
    let _ = shell.wait();
    std::thread::sleep(Duration::from_millis(200));
    let (_, spans) = agent.finish();
    let servers = find(&spans, "SERVER", |_| true);
    assert_eq!(servers.len(), 3, "{spans:#?}");
    let clients = find(&spans, "CLIENT", |_| true);
    assert_eq!(clients.len(), 3, "{spans:#?}");
    for c in clients {
        assert_eq!(c.resource.get("process.executable.name").map(String::as_str), Some("curl"));
        assert!(c.attr("url.full").unwrap().starts_with(&format!("https://127.0.0.1:{}/secret/", server.port)));
        let s = find(&spans, "SERVER", |s| s.parent_id == c.span_id);
        let summary: Vec<_> = spans
            .iter()
            .map(|s| {
                (s.kind.clone(), s.span_id.clone(), s.parent_id.clone(), s.trace_id.clone(), s.attr("url.path").or(s.attr("url.full")).unwrap_or("").to_string(), s.start, s.end)
            })
            .collect();
        assert_eq!(s.len(), 1, "nginx's HTTPS SERVER span is the curl CLIENT span's child: {summary:#?}");
        assert_eq!(s[0].attr("url.scheme"), Some("https"));
        assert_eq!(s[0].attr("http.response.status_code"), Some("200"));
        assert_child_of(s[0], c);
    }
}

#[test]
fn libssl_for_something_else_gives_no_spans() {
    require_root();
    let dir = TempDir::new("tls-echo");
    let cert = self_signed_cert(dir.path());
    let port = free_port();
    let mut serve = Command::new("python3");
    serve.arg(python_app("tls_echo.py")).args(["serve", "--port", &port.to_string(), "--cert"]).arg(&cert);
    let server = spawn_until(serve, "tls-echo", "ready", Duration::from_secs(20));
    let agent = JsonlAgent::start(&[server.pid()]);
    let out = Command::new("python3").arg(python_app("tls_echo.py")).args(["send", "--port", &port.to_string(), "--count", "20"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent"), "{out:?}");
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0));
    assert!(spans.is_empty(), "{spans:#?}");
}

/// Switches kernel.bpf_stats_enabled on for its lifetime (it counts program runs), restoring
/// the previous value.
struct BpfStats(String);

impl BpfStats {
    fn enable() -> BpfStats {
        const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";
        let before = std::fs::read_to_string(PATH).unwrap_or_else(|e| panic!("reading {PATH}: {e}"));
        std::fs::write(PATH, "1").unwrap_or_else(|e| panic!("enabling {PATH}: {e}"));
        BpfStats(before.trim().to_string())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

/// Runs of the TLS programs the agent reports at exit, while an untraced client and server
/// talk TLS through the same libssl and the agent traces an idle process.
fn tls_program_runs_in_untraced_processes(agent_flags: &[&str]) -> u64 {
    let dir = TempDir::new("tls-scope");
    let cert = self_signed_cert(dir.path());
    let port = free_port();
    let mut serve = Command::new("python3");
    serve.arg(python_app("tls_echo.py")).args(["serve", "--port", &port.to_string(), "--cert"]).arg(&cert);
    let _server = spawn_until(serve, "tls-echo", "ready", Duration::from_secs(20));
    // The traced process maps libssl too: it gets probes, and must not see the others' calls.
    let mut idle = Command::new("python3");
    idle.args(["-c", "import ssl, time; print('ready', flush=True); time.sleep(600)"]);
    let idle = spawn_until(idle, "idle-ssl", "ready", Duration::from_secs(20));
    let agent = JsonlAgent::start_with(&[idle.pid()], agent_flags);
    let out = Command::new("python3").arg(python_app("tls_echo.py")).args(["send", "--port", &port.to_string(), "--count", "20"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent"), "{out:?}");
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0));
    assert!(spans.is_empty(), "{spans:#?}");
    let costs = exit.stderr.iter().find(|l| l.contains("probe cost")).cloned().unwrap_or_default();
    // "ssl_ret 40 runs avg 300 ns; sys_enter_read ..."
    costs
        .split(';')
        .filter_map(|part| {
            let mut words = part.split_whitespace().skip_while(|w| !w.starts_with("ssl_"));
            let (_, runs) = (words.next()?, words.next()?);
            runs.parse::<u64>().ok()
        })
        .sum()
}

/// `--tls-scope process` keeps the breakpoints out of untraced processes: their SSL calls do
/// not even run the programs. The default file scope does run them (and filters), which is
/// what makes the first half of this test able to fail.
#[test]
fn process_scope_leaves_untraced_processes_alone() {
    require_root();
    let _stats = BpfStats::enable();
    let file_scope = tls_program_runs_in_untraced_processes(&[]);
    assert!(file_scope > 0, "file scope: the untraced client and server trap on the probes");
    let process_scope = tls_program_runs_in_untraced_processes(&["--tls-scope", "process"]);
    assert_eq!(process_scope, 0, "process scope: no TLS program ran for untraced processes");
}

/// A Node service started with `tests/apps/node_tls.js`.
fn node_service(port: u16, extra: &[&str]) -> zerotrace_integration_tests::procs::Proc {
    require_program("node", "cargo xtask setup installs nodejs");
    let mut cmd = Command::new("node");
    cmd.arg(python_app("node_tls.js")).args(["--port", &port.to_string()]).args(extra);
    spawn_until(cmd, "node_tls.js", "ready", Duration::from_secs(20))
}

/// node links OpenSSL statically and encrypts into memory BIOs: no syscall happens inside its
/// SSL calls. The probes tie each SSL to its socket from the read just before SSL_read and the
/// write just after SSL_write, and the trace is the same as over libssl.
#[test]
fn node_https_server_and_client_form_one_trace() {
    require_root();
    let dir = TempDir::new("tls-node");
    let cert = self_signed_cert(dir.path());
    let cert_arg = cert.display().to_string();
    let (front_port, back_port) = (free_port(), free_port());
    let back = node_service(back_port, &["--cert", &cert_arg]);
    let downstream = format!("https://127.0.0.1:{back_port}");
    let front = node_service(front_port, &["--downstream", &downstream]);
    let agent = JsonlAgent::start(&[front.pid(), back.pid()]);
    for i in 0..5 {
        assert_eq!(zerotrace_integration_tests::procs::curl(&format!("http://127.0.0.1:{front_port}/work/{i}"), &[]), 200);
    }
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0));
    assert!(exit.stderr.iter().any(|l| l.contains("TLS probes on") && l.contains("node")), "{:?}", exit.stderr);
    let fronts = find(&spans, "SERVER", |s| s.attr("url.scheme") == Some("http"));
    assert_https_call_per_request(&spans, &fronts, back_port);
    assert_eq!(spans.len(), 15, "no span from ciphertext: {spans:#?}");
}
