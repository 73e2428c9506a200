//! Fleet mode (issue 18): `zerotrace run` with selectors and no `--pid`. The test services run
//! from a copy of the Python interpreter under a name only they have, so `--exe` tells them
//! from every other process of the machine: one started before the agent, one after (found
//! when it runs exec), and a plain `python3` service that must stay untraced.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use zerotrace_integration_tests::procs::{JsonlAgent, Proc, TempDir, run_agent_to_exit, spawn_until};
use zerotrace_integration_tests::spans::find;
use zerotrace_integration_tests::{agent_binary, free_port, python_app, require_root};

/// `zerotrace run ARGS… --list`: its exit code and what it printed.
fn list(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(agent_binary()).arg("run").args(args).arg("--list").output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A copy of the Python interpreter named `name` in `dir`, and its home (the copy finds its
/// standard library there).
fn python_copy(dir: &Path, name: &str) -> (PathBuf, String) {
    let out = Command::new("python3").args(["-c", "import sys; print(sys.executable); print(sys.prefix)"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let (exe, home) = (lines.next().unwrap().to_string(), lines.next().unwrap().to_string());
    let copy = dir.join(name);
    std::fs::copy(std::fs::canonicalize(&exe).unwrap(), &copy).unwrap();
    (copy, home)
}

fn service(python: &Path, home: &str, port: u16) -> Proc {
    let mut cmd = Command::new(python);
    cmd.arg(python_app("http_service.py")).args(["--port", &port.to_string()]).env("PYTHONHOME", home).env("OTEL_SERVICE_NAME", format!("svc-{port}"));
    spawn_until(cmd, "http service", "ready", Duration::from_secs(30))
}

fn get(port: u16, path: &str) {
    let out = Command::new("curl").args(["-sf", "-o", "/dev/null", &format!("http://127.0.0.1:{port}{path}")]).status().unwrap();
    assert!(out.success(), "GET {path} on {port}");
}

#[test]
fn fleet_mode_traces_what_the_selectors_match_started_before_or_after_it() {
    require_root();
    let dir = TempDir::new("fleet");
    let name = format!("fleetpy-{}", std::process::id());
    let (python, home) = python_copy(dir.path(), &name);
    let (before, after, other) = (free_port(), free_port(), free_port());
    let _before = service(&python, &home, before);
    let _other = service(Path::new("python3"), &home, other);

    // --list: the survey names the matching service, and only it among these.
    let (code, listing) = list(&["--exe", &name]);
    assert_eq!(code, Some(0), "{listing}");
    let yes: Vec<&str> = listing.lines().filter(|l| l.contains(" yes ")).collect();
    assert_eq!(yes.len(), 1, "{listing}");
    assert!(yes[0].contains(&format!("--exe {name}")) && yes[0].contains(&name), "{listing}");
    assert!(listing.contains("zerotrace itself") || listing.contains("no --exe matches"), "{listing}");

    let agent = JsonlAgent::start_with(&[], &["--exe", &name]);
    let _after = service(&python, &home, after);
    for port in [before, after, other] {
        for i in 0..3 {
            get(port, &format!("/item/{i}"));
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    let (exit, spans) = agent.finish();
    let report = exit.stderr.join("\n");
    let served = |port: u16| find(&spans, "SERVER", |s| s.attr("server.port") == Some(port.to_string().as_str())).len();
    assert_eq!(served(before), 3, "the service running when the agent started\n{report}");
    assert_eq!(served(after), 3, "the service started after the agent, from its first request\n{report}");
    assert_eq!(served(other), 0, "a process no selector matches\n{report}");
    assert!(find(&spans, "CLIENT", |s| s.attr("url.full").is_some_and(|u| u.contains("/item/"))).is_empty(), "curl is not traced\n{report}");
    assert!(report.contains("fleet mode: 1 of"), "{report}");
    assert!(report.contains(&format!("({name}): --exe {name}")), "the exec'd service, traced with its reason\n{report}");
}

#[test]
fn selectors_with_a_pid_or_a_bad_pattern_are_refused_with_what_to_do() {
    require_root();
    let (code, err) = run_agent_to_exit(&["run", "--pid", "1", "--exe", "nginx"], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("fleet mode, without --pid or --cgroup"), "{err}");
    let (code, err) = run_agent_to_exit(&["run", "--exe", "[", "--list"], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is not a valid pattern"), "{err}");
    let port = free_port();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (code, listing) = list(&["--port", &port.to_string()]);
    assert_eq!(code, Some(0), "{listing}");
    let me = format!("{:>8}  yes", std::process::id());
    assert!(listing.lines().any(|l| l.starts_with(&me) && l.contains(&format!("--port {port}"))), "this test process listens on {port}:\n{listing}");

    // The same selector and survey from a config file; a flag on the command line wins over it.
    let dir = TempDir::new("fleet-config");
    let config = dir.path().join("zerotrace.yaml");
    std::fs::write(&config, format!("port: [{port}]\nlist: true\nexclude-exe: ['no-such-program-*']\n")).unwrap();
    let config = config.to_str().unwrap();
    let out = Command::new(agent_binary()).args(["run", "--config", config]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{listing}");
    assert!(listing.lines().any(|l| l.starts_with(&me) && l.contains(&format!("--port {port}"))), "the file's --port selects this test process:\n{listing}");
    let other = free_port();
    let out = Command::new(agent_binary()).args(["run", "--config", config, "--port", &other.to_string()]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(!listing.lines().any(|l| l.starts_with(&me) && l.contains(" yes ")), "--port {other} on the command line replaces the file's:\n{listing}");
    drop(listener);

    std::fs::write(dir.path().join("bad.yaml"), "exe: [nginx]\ncapture_bytes: 64\n").unwrap();
    let (code, err) = run_agent_to_exit(&["run", "--config", dir.path().join("bad.yaml").to_str().unwrap()], &[]);
    assert_eq!(code, Some(1));
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert!(errors.len() == 1 && errors[0].contains("unknown key `capture_bytes`"), "{err}");
}

/// `--port`: a server started after the agent listens only after its exec; it is looked at
/// again 1 s after the exec, and traced from then on.
#[test]
fn fleet_mode_by_port_finds_a_server_that_listens_after_its_exec() {
    require_root();
    let dir = TempDir::new("fleet-port");
    let (python, home) = python_copy(dir.path(), &format!("portpy-{}", std::process::id()));
    let port = free_port();
    let agent = JsonlAgent::start_with(&[], &["--port", &port.to_string()]);
    let server = service(&python, &home, port);
    let found = format!("tracing pid {}", server.pid());
    assert!(agent.agent.wait_for_line(&found, Duration::from_secs(10)), "the server was not found by its port");
    for i in 0..3 {
        get(port, &format!("/item/{i}"));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let (exit, spans) = agent.finish();
    let report = exit.stderr.join("\n");
    let served = find(&spans, "SERVER", |s| s.attr("server.port") == Some(port.to_string().as_str()));
    assert_eq!(served.len(), 3, "{report}");
    assert!(served.iter().all(|s| s.resource.get("process.pid") == Some(&server.pid().to_string())), "{served:?}");
    assert!(report.contains(&format!("tracing pid {}", server.pid())) && report.contains(&format!("--port {port}")), "{report}");
}

/// The value of an unlabelled sample on a metrics page.
fn sample(page: &str, metric: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(&format!("{metric} "))).and_then(|v| v.trim().parse().ok())
}

fn scrape(addr: &str, path: &str) -> String {
    let out = Command::new("curl").args(["-s", &format!("http://{addr}{path}")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Bad input for fleet mode: selectors that match nothing yet (a warning, then the agent waits
/// and traces the service when it starts), and a storm of short-lived processes (3000 execs,
/// none matching, each reported by the kernel and checked): no stall, no leak.
#[test]
fn fleet_mode_waits_for_a_match_and_takes_an_exec_storm_without_leak_or_stall() {
    require_root();
    let dir = TempDir::new("fleet-storm");
    let name = format!("stormpy-{}", std::process::id());
    let (python, home) = python_copy(dir.path(), &name);
    let metrics = format!("127.0.0.1:{}", free_port());
    let agent = JsonlAgent::start_with(&[], &["--exe", &name, "--metrics-listen", &metrics]);
    assert!(agent.agent.wait_for_line("no running process matches the selectors; waiting", Duration::from_secs(10)), "a warning when nothing matches");
    std::thread::sleep(Duration::from_millis(1500));
    let before = sample(&scrape(&metrics, "/metrics"), "process_resident_memory_bytes").expect("the agent's RSS");

    let storm = Command::new("sh").args(["-c", "i=0; while [ $i -lt 3000 ]; do /bin/true; i=$((i+1)); done"]).status().unwrap();
    assert!(storm.success());
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(scrape(&metrics, "/healthz"), "ok\n", "the agent kept reading its events");
    let page = scrape(&metrics, "/metrics");
    let after = sample(&page, "process_resident_memory_bytes").expect("the agent's RSS");
    assert!(after - before < 16.0 * 1024.0 * 1024.0, "3000 execs grew the agent from {before} to {after} bytes");
    assert_eq!(sample(&page, "zerotrace_processes_traced"), Some(0.0), "none of them matched:\n{page}");

    let port = free_port();
    let server = service(&python, &home, port);
    for i in 0..3 {
        get(port, &format!("/item/{i}"));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let page = scrape(&metrics, "/metrics");
    let (exit, spans) = agent.finish();
    let report = exit.stderr.join("\n");
    assert_eq!(sample(&page, "zerotrace_processes_traced"), Some(1.0), "{page}");
    let served = find(&spans, "SERVER", |s| s.attr("server.port") == Some(port.to_string().as_str()));
    assert_eq!(served.len(), 3, "the service started after the storm, traced from its first request\n{report}");
    assert!(served.iter().all(|s| s.resource.get("process.pid") == Some(&server.pid().to_string())));
}
