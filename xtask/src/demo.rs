//! `cargo xtask demo`: build, start two small Python services (front calls back), trace them
//! and print the traces as trees.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::build;
use crate::util::root;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn service(port: u16, downstream: Option<u16>, name: &str) -> Result<Kill> {
    let mut cmd = Command::new("python3");
    cmd.arg(root().join("tests/apps/http_service.py")).arg("--port").arg(port.to_string()).env("OTEL_SERVICE_NAME", name).stdout(Stdio::piped());
    if let Some(d) = downstream {
        cmd.arg("--downstream").arg(format!("http://127.0.0.1:{d}"));
    }
    let mut child = cmd.spawn().context("starting python3 (run `cargo xtask setup`)")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if !line.starts_with("ready") {
        bail!("demo service {name} did not start");
    }
    Ok(Kill(child))
}

pub fn run() -> Result<()> {
    build::ebpf()?;
    build::agent(true)?;
    let (front_port, back_port) = (free_port()?, free_port()?);
    let back = service(back_port, None, "inventory")?;
    let front = service(front_port, Some(back_port), "storefront")?;
    println!("demo: storefront on :{front_port} calls inventory on :{back_port}; tracing both for 6 s\n");
    let mut agent = Command::new(root().join("target/release/zerotrace"))
        .args(["run", "--pid", &front.0.id().to_string(), "--pid", &back.0.id().to_string(), "--duration", "6"])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting zerotrace")?;
    let stderr = agent.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line?;
        eprintln!("{line}");
        if line.contains("zerotrace: tracing") {
            break;
        }
    }
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| eprintln!("{l}")));
    for path in ["/work/1", "/work/2", "/fail"] {
        let _ = Command::new("curl").args(["-s", "-o", "/dev/null", &format!("http://127.0.0.1:{front_port}{path}")]).status();
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-H", "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &format!("http://127.0.0.1:{front_port}/work/3")])
        .status();
    let status = agent.wait()?;
    if !status.success() {
        bail!("zerotrace exited with {status}");
    }
    Ok(())
}
