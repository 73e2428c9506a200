//! Child processes: the services under test and the agent itself. Everything is killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::agent_binary;

/// A running process that is killed (with its process group) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on a pid we own; errors (already exited) are irrelevant here.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signal the process group we created with process_group(0).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` in its own process group and waits until `ready` appears on its stdout.
pub fn spawn_until(mut cmd: Command, name: &str, ready: &str, timeout: Duration) -> Proc {
    use std::os::unix::process::CommandExt;
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null()).process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(&ready) {
                let _ = tx.send(());
            }
        }
    });
    let proc = Proc { child, name: name.to_string() };
    rx.recv_timeout(timeout).unwrap_or_else(|_| panic!("{name} did not become ready within {timeout:?}"));
    proc
}

/// Spawns `cmd` in its own process group; its output goes to the test's stderr.
pub fn spawn(mut cmd: Command, name: &str) -> Proc {
    use std::os::unix::process::CommandExt;
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).stdin(Stdio::null()).process_group(0);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Proc { child, name: name.to_string() }
}

/// A shell that waits for a line on stdin, then runs `script`: the agent attaches to the
/// shell first, so the short-lived clients it forks (psql, redis-cli) are traced from birth.
pub struct Gated {
    pub proc: Proc,
}

impl Gated {
    pub fn new(script: &str) -> Gated {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("bash");
        cmd.args(["-c", &format!("read go; {script}")]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).process_group(0);
        let child = cmd.spawn().expect("starting bash");
        Gated { proc: Proc { child, name: "gated script".into() } }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Lets the script run and waits for it; returns its stdout. Panics if it fails.
    pub fn run(mut self, timeout: Duration) -> String {
        use std::io::{Read, Write};
        let mut stdin = self.proc.child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        drop(stdin);
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.proc.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "the script did not finish within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        self.proc.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert!(status.success(), "the script failed ({status}); stdout: {out}");
        out
    }
}

/// Waits until something accepts connections on the port.
pub fn wait_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
}

/// The Python test service (tests/apps/http_service.py).
pub fn python_service(port: u16, downstream: Option<u16>, service_name: &str) -> Proc {
    python_service_args(port, downstream, service_name, &[])
}

/// The Python test service with extra arguments.
pub fn python_service_args(port: u16, downstream: Option<u16>, service_name: &str, extra: &[&str]) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.arg(crate::python_app("http_service.py")).arg("--port").arg(port.to_string()).args(extra);
    if let Some(d) = downstream {
        cmd.arg("--downstream").arg(format!("http://127.0.0.1:{d}"));
    }
    cmd.env("OTEL_SERVICE_NAME", service_name);
    spawn_until(cmd, service_name, "ready", Duration::from_secs(20))
}

/// The agent under test.
pub struct Agent {
    proc: Option<Proc>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub struct AgentExit {
    pub code: Option<i32>,
    pub stderr: Vec<String>,
}

impl Agent {
    /// Waits until the agent has printed a line containing `text`; false after `timeout`.
    pub fn wait_for_line(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr.lock().unwrap().iter().any(|l| l.contains(text)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Starts `zerotrace run ARGS…` and waits until it says it is tracing.
    pub fn start(args: &[String]) -> Agent {
        Self::start_env(args, &[])
    }

    pub fn start_env(args: &[String], env: &[(&str, &str)]) -> Agent {
        Self::start_command("run", args, env)
    }

    /// Starts `zerotrace SUBCOMMAND ARGS…` (its stdout goes to the test's) and waits until it
    /// says it is tracing.
    pub fn start_command(subcommand: &str, args: &[String], env: &[(&str, &str)]) -> Agent {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(agent_binary());
        let stdout = if subcommand == "run" { Stdio::null() } else { Stdio::inherit() };
        cmd.arg(subcommand).args(args).stdout(stdout).stderr(Stdio::piped()).process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("starting zerotrace");
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("zerotrace: tracing") {
                    let _ = tx.send(true);
                }
                eprintln!("[agent] {line}");
                sink.lock().unwrap().push(line);
            }
            let _ = tx.send(false);
        });
        let proc = Proc { child, name: "zerotrace".into() };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(true) => {}
            _ => panic!("zerotrace did not start tracing: {:?}", lines.lock().unwrap()),
        }
        Agent { proc: Some(proc), stderr: lines }
    }

    pub fn signal(&self, sig: i32) {
        self.proc.as_ref().unwrap().signal(sig);
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().unwrap().pid()
    }

    /// SIGINT (flush) and wait for the exit.
    pub fn stop(self) -> AgentExit {
        self.proc.as_ref().unwrap().signal(libc::SIGINT);
        self.wait(Duration::from_secs(30))
    }

    /// Waits for the agent to exit on its own (all traced processes gone, or --duration).
    pub fn wait(mut self, timeout: Duration) -> AgentExit {
        let mut proc = self.proc.take().unwrap();
        let deadline = Instant::now() + timeout;
        let code = loop {
            if let Some(status) = proc.child.try_wait().unwrap() {
                break status.code();
            }
            assert!(Instant::now() < deadline, "zerotrace did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(100));
        AgentExit { code, stderr: self.stderr.lock().unwrap().clone() }
    }
}

/// The agent tracing `pids` into a jsonl file in a fresh temporary directory.
pub struct JsonlAgent {
    pub agent: Agent,
    pub out: PathBuf,
    _dir: TempDir,
}

impl JsonlAgent {
    pub fn start(pids: &[u32]) -> JsonlAgent {
        Self::start_with(pids, &[])
    }

    /// `start` with more `zerotrace run` flags.
    pub fn start_with(pids: &[u32], extra: &[&str]) -> JsonlAgent {
        let dir = TempDir::new("jsonl");
        let out = dir.path().join("spans.jsonl");
        let mut args: Vec<String> = pids.iter().flat_map(|p| ["--pid".to_string(), p.to_string()]).collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend(["--exporter".into(), "jsonl".into(), "--output".into(), out.display().to_string()]);
        JsonlAgent { agent: Agent::start(&args), out, _dir: dir }
    }

    /// Stops the agent (flush) and returns its exit and the spans it wrote.
    pub fn finish(self) -> (AgentExit, Vec<crate::spans::TestSpan>) {
        let exit = self.agent.stop();
        let spans = crate::spans::from_jsonl(&self.out);
        crate::spans::assert_well_formed(&spans);
        (exit, spans)
    }
}

/// Runs the agent to completion (for argument/error tests) and returns exit code and stderr.
pub fn run_agent_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(agent_binary());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running zerotrace");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("zerotrace-test-{tag}-{}-{}", std::process::id(), crate::free_port()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An HTTP GET with curl (a real client), returning the status code.
pub fn curl(url: &str, extra: &[&str]) -> u16 {
    let out = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"]).args(extra).arg(url).output().expect("running curl");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}
