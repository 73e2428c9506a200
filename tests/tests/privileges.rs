//! The least-privilege table in the README, run as an unprivileged user (`nobody`) holding
//! only the capabilities each row names: what works, and the one line that names what is
//! missing.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zerotrace_integration_tests::procs::{TempDir, curl, python_service_args};
use zerotrace_integration_tests::spans::{TestSpan, find, from_jsonl};
use zerotrace_integration_tests::{agent_binary, free_port, require_program, require_root, self_signed_cert};

/// The agent, copied where `nobody` can run it, with an output directory it can write.
struct Unprivileged {
    dir: TempDir,
}

impl Unprivileged {
    fn new() -> Self {
        let dir = TempDir::new("privileges");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::copy(agent_binary(), dir.path().join("zerotrace")).unwrap();
        std::fs::set_permissions(dir.path().join("zerotrace"), std::fs::Permissions::from_mode(0o755)).unwrap();
        Unprivileged { dir }
    }

    /// Runs `zerotrace run ARGS --duration 8 --exporter jsonl` as nobody with `caps`; calls
    /// `traffic` once it traces. Returns (exit code, stderr lines, spans).
    fn run(&self, caps: &str, args: &[String], traffic: impl FnOnce()) -> (Option<i32>, Vec<String>, Vec<TestSpan>) {
        let out = self.dir.path().join(format!("spans-{}.jsonl", caps.len()));
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        cmd.args([format!("--inh-caps={caps}"), format!("--ambient-caps={caps}"), format!("--bounding-set={caps}")]);
        cmd.arg(self.dir.path().join("zerotrace")).arg("run").args(args);
        cmd.args(["--duration", "8", "--exporter", "jsonl", "--output"]).arg(&out);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("setpriv");
        let mut lines = Vec::new();
        let mut traffic = Some(traffic);
        for line in BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok) {
            eprintln!("[agent as nobody, {caps}] {line}");
            if line.contains("zerotrace: tracing")
                && let Some(t) = traffic.take()
            {
                t();
            }
            lines.push(line);
        }
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the agent did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        let spans = if out.exists() { from_jsonl(&out) } else { Vec::new() };
        (status.code(), lines, spans)
    }
}

const CORE: &str = "+bpf,+perfmon";

#[test]
fn each_feature_runs_with_the_capabilities_the_readme_names() {
    require_root();
    require_program("setpriv", "apt-get install util-linux");
    let agent = Unprivileged::new();
    let certs = TempDir::new("privileges-cert");
    let cert = self_signed_cert(certs.path());
    let (http_port, https_port) = (free_port(), free_port());
    let http = python_service_args(http_port, None, "plain", &[]);
    let https = python_service_args(https_port, None, "secure", &["--tls-cert", &cert.display().to_string()]);
    let targets: Vec<String> = ["--pid".to_string(), http.pid().to_string(), "--pid".to_string(), https.pid().to_string()].to_vec();
    let traffic = || {
        for i in 0..5 {
            assert_eq!(curl(&format!("http://127.0.0.1:{http_port}/item/{i}"), &[]), 200);
            assert_eq!(curl(&format!("https://127.0.0.1:{https_port}/item/{i}"), &["-k"]), 200);
        }
    };

    // CAP_BPF + CAP_PERFMON alone: tracefs is root-only; the error names the capability.
    let (code, lines, _) = agent.run(CORE, &targets, || {});
    assert_ne!(code, Some(0));
    let errors: Vec<_> = lines.iter().filter(|l| l.contains("error")).collect();
    assert!(errors.len() == 1 && errors[0].contains("CAP_DAC_READ_SEARCH"), "{lines:?}");

    // The README's row for plain HTTP and databases of any user's processes.
    let (code, lines, spans) = agent.run(&format!("{CORE},+dac_read_search,+sys_ptrace"), &targets, traffic);
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(find(&spans, "SERVER", |s| s.service() == "plain").len(), 5, "plain HTTP traced: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("warning") && l.contains("CAP_SYS_ADMIN") && l.contains("HTTPS")), "the missing capability for HTTPS is named: {lines:?}");

    // With CAP_SYS_ADMIN as well: HTTPS plaintext too.
    let (code, lines, spans) = agent.run(&format!("{CORE},+dac_read_search,+sys_ptrace,+sys_admin"), &targets, traffic);
    assert_eq!(code, Some(0), "{lines:?}");
    let secure = find(&spans, "SERVER", |s| s.service() == "secure");
    assert_eq!(secure.len(), 5, "HTTPS traced: {lines:?}");
    assert!(secure.iter().all(|s| s.attr("url.scheme") == Some("https")));
    assert!(!lines.iter().any(|l| l.contains("warning") && l.contains("CAP_")), "nothing missing: {lines:?}");
}
