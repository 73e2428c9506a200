//! Issue 20: no request a server answered goes without its span, and no span gets a parent
//! from a connection it did not come from.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use zerotrace_integration_tests::procs::{JsonlAgent, Proc, python_service};
use zerotrace_integration_tests::spans::{assert_child_of, find};
use zerotrace_integration_tests::{free_port, python_app, require_root};

/// tests/apps/bound_client.py: sends each request from the local port it is told.
struct BoundClient {
    proc: Proc,
    answers: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl BoundClient {
    fn start() -> BoundClient {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("python3");
        cmd.arg(python_app("bound_client.py")).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).process_group(0);
        let mut child = cmd.spawn().expect("starting bound_client.py");
        let mut answers = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(answers.next().unwrap().unwrap(), "ready");
        BoundClient { proc: Proc { child, name: "bound client".into() }, answers }
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// GET `path` from 127.0.0.1:`local_port`; returns the status.
    fn get(&mut self, local_port: u16, server_port: u16, path: &str) -> String {
        let stdin = self.proc.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{local_port} {server_port} {path}").unwrap();
        stdin.flush().unwrap();
        let line = self.answers.next().expect("bound client answered").unwrap();
        line.split(' ').next().unwrap().to_string()
    }
}

/// A traced client and an untraced one take turns on the same local port towards a traced
/// service. The traced client's requests are stitched to its CLIENT spans; the untraced
/// client's get their SERVER span, as roots: never the traced client's children, and never
/// held back waiting for a caller that is not coming.
#[test]
fn a_reused_client_port_neither_loses_nor_misparents_spans() {
    require_root();
    const ROUNDS: usize = 20;
    let back_port = free_port();
    let back = python_service(back_port, None, "back");
    let mut traced = BoundClient::start();
    let mut untraced = BoundClient::start();
    let agent = JsonlAgent::start(&[back.pid(), traced.pid()]);
    let local_port = free_port();
    for i in 0..ROUNDS {
        assert_eq!(traced.get(local_port, back_port, &format!("/item/traced-{i}")), "200");
        assert_eq!(untraced.get(local_port, back_port, &format!("/item/untraced-{i}")), "200");
    }
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0), "{:?}", exit.stderr);
    for i in 0..ROUNDS {
        let path = format!("/item/traced-{i}");
        let calls = find(&spans, "CLIENT", |s| s.attr("url.full").is_some_and(|u| u.ends_with(&path)));
        assert_eq!(calls.len(), 1, "{path}: one CLIENT span from the traced client");
        let served = find(&spans, "SERVER", |s| s.attr("url.path") == Some(path.as_str()));
        assert_eq!(served.len(), 1, "{path}: one SERVER span");
        assert_child_of(served[0], calls[0]);

        let path = format!("/item/untraced-{i}");
        let served = find(&spans, "SERVER", |s| s.attr("url.path") == Some(path.as_str()));
        assert_eq!(served.len(), 1, "{path}: the untraced client's request has its SERVER span");
        assert_eq!(served[0].parent_id, "", "{path}: no parent (the traced client did not send it): {:?}", served[0]);
    }
    let report = exit.stderr.iter().find(|l| l.contains("same-host callees")).expect("the exit report counts stitching");
    assert!(report.contains(&format!("{ROUNDS} stitched")), "{report}");
}

/// A collector that accepts connections and never answers.
struct SilentCollector {
    port: u16,
    _held: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl SilentCollector {
    fn start() -> SilentCollector {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                keep.lock().unwrap().push(conn);
            }
        });
        SilentCollector { port, _held: held }
    }
}

