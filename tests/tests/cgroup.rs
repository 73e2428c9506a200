//! Scenario (vi): a process inside its own cgroup v2 directory (a container, named the way
//! docker names its scopes) traced with --cgroup; processes outside it are not traced.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use zerotrace_integration_tests::procs::{Agent, TempDir, curl, python_service, spawn_until};
use zerotrace_integration_tests::spans::{assert_well_formed, find, from_jsonl};
use zerotrace_integration_tests::{cgroup2_root, free_port, python_app, require_root};

struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

#[test]
fn cgroup_target_traces_only_the_container() {
    require_root();
    let id: String = (0..4).map(|i| format!("{:016x}", (std::process::id() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(i * 7) | 1)).collect();
    let parent = cgroup2_root().join(format!("zerotrace-test-{}", std::process::id()));
    let dir = parent.join(format!("docker-{id}.scope"));
    std::fs::create_dir_all(&dir).expect("creating a cgroup2 directory");
    let cgroup = Cgroup(dir.clone());

    let inside_port = free_port();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("echo $$ > {}/cgroup.procs && exec python3 {} --port {inside_port}", dir.display(), python_app("http_service.py").display()));
    cmd.env("OTEL_SERVICE_NAME", "in-container");
    let inside = spawn_until(cmd, "in-container", "ready", Duration::from_secs(20));
    let outside_port = free_port();
    let outside = python_service(outside_port, None, "on-host");

    let tmp = TempDir::new("cgroup");
    let out = tmp.path().join("spans.jsonl");
    let agent = Agent::start(&["--cgroup".into(), dir.display().to_string(), "--exporter".into(), "jsonl".into(), "--output".into(), out.display().to_string()]);
    for i in 0..3 {
        assert_eq!(curl(&format!("http://127.0.0.1:{inside_port}/item/{i}"), &[]), 200);
        assert_eq!(curl(&format!("http://127.0.0.1:{outside_port}/item/{i}"), &[]), 200);
    }
    agent.stop();
    drop((inside, outside));
    drop(cgroup);
    let spans = from_jsonl(&out);
    assert_well_formed(&spans);
    let servers = find(&spans, "SERVER", |_| true);
    assert_eq!(servers.len(), 3, "only the container's requests: {spans:#?}");
    for s in servers {
        assert_eq!(s.service(), "in-container");
        assert_eq!(s.resource.get("container.id"), Some(&id));
        assert_eq!(s.attr("server.port"), Some(inside_port.to_string().as_str()));
    }
}
