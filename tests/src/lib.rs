//! Integration-test harness: start real servers and clients, run the real agent on them, and
//! collect what it exports (jsonl file or an OTLP receiver built from opentelemetry-proto).
//!
//! Tests need root (eBPF). Without it they fail with the reason; they never pretend.
#![allow(clippy::unwrap_used)]

pub mod db;
pub mod fidelity;
pub mod nginx;
pub mod procs;
pub mod receiver;
pub mod reference;
pub mod semconv;
pub mod spans;

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The agent binary under test: $ZEROTRACE_BIN, else target/{release,debug}/zerotrace.
pub fn agent_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ZEROTRACE_BIN") {
        return PathBuf::from(p);
    }
    for profile in ["debug", "release"] {
        let p = repo_root().join("target").join(profile).join("zerotrace");
        if p.exists() {
            return p;
        }
    }
    panic!("the zerotrace binary is not built: run `cargo xtask test` (it builds the probes and the agent first)");
}

/// Fails the test with the reason when not root: the agent must load eBPF programs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "integration tests load eBPF programs and must run as root (sudo cargo xtask test)");
}

/// Fails with the reason when a program the test drives is missing.
pub fn require_program(name: &str, install_hint: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/sbin"]) {
        let p = PathBuf::from(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed; run `cargo xtask setup` ({install_hint})");
}

/// A free TCP port on loopback.
/// A port free for a test server to bind. Taken below the kernel's ephemeral range
/// (32768–60999 by default), never from it: a port the kernel handed out and took back could
/// be given to any client connection of a test running alongside before our server binds it
/// ("Address already in use"). Ports are spread by process and never repeat within one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7_919);
    loop {
        let port = (FIRST + start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn python_app(name: &str) -> PathBuf {
    repo_root().join("tests/apps").join(name)
}

/// A self-signed certificate and key in one PEM file, made with the openssl CLI.
pub fn self_signed_cert(dir: &std::path::Path) -> PathBuf {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl CLI is needed to make a test certificate (cargo xtask setup installs it)");
    assert!(status.success(), "openssl req failed");
    let both = dir.join("tls.pem");
    let mut pem = std::fs::read(&key).unwrap();
    pem.extend(std::fs::read(&cert).unwrap());
    std::fs::write(&both, pem).unwrap();
    both
}

/// The cgroup2 mount (hybrid hosts have it at /sys/fs/cgroup/unified).
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("reading /proc/mounts");
    let root = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    });
    root.expect("no cgroup2 mount on this host: the cgroup scenarios need cgroup v2 (mount -t cgroup2 none /sys/fs/cgroup/unified)")
}