fn agent_exporting_to_silent_collector(protocol: &str, extra: &[&str]) -> (zerotrace_integration_tests::procs::Agent, Proc, u16, SilentCollector) {
    let collector = SilentCollector::start();
    let port = free_port();
    let svc = python_service(port, None, "patient");
    let mut args: Vec<String> =
        ["--pid", &svc.pid().to_string(), "--exporter", "otlp", "--otlp-protocol", protocol, "--otlp-endpoint", &format!("http://127.0.0.1:{}", collector.port)]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let agent = zerotrace_integration_tests::procs::Agent::start(&args);
    for i in 0..50 {
        assert_eq!(zerotrace_integration_tests::procs::curl(&format!("http://127.0.0.1:{port}/item/{i}"), &[]), 200);
    }
    // Past the first batch's send: the exporter is now waiting on the collector.
    std::thread::sleep(std::time::Duration::from_secs(1));
    (agent, svc, port, collector)
}

/// SIGINT with a collector that never answers: the agent ends within its shutdown deadline,
/// counts what it could not send, and prints its report (gRPC and HTTP).
#[test]
fn shutdown_ends_within_its_deadline_when_the_collector_never_answers() {
    require_root();
    for protocol in ["grpc", "http/protobuf"] {
        let (agent, _svc, _port, _collector) = agent_exporting_to_silent_collector(protocol, &["--shutdown-timeout", "2"]);
        let asked = std::time::Instant::now();
        agent.signal(libc::SIGINT);
        let exit = agent.wait(std::time::Duration::from_secs(15));
        let took = asked.elapsed();
        assert_eq!(exit.code, Some(0), "{protocol}: {:?}", exit.stderr);
        // The deadline, then the kernel detaching the hooks (~40 ms each, one at a time).
        assert!(took < std::time::Duration::from_secs(2 + 4), "{protocol}: shutdown took {took:?} with a 2 s deadline");
        assert!(exit.stderr.iter().any(|l| l.contains("shutdown deadline") && l.contains("dropped")), "{protocol}: the deadline is reported: {:?}", exit.stderr);
        let report = exit.stderr.iter().find(|l| l.contains("spans dropped:")).unwrap_or_else(|| panic!("{protocol}: no exit report: {:?}", exit.stderr));
        assert!(!report.contains(" 0 (shutdown deadline)"), "{protocol}: the spans still queued are counted: {report}");
    }
}

/// A second signal stops the agent at once, report included, however long the deadline.
#[test]
fn a_second_signal_stops_at_once() {
    require_root();
    let (agent, _svc, _port, _collector) = agent_exporting_to_silent_collector("http/protobuf", &["--shutdown-timeout", "600"]);
    agent.signal(libc::SIGTERM);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let asked = std::time::Instant::now();
    agent.signal(libc::SIGTERM);
    let exit = agent.wait(std::time::Duration::from_secs(15));
    // No export wait; only the kernel detaching the hooks (~40 ms each, one at a time).
    assert!(asked.elapsed() < std::time::Duration::from_secs(4), "stopped {:?} after the second signal", asked.elapsed());
    assert_eq!(exit.code, Some(0), "{:?}", exit.stderr);
    assert!(exit.stderr.iter().any(|l| l.contains("second signal")), "{:?}", exit.stderr);
    assert!(exit.stderr.iter().any(|l| l.contains("spans dropped:")), "the report is printed: {:?}", exit.stderr);
}

/// --duration ends the run on time even when the collector never answers.
#[test]
fn duration_is_kept_with_a_silent_collector() {
    require_root();
    let (agent, _svc, _port, _collector) = agent_exporting_to_silent_collector("grpc", &["--duration", "4", "--shutdown-timeout", "2"]);
    // The run started before the requests were sent.
    let since_requests = std::time::Instant::now();
    let exit = agent.wait(std::time::Duration::from_secs(30));
    assert_eq!(exit.code, Some(0), "{:?}", exit.stderr);
    let took = since_requests.elapsed();
    assert!(took < std::time::Duration::from_secs(4 + 2 + 2), "--duration 4 with a 2 s deadline: still running {took:?} after the requests");
}

