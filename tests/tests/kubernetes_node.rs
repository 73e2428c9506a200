//! A Kubernetes node made of real isolated processes (issue 18): each "pod" is a Python HTTP
//! service in its own mount, PID and network namespaces, in a cgroup v2 directory laid out as
//! the kubelet's systemd driver lays it out
//! (`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`),
//! with a service-account namespace file inside its mount namespace and `HOSTNAME` set to its
//! pod's name. No Kubernetes API anywhere: the agent reads it all on the node. Requests are made
//! inside each pod's network namespace.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use zerotrace_integration_tests::procs::{JsonlAgent, Proc, spawn_until};
use zerotrace_integration_tests::spans::find;
use zerotrace_integration_tests::{agent_binary, cgroup2_root, free_port, python_app, require_root};

struct Pod {
    proc: Proc,
    /// The container's cgroup directory and its pod's, removed once the pod is gone.
    dirs: [PathBuf; 2],
    port: u16,
    uid: String,
    container: String,
    name: String,
}

impl Drop for Pod {
    fn drop(&mut self) {
        // SAFETY: signals the process group spawn_until made; the pod's processes are in it.
        unsafe { libc::kill(-(self.proc.pid() as i32), libc::SIGKILL) };
        for dir in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// 16 hex digits from a seed (deterministic per test run and pod).
fn hex16(seed: u64) -> String {
    format!("{:016x}", seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
}

/// Starts a pod of `namespace` named `name`, serving on `port` inside its network namespace.
fn pod(node: &Path, namespace: &str, name: &str, seed: u64) -> Pod {
    let h = |i: u64| hex16(seed * 31 + i + u64::from(std::process::id()));
    let uid = format!("{}-{}-{}-{}-{}", &h(1)[..8], &h(2)[..4], &h(3)[..4], &h(4)[..4], &h(5)[..12]);
    let container: String = (6..10).map(h).collect();
    let pod_dir = node.join(format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_")));
    let dir = pod_dir.join(format!("cri-containerd-{container}.scope"));
    std::fs::create_dir_all(&dir).expect("creating the pod's cgroup2 directories");
    let port = free_port();
    // Into the container's cgroup, then new namespaces; inside them: loopback up, a tmpfs over
    // /run (the host's /run untouched) holding the service-account namespace file, and the
    // service with the pod's name as HOSTNAME.
    let inside = format!(
        "ip link set lo up && mount -t tmpfs tmpfs /run && mkdir -p /run/secrets/kubernetes.io/serviceaccount && echo {namespace} > /run/secrets/kubernetes.io/serviceaccount/namespace && HOSTNAME={name} exec python3 {} --port {port}",
        python_app("http_service.py").display()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("echo $$ > {}/cgroup.procs && exec unshare --mount --pid --net --fork --kill-child sh -c '{inside}'", dir.display()));
    let proc = spawn_until(cmd, name, "ready", Duration::from_secs(30));
    Pod { proc, dirs: [dir, pod_dir], port, uid, container, name: name.to_string() }
}

/// GETs `/item/<i>` for i in 0..n from inside the pod's network namespace.
fn get_inside(pod: &Pod, n: usize) {
    for i in 0..n {
        let status = Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", pod.proc.pid()))
            .args(["curl", "-sf", "-o", "/dev/null", &format!("http://127.0.0.1:{}/item/{i}", pod.port)])
            .status()
            .unwrap();
        assert!(status.success(), "GET inside {}", pod.name);
    }
}

#[test]
fn pods_get_their_kubernetes_identity_and_selectors_pick_them_before_and_after_the_agent() {
    require_root();
    let node = cgroup2_root().join("kubepods.slice").join("kubepods-burstable.slice");
    let web = pod(&node, "shop", "web-7d9f8b6c4-x2x9k", 1);

    // The survey: by pod name, only the web pod's service.
    let out = Command::new(agent_binary()).args(["run", "--list", "--k8s-pod", "web-*", "--k8s-namespace", "shop"]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    let yes: Vec<&str> = listing.lines().filter(|l| l.contains(" yes ")).collect();
    assert!(!yes.is_empty() && yes.iter().all(|l| l.contains("--k8s-pod web-*")), "{listing}");

    let agent = JsonlAgent::start_with(&[], &["--container", "--exclude-k8s-namespace", "kube-system"]);
    let cart = pod(&node, "shop", "cart-5c6d7e8f9-abcde", 2);
    let dns = pod(&node, "kube-system", "coredns-6f9c8d7b5-zzzzz", 3);
    std::thread::sleep(Duration::from_millis(500));
    for p in [&web, &cart, &dns] {
        get_inside(p, 3);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let (exit, spans) = agent.finish();
    let report = exit.stderr.join("\n");

    for p in [&web, &cart] {
        let served = find(&spans, "SERVER", |s| s.resource.get("k8s.pod.name") == Some(&p.name));
        assert_eq!(served.len(), 3, "{}: one span per request, started {} the agent\n{report}", p.name, if p.name.starts_with("web") { "before" } else { "after" });
        for s in &served {
            let r = &s.resource;
            assert_eq!(r.get("k8s.namespace.name").map(String::as_str), Some("shop"), "{s:?}");
            assert_eq!(r.get("k8s.pod.uid"), Some(&p.uid), "{s:?}");
            assert_eq!(r.get("container.id"), Some(&p.container), "{s:?}");
            // No OTEL_SERVICE_NAME in the pod: the program names the service, marked as a guess
            // (the collector config renames it from the pod's app.kubernetes.io/name label).
            assert_eq!(r.get("service.name").map(String::as_str), Some("python3"), "{s:?}");
            assert_eq!(r.get("zerotrace.service.name.inferred").map(String::as_str), Some("true"), "{s:?}");
            assert_eq!(s.attr("url.path").map(|p| p.starts_with("/item/")), Some(true));
        }
    }
    let excluded = find(&spans, "SERVER", |s| s.resource.get("k8s.namespace.name").map(String::as_str) == Some("kube-system"));
    assert!(excluded.is_empty(), "kube-system is excluded: {excluded:?}\n{report}");
    assert!(find(&spans, "CLIENT", |s| s.attr("url.full").is_some_and(|u| u.contains("/item/"))).is_empty(), "the host's curl is in no container: untraced");
    drop((web, cart, dns));
    let _ = std::fs::remove_dir(&node);
    let _ = std::fs::remove_dir(node.parent().unwrap());
}