/// Started from a traced shell, the agent is one of its descendants: it must still never
/// trace itself, nor its own export connections.
#[test]
fn the_agent_never_traces_itself() {
    require_root();
    let receiver = zerotrace_integration_tests::receiver::Receiver::http();
    let port = free_port();
    let _svc = python_service(port, None, "untraced");
    let script = format!(
        "(sleep 3; for i in $(seq 20); do curl -s -o /dev/null http://127.0.0.1:{port}/item/$i; sleep 0.1; done) & \
         {agent} run --pid $$ --exporter otlp --otlp-protocol http/protobuf --otlp-endpoint http://{addr} --duration 8; wait",
        agent = zerotrace_integration_tests::agent_binary().display(),
        addr = receiver.addr,
    );
    let out = Command::new("bash").args(["-c", &script]).output().expect("running the traced shell");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let spans = receiver.received.spans();
    let curls = find(&spans, "CLIENT", |s| s.attr("url.full").is_some_and(|u| u.contains("/item/")));
    assert_eq!(curls.len(), 20, "the shell's curls are traced: {stderr}");
    let own = spans
        .iter()
        .filter(|s| s.resource.get("process.executable.name").is_some_and(|e| e.starts_with("zerotrace")) || s.attr("url.full").is_some_and(|u| u.contains("/v1/traces")))
        .count();
    assert_eq!(own, 0, "spans of the agent itself: {spans:#?}");
}

/// A server killed while it serves a request: the request's span ends when the process died,
/// as an error that says so (and the agent, with nothing left to trace, still emits it).
#[test]
fn a_request_cut_off_by_a_killed_server_is_an_error_span() {
    require_root();
    let port = free_port();
    let svc = python_service(port, None, "doomed");
    let agent = JsonlAgent::start(&[svc.pid()]);
    let client = std::thread::spawn(move || zerotrace_integration_tests::procs::curl(&format!("http://127.0.0.1:{port}/slow/30"), &[]));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    svc.signal(libc::SIGKILL);
    assert_eq!(client.join().unwrap(), 0, "the client got no answer");
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0), "{:?}", exit.stderr);
    let cut = find(&spans, "SERVER", |s| s.attr("url.path") == Some("/slow/30"));
    assert_eq!(cut.len(), 1, "{spans:#?}");
    assert!(cut[0].error, "{:?}", cut[0]);
    assert_eq!(cut[0].attr("error.type"), Some("process_exited"));
    let lasted = cut[0].end - cut[0].start;
    assert!(lasted >= 1_000_000_000, "it lasted until the kill ({lasted} ns), not 0 ms");
}

/// Hundreds of short-lived traced clients (curl from a traced shell, 100 at a time): each
/// exits right after its answer, often before the agent has read that answer from the ring.
/// Every exchange must still pair: no CLIENT span without its answer.
#[test]
fn short_lived_clients_keep_their_answers() {
    require_root();
    zerotrace_integration_tests::require_program("xargs", "apt-get install findutils");
    const N: usize = 500;
    let port = free_port();
    let _svc = zerotrace_integration_tests::nginx::static_ok(port);
    let shell = zerotrace_integration_tests::procs::Gated::new(&format!(
        "seq {N} | xargs -P 100 -I{{}} curl -s -o /dev/null -w '%{{http_code}}\\n' http://127.0.0.1:{port}/burst/{{}} | sort | uniq -c"
    ));
    let agent = JsonlAgent::start(&[shell.pid()]);
    let out = shell.run(std::time::Duration::from_secs(120));
    assert!(out.contains(&format!("{N} 200")), "{out}");
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0), "{:?}", exit.stderr);
    let calls = find(&spans, "CLIENT", |s| s.attr("url.full").is_some_and(|u| u.contains("/burst/")));
    assert_eq!(calls.len(), N, "{:?}", exit.stderr);
    let broken: Vec<_> = calls.iter().filter(|s| s.error || s.attr("http.response.status_code") != Some("200")).collect();
    assert!(broken.is_empty(), "{} answered requests marked as unanswered: {broken:?}", broken.len());
}
